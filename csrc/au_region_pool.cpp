// au_region_pool: validation and dispatch to the CPU or CUDA kernels.
#include "au_region_pool.h"

#include <stdexcept>
#include <string>

#include "common/dispatch.h"

namespace mf2 {
namespace {

// Checks shared by forward and backward; `spatial` is the map (forward) or its gradient and
// `samples` the pooled output (forward) or its gradient.
AuRegionPoolParams make_params(const TensorView& spatial, const std::string& spatial_arg,
                               const TensorView& samples, const std::string& samples_arg,
                               const TensorView& centres, const TensorView& window, int64_t R,
                               bool zeros) {
  check_float(spatial, spatial_arg);
  check_shape(spatial, spatial_arg, "[B, C, H, W]", {-1, -1, -1, -1});
  const int64_t B = spatial.sizes[0], C = spatial.sizes[1];
  if (spatial.sizes[2] < 1 || spatial.sizes[3] < 1)
    fail(spatial_arg, "a map of at least 1 x 1", spatial);
  if (R < 1) throw std::invalid_argument("R: expected R >= 1, got " + std::to_string(R));
  check_same_kind(centres, "centres", spatial, spatial_arg);
  check_shape(centres, "centres", "[B, K, 2] with B = " + std::to_string(B), {B, -1, 2});
  check_contiguous(centres, "centres");
  const int64_t K = centres.sizes[1];
  check_same_kind(window, "window", spatial, spatial_arg);
  check_shape(window, "window", "[B, K] = [" + std::to_string(B) + ", " + std::to_string(K) + "]",
              {B, K});
  check_contiguous(window, "window");
  check_same_kind(samples, samples_arg, spatial, spatial_arg);
  check_shape(samples, samples_arg,
              "[B, K, R*R, C] = [" + std::to_string(B) + ", " + std::to_string(K) + ", " +
                  std::to_string(R * R) + ", " + std::to_string(C) + "]",
              {B, K, R * R, C});
  check_contiguous(samples, samples_arg);

  AuRegionPoolParams p;
  p.B = B; p.C = C; p.H = spatial.sizes[2]; p.W = spatial.sizes[3];
  p.K = K; p.R = R; p.zeros = zeros;
  for (int i = 0; i < 4; ++i) p.map_strides[i] = spatial.strides[i];
  return p;
}

}  // namespace

void au_region_pool_forward(const TensorView& map, const TensorView& centres,
                            const TensorView& window, const TensorView& out, int64_t R, bool zeros,
                            uintptr_t stream) {
  const AuRegionPoolParams p = make_params(map, "feature_map", out, "out", centres, window, R, zeros);
  if (p.B * p.K == 0 || p.C == 0) return;
  dispatch(
      "au_region_pool", map, stream,
      [&](auto zero) {
        using T = decltype(zero);
        au_region_pool_forward_cpu<T>(p, ptr<const T>(map), ptr<const T>(centres),
                                      ptr<const T>(window), ptr<T>(out));
      },
      [&](auto zero, void* s) {
        using T = decltype(zero);
        au_region_pool_forward_cuda<T>(p, ptr<const T>(map), ptr<const T>(centres),
                                       ptr<const T>(window), ptr<T>(out), s);
      });
}

void au_region_pool_backward(const TensorView& grad_out, const TensorView& centres,
                             const TensorView& window, const TensorView& grad_map, int64_t R,
                             bool zeros, uintptr_t stream) {
  const AuRegionPoolParams p =
      make_params(grad_map, "grad_map", grad_out, "grad_out", centres, window, R, zeros);
  if (p.B == 0 || p.C == 0) return;
  dispatch(
      "au_region_pool", grad_map, stream,
      [&](auto zero) {
        using T = decltype(zero);
        au_region_pool_backward_cpu<T>(p, ptr<const T>(grad_out), ptr<const T>(centres),
                                       ptr<const T>(window), ptr<T>(grad_map));
      },
      [&](auto zero, void* s) {
        using T = decltype(zero);
        au_region_pool_backward_cuda<T>(p, ptr<const T>(grad_out), ptr<const T>(centres),
                                        ptr<const T>(window), ptr<T>(grad_map), s);
      });
}

}  // namespace mf2
