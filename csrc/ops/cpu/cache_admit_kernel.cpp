// CPU kernel of lmgnn::cache_admit: the reference implementation of the admission and
// eviction semantics documented in csrc/ops/cache_admit.cpp, sequential and deterministic
// (the CUDA kernel computes the same victims with scans).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "ops/cache_common.h"
#include "ops/cpu/cache_cpu_utils.h"

namespace lmgnn {
namespace {

// Victims of the CLOCK walk (see cache_admit.cpp), in walk order; advances the hand.
std::vector<int64_t> clock_victims(int64_t* meta, int64_t cap, int64_t m, int64_t& hand) {
  std::vector<int64_t> victims;
  victims.reserve(m);
  std::vector<char> taken(cap, 0);
  for (int64_t r = 0; r < cap && static_cast<int64_t>(victims.size()) < m; ++r) {
    const int64_t s = (hand + r) % cap;
    if (meta[s] == 0) {
      victims.push_back(s);
      taken[s] = 1;
    } else {
      meta[s] = 0;
    }
  }
  // Second revolution: the slots whose bit the first one cleared.
  for (int64_t r = 0; r < cap && static_cast<int64_t>(victims.size()) < m; ++r) {
    const int64_t s = (hand + r) % cap;
    if (!taken[s]) victims.push_back(s);
  }
  if (!victims.empty()) hand = (victims.back() + 1) % cap;
  return victims;
}

// The m slots with the smallest (meta, slot): least recently used first.
std::vector<int64_t> lru_victims(const int64_t* meta, int64_t cap, int64_t m) {
  std::vector<std::pair<int64_t, int64_t>> order(cap);
  for (int64_t s = 0; s < cap; ++s) order[s] = {meta[s], s};
  if (m < cap) std::nth_element(order.begin(), order.begin() + m, order.end());
  std::sort(order.begin(), order.begin() + m);
  std::vector<int64_t> victims(m);
  for (int64_t j = 0; j < m; ++j) victims[j] = order[j].second;
  return victims;
}

at::Tensor cache_admit_cpu(const at::Tensor& ids_in, const at::Tensor& slots_in,
                           const at::Tensor& out, const at::Tensor& keys_t,
                           const at::Tensor& vals_t, const at::Tensor& slot_ids_t,
                           const at::Tensor& meta_t, const at::Tensor& rows,
                           const at::Tensor& state_t, c10::string_view policy_name,
                           bool /*check: the CPU kernel always validates*/) {
  constexpr const char* op = "cache_admit";
  check_cache_admit_args(op, ids_in, slots_in, out, keys_t, vals_t, slot_ids_t, meta_t, rows, state_t);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CPU);
  const CachePolicy policy = parse_cache_policy(op, std::string(policy_name));
  const auto ids = ids_in.to(at::kLong).contiguous();
  const int64_t n = ids.numel(), cap = rows.size(0), mask = keys_t.numel() - 1;
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* sl = slots_in.const_data_ptr<int64_t>();
  int64_t* keys = keys_t.data_ptr<int64_t>();
  int64_t* vals = vals_t.data_ptr<int64_t>();
  int64_t* slot_ids = slot_ids_t.data_ptr<int64_t>();
  int64_t* meta = meta_t.data_ptr<int64_t>();
  int64_t* state = state_t.data_ptr<int64_t>();
  LMGNN_CHECK(cap == 0 || (state[kHand] >= 0 && state[kHand] < cap), op, ": state holds hand ",
              state[kHand], " outside [0, ", cap, ")");

  // 1. Reference the hit slots.
  const int64_t tick = ++state[kTick];
  std::vector<std::pair<int64_t, int64_t>> cand;  // (id, position) of misses
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = sl[i];
    LMGNN_CHECK_INDEX(s >= -1 && s < cap, op, ": slots holds slot ", s, " at position ", i,
                      " outside [-1, ", cap, ")");
    if (s >= 0) {
      meta[s] = policy == CachePolicy::kClock ? 1 : tick;
    } else {
      LMGNN_CHECK_INDEX(id[i] >= 0, op, ": ids holds negative id ", id[i]);
      cand.emplace_back(id[i], i);
    }
  }
  if (cap == 0 || cand.empty()) return at::scalar_tensor(0, ids.options());

  // 2. Distinct missed ids in increasing order, each with its first position.
  std::sort(cand.begin(), cand.end());
  cand.erase(std::unique(cand.begin(), cand.end(),
                         [](const auto& a, const auto& b) { return a.first == b.first; }),
             cand.end());
  const int64_t m = std::min<int64_t>(static_cast<int64_t>(cand.size()), cap);

  // 3. Victims.
  const std::vector<int64_t> victims = policy == CachePolicy::kClock
                                           ? clock_victims(meta, cap, m, state[kHand])
                                           : lru_victims(meta, cap, m);

  // 4-5. Evict, insert, copy the rows; rebuild the map when tombstones make probes long.
  std::vector<int64_t> cand_ids(m), cand_pos(m);
  for (int64_t j = 0; j < m; ++j) {
    cand_ids[j] = cand[j].first;
    cand_pos[j] = cand[j].second;
  }
  const int64_t new_meta = policy == CachePolicy::kClock ? 0 : tick;
  apply_admission_cpu(op, m, victims.data(), cand_ids.data(), cand_pos.data(),
                      [&](int64_t) { return new_meta; }, out, keys, vals, mask, slot_ids, meta,
                      rows, state);
  return at::scalar_tensor(m, ids.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("cache_admit", &cache_admit_cpu); }

}  // namespace lmgnn
