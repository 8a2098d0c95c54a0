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

  m.def("dfn_cell_forward",
        [](py::object s_prev, py::object u, py::object b_up, py::object h, py::object alpha,
           double lambda, py::object s, uintptr_t stream) {
          guarded([&] {
            mf2::dfn_cell_forward(v(s_prev, "s_prev"), v(u, "u"), v(b_up, "b_up"), v(h, "h"),
                                  v(alpha, "alpha"), lambda, v(s, "s"), stream);
          });
        },
        py::arg("s_prev"), py::arg("u"), py::arg("b_up"), py::arg("h"), py::arg("alpha"),
        py::arg("lam"), py::arg("s"), py::arg("stream") = 0);

  m.def("dfn_cell_backward",
        [](py::object grad_out, py::object carry, py::object s_prev, py::object u,
           py::object b_up, py::object h, py::object alpha, double lambda, py::object grad_u,
           py::object grad_s_prev, py::object grad_h, py::object grad_b_up,
           py::object grad_alpha, py::object workspace, uintptr_t stream) {
          guarded([&] {
            TensorView carry_slot, grad_h_slot;
            mf2::dfn_cell_backward(v(grad_out, "grad_out"), maybe(carry, "carry", carry_slot),
                                   v(s_prev, "s_prev"), v(u, "u"), v(b_up, "b_up"), v(h, "h"),
                                   v(alpha, "alpha"), lambda, v(grad_u, "grad_u"),
                                   v(grad_s_prev, "grad_s_prev"),
                                   maybe(grad_h, "grad_h", grad_h_slot),
                                   v(grad_b_up, "grad_b_up"), v(grad_alpha, "grad_alpha"),
                                   v(workspace, "workspace"), stream);
          });
        },
        py::arg("grad_out"), py::arg("carry"), py::arg("s_prev"), py::arg("u"), py::arg("b_up"),
        py::arg("h"), py::arg("alpha"), py::arg("lam"), py::arg("grad_u"),
        py::arg("grad_s_prev"), py::arg("grad_h"), py::arg("grad_b_up"), py::arg("grad_alpha"),
        py::arg("workspace"), py::arg("stream") = 0);

  m.def("dfn_relu_backward",
        [](py::object grad, py::object a, py::object grad_b_down, uintptr_t stream) {
          guarded([&] {
            mf2::dfn_relu_backward(v(grad, "grad"), v(a, "a"), v(grad_b_down, "grad_b_down"),
                                   stream);
          });
        },
        py::arg("grad"), py::arg("a"), py::arg("grad_b_down"), py::arg("stream") = 0);
}
