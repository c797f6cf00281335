#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <utility>

namespace lmgnn {

// Evaluation orders of lmgnn::rgcn_aggregate (see rgcn_aggregate.cpp for the cost model).
enum RgcnOrder : int64_t {
  kPairGemm = 0,       // full W [R, F_in, F_out]: aggregate per pair, one GEMM per relation segment
  kPairGemmBases = 1,  // bases: form W = a @ V once, then as kPairGemm
  kBasisCombine = 2,   // bases: combine pair aggregates into [N_dst, B*F_in], one GEMM with V
  kDensePairs = 3,     // full W: aggregate into [N_dst, R*F_in] (empty pairs are zeros), one GEMM
};

// Shape, dtype and device checks shared by the CPU and CUDA kernels of rgcn_aggregate and
// rgcn_aggregate_backward. Data-dependent checks (id ranges, monotone pointers) are done by
// each kernel where the data lives.
void check_rgcn_aggregate_args(const char* op, const at::Tensor& x, const at::Tensor& col,
                               const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
                               const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                               const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                               const at::Tensor& src_pairs, const at::Tensor& weight,
                               const std::optional<at::Tensor>& comp,
                               const std::optional<at::Tensor>& x_root,
                               const std::optional<at::Tensor>& root_weight,
                               const std::optional<at::Tensor>& bias, int64_t order);

// The data-dependent invariants of the layout the kernels rely on, checked on contiguous
// host (CPU) tensors with one pass over the pointers, the pairs and (need_src) the edges:
// pointers start at 0, never decrease and end at their total; ids in range; pair_dst
// strictly increasing within a relation; dst_ptr/dst_pairs listing exactly the pairs of each
// destination in increasing order; src_ptr/src_pairs listing the pair of every edge of each
// source row in edge order. O(E + P + N_src + N_dst + R).
void check_rgcn_layout(const char* op, int64_t N_src, const at::Tensor& col, const at::Tensor& pair_ptr,
                       const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                       const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
                       bool need_src);

// Checks of rgcn_aggregate_backward's own inputs (grad_out, agg, basis_in and the gradients
// asked for), shared by the CPU and CUDA kernels; B is 1 for order 0, else weight.size(0).
void check_rgcn_aggregate_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                                        const at::Tensor& agg, const at::Tensor& basis_in,
                                        const std::optional<at::Tensor>& x_root, int64_t N_dst,
                                        int64_t P, int64_t R, int64_t B, int64_t F_out, int64_t order,
                                        std::array<bool, 6> needs);

// Orders 0 and 1: the parameter gradients from the per-relation weight gradient dw
// [R, F_in, F_out] -- dweight = dw (order 0), or dV = a^T dW and da = dW V^T (order 1), each
// only where `needs` asks for it.
void weight_grads_from_dw(const at::Tensor& dw, const at::Tensor& weight,
                          const std::optional<at::Tensor>& comp, int64_t order,
                          std::array<bool, 6> needs, at::Tensor& dweight, at::Tensor& dcomp);

// a @ b into an empty_large buffer (CPU: the block cache; CUDA: at::empty).
at::Tensor mm_large(const at::Tensor& a, const at::Tensor& b);

// a^T @ b for a [N, K], b [N, M] with a long N (a weight gradient: activations^T @ grad),
// as a contiguous [K, M] tensor, into `out` when given. On the CPU computed as
// (b^T @ a)^T and copied: MKL's sgemm ran this reduction 1.2-1.6x faster in that
// orientation (1 thread, N = 10,000, M = 128: K = 512 12.5 -> 8.7 ms, K = 768 21 -> 13.5 ms),
// in the fixed order of utils/cpu_fixed_order.h (the same bits for any thread count).
at::Tensor weight_grad_mm(const at::Tensor& a, const at::Tensor& b, std::optional<at::Tensor> out = std::nullopt);

// Gradients of the root term and bias, on any device: dx_root = g W_root^T,
// dW_root = x_root^T g, db = sum_i g[i] (accumulated in the op-math type); on the CPU the
// two reductions over rows in a fixed order (utils/cpu_fixed_order.h).
void root_grads(const at::Tensor& g, const std::optional<at::Tensor>& x_root,
                const std::optional<at::Tensor>& root_weight, std::array<bool, 6> needs,
                at::Tensor& dxr, at::Tensor& dwr, at::Tensor& db);

// The root term for orders 0 and 1, on any device: x_root @ root_weight (+ bias) as an
// [N_dst, F_out] tensor (second = false), or the bias alone [F_out] to add to every row
// (second = true), or an undefined tensor when there is neither.
std::pair<at::Tensor, bool> root_term(const std::optional<at::Tensor>& x_root,
                                      const std::optional<at::Tensor>& root_weight,
                                      const std::optional<at::Tensor>& bias);

// The output of orders 2 and 3, on any device: x_root @ root_weight + bias + z @ w,
// accumulated into one [N_dst, F_out] tensor (root term and bias optional). Order 2: z is
// basis_in [N_dst, B*F_in] and w the bases [B*F_in, F_out]; order 3: z [N_dst, R*F_in] and
// w the weights [R*F_in, F_out].
at::Tensor root_plus_product(const at::Tensor& z, const at::Tensor& w, const std::optional<at::Tensor>& x_root,
                             const std::optional<at::Tensor>& root_weight,
                             const std::optional<at::Tensor>& bias);

}  // namespace lmgnn
