// lmgnn::cache_update — write-through update of rows and their versions.
//
//   ids      : [N] int32/int64 node ids in [0, table.size(0)); for duplicates the last
//              occurrence wins, everywhere (table, cached copy and version)
//   values   : [N, D] new rows (on the cache's device), same dtype as the table
//   step     : the training step the rows were computed at
//   table    : [R, D] authoritative table (CPU; on CUDA pinned host memory or a device
//              tensor), written in place
//   versions : [R] int64 per-row version, written in place (on the cache's device)
//   keys/vals: [H] the cache's hash map; rows [C, D] the cached rows, written in place
#include <torch/library.h>

#include "ops/cache_common.h"
#include "utils/check.h"

namespace lmgnn {

void check_cache_update_args(const at::Tensor& ids, const at::Tensor& values,
                             const at::Tensor& table, const at::Tensor& versions,
                             const at::Tensor& keys, const at::Tensor& vals,
                             const at::Tensor& rows) {
  constexpr const char* op = "cache_update";
  check_cache_ids(op, ids, "ids");
  check_cache_map_args(op, keys, vals);
  check_defined(op, values, "values");
  check_defined(op, table, "table");
  check_defined(op, versions, "versions");
  check_defined(op, rows, "rows");
  check_same_device(op, ids, "ids", keys, "keys");
  check_same_device(op, ids, "ids", values, "values");
  check_same_device(op, ids, "ids", versions, "versions");
  check_same_device(op, ids, "ids", rows, "rows");
  check_dim(op, values, "values", 2);
  check_dim(op, table, "table", 2);
  check_dim(op, rows, "rows", 2);
  LMGNN_CHECK(values.size(0) == ids.numel(), op, ": values must have ", ids.numel(),
              " rows (one per id), got ", values.size(0));
  LMGNN_CHECK(values.size(1) == table.size(1) && rows.size(1) == table.size(1), op,
              ": values, table and rows must have the same number of columns, got ",
              values.size(1), ", ", table.size(1), " and ", rows.size(1));
  check_same_dtype(op, rows, "rows", table, "table");
  check_same_dtype(op, values, "values", table, "table");
  LMGNN_CHECK(versions.scalar_type() == at::kLong, op, ": versions must be int64, got ",
              versions.scalar_type());
  check_dim(op, versions, "versions", 1);
  check_numel(op, versions, "versions", table.size(0));
  LMGNN_CHECK(table.is_contiguous() && rows.is_contiguous() && versions.is_contiguous(), op,
              ": table, rows and versions must be contiguous");
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("cache_update(Tensor ids, Tensor values, int step, Tensor(a!) table, "
        "Tensor(b!) versions, Tensor keys, Tensor vals, Tensor(c!) rows) -> ()",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
