// CPU kernel of lmgnn::cache_update: the last occurrence of each id writes its row to the
// table, to the cached copy (if any) and its step to versions, in parallel over ids.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "ops/cache_common.h"
#include "ops/cpu/cache_cpu_utils.h"

namespace lmgnn {
namespace {

void cache_update_cpu(const at::Tensor& ids_in, const at::Tensor& values_in, int64_t step,
                      const at::Tensor& table, const at::Tensor& versions,
                      const at::Tensor& keys, const at::Tensor& vals, const at::Tensor& rows) {
  constexpr const char* op = "cache_update";
  check_cache_update_args(ids_in, values_in, table, versions, keys, vals, rows);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CPU);
  check_device_type(op, table, "table", c10::DeviceType::CPU);
  const auto ids = ids_in.to(at::kLong).contiguous();
  const auto values = values_in.contiguous();
  const int64_t n = ids.numel();
  if (n == 0) return;
  check_ids_in_range_cpu(op, ids, table.size(0), "table rows");
  const int64_t* id = ids.const_data_ptr<int64_t>();

  // Winners: the last position of every distinct id.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return id[a] < id[b]; });
  std::vector<int64_t> winners;
  winners.reserve(n);
  for (int64_t j = 0; j < n; ++j)
    if (j + 1 == n || id[order[j + 1]] != id[order[j]]) winners.push_back(order[j]);

  const int64_t mask = keys.numel() - 1;
  const int64_t* k = keys.const_data_ptr<int64_t>();
  const int64_t* v = vals.const_data_ptr<int64_t>();
  const int64_t row_bytes = table.size(1) * table.element_size();
  const char* src = static_cast<const char*>(values.const_data_ptr());
  char* tab = static_cast<char*>(table.data_ptr());
  char* cache = static_cast<char*>(rows.data_ptr());
  int64_t* ver = versions.data_ptr<int64_t>();
  const int64_t cap = rows.size(0), num_winners = static_cast<int64_t>(winners.size());
  // The cached slot of every winner, validated before anything is written: a map slot
  // outside the cached rows (a corrupt map) raises instead of writing past rows.
  std::vector<int64_t> slot(static_cast<size_t>(num_winners));
  at::parallel_for(0, num_winners, 1024, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) slot[j] = cache_probe(k, v, mask, id[winners[j]]);
  });
  for (int64_t j = 0; j < num_winners; ++j) {
    if (slot[j] < -1 || slot[j] >= cap) check_map_slot_cpu(op, slot[j], cap, id[winners[j]], winners[j]);
  }
  at::parallel_for(0, num_winners, 256, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const int64_t i = winners[j], r = id[i];
      const int64_t s = slot[j];
      ver[r] = step;
      if (!row_bytes) continue;
      std::memcpy(tab + r * row_bytes, src + i * row_bytes, static_cast<size_t>(row_bytes));
      if (s >= 0) std::memcpy(cache + s * row_bytes, src + i * row_bytes, static_cast<size_t>(row_bytes));
    }
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("cache_update", &cache_update_cpu); }

}  // namespace lmgnn
