// CPU kernel of lmgnn::cache_admit_lfu: the reference implementation of the frequency-aware
// admission documented in csrc/ops/cache_admit_lfu.cpp, sequential and deterministic (the
// CUDA kernel computes the same candidates, victims and count with sorts and a reduction).
#include <ATen/core/Tensor.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "ops/cache_common.h"
#include "ops/cpu/cache_cpu_utils.h"

namespace lmgnn {
namespace {

int64_t estimate(const int32_t* sketch, int64_t w, int64_t id) {
  int64_t e = sketch[sketch_hash(id, 0, w - 1)];
  for (int64_t d = 1; d < kSketchDepth; ++d)
    e = std::min<int64_t>(e, sketch[d * w + sketch_hash(id, d, w - 1)]);
  return e;
}

at::Tensor cache_admit_lfu_cpu(const at::Tensor& ids_in, const at::Tensor& slots_in,
                               const at::Tensor& out, const at::Tensor& keys_t,
                               const at::Tensor& vals_t, const at::Tensor& slot_ids_t,
                               const at::Tensor& meta_t, const at::Tensor& rows,
                               const at::Tensor& state_t, const at::Tensor& sketch_t,
                               int64_t period, bool /*check: always validated here*/) {
  constexpr const char* op = "cache_admit_lfu";
  check_cache_admit_args(op, ids_in, slots_in, out, keys_t, vals_t, slot_ids_t, meta_t, rows, state_t);
  check_cache_sketch_args(op, ids_in, sketch_t, period);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CPU);
  const auto ids = ids_in.to(at::kLong).contiguous();
  const int64_t n = ids.numel(), cap = rows.size(0), mask = keys_t.numel() - 1;
  const int64_t w = sketch_t.size(1);
  const int64_t* id = ids.const_data_ptr<int64_t>();
  const int64_t* sl = slots_in.const_data_ptr<int64_t>();
  int64_t* keys = keys_t.data_ptr<int64_t>();
  int64_t* vals = vals_t.data_ptr<int64_t>();
  int64_t* slot_ids = slot_ids_t.data_ptr<int64_t>();
  int64_t* meta = meta_t.data_ptr<int64_t>();
  int64_t* state = state_t.data_ptr<int64_t>();
  int32_t* sketch = sketch_t.data_ptr<int32_t>();

  // Validate everything before changing anything.
  for (int64_t i = 0; i < n; ++i) {
    LMGNN_CHECK_INDEX(sl[i] >= -1 && sl[i] < cap, op, ": slots holds slot ", sl[i],
                      " at position ", i, " outside [-1, ", cap, ")");
    LMGNN_CHECK_INDEX(id[i] >= 0, op, ": ids holds negative id ", id[i]);
  }

  // 1. Count every access; age the sketch.
  ++state[kTick];
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < kSketchDepth; ++d) ++sketch[d * w + sketch_hash(id[i], d, w - 1)];
  state[kAdds] += n;
  if (state[kAdds] >= period) {
    for (int64_t k = 0; k < kSketchDepth * w; ++k) sketch[k] >>= 1;
    state[kAdds] = 0;
  }
  if (cap == 0) return at::scalar_tensor(0, ids.options());

  // 2. Distinct missed ids (first position of each) by (est desc, id asc).
  std::vector<std::pair<int64_t, int64_t>> miss;  // (id, position)
  for (int64_t i = 0; i < n; ++i)
    if (sl[i] < 0) miss.emplace_back(id[i], i);
  std::sort(miss.begin(), miss.end());
  miss.erase(std::unique(miss.begin(), miss.end(),
                         [](const auto& a, const auto& b) { return a.first == b.first; }),
             miss.end());
  std::vector<int64_t> cand_est(miss.size());
  for (size_t j = 0; j < miss.size(); ++j) cand_est[j] = estimate(sketch, w, miss[j].first);
  std::vector<int64_t> corder(miss.size());
  for (size_t j = 0; j < miss.size(); ++j) corder[j] = static_cast<int64_t>(j);
  std::stable_sort(corder.begin(), corder.end(),
                   [&](int64_t a, int64_t b) { return cand_est[a] > cand_est[b]; });

  // 3. Victims by (key asc, slot asc); meta = key.
  std::vector<std::pair<int64_t, int64_t>> vorder(cap);  // (key, slot)
  for (int64_t s = 0; s < cap; ++s) {
    meta[s] = slot_ids[s] < 0 ? -1 : estimate(sketch, w, slot_ids[s]);
    vorder[s] = {meta[s], s};
  }
  std::sort(vorder.begin(), vorder.end());

  // 4. The admitted prefix.
  const int64_t k = std::min<int64_t>(static_cast<int64_t>(miss.size()), cap);
  int64_t m = 0;
  while (m < k && cand_est[corder[m]] > vorder[m].first) ++m;
  std::vector<int64_t> victims(m), cand_ids(m), cand_pos(m), new_meta(m);
  for (int64_t j = 0; j < m; ++j) {
    victims[j] = vorder[j].second;
    cand_ids[j] = miss[corder[j]].first;
    cand_pos[j] = miss[corder[j]].second;
    new_meta[j] = cand_est[corder[j]];
  }

  // 5. Evict, insert, copy; rebuild the map when needed.
  apply_admission_cpu(op, m, victims.data(), cand_ids.data(), cand_pos.data(),
                      [&](int64_t j) { return new_meta[j]; }, out, keys, vals, mask, slot_ids,
                      meta, rows, state);
  return at::scalar_tensor(m, ids.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("cache_admit_lfu", &cache_admit_lfu_cpu); }

}  // namespace lmgnn
