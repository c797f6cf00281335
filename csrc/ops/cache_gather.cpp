// lmgnn::cache_gather — rows of `ids` in one pass: hits from the cache, misses from the table.
//
//   ids      : [N] int32/int64 node ids in [0, table.size(0)), duplicates allowed
//   keys/vals: [H] int64 hash map of the cache
//   rows     : [C, D] cached rows (on the cache's device)
//   table    : [R, D] authoritative table, same dtype; on the device, or (CUDA) pinned host
//              memory read in place through unified addressing
//   returns  : out [N, D] on rows' device (out[i] == table[ids[i]]),
//              slots [N] int64 (the slot that served ids[i], -1 for a miss)
#include <torch/library.h>

#include "ops/cache_common.h"
#include "utils/check.h"

namespace lmgnn {

void check_cache_gather_args(const at::Tensor& ids, const at::Tensor& keys,
                             const at::Tensor& vals, const at::Tensor& rows,
                             const at::Tensor& table) {
  constexpr const char* op = "cache_gather";
  check_cache_ids(op, ids, "ids");
  check_cache_map_args(op, keys, vals);
  check_defined(op, rows, "rows");
  check_defined(op, table, "table");
  check_same_device(op, ids, "ids", keys, "keys");
  check_same_device(op, ids, "ids", rows, "rows");
  check_dim(op, rows, "rows", 2);
  check_dim(op, table, "table", 2);
  check_same_dtype(op, rows, "rows", table, "table");
  LMGNN_CHECK(rows.size(1) == table.size(1), op, ": rows have ", rows.size(1),
              " columns but table has ", table.size(1));
  LMGNN_CHECK(rows.is_contiguous(), op, ": rows must be contiguous");
  LMGNN_CHECK(table.stride(1) == 1 || table.size(1) <= 1, op,
              ": table rows must be contiguous (stride(1) == 1), got strides ", table.strides());
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("cache_gather(Tensor ids, Tensor keys, Tensor vals, Tensor rows, Tensor table) -> "
        "(Tensor out, Tensor slots)",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
