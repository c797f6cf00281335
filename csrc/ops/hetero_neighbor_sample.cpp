// lmgnn::hetero_neighbor_sample — multi-hop neighbour sampling over a heterogeneous graph
// stored as one CSC per relation, producing one block per hop.
//
// Inputs (R relations, T node types, L hops; relation r goes src_type[r] -> dst_type[r]):
//   indptr[r]  : [num_nodes[dst_type[r]] + 1] int64 CSC row pointer over destinations
//   indices[r] : [E_r] int32/int64 source node ids (of type src_type[r])
//   eid[r]     : [E_r] int64 edge ids, returned for the sampled edges
//   num_nodes  : [T] node counts
//   seeds      : T tensors of unique destination ids (int32/int64), empty for no seeds
//   fanouts    : [L * R] row-major [hop][relation]; hop 0 samples from the seeds; -1 = all
//   replace    : draw with replacement
//   seed       : the random seed (counter-based RNG, see hetero_neighbor_sample.h)
//   exclude    : optional, per relation, sorted unique CSC *positions* (indices into
//                indices[r] / eid[r]) that are never sampled
//   node_type_names : optional names used in error messages
// Outputs, block order (outermost hop first, i.e. hop L-1, ..., hop 0):
//   nodes   [L * T] : per block and type, int64 global ids of the source nodes; the first
//                     num_dst of them are the block's destinations (the previous hop's
//                     nodes, the seeds for hop 0), new nodes follow in order of first
//                     appearance over (relation, destination, position)
//   num_dst [L * T] : int64 CPU tensor
//   indptr  [L * R] : per block and relation, [num_dst[dst type] + 1] int64
//   indices [L * R] : int64 local source indices into nodes[block][src type]
//   eid     [L * R] : int64 edge ids
#include "ops/hetero_neighbor_sample.h"

#include <torch/library.h>

#include "utils/check.h"

namespace lmgnn {

std::string node_type_label(const std::optional<std::vector<std::string>>& names, int64_t t) {
  if (names.has_value() && t >= 0 && t < static_cast<int64_t>(names->size())) {
    return "'" + (*names)[t] + "'";
  }
  return "#" + std::to_string(t);
}

HeteroSampleShape check_hetero_neighbor_sample_args(
    at::TensorList indptr, at::TensorList indices, at::TensorList eid, at::IntArrayRef src_type,
    at::IntArrayRef dst_type, at::IntArrayRef num_nodes, at::TensorList seeds,
    at::IntArrayRef fanouts, const std::optional<std::vector<at::Tensor>>& exclude,
    const std::optional<std::vector<std::string>>& node_type_names, c10::DeviceType device_type) {
  constexpr const char* op = "hetero_neighbor_sample";
  HeteroSampleShape s;
  s.num_types = static_cast<int64_t>(num_nodes.size());
  s.num_rels = static_cast<int64_t>(indptr.size());
  LMGNN_CHECK(s.num_types > 0, op, ": num_nodes is empty (the graph has no node types)");
  LMGNN_CHECK(s.num_rels > 0, op, ": the graph has no relations (indptr is an empty list)");
  LMGNN_CHECK(static_cast<int64_t>(indices.size()) == s.num_rels &&
                  static_cast<int64_t>(eid.size()) == s.num_rels &&
                  static_cast<int64_t>(src_type.size()) == s.num_rels &&
                  static_cast<int64_t>(dst_type.size()) == s.num_rels,
              op, ": indptr, indices, eid, src_type and dst_type must have one entry per relation, got ",
              indptr.size(), ", ", indices.size(), ", ", eid.size(), ", ", src_type.size(), " and ",
              dst_type.size());
  LMGNN_CHECK(static_cast<int64_t>(seeds.size()) == s.num_types, op,
              ": seeds must have one tensor per node type (", s.num_types, "), got ", seeds.size());
  if (node_type_names.has_value()) {
    LMGNN_CHECK(static_cast<int64_t>(node_type_names->size()) == s.num_types, op,
                ": node_type_names must have one name per node type (", s.num_types, "), got ",
                node_type_names->size());
  }
  for (int64_t t = 0; t < s.num_types; ++t) {
    LMGNN_CHECK(num_nodes[t] >= 0, op, ": num_nodes of node type ",
                node_type_label(node_type_names, t), " must be >= 0, got ", num_nodes[t]);
  }
  LMGNN_CHECK(!fanouts.empty(), op, ": fanouts is empty; give at least one hop of ", s.num_rels,
              " fanouts");
  LMGNN_CHECK(static_cast<int64_t>(fanouts.size()) % s.num_rels == 0, op, ": fanouts has ",
              fanouts.size(), " entries, not a multiple of the number of relations (", s.num_rels,
              "); give one fanout per relation per hop");
  s.num_layers = static_cast<int64_t>(fanouts.size()) / s.num_rels;
  for (size_t i = 0; i < fanouts.size(); ++i) {
    LMGNN_CHECK(fanouts[i] >= -1, op, ": fanout ", fanouts[i], " of hop ",
                static_cast<int64_t>(i) / s.num_rels, ", relation ", static_cast<int64_t>(i) % s.num_rels,
                " is invalid; use -1 (all neighbours) or a count >= 0");
  }

  const auto graph_ok = [&](const at::Tensor& t) {
    if (t.device().type() == device_type) return true;
    // The CUDA kernel reads a graph in pinned host memory through unified addressing.
    return device_type == c10::DeviceType::CUDA && t.device().is_cpu() && t.is_pinned();
  };
  for (int64_t r = 0; r < s.num_rels; ++r) {
    const int64_t st = src_type[r], dt = dst_type[r];
    LMGNN_CHECK(st >= 0 && st < s.num_types && dt >= 0 && dt < s.num_types, op, ": relation ", r,
                " has node types (", st, ", ", dt, ") out of range for ", s.num_types, " node types");
    const auto& ip = indptr[r];
    const auto& ix = indices[r];
    const auto& ei = eid[r];
    check_defined(op, ip, "indptr");
    check_defined(op, ix, "indices");
    check_defined(op, ei, "eid");
    LMGNN_CHECK(ip.dim() == 1 && ip.scalar_type() == at::kLong, op, ": indptr[", r,
                "] must be a 1-D int64 tensor, got ", ip.scalar_type(), " of shape ", ip.sizes());
    LMGNN_CHECK(ip.numel() == num_nodes[dt] + 1, op, ": indptr[", r, "] has ", ip.numel(),
                " entries but its destination type ", node_type_label(node_type_names, dt), " has ",
                num_nodes[dt], " nodes (expected ", num_nodes[dt] + 1, ")");
    LMGNN_CHECK(ix.dim() == 1 && (ix.scalar_type() == at::kLong || ix.scalar_type() == at::kInt),
                op, ": indices[", r, "] must be a 1-D int32 or int64 tensor, got ", ix.scalar_type(),
                " of shape ", ix.sizes());
    LMGNN_CHECK(ei.dim() == 1 && ei.scalar_type() == at::kLong, op, ": eid[", r,
                "] must be a 1-D int64 tensor, got ", ei.scalar_type(), " of shape ", ei.sizes());
    LMGNN_CHECK(ei.numel() == ix.numel(), op, ": eid[", r, "] has ", ei.numel(),
                " entries but indices[", r, "] has ", ix.numel());
    LMGNN_CHECK(graph_ok(ip) && graph_ok(ix) && graph_ok(ei), op, ": the CSC of relation ", r,
                " is on ", ip.device(), "/", ix.device(), "/", ei.device(), " but the kernel runs on ",
                device_type,
                device_type == c10::DeviceType::CUDA ? " (CPU tensors must be pinned)" : "");
  }
  for (int64_t t = 0; t < s.num_types; ++t) {
    const auto& sd = seeds[t];
    check_defined(op, sd, "seeds");
    LMGNN_CHECK(sd.dim() == 1 && (sd.scalar_type() == at::kLong || sd.scalar_type() == at::kInt), op,
                ": seeds of node type ", node_type_label(node_type_names, t),
                " must be a 1-D int32 or int64 tensor, got ", sd.scalar_type(), " of shape ", sd.sizes());
    LMGNN_CHECK(sd.device().type() == device_type, op, ": seeds of node type ",
                node_type_label(node_type_names, t), " are on ", sd.device(), " but the kernel runs on ",
                device_type);
  }
  if (exclude.has_value()) {
    LMGNN_CHECK(static_cast<int64_t>(exclude->size()) == s.num_rels, op,
                ": exclude must have one tensor per relation (", s.num_rels, "), got ", exclude->size());
    for (int64_t r = 0; r < s.num_rels; ++r) {
      const auto& ex = (*exclude)[r];
      check_defined(op, ex, "exclude");
      LMGNN_CHECK(ex.dim() == 1 && ex.scalar_type() == at::kLong, op, ": exclude[", r,
                  "] must be a 1-D int64 tensor, got ", ex.scalar_type(), " of shape ", ex.sizes());
      LMGNN_CHECK(graph_ok(ex), op, ": exclude[", r, "] is on ", ex.device(),
                  " but the kernel runs on ", device_type);
    }
  }
  return s;
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def(
      "hetero_neighbor_sample(Tensor[] indptr, Tensor[] indices, Tensor[] eid, int[] src_type, "
      "int[] dst_type, int[] num_nodes, Tensor[] seeds, int[] fanouts, bool replace=False, "
      "int seed=0, Tensor[]? exclude=None, str[]? node_type_names=None) -> "
      "(Tensor[] nodes, Tensor num_dst, Tensor[] indptr, Tensor[] indices, Tensor[] eid)",
      {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
