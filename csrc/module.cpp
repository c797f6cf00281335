// The Python module lmgnn_fast._C. Operators register themselves in the `lmgnn` namespace
// from their own files (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL); this file holds only
// what is not an operator.
#include <ATen/Parallel.h>
#include <pybind11/pybind11.h>

#include "utils/cpu_buffer.h"

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

py::dict cpu_buffer_cache_info() {
  const auto i = lmgnn::cpu_buffer_cache_info();
  py::dict info;
  info["in_use_bytes"] = i.in_use_bytes;
  info["cached_bytes"] = i.cached_bytes;
  info["limit_bytes"] = i.limit_bytes;
  info["hits"] = i.hits;
  info["misses"] = i.misses;
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "lmgnn_fast C++/CUDA operators (registered under torch.ops.lmgnn)";
  m.def("build_info", &build_info,
        "Torch version built against, CUDA kernels and archs, OpenMP, thread count, CPU -march.");
  m.def("cpu_buffer_cache_info", &cpu_buffer_cache_info,
        "Bytes in use and cached, the cache limit, hits and misses of the CPU kernels' buffer cache.");
  m.def("empty_cpu_buffer_cache", &lmgnn::empty_cpu_buffer_cache,
        "Unmap the cached (free) blocks of the CPU kernels' buffer cache.");
}
