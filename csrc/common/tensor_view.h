// A framework-free view of a strided tensor: the seam between Python (DLPack) and the kernels.
// No Torch and no CUDA headers here, so the CPU and CUDA kernels build with any toolchain.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace mf2 {

enum class DType { Float32, Float64, Other };
enum class DeviceType { CPU, CUDA, Other };

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::Other;
  DeviceType device = DeviceType::Other;
  int device_index = 0;
  int ndim = 0;
  int64_t sizes[8] = {0};
  int64_t strides[8] = {0};  // in elements

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (sizes[i] != 1 && strides[i] != expected) return false;
      expected *= sizes[i];
    }
    return true;
  }
};

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    default: return "unsupported dtype";
  }
}

inline std::string device_name(const TensorView& t) {
  switch (t.device) {
    case DeviceType::CPU: return "cpu";
    case DeviceType::CUDA: return "cuda:" + std::to_string(t.device_index);
    default: return "unsupported device";
  }
}

// "[56, 768, 14, 14] float32 on cpu". Plain string building, no iostreams: an extension that
// shares its process with other C++ libraries (torch's) must not depend on iostream state.
inline std::string describe(const TensorView& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; ++i) s += (i ? ", " : "") + std::to_string(t.sizes[i]);
  return s + "] " + dtype_name(t.dtype) + " on " + device_name(t);
}

[[noreturn]] inline void fail(const std::string& arg, const std::string& expected, const TensorView& got) {
  throw std::invalid_argument(arg + ": expected " + expected + ", got " + describe(got));
}

// Shape check: `pattern` holds the expected sizes, -1 = any; `expected` is the human form ("[B, K, 2]").
inline void check_shape(const TensorView& t, const std::string& arg, const std::string& expected,
                        std::initializer_list<int64_t> pattern) {
  if (t.ndim != static_cast<int>(pattern.size())) fail(arg, expected, t);
  int i = 0;
  for (int64_t want : pattern) {
    if (want >= 0 && t.sizes[i] != want) fail(arg, expected, t);
    ++i;
  }
}

inline void check_same_kind(const TensorView& t, const std::string& arg, const TensorView& ref,
                            const std::string& ref_arg) {
  if (t.dtype != ref.dtype || t.device != ref.device || t.device_index != ref.device_index)
    fail(arg, "the dtype and device of " + ref_arg + " (" + describe(ref) + ")", t);
}

inline void check_contiguous(const TensorView& t, const std::string& arg) {
  if (!t.is_contiguous()) fail(arg, "a contiguous tensor", t);
}

inline void check_float(const TensorView& t, const std::string& arg) {
  if (t.dtype == DType::Other) fail(arg, "float32 or float64", t);
  if (t.device == DeviceType::Other) fail(arg, "a cpu or cuda tensor", t);
}

template <typename T>
T* ptr(const TensorView& t) {
  return static_cast<T*>(t.data);
}

// Calls f(T{}) with T = float or double after the dtype of a validated tensor.
template <typename F>
void dispatch_float(DType d, F&& f) {
  if (d == DType::Float64)
    f(double{});
  else
    f(float{});
}

}  // namespace mf2
