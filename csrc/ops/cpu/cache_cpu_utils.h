// Helpers shared by the CPU kernels of the lmgnn::cache_* operators.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "ops/cache_common.h"
#include "utils/check.h"
#include "utils/cpu_range.h"
#include "utils/dispatch.h"

namespace lmgnn {

// Raises an IndexError naming `op` and the offending id unless every id is in [0, count).
inline void check_ids_in_range_cpu(const char* op, const at::Tensor& ids, int64_t count,
                                   const char* what) {
  if (ids.numel() == 0) return;
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_check_ids", [&] {
    const auto mm = cpu_min_max(ids.const_data_ptr<index_t>(), ids.numel());
    check_id_range(op, "ids", mm.first, mm.second, count, what);
  });
}

}  // namespace lmgnn

namespace lmgnn {

// Inserts id -> slot into the hash map (reusing a tombstone, which `tombs` counts). Probes
// at most H positions: a map with no free position (a corrupt state) raises instead of
// looping forever.
inline void cache_map_insert_cpu(const char* op, int64_t* keys, int64_t* vals, int64_t mask,
                                 int64_t id, int64_t slot, int64_t& tombs) {
  int64_t p = cache_hash(id, mask);
  for (int64_t n = 0; n <= mask; ++n) {
    const int64_t k = keys[p];
    if (k == kEmpty || k == kTombstone) {
      if (k == kTombstone) --tombs;
      keys[p] = id;
      vals[p] = slot;
      return;
    }
    p = (p + 1) & mask;
  }
  LMGNN_CHECK(false, op, ": corrupt cache state: the hash map (keys, ", mask + 1,
              " entries) has no free position for id ", id);
}

// Raises unless a slot read from the hash map (vals) is a cached row, [0, cap), or -1 (the
// id is not cached). `pos` is the position of the id in its op's ids.
inline void check_map_slot_cpu(const char* op, int64_t slot, int64_t cap, int64_t id, int64_t pos) {
  LMGNN_CHECK_INDEX(slot >= -1 && slot < cap, op, ": corrupt cache state: vals maps id ", id,
                    " (ids position ", pos, ") to slot ", slot, ", outside [0, ", cap,
                    ") (rows holds ", cap, " cached rows)");
}

// Steps 4-5 of cache admission (csrc/ops/cache_admit.cpp), shared by every policy: slot
// victims[j] receives id cand_ids[j] for j < m (its old id leaves the hash map, its row is
// copied from row cand_pos[j] of `out`, meta = meta_of(j)); then the map is rebuilt from
// slot_ids when tombstones exceed H / 4.
template <typename MetaOf>
void apply_admission_cpu(const char* op, int64_t m, const int64_t* victims, const int64_t* cand_ids,
                         const int64_t* cand_pos, MetaOf meta_of, const at::Tensor& out,
                         int64_t* keys, int64_t* vals, int64_t mask, int64_t* slot_ids,
                         int64_t* meta, const at::Tensor& rows, int64_t* state) {
  const int64_t cap = rows.size(0);
  // Find every evicted id before changing the map, so that a corrupt state raises first.
  std::vector<int64_t> old_pos(static_cast<size_t>(m), -1);
  for (int64_t j = 0; j < m; ++j) {
    const int64_t old = slot_ids[victims[j]];
    if (old < 0) continue;
    old_pos[j] = cache_find_pos(keys, mask, old);
    LMGNN_CHECK(old_pos[j] >= 0, op, ": corrupt cache state: slot_ids[", victims[j], "] holds id ",
                old, ", which is missing from the hash map (keys)");
  }
  for (int64_t j = 0; j < m; ++j) {
    if (old_pos[j] < 0 || keys[old_pos[j]] == kTombstone) continue;
    keys[old_pos[j]] = kTombstone;
    ++state[kTombs];
  }
  for (int64_t j = 0; j < m; ++j) {
    const int64_t s = victims[j];
    cache_map_insert_cpu(op, keys, vals, mask, cand_ids[j], s, state[kTombs]);
    slot_ids[s] = cand_ids[j];
    meta[s] = meta_of(j);
  }
  const int64_t row_bytes = rows.size(1) * rows.element_size();
  const char* src = static_cast<const char*>(out.const_data_ptr());
  char* dst = static_cast<char*>(rows.data_ptr());
  if (row_bytes > 0) {
    at::parallel_for(0, m, 256, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j)
        std::memcpy(dst + victims[j] * row_bytes, src + cand_pos[j] * row_bytes,
                    static_cast<size_t>(row_bytes));
    });
  }
  if (state[kTombs] * 4 > mask + 1) {
    std::fill(keys, keys + mask + 1, kEmpty);
    int64_t none = 0;
    for (int64_t s = 0; s < cap; ++s)
      if (slot_ids[s] >= 0) cache_map_insert_cpu(op, keys, vals, mask, slot_ids[s], s, none);
    state[kTombs] = 0;
  }
}

}  // namespace lmgnn
