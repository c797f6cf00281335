// The policy-independent parts of cache admission on CUDA (step 2's distinct candidates
// and steps 4-5 of csrc/ops/cache_admit.cpp), shared by lmgnn::cache_admit and
// lmgnn::cache_admit_lfu, and the optional validation of ids and slots. The number of rows admitted, m, stays on the
// device: every kernel reads it from there, so nothing here waits for the host.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "ops/cache_common.h"
#include "ops/cuda/cache_cuda_utils.cuh"

namespace lmgnn {
namespace {

constexpr int kAdmitThreads = 256;
constexpr int64_t kNoCandidate = LLONG_MAX;  // cand_key of a position that is not a candidate

// flag[j] = sorted_key[j] starts a run of a candidate id.
__global__ void first_candidate_kernel(const int64_t* __restrict__ key, int64_t n, int64_t* __restrict__ flag) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j < n) flag[j] = key[j] != kNoCandidate && (j == 0 || key[j] != key[j - 1]);
}

// Compacts the candidates by rank; *count = min(#candidates, limit).
__global__ void compact_candidates_kernel(const int64_t* __restrict__ key, const int64_t* __restrict__ pos,
                                          const int64_t* __restrict__ flag, const int64_t* __restrict__ incl,
                                          int64_t n, int64_t limit, int64_t* __restrict__ cand_id,
                                          int64_t* __restrict__ cand_pos, int64_t* __restrict__ count) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  if (flag[j]) {
    cand_id[incl[j] - 1] = key[j];
    cand_pos[incl[j] - 1] = pos[j];
  }
  if (j == n - 1) *count = incl[j] < limit ? incl[j] : limit;
}

// Step 2: the distinct candidate ids of `cand_key` ([n]; kNoCandidate where there is none)
// in increasing order, each with its first position (`iota` = arange(n)), into cand_id /
// cand_pos ([n], the first *count entries used); *count = min(#distinct, limit), on the
// device.
inline void distinct_candidates_cuda(const at::Tensor& cand_key, const at::Tensor& iota, int64_t limit,
                                     at::Tensor& cand_id, at::Tensor& cand_pos, at::Tensor& count,
                                     cudaStream_t stream) {
  const int64_t n = cand_key.numel();
  const auto opts = cand_key.options();
  auto key = at::empty({n}, opts), pos = at::empty({n}, opts), flag = at::empty({n}, opts);
  sort_pairs_i64(cand_key.const_data_ptr<int64_t>(), key.data_ptr<int64_t>(), iota.const_data_ptr<int64_t>(),
                 pos.data_ptr<int64_t>(), n, opts, stream);
  const int64_t blocks = blocks_for(n, kAdmitThreads);
  first_candidate_kernel<<<blocks, kAdmitThreads, 0, stream>>>(key.const_data_ptr<int64_t>(), n,
                                                                flag.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  auto incl = at::cumsum(flag, 0);
  cand_id = at::empty({n}, opts);
  cand_pos = at::empty({n}, opts);
  compact_candidates_kernel<<<blocks, kAdmitThreads, 0, stream>>>(
      key.const_data_ptr<int64_t>(), pos.const_data_ptr<int64_t>(), flag.const_data_ptr<int64_t>(),
      incl.const_data_ptr<int64_t>(), n, limit, cand_id.data_ptr<int64_t>(), cand_pos.data_ptr<int64_t>(),
      count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// info[0]: first position with a slot outside [-1, cap); info[1]: first position with a
// negative id (every id when all_ids, else the misses only); n when there is none.
__global__ void admit_check_kernel(const int64_t* __restrict__ ids, const int64_t* __restrict__ slots,
                                   int64_t n, int64_t cap, bool all_ids,
                                   long long* __restrict__ info) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t s = slots[i];
  if (s < -1 || s >= cap) atomicMin(info, static_cast<long long>(i));
  if ((all_ids || s < 0) && ids[i] < 0) atomicMin(info + 1, static_cast<long long>(i));
}

// Raises the CPU kernels' errors for a CLOCK hand outside [0, cap) (when check_hand), a bad
// slot or a negative id (the first position at fault, a slot before an id at the same
// position). One device->host read; a second one only to name the value at fault.
inline void check_admit_entries_cuda(const char* op, const at::Tensor& ids, const at::Tensor& slots,
                                     int64_t cap, bool all_ids, const at::Tensor& state,
                                     bool check_hand, cudaStream_t stream) {
  const int64_t n = ids.numel();
  auto info = at::full({3}, n, ids.options().dtype(at::kLong));
  info.narrow(0, 2, 1).copy_(state.narrow(0, kHand, 1));
  if (n > 0) {
    admit_check_kernel<<<blocks_for(n, kAdmitThreads), kAdmitThreads, 0, stream>>>(
        ids.const_data_ptr<int64_t>(), slots.const_data_ptr<int64_t>(), n, cap, all_ids,
        reinterpret_cast<long long*>(info.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const auto host = info.cpu();
  const int64_t bad_slot = host.const_data_ptr<int64_t>()[0];
  const int64_t bad_id = host.const_data_ptr<int64_t>()[1];
  const int64_t hand = host.const_data_ptr<int64_t>()[2];
  LMGNN_CHECK(!check_hand || cap == 0 || (hand >= 0 && hand < cap), op, ": state holds hand ", hand,
              " outside [0, ", cap, ")");
  if (bad_slot < n && bad_slot <= bad_id) {
    LMGNN_CHECK_INDEX(false, op, ": slots holds slot ", slots[bad_slot].item<int64_t>(),
                      " at position ", bad_slot, " outside [-1, ", cap, ")");
  }
  if (bad_id < n) LMGNN_CHECK_INDEX(false, op, ": ids holds negative id ", ids[bad_id].item<int64_t>());
}

__global__ void evict_kernel(const int64_t* __restrict__ victim, const int64_t* __restrict__ m_ptr,
                             int64_t cap, const int64_t* __restrict__ slot_ids,
                             int64_t* __restrict__ keys, int64_t mask, int64_t* __restrict__ state) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cap || j >= *m_ptr) return;
  const int64_t old = slot_ids[victim[j]];
  if (old < 0) return;
  const int64_t p = cache_find_pos(keys, mask, old);
  if (p < 0) return;
  keys[p] = kTombstone;
  atomicAdd(reinterpret_cast<unsigned long long*>(state + kTombs), 1ULL);
}

__device__ void map_insert(int64_t* keys, int64_t* vals, int64_t mask, int64_t id, int64_t slot,
                           int64_t* tombs) {
  int64_t p = cache_hash(id, mask);
  for (int64_t t = 0; t <= mask; ++t) {
    const int64_t k = keys[p];
    if (k == kEmpty || k == kTombstone) {
      const auto prev = atomicCAS(reinterpret_cast<unsigned long long*>(keys + p),
                                  static_cast<unsigned long long>(k),
                                  static_cast<unsigned long long>(id));
      if (static_cast<int64_t>(prev) == k) {
        vals[p] = slot;
        if (k == kTombstone && tombs != nullptr)
          atomicAdd(reinterpret_cast<unsigned long long*>(tombs), ~0ULL);  // -1
        return;
      }
      continue;  // lost the race: look at this position again
    }
    p = (p + 1) & mask;
  }
}

// meta of the new row: new_meta[j] when given, else the tick (meta_tick) or 0.
__global__ void insert_kernel(const int64_t* __restrict__ victim, const int64_t* __restrict__ cand_id,
                              const int64_t* __restrict__ new_meta, bool meta_tick,
                              const int64_t* __restrict__ m_ptr, int64_t cap,
                              int64_t* __restrict__ keys, int64_t* __restrict__ vals, int64_t mask,
                              int64_t* __restrict__ slot_ids, int64_t* __restrict__ meta,
                              int64_t* __restrict__ state) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cap || j >= *m_ptr) return;
  const int64_t s = victim[j], id = cand_id[j];
  map_insert(keys, vals, mask, id, s, state + kTombs);
  slot_ids[s] = id;
  meta[s] = new_meta != nullptr ? new_meta[j] : (meta_tick ? state[kTick] : 0);
}

template <typename word_t>
__global__ void copy_rows_kernel(const int64_t* __restrict__ victim,
                                 const int64_t* __restrict__ cand_pos,
                                 const int64_t* __restrict__ m_ptr, int64_t cap,
                                 const word_t* __restrict__ out, int64_t row_words,
                                 word_t* __restrict__ rows) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (j >= cap || j >= *m_ptr) return;
  const word_t* src = out + cand_pos[j] * row_words;
  word_t* dst = rows + victim[j] * row_words;
  for (int64_t w = threadIdx.x; w < row_words; w += blockDim.x) dst[w] = src[w];
}

__global__ void rebuild_clear_kernel(int64_t* __restrict__ keys, int64_t h,
                                     const int64_t* __restrict__ state) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p < h && state[kTombs] * 4 > h) keys[p] = kEmpty;
}

__global__ void rebuild_insert_kernel(const int64_t* __restrict__ slot_ids, int64_t cap,
                                      int64_t* __restrict__ keys, int64_t* __restrict__ vals,
                                      int64_t h, const int64_t* __restrict__ state) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s < cap && state[kTombs] * 4 > h && slot_ids[s] >= 0)
    map_insert(keys, vals, h - 1, slot_ids[s], s, nullptr);
}

__global__ void rebuild_done_kernel(int64_t h, int64_t* state) {
  if (state[kTombs] * 4 > h) state[kTombs] = 0;
}

// Slot victim[j] receives id cand_id[j] (row cand_pos[j] of `out`) for j < *m_ptr; then the
// hash map is rebuilt when tombstones exceed H / 4 (decided on the device).
inline void apply_admission_cuda(const int64_t* victim, const int64_t* cand_id,
                                 const int64_t* cand_pos, const int64_t* new_meta, bool meta_tick,
                                 const int64_t* m_ptr, const at::Tensor& out,
                                 const at::Tensor& keys, const at::Tensor& vals,
                                 const at::Tensor& slot_ids, const at::Tensor& meta,
                                 const at::Tensor& rows, const at::Tensor& state,
                                 cudaStream_t stream) {
  const int64_t cap = rows.size(0), h = keys.numel(), mask = h - 1;
  const int64_t cap_blocks = blocks_for(cap, kAdmitThreads);
  int64_t* kp = keys.data_ptr<int64_t>();
  int64_t* vp = vals.data_ptr<int64_t>();
  int64_t* sp = slot_ids.data_ptr<int64_t>();
  int64_t* st = state.data_ptr<int64_t>();
  evict_kernel<<<cap_blocks, kAdmitThreads, 0, stream>>>(victim, m_ptr, cap, sp, kp, mask, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  insert_kernel<<<cap_blocks, kAdmitThreads, 0, stream>>>(victim, cand_id, new_meta, meta_tick,
                                                          m_ptr, cap, kp, vp, mask, sp,
                                                          meta.data_ptr<int64_t>(), st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t row_bytes = rows.size(1) * rows.element_size();
  if (row_bytes > 0) {
    const int wb = copy_word_bytes(row_bytes, {}, {out.const_data_ptr(), rows.const_data_ptr()});
    LMGNN_WORD_SWITCH(wb, [&] {
      copy_rows_kernel<word_t><<<blocks_for(cap, kCacheWarps), dim3(32, kCacheWarps), 0, stream>>>(
          victim, cand_pos, m_ptr, cap, static_cast<const word_t*>(out.const_data_ptr()),
          row_bytes / wb, static_cast<word_t*>(rows.data_ptr()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  rebuild_clear_kernel<<<blocks_for(h, kAdmitThreads), kAdmitThreads, 0, stream>>>(kp, h, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  rebuild_insert_kernel<<<cap_blocks, kAdmitThreads, 0, stream>>>(sp, cap, kp, vp, h, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  rebuild_done_kernel<<<1, 1, 0, stream>>>(h, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace lmgnn
