// Reading a DLPack capsule ("dltensor", the DLPack 0.8 ABI that torch.utils.dlpack.to_dlpack
// produces) into a TensorView. The capsule is only read, never consumed: its owner frees it.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "tensor_view.h"

namespace mf2 {

namespace dlpack {
struct DLDevice { int32_t device_type; int32_t device_id; };
struct DLDataType { uint8_t code; uint8_t bits; uint16_t lanes; };
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // null = compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2;
constexpr uint8_t kDLFloat = 2;
}  // namespace dlpack

inline TensorView view_from_dlpack(const pybind11::handle& obj, const char* arg) {
  if (!PyCapsule_IsValid(obj.ptr(), "dltensor"))
    throw std::invalid_argument(std::string(arg) + ": expected a DLPack capsule (torch.utils.dlpack.to_dlpack)");
  auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
  const dlpack::DLTensor& t = m->dl_tensor;
  TensorView v;
  if (t.ndim > 8) throw std::invalid_argument(std::string(arg) + ": more than 8 dimensions");
  v.data = static_cast<char*>(t.data) + t.byte_offset;
  v.ndim = t.ndim;
  if (t.dtype.code == dlpack::kDLFloat && t.dtype.lanes == 1 && t.dtype.bits == 32)
    v.dtype = DType::Float32;
  else if (t.dtype.code == dlpack::kDLFloat && t.dtype.lanes == 1 && t.dtype.bits == 64)
    v.dtype = DType::Float64;
  if (t.device.device_type == dlpack::kDLCPU) v.device = DeviceType::CPU;
  else if (t.device.device_type == dlpack::kDLCUDA) v.device = DeviceType::CUDA;
  v.device_index = t.device.device_id;
  int64_t stride = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    v.sizes[i] = t.shape[i];
    v.strides[i] = t.strides ? t.strides[i] : stride;
    stride *= t.shape[i];
  }
  return v;
}

}  // namespace mf2
