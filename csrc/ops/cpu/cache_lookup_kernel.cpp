// CPU kernel of lmgnn::cache_lookup: one hash-map probe per id, in parallel.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "ops/cache_common.h"
#include "ops/cpu/cache_cpu_utils.h"

namespace lmgnn {
namespace {

at::Tensor cache_lookup_cpu(const at::Tensor& ids_in, const at::Tensor& keys,
                            const at::Tensor& vals, int64_t num_rows) {
  constexpr const char* op = "cache_lookup";
  check_cache_lookup_args(ids_in, keys, vals, num_rows);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CPU);
  const auto ids = ids_in.contiguous();
  const int64_t n = ids.numel();
  auto slots = at::empty({n}, ids.options().dtype(at::kLong));
  if (n == 0) return slots;
  check_ids_in_range_cpu(op, ids, num_rows, "num_rows");
  const int64_t mask = keys.numel() - 1;
  const int64_t* k = keys.const_data_ptr<int64_t>();
  const int64_t* v = vals.const_data_ptr<int64_t>();
  int64_t* out = slots.data_ptr<int64_t>();
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_lookup_cpu", [&] {
    const index_t* p = ids.const_data_ptr<index_t>();
    at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = cache_probe(k, v, mask, p[i]);
    });
  });
  return slots;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("cache_lookup", &cache_lookup_cpu); }

}  // namespace lmgnn
