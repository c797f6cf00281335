// Data-dependent checks of the rgcn_aggregate layout (see rgcn_aggregate.cpp): everything
// the kernels rely on beyond shapes and dtypes. Run on the host: always by the CPU kernels,
// by the CUDA kernels on a host copy of the layout under LMGNN_CHECK_INPUTS=full.
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

#include "ops/rgcn_aggregate.h"
#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

// A pointer [n + 1] must start at 0, never decrease and end at `total`.
void check_ptr(const char* op, const char* name, const at::Tensor& ptr, int64_t total,
               const char* total_name) {
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  const int64_t n = ptr.numel() - 1;
  LMGNN_CHECK(p[0] == 0, op, ": ", name, "[0] must be 0, got ", p[0]);
  LMGNN_CHECK(p[n] == total, op, ": ", name, "[-1] must equal ", total_name, " = ", total, ", got ",
              p[n]);
  for (int64_t i = 0; i < n; ++i) {
    LMGNN_CHECK(p[i] <= p[i + 1], op, ": ", name, " decreases at ", i, " (", p[i], " > ", p[i + 1], ")");
  }
}

template <typename index_t>
void check_ids(const char* op, const char* name, const at::Tensor& t, int64_t count,
               const char* what) {
  const index_t* d = t.const_data_ptr<index_t>();
  const int64_t n = t.numel();
  if (n == 0) return;
  int64_t lo = d[0], hi = d[0];
  for (int64_t i = 1; i < n; ++i) {
    lo = std::min<int64_t>(lo, d[i]);
    hi = std::max<int64_t>(hi, d[i]);
  }
  check_id_range(op, name, lo, hi, count, what);
}

// Within a relation the pairs' destinations must increase strictly (one pair per
// (relation, destination)): orders 0 and 1 add a relation's products onto their rows in
// parallel, which is only race-free for distinct destinations.
template <typename index_t>
void check_pair_dst_increasing(const char* op, const at::Tensor& pair_dst, const at::Tensor& rel_ptr) {
  const index_t* d = pair_dst.const_data_ptr<index_t>();
  const int64_t* rp = rel_ptr.const_data_ptr<int64_t>();
  const int64_t R = rel_ptr.numel() - 1;
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t p = rp[r] + 1; p < rp[r + 1]; ++p) {
      LMGNN_CHECK(d[p] > d[p - 1], op, ": pair_dst must increase strictly within a relation; relation ", r,
                  " has pair ", p, " -> destination ", static_cast<int64_t>(d[p]), " after ",
                  static_cast<int64_t>(d[p - 1]));
    }
  }
}

// dst_ptr / dst_pairs must list, for every destination i, exactly the pairs p with
// pair_dst[p] == i, in increasing pair (= relation) order. Orders 2 and 3 reduce per
// destination through this CSR, and order 3 zero-fills the relation slots of a destination
// that it does not list, so a disagreement would drop pairs or leave slots unwritten. O(P).
template <typename index_t>
void check_dst_pairs_consistent(const char* op, const at::Tensor& pair_dst, const at::Tensor& dst_ptr,
                                const at::Tensor& dst_pairs) {
  const int64_t* dp = dst_ptr.const_data_ptr<int64_t>();
  const index_t* dpairs = dst_pairs.const_data_ptr<index_t>();
  const index_t* pdst = pair_dst.const_data_ptr<index_t>();
  const int64_t N_dst = dst_ptr.numel() - 1;
  for (int64_t i = 0; i < N_dst; ++i) {
    for (int64_t k = dp[i]; k < dp[i + 1]; ++k) {
      const int64_t p = dpairs[k];
      LMGNN_CHECK(static_cast<int64_t>(pdst[p]) == i, op, ": dst_pairs[", k, "] lists pair ", p,
                  " under destination ", i, " but pair_dst[", p, "] = ",
                  static_cast<int64_t>(pdst[p]), " (dst_ptr/dst_pairs disagree with pair_dst)");
      LMGNN_CHECK(k == dp[i] || p > static_cast<int64_t>(dpairs[k - 1]), op, ": dst_pairs of destination ",
                  i, " are not in increasing relation order (pair ", p, " after pair ",
                  static_cast<int64_t>(dpairs[k - 1]), ")");
    }
  }
}

// src_ptr / src_pairs must hold, for every source row j, the pairs of the edges with
// col[e] == j, in edge order (what build_layout produces: a stable sort by source). The
// gradient w.r.t. x is summed through this CSR, so a disagreement would send gradients to
// the wrong rows. One pass over the edges, O(E + N_src).
template <typename index_t>
void check_src_pairs_consistent(const char* op, const at::Tensor& col_t, const at::Tensor& pair_ptr,
                                const at::Tensor& src_ptr, const at::Tensor& src_pairs) {
  const int64_t* sp = src_ptr.const_data_ptr<int64_t>();
  const index_t* spairs = src_pairs.const_data_ptr<index_t>();
  const index_t* col = col_t.const_data_ptr<index_t>();
  const int64_t* pp = pair_ptr.const_data_ptr<int64_t>();
  const int64_t N_src = src_ptr.numel() - 1, P = pair_ptr.numel() - 1;
  std::vector<int64_t> next(sp, sp + N_src);
  for (int64_t p = 0; p < P; ++p) {
    for (int64_t k = pp[p]; k < pp[p + 1]; ++k) {
      const int64_t j = col[k];
      const int64_t q = next[j]++;
      LMGNN_CHECK(q < sp[j + 1], op, ": src_ptr gives source row ", j, " ", sp[j + 1] - sp[j],
                  " edges but col names it more often (src_ptr/src_pairs disagree with col)");
      LMGNN_CHECK(static_cast<int64_t>(spairs[q]) == p, op, ": src_pairs[", q, "] = ",
                  static_cast<int64_t>(spairs[q]), " but edge ", k, " (source row ", j, ") belongs to pair ",
                  p, " (src_pairs must list the pairs of each source row's edges in edge order)");
    }
  }
}

}  // namespace

void check_rgcn_layout(const char* op, int64_t N_src, const at::Tensor& col, const at::Tensor& pair_ptr,
                       const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                       const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
                       bool need_src) {
  const int64_t E = col.numel(), P = pair_dst.numel(), N_dst = dst_ptr.numel() - 1;
  check_ptr(op, "pair_ptr", pair_ptr, E, "E (col.numel())");
  check_ptr(op, "rel_ptr", rel_ptr, P, "P (pair_dst.numel())");
  check_ptr(op, "dst_ptr", dst_ptr, P, "P (pair_dst.numel())");
  if (need_src) check_ptr(op, "src_ptr", src_ptr, E, "E (col.numel())");
  LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_check_layout", [&] {
    check_ids<index_t>(op, "col", col, N_src, "x rows (N_src)");
    check_ids<index_t>(op, "pair_dst", pair_dst, N_dst, "N_dst (dst_ptr.numel() - 1)");
    check_pair_dst_increasing<index_t>(op, pair_dst, rel_ptr);
    check_ids<index_t>(op, "dst_pairs", dst_pairs, P, "P pairs");
    check_dst_pairs_consistent<index_t>(op, pair_dst, dst_ptr, dst_pairs);
    if (need_src) {
      check_ids<index_t>(op, "src_pairs", src_pairs, P, "P pairs");
      check_src_pairs_consistent<index_t>(op, col, pair_ptr, src_ptr, src_pairs);
    }
  });
}

}  // namespace lmgnn
