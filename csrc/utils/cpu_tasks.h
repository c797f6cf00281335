// One parallel region over a list of tasks (CPU), with MKL sequential inside each task.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdint>

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

}  // namespace lmgnn
