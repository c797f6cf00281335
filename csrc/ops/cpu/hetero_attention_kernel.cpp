// CPU kernels of lmgnn::hetero_attention and lmgnn::hetero_attention_backward (math, layout
// and outputs: ops/hetero_attention.cpp).
//
// Forward and the destination half of the backward run in parallel over destinations: a
// destination owns its output rows and its softmax scopes, whose logits (or dp values) sit
// in a per-thread buffer while the scope is normalised. grad_k and grad_v run in parallel
// over source rows through src_ptr / src_pairs, each row summing its edges in edge order;
// the per-edge ds values they read were written by the destination pass. No atomics and no
// reduction whose order depends on the partition: every output and gradient has the same
// bits for any thread count. Rows named by the edges are prefetched a few edges ahead.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "ops/hetero_attention.h"
#include "ops/rgcn_aggregate.h"
#include "utils/check.h"
#include "utils/cpu_buffer.h"
#include "utils/dispatch.h"
#include "utils/prefetch.h"

namespace lmgnn {
namespace {

struct Layout {
  at::Tensor col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs;
  int64_t E, P, R, N_dst, N_src, S;
  std::vector<int64_t> pair_slot;  // slot of every pair in q / out (its relation, or rel_slot's)
};

Layout make_layout(const char* op, int64_t N_src, const at::Tensor& col, const at::Tensor& pair_ptr,
                   const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                   const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
                   const std::optional<at::Tensor>& rel_slot, int64_t S, bool need_src) {
  Layout l{col.contiguous(),       pair_ptr.contiguous(), pair_dst.contiguous(), rel_ptr.contiguous(),
           dst_ptr.contiguous(),   dst_pairs.contiguous(), src_ptr.contiguous(), src_pairs.contiguous(),
           col.numel(),            pair_dst.numel(),       rel_ptr.numel() - 1,  dst_ptr.numel() - 1,
           N_src,                  S,                      {}};
  check_rgcn_layout(op, N_src, l.col, l.pair_ptr, l.pair_dst, l.rel_ptr, l.dst_ptr, l.dst_pairs, l.src_ptr,
                    l.src_pairs, need_src);
  at::Tensor slots;
  if (rel_slot.has_value()) {
    slots = rel_slot->contiguous();
    check_rel_slots(op, slots, S, l.rel_ptr, l.dst_ptr, l.dst_pairs);
  }
  l.pair_slot.resize(l.P);
  const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
  for (int64_t r = 0; r < l.R; ++r) {
    const int64_t sl = slots.defined() ? slots.const_data_ptr<int64_t>()[r] : r;
    std::fill(l.pair_slot.begin() + rp[r], l.pair_slot.begin() + rp[r + 1], sl);
  }
  return l;
}

inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// <a, b> in kLanes independent partial sums (the compiler turns the fixed-width inner loop
// into one vector multiply-add; a plain running sum would stay scalar without fast-math),
// added in a fixed order: the same bits for any thread count.
template <typename acc_t, typename a_t, typename b_t>
inline acc_t dot(const a_t* a, const b_t* b, int64_t n) {
  constexpr int kLanes = 8;
  acc_t part[kLanes] = {};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes) {
    for (int l = 0; l < kLanes; ++l) part[l] += static_cast<acc_t>(a[d + l]) * static_cast<acc_t>(b[d + l]);
  }
  acc_t s = 0;
  for (int l = 0; l < kLanes; ++l) s += part[l];
  for (; d < n; ++d) s += static_cast<acc_t>(a[d]) * static_cast<acc_t>(b[d]);
  return s;
}

// Calls f(kb, ke) for every softmax scope of destination i: the dst_pairs entries [kb, ke)
// (all pairs of i for per_dst, one pair at a time for per_dst_rel).
template <bool kPerDst, typename F>
inline void for_scopes(int64_t k0, int64_t k1, F&& f) {
  if (k0 == k1) return;
  if constexpr (kPerDst) {
    f(k0, k1);
  } else {
    for (int64_t kk = k0; kk < k1; ++kk) f(kk, kk + 1);
  }
}

// Zeroes the slots of row i of t [N_dst, S, W] that no pair of i fills (`used`: S flags).
template <typename scalar_t, typename index_t>
inline void zero_empty_slots(scalar_t* t, int64_t i, int64_t S, int64_t W, const int64_t* dptr,
                             const index_t* dpairs, const std::vector<int64_t>& pair_slot, std::vector<char>& used) {
  std::fill(used.begin(), used.end(), char(0));
  for (int64_t kk = dptr[i]; kk < dptr[i + 1]; ++kk) used[pair_slot[dpairs[kk]]] = 1;
  for (int64_t sl = 0; sl < S; ++sl) {
    if (!used[sl]) std::fill(t + (i * S + sl) * W, t + (i * S + sl + 1) * W, scalar_t(0));
  }
}

template <typename scalar_t, typename index_t, bool kPerDst>
void attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const Layout& l,
                       double scale_d, at::Tensor& out, at::Tensor& alpha) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t S = l.S, H = q.size(2), D = q.size(3), Dv = v.size(2);
  const scalar_t* qp = q.const_data_ptr<scalar_t>();
  const scalar_t* kp = k.const_data_ptr<scalar_t>();
  const scalar_t* vp = v.const_data_ptr<scalar_t>();
  const index_t* col = l.col.const_data_ptr<index_t>();
  const int64_t* pptr = l.pair_ptr.const_data_ptr<int64_t>();
  const int64_t* dptr = l.dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = l.dst_pairs.const_data_ptr<index_t>();
  scalar_t* outp = out.data_ptr<scalar_t>();
  acc_t* ap = alpha.data_ptr<acc_t>();
  const acc_t scale = static_cast<acc_t>(scale_d);
  const int64_t avg = l.N_dst > 0 ? std::max<int64_t>(1, l.E / l.N_dst) : 1;
  at::parallel_for(0, l.N_dst, grain_for(avg * H * (D + Dv)), [&](int64_t b, int64_t e) {
    std::vector<acc_t> logit, m(H), s(H), acc(H * Dv);
    std::vector<char> used(S);
    for (int64_t i = b; i < e; ++i) {
      zero_empty_slots(outp, i, S, H * Dv, dptr, dpairs, l.pair_slot, used);
      for_scopes<kPerDst>(dptr[i], dptr[i + 1], [&](int64_t kb, int64_t ke) {
        int64_t n = 0;
        for (int64_t kk = kb; kk < ke; ++kk) n += pptr[dpairs[kk] + 1] - pptr[dpairs[kk]];
        logit.resize(n * H);
        std::fill(m.begin(), m.end(), -std::numeric_limits<acc_t>::infinity());
        int64_t t = 0;
        for (int64_t kk = kb; kk < ke; ++kk) {  // logits and their max per head
          const int64_t p = dpairs[kk];
          const scalar_t* qrow = qp + (i * S + l.pair_slot[p]) * H * D;
          const auto pf = make_row_prefetch(kp, H * D, pptr[p], pptr[p + 1], [col](int64_t x) { return col[x]; });
          for (int64_t x = pptr[p]; x < pptr[p + 1]; ++x, ++t) {
            pf.step(x);
            const scalar_t* krow = kp + static_cast<int64_t>(col[x]) * H * D;
            for (int64_t h = 0; h < H; ++h) {
              const acc_t z = scale * dot<acc_t>(qrow + h * D, krow + h * D, D);
              logit[t * H + h] = z;
              m[h] = std::max(m[h], z);
            }
          }
        }
        std::fill(s.begin(), s.end(), acc_t(0));
        for (int64_t x = 0; x < n; ++x) {
          for (int64_t h = 0; h < H; ++h) {
            const acc_t w = std::exp(logit[x * H + h] - m[h]);
            logit[x * H + h] = w;
            s[h] += w;
          }
        }
        for (int64_t h = 0; h < H; ++h) s[h] = acc_t(1) / s[h];
        t = 0;
        for (int64_t kk = kb; kk < ke; ++kk) {  // normalise, weight the values per pair
          const int64_t p = dpairs[kk];
          std::fill(acc.begin(), acc.end(), acc_t(0));
          const auto pf = make_row_prefetch(vp, H * Dv, pptr[p], pptr[p + 1], [col](int64_t x) { return col[x]; });
          for (int64_t x = pptr[p]; x < pptr[p + 1]; ++x, ++t) {
            pf.step(x);
            const scalar_t* vrow = vp + static_cast<int64_t>(col[x]) * H * Dv;
            for (int64_t h = 0; h < H; ++h) {
              const acc_t a = logit[t * H + h] * s[h];
              ap[x * H + h] = a;
              acc_t* o = acc.data() + h * Dv;
              const scalar_t* vr = vrow + h * Dv;
              for (int64_t d = 0; d < Dv; ++d) o[d] += a * static_cast<acc_t>(vr[d]);
            }
          }
          scalar_t* orow = outp + (i * S + l.pair_slot[p]) * H * Dv;
          for (int64_t f = 0; f < H * Dv; ++f) orow[f] = static_cast<scalar_t>(acc[f]);
        }
      });
    }
  });
}

std::tuple<at::Tensor, at::Tensor> hetero_attention_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& col,
    const at::Tensor& pair_ptr, const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
    const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
    const std::optional<at::Tensor>& rel_slot, double scale, c10::string_view scope) {
  constexpr const char* op = "hetero_attention";
  check_hetero_attention_args(op, q_in, k_in, v_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                              src_pairs, rel_slot);
  check_device_type(op, q_in, "q", c10::DeviceType::CPU);
  const bool per_dst = parse_attention_scope(op, std::string_view(scope.data(), scope.size()));
  const Layout l = make_layout(op, k_in.size(0), col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                               src_pairs, rel_slot, q_in.size(1), /*need_src=*/false);
  const auto q = contiguous_large(q_in), k = contiguous_large(k_in), v = contiguous_large(v_in);
  const int64_t H = q.size(2), Dv = v.size(2);
  auto out = empty_large({l.N_dst, l.S, H, Dv}, q.options());
  auto alpha = empty_large({l.E, H}, q.options().dtype(at::toOpMathType(q.scalar_type())));
  LMGNN_DISPATCH_FLOATING(q.scalar_type(), "hetero_attention_cpu", [&] {
    LMGNN_DISPATCH_INDEX(l.col.scalar_type(), "hetero_attention_cpu", [&] {
      LMGNN_BOOL_SWITCH(per_dst, kPerDst, [&] {
        attention_forward<scalar_t, index_t, kPerDst>(q, k, v, l, scale, out, alpha);
      });
    });
  });
  return {out, alpha};
}

// Destination pass of the backward: grad_q (when dq is defined) and the per-edge
// ds = alpha * (dp - delta) (when ds is defined), per softmax scope.
template <typename scalar_t, typename index_t, bool kPerDst>
void attention_backward_dst(const at::Tensor& g, const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& alpha, const Layout& l, double scale_d, at::Tensor& dq,
                            at::Tensor& ds) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t S = l.S, H = k.size(1), D = k.size(2), Dv = v.size(2);
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* kp = k.const_data_ptr<scalar_t>();
  const scalar_t* vp = v.const_data_ptr<scalar_t>();
  const acc_t* ap = alpha.const_data_ptr<acc_t>();
  const index_t* col = l.col.const_data_ptr<index_t>();
  const int64_t* pptr = l.pair_ptr.const_data_ptr<int64_t>();
  const int64_t* dptr = l.dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = l.dst_pairs.const_data_ptr<index_t>();
  scalar_t* dqp = dq.defined() ? dq.data_ptr<scalar_t>() : nullptr;
  acc_t* dsp = ds.defined() ? ds.data_ptr<acc_t>() : nullptr;
  const acc_t scale = static_cast<acc_t>(scale_d);
  const int64_t avg = l.N_dst > 0 ? std::max<int64_t>(1, l.E / l.N_dst) : 1;
  at::parallel_for(0, l.N_dst, grain_for(avg * H * (D + Dv)), [&](int64_t b, int64_t e) {
    std::vector<acc_t> dp, delta(H), acc(H * D);
    std::vector<char> used(S);
    for (int64_t i = b; i < e; ++i) {
      if (dqp) zero_empty_slots(dqp, i, S, H * D, dptr, dpairs, l.pair_slot, used);
      for_scopes<kPerDst>(dptr[i], dptr[i + 1], [&](int64_t kb, int64_t ke) {
        int64_t n = 0;
        for (int64_t kk = kb; kk < ke; ++kk) n += pptr[dpairs[kk] + 1] - pptr[dpairs[kk]];
        dp.resize(n * H);
        std::fill(delta.begin(), delta.end(), acc_t(0));
        int64_t t = 0;
        for (int64_t kk = kb; kk < ke; ++kk) {  // dp = <g, v_j>, delta = sum alpha * dp
          const int64_t p = dpairs[kk];
          const scalar_t* grow = gp + (i * S + l.pair_slot[p]) * H * Dv;
          const auto pf = make_row_prefetch(vp, H * Dv, pptr[p], pptr[p + 1], [col](int64_t x) { return col[x]; });
          for (int64_t x = pptr[p]; x < pptr[p + 1]; ++x, ++t) {
            pf.step(x);
            const scalar_t* vrow = vp + static_cast<int64_t>(col[x]) * H * Dv;
            for (int64_t h = 0; h < H; ++h) {
              const acc_t z = dot<acc_t>(grow + h * Dv, vrow + h * Dv, Dv);
              dp[t * H + h] = z;
              delta[h] += ap[x * H + h] * z;
            }
          }
        }
        t = 0;
        for (int64_t kk = kb; kk < ke; ++kk) {  // ds, and grad_q = scale * sum ds * k_j per pair
          const int64_t p = dpairs[kk];
          if (dqp) std::fill(acc.begin(), acc.end(), acc_t(0));
          const auto pf = make_row_prefetch(kp, dqp ? H * D : 0, pptr[p], pptr[p + 1],
                                            [col](int64_t x) { return col[x]; });
          for (int64_t x = pptr[p]; x < pptr[p + 1]; ++x, ++t) {
            const scalar_t* krow = kp + static_cast<int64_t>(col[x]) * H * D;
            if (dqp) pf.step(x);
            for (int64_t h = 0; h < H; ++h) {
              const acc_t d_s = ap[x * H + h] * (dp[t * H + h] - delta[h]);
              if (dsp) dsp[x * H + h] = d_s;
              if (dqp) {
                acc_t* o = acc.data() + h * D;
                const scalar_t* kr = krow + h * D;
                for (int64_t d = 0; d < D; ++d) o[d] += d_s * static_cast<acc_t>(kr[d]);
              }
            }
          }
          if (dqp) {
            scalar_t* orow = dqp + (i * S + l.pair_slot[p]) * H * D;
            for (int64_t f = 0; f < H * D; ++f) orow[f] = static_cast<scalar_t>(scale * acc[f]);
          }
        }
      });
    }
  });
}

// src_edge[q] = the edge at position q of the source-sorted order of src_ptr / src_pairs
// (edges of each source row in edge order; the order check_rgcn_layout verified). O(E).
template <typename index_t>
std::vector<int64_t> source_order(const Layout& l) {
  const index_t* col = l.col.const_data_ptr<index_t>();
  const int64_t* sptr = l.src_ptr.const_data_ptr<int64_t>();
  std::vector<int64_t> next(sptr, sptr + l.N_src), src_edge(l.E);
  for (int64_t x = 0; x < l.E; ++x) src_edge[next[col[x]]++] = x;
  return src_edge;
}

// Source pass of the backward: grad_k[j] = scale * sum ds_e q[i_e, r_e] and
// grad_v[j] = sum alpha_e g[i_e, r_e] over the edges of source row j, in edge order;
// kv_shared (k and v one tensor): their sum into dk.
template <typename scalar_t, typename index_t>
void attention_backward_src(const at::Tensor& g, const at::Tensor& q, const at::Tensor& alpha, const at::Tensor& ds,
                            const Layout& l, double scale_d, bool kv_shared, at::Tensor& dk, at::Tensor& dv) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t S = l.S, H = q.size(2), D = q.size(3), Dv = g.size(3);
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* qp = q.const_data_ptr<scalar_t>();
  const acc_t* ap = alpha.const_data_ptr<acc_t>();
  const acc_t* dsp = ds.defined() ? ds.const_data_ptr<acc_t>() : nullptr;
  const int64_t* sptr = l.src_ptr.const_data_ptr<int64_t>();
  const index_t* spairs = l.src_pairs.const_data_ptr<index_t>();
  const index_t* pdst = l.pair_dst.const_data_ptr<index_t>();
  scalar_t* dkp = dk.defined() ? dk.data_ptr<scalar_t>() : nullptr;
  scalar_t* dvp = dv.defined() ? dv.data_ptr<scalar_t>() : nullptr;
  const bool do_k = dkp != nullptr, do_v = dvp != nullptr || kv_shared;
  const std::vector<int64_t> src_edge = source_order<index_t>(l);
  const acc_t scale = static_cast<acc_t>(scale_d);
  const int64_t avg = l.N_src > 0 ? std::max<int64_t>(1, l.E / l.N_src) : 1;
  at::parallel_for(0, l.N_src, grain_for(avg * H * (D + Dv)), [&](int64_t b, int64_t e) {
    std::vector<acc_t> kacc(H * D), vacc(H * Dv);
    // the q / grad_out rows of the edge `ahead` edges on (read at random: prefetched)
    const int64_t ahead = prefetch_distance(H * (D + Dv) * static_cast<int64_t>(sizeof(scalar_t)));
    const int64_t y_end = sptr[e];
    auto prefetch_edge = [&](int64_t y) {
      if (y >= y_end) return;
      const int64_t p = spairs[y];
      const int64_t row = static_cast<int64_t>(pdst[p]) * S + l.pair_slot[p];
      if (do_k) prefetch_bytes(qp + row * H * D, H * D * static_cast<int64_t>(sizeof(scalar_t)));
      if (do_v) prefetch_bytes(gp + row * H * Dv, H * Dv * static_cast<int64_t>(sizeof(scalar_t)));
    };
    for (int64_t y = sptr[b]; y < std::min(sptr[b] + ahead, y_end); ++y) prefetch_edge(y);
    for (int64_t j = b; j < e; ++j) {
      std::fill(kacc.begin(), kacc.end(), acc_t(0));
      std::fill(vacc.begin(), vacc.end(), acc_t(0));
      for (int64_t y = sptr[j]; y < sptr[j + 1]; ++y) {
        prefetch_edge(y + ahead);
        const int64_t x = src_edge[y];
        const int64_t p = spairs[y];
        const int64_t row = static_cast<int64_t>(pdst[p]) * S + l.pair_slot[p];
        if (do_k) {
          const scalar_t* qrow = qp + row * H * D;
          for (int64_t h = 0; h < H; ++h) {
            const acc_t c = dsp[x * H + h];
            acc_t* o = kacc.data() + h * D;
            const scalar_t* qr = qrow + h * D;
            for (int64_t d = 0; d < D; ++d) o[d] += c * static_cast<acc_t>(qr[d]);
          }
        }
        if (do_v) {
          const scalar_t* grow = gp + row * H * Dv;
          for (int64_t h = 0; h < H; ++h) {
            const acc_t c = ap[x * H + h];
            acc_t* o = vacc.data() + h * Dv;
            const scalar_t* gr = grow + h * Dv;
            for (int64_t d = 0; d < Dv; ++d) o[d] += c * static_cast<acc_t>(gr[d]);
          }
        }
      }
      if (kv_shared) {
        for (int64_t f = 0; f < H * D; ++f) dkp[j * H * D + f] = static_cast<scalar_t>(scale * kacc[f] + vacc[f]);
      } else if (dkp) {
        for (int64_t f = 0; f < H * D; ++f) dkp[j * H * D + f] = static_cast<scalar_t>(scale * kacc[f]);
      }
      if (dvp) {
        for (int64_t f = 0; f < H * Dv; ++f) dvp[j * H * Dv + f] = static_cast<scalar_t>(vacc[f]);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> hetero_attention_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& alpha_in, const at::Tensor& col, const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
    const at::Tensor& rel_ptr, const at::Tensor& dst_ptr, const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
    const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot, double scale, c10::string_view scope,
    std::array<bool, 3> needs, bool kv_shared) {
  constexpr const char* op = "hetero_attention_backward";
  check_hetero_attention_args(op, q_in, k_in, v_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                              src_pairs, rel_slot);
  check_device_type(op, q_in, "q", c10::DeviceType::CPU);
  check_hetero_attention_backward_args(op, grad_out_in, alpha_in, q_in, v_in, col.numel());
  const bool per_dst = parse_attention_scope(op, std::string_view(scope.data(), scope.size()));
  if (kv_shared) {
    LMGNN_CHECK(k_in.sizes() == v_in.sizes(), op, ": kv_shared needs k and v of one shape, got ", k_in.sizes(),
                " and ", v_in.sizes());
    needs = {needs[0], needs[1] || needs[2], false};  // one gradient, of k and v together, in grad_k
  }
  const bool need_src = needs[1] || needs[2];
  const Layout l = make_layout(op, k_in.size(0), col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                               src_pairs, rel_slot, q_in.size(1), need_src);
  const auto g = contiguous_large(grad_out_in), q = contiguous_large(q_in), k = contiguous_large(k_in);
  const auto v = contiguous_large(v_in), alpha = alpha_in.contiguous();
  at::Tensor dq, dk, dv, ds;
  if (needs[0]) dq = empty_large(q.sizes(), q.options());
  if (needs[1]) dk = empty_large(k.sizes(), k.options());
  if (needs[2]) dv = empty_large(v.sizes(), v.options());
  if (needs[1]) ds = empty_large({l.E, q.size(2)}, alpha.options());
  LMGNN_DISPATCH_FLOATING(q.scalar_type(), "hetero_attention_backward_cpu", [&] {
    LMGNN_DISPATCH_INDEX(l.col.scalar_type(), "hetero_attention_backward_cpu", [&] {
      if (needs[0] || needs[1]) {
        LMGNN_BOOL_SWITCH(per_dst, kPerDst, [&] {
          attention_backward_dst<scalar_t, index_t, kPerDst>(g, k, v, alpha, l, scale, dq, ds);
        });
      }
      if (need_src) attention_backward_src<scalar_t, index_t>(g, q, alpha, ds, l, scale, kv_shared, dk, dv);
    });
  });
  const auto none = [&] { return q.new_empty({0}); };  // one tensor per output: no aliasing
  return {needs[0] ? dq : none(), needs[1] ? dk : none(), needs[2] ? dv : none()};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) {
  m.impl("hetero_attention", &hetero_attention_cpu);
  m.impl("hetero_attention_backward", &hetero_attention_backward_cpu);
}

}  // namespace lmgnn
