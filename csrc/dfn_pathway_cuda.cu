// CUDA kernels of the DFN cell's element-wise chain (see dfn_pathway.h for the maths).
#include "common/cuda_check.cuh"
#include "dfn_pathway.h"

namespace mf2 {
namespace {

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

template <typename T>
__global__ void cell_forward_kernel(DfnCellParams p, const T* __restrict__ s_prev,
                                    const T* __restrict__ u, const T* __restrict__ b_up,
                                    const T* __restrict__ h, const T* __restrict__ alpha,
                                    T* __restrict__ s) {
  const T g = sigmoid(alpha[0]), lam = static_cast<T>(p.lambda);
  const int64_t n = p.B * p.D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    s[i] = g * (s_prev[i] + lam * u[i] + b_up[i % p.D]) + (T(1) - g) * h[i];
}

// Column sums in two fixed-order stages (deterministic, parallel over rows and columns): a block
// of kCols x kLanes threads covers kCols columns of one chunk of rows; its lanes stride over the
// chunk's rows, then combine in lane order into one partial sum per (chunk, column). A second
// kernel adds each column's chunks in chunk order.
constexpr int kCols = 32, kLanes = 8;

template <typename T>
__global__ void cell_backward_kernel(DfnCellParams p, int64_t rows_per_chunk,
                                     const T* __restrict__ grad_out, const T* __restrict__ carry,
                                     const T* __restrict__ s_prev, const T* __restrict__ u,
                                     const T* __restrict__ b_up, const T* __restrict__ h,
                                     const T* __restrict__ alpha, T* __restrict__ grad_u,
                                     T* __restrict__ grad_s_prev, T* __restrict__ grad_h,
                                     T* __restrict__ partial) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(kCols) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t b_begin = chunk * rows_per_chunk;
  const int64_t b_end = b_begin + rows_per_chunk < p.B ? b_begin + rows_per_chunk : p.B;
  const T g = sigmoid(alpha[0]), lam = static_cast<T>(p.lambda);
  T acc_grad = T(0), acc_alpha = T(0);
  if (d < p.D) {
    const T bu = b_up[d];
    for (int64_t b = b_begin + threadIdx.y; b < b_end; b += kLanes) {
      const int64_t i = b * p.D + d;
      const T gs = carry ? grad_out[i] + carry[i] : grad_out[i];
      const T m = s_prev[i] + lam * u[i] + bu;
      grad_s_prev[i] = g * gs;
      grad_u[i] = g * lam * gs;
      if (grad_h) grad_h[i] = (T(1) - g) * gs;
      acc_grad += gs;
      acc_alpha += gs * (m - h[i]);
    }
  }
  __shared__ T lane_grad[kLanes][kCols], lane_alpha[kLanes][kCols];
  lane_grad[threadIdx.y][threadIdx.x] = acc_grad;
  lane_alpha[threadIdx.y][threadIdx.x] = acc_alpha;
  __syncthreads();
  if (threadIdx.y == 0 && d < p.D) {
    T sum_grad = T(0), sum_alpha = T(0);
    for (int k = 0; k < kLanes; ++k) {
      sum_grad += lane_grad[k][threadIdx.x];
      sum_alpha += lane_alpha[k][threadIdx.x];
    }
    partial[(2 * chunk) * p.D + d] = sum_grad;
    partial[(2 * chunk + 1) * p.D + d] = sum_alpha;
  }
}

// grad_b_up[d] = g * sum over chunks; col_alpha[d] = the alpha term's column sum.
template <typename T>
__global__ void cell_columns_kernel(int64_t D, int64_t chunks, const T* __restrict__ partial,
                                    const T* __restrict__ alpha, T* __restrict__ grad_b_up,
                                    T* __restrict__ col_alpha) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  T sum_grad = T(0), sum_alpha = T(0);
  for (int64_t c = 0; c < chunks; ++c) {
    sum_grad += partial[(2 * c) * D + d];
    sum_alpha += partial[(2 * c + 1) * D + d];
  }
  grad_b_up[d] = sigmoid(alpha[0]) * sum_grad;
  col_alpha[d] = sum_alpha;
}

// One block sums the per-column alpha terms in a fixed order.
template <typename T>
__global__ void alpha_reduce_kernel(int64_t D, const T* __restrict__ alpha,
                                    const T* __restrict__ workspace, T* __restrict__ grad_alpha) {
  __shared__ double partial[256];
  double acc = 0.0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) acc += static_cast<double>(workspace[d]);
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double g = 1.0 / (1.0 + exp(-static_cast<double>(alpha[0])));
    grad_alpha[0] = static_cast<T>(g * (1.0 - g) * partial[0]);
  }
}

template <typename T>
__global__ void relu_backward_kernel(int64_t B, int64_t R, int64_t rows_per_chunk,
                                     T* __restrict__ grad, const T* __restrict__ a,
                                     T* __restrict__ partial) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(kCols) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t b_begin = chunk * rows_per_chunk;
  const int64_t b_end = b_begin + rows_per_chunk < B ? b_begin + rows_per_chunk : B;
  T acc = T(0);
  if (j < R) {
    for (int64_t b = b_begin + threadIdx.y; b < b_end; b += kLanes) {
      const int64_t i = b * R + j;
      const T v = a[i] > T(0) ? grad[i] : T(0);
      grad[i] = v;
      acc += v;
    }
  }
  __shared__ T lanes[kLanes][kCols];
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && j < R) {
    T sum = T(0);
    for (int k = 0; k < kLanes; ++k) sum += lanes[k][threadIdx.x];
    partial[chunk * R + j] = sum;
  }
}

template <typename T>
__global__ void relu_columns_kernel(int64_t R, int64_t chunks, const T* __restrict__ partial,
                                    T* __restrict__ grad_b_down) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= R) return;
  T sum = T(0);
  for (int64_t c = 0; c < chunks; ++c) sum += partial[c * R + j];
  grad_b_down[j] = sum;
}

constexpr int kThreads = 256;

}  // namespace

template <typename T>
void dfn_cell_forward_cuda(const DfnCellParams& p, const T* s_prev, const T* u, const T* b_up,
                           const T* h, const T* alpha, T* s, void* stream) {
  const int64_t n = p.B * p.D;
  const unsigned int blocks = blocks_for(n, kThreads);
  cell_forward_kernel<T><<<blocks < 65535u ? blocks : 65535u, kThreads, 0,
                           static_cast<cudaStream_t>(stream)>>>(p, s_prev, u, b_up, h, alpha, s);
  check_launch("dfn_cell_forward");
}

template <typename T>
void dfn_cell_backward_cuda(const DfnCellParams& p, const T* grad_out, const T* carry,
                            const T* s_prev, const T* u, const T* b_up, const T* h, const T* alpha,
                            T* grad_u, T* grad_s_prev, T* grad_h, T* grad_b_up, T* grad_alpha,
                            T* workspace, void* stream) {
  if (p.D == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = dfn_row_chunks(p.B), rows_per_chunk = (p.B + chunks - 1) / chunks;
  T* col_alpha = workspace;        // [D]
  T* partial = workspace + 2 * p.D;  // [chunks, 2, D]
  const dim3 grid(blocks_for(p.D, kCols), static_cast<unsigned int>(chunks)), block(kCols, kLanes);
  cell_backward_kernel<T><<<grid, block, 0, s>>>(p, rows_per_chunk, grad_out, carry, s_prev, u, b_up, h,
                                                 alpha, grad_u, grad_s_prev, grad_h, partial);
  check_launch("dfn_cell_backward");
  cell_columns_kernel<T><<<blocks_for(p.D, kThreads), kThreads, 0, s>>>(p.D, chunks, partial, alpha,
                                                                          grad_b_up, col_alpha);
  check_launch("dfn_cell_backward (columns)");
  alpha_reduce_kernel<T><<<1, 256, 0, s>>>(p.D, alpha, col_alpha, grad_alpha);
  check_launch("dfn_cell_backward (alpha)");
}

template <typename T>
void dfn_relu_backward_cuda(int64_t B, int64_t R, T* grad, const T* a, T* grad_b_down,
                            T* workspace, void* stream) {
  if (R == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  const int64_t chunks = dfn_row_chunks(B), rows_per_chunk = (B + chunks - 1) / chunks;
  const dim3 grid(blocks_for(R, kCols), static_cast<unsigned int>(chunks)), block(kCols, kLanes);
  relu_backward_kernel<T><<<grid, block, 0, s>>>(B, R, rows_per_chunk, grad, a, workspace);
  check_launch("dfn_relu_backward");
  relu_columns_kernel<T><<<blocks_for(R, kThreads), kThreads, 0, s>>>(R, chunks, workspace, grad_b_down);
  check_launch("dfn_relu_backward (columns)");
}

#define MF2_INSTANTIATE(T)                                                                       \
  template void dfn_cell_forward_cuda<T>(const DfnCellParams&, const T*, const T*, const T*,     \
                                         const T*, const T*, T*, void*);                         \
  template void dfn_cell_backward_cuda<T>(const DfnCellParams&, const T*, const T*, const T*,    \
                                          const T*, const T*, const T*, const T*, T*, T*, T*, T*, \
                                          T*, T*, void*);                                        \
  template void dfn_relu_backward_cuda<T>(int64_t, int64_t, T*, const T*, T*, T*, void*);
MF2_INSTANTIATE(float)
MF2_INSTANTIATE(double)
#undef MF2_INSTANTIATE

}  // namespace mf2
