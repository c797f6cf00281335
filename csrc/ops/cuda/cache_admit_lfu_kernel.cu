// CUDA kernel of lmgnn::cache_admit_lfu: the semantics of csrc/ops/cache_admit_lfu.cpp (and
// of its sequential CPU twin) with sorts, scans and a reduction, and no host sync (unless
// check=True): the candidate count and m stay on the device.
//
//  counting:   one thread per access adds 1 to its kSketchDepth counters (integer atomics,
//              so the result does not depend on the order); a single thread ticks, adds N
//              and decides the aging, which a grid-wide pass applies.
//  candidates: radix sort of (id or +inf for hits, position), first of each run, compacted
//              by an inclusive scan (increasing id); then a stable radix sort by
//              INT32_MAX - est (+inf past the candidates) puts them in (est desc, id asc).
//  victims:    key[s] = -1 (free) or est(slot_ids[s]) into meta; stable radix sort of
//              (key, slot).
//  m:          #{j < min(#cand, C) : est(cand j) > key(victim j)}, a prefix, by atomics.
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>

#include "ops/cache_common.h"
#include "ops/cuda/cache_admit_apply.cuh"
#include "ops/cuda/cache_cuda_utils.cuh"

namespace lmgnn {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kNone = LLONG_MAX;  // +inf sort key past the candidates

__device__ __forceinline__ int64_t estimate(const int32_t* __restrict__ sketch, int64_t w,
                                            int64_t id) {
  int64_t e = sketch[sketch_hash(id, 0, w - 1)];
  for (int64_t d = 1; d < kSketchDepth; ++d) {
    const int64_t c = sketch[d * w + sketch_hash(id, d, w - 1)];
    e = c < e ? c : e;
  }
  return e;
}

// Counts every valid access; marks the candidates (valid misses).
__global__ void count_kernel(const int64_t* __restrict__ ids, const int64_t* __restrict__ slots,
                             int64_t n, int64_t cap, int32_t* __restrict__ sketch, int64_t w,
                             int64_t* __restrict__ cand_key) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t id = ids[i], s = slots[i];
  const bool valid = id >= 0 && s >= -1 && s < cap;  // invalid entries are ignored
  if (valid)
    for (int64_t d = 0; d < kSketchDepth; ++d) atomicAdd(sketch + d * w + sketch_hash(id, d, w - 1), 1);
  cand_key[i] = valid && s == -1 ? id : kNoCandidate;
}

// tick += 1; adds += n; age = adds >= period (then adds = 0).
__global__ void tick_age_kernel(int64_t* state, int64_t n, int64_t period, int64_t* age) {
  state[kTick] += 1;
  state[kAdds] += n;
  *age = state[kAdds] >= period;
  if (*age) state[kAdds] = 0;
}

__global__ void halve_kernel(int32_t* __restrict__ sketch, int64_t size, const int64_t* __restrict__ age) {
  const int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (k < size && *age) sketch[k] >>= 1;
}

// Sort key of candidate rank j: INT32_MAX - est (est desc), +inf past the candidates.
__global__ void cand_key_kernel(const int64_t* __restrict__ cand_id, const int64_t* __restrict__ ncand,
                                int64_t n, const int32_t* __restrict__ sketch, int64_t w,
                                int64_t* __restrict__ est_key) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j < n) est_key[j] = j < *ncand ? INT_MAX - estimate(sketch, w, cand_id[j]) : kNone;
}

// meta[s] = -1 for a free slot, else the estimated count of its id.
__global__ void slot_key_kernel(const int64_t* __restrict__ slot_ids, int64_t cap,
                                const int32_t* __restrict__ sketch, int64_t w,
                                int64_t* __restrict__ meta) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s < cap) meta[s] = slot_ids[s] < 0 ? -1 : estimate(sketch, w, slot_ids[s]);
}

// For j < min(#cand, C): the j-th candidate (id, position, est) in admission order, and
// m += [est > key of the j-th victim].
__global__ void pair_kernel(const int64_t* __restrict__ sorted_est_key,
                            const int64_t* __restrict__ order, const int64_t* __restrict__ cand_id,
                            const int64_t* __restrict__ cand_pos, const int64_t* __restrict__ ncand,
                            const int64_t* __restrict__ vkey, int64_t k_max,
                            int64_t* __restrict__ adm_id, int64_t* __restrict__ adm_pos,
                            int64_t* __restrict__ adm_est, unsigned long long* __restrict__ m) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= k_max || j >= *ncand) return;
  const int64_t est = INT_MAX - sorted_est_key[j];
  adm_id[j] = cand_id[order[j]];
  adm_pos[j] = cand_pos[order[j]];
  adm_est[j] = est;
  if (est > vkey[j]) atomicAdd(m, 1ULL);
}

at::Tensor cache_admit_lfu_cuda(const at::Tensor& ids_in, const at::Tensor& slots,
                                const at::Tensor& out, const at::Tensor& keys,
                                const at::Tensor& vals, const at::Tensor& slot_ids,
                                const at::Tensor& meta, const at::Tensor& rows,
                                const at::Tensor& state, const at::Tensor& sketch, int64_t period,
                                bool check) {
  constexpr const char* op = "cache_admit_lfu";
  check_cache_admit_args(op, ids_in, slots, out, keys, vals, slot_ids, meta, rows, state);
  check_cache_sketch_args(op, ids_in, sketch, period);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(ids_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto ids = ids_in.to(at::kLong).contiguous();
  const auto opts = ids.options();
  const int64_t n = ids.numel(), cap = rows.size(0), w = sketch.size(1);
  if (check || full_input_checks())
    check_admit_entries_cuda(op, ids, slots, cap, /*all_ids=*/true, state, /*check_hand=*/false, stream);
  auto m_dev = at::zeros({}, opts);
  auto ncand_dev = at::zeros({}, opts);
  auto age = at::empty({}, opts);
  int64_t* st = state.data_ptr<int64_t>();
  int32_t* sk = sketch.data_ptr<int32_t>();

  // 1. Count, tick, age.
  auto cand_key = at::empty({n}, opts);
  if (n > 0) {
    count_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        ids.const_data_ptr<int64_t>(), slots.const_data_ptr<int64_t>(), n, cap, sk, w,
        cand_key.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  tick_age_kernel<<<1, 1, 0, stream>>>(st, n, period, age.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  halve_kernel<<<blocks_for(kSketchDepth * w, kThreads), kThreads, 0, stream>>>(
      sk, kSketchDepth * w, age.const_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (cap == 0) return m_dev;

  // 3 (first, so that it also runs when n == 0). Victims: keys into meta, sorted.
  const int64_t cap_blocks = blocks_for(cap, kThreads);
  slot_key_kernel<<<cap_blocks, kThreads, 0, stream>>>(slot_ids.const_data_ptr<int64_t>(), cap, sk, w,
                                                       meta.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (n == 0) return m_dev;
  auto slot_iota = at::arange(cap, opts);
  auto vkey = at::empty({cap}, opts), victim = at::empty({cap}, opts);
  sort_pairs_i64(meta.const_data_ptr<int64_t>(), vkey.data_ptr<int64_t>(),
                 slot_iota.const_data_ptr<int64_t>(), victim.data_ptr<int64_t>(), cap, opts, stream);

  // 2. Distinct candidates by increasing id, then by (est desc, id asc).
  auto iota = at::arange(n, opts);
  at::Tensor cand_id, cand_pos;
  distinct_candidates_cuda(cand_key, iota, /*limit=*/LLONG_MAX, cand_id, cand_pos, ncand_dev, stream);
  auto est_key = at::empty({n}, opts), sorted_est_key = at::empty({n}, opts), order = at::empty({n}, opts);
  cand_key_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
      cand_id.const_data_ptr<int64_t>(), ncand_dev.const_data_ptr<int64_t>(), n, sk, w,
      est_key.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sort_pairs_i64(est_key.const_data_ptr<int64_t>(), sorted_est_key.data_ptr<int64_t>(),
                 iota.const_data_ptr<int64_t>(), order.data_ptr<int64_t>(), n, opts, stream);

  // 4. Pair the j-th candidate with the j-th victim; count the admitted prefix.
  const int64_t k_max = n < cap ? n : cap;
  auto adm_id = at::empty({k_max}, opts), adm_pos = at::empty({k_max}, opts),
       adm_est = at::empty({k_max}, opts);
  pair_kernel<<<blocks_for(k_max, kThreads), kThreads, 0, stream>>>(
      sorted_est_key.const_data_ptr<int64_t>(), order.const_data_ptr<int64_t>(),
      cand_id.const_data_ptr<int64_t>(), cand_pos.const_data_ptr<int64_t>(),
      ncand_dev.const_data_ptr<int64_t>(), vkey.const_data_ptr<int64_t>(), k_max,
      adm_id.data_ptr<int64_t>(), adm_pos.data_ptr<int64_t>(), adm_est.data_ptr<int64_t>(),
      reinterpret_cast<unsigned long long*>(m_dev.data_ptr<int64_t>()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // 5. Evict, insert (meta = est), copy the rows; rebuild the map when needed.
  apply_admission_cuda(victim.const_data_ptr<int64_t>(), adm_id.const_data_ptr<int64_t>(),
                       adm_pos.const_data_ptr<int64_t>(), adm_est.const_data_ptr<int64_t>(),
                       /*meta_tick=*/false, m_dev.const_data_ptr<int64_t>(), out, keys, vals,
                       slot_ids, meta, rows, state, stream);
  return m_dev;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("cache_admit_lfu", &cache_admit_lfu_cuda); }

}  // namespace lmgnn
