// Helpers shared by the CPU kernels of the lmgnn::cache_* operators.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {

// Raises an IndexError naming `op` and the offending id unless every id is in [0, count).
inline void check_ids_in_range_cpu(const char* op, const at::Tensor& ids, int64_t count,
                                   const char* what) {
  if (ids.numel() == 0) return;
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_check_ids", [&] {
    const index_t* p = ids.const_data_ptr<index_t>();
    using Pair = std::pair<int64_t, int64_t>;
    const Pair mm = at::parallel_reduce(
        0, ids.numel(), 1 << 15,
        Pair{std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()},
        [&](int64_t b, int64_t e, Pair acc) {
          for (int64_t i = b; i < e; ++i) {
            acc.first = std::min<int64_t>(acc.first, p[i]);
            acc.second = std::max<int64_t>(acc.second, p[i]);
          }
          return acc;
        },
        [](Pair a, Pair b) { return Pair{std::min(a.first, b.first), std::max(a.second, b.second)}; });
    check_id_range(op, "ids", mm.first, mm.second, count, what);
  });
}

}  // namespace lmgnn
