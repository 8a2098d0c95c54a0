// CPU (OpenMP) kernels of au_region_pool.
#include <algorithm>

#include "au_region_pool.h"
#include "au_region_pool_math.h"

namespace mf2 {

template <typename T>
void au_region_pool_forward_cpu(const AuRegionPoolParams& p, const T* map, const T* centres,
                                const T* window, T* out) {
  const int64_t RR = p.R * p.R, C = p.C;
  const int64_t sb = p.map_strides[0], sc = p.map_strides[1];
  const int64_t sh = p.map_strides[2], sw = p.map_strides[3];
  const int64_t BK = p.B * p.K;
#pragma omp parallel for schedule(static) if (BK * RR * C > 32768)
  for (int64_t bk = 0; bk < BK; ++bk) {
    const int64_t b = bk / p.K;
    const T cx = centres[bk * 2], cy = centres[bk * 2 + 1], win = window[bk];
    const T* img = map + b * sb;
    for (int64_t r = 0; r < RR; ++r) {
      const Taps<T> t = sample_taps<T>(cx, cy, win, r, p.R, p.H, p.W, sh, sw, p.zeros);
      const T* p0 = img + t.offset[0];
      const T* p1 = img + t.offset[1];
      const T* p2 = img + t.offset[2];
      const T* p3 = img + t.offset[3];
      const T w0 = t.weight[0], w1 = t.weight[1], w2 = t.weight[2], w3 = t.weight[3];
      T* o = out + (bk * RR + r) * C;
      if (sc == 1) {  // channels-last: contiguous channel vectors, vectorised
        for (int64_t c = 0; c < C; ++c) o[c] = w0 * p0[c] + w1 * p1[c] + w2 * p2[c] + w3 * p3[c];
      } else {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t q = c * sc;
          o[c] = w0 * p0[q] + w1 * p1[q] + w2 * p2[q] + w3 * p3[q];
        }
      }
    }
  }
}

// Each task owns one image and one block of channels, so the scatter-add needs no atomics
// and the result does not depend on the thread count.
template <typename T>
void au_region_pool_backward_cpu(const AuRegionPoolParams& p, const T* grad_out, const T* centres,
                                 const T* window, T* grad_map) {
  const int64_t RR = p.R * p.R, C = p.C;
  const int64_t sb = p.map_strides[0], sc = p.map_strides[1];
  const int64_t sh = p.map_strides[2], sw = p.map_strides[3];
  constexpr int64_t kBlock = 128;
  const int64_t nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (p.B * p.K * RR * C > 32768)
  for (int64_t task = 0; task < p.B * nblocks; ++task) {
    const int64_t b = task / nblocks;
    const int64_t c0 = (task % nblocks) * kBlock, c1 = std::min(C, c0 + kBlock);
    T* img = grad_map + b * sb;
    for (int64_t y = 0; y < p.H; ++y)
      for (int64_t x = 0; x < p.W; ++x) {
        T* px = img + y * sh + x * sw;
        for (int64_t c = c0; c < c1; ++c) px[c * sc] = T(0);
      }
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t bk = b * p.K + k;
      const T cx = centres[bk * 2], cy = centres[bk * 2 + 1], win = window[bk];
      for (int64_t r = 0; r < RR; ++r) {
        const Taps<T> t = sample_taps<T>(cx, cy, win, r, p.R, p.H, p.W, sh, sw, p.zeros);
        const T* g = grad_out + (bk * RR + r) * C;
        for (int i = 0; i < 4; ++i) {
          const T w = t.weight[i];
          if (w == T(0)) continue;
          T* dst = img + t.offset[i];
          if (sc == 1) {
            for (int64_t c = c0; c < c1; ++c) dst[c] += w * g[c];
          } else {
            for (int64_t c = c0; c < c1; ++c) dst[c * sc] += w * g[c];
          }
        }
      }
    }
  }
}

template void au_region_pool_forward_cpu<float>(const AuRegionPoolParams&, const float*,
                                                const float*, const float*, float*);
template void au_region_pool_forward_cpu<double>(const AuRegionPoolParams&, const double*,
                                                 const double*, const double*, double*);
template void au_region_pool_backward_cpu<float>(const AuRegionPoolParams&, const float*,
                                                 const float*, const float*, float*);
template void au_region_pool_backward_cpu<double>(const AuRegionPoolParams&, const double*,
                                                  const double*, const double*, double*);

}  // namespace mf2
