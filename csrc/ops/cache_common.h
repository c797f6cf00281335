// Shared pieces of the lmgnn::cache_* operators: the open-addressing hash map (node id ->
// cache slot) used by both the CPU and the CUDA kernels, the layout of the small state
// vector, and the argument checks of each op (defined in csrc/ops/cache_<op>.cpp).
//
// Cache state (all tensors on the cache's device):
//   keys     [H] int64  hash-map keys: a node id, kEmpty or kTombstone; H a power of two
//   vals     [H] int64  hash-map values: the slot holding that id
//   slot_ids [C] int64  slot -> node id (-1 = free slot)
//   meta     [C] int64  per-slot policy word: CLOCK reference bit, LRU last-use tick
//   rows     [C, D]     cached rows
//   state    [4] int64  kHand (CLOCK hand), kTombs (tombstones in keys), kTick (batches seen),
//                       kAdds (LFU: accesses counted since the sketch was last halved)
//   sketch   [kSketchDepth, W] int32  LFU only: count-min sketch of access frequencies,
//                       W a power of two; row d counts id at sketch_hash(id, d, W - 1)
// Lookups probe linearly from hash(id) & (H - 1), skip tombstones and stop at kEmpty.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "utils/random.h"

namespace lmgnn {

constexpr int64_t kEmpty = -1;
constexpr int64_t kTombstone = -2;

enum CacheState : int64_t { kHand = 0, kTombs = 1, kTick = 2, kAdds = 3, kStateSize = 4 };

constexpr int64_t kSketchDepth = 4;

enum class CachePolicy { kClock, kLru };

LMGNN_HOST_DEVICE int64_t cache_hash(int64_t id, int64_t mask) {
  return static_cast<int64_t>(mix64(static_cast<uint64_t>(id)) & static_cast<uint64_t>(mask));
}

// Slot of `id`, or -1 when it is not cached. `mask` = H - 1.
LMGNN_HOST_DEVICE int64_t cache_probe(const int64_t* keys, const int64_t* vals, int64_t mask,
                                      int64_t id) {
  int64_t p = cache_hash(id, mask);
  for (int64_t n = 0; n <= mask; ++n) {
    const int64_t k = keys[p];
    if (k == id) return vals[p];
    if (k == kEmpty) return -1;
    p = (p + 1) & mask;
  }
  return -1;
}

// Hash-map position of `id` (which must be present), or -1.
LMGNN_HOST_DEVICE int64_t cache_find_pos(const int64_t* keys, int64_t mask, int64_t id) {
  int64_t p = cache_hash(id, mask);
  for (int64_t n = 0; n <= mask; ++n) {
    const int64_t k = keys[p];
    if (k == id) return p;
    if (k == kEmpty) return -1;
    p = (p + 1) & mask;
  }
  return -1;
}

// Column of `id` in row `d` of the count-min sketch (`mask` = W - 1): the rows hash the
// distinct words id * kSketchDepth + d, so they are independent mixes of the id.
LMGNN_HOST_DEVICE int64_t sketch_hash(int64_t id, int64_t d, int64_t mask) {
  return static_cast<int64_t>(
      mix64(static_cast<uint64_t>(id) * static_cast<uint64_t>(kSketchDepth) + static_cast<uint64_t>(d)) &
      static_cast<uint64_t>(mask));
}

CachePolicy parse_cache_policy(const char* op, const std::string& policy);

// Shape, dtype and device checks shared by the CPU and CUDA kernels (id ranges are checked
// by each kernel, where the ids live).
void check_cache_map_args(const char* op, const at::Tensor& keys, const at::Tensor& vals);
void check_cache_ids(const char* op, const at::Tensor& ids, const char* name);
void check_cache_lookup_args(const at::Tensor& ids, const at::Tensor& keys, const at::Tensor& vals,
                             int64_t num_rows);
void check_cache_gather_args(const at::Tensor& ids, const at::Tensor& keys,
                             const at::Tensor& vals, const at::Tensor& rows,
                             const at::Tensor& table);
void check_cache_admit_args(const char* op, const at::Tensor& ids, const at::Tensor& slots, const at::Tensor& out,
                            const at::Tensor& keys, const at::Tensor& vals,
                            const at::Tensor& slot_ids, const at::Tensor& meta,
                            const at::Tensor& rows, const at::Tensor& state);
void check_cache_sketch_args(const char* op, const at::Tensor& ids, const at::Tensor& sketch,
                             int64_t period);
void check_cache_update_args(const at::Tensor& ids, const at::Tensor& values,
                             const at::Tensor& table, const at::Tensor& versions,
                             const at::Tensor& keys, const at::Tensor& vals,
                             const at::Tensor& rows);

}  // namespace lmgnn
