// lmgnn::hetero_attention — dot-product attention over the relation-sorted layout of
// lmgnn::rgcn_aggregate, with an edge softmax per destination — and its backward
// lmgnn::hetero_attention_backward.
//
// For destination i, relation r and head h, over the in-edges e = (j -> i) of relation r:
//   logit_e[h] = scale * <q[i, r, h], k[j, h]>
//   alpha_e[h] = softmax of logit[h] over the scope of e (max-subtracted):
//     scope "per_dst":     every in-edge of i, all relations together (HGT)
//     scope "per_dst_rel": the in-edges of i of relation r (relation-wise GAT / RGAT)
//   out[i, s(r), h] = sum_{e in N_r(i)} alpha_e[h] * v[j, h]
// with the relation slot s(r) = rel_slot[r] (rel_slot None: s(r) = r). Slots let relations
// that never share a destination share a column of q and out: in a heterogeneous graph
// every destination type has its own relations, so S = the most relations into one type
// (e.g. 3 of 8) rather than R. Slots (i, s) without edges are zeros in `out` and grad_q.
//
// The caller folds relation-specific transforms into q (one query per destination and
// relation, e.g. HGT's W_att^r and prior), so k and v are shared by every relation that
// reads a source row, and applies relation-specific output transforms to `out` afterwards
// (aggregate, then transform: one GEMM over [N_dst, R * H * Dv] instead of one per edge).
//
// Layout: the arrays of lmgnn::rgcn_aggregate (ops/rgcn_aggregate.cpp): col, pair_ptr,
// pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs; int32 or int64 ids, int64
// pointers; checked by check_rgcn_layout (ops/rgcn_layout_check.cpp) on the CPU, on CUDA
// by in-kernel asserts and under LMGNN_CHECK_INPUTS=full on a host copy.
//
// Inputs: q [N_dst, S, H, D], k [N_src, H, D], v [N_src, H, Dv] (any strides; float32,
// float64, float16, bfloat16, all one dtype), rel_slot [R] int64 (optional; values in
// [0, S); the pairs of one destination must have distinct slots — checked on the CPU, and
// on CUDA under LMGNN_CHECK_INPUTS=full), scale (a float), scope (a string, above).
// Outputs: out [N_dst, S, H, Dv] (q's dtype) and alpha [E, H], the attention weight of every
// edge (edges in layout order, i.e. col's), in the op-math type (float32 for float16 /
// bfloat16 / float32, float64 for float64) — what the backward reads instead of per-edge
// [E, H, D] tensors; dots and sums accumulate in that type.
//
// Backward (grad_out g [N_dst, S, H, Dv]), each gradient only where `needs` asks for it:
//   dp_e      = <g[i, r, h], v[j, h]>
//   delta     = sum over the scope of alpha_e * dp_e        (= <g, out> summed over the scope)
//   ds_e      = alpha_e * (dp_e - delta)
//   grad_q[i, s(r), h] = scale * sum_{e in N_r(i)} ds_e * k[j, h]
//   grad_k[j, h]    = scale * sum_{e from j} ds_e * q[i_e, s(r_e), h]
//   grad_v[j, h]    = sum_{e from j} alpha_e * g[i_e, s(r_e), h]
// kv_shared (k and v are one tensor, e.g. RGAT's shared projection): grad_k holds grad_k +
// grad_v, grad_v is empty; needs[1] or needs[2] asks for it.
// CPU: grad_q per destination, grad_k / grad_v per source row through src_ptr / src_pairs
// (no atomics, every row summed in edge order: the same bits for any thread count). CUDA:
// grad_q per destination, grad_k / grad_v by atomic adds in the op-math type.
//
// Cost (E edges, H heads, D = Dv): forward 2 * E * H * D multiply-adds (the dots, then the
// weighted sum of v); backward 4 * E * H * D (dp and grad_q per destination, grad_k and
// grad_v per source). Buffers: per-destination logits of one scope on the CPU; never
// [E, H, D].
#include "ops/hetero_attention.h"

#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {

bool parse_attention_scope(const char* op, std::string_view scope) {
  if (scope == "per_dst") return true;
  LMGNN_CHECK(scope == "per_dst_rel", op, ": scope must be 'per_dst' or 'per_dst_rel', got '", scope, "'");
  return false;
}

void check_hetero_attention_args(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& col, const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
                                 const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                                 const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                                 const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot) {
  check_dim(op, q, "q", 4);
  check_dim(op, k, "k", 3);
  check_dim(op, v, "v", 3);
  check_float_dtype(op, q, "q");
  check_same_dtype(op, k, "k", q, "q");
  check_same_dtype(op, v, "v", q, "q");
  check_same_device(op, k, "k", q, "q");
  check_same_device(op, v, "v", q, "q");
  const struct {
    const at::Tensor& t;
    const char* name;
  } ids[] = {{col, "col"}, {pair_dst, "pair_dst"}, {dst_pairs, "dst_pairs"}, {src_pairs, "src_pairs"}};
  for (const auto& [t, name] : ids) {
    check_dim(op, t, name, 1);
    check_index_dtype(op, t, name);
    check_same_dtype(op, t, name, col, "col");
    check_same_device(op, t, name, q, "q");
  }
  const struct {
    const at::Tensor& t;
    const char* name;
  } ptrs[] = {{pair_ptr, "pair_ptr"}, {rel_ptr, "rel_ptr"}, {dst_ptr, "dst_ptr"}, {src_ptr, "src_ptr"}};
  for (const auto& [t, name] : ptrs) {
    check_dim(op, t, name, 1);
    LMGNN_CHECK(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
    LMGNN_CHECK(t.numel() >= 1, op, ": ", name, " must hold at least one entry (a pointer [n + 1])");
    check_same_device(op, t, name, q, "q");
  }
  const int64_t E = col.numel(), P = pair_dst.numel();
  const int64_t R = rel_ptr.numel() - 1, N_dst = dst_ptr.numel() - 1;
  const int64_t N_src = k.size(0), H = k.size(1), D = k.size(2);
  LMGNN_CHECK(pair_ptr.numel() == P + 1, op, ": pair_ptr must have P + 1 = ", P + 1,
              " entries (P = pair_dst.numel()), got ", pair_ptr.numel());
  LMGNN_CHECK(dst_pairs.numel() == P, op, ": dst_pairs must have P = ", P, " entries, got ", dst_pairs.numel());
  LMGNN_CHECK(src_pairs.numel() == E, op, ": src_pairs must have E = ", E, " entries (E = col.numel()), got ",
              src_pairs.numel());
  LMGNN_CHECK(src_ptr.numel() == N_src + 1, op, ": src_ptr must have N_src + 1 = ", N_src + 1,
              " entries (N_src = k.size(0)), got ", src_ptr.numel());
  if (rel_slot.has_value()) {
    check_dim(op, *rel_slot, "rel_slot", 1);
    LMGNN_CHECK(rel_slot->scalar_type() == at::kLong, op, ": rel_slot must be int64, got ", rel_slot->scalar_type());
    LMGNN_CHECK(rel_slot->numel() == R, op, ": rel_slot must have R = ", R, " entries (R = rel_ptr.numel() - 1), got ",
                rel_slot->numel());
    check_same_device(op, *rel_slot, "rel_slot", q, "q");
  }
  const int64_t S = q.size(1);
  LMGNN_CHECK(q.size(0) == N_dst && (rel_slot.has_value() || S == R) && q.size(2) == H && q.size(3) == D, op,
              ": q must be [N_dst = ", N_dst, ", ", rel_slot.has_value() ? "S" : "R = ",
              rel_slot.has_value() ? "" : std::to_string(R), ", H = ", H, ", D = ", D,
              "] (N_dst = dst_ptr.numel() - 1, R = rel_ptr.numel() - 1, S the slots of rel_slot, H and D from k), got ",
              q.sizes());
  LMGNN_CHECK(v.size(0) == N_src && v.size(1) == H, op, ": v must be [N_src = ", N_src, ", H = ", H,
              ", Dv] (as k), got ", v.sizes());
}

void check_rel_slots(const char* op, const at::Tensor& rel_slot, int64_t S, const at::Tensor& rel_ptr,
                     const at::Tensor& dst_ptr, const at::Tensor& dst_pairs) {
  const int64_t* slot = rel_slot.const_data_ptr<int64_t>();
  const int64_t* rp = rel_ptr.const_data_ptr<int64_t>();
  const int64_t* dp = dst_ptr.const_data_ptr<int64_t>();
  const int64_t R = rel_slot.numel(), N_dst = dst_ptr.numel() - 1;
  for (int64_t r = 0; r < R; ++r) {
    LMGNN_CHECK_INDEX(slot[r] >= 0 && slot[r] < S, op, ": rel_slot[", r, "] = ", slot[r], " out of range for ",
                      S, " slots (q.size(1))");
  }
  std::vector<int64_t> pair_slot(rp[R]), seen(S, -1);
  for (int64_t r = 0; r < R; ++r) std::fill(pair_slot.begin() + rp[r], pair_slot.begin() + rp[r + 1], slot[r]);
  LMGNN_DISPATCH_INDEX(dst_pairs.scalar_type(), "check_rel_slots", [&] {
    const index_t* pairs = dst_pairs.const_data_ptr<index_t>();
    for (int64_t i = 0; i < N_dst; ++i) {
      for (int64_t k = dp[i]; k < dp[i + 1]; ++k) {
        const int64_t sl = pair_slot[pairs[k]];
        LMGNN_CHECK(seen[sl] != i, op, ": destination ", i, " has edges of two relations in slot ", sl,
                    " (rel_slot must give the relations into one destination distinct slots)");
        seen[sl] = i;
      }
    }
  });
}

void check_hetero_attention_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& alpha,
                                          const at::Tensor& q, const at::Tensor& v, int64_t E) {
  const int64_t N_dst = q.size(0), S = q.size(1), H = q.size(2), Dv = v.size(2);
  LMGNN_CHECK(grad_out.dim() == 4 && grad_out.size(0) == N_dst && grad_out.size(1) == S &&
                  grad_out.size(2) == H && grad_out.size(3) == Dv,
              op, ": grad_out must be [N_dst = ", N_dst, ", ", S, ", H = ", H, ", Dv = ", Dv, "] (as q's first three), got ",
              grad_out.sizes());
  check_same_dtype(op, grad_out, "grad_out", q, "q");
  check_same_device(op, grad_out, "grad_out", q, "q");
  LMGNN_CHECK(alpha.dim() == 2 && alpha.size(0) == E && alpha.size(1) == H, op, ": alpha must be [E = ", E,
              ", H = ", H, "], got ", alpha.sizes());
  const auto acc = at::toOpMathType(q.scalar_type());
  LMGNN_CHECK(alpha.scalar_type() == acc, op, ": alpha must be ", acc, " (the op-math type of q), got ",
              alpha.scalar_type());
  check_same_device(op, alpha, "alpha", q, "q");
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def(
      "hetero_attention(Tensor q, Tensor k, Tensor v, Tensor col, Tensor pair_ptr, Tensor pair_dst, "
      "Tensor rel_ptr, Tensor dst_ptr, Tensor dst_pairs, Tensor src_ptr, Tensor src_pairs, Tensor? rel_slot, "
      "float scale, str scope) -> (Tensor out, Tensor alpha)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "hetero_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor alpha, Tensor col, "
      "Tensor pair_ptr, Tensor pair_dst, Tensor rel_ptr, Tensor dst_ptr, Tensor dst_pairs, Tensor src_ptr, "
      "Tensor src_pairs, Tensor? rel_slot, float scale, str scope, bool[3] needs, bool kv_shared=False) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
