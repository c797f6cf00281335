// CPU kernel of lmgnn::hetero_neighbor_sample.
//
// Each hop runs three phases; each phase is one set of work items claimed dynamically by
// the calling thread and helpers from ATen's inter-op pool (see parallel_claim):
//   A. sample: the (relation, destination) items are cut into blocks of kBlock items that
//      threads claim from an atomic counter (a descheduled thread on a busy machine holds
//      up one block, not a fixed share of the work). A block first plans its chosen CSC
//      positions (prefetching them), then writes the items' counts into the relation's
//      indptr and the (source id, edge id) pairs into its thread's arena.
//   B. dedup: per source node type, the sampled sources are numbered in order of first
//      appearance after the destinations, with a hash table probed kPrefetch edges behind
//      its prefetches. A small type is one task (a single pass over its edges in output
//      order, which also copies the edge ids and finishes the relations' indptr); with
//      several threads, a type with enough work is split into P = threads hash partitions:
//      each id has one owner partition, so no atomics are needed. Phase A already sorted
//      each block's edge indices by partition (stable), so task j visits only its own
//      edges, in edge order: the partitions together do the work of the single pass. A
//      partition stores, for each edge, the type position of its source's first appearance
//      and counts first appearances per sampling block. Tasks are claimed largest first.
//   C. finalise (partitioned types only, no serial merge): a scan over the per-block counts
//      (one number per block) gives each block its first new-node rank; then, in parallel
//      over blocks, C1 writes the new nodes in rank order, the edge ids and each first
//      appearance's rank, and C2 turns every edge's first-appearance position into its
//      final local id.
// Output positions are fixed by prefix sums over blocks in block order, so the result is
// bit-identical for any number of threads and any schedule. Hash tables, sampling arenas
// and rank buffers live in thread-local storage reused across calls (hash slots are
// generation-stamped: no O(num_nodes) work and no clearing per call); outputs of 1 MiB or
// more come from the CPU block cache (utils/cpu_buffer.h) instead of fresh pages.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <limits>
#include <numeric>
#include <vector>

#include "ops/hetero_neighbor_sample.h"
#include "utils/check.h"
#include "utils/cpu_buffer.h"

namespace lmgnn {
namespace {

constexpr const char* kOp = "hetero_neighbor_sample";
// Items (destinations) per sampling block.
constexpr int64_t kBlock = 256;
// Below this many items in a hop, or this many (destinations + edges) of a node type,
// one thread does the work (a parallel region costs more than it saves).
constexpr int64_t kParallelItems = 1024;
constexpr int64_t kParallelDedup = 1 << 15;
// A node type with at least this much dedup work (destinations + sampled edges) is split
// into hash partitions when more than one thread runs. Each partition task streams over
// all of the type's edges (hashing each) but probes the table only for its own 1/P of
// them, so the random accesses, which dominate, are split P ways.
constexpr int64_t kPartitionDedup = 1 << 15;
// Fanouts above this use a hash set for Floyd's membership test (else a linear scan).
constexpr int64_t kSmallFanout = 32;
// How far ahead the dedup pass prefetches hash slots.
constexpr int64_t kPrefetch = 8;

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
  LMGNN_CHECK(0 <= p0 && p0 <= p1 && p1 <= rel.num_edges, kOp, ": indptr[", r, "] is corrupt at node ",
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

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 1); }

// A sampled edge before relabelling. The empty default constructor keeps vector::resize
// from zero-filling arenas that are written right after.
struct Pair {
  int64_t src;
  int64_t eid;
  Pair() {}  // NOLINT: deliberately uninitialized
  Pair(int64_t s, int64_t e) : src(s), eid(e) {}
};

// A vector element that resize() leaves uninitialized (scratch written before it is read).
template <typename T>
struct Uninit {
  T v;
  Uninit() {}  // NOLINT: deliberately uninitialized
};

// Single-threaded open-addressing map from node id to an int64 value. Slots are valid only
// when their stamp equals the current generation, so begin() never clears memory; the slot
// array grows (and is kept, thread-local) as needed.
class IdMap {
 public:
  struct Slot {
    int64_t key;
    int32_t val;
    uint32_t stamp;
  };

  // Starts an empty map expecting up to `expected` keys.
  void begin(int64_t expected) {
    int64_t cap = 64;
    while (cap < 2 * expected) cap <<= 1;
    reserve(cap);
    size_ = 0;
    next_generation();
  }

  static uint64_t hash(int64_t key) { return mix64(static_cast<uint64_t>(key)); }

  void prefetch_slot(uint64_t h) const { prefetch(&slots_[h & mask_]); }

  // The value of `key` (hash h), inserting `val` (< 2^31) first when the key is new.
  int64_t find_or_insert(int64_t key, uint64_t h, int64_t val, bool* inserted) {
    uint64_t i = h & mask_;
    while (true) {
      Slot& s = slots_[i];
      if (s.stamp != gen_) {
        if (2 * (size_ + 1) > static_cast<int64_t>(mask_ + 1)) {
          grow();
          return find_or_insert(key, h, val, inserted);
        }
        s = Slot{key, static_cast<int32_t>(val), gen_};
        ++size_;
        *inserted = true;
        return val;
      }
      if (s.key == key) {
        *inserted = false;
        return s.val;
      }
      i = (i + 1) & mask_;
    }
  }

 private:
  void reserve(int64_t cap) {
    if (static_cast<int64_t>(slots_.size()) < cap) {
      slots_.assign(static_cast<size_t>(cap), Slot{0, 0, 0});
      gen_ = 0;
    }
    mask_ = static_cast<uint64_t>(cap - 1);
  }

  void next_generation() {
    if (++gen_ == 0) {  // wrapped: clear every stamp once
      for (auto& s : slots_) s.stamp = 0;
      gen_ = 1;
    }
  }

  void grow() {
    std::vector<Slot> live;
    live.reserve(static_cast<size_t>(size_));
    for (uint64_t i = 0; i <= mask_; ++i) {
      if (slots_[i].stamp == gen_) live.push_back(slots_[i]);
    }
    const int64_t cap = static_cast<int64_t>(mask_ + 1) * 2;
    reserve(cap);
    next_generation();
    for (const Slot& s : live) {
      uint64_t i = hash(s.key) & mask_;
      while (slots_[i].stamp == gen_) i = (i + 1) & mask_;
      slots_[i] = Slot{s.key, s.val, gen_};
    }
  }

  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
  uint32_t gen_ = 0;
  int64_t size_ = 0;
};

IdMap& thread_map() {
  thread_local IdMap map;
  return map;
}

// The partition (of p) that owns a key: Fibonacci hashing, one multiply, cheaper than the
// table's hash (mix64) and unrelated to its slot bits.
inline int64_t partition_of(int64_t key, int64_t p) {
  return static_cast<int64_t>(((static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ULL) >> 32) *
                                  static_cast<uint64_t>(p) >> 32);
}

// Draw indices whose random-word constants are tabulated once per call.
constexpr int64_t kDrawTable = 4096;

// Random words of one (hop, relation): draw c of node v is
// philox_like(seed, a, v, c) = mix64(node_base(v) + cmix[c]) (see utils/random.h).
struct DrawKey {
  uint64_t sa;                  // seed ^ mix64(a)
  const uint64_t* cmix;         // mix64(c ^ constant) for the first num_cmix draw indices
  int64_t num_cmix;
  uint64_t node_base(int64_t v) const { return mix64(mix64(sa) ^ static_cast<uint64_t>(v)); }
  uint64_t draw_word(int64_t c) const { return c < num_cmix ? cmix[c] : draw_mix(c); }
  static uint64_t draw_mix(int64_t c) { return mix64(static_cast<uint64_t>(c) ^ 0xD1B54A32D192ED03ULL); }
};

// Eligible indices of one node (not takes_all), sorted ascending: the same values as
// sampling::draw_indices, with the per-node part of the random word computed once and a
// hash set for Floyd's membership test when k is large.
void draw_cpu(const DrawKey& key, int64_t v, int64_t m, int64_t k, bool replace, int64_t* out) {
  const uint64_t base = key.node_base(v);
  if (replace) {
    for (int64_t c = 0; c < k; ++c) {
      out[c] = static_cast<int64_t>(uniform_below(mix64(base + key.draw_word(c)), static_cast<uint64_t>(m)));
    }
  } else if (k <= kSmallFanout) {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t j = m - k + c;
      int64_t t = static_cast<int64_t>(uniform_below(mix64(base + key.draw_word(c)), static_cast<uint64_t>(j + 1)));
      for (int64_t q = 0; q < c; ++q) {
        if (out[q] == t) {
          t = j;
          break;
        }
      }
      out[c] = t;
    }
  } else {
    IdMap& chosen = thread_map();
    chosen.begin(k);
    bool inserted = false;
    for (int64_t c = 0; c < k; ++c) {
      const int64_t j = m - k + c;
      int64_t t = static_cast<int64_t>(uniform_below(mix64(base + key.draw_word(c)), static_cast<uint64_t>(j + 1)));
      chosen.find_or_insert(t, IdMap::hash(t), 0, &inserted);
      if (!inserted) {  // t was taken: Floyd keeps j, which no earlier draw could reach
        t = j;
        chosen.find_or_insert(t, IdMap::hash(t), 0, &inserted);
      }
      out[c] = t;
    }
  }
  if (k <= kSmallFanout) sampling::small_sort(out, k);
  else std::sort(out, out + k);
}

// A sampling block: items [i0, i1) of relation r.
struct Block {
  int64_t r, i0, i1;
  std::vector<Pair>* arena = nullptr;  // the arena of the thread that sampled it
  int64_t arena_off = 0;
  std::vector<Uninit<uint32_t>>* lists = nullptr;  // the same thread's partition lists (split > 1)
  int64_t lists_off = 0;
  int64_t count = 0;
  int64_t out_off = 0;  // first output position within relation r
};

// Scratch of one call, reused by the calling thread across calls.
struct CallBuffers {
  std::vector<std::vector<Pair>> arenas;  // per worker: sampled (source, edge id) pairs
  std::vector<std::vector<Uninit<uint32_t>>> lists;  // per worker: block-local edge indices by partition
  std::vector<Uninit<int32_t>> ranks;     // per partitioned type position: new-node rank
};

CallBuffers& call_buffers() {
  thread_local CallBuffers buf;
  return buf;
}

// A dedup task: partition `part` of `parts` of node type t.
struct DedupTask {
  int64_t t, part, parts, work;
  std::vector<int64_t> keys;       // parts == 1: new node ids in first-appearance order
  std::vector<int64_t> new_in_block;  // parts > 1: first appearances owned, per sampling block
};

// Runs fn(i, worker) for i in [0, n) on the calling thread plus up to `threads - 1`
// helpers from ATen's inter-op pool, all claiming items from one atomic counter. Unlike an
// OpenMP region, no barrier waits for a helper that has not started: the caller does any
// unclaimed work itself and then waits only for items a helper is running. A helper that
// starts late finds no work and never touches the caller's (by then gone) frame.
template <typename F>
void parallel_claim(int64_t n, int64_t threads, const F& fn) {
  threads = std::min(threads, n);
  if (threads <= 1 || at::in_parallel_region()) {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::atomic<int64_t> worker{1};
    int64_t n = 0;
    std::function<void(int64_t, int64_t)> body;
    std::mutex mu;
    std::exception_ptr error;
  };
  auto sh = std::make_shared<Shared>();
  sh->n = n;
  sh->body = [&fn](int64_t i, int64_t w) { fn(i, w); };
  auto work = [](Shared& s, int64_t w) {
    for (int64_t i = s.next.fetch_add(1, std::memory_order_relaxed); i < s.n;
         i = s.next.fetch_add(1, std::memory_order_relaxed)) {
      try {
        s.body(i, w);
      } catch (...) {
        std::lock_guard<std::mutex> lock(s.mu);
        if (!s.error) s.error = std::current_exception();
      }
      s.done.fetch_add(1, std::memory_order_acq_rel);
    }
  };
  for (int64_t h = 1; h < threads; ++h) {
    at::launch([sh, work] {
      const int64_t w = sh->worker.fetch_add(1);
      work(*sh, w);
    });
  }
  work(*sh, 0);
  while (sh->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
  if (sh->error) std::rethrow_exception(sh->error);
}

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
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());

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
    LMGNN_CHECK(rel.indptr[0] == 0 && rel.indptr[nd] == rel.num_edges, kOp, ": indptr[", r,
                "] must start at 0 and end at the number of edges (", rel.num_edges, "), got ",
                rel.indptr[0], " and ", rel.indptr[nd]);
    if (exclude_in.has_value()) {
      auto ex = (*exclude_in)[r].contiguous();
      rel.ex = ex.const_data_ptr<int64_t>();
      rel.num_ex = ex.numel();
      for (int64_t i = 0; i < rel.num_ex; ++i) {
        LMGNN_CHECK_INDEX(rel.ex[i] >= 0 && rel.ex[i] < rel.num_edges, kOp, ": exclude[", r,
                          "] holds position ", rel.ex[i], " out of range for ", rel.num_edges, " edges");
        LMGNN_CHECK(i == 0 || rel.ex[i] > rel.ex[i - 1], kOp, ": exclude[", r,
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
      LMGNN_CHECK_INDEX(p[i] >= 0 && p[i] < num_nodes[t], kOp, ": seed id ", p[i],
                        " out of range for node type ", node_type_label(names, t), " (", num_nodes[t],
                        " nodes)");
    }
  }

  // mix64(c ^ constant) tabulated for the first draw indices; larger ones (only reached by
  // nodes that have that many neighbours, or with replacement) are computed on the fly, so
  // this table never grows with the fanout itself.
  int64_t max_draws = 0;
  for (int64_t f : fanouts) max_draws = std::max(max_draws, f);
  max_draws = std::min(max_draws, kDrawTable);
  std::vector<uint64_t> cmix(static_cast<size_t>(max_draws));
  for (int64_t c = 0; c < max_draws; ++c) cmix[c] = DrawKey::draw_mix(c);

  std::vector<at::Tensor> out_nodes(L * T), out_indptr(L * R), out_indices(L * R), out_eid(L * R);
  auto out_num_dst = at::empty({L * T}, i64);
  int64_t* num_dst_ptr = out_num_dst.data_ptr<int64_t>();
  // Per-worker sampling arenas and the rank buffer, owned by the calling thread and kept
  // (with their capacity) across calls. Bound by reference here: helpers must use the
  // caller's buffers, not their own thread-local ones.
  CallBuffers& buf = call_buffers();
  std::vector<std::vector<Pair>>& arenas = buf.arenas;
  std::vector<std::vector<Uninit<uint32_t>>>& lists = buf.lists;
  if (static_cast<int64_t>(arenas.size()) < threads) arenas.resize(static_cast<size_t>(threads));
  if (static_cast<int64_t>(lists.size()) < threads) lists.resize(static_cast<size_t>(threads));

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

    // ---- A. sample ------------------------------------------------------------------
    std::vector<int64_t*> ipo(R);
    std::vector<Block> blocks;
    std::vector<int64_t> first_block(R + 1, 0);
    int64_t num_items = 0;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t n = nd[rels[r].dst];
      auto ip = at::empty({n + 1}, i64);
      ipo[r] = ip.data_ptr<int64_t>();
      ipo[r][0] = 0;
      out_indptr[blk * R + r] = ip;
      first_block[r] = static_cast<int64_t>(blocks.size());
      if (fan[r] == 0) {
        std::fill(ipo[r] + 1, ipo[r] + n + 1, int64_t{0});
        continue;
      }
      for (int64_t i0 = 0; i0 < n; i0 += kBlock) blocks.push_back(Block{r, i0, std::min(n, i0 + kBlock)});
      num_items += n;
    }
    first_block[R] = static_cast<int64_t>(blocks.size());
    for (auto& a : arenas) a.clear();
    for (auto& a : lists) a.clear();
    const int64_t sample_threads = num_items >= kParallelItems ? threads : 1;
    // With several threads, each block also sorts its edges' indices by hash partition
    // (split ways, stable), so that a partitioned dedup task visits only its own edges.
    const int64_t split = sample_threads > 1 ? threads : 1;
    std::vector<int64_t> part_start(split > 1 ? blocks.size() * static_cast<size_t>(split + 1) : 0);
    parallel_claim(static_cast<int64_t>(blocks.size()), sample_threads, [&](int64_t b, int64_t w) {
      thread_local std::vector<int64_t> pos;
      Block& bl = blocks[b];
      const int64_t r = bl.r;
      const Rel& rel = rels[r];
      const int64_t k = fan[r];
      const int64_t n_src = num_nodes[rel.src];
      const DrawKey key{useed ^ mix64(static_cast<uint64_t>(h * R + r)), cmix.data(), max_draws};
      const int64_t* dst = dst_ptr[rel.dst];
      int64_t* counts = ipo[r] + 1;
      std::vector<Pair>& arena = arenas[w];
      bl.arena = &arena;
      bl.arena_off = static_cast<int64_t>(arena.size());
      // Plan: every chosen CSC position of the block (prefetched), then emit them.
      pos.clear();
      for (int64_t i = bl.i0; i < bl.i1; ++i) {
        if (i + 4 < bl.i1) prefetch(rel.indptr + dst[i + 4]);
        const int64_t v = dst[i];
        const Range g = node_range(rel, r, v);
        const int64_t m = g.eligible();
        const int64_t cnt = sampling::sample_count(m, k, replace);
        counts[i] = cnt;
        if (cnt == 0) continue;
        const size_t base = pos.size();
        pos.resize(base + static_cast<size_t>(cnt));
        int64_t* out = pos.data() + base;
        if (sampling::takes_all(m, k, replace)) {
          int64_t q = 0, x = 0;
          for (int64_t p = g.p0; p < g.p1; ++p) {
            if (x < g.nx && g.ex[x] == p) {
              ++x;
              continue;
            }
            out[q++] = p;
          }
          continue;
        }
        draw_cpu(key, v, m, k, replace, out);
        for (int64_t q = 0; q < cnt; ++q) {
          out[q] = g.nx == 0 ? g.p0 + out[q] : sampling::eligible_position(g.p0, out[q], g.ex, g.nx);
          prefetch(rel.eid + out[q]);
          if (rel.idx32 != nullptr) prefetch(rel.idx32 + out[q]);
          else prefetch(rel.idx64 + out[q]);
        }
      }
      const int64_t total = static_cast<int64_t>(pos.size());
      arena.resize(static_cast<size_t>(bl.arena_off + total));
      Pair* out = arena.data() + bl.arena_off;
      for (int64_t q = 0; q < total; ++q) {
        const int64_t p = pos[q];
        const int64_t u = rel.index(p);
        LMGNN_CHECK_INDEX(u >= 0 && u < n_src, kOp, ": indices[", r, "] holds source id ", u,
                          " out of range for node type ", node_type_label(names, rel.src), " (", n_src,
                          " nodes)");
        out[q] = Pair(u, rel.eid[p]);
      }
      bl.count = total;
      if (split > 1) {
        LMGNN_CHECK(total < std::numeric_limits<uint32_t>::max(), kOp, ": a block of 256 destinations sampled ",
                    total, " edges, more than one call supports (2^32)");
        thread_local std::vector<Uninit<uint32_t>> part;
        part.resize(static_cast<size_t>(total));
        int64_t* st = part_start.data() + b * (split + 1);
        for (int64_t q = 0; q < total; ++q) {
          part[q].v = static_cast<uint32_t>(partition_of(out[q].src, split));
          ++st[part[q].v + 1];
        }
        for (int64_t j = 0; j < split; ++j) st[j + 1] += st[j];
        std::vector<Uninit<uint32_t>>& list = lists[w];
        bl.lists = &list;
        bl.lists_off = static_cast<int64_t>(list.size());
        list.resize(static_cast<size_t>(bl.lists_off + total));
        Uninit<uint32_t>* lo = list.data() + bl.lists_off;
        thread_local std::vector<int64_t> cursor;
        cursor.assign(st, st + split);
        for (int64_t q = 0; q < total; ++q) lo[cursor[part[q].v]++].v = static_cast<uint32_t>(q);
      }
    });

    // Block offsets (the relation's indptr prefix sums are finished per block in B).
    std::vector<int64_t> num_out(R, 0);
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t b = first_block[r]; b < first_block[r + 1]; ++b) {
        blocks[b].out_off = num_out[r];
        num_out[r] += blocks[b].count;
      }
    }
    std::vector<int64_t*> local_ptr(R), eid_ptr(R);
    for (int64_t r = 0; r < R; ++r) {
      out_indices[blk * R + r] = empty_large({num_out[r]}, i64);
      out_eid[blk * R + r] = empty_large({num_out[r]}, i64);
      local_ptr[r] = out_indices[blk * R + r].data_ptr<int64_t>();
      eid_ptr[r] = out_eid[blk * R + r].data_ptr<int64_t>();
    }

    // ---- B. dedup -------------------------------------------------------------------
    // Per type: its relations' edges in output order are the "type edges"; type_off[r] is
    // where relation r starts among them.
    std::vector<int64_t> type_edges(T, 0), type_off(R, 0);
    for (int64_t r = 0; r < R; ++r) {
      type_off[r] = type_edges[rels[r].src];
      type_edges[rels[r].src] += num_out[r];
    }
    const int64_t num_blocks = static_cast<int64_t>(blocks.size());
    std::vector<DedupTask> tasks;
    std::vector<int64_t> parts(T, 1);
    for (int64_t t = 0; t < T; ++t) {
      if (type_edges[t] == 0 && h > 0) continue;  // the next hop keeps this hop's nodes
      const int64_t work = nd[t] + type_edges[t];
      LMGNN_CHECK(work < std::numeric_limits<int32_t>::max(), kOp, ": hop ", h, " samples ", type_edges[t],
                  " edges from node type ", node_type_label(names, t), ", more than one call supports (2^31)");
      parts[t] = (split > 1 && work >= kPartitionDedup) ? split : 1;
      for (int64_t j = 0; j < parts[t]; ++j) {
        tasks.push_back(DedupTask{t, j, parts[t], work / parts[t], {}, {}});
        if (parts[t] > 1) tasks.back().new_in_block.assign(static_cast<size_t>(num_blocks), 0);
      }
    }
    std::stable_sort(tasks.begin(), tasks.end(),
                     [](const DedupTask& a, const DedupTask& b) { return a.work > b.work; });
    const bool dedup_parallel = tasks.size() > 1 && std::any_of(tasks.begin(), tasks.end(), [](const DedupTask& x) {
      return x.work >= kParallelDedup / 4;
    });
    parallel_claim(static_cast<int64_t>(tasks.size()), dedup_parallel ? threads : 1, [&](int64_t ti, int64_t) {
      DedupTask& task = tasks[ti];
      const int64_t t = task.t, j = task.part, P = task.parts, n_dst = nd[t];
      const int64_t* dst = dst_ptr[t];
      IdMap& map = thread_map();
      map.begin((n_dst + type_edges[t]) / P + 16);
      bool inserted = false;
      for (int64_t i = 0; i < n_dst; ++i) {
        if (P > 1 && partition_of(dst[i], P) != j) continue;
        const uint64_t hh = IdMap::hash(dst[i]);
        const int64_t val = map.find_or_insert(dst[i], hh, i, &inserted);
        LMGNN_CHECK(inserted, kOp, ": seeds of node type ", node_type_label(names, t), " contain duplicate id ",
                    dst[i], " (positions ", val, " and ", i, "); pass unique seeds");
      }
      for (int64_t r = 0; r < R; ++r) {
        if (rels[r].src != t) continue;
        int64_t* local = local_ptr[r];
        int64_t* eids = eid_ptr[r];
        for (int64_t b = first_block[r]; b < first_block[r + 1]; ++b) {
          const Block& bl = blocks[b];
          if (j == 0) {  // finish the indptr of the block's destinations
            int64_t* p = ipo[r] + 1;
            int64_t run = bl.out_off;
            for (int64_t i = bl.i0; i < bl.i1; ++i) p[i] = run += p[i];
          }
          const Pair* pairs = bl.arena->data() + bl.arena_off;
          const int64_t cnt = bl.count;
          // Hashes run kPrefetch edges ahead of the probes (ring), prefetching their slots.
          uint64_t ring[kPrefetch];
          if (P == 1) {
            const int64_t ahead = std::min(cnt, kPrefetch);
            for (int64_t q = 0; q < ahead; ++q) {
              ring[q] = IdMap::hash(pairs[q].src);
              map.prefetch_slot(ring[q]);
            }
            for (int64_t q = 0; q < cnt; ++q) {
              const uint64_t hh = ring[q % kPrefetch];
              if (q + kPrefetch < cnt) {
                const uint64_t hn = IdMap::hash(pairs[q + kPrefetch].src);
                ring[q % kPrefetch] = hn;
                map.prefetch_slot(hn);
              }
              const int64_t u = pairs[q].src;
              const int64_t fresh = n_dst + static_cast<int64_t>(task.keys.size());
              const int64_t val = map.find_or_insert(u, hh, fresh, &inserted);
              if (inserted) task.keys.push_back(u);
              local[bl.out_off + q] = val;
              eids[bl.out_off + q] = pairs[q].eid;
            }
            continue;
          }
          // Partitioned: only the block's edges of partition j (its list, in edge order).
          // An edge's value is n_dst + the type position of its source's first appearance
          // (its own position when it is that appearance).
          const int64_t g0 = n_dst + type_off[r] + bl.out_off;
          const int64_t* st = part_start.data() + b * (P + 1);
          const Uninit<uint32_t>* own = bl.lists->data() + bl.lists_off + st[j];
          const int64_t n_own = st[j + 1] - st[j];
          const int64_t ahead_own = std::min(n_own, kPrefetch);
          for (int64_t x = 0; x < ahead_own; ++x) {
            ring[x] = IdMap::hash(pairs[own[x].v].src);
            map.prefetch_slot(ring[x]);
          }
          int64_t fresh_here = 0;
          for (int64_t x = 0; x < n_own; ++x) {
            const uint64_t hh = ring[x % kPrefetch];
            if (x + kPrefetch < n_own) {
              const uint64_t hn = IdMap::hash(pairs[own[x + kPrefetch].v].src);
              ring[x % kPrefetch] = hn;
              map.prefetch_slot(hn);
            }
            const int64_t q = own[x].v;
            const int64_t val = map.find_or_insert(pairs[q].src, hh, g0 + q, &inserted);
            fresh_here += inserted ? 1 : 0;
            local[bl.out_off + q] = val;
          }
          task.new_in_block[b] = fresh_here;
        }
      }
    });

    // The nodes of the next hop: destinations first, then new nodes in first-appearance
    // order. For partitioned types, block_rank[b] = rank (among the type's new nodes) of
    // block b's first new node: a scan over one count per block and partition.
    std::vector<at::Tensor> next(T);
    std::vector<int64_t> n_new(T, 0), rank_off(T, 0), block_rank(static_cast<size_t>(num_blocks), 0);
    std::vector<std::vector<const DedupTask*>> by_type(T);
    for (const auto& task : tasks) by_type[task.t].push_back(&task);
    int64_t rank_total = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (by_type[t].empty()) continue;
      if (parts[t] == 1) {
        n_new[t] = static_cast<int64_t>(by_type[t][0]->keys.size());
        continue;
      }
      rank_off[t] = rank_total;
      rank_total += type_edges[t];
      int64_t run = 0;
      for (int64_t r = 0; r < R; ++r) {
        if (rels[r].src != t) continue;
        for (int64_t b = first_block[r]; b < first_block[r + 1]; ++b) {
          block_rank[b] = run;
          for (const DedupTask* x : by_type[t]) run += x->new_in_block[b];
        }
      }
      n_new[t] = run;
    }
    if (static_cast<int64_t>(buf.ranks.size()) < rank_total) {  // grow without copying the old contents
      buf.ranks = {};
      buf.ranks.resize(static_cast<size_t>(rank_total + rank_total / 4));
    }
    int32_t* const rank_data = reinterpret_cast<int32_t*>(buf.ranks.data());
    std::vector<int64_t*> node_ptr(T, nullptr);
    for (int64_t t = 0; t < T; ++t) {
      if (by_type[t].empty()) {
        next[t] = cur[t].clone();
        continue;
      }
      next[t] = at::empty({nd[t] + n_new[t]}, i64);
      node_ptr[t] = next[t].data_ptr<int64_t>();
      std::copy(dst_ptr[t], dst_ptr[t] + nd[t], node_ptr[t]);
      if (parts[t] == 1) std::copy(by_type[t][0]->keys.begin(), by_type[t][0]->keys.end(), node_ptr[t] + nd[t]);
    }

    // ---- C. finalise (partitioned types), in parallel over blocks ---------------------
    std::vector<int64_t> fin_blocks;
    int64_t fin_edges = 0;
    for (int64_t b = 0; b < num_blocks; ++b) {
      if (parts[rels[blocks[b].r].src] > 1) {
        fin_blocks.push_back(b);
        fin_edges += blocks[b].count;
      }
    }
    const int64_t num_fin = static_cast<int64_t>(fin_blocks.size());
    const int64_t fin_threads = fin_edges >= kParallelDedup ? threads : 1;
    // C1: new nodes, edge ids, and the rank of each first appearance.
    parallel_claim(num_fin, fin_threads, [&](int64_t f, int64_t) {
      const int64_t b = fin_blocks[f];
      const Block& bl = blocks[b];
      const Pair* pairs = bl.arena->data() + bl.arena_off;
      const int64_t t = rels[bl.r].src, n_dst = nd[t];
      const int64_t g0 = type_off[bl.r] + bl.out_off;
      const int64_t* lo = local_ptr[bl.r] + bl.out_off;
      int64_t* eo = eid_ptr[bl.r] + bl.out_off;
      int64_t* nodes_new = node_ptr[t] + n_dst;
      int32_t* rank = rank_data + rank_off[t];
      int64_t k = block_rank[b];
      for (int64_t q = 0; q < bl.count; ++q) {
        eo[q] = pairs[q].eid;
        if (lo[q] == n_dst + g0 + q) {
          nodes_new[k] = pairs[q].src;
          rank[g0 + q] = static_cast<int32_t>(k++);
        }
      }
    });
    // C2: first-appearance positions become final local ids.
    parallel_claim(num_fin, fin_threads, [&](int64_t f, int64_t) {
      const Block& bl = blocks[fin_blocks[f]];
      const int64_t t = rels[bl.r].src, n_dst = nd[t];
      const int32_t* rank = rank_data + rank_off[t];
      int64_t* lo = local_ptr[bl.r] + bl.out_off;
      for (int64_t q = 0; q < bl.count; ++q) {
        if (lo[q] >= n_dst) lo[q] = n_dst + rank[lo[q] - n_dst];
      }
    });

    for (int64_t t = 0; t < T; ++t) out_nodes[blk * T + t] = next[t];
    cur = std::move(next);
  }
  return {out_nodes, out_num_dst, out_indptr, out_indices, out_eid};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("hetero_neighbor_sample", &hetero_neighbor_sample_cpu); }

}  // namespace lmgnn
