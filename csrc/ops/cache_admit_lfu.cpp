// lmgnn::cache_admit_lfu — frequency-aware admission (TinyLFU-style) after a cache_gather.
//
//   ids, slots : [N] the ids just gathered and the slots cache_gather returned (-1 = miss)
//   out        : [N, D] the rows cache_gather returned (admitted rows are copied from here)
//   keys, vals, slot_ids, meta, rows, state : the cache state (cache_common.h), updated
//   sketch     : [kSketchDepth, W] int32 count-min sketch (W a power of two), updated
//   period     : accesses between two agings of the sketch (>= 1)
//   check      : as in cache_admit: the CPU kernel always validates; on CUDA, check=True
//                reads the id/slot bounds back once and raises, check=False (ids and slots
//                straight from cache_gather) adds no host sync and ignores invalid entries
//   returns    : a 0-dim int64 tensor, the number of rows admitted
//
// Semantics (identical on CPU and CUDA; est(x) = min over d of sketch[d, sketch_hash(x, d)]):
//  1. tick += 1. Every access (hits and misses, each occurrence) adds 1 to its kSketchDepth
//     counters; adds += N. When adds >= period, every counter is halved (aging) and adds = 0.
//  2. Candidates: the distinct missed ids ordered by (est descending, id ascending).
//  3. Victims: the slots ordered by (key ascending, slot ascending) with key = -1 for a free
//     slot and est(slot_ids[s]) otherwise; meta[s] = key (the slot's current estimate).
//  4. With k = min(#candidates, C), the j-th candidate replaces the j-th victim for j < m,
//     m = #{j < k : est(candidate j) > key(victim j)}: candidates are non-increasing and
//     victims non-decreasing, so these j form a prefix. A missed row is admitted only when it
//     is seen more often than the coldest row it would displace; free slots take anything.
//     Admitted slots get meta = est of their new id.
//  5. As cache_admit: evict/insert in the hash map, copy the rows from out, rebuild the map
//     when tombstones exceed H / 4.
#include <torch/library.h>

#include "ops/cache_common.h"
#include "utils/check.h"

namespace lmgnn {

void check_cache_sketch_args(const char* op, const at::Tensor& ids, const at::Tensor& sketch,
                             int64_t period) {
  check_defined(op, sketch, "sketch");
  check_same_device(op, ids, "ids", sketch, "sketch");
  check_dim(op, sketch, "sketch", 2);
  LMGNN_CHECK(sketch.scalar_type() == at::kInt, op, ": sketch must be int32, got ",
              sketch.scalar_type());
  LMGNN_CHECK(sketch.size(0) == kSketchDepth, op, ": sketch must have ", kSketchDepth,
              " rows, got ", sketch.size(0));
  const int64_t w = sketch.size(1);
  LMGNN_CHECK(w > 0 && (w & (w - 1)) == 0, op, ": sketch width must be a power of two, got ", w);
  LMGNN_CHECK(sketch.is_contiguous(), op, ": sketch must be contiguous");
  // Counters stay below 2 * period + N after aging; keep them far from int32 overflow.
  LMGNN_CHECK(period >= 1 && period <= (int64_t{1} << 29), op, ": period must be in [1, 2^29], got ",
              period);
  LMGNN_CHECK(ids.numel() <= (int64_t{1} << 30), op, ": at most 2^30 ids per call, got ",
              ids.numel());
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("cache_admit_lfu(Tensor ids, Tensor slots, Tensor out, Tensor(a!) keys, Tensor(b!) vals, "
        "Tensor(c!) slot_ids, Tensor(d!) meta, Tensor(e!) rows, Tensor(f!) state, "
        "Tensor(g!) sketch, int period, bool check=True) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
