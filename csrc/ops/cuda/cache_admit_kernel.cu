// CUDA kernel of lmgnn::cache_admit: the semantics of csrc/ops/cache_admit.cpp (and of its
// sequential CPU twin) computed with sorts and scans, with no host sync: the number of rows
// admitted stays on the device and every kernel reads it from there.
//
//  candidates: radix sort of (id or +inf for hits, position), first of each run, ranked by
//              an inclusive scan; m = min(#candidates, C)
//  CLOCK:      z[r] = (meta of the r-th slot from the hand == 0); cz = scan(z). With
//              c = cz[C-1] >= m the victims are the zeros of rank < m and the bits before
//              the m-th zero are cleared; otherwise all c zeros, then the first m - c
//              referenced slots (all bits cleared). The hand moves past the last victim.
//  LRU:        radix sort of (meta, slot); the first m slots.
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

__global__ void touch_kernel(const int64_t* __restrict__ ids, const int64_t* __restrict__ slots,
                             int64_t n, int64_t cap, bool clock, int64_t* __restrict__ meta,
                             int64_t* __restrict__ state, int64_t* __restrict__ cand_key) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t s = slots[i];
  const int64_t tick = state[kTick] + 1;  // incremented by tick_kernel after this kernel
  if (s >= 0 && s < cap) meta[s] = clock ? 1 : tick;
  cand_key[i] = (s == -1 && ids[i] >= 0) ? ids[i] : kNoCandidate;
}

__global__ void tick_kernel(int64_t* state) { state[kTick] += 1; }

// The CLOCK hand in [0, cap): an unchecked hand outside it (check=False) is taken modulo cap
// rather than read past meta.
__device__ __forceinline__ int64_t clock_hand(const int64_t* state, int64_t cap) {
  const int64_t h = state[kHand] % cap;
  return h < 0 ? h + cap : h;
}

__global__ void clock_zero_kernel(const int64_t* __restrict__ meta, const int64_t* __restrict__ state,
                                  int64_t cap, int64_t* __restrict__ z) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r < cap) z[r] = meta[(clock_hand(state, cap) + r) % cap] == 0;
}

__global__ void clock_victim_kernel(const int64_t* __restrict__ z, const int64_t* __restrict__ cz,
                                    const int64_t* __restrict__ state, const int64_t* __restrict__ m_ptr,
                                    int64_t cap, int64_t* __restrict__ meta,
                                    int64_t* __restrict__ victim) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= cap) return;
  const int64_t m = *m_ptr, c = cz[cap - 1];
  const int64_t s = (clock_hand(state, cap) + r) % cap;
  if (z[r]) {
    if (cz[r] - 1 < m) victim[cz[r] - 1] = s;
  } else if (c >= m) {
    if (cz[r] < m) meta[s] = 0;
  } else {
    meta[s] = 0;
    const int64_t ones = r + 1 - cz[r];
    if (ones <= m - c) victim[c + ones - 1] = s;
  }
}

__global__ void clock_hand_kernel(const int64_t* __restrict__ victim, const int64_t* __restrict__ m_ptr,
                                  int64_t cap, int64_t* __restrict__ state) {
  const int64_t m = *m_ptr;
  if (m > 0) state[kHand] = (victim[m - 1] + 1) % cap;
}

at::Tensor cache_admit_cuda(const at::Tensor& ids_in, const at::Tensor& slots,
                            const at::Tensor& out, const at::Tensor& keys, const at::Tensor& vals,
                            const at::Tensor& slot_ids, const at::Tensor& meta,
                            const at::Tensor& rows, const at::Tensor& state,
                            c10::string_view policy_name, bool check) {
  constexpr const char* op = "cache_admit";
  check_cache_admit_args(op, ids_in, slots, out, keys, vals, slot_ids, meta, rows, state);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CUDA);
  const bool clock = parse_cache_policy(op, std::string(policy_name)) == CachePolicy::kClock;
  c10::cuda::CUDAGuard guard(ids_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto ids = ids_in.to(at::kLong).contiguous();
  const auto opts = ids.options();
  const int64_t n = ids.numel(), cap = rows.size(0);
  if (check || full_input_checks())
    check_admit_entries_cuda(op, ids, slots, cap, /*all_ids=*/false, state, /*check_hand=*/true, stream);
  auto m_dev = at::zeros({}, opts);
  int64_t* st = state.data_ptr<int64_t>();
  int64_t* mt = meta.data_ptr<int64_t>();

  // 1. Reference the hits, mark the candidates, tick.
  auto cand_key = at::empty({n}, opts);
  if (n > 0) {
    touch_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        ids.const_data_ptr<int64_t>(), slots.const_data_ptr<int64_t>(), n, cap, clock, mt, st,
        cand_key.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  tick_kernel<<<1, 1, 0, stream>>>(st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (n == 0 || cap == 0) return m_dev;

  // 2. Distinct candidates in increasing id order, each with its first position; m =
  // min(#candidates, cap).
  at::Tensor cand_id, cand_pos;
  distinct_candidates_cuda(cand_key, at::arange(n, opts), cap, cand_id, cand_pos, m_dev, stream);
  const int64_t* m_ptr = m_dev.const_data_ptr<int64_t>();

  // 3. Victims.
  auto victim = at::empty({cap}, opts);
  const int64_t cap_blocks = blocks_for(cap, kThreads);
  if (clock) {
    auto z = at::empty({cap}, opts);
    clock_zero_kernel<<<cap_blocks, kThreads, 0, stream>>>(mt, st, cap, z.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    auto cz = at::cumsum(z, 0);
    clock_victim_kernel<<<cap_blocks, kThreads, 0, stream>>>(
        z.const_data_ptr<int64_t>(), cz.const_data_ptr<int64_t>(), st, m_ptr, cap, mt,
        victim.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    clock_hand_kernel<<<1, 1, 0, stream>>>(victim.const_data_ptr<int64_t>(), m_ptr, cap, st);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    auto slot_iota = at::arange(cap, opts);
    auto sorted_meta = at::empty({cap}, opts);
    sort_pairs_i64(mt, sorted_meta.data_ptr<int64_t>(), slot_iota.const_data_ptr<int64_t>(),
                   victim.data_ptr<int64_t>(), cap, opts, stream);
  }

  // 4-5. Evict, insert, copy the rows from `out`; rebuild the map when needed.
  apply_admission_cuda(victim.const_data_ptr<int64_t>(), cand_id.const_data_ptr<int64_t>(),
                       cand_pos.const_data_ptr<int64_t>(), nullptr, /*meta_tick=*/!clock, m_ptr,
                       out, keys, vals, slot_ids, meta, rows, state, stream);
  return m_dev;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("cache_admit", &cache_admit_cuda); }

}  // namespace lmgnn
