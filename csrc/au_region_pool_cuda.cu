// CUDA kernels of au_region_pool.
#include "au_region_pool.h"
#include "au_region_pool_math.h"
#include "common/cuda_check.cuh"

namespace mf2 {
namespace {

// One thread per output element (b, k, r, c); c is fastest so reads of a channels-last map
// and writes of the output are coalesced.
template <typename T>
__global__ void forward_kernel(AuRegionPoolParams p, const T* __restrict__ map,
                               const T* __restrict__ centres, const T* __restrict__ window,
                               T* __restrict__ out) {
  const int64_t RR = p.R * p.R;
  const int64_t n = p.B * p.K * RR * p.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % p.C;
    const int64_t rest = i / p.C;
    const int64_t r = rest % RR;
    const int64_t bk = rest / RR;
    const int64_t b = bk / p.K;
    const Taps<T> t = sample_taps<T>(centres[bk * 2], centres[bk * 2 + 1], window[bk], r, p.R,
                                     p.H, p.W, p.map_strides[2], p.map_strides[3], p.zeros);
    const T* img = map + b * p.map_strides[0] + c * p.map_strides[1];
    out[i] = t.weight[0] * img[t.offset[0]] + t.weight[1] * img[t.offset[1]] +
             t.weight[2] * img[t.offset[2]] + t.weight[3] * img[t.offset[3]];
  }
}

// One thread per (b, c): it owns that channel of that image, zeroes it, then adds every
// sample's contribution in a fixed order. No atomics, so the gradient is deterministic.
template <typename T>
__global__ void backward_kernel(AuRegionPoolParams p, const T* __restrict__ grad_out,
                                const T* __restrict__ centres, const T* __restrict__ window,
                                T* __restrict__ grad_map) {
  const int64_t RR = p.R * p.R;
  const int64_t n = p.B * p.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % p.C;
    const int64_t b = i / p.C;
    T* img = grad_map + b * p.map_strides[0] + c * p.map_strides[1];
    for (int64_t y = 0; y < p.H; ++y)
      for (int64_t x = 0; x < p.W; ++x) img[y * p.map_strides[2] + x * p.map_strides[3]] = T(0);
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t bk = b * p.K + k;
      const T cx = centres[bk * 2], cy = centres[bk * 2 + 1], win = window[bk];
      for (int64_t r = 0; r < RR; ++r) {
        const Taps<T> t = sample_taps<T>(cx, cy, win, r, p.R, p.H, p.W, p.map_strides[2],
                                         p.map_strides[3], p.zeros);
        const T g = grad_out[(bk * RR + r) * p.C + c];
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (t.weight[j] != T(0)) img[t.offset[j]] += t.weight[j] * g;
      }
    }
  }
}

constexpr int kThreads = 256;

unsigned int grid_for(int64_t n) {
  const unsigned int blocks = blocks_for(n, kThreads);
  return blocks < 65535u * 16u ? blocks : 65535u * 16u;  // grid-stride loops cover the rest
}

}  // namespace

template <typename T>
void au_region_pool_forward_cuda(const AuRegionPoolParams& p, const T* map, const T* centres,
                                 const T* window, T* out, void* stream) {
  const int64_t n = p.B * p.K * p.R * p.R * p.C;
  if (n == 0) return;
  forward_kernel<T><<<grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p, map, centres, window, out);
  check_launch("au_region_pool_forward");
}

template <typename T>
void au_region_pool_backward_cuda(const AuRegionPoolParams& p, const T* grad_out, const T* centres,
                                  const T* window, T* grad_map, void* stream) {
  const int64_t n = p.B * p.C;
  if (n == 0) return;
  backward_kernel<T><<<grid_for(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      p, grad_out, centres, window, grad_map);
  check_launch("au_region_pool_backward");
}

template void au_region_pool_forward_cuda<float>(const AuRegionPoolParams&, const float*,
                                                 const float*, const float*, float*, void*);
template void au_region_pool_forward_cuda<double>(const AuRegionPoolParams&, const double*,
                                                  const double*, const double*, double*, void*);
template void au_region_pool_backward_cuda<float>(const AuRegionPoolParams&, const float*,
                                                  const float*, const float*, float*, void*);
template void au_region_pool_backward_cuda<double>(const AuRegionPoolParams&, const double*,
                                                   const double*, const double*, double*, void*);

}  // namespace mf2
