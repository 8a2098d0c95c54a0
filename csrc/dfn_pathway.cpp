// DFN cell: validation and dispatch to the CPU or CUDA kernels.
#include "dfn_pathway.h"

#include <stdexcept>
#include <string>

#include "common/dispatch.h"

namespace mf2 {
namespace {

std::string dims(int64_t a, int64_t b) {
  return "[" + std::to_string(a) + ", " + std::to_string(b) + "]";
}

// Every tensor of a cell call: float, the kind of `ref`, contiguous, of the given shape.
void check_arg(const TensorView& t, const std::string& arg, const TensorView& ref,
               const std::string& expected, std::initializer_list<int64_t> shape) {
  check_same_kind(t, arg, ref, "s_prev");
  check_shape(t, arg, expected, shape);
  check_contiguous(t, arg);
}

// A 1-d contiguous buffer of the kind of `ref` holding at least `need` elements.
void check_workspace(const TensorView& w, const TensorView& ref, const std::string& ref_arg,
                     int64_t need) {
  check_same_kind(w, "workspace", ref, ref_arg);
  check_contiguous(w, "workspace");
  if (w.ndim != 1 || w.sizes[0] < need)
    fail("workspace", "[>= " + std::to_string(need) + "] (dfn_workspace_size)", w);
}

DfnCellParams check_cell(const TensorView& s_prev, const TensorView& u, const TensorView& b_up,
                         const TensorView& h, const TensorView& alpha, double lambda) {
  check_float(s_prev, "s_prev");
  check_shape(s_prev, "s_prev", "[B, D]", {-1, -1});
  check_contiguous(s_prev, "s_prev");
  const int64_t B = s_prev.sizes[0], D = s_prev.sizes[1];
  const std::string bd = dims(B, D);
  check_arg(u, "u", s_prev, bd, {B, D});
  check_arg(h, "h", s_prev, bd, {B, D});
  check_arg(b_up, "b_up", s_prev, "[" + std::to_string(D) + "]", {D});
  check_arg(alpha, "alpha", s_prev, "[1]", {1});
  DfnCellParams p;
  p.B = B; p.D = D; p.lambda = lambda;
  return p;
}

template <typename T>
const T* opt(const TensorView* t) {
  return t ? static_cast<const T*>(t->data) : nullptr;
}

template <typename T>
T* opt_out(const TensorView* t) {
  return t ? static_cast<T*>(t->data) : nullptr;
}

}  // namespace

void dfn_cell_forward(const TensorView& s_prev, const TensorView& u, const TensorView& b_up,
                      const TensorView& h, const TensorView& alpha, double lambda,
                      const TensorView& s, uintptr_t stream) {
  const DfnCellParams p = check_cell(s_prev, u, b_up, h, alpha, lambda);
  check_arg(s, "s", s_prev, dims(p.B, p.D), {p.B, p.D});
  if (p.B * p.D == 0) return;
  dispatch(
      "dfn_pathway", s_prev, stream,
      [&](auto zero) {
        using T = decltype(zero);
        dfn_cell_forward_cpu<T>(p, ptr<const T>(s_prev), ptr<const T>(u), ptr<const T>(b_up),
                                ptr<const T>(h), ptr<const T>(alpha), ptr<T>(s));
      },
      [&](auto zero, void* st) {
        using T = decltype(zero);
        dfn_cell_forward_cuda<T>(p, ptr<const T>(s_prev), ptr<const T>(u), ptr<const T>(b_up),
                                 ptr<const T>(h), ptr<const T>(alpha), ptr<T>(s), st);
      });
}

void dfn_cell_backward(const TensorView& grad_out, const TensorView* carry,
                       const TensorView& s_prev, const TensorView& u, const TensorView& b_up,
                       const TensorView& h, const TensorView& alpha, double lambda,
                       const TensorView& grad_u, const TensorView& grad_s_prev,
                       const TensorView* grad_h, const TensorView& grad_b_up,
                       const TensorView& grad_alpha, const TensorView& workspace,
                       uintptr_t stream) {
  const DfnCellParams p = check_cell(s_prev, u, b_up, h, alpha, lambda);
  const std::string bd = dims(p.B, p.D);
  check_arg(grad_out, "grad_out", s_prev, bd, {p.B, p.D});
  if (carry) check_arg(*carry, "carry", s_prev, bd, {p.B, p.D});
  check_arg(grad_u, "grad_u", s_prev, bd, {p.B, p.D});
  check_arg(grad_s_prev, "grad_s_prev", s_prev, bd, {p.B, p.D});
  if (grad_h) check_arg(*grad_h, "grad_h", s_prev, bd, {p.B, p.D});
  check_arg(grad_b_up, "grad_b_up", s_prev, "[" + std::to_string(p.D) + "]", {p.D});
  check_arg(grad_alpha, "grad_alpha", s_prev, "[1]", {1});
  check_workspace(workspace, s_prev, "s_prev", dfn_workspace_size(p.B, 2 * p.D));
  dispatch(
      "dfn_pathway", s_prev, stream,
      [&](auto zero) {
        using T = decltype(zero);
        dfn_cell_backward_cpu<T>(p, ptr<const T>(grad_out), opt<T>(carry), ptr<const T>(s_prev),
                                 ptr<const T>(u), ptr<const T>(b_up), ptr<const T>(h),
                                 ptr<const T>(alpha), ptr<T>(grad_u), ptr<T>(grad_s_prev),
                                 opt_out<T>(grad_h), ptr<T>(grad_b_up), ptr<T>(grad_alpha),
                                 ptr<T>(workspace));
      },
      [&](auto zero, void* st) {
        using T = decltype(zero);
        dfn_cell_backward_cuda<T>(p, ptr<const T>(grad_out), opt<T>(carry), ptr<const T>(s_prev),
                                  ptr<const T>(u), ptr<const T>(b_up), ptr<const T>(h),
                                  ptr<const T>(alpha), ptr<T>(grad_u), ptr<T>(grad_s_prev),
                                  opt_out<T>(grad_h), ptr<T>(grad_b_up), ptr<T>(grad_alpha),
                                  ptr<T>(workspace), st);
      });
}

void dfn_relu_backward(const TensorView& grad, const TensorView& a, const TensorView& grad_b_down,
                       const TensorView& workspace, uintptr_t stream) {
  check_float(grad, "grad");
  check_shape(grad, "grad", "[B, R]", {-1, -1});
  check_contiguous(grad, "grad");
  const int64_t B = grad.sizes[0], R = grad.sizes[1];
  check_same_kind(a, "a", grad, "grad");
  check_shape(a, "a", dims(B, R), {B, R});
  check_contiguous(a, "a");
  check_same_kind(grad_b_down, "grad_b_down", grad, "grad");
  check_shape(grad_b_down, "grad_b_down", "[" + std::to_string(R) + "]", {R});
  check_contiguous(grad_b_down, "grad_b_down");
  check_workspace(workspace, grad, "grad", dfn_workspace_size(B, R));
  dispatch(
      "dfn_pathway", grad, stream,
      [&](auto zero) {
        using T = decltype(zero);
        dfn_relu_backward_cpu<T>(B, R, ptr<T>(grad), ptr<const T>(a), ptr<T>(grad_b_down));
      },
      [&](auto zero, void* st) {
        using T = decltype(zero);
        dfn_relu_backward_cuda<T>(B, R, ptr<T>(grad), ptr<const T>(a), ptr<T>(grad_b_down),
                                  ptr<T>(workspace), st);
      });
}

}  // namespace mf2
