// The Python module lmgnn_fast._C. Operators register themselves in the `lmgnn` namespace
// from their own files (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL); this file holds only
// what is not an operator.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

#ifndef LMGNN_CPU_MARCH
#define LMGNN_CPU_MARCH ""
#endif

#ifndef LMGNN_CUDA_ARCHS
#define LMGNN_CUDA_ARCHS ""
#endif

namespace {

py::dict build_info() {
  py::dict info;
  info["torch_version"] = LMGNN_TORCH_VERSION;
#ifdef LMGNN_WITH_CUDA
  info["cuda"] = true;
  info["cuda_archs"] = std::string(LMGNN_CUDA_ARCHS);
#else
  info["cuda"] = false;
  info["cuda_archs"] = std::string("");
#endif
#ifdef LMGNN_WITH_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["num_threads"] = at::get_num_threads();
  info["cpu_march"] = std::string(LMGNN_CPU_MARCH);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lmgnn_fast C++/CUDA operators (registered under torch.ops.lmgnn)";
  m.def("build_info", &build_info,
        "Torch version built against, CUDA kernels and archs, OpenMP, thread count, CPU -march.");
}
