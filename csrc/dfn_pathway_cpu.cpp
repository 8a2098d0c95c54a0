// CPU kernels of the DFN cell's element-wise chain.
#include <cmath>

#include "dfn_pathway.h"

namespace mf2 {
namespace {
template <typename T>
T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}
constexpr int64_t kParallelMin = 1 << 16;  // below this, threads cost more than they save
}  // namespace

template <typename T>
void dfn_cell_forward_cpu(const DfnCellParams& p, const T* s_prev, const T* u, const T* b_up,
                          const T* h, const T* alpha, T* s) {
  const T g = sigmoid(alpha[0]), one_minus_g = T(1) - g, lam = static_cast<T>(p.lambda);
  const int64_t D = p.D;
#pragma omp parallel for schedule(static) if (p.B * D >= kParallelMin)
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t o = b * D;
    for (int64_t d = 0; d < D; ++d)
      s[o + d] = g * (s_prev[o + d] + lam * u[o + d] + b_up[d]) + one_minus_g * h[o + d];
  }
}

template <typename T>
void dfn_cell_backward_cpu(const DfnCellParams& p, const T* grad_out, const T* carry,
                           const T* s_prev, const T* u, const T* b_up, const T* h, const T* alpha,
                           T* grad_u, T* grad_s_prev, T* grad_h, T* grad_b_up, T* grad_alpha,
                           T* workspace) {
  const T g = sigmoid(alpha[0]), one_minus_g = T(1) - g, lam = static_cast<T>(p.lambda);
  const int64_t B = p.B, D = p.D;
  T* col_grad = workspace;      // sum_b grad_s
  T* col_alpha = workspace + D; // sum_b grad_s * (m - h)
  // Columns are split between threads so that each column's sums have one owner.
#pragma omp parallel if (B * D >= kParallelMin)
  {
#pragma omp for schedule(static)
    for (int64_t d = 0; d < D; ++d) { col_grad[d] = T(0); col_alpha[d] = T(0); }
#pragma omp for schedule(static)
    for (int64_t d0 = 0; d0 < D; d0 += 64) {
      const int64_t d1 = d0 + 64 < D ? d0 + 64 : D;
      for (int64_t b = 0; b < B; ++b) {
        const int64_t o = b * D;
        for (int64_t d = d0; d < d1; ++d) {
          const T gs = carry ? grad_out[o + d] + carry[o + d] : grad_out[o + d];
          const T m = s_prev[o + d] + lam * u[o + d] + b_up[d];
          grad_s_prev[o + d] = g * gs;
          grad_u[o + d] = g * lam * gs;
          if (grad_h) grad_h[o + d] = one_minus_g * gs;
          col_grad[d] += gs;
          col_alpha[d] += gs * (m - h[o + d]);
        }
      }
    }
  }
  double total = 0.0;
  for (int64_t d = 0; d < D; ++d) {
    grad_b_up[d] = g * col_grad[d];
    total += static_cast<double>(col_alpha[d]);
  }
  grad_alpha[0] = static_cast<T>(static_cast<double>(g * one_minus_g) * total);
}

template <typename T>
void dfn_relu_backward_cpu(int64_t B, int64_t R, T* grad, const T* a, T* grad_b_down) {
#pragma omp parallel for schedule(static) if (B * R >= kParallelMin)
  for (int64_t j0 = 0; j0 < R; j0 += 64) {
    const int64_t j1 = j0 + 64 < R ? j0 + 64 : R;
    for (int64_t j = j0; j < j1; ++j) grad_b_down[j] = T(0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = b * R;
      for (int64_t j = j0; j < j1; ++j) {
        const T v = a[o + j] > T(0) ? grad[o + j] : T(0);
        grad[o + j] = v;
        grad_b_down[j] += v;
      }
    }
  }
}

#define MF2_INSTANTIATE(T)                                                                        \
  template void dfn_cell_forward_cpu<T>(const DfnCellParams&, const T*, const T*, const T*,       \
                                        const T*, const T*, T*);                                  \
  template void dfn_cell_backward_cpu<T>(const DfnCellParams&, const T*, const T*, const T*,      \
                                         const T*, const T*, const T*, const T*, T*, T*, T*, T*,  \
                                         T*, T*);                                                 \
  template void dfn_relu_backward_cpu<T>(int64_t, int64_t, T*, const T*, T*);
MF2_INSTANTIATE(float)
MF2_INSTANTIATE(double)
#undef MF2_INSTANTIATE

}  // namespace mf2
