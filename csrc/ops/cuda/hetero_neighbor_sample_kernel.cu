// CUDA kernel of lmgnn::hetero_neighbor_sample: the CPU kernel's algorithm, step by step,
// with the same random words, so both devices return identical tensors.
//
// The graph may live in device memory or in pinned host memory (read through unified
// virtual addressing). Per hop and relation: a count kernel (one thread per destination)
// and a cumsum give the block's indptr; a fill kernel draws the neighbours (Floyd / with
// replacement / all, see hetero_neighbor_sample.h). Dedup per source node type uses a
// device hash table sized to the frontier with atomicMin on (prefix position | num_dst +
// flat edge position): first appearances are flagged and ranked by a cumsum. User errors
// found on the device (corrupt indptr, source ids out of range, duplicate seeds) are
// recorded in a small error buffer and raised at the next host sync; the host syncs only
// to size outputs (twice per hop) and, once per call, to range-check seeds and exclusions.
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/cumsum.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <vector>

#include "ops/hetero_neighbor_sample.h"
#include "utils/check.h"

namespace lmgnn {
namespace {

constexpr const char* kOp = "hetero_neighbor_sample";
constexpr int kThreads = 256;

using Result = std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>,
                          std::vector<at::Tensor>, std::vector<at::Tensor>>;

enum ErrorCode : int64_t { kOk = 0, kCorruptIndptr = 1, kSourceOutOfRange = 2, kDuplicateSeed = 3 };

struct RelDev {
  const int64_t* indptr;
  const int32_t* idx32;
  const int64_t* idx64;
  const int64_t* eid;
  const int64_t* ex;
  int64_t num_ex;
  int64_t num_edges;
};

int64_t num_blocks(int64_t n) { return (n + kThreads - 1) / kThreads; }

__device__ __forceinline__ void report(int64_t* err, int64_t code, int64_t a, int64_t b) {
  if (atomicCAS(reinterpret_cast<unsigned long long*>(err), 0ULL,
                static_cast<unsigned long long>(code)) == 0ULL) {
    err[1] = a;
    err[2] = b;
  }
}

// The destination's CSC range and excluded positions; false when indptr is corrupt.
__device__ __forceinline__ bool node_range(const RelDev& rel, int64_t v, int64_t& p0, int64_t& p1,
                                           const int64_t*& ex, int64_t& nx) {
  p0 = rel.indptr[v];
  p1 = rel.indptr[v + 1];
  if (!(0 <= p0 && p0 <= p1 && p1 <= rel.num_edges)) return false;
  ex = nullptr;
  nx = 0;
  if (rel.num_ex > 0) {
    const int64_t lo = sampling::lower_bound(rel.ex, rel.num_ex, p0);
    nx = sampling::lower_bound(rel.ex + lo, rel.num_ex - lo, p1);
    ex = rel.ex + lo;
  }
  return true;
}

__global__ void count_kernel(RelDev rel, int64_t r, const int64_t* __restrict__ dst, int64_t n,
                             int64_t k, bool replace, int64_t* __restrict__ counts, int64_t* err) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  int64_t p0, p1, nx;
  const int64_t* ex;
  if (!node_range(rel, dst[i], p0, p1, ex, nx)) {
    report(err, kCorruptIndptr, r, dst[i]);
    counts[i] = 0;
    return;
  }
  counts[i] = sampling::sample_count(p1 - p0 - nx, k, replace);
}

__global__ void fill_kernel(RelDev rel, int64_t r, int64_t num_rels, int64_t hop, uint64_t seed,
                            const int64_t* __restrict__ dst, int64_t n, int64_t k, bool replace,
                            int64_t n_src, const int64_t* __restrict__ indptr_out,
                            int64_t* __restrict__ src_out, int64_t* __restrict__ eid_out, int64_t* err) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t base = indptr_out[i], cnt = indptr_out[i + 1] - base;
  if (cnt == 0) return;
  const int64_t v = dst[i];
  int64_t p0, p1, nx;
  const int64_t* ex;
  if (!node_range(rel, v, p0, p1, ex, nx)) return;  // reported by count_kernel
  const int64_t m = p1 - p0 - nx;
  int64_t* out = src_out + base;
  auto emit = [&](int64_t q, int64_t pos) {
    const int64_t u = rel.idx32 != nullptr ? static_cast<int64_t>(rel.idx32[pos]) : rel.idx64[pos];
    if (u < 0 || u >= n_src) report(err, kSourceOutOfRange, r, u);
    out[q] = u;
    eid_out[base + q] = rel.eid[pos];
  };
  if (sampling::takes_all(m, k, replace)) {
    int64_t q = 0, x = 0;
    for (int64_t pos = p0; pos < p1 && q < cnt; ++pos) {
      if (x < nx && ex[x] == pos) {
        ++x;
        continue;
      }
      emit(q++, pos);
    }
  } else {
    // The eligible indices are drawn into the output slice, then replaced in place by ids.
    sampling::draw_indices(seed, hop, num_rels, r, v, m, k, replace, out);
    for (int64_t q = 0; q < cnt; ++q) {
      const int64_t idx = out[q];
      emit(q, nx == 0 ? p0 + idx : sampling::eligible_position(p0, idx, ex, nx));
    }
  }
}

__device__ __forceinline__ int64_t table_insert(int64_t key, int64_t val, int64_t* keys,
                                                int64_t* vals, uint64_t mask) {
  uint64_t h = mix64(static_cast<uint64_t>(key)) & mask;
  while (true) {
    const unsigned long long prev = atomicCAS(reinterpret_cast<unsigned long long*>(keys + h),
                                              static_cast<unsigned long long>(-1LL),
                                              static_cast<unsigned long long>(key));
    if (prev == static_cast<unsigned long long>(-1LL) || prev == static_cast<unsigned long long>(key)) {
      atomicMin(reinterpret_cast<long long*>(vals + h), static_cast<long long>(val));
      return static_cast<int64_t>(h);
    }
    h = (h + 1) & mask;
  }
}

__global__ void insert_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t val_base,
                              int64_t* keys, int64_t* vals, uint64_t mask, int64_t* __restrict__ slot) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t s = table_insert(ids[i], val_base + i, keys, vals, mask);
  if (slot != nullptr) slot[i] = s;
}

__global__ void duplicate_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t t,
                                 const int64_t* __restrict__ keys, const int64_t* __restrict__ vals,
                                 uint64_t mask, int64_t* err) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  uint64_t h = mix64(static_cast<uint64_t>(ids[i])) & mask;
  while (keys[h] != ids[i]) h = (h + 1) & mask;
  if (vals[h] != i) report(err, kDuplicateSeed, t, ids[i]);
}

__global__ void first_kernel(const int64_t* __restrict__ slot, int64_t n, int64_t val_base,
                             const int64_t* __restrict__ vals, int64_t* __restrict__ first) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= n) return;
  first[g] = vals[slot[g]] == val_base + g ? 1 : 0;
}

__global__ void write_new_kernel(const int64_t* __restrict__ slot, const int64_t* __restrict__ first,
                                 const int64_t* __restrict__ inclusive, int64_t n, int64_t n_dst,
                                 const int64_t* __restrict__ keys, int64_t* vals, int64_t* __restrict__ nodes) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g >= n || first[g] == 0) return;
  const int64_t local = n_dst + inclusive[g] - 1;
  nodes[local] = keys[slot[g]];
  vals[slot[g]] = local;
}

__global__ void local_kernel(const int64_t* __restrict__ slot, int64_t n,
                             const int64_t* __restrict__ vals, int64_t* __restrict__ out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j < n) out[j] = vals[slot[j]];
}

// Every element of every part, in order (scalars and the 3-element error record alike),
// read back with one device-to-host copy for all the parts that sit on the GPU.
std::vector<int64_t> fetch(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> flat;
  std::optional<at::Device> dev;
  for (const auto& p : parts) {
    if (p.is_cuda()) dev = p.device();
  }
  for (const auto& p : parts) {
    auto f = p.reshape({-1}).to(at::kLong);
    flat.push_back(dev && !f.is_cuda() ? f.to(*dev) : f);
  }
  std::vector<int64_t> out;
  if (flat.empty()) return out;
  auto host = at::cat(flat).to(at::kCPU);
  const int64_t* q = host.const_data_ptr<int64_t>();
  out.assign(q, q + host.numel());
  return out;
}

void raise_device_error(const std::vector<int64_t>& err, const std::optional<std::vector<std::string>>& names,
                        at::IntArrayRef src_type, at::IntArrayRef num_nodes) {
  switch (err[0]) {
    case kOk:
      return;
    case kCorruptIndptr:
      LMGNN_CHECK(false, kOp, ": indptr[", err[1], "] is corrupt at node ", err[2]);
    case kSourceOutOfRange:
      LMGNN_CHECK_INDEX(false, kOp, ": indices[", err[1], "] holds source id ", err[2],
                        " out of range for node type ", node_type_label(names, src_type[err[1]]), " (",
                        num_nodes[src_type[err[1]]], " nodes)");
    case kDuplicateSeed:
      LMGNN_CHECK(false, kOp, ": seeds of node type ", node_type_label(names, err[1]),
                  " contain duplicate id ", err[2], "; pass unique seeds");
    default:
      LMGNN_CHECK(false, kOp, ": unknown device error ", err[0]);
  }
}

Result hetero_neighbor_sample_cuda(at::TensorList indptr_in, at::TensorList indices_in,
                                   at::TensorList eid_in, at::IntArrayRef src_type,
                                   at::IntArrayRef dst_type, at::IntArrayRef num_nodes,
                                   at::TensorList seeds_in, at::IntArrayRef fanouts, bool replace,
                                   int64_t seed,
                                   const std::optional<std::vector<at::Tensor>>& exclude_in,
                                   const std::optional<std::vector<std::string>>& names) {
  const auto shape = check_hetero_neighbor_sample_args(indptr_in, indices_in, eid_in, src_type,
                                                       dst_type, num_nodes, seeds_in, fanouts,
                                                       exclude_in, names, c10::DeviceType::CUDA);
  const int64_t T = shape.num_types, R = shape.num_rels, L = shape.num_layers;
  const c10::Device device = seeds_in[0].device();
  for (int64_t t = 1; t < T; ++t) {
    LMGNN_CHECK(seeds_in[t].device() == device, kOp, ": seeds are on ", device, " and ",
                seeds_in[t].device());
  }
  c10::cuda::CUDAGuard guard(device);
  auto stream = c10::cuda::getCurrentCUDAStream();
  const uint64_t useed = static_cast<uint64_t>(seed);
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(device);

  // Graph pointers; pinned host tensors must stay pinned (no contiguous() copy).
  auto prepare = [&](const at::Tensor& x, const char* what, int64_t r) {
    if (x.is_cuda()) {
      LMGNN_CHECK(x.device() == device, kOp, ": ", what, "[", r, "] is on ", x.device(),
                  " but the seeds are on ", device);
      return x.contiguous();
    }
    LMGNN_CHECK(x.is_contiguous(), kOp, ": ", what, "[", r, "] in pinned host memory must be contiguous");
    return x;
  };
  std::vector<at::Tensor> keep;
  std::vector<RelDev> rels(R);
  std::vector<at::Tensor> ends;  // indptr[r][0], indptr[r][-1] per relation
  for (int64_t r = 0; r < R; ++r) {
    auto ip = prepare(indptr_in[r], "indptr", r);
    auto ix = prepare(indices_in[r], "indices", r);
    auto ei = prepare(eid_in[r], "eid", r);
    RelDev& rel = rels[r];
    rel.indptr = ip.const_data_ptr<int64_t>();
    rel.idx32 = ix.scalar_type() == at::kInt ? ix.const_data_ptr<int32_t>() : nullptr;
    rel.idx64 = ix.scalar_type() == at::kLong ? ix.const_data_ptr<int64_t>() : nullptr;
    rel.eid = ei.const_data_ptr<int64_t>();
    rel.num_edges = ix.numel();
    rel.ex = nullptr;
    rel.num_ex = 0;
    ends.push_back(ip.narrow(0, 0, 1));
    ends.push_back(ip.narrow(0, ip.numel() - 1, 1));
    if (exclude_in.has_value() && (*exclude_in)[r].numel() > 0) {
      auto ex = prepare((*exclude_in)[r], "exclude", r);
      rel.ex = ex.const_data_ptr<int64_t>();
      rel.num_ex = ex.numel();
      auto [mn, mx] = at::aminmax(ex);
      ends.push_back(mn.reshape({1}));
      ends.push_back(mx.reshape({1}));
      // Sorted and unique <=> min over consecutive differences > 0.
      if (ex.numel() > 1) {
        auto d = ex.narrow(0, 1, ex.numel() - 1).sub(ex.narrow(0, 0, ex.numel() - 1));
        ends.push_back(std::get<0>(at::aminmax(d)).reshape({1}));
      } else {
        ends.push_back(at::full({1}, 1, ex.options()));
      }
      keep.push_back(ex);
    }
    keep.push_back(ip);
    keep.push_back(ix);
    keep.push_back(ei);
  }
  std::vector<at::Tensor> cur(T);
  for (int64_t t = 0; t < T; ++t) {
    cur[t] = seeds_in[t].to(at::kLong).contiguous();
    if (cur[t].numel() > 0) {
      auto [mn, mx] = at::aminmax(cur[t]);
      ends.push_back(mn.reshape({1}));
      ends.push_back(mx.reshape({1}));
    }
  }
  {  // One sync for every range check of the call.
    const auto vals = fetch(ends);
    size_t p = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t first = vals[p++], last = vals[p++];
      LMGNN_CHECK(first == 0 && last == rels[r].num_edges, kOp, ": indptr[", r,
                  "] must start at 0 and end at the number of edges (", rels[r].num_edges, "), got ",
                  first, " and ", last);
      if (rels[r].num_ex > 0) {
        const int64_t mn = vals[p++], mx = vals[p++], step = vals[p++];
        LMGNN_CHECK_INDEX(mn >= 0 && mx < rels[r].num_edges, kOp, ": exclude[", r, "] holds position ",
                          mn < 0 ? mn : mx, " out of range for ", rels[r].num_edges, " edges");
        LMGNN_CHECK(step > 0, kOp, ": exclude[", r, "] must be sorted and unique");
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      if (cur[t].numel() == 0) continue;
      const int64_t mn = vals[p++], mx = vals[p++];
      LMGNN_CHECK_INDEX(mn >= 0 && mx < num_nodes[t], kOp, ": seed id ", mn < 0 ? mn : mx,
                        " out of range for node type ", node_type_label(names, t), " (", num_nodes[t],
                        " nodes)");
    }
  }

  auto err = at::zeros({4}, i64);
  int64_t* err_ptr = err.data_ptr<int64_t>();
  std::vector<at::Tensor> out_nodes(L * T), out_indptr(L * R), out_indices(L * R), out_eid(L * R);
  auto out_num_dst = at::empty({L * T}, at::TensorOptions().dtype(at::kLong));
  int64_t* num_dst_ptr = out_num_dst.data_ptr<int64_t>();

  for (int64_t h = 0; h < L; ++h) {
    const int64_t blk = L - 1 - h;
    const int64_t* fan = fanouts.data() + h * R;
    std::vector<int64_t> nd(T);
    for (int64_t t = 0; t < T; ++t) {
      nd[t] = cur[t].numel();
      num_dst_ptr[blk * T + t] = nd[t];
    }
    // Counts -> indptr.
    std::vector<at::Tensor> totals;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = nd[dst_type[r]];
      auto ip = at::zeros({n + 1}, i64);
      if (n > 0 && fan[r] != 0) {
        auto counts = at::empty({n}, i64);
        count_kernel<<<num_blocks(n), kThreads, 0, stream>>>(rels[r], r, cur[dst_type[r]].const_data_ptr<int64_t>(),
                                                             n, fan[r], replace, counts.data_ptr<int64_t>(), err_ptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        ip.narrow(0, 1, n).copy_(at::cumsum(counts, 0));
      }
      out_indptr[blk * R + r] = ip;
      totals.push_back(ip.narrow(0, n, 1));
    }
    totals.push_back(err.narrow(0, 0, 3));
    std::vector<int64_t> num_out = fetch(totals);
    raise_device_error({num_out[R], num_out[R + 1], num_out[R + 2]}, names, src_type, num_nodes);

    // Draw.
    std::vector<at::Tensor> src_tmp(R);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = nd[dst_type[r]];
      src_tmp[r] = at::empty({num_out[r]}, i64);
      out_eid[blk * R + r] = at::empty({num_out[r]}, i64);
      if (num_out[r] == 0) continue;
      fill_kernel<<<num_blocks(n), kThreads, 0, stream>>>(
          rels[r], r, R, h, useed, cur[dst_type[r]].const_data_ptr<int64_t>(), n, fan[r], replace,
          num_nodes[src_type[r]], out_indptr[blk * R + r].const_data_ptr<int64_t>(),
          src_tmp[r].data_ptr<int64_t>(), out_eid[blk * R + r].data_ptr<int64_t>(), err_ptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }

    // Dedup: insert, flag first appearances, rank them (one sync for every type's count).
    struct TypeState {
      at::Tensor keys, vals, slot, first, inclusive;
      uint64_t mask = 0;
      int64_t n_edges = 0;
      std::vector<int64_t> rels, off;
    };
    std::vector<TypeState> st(T);
    std::vector<at::Tensor> new_counts;
    for (int64_t t = 0; t < T; ++t) {
      TypeState& s = st[t];
      s.off.push_back(0);
      for (int64_t r = 0; r < R; ++r) {
        if (src_type[r] == t && num_out[r] > 0) {
          s.rels.push_back(r);
          s.off.push_back(s.off.back() + num_out[r]);
        }
      }
      s.n_edges = s.off.back();
      if (s.n_edges == 0 && h > 0) continue;
      int64_t cap = 64;
      while (cap < 2 * (nd[t] + s.n_edges)) cap <<= 1;
      s.mask = static_cast<uint64_t>(cap - 1);
      s.keys = at::full({cap}, -1, i64);
      s.vals = at::full({cap}, std::numeric_limits<int64_t>::max(), i64);
      const int64_t* dst_ids = cur[t].const_data_ptr<int64_t>();
      if (nd[t] > 0) {
        insert_kernel<<<num_blocks(nd[t]), kThreads, 0, stream>>>(dst_ids, nd[t], 0, s.keys.data_ptr<int64_t>(),
                                                                  s.vals.data_ptr<int64_t>(), s.mask, nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (h == 0) {
          duplicate_kernel<<<num_blocks(nd[t]), kThreads, 0, stream>>>(
              dst_ids, nd[t], t, s.keys.const_data_ptr<int64_t>(), s.vals.const_data_ptr<int64_t>(), s.mask, err_ptr);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
      if (s.n_edges == 0) continue;
      s.slot = at::empty({s.n_edges}, i64);
      for (size_t q = 0; q < s.rels.size(); ++q) {
        const int64_t r = s.rels[q], n = num_out[r];
        insert_kernel<<<num_blocks(n), kThreads, 0, stream>>>(
            src_tmp[r].const_data_ptr<int64_t>(), n, nd[t] + s.off[q], s.keys.data_ptr<int64_t>(),
            s.vals.data_ptr<int64_t>(), s.mask, s.slot.data_ptr<int64_t>() + s.off[q]);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      s.first = at::empty({s.n_edges}, i64);
      first_kernel<<<num_blocks(s.n_edges), kThreads, 0, stream>>>(
          s.slot.const_data_ptr<int64_t>(), s.n_edges, nd[t], s.vals.const_data_ptr<int64_t>(),
          s.first.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      s.inclusive = at::cumsum(s.first, 0);
      new_counts.push_back(s.inclusive.narrow(0, s.n_edges - 1, 1));
    }
    new_counts.push_back(err.narrow(0, 0, 3));
    const std::vector<int64_t> counts = fetch(new_counts);
    raise_device_error({counts[counts.size() - 3], counts[counts.size() - 2], counts.back()}, names,
                       src_type, num_nodes);

    // Relabel.
    std::vector<at::Tensor> next(T);
    size_t ci = 0;
    for (int64_t t = 0; t < T; ++t) {
      TypeState& s = st[t];
      const int64_t n_new = s.n_edges > 0 ? counts[ci++] : 0;
      auto nodes = at::empty({nd[t] + n_new}, i64);
      if (nd[t] > 0) nodes.narrow(0, 0, nd[t]).copy_(cur[t]);
      for (int64_t r = 0; r < R; ++r) {
        if (src_type[r] == t) out_indices[blk * R + r] = at::empty({num_out[r]}, i64);
      }
      if (s.n_edges > 0) {
        write_new_kernel<<<num_blocks(s.n_edges), kThreads, 0, stream>>>(
            s.slot.const_data_ptr<int64_t>(), s.first.const_data_ptr<int64_t>(),
            s.inclusive.const_data_ptr<int64_t>(), s.n_edges, nd[t], s.keys.const_data_ptr<int64_t>(),
            s.vals.data_ptr<int64_t>(), nodes.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        for (size_t q = 0; q < s.rels.size(); ++q) {
          const int64_t r = s.rels[q], n = num_out[r];
          local_kernel<<<num_blocks(n), kThreads, 0, stream>>>(
              s.slot.const_data_ptr<int64_t>() + s.off[q], n, s.vals.const_data_ptr<int64_t>(),
              out_indices[blk * R + r].data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
      next[t] = nodes;
    }
    for (int64_t t = 0; t < T; ++t) out_nodes[blk * T + t] = next[t];
    cur = std::move(next);
  }
  return {out_nodes, out_num_dst, out_indptr, out_indices, out_eid};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("hetero_neighbor_sample", &hetero_neighbor_sample_cuda); }

}  // namespace lmgnn
