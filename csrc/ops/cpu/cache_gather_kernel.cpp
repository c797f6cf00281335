// CPU kernel of lmgnn::cache_gather: per id one hash-map probe and one row copy, from the
// cached rows on a hit and from the table on a miss, in parallel over ids.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <atomic>
#include <cstring>

#include "ops/cache_common.h"
#include "ops/cpu/cache_cpu_utils.h"

namespace lmgnn {
namespace {

std::tuple<at::Tensor, at::Tensor> cache_gather_cpu(const at::Tensor& ids_in,
                                                    const at::Tensor& keys,
                                                    const at::Tensor& vals,
                                                    const at::Tensor& rows,
                                                    const at::Tensor& table) {
  constexpr const char* op = "cache_gather";
  check_cache_gather_args(ids_in, keys, vals, rows, table);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CPU);
  check_device_type(op, table, "table", c10::DeviceType::CPU);
  const auto ids = ids_in.contiguous();
  const int64_t n = ids.numel(), dim = rows.size(1);
  auto out = at::empty({n, dim}, rows.options());
  auto slots = at::empty({n}, ids.options().dtype(at::kLong));
  if (n == 0) return {out, slots};
  check_ids_in_range_cpu(op, ids, table.size(0), "table rows");

  const int64_t mask = keys.numel() - 1;
  const int64_t* k = keys.const_data_ptr<int64_t>();
  const int64_t* v = vals.const_data_ptr<int64_t>();
  const int64_t es = rows.element_size();
  const size_t row_bytes = static_cast<size_t>(dim * es);
  const int64_t table_stride = table.stride(0) * es;
  const char* cache_base = static_cast<const char*>(rows.const_data_ptr());
  const char* table_base = static_cast<const char*>(table.const_data_ptr());
  char* out_base = static_cast<char*>(out.data_ptr());
  int64_t* sl = slots.data_ptr<int64_t>();
  const int64_t cap = rows.size(0);
  // First position whose map slot lies outside the cached rows (a corrupt map): never read,
  // raised after the pass.
  std::atomic<int64_t> bad{n};
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_gather_cpu", [&] {
    const index_t* p = ids.const_data_ptr<index_t>();
    at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t id = p[i];
        const int64_t s = cache_probe(k, v, mask, id);
        sl[i] = s;
        if (s < -1 || s >= cap) {
          int64_t cur = bad.load(std::memory_order_relaxed);
          while (i < cur && !bad.compare_exchange_weak(cur, i, std::memory_order_relaxed)) {
          }
          continue;
        }
        const char* src = s >= 0 ? cache_base + s * static_cast<int64_t>(row_bytes)
                                 : table_base + id * table_stride;
        if (row_bytes) std::memcpy(out_base + i * static_cast<int64_t>(row_bytes), src, row_bytes);
      }
    });
    const int64_t i = bad.load();
    if (i < n) check_map_slot_cpu(op, sl[i], cap, static_cast<int64_t>(p[i]), i);
  });
  return {out, slots};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("cache_gather", &cache_gather_cpu); }

}  // namespace lmgnn
