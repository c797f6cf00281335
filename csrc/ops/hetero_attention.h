#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <string_view>

namespace lmgnn {

// Softmax scope of lmgnn::hetero_attention, parsed once from the schema's string.
//   per_dst:     one softmax over all in-edges of a destination, across relations (HGT)
//   per_dst_rel: one softmax per (destination, relation) neighbourhood (relation-wise GAT)
// Returns true for per_dst; raises for anything else.
bool parse_attention_scope(const char* op, std::string_view scope);

// Shape, dtype and device checks shared by the CPU and CUDA kernels of hetero_attention and
// hetero_attention_backward (q [N_dst, S, H, D], k [N_src, H, D], v [N_src, H, Dv] and the
// rgcn_aggregate layout arrays). Data-dependent layout checks: check_rgcn_layout.
void check_hetero_attention_args(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& col, const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
                                 const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                                 const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
                                 const at::Tensor& src_pairs, const std::optional<at::Tensor>& rel_slot);

// rel_slot (contiguous host tensors): every slot in [0, S), and the pairs of each destination
// in distinct slots. O(P + R + S).
void check_rel_slots(const char* op, const at::Tensor& rel_slot, int64_t S, const at::Tensor& rel_ptr,
                     const at::Tensor& dst_ptr, const at::Tensor& dst_pairs);

// Checks of the backward's own inputs: grad_out [N_dst, S, H, Dv] of q's dtype, alpha [E, H]
// in the op-math type of q (float32 for float16 / bfloat16 / float32, float64 for float64).
void check_hetero_attention_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& alpha,
                                          const at::Tensor& q, const at::Tensor& v, int64_t E);

}  // namespace lmgnn
