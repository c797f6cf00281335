// lmgnn::rgcn_aggregate — one fused R-GCN layer over a relation-sorted CSC — and its
// backward lmgnn::rgcn_aggregate_backward.
//
//   out[i] = x_root[i] @ W_root + b + sum_r norm_{i,r} * sum_{j in N_r(i)} x[j] @ W_r
//   norm_{i,r} = 1 / |N_r(i)| (mean) or 1 (sum);  W_r = weight[r]  or  sum_b comp[r, b] * weight[b]
//
// Layout (built once per block by lmgnn_fast.ops.layout, node types concatenated into one
// source space of N_src rows and one destination space of N_dst rows):
//   A *pair* is a non-empty (relation r, destination i) segment. Pairs are sorted by
//   relation, then destination; empty pairs are never stored, so P <= min(E, R * N_dst).
//   col       [E]        ids   source row of every edge, edges grouped by pair
//   pair_ptr  [P + 1]    int64 edges of pair p are col[pair_ptr[p] : pair_ptr[p + 1]]
//   pair_dst  [P]        ids   destination row of pair p
//   rel_ptr   [R + 1]    int64 pairs of relation r are rel_ptr[r] : rel_ptr[r + 1]
//   dst_ptr   [N_dst + 1] int64, dst_pairs [P] ids: the pairs of destination i (CSR, in
//                        relation order) — a deterministic per-destination reduction
//   src_ptr   [N_src + 1] int64, src_pairs [E] ids: for every edge, sorted by source row
//                        (within a row in edge order), the pair it belongs to — a
//                        deterministic gradient w.r.t. x
//   `ids` are int32 or int64 (one dtype for all four); pointers are int64.
//   Checked (check_rgcn_layout, ops/rgcn_layout_check.cpp; on CUDA in-kernel asserts, all of
//   it under LMGNN_CHECK_INPUTS=full): ranges and pointers, pair_dst strictly increasing
//   within a relation, dst_ptr/dst_pairs and (when dx is asked for) src_ptr/src_pairs
//   consistent with pair_dst and col as described above.
//
// Inputs: x [N_src, F_in]; weight [R, F_in, F_out] (full) or V [B, F_in, F_out] with comp
// [R, B]; optional x_root [N_dst, F_in] with root_weight [F_in, F_out]; optional bias
// [F_out]. float32 / float64 / float16 / bfloat16 (sums accumulate in float32, or float64
// for float64). Outputs: out [N_dst, F_out] and the saved intermediates agg [P, F_in]
// (per-pair aggregates) and basis_in ([N_dst, B * F_in] for order 2, else [0, B * F_in]).
//
// Cost model (FLOPs; E edges, P pairs, R relations, B bases). The caller picks `order`
// per call (lmgnn_fast.ops.aggregate.choose_order) from shapes alone, so no host sync:
//   aggregate, then transform (every order here):  E * F_in to sum the pairs, then
//     order 0 (full W):          2 * P * F_in * F_out       one GEMM per relation segment
//     order 1 (bases, form W):   2 * R * B * F_in * F_out + 2 * P * F_in * F_out
//     order 2 (bases, combine):  2 * P * B * F_in + 2 * N_dst * B * F_in * F_out
//     order 3 (full W, dense):   2 * R * N_dst * F_in * F_out — the aggregates go straight
//       into z [N_dst, R * F_in] (zeros for empty pairs, each element written once) and one
//       GEMM with W viewed [R * F_in, F_out] accumulates onto the root term in place: no
//       [P, F_out] products, no per-destination reduction, one large GEMM instead of R.
//       Pays (R * N_dst - P) * F_in zero writes and FLOPs on empty pairs; order 0 pays
//       element passes over its per-pair products: on CUDA 3 * P * F_out (write y, reduce y,
//       gather grad_out per pair), on the CPU 2 * P * F_out (each relation's products are
//       added onto their destination rows while still in cache, and grad_out is gathered
//       relation by relation). The caller weighs passes at PASS_COST FLOPs per element
//       (lmgnn_fast.ops.aggregate); order 3 wins where most pairs are non-empty (few
//       relations, e.g. R = 4).
//   PyG's RGCNConv order (for comparison): 2 * R * N_dst * F_in * F_out + E * F_in — every
//     destination row times every relation's weight, empty pairs included.
//   transform, then aggregate: 2 * Q * F_in * F_out + E * F_out with Q the distinct
//     (source, relation) pairs. Sampled blocks (and the uniform benchmark block) have
//     Q ~ E >= P, so aggregating first is never worse there; the op does not implement the
//     other order (it would need Q, a data-dependent size, and an [Q, F_out] buffer).
// Buffers: agg [P, F_in] and the per-pair products y -- [P, F_out] reduced per destination
// in relation order on CUDA, one relation at a time on the CPU (added onto the destination
// rows, whose pairs within a relation are distinct): deterministic, no atomics; never
// [E, F_out] nor [E, F_in, F_out].
//
// Outputs by order: agg is [P, F_in] for orders 0-2 and [0, F_in] for order 3; basis_in is
// z [N_dst, R * F_in] for order 3 (saved for dW = z^T @ g, never recomputed).
// Backward (grad_out g [N_dst, F_out]); each gradient only when `needs` asks for it:
//   order 3:    dW = z^T @ g (one GEMM); dz = g @ W^T; dx[j] = sum over edges (j -> pair
//               p = (r, i)) of norm_p * dz[i, r]
//   order 0/1:  G = g[pair_dst]; dagg_r = G_r @ W_r^T; dW_r = agg_r^T @ G_r;
//               order 1: dV = comp^T @ dW, dcomp = dW @ V^T (flattened over F_in * F_out)
//   order 2:    dV = Z^T @ g; dZ = g @ V^T; dagg[p] = sum_b comp[r_p, b] dZ[i_p, b];
//               dcomp[r, b] = sum_{p in r} <agg[p], dZ[i_p, b]>
//   dx[j] = sum over edges (j -> pair p) of norm_p * dagg[p]   (per source row, via src_ptr)
//   dx_root = g @ W_root^T; dW_root = x_root^T @ g; db = sum_i g[i].
#include "ops/rgcn_aggregate.h"

#include <ATen/OpMathType.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include "utils/check.h"
#include "utils/cpu_buffer.h"
#include "utils/cpu_fixed_order.h"

namespace lmgnn {

void check_rgcn_aggregate_args(const char* op, const at::Tensor& x, const at::Tensor& col,
                               const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
                               const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                               const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                               const at::Tensor& src_pairs, const at::Tensor& weight,
                               const std::optional<at::Tensor>& comp,
                               const std::optional<at::Tensor>& x_root,
                               const std::optional<at::Tensor>& root_weight,
                               const std::optional<at::Tensor>& bias, int64_t order) {
  LMGNN_CHECK(order == kPairGemm || order == kPairGemmBases || order == kBasisCombine ||
                  order == kDensePairs,
              op, ": order must be 0 (full weight), 1 (bases, form W), 2 (bases, combine) or 3 ",
              "(full weight, dense pairs), got ", order);
  check_dim(op, x, "x", 2);
  check_float_dtype(op, x, "x");
  const struct {
    const at::Tensor& t;
    const char* name;
  } ids[] = {{col, "col"}, {pair_dst, "pair_dst"}, {dst_pairs, "dst_pairs"}, {src_pairs, "src_pairs"}};
  for (const auto& [t, name] : ids) {
    check_dim(op, t, name, 1);
    check_index_dtype(op, t, name);
    check_same_dtype(op, t, name, col, "col");
    check_same_device(op, t, name, x, "x");
  }
  const struct {
    const at::Tensor& t;
    const char* name;
  } ptrs[] = {{pair_ptr, "pair_ptr"}, {rel_ptr, "rel_ptr"}, {dst_ptr, "dst_ptr"}, {src_ptr, "src_ptr"}};
  for (const auto& [t, name] : ptrs) {
    check_dim(op, t, name, 1);
    LMGNN_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
    LMGNN_CHECK(t.numel() >= 1, op, ": ", name, " must hold at least one entry (a pointer [n + 1])");
    check_same_device(op, t, name, x, "x");
  }
  const int64_t E = col.numel(), P = pair_dst.numel();
  const int64_t N_src = x.size(0), F_in = x.size(1);
  LMGNN_CHECK(pair_ptr.numel() == P + 1, op, ": pair_ptr must have P + 1 = ", P + 1,
              " entries (P = pair_dst.numel()), got ", pair_ptr.numel());
  LMGNN_CHECK(dst_pairs.numel() == P, op, ": dst_pairs must have P = ", P, " entries, got ",
              dst_pairs.numel());
  LMGNN_CHECK(src_pairs.numel() == E, op, ": src_pairs must have E = ", E,
              " entries (E = col.numel()), got ", src_pairs.numel());
  LMGNN_CHECK(src_ptr.numel() == N_src + 1, op, ": src_ptr must have N_src + 1 = ", N_src + 1,
              " entries (N_src = x.size(0)), got ", src_ptr.numel());
  const int64_t R = rel_ptr.numel() - 1;
  const int64_t N_dst = dst_ptr.numel() - 1;

  check_dim(op, weight, "weight", 3);
  check_same_dtype(op, weight, "weight", x, "x");
  check_same_device(op, weight, "weight", x, "x");
  LMGNN_CHECK(weight.size(1) == F_in, op, ": weight must be [*, F_in = ", F_in, ", F_out], got ",
              weight.sizes());
  const int64_t F_out = weight.size(2);
  if (order == kPairGemm || order == kDensePairs) {
    LMGNN_CHECK(!comp.has_value(), op, ": order ", order, " (full weight) takes no comp");
    LMGNN_CHECK(weight.size(0) == R, op, ": weight must be [R = ", R,
                ", F_in, F_out] (R = rel_ptr.numel() - 1), got ", weight.sizes());
  } else {
    LMGNN_CHECK(comp.has_value(), op, ": order ", order, " (bases) needs comp [R, B]");
    check_dim(op, *comp, "comp", 2);
    check_same_dtype(op, *comp, "comp", x, "x");
    check_same_device(op, *comp, "comp", x, "x");
    LMGNN_CHECK(comp->size(0) == R && comp->size(1) == weight.size(0), op,
                ": comp must be [R = ", R, ", B = ", weight.size(0), "], got ", comp->sizes());
  }
  LMGNN_CHECK(x_root.has_value() == root_weight.has_value(), op,
              ": x_root and root_weight must be given together");
  if (x_root.has_value()) {
    check_dim(op, *x_root, "x_root", 2);
    check_same_dtype(op, *x_root, "x_root", x, "x");
    check_same_device(op, *x_root, "x_root", x, "x");
    LMGNN_CHECK(x_root->size(0) == N_dst && x_root->size(1) == F_in, op, ": x_root must be [N_dst = ",
                N_dst, ", F_in = ", F_in, "], got ", x_root->sizes());
    check_same_dtype(op, *root_weight, "root_weight", x, "x");
    check_same_device(op, *root_weight, "root_weight", x, "x");
    LMGNN_CHECK(root_weight->dim() == 2 && root_weight->size(0) == F_in &&
                    root_weight->size(1) == F_out,
                op, ": root_weight must be [F_in = ", F_in, ", F_out = ", F_out, "], got ",
                root_weight->sizes());
  }
  if (bias.has_value()) {
    check_same_dtype(op, *bias, "bias", x, "x");
    check_same_device(op, *bias, "bias", x, "x");
    LMGNN_CHECK(bias->dim() == 1 && bias->size(0) == F_out, op, ": bias must be [F_out = ", F_out,
                "], got ", bias->sizes());
  }
}

void check_rgcn_aggregate_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                                        const at::Tensor& agg, const at::Tensor& basis_in,
                                        const std::optional<at::Tensor>& x_root, int64_t N_dst,
                                        int64_t P, int64_t R, int64_t B, int64_t F_out, int64_t order,
                                        std::array<bool, 6> needs) {
  const int64_t F_in = x.size(1);
  LMGNN_CHECK(grad_out.dim() == 2 && grad_out.size(0) == N_dst && grad_out.size(1) == F_out, op,
              ": grad_out must be [N_dst = ", N_dst, ", F_out = ", F_out, "], got ", grad_out.sizes());
  check_same_dtype(op, grad_out, "grad_out", x, "x");
  const int64_t agg_rows = order == kDensePairs ? 0 : P;
  LMGNN_CHECK(agg.dim() == 2 && agg.size(0) == agg_rows && agg.size(1) == F_in, op, ": agg must be [",
              agg_rows, ", F_in = ", F_in, "] for order ", order, ", got ", agg.sizes());
  if (order == kDensePairs && needs[1]) {
    LMGNN_CHECK(basis_in.dim() == 2 && basis_in.size(0) == N_dst && basis_in.size(1) == R * F_in, op,
                ": basis_in must be [N_dst = ", N_dst, ", R * F_in = ", R * F_in, "], got ", basis_in.sizes());
  }
  if (order == kBasisCombine && needs[1]) {
    LMGNN_CHECK(basis_in.dim() == 2 && basis_in.size(0) == N_dst && basis_in.size(1) == B * F_in, op,
                ": basis_in must be [N_dst = ", N_dst, ", B * F_in = ", B * F_in, "], got ", basis_in.sizes());
  }
  LMGNN_CHECK(!(needs[3] || needs[4]) || x_root.has_value(), op,
              ": gradients of x_root / root_weight asked for without x_root");
}

void weight_grads_from_dw(const at::Tensor& dw, const at::Tensor& weight,
                          const std::optional<at::Tensor>& comp, int64_t order,
                          std::array<bool, 6> needs, at::Tensor& dweight, at::Tensor& dcomp) {
  if (order == kPairGemm) {
    if (needs[1]) dweight = dw;
    return;
  }
  const int64_t R = dw.size(0), F_in = dw.size(1), F_out = dw.size(2), B = weight.size(0);
  const auto dwf = dw.view({R, F_in * F_out});
  const auto vt = weight.view({B, F_in * F_out}).t();
  if (dw.is_cpu()) {  // dcomp sums over F_in * F_out: in a fixed order (utils/cpu_fixed_order.h)
    if (needs[1]) dweight = mm_fixed_order(comp->t(), dwf).view({B, F_in, F_out});
    if (needs[2]) dcomp = mm_fixed_order(dwf, vt);
    return;
  }
  if (needs[1]) dweight = at::mm(comp->t(), dwf).view({B, F_in, F_out});
  if (needs[2]) dcomp = at::mm(dwf, vt);
}

at::Tensor mm_large(const at::Tensor& a, const at::Tensor& b) {
  auto out = empty_large({a.size(0), b.size(1)}, a.options());
  if (a.is_cpu()) return mm_fixed_order_out(out, a, b);
  at::mm_out(out, a, b);
  return out;
}

namespace {

// out += a @ b (CPU: in the fixed order of utils/cpu_fixed_order.h).
at::Tensor& mm_accumulate(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (out.is_cpu()) return mm_fixed_order_out(out, a, b, /*accumulate=*/true);
  return out.addmm_(a, b);
}

// bias (broadcast over rows) + a @ b into an empty_large buffer.
at::Tensor addmm_large(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  auto out = empty_large({a.size(0), b.size(1)}, a.options());
  if (!a.is_cpu()) return at::addmm_out(out, bias, a, b);
  out.copy_(bias.expand({a.size(0), b.size(1)}));
  return mm_accumulate(out, a, b);
}

}  // namespace

at::Tensor weight_grad_mm(const at::Tensor& a, const at::Tensor& b, std::optional<at::Tensor> out) {
  at::Tensor res = out.has_value() ? *out : empty_large({a.size(1), b.size(1)}, a.options());
  if (a.is_cpu()) {
    res.copy_(mm_fixed_order(b.t(), a).t());
  } else {
    at::mm_out(res, a.t(), b);
  }
  return res;
}

void root_grads(const at::Tensor& g, const std::optional<at::Tensor>& x_root,
                const std::optional<at::Tensor>& root_weight, std::array<bool, 6> needs,
                at::Tensor& dxr, at::Tensor& dwr, at::Tensor& db) {
  if (needs[3]) dxr = mm_large(g, root_weight->t());
  if (needs[4]) dwr = weight_grad_mm(*x_root, g);
  if (needs[5] && g.is_cpu()) {
    db = column_sum_fixed_order(g);
  } else if (needs[5]) {
    db = at::sum(g, {0}, false, at::toOpMathType(g.scalar_type())).to(g.scalar_type());
  }
}

std::pair<at::Tensor, bool> root_term(const std::optional<at::Tensor>& x_root,
                                      const std::optional<at::Tensor>& root_weight,
                                      const std::optional<at::Tensor>& bias) {
  if (x_root.has_value()) {
    if (!bias.has_value()) return {mm_large(*x_root, *root_weight), false};
    return {addmm_large(*bias, *x_root, *root_weight), false};
  }
  if (bias.has_value()) return {bias->contiguous(), true};
  return {at::Tensor(), false};
}

at::Tensor root_plus_product(const at::Tensor& z, const at::Tensor& w, const std::optional<at::Tensor>& x_root,
                             const std::optional<at::Tensor>& root_weight,
                             const std::optional<at::Tensor>& bias) {
  if (x_root.has_value()) {
    auto out = root_term(x_root, root_weight, bias).first;
    return mm_accumulate(out, z, w);
  }
  if (!bias.has_value()) return mm_large(z, w);
  return addmm_large(*bias, z, w);
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def(
      "rgcn_aggregate(Tensor x, Tensor col, Tensor pair_ptr, Tensor pair_dst, Tensor rel_ptr, "
      "Tensor dst_ptr, Tensor dst_pairs, Tensor src_ptr, Tensor src_pairs, Tensor weight, "
      "Tensor? comp, Tensor? x_root, Tensor? root_weight, Tensor? bias, bool mean, int order) "
      "-> (Tensor out, Tensor agg, Tensor basis_in)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "rgcn_aggregate_backward(Tensor grad_out, Tensor x, Tensor col, Tensor pair_ptr, "
      "Tensor pair_dst, Tensor rel_ptr, Tensor dst_ptr, Tensor dst_pairs, Tensor src_ptr, "
      "Tensor src_pairs, Tensor weight, Tensor? comp, Tensor? x_root, Tensor? root_weight, "
      "Tensor agg, Tensor basis_in, bool mean, int order, bool[6] needs) "
      "-> (Tensor grad_x, Tensor grad_weight, Tensor grad_comp, Tensor grad_x_root, "
      "Tensor grad_root_weight, Tensor grad_bias)",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
