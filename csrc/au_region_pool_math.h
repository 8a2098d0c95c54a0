// Bilinear sampling geometry shared by the CPU and CUDA kernels of au_region_pool.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define MF2_HD __host__ __device__ __forceinline__
#else
#define MF2_HD inline
#endif

namespace mf2 {

// Host code wants std::, device code the CUDA overloads.
template <typename T>
MF2_HD bool finite(T x) {
#ifdef __CUDA_ARCH__
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}
template <typename T>
MF2_HD T clamp(T x, T lo, T hi) { return x < lo ? lo : (x > hi ? hi : x); }
template <typename T>
MF2_HD T floor_(T x) {
#ifdef __CUDA_ARCH__
  return floor(x);
#else
  return std::floor(x);
#endif
}

// The four bilinear taps of one sample point: flat spatial offsets (y*stride_h + x*stride_w)
// and weights. Taps that fall outside the map get weight 0 and a safe offset, so the channel
// loops stay branch-free.
template <typename T>
struct Taps {
  int64_t offset[4];
  T weight[4];
};

// Sample r (row-major over an R x R grid, y outer) around centre (cx, cy) in normalised image
// coordinates [0, 1] (x to the right, y down). Grid point offsets are ((i + 0.5) / R - 0.5) *
// window, so R = 1 samples the centre itself. Pixel centres sit at (i + 0.5) / size, the
// convention of grid_sample(align_corners=False). Border handling:
//   zeros  = false: the coordinate is clamped to [0, size - 1] (grid_sample padding "border");
//   zeros  = true:  taps outside the map read zero (grid_sample padding "zeros").
// A non-finite centre or window yields zero weights (a zero feature), never a wild read.
template <typename T>
MF2_HD Taps<T> sample_taps(T cx, T cy, T window, int64_t r, int64_t R, int64_t H, int64_t W,
                           int64_t stride_h, int64_t stride_w, bool zeros) {
  Taps<T> t;
  const T ox = ((static_cast<T>(r % R) + T(0.5)) / static_cast<T>(R) - T(0.5)) * window;
  const T oy = ((static_cast<T>(r / R) + T(0.5)) / static_cast<T>(R) - T(0.5)) * window;
  T u = (cx + ox) * static_cast<T>(W) - T(0.5);
  T v = (cy + oy) * static_cast<T>(H) - T(0.5);
  if (!(finite(u) && finite(v))) {
    for (int i = 0; i < 4; ++i) { t.offset[i] = 0; t.weight[i] = T(0); }
    return t;
  }
  if (!zeros) {
    u = clamp(u, T(0), static_cast<T>(W - 1));
    v = clamp(v, T(0), static_cast<T>(H - 1));
  }
  // Far-away samples (zeros mode) would overflow int64 after floor; they read zero anyway.
  if (u < T(-2) || v < T(-2) || u > static_cast<T>(W + 1) || v > static_cast<T>(H + 1)) {
    for (int i = 0; i < 4; ++i) { t.offset[i] = 0; t.weight[i] = T(0); }
    return t;
  }
  const T fx = floor_(u), fy = floor_(v);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const T wx1 = u - fx, wy1 = v - fy;
  const T wx[2] = {T(1) - wx1, wx1};
  const T wy[2] = {T(1) - wy1, wy1};
  for (int dy = 0; dy < 2; ++dy) {
    for (int dx = 0; dx < 2; ++dx) {
      const int64_t x = x0 + dx, y = y0 + dy;
      const bool inside = x >= 0 && x < W && y >= 0 && y < H;
      const int i = dy * 2 + dx;
      t.offset[i] = inside ? y * stride_h + x * stride_w : 0;
      t.weight[i] = inside ? wy[dy] * wx[dx] : T(0);
    }
  }
  return t;
}

}  // namespace mf2
