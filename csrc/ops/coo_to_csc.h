#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace lmgnn {

// Shape, dtype and device checks shared by the CPU and CUDA kernels of coo_to_csc
// (id ranges are checked by each kernel, where the data lives).
void check_coo_to_csc_args(const at::Tensor& src, const at::Tensor& dst, int64_t num_dst);

}  // namespace lmgnn
