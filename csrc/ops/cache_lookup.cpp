// lmgnn::cache_lookup — the cache slot of each id.
//
//   ids      : [N] int32/int64 node ids, each in [0, num_rows)
//   keys/vals: [H] int64 hash map of the cache (see cache_common.h)
//   returns  : slots [N] int64, the slot caching ids[i] or -1 when it is not cached
#include <torch/library.h>

#include "ops/cache_common.h"
#include "utils/check.h"

namespace lmgnn {

void check_cache_lookup_args(const at::Tensor& ids, const at::Tensor& keys, const at::Tensor& vals,
                             int64_t num_rows) {
  constexpr const char* op = "cache_lookup";
  check_cache_ids(op, ids, "ids");
  check_cache_map_args(op, keys, vals);
  check_same_device(op, ids, "ids", keys, "keys");
  LMGNN_CHECK(num_rows >= 0, op, ": num_rows must be >= 0, got ", num_rows);
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("cache_lookup(Tensor ids, Tensor keys, Tensor vals, SymInt num_rows) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
