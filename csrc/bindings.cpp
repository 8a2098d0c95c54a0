// Python bindings of the native core (module mf2._C). Bindings only: the ops validate and
// dispatch in their own files. Tensors arrive as DLPack capsules, CUDA streams as integers.
// Every C++ error becomes a Python exception here (ValueError for bad input, RuntimeError
// otherwise), raised through error_already_set: pybind11 then never consults the exception
// translators it may share with other extensions loaded in the process (torch's among them).
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "au_region_pool.h"
#include "dfn_pathway.h"
#include "common/dlpack_view.h"

namespace py = pybind11;
using mf2::TensorView;
using mf2::view_from_dlpack;

namespace {
TensorView v(const py::object& o, const char* arg) { return view_from_dlpack(o, arg); }

template <typename F>
void guarded(F&& f) {
  try {
    f();
  } catch (const py::error_already_set&) {
    throw;
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    throw py::error_already_set();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    throw py::error_already_set();
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "mf2._C: unknown C++ error");
    throw py::error_already_set();
  }
}

// Entry l of a stacked tensor (along dim 0) as a view; with `keep`, dim 0 stays (size 1).
TensorView at(const TensorView& t, int64_t l, const char* arg, bool keep = false) {
  if (t.ndim < 1 || l < 0 || l >= t.sizes[0])
    throw std::invalid_argument(std::string(arg) + ": no entry " + std::to_string(l) + " in " +
                                mf2::describe(t));
  TensorView out = t;
  const int64_t element = t.dtype == mf2::DType::Float64 ? 8 : 4;  // other dtypes are refused by the op
  out.data = static_cast<char*>(t.data) + l * t.strides[0] * element;
  if (keep) {
    out.sizes[0] = 1;
    return out;
  }
  out.ndim = t.ndim - 1;
  for (int i = 0; i < out.ndim; ++i) {
    out.sizes[i] = t.sizes[i + 1];
    out.strides[i] = t.strides[i + 1];
  }
  return out;
}

// Optional tensor: None -> nullptr (the view lives in `slot`).
const TensorView* maybe(const py::object& o, const char* arg, TensorView& slot) {
  if (o.is_none()) return nullptr;
  slot = view_from_dlpack(o, arg);
  return &slot;
}
}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mf2 native core: au_region_pool and the fused DFN cell (CPU/OpenMP, CUDA)";

  m.def("build_info", [] {
    py::dict d;
#ifdef MF2_WITH_CUDA
    d["cuda"] = true;
    d["cuda_architectures"] = MF2_CUDA_ARCHITECTURES;
    d["cuda_version"] = MF2_CUDA_VERSION;
#else
    d["cuda"] = false;
    d["cuda_architectures"] = "";
    d["cuda_version"] = "";
#endif
#ifdef _OPENMP
    d["openmp"] = true;
    d["openmp_threads"] = omp_get_max_threads();
#else
    d["openmp"] = false;
    d["openmp_threads"] = 1;
#endif
    d["compiler"] = MF2_CXX_COMPILER;
    return d;
  });

  m.def("au_region_pool_forward",
        [](py::object map, py::object centres, py::object window, py::object out, int64_t R,
           bool zeros, uintptr_t stream) {
          guarded([&] {
            mf2::au_region_pool_forward(v(map, "feature_map"), v(centres, "centres"),
                                        v(window, "window"), v(out, "out"), R, zeros, stream);
          });
        },
        py::arg("feature_map"), py::arg("centres"), py::arg("window"), py::arg("out"),
        py::arg("R"), py::arg("zeros"), py::arg("stream") = 0);

  m.def("au_region_pool_backward",
        [](py::object grad_out, py::object centres, py::object window, py::object grad_map,
           int64_t R, bool zeros, uintptr_t stream) {
          guarded([&] {
            mf2::au_region_pool_backward(v(grad_out, "grad_out"), v(centres, "centres"),
                                         v(window, "window"), v(grad_map, "grad_map"), R, zeros,
                                         stream);
          });
        },
        py::arg("grad_out"), py::arg("centres"), py::arg("window"), py::arg("grad_map"),
        py::arg("R"), py::arg("zeros"), py::arg("stream") = 0);

  // The DFN cell entry points take the pathway's stacked tensors and the cell index l, so one
  // capsule per tensor serves every cell of a pathway.
  m.def("dfn_workspace_size", &mf2::dfn_workspace_size, py::arg("B"), py::arg("width"));

  m.def("dfn_cell_forward",
        [](py::object states, py::object ups, py::object b_up, py::object h, py::object alpha,
           double lambda, int64_t l, uintptr_t stream) {
          guarded([&] {
            const TensorView S = v(states, "states");
            mf2::dfn_cell_forward(at(S, l, "states"), at(v(ups, "u"), l, "u"),
                                  at(v(b_up, "b_up"), l, "b_up"), at(v(h, "h"), l, "h"),
                                  at(v(alpha, "alpha"), l, "alpha", true), lambda,
                                  at(S, l + 1, "s"), stream);
          });
        },
        py::arg("states"), py::arg("ups"), py::arg("b_up"), py::arg("h"), py::arg("alpha"),
        py::arg("lam"), py::arg("l"), py::arg("stream") = 0);

  m.def("dfn_cell_backward",
        [](py::object grad_states, py::object carry, py::object states, py::object ups,
           py::object b_up, py::object h, py::object alpha, double lambda, int64_t l,
           py::object grad_u, py::object grad_s_prev, py::object grad_h, py::object grad_b_up,
           py::object grad_alpha, py::object workspace, uintptr_t stream) {
          guarded([&] {
            TensorView carry_slot, grad_h_slot;
            const TensorView* gh = maybe(grad_h, "grad_h", grad_h_slot);
            if (gh) grad_h_slot = at(*gh, l, "grad_h");
            mf2::dfn_cell_backward(
                at(v(grad_states, "grad_out"), l, "grad_out"), maybe(carry, "carry", carry_slot),
                at(v(states, "s_prev"), l, "s_prev"), at(v(ups, "u"), l, "u"),
                at(v(b_up, "b_up"), l, "b_up"), at(v(h, "h"), l, "h"),
                at(v(alpha, "alpha"), l, "alpha", true), lambda, at(v(grad_u, "grad_u"), l, "grad_u"),
                v(grad_s_prev, "grad_s_prev"), gh ? &grad_h_slot : nullptr,
                at(v(grad_b_up, "grad_b_up"), l, "grad_b_up"),
                at(v(grad_alpha, "grad_alpha"), l, "grad_alpha", true), v(workspace, "workspace"),
                stream);
          });
        },
        py::arg("grad_states"), py::arg("carry"), py::arg("states"), py::arg("ups"),
        py::arg("b_up"), py::arg("h"), py::arg("alpha"), py::arg("lam"), py::arg("l"),
        py::arg("grad_u"), py::arg("grad_s_prev"), py::arg("grad_h"), py::arg("grad_b_up"),
        py::arg("grad_alpha"), py::arg("workspace"), py::arg("stream") = 0);

  m.def("dfn_relu_backward",
        [](py::object grad, py::object a, py::object grad_b_down, int64_t l, py::object workspace,
           uintptr_t stream) {
          guarded([&] {
            mf2::dfn_relu_backward(at(v(grad, "grad"), l, "grad"), at(v(a, "a"), l, "a"),
                                   at(v(grad_b_down, "grad_b_down"), l, "grad_b_down"),
                                   v(workspace, "workspace"), stream);
          });
        },
        py::arg("grad"), py::arg("a"), py::arg("grad_b_down"), py::arg("l"), py::arg("workspace"),
        py::arg("stream") = 0);
}
