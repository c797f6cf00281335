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

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/Tensor.h>

#include <algorithm>

namespace lmgnn {

// Runs f(t) for t in [0, tasks) in one parallel region. At least two tasks are handed to
// parallel_for, so that with more than one thread even a single task runs inside the region,
// where MKL is sequential, exactly as with one thread: a task's GEMMs (mm_fixed_order_out
// included, whose tiles then run in the task's thread) give the same bits for any thread
// count. The caller's thread-local state (dispatch keys below autograd, grad mode) goes with
// every task: tasks call ATen ops.
template <typename F>
void for_each_task(int64_t tasks, F&& f) {
  const at::ThreadLocalState state;
  at::parallel_for(0, std::max<int64_t>(tasks, 2), 1, [&](int64_t b, int64_t e) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t t = b; t < std::min(e, tasks); ++t) f(t);
  });
}

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
