// CPU reductions whose result does not depend on the thread count.
//
// MKL's sgemm picks its partition of the work from the number of threads; where the output
// is small and the reduction long (a weight gradient: [F_in, F_out] summed over thousands of
// rows; a basis-coefficient gradient: [R, B] summed over F_in * F_out) it splits the
// reduction across threads, and 1 and 2 threads then round differently in the last bits --
// enough for two training runs of the same seed to drift apart. Here the work is cut into
// tiles fixed by the shapes alone (row blocks of the output, chunks of the reduction), each
// tile is computed by one thread (inside the parallel region, where MKL runs sequentially),
// and the chunks' partial results are added in chunk order.
#pragma once

#include <ATen/core/Tensor.h>

namespace lmgnn {

// out = a @ b (accumulate: out += a @ b) for a [M, K], b [K, N] (CPU, floating types; any
// strides), the same bits for any thread count. `out` [M, N] is contiguous and overlaps
// neither input. Returns `out`.
at::Tensor& mm_fixed_order_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
                               bool accumulate = false);

// a @ b as a new contiguous [M, N] tensor (see mm_fixed_order_out).
at::Tensor mm_fixed_order(const at::Tensor& a, const at::Tensor& b);

// sum_i x[i] for x [N, F] (CPU) as an [F] tensor of x's type, accumulated in the op-math
// type, the same bits for any thread count (rows in fixed chunks, chunks added in order).
at::Tensor column_sum_fixed_order(const at::Tensor& x);

}  // namespace lmgnn
