// CPU kernels of lmgnn::rgcn_aggregate and lmgnn::rgcn_aggregate_backward (layout, orders
// and cost model: ops/rgcn_aggregate.cpp).
//
// Aggregate, then transform: per-pair sums run in parallel over pairs (each pair owns its
// output row), the per-relation GEMMs go to MKL on contiguous row ranges of the pair buffer,
// tiled in a fixed order (utils/cpu_fixed_order.h). Orders 0 and 1 go relation by relation: sum the relation's pairs,
// multiply them into a buffer the size of the largest relation, add the products onto
// their destination rows (distinct within a relation) while they are still in cache (small
// blocks: all relations' GEMMs in one parallel region, then the rows -- fused_relations); every
// row thus sums its terms in relation order — deterministic for any thread count, no
// atomics; the GEMMs and the weight gradients' long reductions run in a fixed order too, so
// every output and gradient has the same bits for any thread count. Rows named by the edges are prefetched a few edges ahead (utils/prefetch.h); the
// large buffers come from a cache of freed blocks (utils/cpu_buffer.h), not fresh pages.
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "ops/rgcn_aggregate.h"
#include "utils/check.h"
#include "utils/cpu_buffer.h"
#include "utils/cpu_fixed_order.h"
#include "utils/cpu_tasks.h"
#include "utils/dispatch.h"
#include "utils/prefetch.h"

namespace lmgnn {
namespace {

constexpr const char* kOp = "rgcn_aggregate";

struct Layout {
  at::Tensor col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs;
  int64_t E, P, R, N_dst, N_src;
};

Layout make_layout(const char* op, const at::Tensor& x, const at::Tensor& col,
                   const at::Tensor& pair_ptr, const at::Tensor& pair_dst, const at::Tensor& rel_ptr,
                   const at::Tensor& dst_ptr, const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                   const at::Tensor& src_pairs, bool need_src) {
  Layout l{col.contiguous(),     pair_ptr.contiguous(), pair_dst.contiguous(),
           rel_ptr.contiguous(), dst_ptr.contiguous(),  dst_pairs.contiguous(),
           src_ptr.contiguous(), src_pairs.contiguous(), col.numel(), pair_dst.numel(),
           rel_ptr.numel() - 1,  dst_ptr.numel() - 1,   x.size(0)};
  check_rgcn_layout(op, l.N_src, l.col, l.pair_ptr, l.pair_dst, l.rel_ptr, l.dst_ptr, l.dst_pairs,
                    l.src_ptr, l.src_pairs, need_src);
  return l;
}

inline int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

// Pairs of the relation with the most pairs (the per-relation buffers of orders 0 and 1).
inline int64_t largest_relation(const Layout& l) {
  const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
  int64_t n = 0;
  for (int64_t r = 0; r < l.R; ++r) n = std::max(n, rp[r + 1] - rp[r]);
  return n;
}

inline int64_t relation_of(const int64_t* rel_ptr, int64_t R, int64_t p) {
  // last r with rel_ptr[r] <= p (skips empty relations)
  return (std::upper_bound(rel_ptr, rel_ptr + R + 1, p) - rel_ptr) - 1;
}

// Relation of every pair in [b, e): calls f(p, r) in order, r found once per chunk.
template <typename F>
inline void for_pairs_with_relation(const int64_t* rel_ptr, int64_t R, int64_t b, int64_t e, F&& f) {
  if (b >= e) return;
  int64_t r = relation_of(rel_ptr, R, b);
  for (int64_t p = b; p < e; ++p) {
    while (rel_ptr[r + 1] <= p) ++r;
    f(p, r);
  }
}

// For the pairs p of [p0, p1) (relation r): row_of(p, r)[:] = norm_p * sum_{e in pair p}
// x[col[e]]. The edges are read in order (col) and the rows they name are prefetched ahead.
template <typename scalar_t, typename index_t, typename RowOf>
void sum_pairs(const at::Tensor& x, const Layout& l, bool mean, int64_t p0, int64_t p1, RowOf row_of) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t F = x.size(1);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const index_t* col = l.col.const_data_ptr<index_t>();
  const int64_t* ptr = l.pair_ptr.const_data_ptr<int64_t>();
  const int64_t* rptr = l.rel_ptr.const_data_ptr<int64_t>();
  const int64_t avg = p1 > p0 ? std::max<int64_t>(1, (ptr[p1] - ptr[p0]) / (p1 - p0)) : 1;
  at::parallel_for(p0, p1, grain_for(avg * F), [&](int64_t b, int64_t e) {
    std::vector<acc_t> acc(F);
    const auto pf = make_row_prefetch(xp, F, ptr[b], ptr[e], [col](int64_t k) { return col[k]; });
    for_pairs_with_relation(rptr, l.R, b, e, [&](int64_t p, int64_t r) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = ptr[p]; k < ptr[p + 1]; ++k) {
        pf.step(k);
        const scalar_t* row = xp + static_cast<int64_t>(col[k]) * F;
        for (int64_t f = 0; f < F; ++f) acc[f] += static_cast<acc_t>(row[f]);
      }
      const int64_t cnt = ptr[p + 1] - ptr[p];
      const acc_t s = (mean && cnt > 0) ? acc_t(1) / static_cast<acc_t>(cnt) : acc_t(1);
      scalar_t* o = row_of(p, r);
      for (int64_t f = 0; f < F; ++f) o[f] = static_cast<scalar_t>(acc[f] * s);
    });
  });
}

// agg[p] = norm_p * sum_{e in pair p} x[col[e]] for the pairs [p0, p1).
template <typename scalar_t, typename index_t>
void segment_sum(const at::Tensor& x, const Layout& l, bool mean, int64_t p0, int64_t p1, at::Tensor& agg) {
  scalar_t* out = agg.data_ptr<scalar_t>();
  const int64_t F = x.size(1);
  sum_pairs<scalar_t, index_t>(x, l, mean, p0, p1, [out, F](int64_t p, int64_t) { return out + p * F; });
}

// acc[pair_dst[p0 + q]] += y[q] for q < n: the pairs of one relation, whose destinations are
// distinct, so rows are updated in parallel without conflicts; relation by relation, every
// row sums its terms in relation order whatever the thread count.
template <typename scalar_t, typename index_t, typename acc_t>
void add_pair_rows(const at::Tensor& y, const Layout& l, int64_t p0, int64_t n, at::Tensor& acc) {
  const int64_t F = acc.size(1);
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  const index_t* pdst = l.pair_dst.const_data_ptr<index_t>() + p0;
  acc_t* ap = acc.data_ptr<acc_t>();
  at::parallel_for(0, n, grain_for(F * 2), [&](int64_t b, int64_t e) {
    for (int64_t q = b; q < e; ++q) {
      acc_t* o = ap + static_cast<int64_t>(pdst[q]) * F;
      const scalar_t* row = yp + q * F;
      for (int64_t f = 0; f < F; ++f) o[f] += static_cast<acc_t>(row[f]);
    }
  });
}

// Small blocks: when every pair's row fits in a few MB, the per-relation GEMMs of orders 0
// and 1 run in one parallel region (one task per relation) instead of one region per
// relation, and the products are added per destination row. A sampled mini-batch of a graph
// with many relations has many relations of a few dozen pairs, where entering a region costs
// more than the GEMM; with 2 threads the per-relation regions made such a batch slower than
// with one. Same per-relation GEMM calls and the same per-row order of the sums (relation
// order) as relation by relation: the same bits, for any thread count.
constexpr int64_t kFusedRelationsElems = int64_t(1) << 20;

inline bool fused_relations(const Layout& l, int64_t F) { return l.P * F <= kFusedRelationsElems; }

// y[lo_r : lo_r + n_r] = a[lo_r : lo_r + n_r] @ w[r] for every relation r, one task per relation.
void relation_gemms(const at::Tensor& a, const at::Tensor& w, const Layout& l, at::Tensor& y) {
  const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
  for_each_task(l.R, [&](int64_t r) {
    const int64_t lo = rp[r], n = rp[r + 1] - rp[r];
    if (n == 0) return;
    auto y_r = y.narrow(0, lo, n);
    mm_fixed_order_out(y_r, a.narrow(0, lo, n), w.select(0, r));
  });
}

// acc[i] += y[p] for the pairs p of each destination i, in increasing p -- relation order, the
// order in which add_pair_rows adds them relation by relation.
template <typename scalar_t, typename index_t, typename acc_t>
void add_dst_rows(const at::Tensor& y, const Layout& l, at::Tensor& acc) {
  const int64_t F = acc.size(1);
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  const int64_t* dptr = l.dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = l.dst_pairs.const_data_ptr<index_t>();
  acc_t* ap = acc.data_ptr<acc_t>();
  at::parallel_for(0, l.N_dst, grain_for(F * 2), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      acc_t* o = ap + i * F;
      for (int64_t k = dptr[i]; k < dptr[i + 1]; ++k) {
        const scalar_t* row = yp + static_cast<int64_t>(dpairs[k]) * F;
        for (int64_t f = 0; f < F; ++f) o[f] += static_cast<acc_t>(row[f]);
      }
    }
  });
}

// z[i, b, :] = sum_{p in pairs of i} comp[r_p, b] * agg[p]
template <typename scalar_t, typename index_t>
void basis_combine(const at::Tensor& agg, const at::Tensor& comp, const Layout& l, at::Tensor& z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t F = agg.size(1), B = comp.size(1);
  const scalar_t* ap = agg.const_data_ptr<scalar_t>();
  const scalar_t* cp = comp.const_data_ptr<scalar_t>();
  const int64_t* rptr = l.rel_ptr.const_data_ptr<int64_t>();
  const int64_t* dptr = l.dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = l.dst_pairs.const_data_ptr<index_t>();
  scalar_t* zp = z.data_ptr<scalar_t>();
  at::parallel_for(0, l.N_dst, grain_for(F * B * 2), [&](int64_t b0, int64_t e0) {
    std::vector<acc_t> acc(B * F);
    for (int64_t i = b0; i < e0; ++i) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = dptr[i]; k < dptr[i + 1]; ++k) {
        const int64_t p = dpairs[k];
        const int64_t r = relation_of(rptr, l.R, p);
        const scalar_t* row = ap + p * F;
        for (int64_t bb = 0; bb < B; ++bb) {
          const acc_t c = static_cast<acc_t>(cp[r * B + bb]);
          acc_t* a = acc.data() + bb * F;
          for (int64_t f = 0; f < F; ++f) a[f] += c * static_cast<acc_t>(row[f]);
        }
      }
      scalar_t* o = zp + i * B * F;
      for (int64_t f = 0; f < B * F; ++f) o[f] = static_cast<scalar_t>(acc[f]);
    }
  });
}

// dx[j] = sum over edges of source j (pair p) of norm_p * dagg[p]; the edges of the sources
// are read in order (src_pairs) and the dagg rows they name are prefetched ahead.
template <typename scalar_t, typename index_t>
void src_scatter(const at::Tensor& dagg, const Layout& l, bool mean, at::Tensor& dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t F = dx.size(1);
  const scalar_t* gp = dagg.const_data_ptr<scalar_t>();
  const int64_t* sptr = l.src_ptr.const_data_ptr<int64_t>();
  const index_t* spairs = l.src_pairs.const_data_ptr<index_t>();
  const int64_t* pptr = l.pair_ptr.const_data_ptr<int64_t>();
  scalar_t* out = dx.data_ptr<scalar_t>();
  at::parallel_for(0, l.N_src, grain_for(F * 4), [&](int64_t b, int64_t e) {
    std::vector<acc_t> acc(F);
    const auto pf = make_row_prefetch(gp, F, sptr[b], sptr[e], [spairs](int64_t k) { return spairs[k]; });
    for (int64_t j = b; j < e; ++j) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = sptr[j]; k < sptr[j + 1]; ++k) {
        pf.step(k);
        const int64_t p = spairs[k];
        const int64_t cnt = pptr[p + 1] - pptr[p];
        const acc_t s = (mean && cnt > 0) ? acc_t(1) / static_cast<acc_t>(cnt) : acc_t(1);
        const scalar_t* row = gp + p * F;
        for (int64_t f = 0; f < F; ++f) acc[f] += s * static_cast<acc_t>(row[f]);
      }
      scalar_t* o = out + j * F;
      for (int64_t f = 0; f < F; ++f) o[f] = static_cast<scalar_t>(acc[f]);
    }
  });
}

// Order 3: z[i, r * F : (r + 1) * F] = norm_{i,r} * sum_{j in N_r(i)} x[j], zeros where the
// pair (r, i) is empty. Every element of z is written exactly once (no zero-fill pass, no
// [P, F] intermediate): first the empty slots, per destination; then the pairs in layout
// order, so the edges (col) are read in order and the rows they name are prefetched ahead.
template <typename scalar_t, typename index_t>
void dense_sum(const at::Tensor& x, const Layout& l, bool mean, at::Tensor& z) {
  const int64_t F = x.size(1), RF = l.R * F;
  const int64_t* rptr = l.rel_ptr.const_data_ptr<int64_t>();
  const index_t* pdst = l.pair_dst.const_data_ptr<index_t>();
  const int64_t* dptr = l.dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = l.dst_pairs.const_data_ptr<index_t>();
  scalar_t* zp = z.data_ptr<scalar_t>();
  at::parallel_for(0, l.N_dst, grain_for(RF), [&](int64_t b0, int64_t e0) {
    for (int64_t i = b0; i < e0; ++i) {
      scalar_t* zrow = zp + i * RF;
      int64_t next = 0;  // first slot not yet accounted for
      for (int64_t k = dptr[i]; k < dptr[i + 1]; ++k) {
        const int64_t r = relation_of(rptr, l.R, dpairs[k]);
        LMGNN_CHECK(r >= next, kOp, ": dst_pairs of destination ", i,
                    " are not in increasing relation order (relation ", r, " after ", next - 1, ")");
        std::fill(zrow + next * F, zrow + r * F, scalar_t(0));
        next = r + 1;
      }
      std::fill(zrow + next * F, zrow + RF, scalar_t(0));
    }
  });
  sum_pairs<scalar_t, index_t>(x, l, mean, 0, l.P, [zp, pdst, RF, F](int64_t p, int64_t r) {
    return zp + static_cast<int64_t>(pdst[p]) * RF + r * F;
  });
}

// Order 3 backward: dx[j] = sum over edges of source j (pair p = (r, i)) of norm_p * dz[i, r].
// The slot (i * R + r) and the norm of every pair are tabulated once; the edges of the
// sources are read in order (src_pairs) and the dz rows they name are prefetched ahead.
template <typename scalar_t, typename index_t>
void src_scatter_dense(const at::Tensor& dz, const Layout& l, bool mean, at::Tensor& dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t F = dx.size(1);
  const scalar_t* gp = dz.const_data_ptr<scalar_t>();
  const int64_t* sptr = l.src_ptr.const_data_ptr<int64_t>();
  const index_t* spairs = l.src_pairs.const_data_ptr<index_t>();
  const int64_t* pptr = l.pair_ptr.const_data_ptr<int64_t>();
  const int64_t* rptr = l.rel_ptr.const_data_ptr<int64_t>();
  const index_t* pdst = l.pair_dst.const_data_ptr<index_t>();
  std::vector<int64_t> slot(l.P);
  std::vector<acc_t> norm(l.P);
  at::parallel_for(0, l.P, 4096, [&](int64_t b0, int64_t e0) {
    for_pairs_with_relation(rptr, l.R, b0, e0, [&](int64_t p, int64_t r) {
      slot[p] = static_cast<int64_t>(pdst[p]) * l.R + r;
      const int64_t cnt = pptr[p + 1] - pptr[p];
      norm[p] = (mean && cnt > 0) ? acc_t(1) / static_cast<acc_t>(cnt) : acc_t(1);
    });
  });
  scalar_t* out = dx.data_ptr<scalar_t>();
  const int64_t* slot_of = slot.data();
  at::parallel_for(0, l.N_src, grain_for(F * 4), [&](int64_t b, int64_t e) {
    std::vector<acc_t> acc(F);
    const auto pf = make_row_prefetch(gp, F, sptr[b], sptr[e],
                                      [spairs, slot_of](int64_t k) { return slot_of[spairs[k]]; });
    for (int64_t j = b; j < e; ++j) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t k = sptr[j]; k < sptr[j + 1]; ++k) {
        pf.step(k);
        const int64_t p = spairs[k];
        const acc_t s = norm[p];
        const scalar_t* row = gp + slot[p] * F;
        for (int64_t f = 0; f < F; ++f) acc[f] += s * static_cast<acc_t>(row[f]);
      }
      scalar_t* o = out + j * F;
      for (int64_t f = 0; f < F; ++f) o[f] = static_cast<scalar_t>(acc[f]);
    }
  });
}

// Order 2 backward per pair: dagg[p] = sum_b comp[r,b] dz[i_p,b];  dots[p,b] = <agg[p], dz[i_p,b]>
template <typename scalar_t, typename index_t>
void basis_pair_grads(const at::Tensor& dz, const at::Tensor& agg, const at::Tensor& comp,
                      const Layout& l, at::Tensor& dagg, at::Tensor& dots) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t F = agg.size(1), B = comp.size(1);
  const scalar_t* zp = dz.const_data_ptr<scalar_t>();
  const scalar_t* ap = agg.const_data_ptr<scalar_t>();
  const scalar_t* cp = comp.const_data_ptr<scalar_t>();
  const int64_t* rptr = l.rel_ptr.const_data_ptr<int64_t>();
  const index_t* pdst = l.pair_dst.const_data_ptr<index_t>();
  scalar_t* gp = dagg.defined() ? dagg.data_ptr<scalar_t>() : nullptr;
  acc_t* dp = dots.defined() ? dots.data_ptr<acc_t>() : nullptr;
  at::parallel_for(0, l.P, grain_for(F * B * 2), [&](int64_t b0, int64_t e0) {
    std::vector<acc_t> acc(F);
    for (int64_t p = b0; p < e0; ++p) {
      const int64_t r = relation_of(rptr, l.R, p);
      const scalar_t* zrow = zp + static_cast<int64_t>(pdst[p]) * B * F;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t bb = 0; bb < B; ++bb) {
        const scalar_t* zb = zrow + bb * F;
        if (gp) {
          const acc_t c = static_cast<acc_t>(cp[r * B + bb]);
          for (int64_t f = 0; f < F; ++f) acc[f] += c * static_cast<acc_t>(zb[f]);
        }
        if (dp) {
          const scalar_t* arow = ap + p * F;
          acc_t d = 0;
          for (int64_t f = 0; f < F; ++f) d += static_cast<acc_t>(arow[f]) * static_cast<acc_t>(zb[f]);
          dp[p * B + bb] = d;
        }
      }
      if (gp) {
        for (int64_t f = 0; f < F; ++f) gp[p * F + f] = static_cast<scalar_t>(acc[f]);
      }
    }
  });
}

// W = comp @ V  ->  [R, F_in, F_out], the same bits for any thread count (MKL's threaded
// GEMM rounds this short, wide product differently at 1 and 2 threads).
at::Tensor form_weight(const at::Tensor& comp, const at::Tensor& v) {
  const int64_t B = v.size(0), F_in = v.size(1), F_out = v.size(2);
  auto w = empty_large({comp.size(0), F_in * F_out}, v.options());
  mm_fixed_order_out(w, comp, v.reshape({B, F_in * F_out}));
  return w.view({comp.size(0), F_in, F_out});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rgcn_aggregate_cpu(
    const at::Tensor& x_in, const at::Tensor& col, const at::Tensor& pair_ptr,
    const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
    const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
    const at::Tensor& weight_in, const std::optional<at::Tensor>& comp_in,
    const std::optional<at::Tensor>& x_root, const std::optional<at::Tensor>& root_weight,
    const std::optional<at::Tensor>& bias, bool mean, int64_t order) {
  check_rgcn_aggregate_args(kOp, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs,
                            src_ptr, src_pairs, weight_in, comp_in, x_root, root_weight, bias, order);
  check_device_type(kOp, x_in, "x", c10::DeviceType::CPU);
  const Layout l = make_layout(kOp, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs,
                               src_ptr, src_pairs, /*need_src=*/false);
  const auto x = x_in.contiguous();
  const auto weight = weight_in.contiguous();
  const int64_t F_in = x.size(1), F_out = weight.size(2);
  const int64_t B = order == kPairGemm ? 1 : weight.size(0);

  if (order == kDensePairs) {
    // z [N_dst, R * F_in] straight from x, then one GEMM with W viewed [R * F_in, F_out]
    // accumulated in place onto the root term (addmm with bias over all rows).
    auto z = empty_large({l.N_dst, l.R * F_in}, x.options());
    LMGNN_DISPATCH_FLOATING(x.scalar_type(), "rgcn_aggregate_cpu", [&] {
      LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_cpu", [&] {
        dense_sum<scalar_t, index_t>(x, l, mean, z);
      });
    });
    const auto out = root_plus_product(z, weight.view({l.R * F_in, F_out}), x_root, root_weight, bias);
    return {out, at::empty({0, F_in}, x.options()), z};
  }

  auto agg = empty_large({l.P, F_in}, x.options());
  at::Tensor out;
  at::Tensor basis_in;
  LMGNN_DISPATCH_FLOATING(x.scalar_type(), "rgcn_aggregate_cpu", [&] {
    LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (order == kBasisCombine) {
        segment_sum<scalar_t, index_t>(x, l, mean, 0, l.P, agg);
        const auto comp = comp_in->contiguous();
        basis_in = empty_large({l.N_dst, B * F_in}, x.options());
        basis_combine<scalar_t, index_t>(agg, comp, l, basis_in);
        out = root_plus_product(basis_in, weight.view({B * F_in, F_out}), x_root, root_weight, bias);
      } else {
        // Relation by relation: sum its pairs into agg (saved for the backward), multiply them
        // by W_r into a buffer the size of the largest relation (still in cache), add the
        // products onto their destination rows. No [P, F_out] buffer, no reduction pass.
        basis_in = at::empty({0, B * F_in}, x.options());
        const auto w = order == kPairGemm ? weight : form_weight(comp_in->contiguous(), weight);
        const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
        const auto [root, root_is_row] = root_term(x_root, root_weight, bias);
        at::Tensor acc;  // out in the accumulation type
        if (root_is_row) {
          acc = empty_large({l.N_dst, F_out}, x.options().dtype(acc_type));
          acc.copy_(root.expand({l.N_dst, F_out}));
        } else if (root.defined()) {
          acc = root.scalar_type() == acc_type ? root : root.to(acc_type);
        } else {
          acc = empty_large({l.N_dst, F_out}, x.options().dtype(acc_type)).zero_();
        }
        if (fused_relations(l, std::max(F_in, F_out))) {
          segment_sum<scalar_t, index_t>(x, l, mean, 0, l.P, agg);
          auto y = empty_large({l.P, F_out}, x.options());
          relation_gemms(agg, w, l, y);
          add_dst_rows<scalar_t, index_t, acc_t>(y, l, acc);
        } else {
          const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
          auto y = empty_large({largest_relation(l), F_out}, x.options());
          for (int64_t r = 0; r < l.R; ++r) {
            const int64_t lo = rp[r], n = rp[r + 1] - rp[r];
            if (n == 0) continue;
            segment_sum<scalar_t, index_t>(x, l, mean, lo, lo + n, agg);
            auto y_r = y.narrow(0, 0, n);
            mm_fixed_order_out(y_r, agg.narrow(0, lo, n), w.select(0, r));
            add_pair_rows<scalar_t, index_t, acc_t>(y_r, l, lo, n, acc);
          }
        }
        out = acc.scalar_type() == x.scalar_type() ? acc : acc.to(x.scalar_type());
      }
    });
  });
  return {out, agg, basis_in};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rgcn_aggregate_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                            const at::Tensor& col, const at::Tensor& pair_ptr,
                            const at::Tensor& pair_dst, const at::Tensor& rel_ptr,
                            const at::Tensor& dst_ptr, const at::Tensor& dst_pairs,
                            const at::Tensor& src_ptr, const at::Tensor& src_pairs,
                            const at::Tensor& weight_in, const std::optional<at::Tensor>& comp_in,
                            const std::optional<at::Tensor>& x_root,
                            const std::optional<at::Tensor>& root_weight, const at::Tensor& agg_in,
                            const at::Tensor& basis_in, bool mean, int64_t order,
                            std::array<bool, 6> needs) {
  constexpr const char* op = "rgcn_aggregate_backward";
  check_rgcn_aggregate_args(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr,
                            src_pairs, weight_in, comp_in, x_root, root_weight, std::nullopt, order);
  check_device_type(op, x_in, "x", c10::DeviceType::CPU);
  const Layout l = make_layout(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs,
                               src_ptr, src_pairs, /*need_src=*/needs[0]);
  const auto weight = weight_in.contiguous();
  const int64_t F_in = x_in.size(1), F_out = weight.size(2);
  const int64_t B = order == kPairGemm ? 1 : weight.size(0);
  check_rgcn_aggregate_backward_args(op, grad_out_in, x_in, agg_in, basis_in, x_root, l.N_dst, l.P, l.R, B,
                                     F_out, order, needs);
  const auto g = contiguous_large(grad_out_in);
  const auto agg = agg_in.contiguous();
  auto none = [&] { return at::empty({0}, x_in.options()); };
  at::Tensor dx = none(), dweight = none(), dcomp = none(), dxr = none(), dwr = none(), db = none();

  LMGNN_DISPATCH_FLOATING(x_in.scalar_type(), "rgcn_aggregate_backward_cpu", [&] {
    LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      at::Tensor dagg;
      if (order == kDensePairs) {
        const auto wflat = weight.view({l.R * F_in, F_out});
        if (needs[1]) dweight = weight_grad_mm(basis_in, g).view({l.R, F_in, F_out});
        if (needs[0]) {
          const auto dz = mm_large(g, wflat.t());
          dx = empty_large({l.N_src, F_in}, x_in.options());
          src_scatter_dense<scalar_t, index_t>(dz, l, mean, dx);
        }
      } else if (order == kBasisCombine) {
        const auto comp = comp_in->contiguous();
        const auto vflat = weight.view({B * F_in, F_out});
        if (needs[1]) dweight = weight_grad_mm(basis_in, g).view({B, F_in, F_out});
        if (needs[0] || needs[2]) {
          const auto dz = mm_large(g, vflat.t());
          if (needs[0]) dagg = empty_large({l.P, F_in}, x_in.options());
          at::Tensor dots;
          if (needs[2]) dots = at::empty({l.P, B}, x_in.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
          basis_pair_grads<scalar_t, index_t>(dz, agg, comp, l, dagg, dots);
          if (needs[2]) {
            auto dc = at::zeros({l.R, B}, dots.options());
            const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
            for (int64_t r = 0; r < l.R; ++r) {
              const int64_t n = rp[r + 1] - rp[r];
              if (n > 0) dc[r].copy_(column_sum_fixed_order(dots.narrow(0, rp[r], n)));
            }
            dcomp = dc.to(x_in.scalar_type());
          }
        }
      } else {
        const bool need_dw = order == kPairGemm ? needs[1] : (needs[1] || needs[2]);
        if (needs[0] || need_dw) {
          const auto w = order == kPairGemm ? weight : form_weight(comp_in->contiguous(), weight);
          at::Tensor dw;
          if (needs[0]) dagg = empty_large({l.P, F_in}, x_in.options());
          if (need_dw) dw = empty_large({l.R, F_in, F_out}, x_in.options());
          const int64_t* rp = l.rel_ptr.const_data_ptr<int64_t>();
          // relation r's dagg rows and dW_r from its pairs' grad_out rows g_r (r has pairs)
          auto one_relation = [&](int64_t r, const at::Tensor& g_r) {
            const int64_t lo = rp[r], n = rp[r + 1] - rp[r];
            if (needs[0]) {
              auto d_r = dagg.narrow(0, lo, n);
              mm_fixed_order_out(d_r, g_r, w.select(0, r).t());
            }
            if (need_dw) weight_grad_mm(agg.narrow(0, lo, n), g_r, dw.select(0, r));
          };
          if (fused_relations(l, std::max(F_in, F_out))) {
            // small block: every pair's grad_out row at once, then one task per relation
            auto gall = empty_large({l.P, F_out}, g.options());
            at::index_select_out(gall, g, 0, l.pair_dst);
            for_each_task(l.R, [&](int64_t r) {
              const int64_t n = rp[r + 1] - rp[r];
              if (n > 0) {
                one_relation(r, gall.narrow(0, rp[r], n));
              } else if (need_dw) {
                dw.select(0, r).zero_();  // a relation without edges
              }
            });
          } else {
            // Relation by relation: gather grad_out at its pairs' destinations into a buffer the
            // size of the largest relation (no [P, F_out] copy), then both GEMMs read it in cache.
            auto gbuf = empty_large({largest_relation(l), F_out}, g.options());
            for (int64_t r = 0; r < l.R; ++r) {
              const int64_t lo = rp[r], n = rp[r + 1] - rp[r];
              if (n == 0) {
                if (need_dw) dw.select(0, r).zero_();  // a relation without edges
                continue;
              }
              auto g_r = gbuf.narrow(0, 0, n);
              at::index_select_out(g_r, g, 0, l.pair_dst.narrow(0, lo, n));
              one_relation(r, g_r);
            }
          }
          if (need_dw) weight_grads_from_dw(dw, weight, comp_in, order, needs, dweight, dcomp);
        }
      }
      if (needs[0] && order != kDensePairs) {
        dx = empty_large({l.N_src, F_in}, x_in.options());
        src_scatter<scalar_t, index_t>(dagg, l, mean, dx);
      }
    });
  });
  root_grads(g, x_root, root_weight, needs, dxr, dwr, db);
  return {dx, dweight, dcomp, dxr, dwr, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) {
  m.impl("rgcn_aggregate", &rgcn_aggregate_cpu);
  m.impl("rgcn_aggregate_backward", &rgcn_aggregate_backward_cpu);
}

}  // namespace lmgnn
