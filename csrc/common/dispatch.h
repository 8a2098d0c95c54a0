// One device dispatch for every op: the CPU kernel or the CUDA launch for a validated tensor's
// dtype and device, and one error for a build without CUDA kernels.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/tensor_view.h"

namespace mf2 {

[[noreturn]] inline void no_cuda(const char* op) {
  throw std::runtime_error(
      std::string(op) +
      ": this build of mf2 has no CUDA kernels (nvcc was not found at build time); "
      "use the PyTorch reference or rebuild with nvcc on PATH");
}

// Calls cpu(T{}) for a CPU tensor `t`, else cuda(T{}, stream), with T = float or double after
// t's dtype. Without CUDA kernels in the build, a CUDA tensor is a one-line error; the CUDA
// callable is then never instantiated, so it may name launches that were not compiled.
template <typename Cpu, typename Cuda>
void dispatch(const char* op, const TensorView& t, uintptr_t stream, Cpu&& cpu, Cuda&& cuda) {
  dispatch_float(t.dtype, [&](auto zero) {
    if (t.device == DeviceType::CPU) {
      cpu(zero);
      return;
    }
#ifdef MF2_WITH_CUDA
    cuda(zero, reinterpret_cast<void*>(stream));
#else
    (void)cuda;
    (void)stream;
    no_cuda(op);
#endif
  });
}

}  // namespace mf2
