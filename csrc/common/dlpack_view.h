// Reading a DLPack capsule into a TensorView: "dltensor" (DLPack 0.x, what
// torch.utils.dlpack.to_dlpack produces) or "dltensor_versioned" (DLPack 1.x). The capsule is
// only read, never consumed: its owner frees it. Every field is checked before it is used, so a
// malformed or unexpected capsule is a one-line error, never a wild read.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "common/tensor_view.h"

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
struct DLManagedTensor {  // DLPack 0.x
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};
struct DLPackVersion { uint32_t major; uint32_t minor; };
struct DLManagedTensorVersioned {  // DLPack 1.x
  DLPackVersion version;
  void* manager_ctx;
  void (*deleter)(DLManagedTensorVersioned*);
  uint64_t flags;
  DLTensor dl_tensor;
};
constexpr int32_t kDLCPU = 1, kDLCUDA = 2;
constexpr uint8_t kDLFloat = 2;
constexpr int kMaxDims = 8;
}  // namespace dlpack

inline TensorView view_from_dlpack(const pybind11::handle& obj, const char* arg) {
  const std::string name(arg);
  const dlpack::DLTensor* tensor = nullptr;
  if (PyCapsule_IsValid(obj.ptr(), "dltensor")) {
    auto* m = static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(obj.ptr(), "dltensor"));
    if (m) tensor = &m->dl_tensor;
  } else if (PyCapsule_IsValid(obj.ptr(), "dltensor_versioned")) {
    auto* m = static_cast<dlpack::DLManagedTensorVersioned*>(
        PyCapsule_GetPointer(obj.ptr(), "dltensor_versioned"));
    if (m && m->version.major != 1)
      throw std::invalid_argument(name + ": DLPack version " + std::to_string(m->version.major) +
                                  " is not supported (expected 1)");
    if (m) tensor = &m->dl_tensor;
  } else {
    PyErr_Clear();  // PyCapsule_IsValid may leave nothing, but a non-capsule must not leave an error
    throw std::invalid_argument(name + ": expected a DLPack capsule (torch.utils.dlpack.to_dlpack)");
  }
  if (tensor == nullptr) {
    PyErr_Clear();
    throw std::invalid_argument(name + ": an empty DLPack capsule");
  }
  const dlpack::DLTensor& t = *tensor;
  if (t.ndim < 0 || t.ndim > dlpack::kMaxDims)
    throw std::invalid_argument(name + ": expected at most " + std::to_string(dlpack::kMaxDims) +
                                " dimensions, got " + std::to_string(t.ndim));
  if (t.ndim > 0 && t.shape == nullptr)
    throw std::invalid_argument(name + ": a DLPack tensor without a shape");
  TensorView v;
  v.ndim = t.ndim;
  int64_t numel = 1;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0)
      throw std::invalid_argument(name + ": a negative size in dimension " + std::to_string(i));
    numel *= t.shape[i];
  }
  if (t.data == nullptr && numel > 0) throw std::invalid_argument(name + ": a DLPack tensor without data");
  v.data = t.data ? static_cast<char*>(t.data) + t.byte_offset : nullptr;
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
