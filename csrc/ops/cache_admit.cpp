// lmgnn::cache_admit — admission on miss and eviction, after a cache_gather.
//
//   ids, slots : [N] the ids just gathered and the slots cache_gather returned (-1 = miss)
//   out        : [N, D] the rows cache_gather returned (admitted rows are copied from here,
//                so admission reads nothing from the host)
//   keys, vals, slot_ids, meta, rows, state : the cache state (cache_common.h), updated
//   policy     : 'clock' or 'lru'
//   check      : validate ids and slots first. The CPU kernel always validates (for free,
//                while it works) and raises IndexError. On CUDA, check=True costs one
//                device->host read (the same error path as cache_gather's id check) and raises
//                the same errors; check=False skips it for ids/slots that come straight from
//                cache_gather, which already checked the ids and produced the slots itself
//                (EmbeddingCache does this, so admission adds no host sync). Unchecked invalid
//                entries are never dereferenced on CUDA: a slot outside [-1, C) or a negative
//                id is ignored, a CLOCK hand outside [0, C) is taken modulo C, and an insert
//                into a map without a free position is dropped. LMGNN_CHECK_INPUTS=full
//                makes every call check (docs/interfaces.md, "Input checks").
//   A corrupt state raises on the CPU ("corrupt cache state: ..."): an evicted id missing
//   from the map (found before the map changes), a map with no free position for an insert
//   (probes are bounded by H, never a loop).
//   returns    : a 0-dim int64 tensor, the number of rows admitted
//
// Semantics (identical on CPU and CUDA):
//  1. tick += 1; every hit slot is referenced (CLOCK: meta = 1; LRU: meta = tick).
//  2. The distinct missed ids, in increasing id order, are the candidates; the first
//     m = min(#candidates, C) are admitted.
//  3. Victims. CLOCK: walk the slots from the hand; a slot with meta == 0 is a victim, a
//     referenced slot has its bit cleared and is passed over; when one revolution found
//     fewer than m victims, the walk continues over the slots it cleared (never over a slot
//     filled by this batch). The hand stops after the last victim. LRU: the m slots with
//     the smallest meta (free slots first, ties by slot index).
//  4. The j-th victim receives the j-th candidate: its old id leaves the hash map, the new
//     id enters it, its row is copied from out, meta = 0 (CLOCK) or tick (LRU).
//  5. When tombstones exceed H / 4 the hash map is rebuilt from slot_ids.
#include <torch/library.h>

#include "ops/cache_common.h"
#include "utils/check.h"

namespace lmgnn {

void check_cache_admit_args(const char* op, const at::Tensor& ids, const at::Tensor& slots,
                            const at::Tensor& out, const at::Tensor& keys, const at::Tensor& vals,
                            const at::Tensor& slot_ids, const at::Tensor& meta,
                            const at::Tensor& rows, const at::Tensor& state) {
  check_cache_ids(op, ids, "ids");
  check_cache_map_args(op, keys, vals);
  for (const auto& [t, name] : {std::pair{&slots, "slots"}, {&out, "out"}, {&slot_ids, "slot_ids"},
                                {&meta, "meta"}, {&rows, "rows"}, {&state, "state"}}) {
    check_defined(op, *t, name);
    check_same_device(op, ids, "ids", *t, name);
    LMGNN_CHECK(t->is_contiguous(), op, ": ", name, " must be contiguous");
  }
  check_same_device(op, ids, "ids", keys, "keys");
  for (const auto& [t, name] : {std::pair{&slots, "slots"}, {&slot_ids, "slot_ids"},
                                {&meta, "meta"}, {&state, "state"}}) {
    check_dim(op, *t, name, 1);
    LMGNN_CHECK(t->scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
                t->scalar_type());
  }
  check_numel(op, slots, "slots", ids.numel());
  check_dim(op, out, "out", 2);
  check_dim(op, rows, "rows", 2);
  LMGNN_CHECK(out.size(0) == ids.numel(), op, ": out must have ", ids.numel(), " rows, got ",
              out.size(0));
  check_same_dtype(op, out, "out", rows, "rows");
  LMGNN_CHECK(out.size(1) == rows.size(1), op, ": out has ", out.size(1),
              " columns but rows has ", rows.size(1));
  check_numel(op, slot_ids, "slot_ids", rows.size(0));
  check_numel(op, meta, "meta", rows.size(0));
  check_numel(op, state, "state", kStateSize);
  LMGNN_CHECK(keys.numel() >= 2 * rows.size(0), op, ": the hash map (", keys.numel(),
              " entries) must hold at least twice the capacity (", rows.size(0), ")");
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("cache_admit(Tensor ids, Tensor slots, Tensor out, Tensor(a!) keys, Tensor(b!) vals, "
        "Tensor(c!) slot_ids, Tensor(d!) meta, Tensor(e!) rows, Tensor(f!) state, str policy, "
        "bool check=True) -> Tensor",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
