// DFN side pathway (paper §III-B): the element-wise chain of one cell, fused, around the two
// matmuls (which stay in the framework's BLAS/cuBLAS). One cell l:
//   z   = W_down s_{l-1} + b_down          (matmul)
//   a   = ReLU(z)
//   u   = W_up a                           (matmul)
//   s_l = g (s_{l-1} + lambda u + b_up) + (1 - g) h_l,   g = sigmoid(alpha_l)   <- dfn_cell_forward
// Backward of the last line, with the incoming gradient grad_s = grad_out_l + carry:
//   grad_u = g lambda grad_s, grad_s_prev = g grad_s (the direct path), grad_h = (1 - g) grad_s,
//   grad_b_up = g sum_b grad_s, grad_alpha = g (1 - g) sum (grad_s (s_{l-1} + lambda u + b_up - h))
// and of the ReLU: grad_z = grad_a [a > 0], grad_b_down = sum_b grad_z  <- dfn_relu_backward.
// Plain parameter structs and launch prototypes; no Torch or CUDA includes.
#pragma once

#include <cstdint>

#include "common/tensor_view.h"

namespace mf2 {

struct DfnCellParams {
  int64_t B = 0;  // rows (batch)
  int64_t D = 0;  // pathway width
  double lambda = 0.1;
};

// Column sums (bias and gate gradients) are reduced in two fixed-order stages on a GPU: row
// chunks in parallel, then the chunks of each column in order. Deterministic, and parallel over
// rows as well as columns. The workspace holds the per-chunk partial sums.
inline int64_t dfn_row_chunks(int64_t B) {
  const int64_t chunks = (B + 15) / 16;
  return chunks < 1 ? 1 : (chunks > 32 ? 32 : chunks);
}
// Elements of workspace the backward of a cell of width D (2 * D) and of its ReLU (R) need.
inline int64_t dfn_workspace_size(int64_t B, int64_t width) { return width * (dfn_row_chunks(B) + 1); }

// [B, D] tensors are contiguous; b_up [D]; alpha [1]; grad_h and carry may be null;
// workspace: at least dfn_workspace_size(B, 2 D) elements.
template <typename T>
void dfn_cell_forward_cpu(const DfnCellParams& p, const T* s_prev, const T* u, const T* b_up,
                          const T* h, const T* alpha, T* s);
template <typename T>
void dfn_cell_backward_cpu(const DfnCellParams& p, const T* grad_out, const T* carry,
                           const T* s_prev, const T* u, const T* b_up, const T* h, const T* alpha,
                           T* grad_u, T* grad_s_prev, T* grad_h, T* grad_b_up, T* grad_alpha,
                           T* workspace);
// grad [B, R] is turned in place from grad_a into grad_z; a [B, R]; grad_b_down [R];
// workspace (CUDA): at least dfn_workspace_size(B, R) elements.
template <typename T>
void dfn_relu_backward_cpu(int64_t B, int64_t R, T* grad, const T* a, T* grad_b_down);

// CUDA launches: declared always, defined in CUDA builds only (see common/dispatch.h).
template <typename T>
void dfn_cell_forward_cuda(const DfnCellParams& p, const T* s_prev, const T* u, const T* b_up,
                           const T* h, const T* alpha, T* s, void* stream);
template <typename T>
void dfn_cell_backward_cuda(const DfnCellParams& p, const T* grad_out, const T* carry,
                            const T* s_prev, const T* u, const T* b_up, const T* h, const T* alpha,
                            T* grad_u, T* grad_s_prev, T* grad_h, T* grad_b_up, T* grad_alpha,
                            T* workspace, void* stream);
template <typename T>
void dfn_relu_backward_cuda(int64_t B, int64_t R, T* grad, const T* a, T* grad_b_down,
                            T* workspace, void* stream);

// Validation and dispatch (dfn_pathway.cpp). Optional tensors are passed as nullptr.
void dfn_cell_forward(const TensorView& s_prev, const TensorView& u, const TensorView& b_up,
                      const TensorView& h, const TensorView& alpha, double lambda,
                      const TensorView& s, uintptr_t stream);
void dfn_cell_backward(const TensorView& grad_out, const TensorView* carry,
                       const TensorView& s_prev, const TensorView& u, const TensorView& b_up,
                       const TensorView& h, const TensorView& alpha, double lambda,
                       const TensorView& grad_u, const TensorView& grad_s_prev,
                       const TensorView* grad_h, const TensorView& grad_b_up,
                       const TensorView& grad_alpha, const TensorView& workspace,
                       uintptr_t stream);
void dfn_relu_backward(const TensorView& grad, const TensorView& a, const TensorView& grad_b_down,
                       const TensorView& workspace, uintptr_t stream);

}  // namespace mf2
