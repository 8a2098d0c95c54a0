// au_region_pool: per-AU R x R bilinear samples of a spatial feature map around AU centres.
// Plain parameter structs and launch prototypes; no Torch or CUDA includes.
#pragma once

#include <cstdint>

#include "common/tensor_view.h"

namespace mf2 {

struct AuRegionPoolParams {
  int64_t B = 0, C = 0, H = 0, W = 0;  // feature map [B, C, H, W]
  int64_t K = 0;                       // centres per image
  int64_t R = 0;                       // samples per side: R * R samples per centre
  int64_t map_strides[4] = {0};        // strides of the map (or of its gradient), b c h w
  bool zeros = false;                  // padding: false = border clamp, true = zeros
};

// Inputs: map strided as params.map_strides; centres [B, K, 2] (x, y) and window [B, K]
// contiguous; out [B, K, R*R, C] contiguous.
template <typename T>
void au_region_pool_forward_cpu(const AuRegionPoolParams& p, const T* map, const T* centres,
                                const T* window, T* out);
// grad_map is written whole (zeros where no sample landed), strided as params.map_strides.
template <typename T>
void au_region_pool_backward_cpu(const AuRegionPoolParams& p, const T* grad_out, const T* centres,
                                 const T* window, T* grad_map);

// CUDA launches: declared always, defined in CUDA builds only (see common/dispatch.h).
template <typename T>
void au_region_pool_forward_cuda(const AuRegionPoolParams& p, const T* map, const T* centres,
                                 const T* window, T* out, void* stream);
template <typename T>
void au_region_pool_backward_cuda(const AuRegionPoolParams& p, const T* grad_out, const T* centres,
                                  const T* window, T* grad_map, void* stream);

// Validation and dispatch (au_region_pool.cpp).
void au_region_pool_forward(const TensorView& map, const TensorView& centres,
                            const TensorView& window, const TensorView& out, int64_t R, bool zeros,
                            uintptr_t stream);
void au_region_pool_backward(const TensorView& grad_out, const TensorView& centres,
                             const TensorView& window, const TensorView& grad_map, int64_t R,
                             bool zeros, uintptr_t stream);

}  // namespace mf2
