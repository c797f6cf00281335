// CPU kernel of lmgnn::hetero_neighbor_sample.
//
// Per hop, all (relation, destination) pairs form one flat range processed with
// at::parallel_for in two passes: count the neighbours each destination takes (giving the
// block's indptr), then draw them (see hetero_neighbor_sample.h for the rule). New source
// nodes are then deduplicated per node type with a concurrent open-addressing hash table
// sized to the frontier (no O(num_nodes) array): destinations are inserted with value
// i (their prefix position), the sampled edge at flat position g with num_dst + g, each
// slot keeping the minimum. A slot whose value is num_dst + g marks the first appearance of
// a new node at g; a prefix sum over those marks gives the new nodes' local ids in order of
// first appearance. Every value depends only on the inputs, never on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <vector>

#include "ops/hetero_neighbor_sample.h"
#include "utils/check.h"

namespace lmgnn {
namespace {

constexpr const char* kOp = "hetero_neighbor_sample";
constexpr int64_t kGrain = 1024;
// Frontiers up to this size are deduplicated by one thread (same result, less overhead).
constexpr int64_t kSerialDedup = 1 << 17;

using Result = std::tuple<std::vector<at::Tensor>, at::Tensor, std::vector<at::Tensor>,
                          std::vector<at::Tensor>, std::vector<at::Tensor>>;

// One relation's CSC, read through raw pointers.
struct Rel {
  const int64_t* indptr = nullptr;
  const int32_t* idx32 = nullptr;
  const int64_t* idx64 = nullptr;
  const int64_t* eid = nullptr;
  const int64_t* ex = nullptr;  // sorted excluded positions
  int64_t num_ex = 0;
  int64_t num_edges = 0;
  int64_t src = 0, dst = 0;
  int64_t index(int64_t p) const { return idx32 != nullptr ? static_cast<int64_t>(idx32[p]) : idx64[p]; }
};

// A destination's CSC range and its excluded positions.
struct Range {
  int64_t p0, p1;
  const int64_t* ex;
  int64_t nx;
  int64_t eligible() const { return p1 - p0 - nx; }
};

Range node_range(const Rel& rel, int64_t r, int64_t v) {
  const int64_t p0 = rel.indptr[v], p1 = rel.indptr[v + 1];
  TORCH_CHECK(0 <= p0 && p0 <= p1 && p1 <= rel.num_edges, kOp, ": indptr[", r, "] is corrupt at node ",
              v, " (", p0, ", ", p1, ") for ", rel.num_edges, " edges");
  Range g{p0, p1, nullptr, 0};
  if (rel.num_ex > 0) {
    const int64_t lo = sampling::lower_bound(rel.ex, rel.num_ex, p0);
    const int64_t hi = lo + sampling::lower_bound(rel.ex + lo, rel.num_ex - lo, p1);
    g.ex = rel.ex + lo;
    g.nx = hi - lo;
  }
  return g;
}

// Runs fn(segment, index within segment, flat index) over the concatenation of segments
// [off[s], off[s+1]), in parallel.
template <typename F>
void parallel_segments(const std::vector<int64_t>& off, const F& fn) {
  const int64_t total = off.back();
  if (total == 0) return;
  at::parallel_for(0, total, kGrain, [&](int64_t b, int64_t e) {
    int64_t s = std::upper_bound(off.begin(), off.end(), b) - off.begin() - 1;
    for (int64_t g = b; g < e; ++g) {
      while (g >= off[s + 1]) ++s;
      fn(s, g - off[s], g);
    }
  });
}

// Exclusive prefix sum of flags[0, n) into rank[0, n); returns the total. Chunked over
// threads; integer sums, so the result is the same for any chunking.
int64_t exclusive_scan(const uint8_t* flags, int64_t* rank, int64_t n) {
  if (n == 0) return 0;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / 4096));
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<int64_t> sums(chunks + 1, 0);
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      int64_t acc = 0;
      for (int64_t i = c * step, e = std::min(n, (c + 1) * step); i < e; ++i) acc += flags[i];
      sums[c + 1] = acc;
    }
  });
  for (int64_t c = 0; c < chunks; ++c) sums[c + 1] += sums[c];
  at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      int64_t acc = sums[c];
      for (int64_t i = c * step, e = std::min(n, (c + 1) * step); i < e; ++i) {
        rank[i] = acc;
        acc += flags[i];
      }
    }
  });
  return sums[chunks];
}

// Concurrent insert-or-min hash table from node id to the smallest value inserted for it.
class FrontierMap {
 public:
  struct Slot {
    int64_t key;
    int64_t val;
  };

  explicit FrontierMap(int64_t n) {
    cap_ = 64;
    while (cap_ < 2 * n) cap_ <<= 1;
    mask_ = static_cast<uint64_t>(cap_ - 1);
    slots_.reset(new Slot[cap_]);
    at::parallel_for(0, cap_, 1 << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) slots_[i] = Slot{-1, std::numeric_limits<int64_t>::max()};
    });
  }

  // Inserts key (>= 0) with val, keeping the minimum value; returns the key's slot.
  int64_t insert(int64_t key, int64_t val) {
    uint64_t h = mix64(static_cast<uint64_t>(key)) & mask_;
    while (true) {
      std::atomic_ref<int64_t> k(slots_[h].key);
      int64_t cur = k.load(std::memory_order_relaxed);
      if (cur == -1) {
        if (k.compare_exchange_strong(cur, key, std::memory_order_relaxed)) cur = key;
      }
      if (cur == key) {
        std::atomic_ref<int64_t> v(slots_[h].val);
        int64_t old = v.load(std::memory_order_relaxed);
        while (val < old && !v.compare_exchange_weak(old, val, std::memory_order_relaxed)) {
        }
        return static_cast<int64_t>(h);
      }
      h = (h + 1) & mask_;
    }
  }

  // Single-threaded: the key's value, inserting `val` first when the key is new.
  int64_t get_or_insert(int64_t key, int64_t val, bool* inserted) {
    uint64_t h = mix64(static_cast<uint64_t>(key)) & mask_;
    while (slots_[h].key != key && slots_[h].key != -1) h = (h + 1) & mask_;
    *inserted = slots_[h].key == -1;
    if (*inserted) slots_[h] = Slot{key, val};
    return slots_[h].val;
  }

  int64_t find(int64_t key) const {
    uint64_t h = mix64(static_cast<uint64_t>(key)) & mask_;
    while (slots_[h].key != key && slots_[h].key != -1) h = (h + 1) & mask_;
    return slots_[h].key == key ? static_cast<int64_t>(h) : -1;
  }

  Slot& operator[](int64_t i) { return slots_[i]; }

 private:
  int64_t cap_ = 0;
  uint64_t mask_ = 0;
  std::unique_ptr<Slot[]> slots_;
};

Result hetero_neighbor_sample_cpu(at::TensorList indptr_in, at::TensorList indices_in,
                                  at::TensorList eid_in, at::IntArrayRef src_type,
                                  at::IntArrayRef dst_type, at::IntArrayRef num_nodes,
                                  at::TensorList seeds_in, at::IntArrayRef fanouts, bool replace,
                                  int64_t seed,
                                  const std::optional<std::vector<at::Tensor>>& exclude_in,
                                  const std::optional<std::vector<std::string>>& names) {
  const auto shape = check_hetero_neighbor_sample_args(indptr_in, indices_in, eid_in, src_type,
                                                       dst_type, num_nodes, seeds_in, fanouts,
                                                       exclude_in, names, c10::DeviceType::CPU);
  const int64_t T = shape.num_types, R = shape.num_rels, L = shape.num_layers;
  const uint64_t useed = static_cast<uint64_t>(seed);
  const auto i64 = at::TensorOptions().dtype(at::kLong);

  // Contiguous views of the graph (kept alive for the call) and their raw pointers.
  std::vector<at::Tensor> keep;
  std::vector<Rel> rels(R);
  for (int64_t r = 0; r < R; ++r) {
    Rel& rel = rels[r];
    auto ip = indptr_in[r].contiguous();
    auto ix = indices_in[r].contiguous();
    auto ei = eid_in[r].contiguous();
    rel.indptr = ip.const_data_ptr<int64_t>();
    if (ix.scalar_type() == at::kInt) rel.idx32 = ix.const_data_ptr<int32_t>();
    else rel.idx64 = ix.const_data_ptr<int64_t>();
    rel.eid = ei.const_data_ptr<int64_t>();
    rel.num_edges = ix.numel();
    rel.src = src_type[r];
    rel.dst = dst_type[r];
    const int64_t nd = num_nodes[rel.dst];
    TORCH_CHECK(rel.indptr[0] == 0 && rel.indptr[nd] == rel.num_edges, kOp, ": indptr[", r,
                "] must start at 0 and end at the number of edges (", rel.num_edges, "), got ",
                rel.indptr[0], " and ", rel.indptr[nd]);
    if (exclude_in.has_value()) {
      auto ex = (*exclude_in)[r].contiguous();
      rel.ex = ex.const_data_ptr<int64_t>();
      rel.num_ex = ex.numel();
      for (int64_t i = 0; i < rel.num_ex; ++i) {
        TORCH_CHECK_INDEX(rel.ex[i] >= 0 && rel.ex[i] < rel.num_edges, kOp, ": exclude[", r,
                          "] holds position ", rel.ex[i], " out of range for ", rel.num_edges, " edges");
        TORCH_CHECK(i == 0 || rel.ex[i] > rel.ex[i - 1], kOp, ": exclude[", r,
                    "] must be sorted and unique, got ", rel.ex[i - 1], " before ", rel.ex[i]);
      }
      keep.push_back(ex);
    }
    keep.push_back(ip);
    keep.push_back(ix);
    keep.push_back(ei);
  }

  // Hop 0 destinations: the seeds, range-checked.
  std::vector<at::Tensor> cur(T);
  for (int64_t t = 0; t < T; ++t) {
    cur[t] = seeds_in[t].to(at::kLong).contiguous();
    const int64_t* p = cur[t].const_data_ptr<int64_t>();
    for (int64_t i = 0, n = cur[t].numel(); i < n; ++i) {
      TORCH_CHECK_INDEX(p[i] >= 0 && p[i] < num_nodes[t], kOp, ": seed id ", p[i],
                        " out of range for node type ", node_type_label(names, t), " (", num_nodes[t],
                        " nodes)");
    }
  }

  std::vector<at::Tensor> out_nodes(L * T), out_indptr(L * R), out_indices(L * R), out_eid(L * R);
  auto out_num_dst = at::empty({L * T}, i64);
  int64_t* num_dst_ptr = out_num_dst.data_ptr<int64_t>();

  for (int64_t h = 0; h < L; ++h) {
    const int64_t blk = L - 1 - h;  // outermost block first
    const int64_t* fan = fanouts.data() + h * R;
    std::vector<int64_t> nd(T);
    std::vector<const int64_t*> dst_ptr(T);
    for (int64_t t = 0; t < T; ++t) {
      nd[t] = cur[t].numel();
      dst_ptr[t] = cur[t].const_data_ptr<int64_t>();
      num_dst_ptr[blk * T + t] = nd[t];
    }

    // Pass 1: per-destination counts into each relation's indptr.
    std::vector<int64_t> item_off(R + 1, 0);
    std::vector<int64_t*> ipo(R);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = nd[rels[r].dst];
      auto ip = at::empty({n + 1}, i64);
      ipo[r] = ip.data_ptr<int64_t>();
      ipo[r][0] = 0;
      if (fan[r] == 0) std::fill(ipo[r] + 1, ipo[r] + n + 1, int64_t{0});
      out_indptr[blk * R + r] = ip;
      item_off[r + 1] = item_off[r] + (fan[r] != 0 ? n : 0);
    }
    parallel_segments(item_off, [&](int64_t r, int64_t i, int64_t) {
      const Rel& rel = rels[r];
      const Range g = node_range(rel, r, dst_ptr[rel.dst][i]);
      ipo[r][i + 1] = sampling::sample_count(g.eligible(), fan[r], replace);
    });
    std::vector<int64_t> num_out(R);
    for (int64_t r = 0; r < R; ++r) {
      int64_t* p = ipo[r];
      for (int64_t i = 0, n = nd[rels[r].dst]; i < n; ++i) p[i + 1] += p[i];
      num_out[r] = p[nd[rels[r].dst]];
    }

    // Pass 2: draw the neighbours; global source ids go to a temporary, eids to the output.
    std::vector<at::Tensor> src_tmp(R);
    std::vector<int64_t*> src_ptr(R), eid_ptr(R);
    for (int64_t r = 0; r < R; ++r) {
      src_tmp[r] = at::empty({num_out[r]}, i64);
      out_eid[blk * R + r] = at::empty({num_out[r]}, i64);
      src_ptr[r] = src_tmp[r].data_ptr<int64_t>();
      eid_ptr[r] = out_eid[blk * R + r].data_ptr<int64_t>();
    }
    parallel_segments(item_off, [&](int64_t r, int64_t i, int64_t) {
      thread_local std::vector<int64_t> buf;
      const Rel& rel = rels[r];
      const int64_t v = dst_ptr[rel.dst][i];
      const Range g = node_range(rel, r, v);
      const int64_t m = g.eligible(), k = fan[r];
      const int64_t base = ipo[r][i], cnt = ipo[r][i + 1] - base;
      if (cnt == 0) return;
      const int64_t n_src = num_nodes[rel.src];
      auto emit = [&](int64_t q, int64_t pos) {
        const int64_t u = rel.index(pos);
        TORCH_CHECK_INDEX(u >= 0 && u < n_src, kOp, ": indices[", r, "] holds source id ", u,
                          " out of range for node type ", node_type_label(names, rel.src), " (",
                          n_src, " nodes)");
        src_ptr[r][base + q] = u;
        eid_ptr[r][base + q] = rel.eid[pos];
      };
      if (sampling::takes_all(m, k, replace)) {
        int64_t q = 0, x = 0;
        for (int64_t pos = g.p0; pos < g.p1; ++pos) {
          if (x < g.nx && g.ex[x] == pos) {
            ++x;
            continue;
          }
          emit(q++, pos);
        }
      } else {
        if (static_cast<int64_t>(buf.size()) < cnt) buf.resize(cnt);
        sampling::draw_indices(useed, h, R, r, v, m, k, replace, buf.data());
        for (int64_t q = 0; q < cnt; ++q) {
          emit(q, g.nx == 0 ? g.p0 + buf[q] : sampling::eligible_position(g.p0, buf[q], g.ex, g.nx));
        }
      }
    });

    // Dedup and relabel, per source node type.
    std::vector<at::Tensor> next(T);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int64_t> seg_rel, eoff{0};
      for (int64_t r = 0; r < R; ++r) {
        if (rels[r].src == t && num_out[r] > 0) {
          seg_rel.push_back(r);
          eoff.push_back(eoff.back() + num_out[r]);
        }
      }
      const int64_t n_dst = nd[t], n_edges = eoff.back();
      const int64_t* dst_ids = dst_ptr[t];
      for (int64_t r = 0; r < R; ++r) {
        if (rels[r].src == t) out_indices[blk * R + r] = at::empty({num_out[r]}, i64);
      }
      if (n_edges == 0 && h > 0) {
        next[t] = cur[t].clone();
        continue;
      }
      FrontierMap map(n_dst + n_edges);
      if (n_dst + n_edges <= kSerialDedup || at::get_num_threads() == 1) {
        // One thread: a single pass in first-appearance order gives the same ids directly.
        bool inserted = false;
        for (int64_t i = 0; i < n_dst; ++i) {
          const int64_t val = map.get_or_insert(dst_ids[i], i, &inserted);
          TORCH_CHECK(val == i, kOp, ": seeds of node type ", node_type_label(names, t),
                      " contain duplicate id ", dst_ids[i], "; pass unique seeds");
        }
        std::vector<int64_t> fresh;
        for (size_t q = 0; q < seg_rel.size(); ++q) {
          const int64_t r = seg_rel[q];
          const int64_t* src = src_ptr[r];
          int64_t* local = out_indices[blk * R + r].data_ptr<int64_t>();
          for (int64_t j = 0; j < num_out[r]; ++j) {
            local[j] = map.get_or_insert(src[j], n_dst + static_cast<int64_t>(fresh.size()), &inserted);
            if (inserted) fresh.push_back(src[j]);
          }
        }
        auto nodes = at::empty({n_dst + static_cast<int64_t>(fresh.size())}, i64);
        int64_t* np = nodes.data_ptr<int64_t>();
        std::copy(dst_ids, dst_ids + n_dst, np);
        std::copy(fresh.begin(), fresh.end(), np + n_dst);
        next[t] = nodes;
        continue;
      }
      at::parallel_for(0, n_dst, kGrain, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) map.insert(dst_ids[i], i);
      });
      if (h == 0) {  // seeds must be unique: a later duplicate lost the min
        at::parallel_for(0, n_dst, kGrain, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            TORCH_CHECK(map[map.find(dst_ids[i])].val == i, kOp, ": seeds of node type ",
                        node_type_label(names, t), " contain duplicate id ", dst_ids[i],
                        "; pass unique seeds");
          }
        });
      }
      std::vector<int64_t> slot(n_edges), rank(n_edges);
      std::vector<uint8_t> first(n_edges);
      parallel_segments(eoff, [&](int64_t s, int64_t j, int64_t g) {
        slot[g] = map.insert(src_ptr[seg_rel[s]][j], n_dst + g);
      });
      at::parallel_for(0, n_edges, kGrain * 8, [&](int64_t b, int64_t e) {
        for (int64_t g = b; g < e; ++g) first[g] = map[slot[g]].val == n_dst + g;
      });
      const int64_t n_new = exclusive_scan(first.data(), rank.data(), n_edges);
      auto nodes = at::empty({n_dst + n_new}, i64);
      int64_t* np = nodes.data_ptr<int64_t>();
      std::copy(dst_ids, dst_ids + n_dst, np);
      at::parallel_for(0, n_edges, kGrain * 8, [&](int64_t b, int64_t e) {
        for (int64_t g = b; g < e; ++g) {
          if (!first[g]) continue;
          np[n_dst + rank[g]] = map[slot[g]].key;
          map[slot[g]].val = n_dst + rank[g];  // now the local id
        }
      });
      std::vector<int64_t*> local_ptr;
      for (int64_t r : seg_rel) local_ptr.push_back(out_indices[blk * R + r].data_ptr<int64_t>());
      parallel_segments(eoff, [&](int64_t s, int64_t j, int64_t g) {
        local_ptr[s][j] = map[slot[g]].val;
      });
      next[t] = nodes;
    }
    for (int64_t t = 0; t < T; ++t) out_nodes[blk * T + t] = next[t];
    cur = std::move(next);
  }
  return {out_nodes, out_num_dst, out_indptr, out_indices, out_eid};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("hetero_neighbor_sample", &hetero_neighbor_sample_cpu); }

}  // namespace lmgnn
