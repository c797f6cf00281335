// Id-range reductions shared by the CPU kernels: one parallel pass for (min, max), then
// the usual check_id_range message.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

namespace lmgnn {

// (min, max) of p[0..n) as int64; (INT64_MAX, INT64_MIN) when n == 0.
template <typename index_t>
std::pair<int64_t, int64_t> cpu_min_max(const index_t* p, int64_t n) {
  using Pair = std::pair<int64_t, int64_t>;
  return at::parallel_reduce(
      0, n, int64_t{1} << 15,
      Pair{std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()},
      [&](int64_t b, int64_t e, Pair acc) {
        for (int64_t i = b; i < e; ++i) {
          acc.first = std::min<int64_t>(acc.first, p[i]);
          acc.second = std::max<int64_t>(acc.second, p[i]);
        }
        return acc;
      },
      [](Pair a, Pair b) { return Pair{std::min(a.first, b.first), std::max(a.second, b.second)}; });
}

}  // namespace lmgnn
