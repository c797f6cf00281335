// CUDA kernels of lmgnn::hetero_attention and lmgnn::hetero_attention_backward (math, layout
// and outputs: ops/hetero_attention.cpp). Mirrors the CPU kernel: one warp per (destination,
// head), the lanes over the head's channels (up to kMaxLanes * 32 = 256 per head, held in
// registers), the warp walking the destination's pairs in relation order.
//   forward:  per softmax scope, pass 1 computes the running max and sum of the logits
//             (online rescaling), pass 2 recomputes each logit, writes alpha and sums the
//             weighted values per pair into `out` (no atomics; zeros for empty slots);
//   backward: per scope, pass 1 sums delta = sum alpha * dp, pass 2 recomputes dp, forms
//             ds, sums grad_q per pair in registers and adds grad_k / grad_v onto the source
//             rows with atomics, in op-math buffers (float32 for half / bfloat16).
// Ids and slots are range-checked in-kernel (CUDA_KERNEL_ASSERT); the host checks shapes,
// dtypes and devices, and under LMGNN_CHECK_INPUTS=full every layout and slot invariant the
// CPU kernel checks.
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <optional>
#include <string_view>

#include "ops/hetero_attention.h"
#include "ops/rgcn_aggregate.h"
#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr int kMaxLanes = 8;  // channels per lane: head width up to 256

struct DevLayout {
  const int64_t* pair_ptr;
  const int64_t* rel_ptr;
  const int64_t* dst_ptr;
  const int64_t* rel_slot;  // nullptr: slot = relation
  int64_t E, P, R, N_dst, N_src, S;
};

__device__ __forceinline__ int64_t relation_of(const int64_t* rel_ptr, int64_t R, int64_t p) {
  int64_t lo = 0, hi = R + 1;  // first r with rel_ptr[r] > p, minus one
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (rel_ptr[mid] <= p) lo = mid + 1; else hi = mid;
  }
  return lo - 1;
}

// Slot of pair p in q / out: its relation, or rel_slot of it.
__device__ __forceinline__ int64_t slot_of(const DevLayout& l, int64_t p) {
  const int64_t r = relation_of(l.rel_ptr, l.R, p);
  const int64_t s = l.rel_slot != nullptr ? l.rel_slot[r] : r;
  CUDA_KERNEL_ASSERT(s >= 0 && s < l.S);
  return s;
}

// Zeroes the slots of destination i (head h) of t [N_dst, S, H, W] that none of its pairs
// dst_pairs[k0:k1] fills.
template <typename scalar_t, typename index_t>
__device__ __forceinline__ void zero_empty_slots(scalar_t* t, const DevLayout& l, const index_t* dst_pairs,
                                                 int64_t i, int64_t h, int64_t H, int64_t W, int64_t k0,
                                                 int64_t k1, int lane) {
  for (int64_t sl = 0; sl < l.S; ++sl) {
    bool used = false;
    for (int64_t kk = k0; kk < k1 && !used; ++kk) used = slot_of(l, dst_pairs[kk]) == sl;
    if (used) continue;
    scalar_t* o = t + ((i * l.S + sl) * H + h) * W;
    for (int64_t d = lane; d < W; d += kWarp) o[d] = scalar_t(0);
  }
}

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int o = kWarp / 2; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Loads row[lane + 32 t] (t < kMaxLanes, zero past n) into registers.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_row(const scalar_t* row, int64_t n, int lane, acc_t (&r)[kMaxLanes]) {
#pragma unroll
  for (int t = 0; t < kMaxLanes; ++t) {
    const int64_t d = lane + t * kWarp;
    r[t] = d < n ? static_cast<acc_t>(row[d]) : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t row_dot(const acc_t (&a)[kMaxLanes], const scalar_t* row, int64_t n, int lane) {
  acc_t s = 0;
#pragma unroll
  for (int t = 0; t < kMaxLanes; ++t) {
    const int64_t d = lane + t * kWarp;
    if (d < n) s += a[t] * static_cast<acc_t>(row[d]);
  }
  return warp_sum(s);
}

// Number of pairs of destination i that form one softmax scope starting at entry kk.
template <bool kPerDst>
__device__ __forceinline__ int64_t scope_end(int64_t kk, int64_t k1) {
  return kPerDst ? k1 : kk + 1;
}

template <typename scalar_t, typename index_t, bool kPerDst>
__global__ void attention_forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                                         const scalar_t* __restrict__ v, const index_t* __restrict__ col,
                                         const index_t* __restrict__ dst_pairs, DevLayout l, int64_t H, int64_t D,
                                         int64_t Dv, at::opmath_type<scalar_t> scale, scalar_t* __restrict__ out,
                                         at::opmath_type<scalar_t>* __restrict__ alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (w >= l.N_dst * H) return;  // whole warps leave together
  const int64_t i = w / H, h = w % H;
  const int64_t k0 = l.dst_ptr[i], k1 = l.dst_ptr[i + 1];
  CUDA_KERNEL_ASSERT(k0 >= 0 && k0 <= k1 && k1 <= l.P);
  zero_empty_slots(out, l, dst_pairs, i, h, H, Dv, k0, k1, lane);
  acc_t qr[kMaxLanes], acc[kMaxLanes];
  for (int64_t kb = k0; kb < k1;) {
    const int64_t ke = scope_end<kPerDst>(kb, k1);
    acc_t m = -INFINITY, s = 0;
    for (int64_t x = kb; x < ke; ++x) {
      const int64_t p = dst_pairs[x];
      CUDA_KERNEL_ASSERT(p >= 0 && p < l.P);
      const int64_t sl = slot_of(l, p);
      load_row(q + ((i * l.S + sl) * H + h) * D, D, lane, qr);
      for (int64_t e = l.pair_ptr[p]; e < l.pair_ptr[p + 1]; ++e) {
        const int64_t j = col[e];
        CUDA_KERNEL_ASSERT(j >= 0 && j < l.N_src);
        const acc_t z = scale * row_dot(qr, k + (j * H + h) * D, D, lane);
        const acc_t mn = z > m ? z : m;
        s = s * ::exp(m - mn) + ::exp(z - mn);
        m = mn;
      }
    }
    const acc_t inv = s > acc_t(0) ? acc_t(1) / s : acc_t(0);
    for (int64_t x = kb; x < ke; ++x) {
      const int64_t p = dst_pairs[x];
      const int64_t sl = slot_of(l, p);
      load_row(q + ((i * l.S + sl) * H + h) * D, D, lane, qr);
#pragma unroll
      for (int t = 0; t < kMaxLanes; ++t) acc[t] = 0;
      for (int64_t e = l.pair_ptr[p]; e < l.pair_ptr[p + 1]; ++e) {
        const int64_t j = col[e];
        const acc_t a = ::exp(scale * row_dot(qr, k + (j * H + h) * D, D, lane) - m) * inv;
        if (lane == 0) alpha[e * H + h] = a;
        const scalar_t* vr = v + (j * H + h) * Dv;
#pragma unroll
        for (int t = 0; t < kMaxLanes; ++t) {
          const int64_t d = lane + t * kWarp;
          if (d < Dv) acc[t] += a * static_cast<acc_t>(vr[d]);
        }
      }
      scalar_t* o = out + ((i * l.S + sl) * H + h) * Dv;
#pragma unroll
      for (int t = 0; t < kMaxLanes; ++t) {
        const int64_t d = lane + t * kWarp;
        if (d < Dv) o[d] = static_cast<scalar_t>(acc[t]);
      }
    }
    kb = ke;
  }
}

template <typename scalar_t, typename index_t, bool kPerDst>
__global__ void attention_backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ q,
                                          const scalar_t* __restrict__ k, const scalar_t* __restrict__ v,
                                          const at::opmath_type<scalar_t>* __restrict__ alpha,
                                          const index_t* __restrict__ col, const index_t* __restrict__ dst_pairs,
                                          DevLayout l, int64_t H, int64_t D, int64_t Dv,
                                          at::opmath_type<scalar_t> scale, scalar_t* __restrict__ dq,
                                          at::opmath_type<scalar_t>* __restrict__ dk,
                                          at::opmath_type<scalar_t>* __restrict__ dv) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (w >= l.N_dst * H) return;
  const int64_t i = w / H, h = w % H;
  const int64_t k0 = l.dst_ptr[i], k1 = l.dst_ptr[i + 1];
  CUDA_KERNEL_ASSERT(k0 >= 0 && k0 <= k1 && k1 <= l.P);
  if (dq != nullptr) zero_empty_slots(dq, l, dst_pairs, i, h, H, D, k0, k1, lane);
  const bool need_ds = dq != nullptr || dk != nullptr;
  acc_t gr[kMaxLanes], qr[kMaxLanes], acc[kMaxLanes];
  for (int64_t kb = k0; kb < k1;) {
    const int64_t ke = scope_end<kPerDst>(kb, k1);
    acc_t delta = 0;
    if (need_ds) {
      for (int64_t x = kb; x < ke; ++x) {
        const int64_t p = dst_pairs[x];
        CUDA_KERNEL_ASSERT(p >= 0 && p < l.P);
        const int64_t sl = slot_of(l, p);
        load_row(g + ((i * l.S + sl) * H + h) * Dv, Dv, lane, gr);
        for (int64_t e = l.pair_ptr[p]; e < l.pair_ptr[p + 1]; ++e) {
          const int64_t j = col[e];
          CUDA_KERNEL_ASSERT(j >= 0 && j < l.N_src);
          delta += alpha[e * H + h] * row_dot(gr, v + (j * H + h) * Dv, Dv, lane);
        }
      }
    }
    for (int64_t x = kb; x < ke; ++x) {
      const int64_t p = dst_pairs[x];
      const int64_t sl = slot_of(l, p);
      const int64_t row = (i * l.S + sl) * H + h;
      load_row(g + row * Dv, Dv, lane, gr);
      if (dk != nullptr) load_row(q + row * D, D, lane, qr);
#pragma unroll
      for (int t = 0; t < kMaxLanes; ++t) acc[t] = 0;
      for (int64_t e = l.pair_ptr[p]; e < l.pair_ptr[p + 1]; ++e) {
        const int64_t j = col[e];
        const acc_t a = alpha[e * H + h];
        if (dv != nullptr) {
          acc_t* o = dv + (j * H + h) * Dv;
#pragma unroll
          for (int t = 0; t < kMaxLanes; ++t) {
            const int64_t d = lane + t * kWarp;
            if (d < Dv) atomicAdd(o + d, a * gr[t]);
          }
        }
        if (!need_ds) continue;
        const acc_t d_s = a * (row_dot(gr, v + (j * H + h) * Dv, Dv, lane) - delta);
        if (dq != nullptr) {
          const scalar_t* kr = k + (j * H + h) * D;
#pragma unroll
          for (int t = 0; t < kMaxLanes; ++t) {
            const int64_t d = lane + t * kWarp;
            if (d < D) acc[t] += d_s * static_cast<acc_t>(kr[d]);
          }
        }
        if (dk != nullptr) {
          acc_t* o = dk + (j * H + h) * D;
#pragma unroll
          for (int t = 0; t < kMaxLanes; ++t) {
            const int64_t d = lane + t * kWarp;
            if (d < D) atomicAdd(o + d, scale * d_s * qr[t]);
          }
        }
      }
      if (dq != nullptr) {
        scalar_t* o = dq + row * D;
#pragma unroll
        for (int t = 0; t < kMaxLanes; ++t) {
          const int64_t d = lane + t * kWarp;
          if (d < D) o[d] = static_cast<scalar_t>(scale * acc[t]);
        }
      }
    }
    kb = ke;
  }
}

void check_cuda_args(const char* op, const at::Tensor& q, const at::Tensor& v, const at::Tensor& col,
                     const at::Tensor& pair_ptr, const at::Tensor& pair_dst, const at::Tensor& rel_ptr,
                     const at::Tensor& dst_ptr, const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                     const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot, bool need_src) {
  check_device_type(op, q, "q", c10::DeviceType::CUDA);
  const int64_t D = q.size(3), Dv = v.size(2);
  LMGNN_CHECK(D <= kMaxLanes * kWarp && Dv <= kMaxLanes * kWarp, op, ": the CUDA kernel takes head widths up to ",
              kMaxLanes * kWarp, ", got D = ", D, ", Dv = ", Dv);
  if (full_input_checks()) {
    check_rgcn_layout(op, v.size(0), col.cpu().contiguous(), pair_ptr.cpu().contiguous(), pair_dst.cpu().contiguous(),
                      rel_ptr.cpu().contiguous(), dst_ptr.cpu().contiguous(), dst_pairs.cpu().contiguous(),
                      src_ptr.cpu().contiguous(), src_pairs.cpu().contiguous(), need_src);
    if (rel_slot.has_value()) {
      check_rel_slots(op, rel_slot->cpu().contiguous(), q.size(1), rel_ptr.cpu().contiguous(),
                      dst_ptr.cpu().contiguous(), dst_pairs.cpu().contiguous());
    }
  }
}

inline int64_t blocks_for(int64_t warps) { return (warps + kWarpsPerBlock - 1) / kWarpsPerBlock; }

std::tuple<at::Tensor, at::Tensor> hetero_attention_cuda(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& col_in,
    const at::Tensor& pair_ptr_in, const at::Tensor& pair_dst, const at::Tensor& rel_ptr_in,
    const at::Tensor& dst_ptr_in, const at::Tensor& dst_pairs_in, const at::Tensor& src_ptr,
    const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot_in, double scale, c10::string_view scope) {
  constexpr const char* op = "hetero_attention";
  check_hetero_attention_args(op, q_in, k_in, v_in, col_in, pair_ptr_in, pair_dst, rel_ptr_in, dst_ptr_in,
                              dst_pairs_in, src_ptr, src_pairs, rel_slot_in);
  const bool per_dst = parse_attention_scope(op, std::string_view(scope.data(), scope.size()));
  check_cuda_args(op, q_in, v_in, col_in, pair_ptr_in, pair_dst, rel_ptr_in, dst_ptr_in, dst_pairs_in, src_ptr,
                  src_pairs, rel_slot_in, false);
  c10::cuda::CUDAGuard guard(q_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto col = col_in.contiguous(), pair_ptr = pair_ptr_in.contiguous(), rel_ptr = rel_ptr_in.contiguous();
  const auto dst_ptr = dst_ptr_in.contiguous(), dst_pairs = dst_pairs_in.contiguous();
  const at::Tensor rel_slot = rel_slot_in.has_value() ? rel_slot_in->contiguous() : at::Tensor();
  const int64_t N_dst = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), Dv = v.size(2);
  auto out = at::empty({N_dst, S, H, Dv}, q.options());
  auto alpha = at::empty({col.numel(), H}, q.options().dtype(at::toOpMathType(q.scalar_type())));
  const DevLayout l{pair_ptr.const_data_ptr<int64_t>(),
                    rel_ptr.const_data_ptr<int64_t>(),
                    dst_ptr.const_data_ptr<int64_t>(),
                    rel_slot.defined() ? rel_slot.const_data_ptr<int64_t>() : nullptr,
                    col.numel(),
                    dst_pairs.numel(),
                    rel_ptr.numel() - 1,
                    N_dst,
                    k.size(0),
                    S};
  const int64_t blocks = blocks_for(N_dst * H);
  if (blocks == 0) return {out, alpha};
  LMGNN_DISPATCH_FLOATING(q.scalar_type(), "hetero_attention_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LMGNN_DISPATCH_INDEX(col.scalar_type(), "hetero_attention_cuda", [&] {
      LMGNN_BOOL_SWITCH(per_dst, kPerDst, [&] {
        attention_forward_kernel<scalar_t, index_t, kPerDst><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(
            q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
            col.const_data_ptr<index_t>(), dst_pairs.const_data_ptr<index_t>(), l, H, D, Dv,
            static_cast<acc_t>(scale), out.data_ptr<scalar_t>(), alpha.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return {out, alpha};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hetero_attention_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& alpha_in, const at::Tensor& col_in, const at::Tensor& pair_ptr_in, const at::Tensor& pair_dst,
    const at::Tensor& rel_ptr_in, const at::Tensor& dst_ptr_in, const at::Tensor& dst_pairs_in,
    const at::Tensor& src_ptr, const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot_in, double scale,
    c10::string_view scope, std::array<bool, 3> needs, bool kv_shared) {
  constexpr const char* op = "hetero_attention_backward";
  check_hetero_attention_args(op, q_in, k_in, v_in, col_in, pair_ptr_in, pair_dst, rel_ptr_in, dst_ptr_in,
                              dst_pairs_in, src_ptr, src_pairs, rel_slot_in);
  check_hetero_attention_backward_args(op, grad_out_in, alpha_in, q_in, v_in, col_in.numel());
  const bool per_dst = parse_attention_scope(op, std::string_view(scope.data(), scope.size()));
  check_cuda_args(op, q_in, v_in, col_in, pair_ptr_in, pair_dst, rel_ptr_in, dst_ptr_in, dst_pairs_in, src_ptr,
                  src_pairs, rel_slot_in, false);
  if (kv_shared) {
    LMGNN_CHECK(k_in.sizes() == v_in.sizes(), op, ": kv_shared needs k and v of one shape, got ", k_in.sizes(),
                " and ", v_in.sizes());
  }
  c10::cuda::CUDAGuard guard(q_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto g = grad_out_in.contiguous(), q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const auto alpha = alpha_in.contiguous();
  const auto col = col_in.contiguous(), pair_ptr = pair_ptr_in.contiguous(), rel_ptr = rel_ptr_in.contiguous();
  const auto dst_ptr = dst_ptr_in.contiguous(), dst_pairs = dst_pairs_in.contiguous();
  const at::Tensor rel_slot = rel_slot_in.has_value() ? rel_slot_in->contiguous() : at::Tensor();
  const int64_t N_dst = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), Dv = v.size(2);
  const auto acc_opts = q.options().dtype(at::toOpMathType(q.scalar_type()));
  at::Tensor dq, dk, dv;
  if (needs[0]) dq = at::empty(q.sizes(), q.options());
  if (kv_shared) needs = {needs[0], needs[1] || needs[2], needs[1] || needs[2]};
  if (needs[1]) dk = at::zeros(k.sizes(), acc_opts);
  if (needs[2]) dv = kv_shared ? dk : at::zeros(v.sizes(), acc_opts);  // shared: both add into one buffer
  const DevLayout l{pair_ptr.const_data_ptr<int64_t>(),
                    rel_ptr.const_data_ptr<int64_t>(),
                    dst_ptr.const_data_ptr<int64_t>(),
                    rel_slot.defined() ? rel_slot.const_data_ptr<int64_t>() : nullptr,
                    col.numel(),
                    dst_pairs.numel(),
                    rel_ptr.numel() - 1,
                    N_dst,
                    k.size(0),
                    S};
  const int64_t blocks = blocks_for(N_dst * H);
  if (blocks > 0 && (needs[0] || needs[1] || needs[2])) {
    LMGNN_DISPATCH_FLOATING(q.scalar_type(), "hetero_attention_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      LMGNN_DISPATCH_INDEX(col.scalar_type(), "hetero_attention_backward_cuda", [&] {
        LMGNN_BOOL_SWITCH(per_dst, kPerDst, [&] {
          attention_backward_kernel<scalar_t, index_t, kPerDst><<<blocks, kWarpsPerBlock * kWarp, 0, stream>>>(
              g.const_data_ptr<scalar_t>(), q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
              v.const_data_ptr<scalar_t>(), alpha.const_data_ptr<acc_t>(), col.const_data_ptr<index_t>(),
              dst_pairs.const_data_ptr<index_t>(), l, H, D, Dv, static_cast<acc_t>(scale),
              needs[0] ? dq.data_ptr<scalar_t>() : nullptr, needs[1] ? dk.data_ptr<acc_t>() : nullptr,
              needs[2] ? dv.data_ptr<acc_t>() : nullptr);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
    });
  } else if (needs[0]) {
    dq.zero_();
  }
  const auto none = [&] { return q.new_empty({0}); };  // one tensor per output: no aliasing
  return {needs[0] ? dq : none(), needs[1] ? dk.to(q.scalar_type()) : none(),
          needs[2] && !kv_shared ? dv.to(q.scalar_type()) : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) {
  m.impl("hetero_attention", &hetero_attention_cuda);
  m.impl("hetero_attention_backward", &hetero_attention_backward_cuda);
}

}  // namespace lmgnn
