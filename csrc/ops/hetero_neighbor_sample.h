// lmgnn::hetero_neighbor_sample — shared declarations and the per-node sampling rules
// used verbatim by the CPU and the CUDA kernel (so both draw the same neighbours).
//
// Per destination node v of relation r at hop h (hop 0 samples from the seeds) with CSC
// range [p0, p1), x excluded positions in that range and m = (p1 - p0) - x eligible ones:
//   * fanout k == -1, or no replacement and k >= m: every eligible neighbour, in CSC order;
//   * without replacement, k < m: Floyd's algorithm over eligible indices [0, m) — draw c
//     (c = 0..k-1) picks t = uniform(0..j) with j = m - k + c and keeps t, or j when t is
//     already chosen — an exactly uniform k-subset in O(k) draws, no shuffle of the list;
//   * with replacement: k independent uniform indices in [0, m) (none when m == 0).
// The chosen eligible indices are sorted ascending and mapped to CSC positions (skipping
// excluded positions). Draw c of (hop h, relation r, node v) uses the counter-based word
// philox_like(seed, h * R + r, v, c): the result depends on nothing else, in particular
// not on threads, scheduling or the device.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "utils/random.h"

namespace lmgnn {

// Sizes shared by both kernels, derived from (and validated against) the arguments.
struct HeteroSampleShape {
  int64_t num_types = 0;
  int64_t num_rels = 0;
  int64_t num_layers = 0;
};

// Checks list lengths, type ids, fanouts, dtypes, dimensions and devices of every input
// (not the id values: each kernel checks those where the data lives). `device_type` is the
// kernel's device; graph tensors may also be pinned CPU memory for the CUDA kernel.
HeteroSampleShape check_hetero_neighbor_sample_args(
    at::TensorList indptr, at::TensorList indices, at::TensorList eid, at::IntArrayRef src_type,
    at::IntArrayRef dst_type, at::IntArrayRef num_nodes, at::TensorList seeds,
    at::IntArrayRef fanouts, const std::optional<std::vector<at::Tensor>>& exclude,
    const std::optional<std::vector<std::string>>& node_type_names, c10::DeviceType device_type);

// "'paper'" when names were given, else "#1".
std::string node_type_label(const std::optional<std::vector<std::string>>& names, int64_t t);

namespace sampling {

// Number of neighbours drawn from m eligible ones with fanout k.
LMGNN_HOST_DEVICE int64_t sample_count(int64_t m, int64_t k, bool replace) {
  if (m <= 0 || k == 0) return 0;
  if (k < 0) return m;
  if (replace) return k;
  return k < m ? k : m;
}

// Whether the node takes all of its eligible neighbours (no random draws).
LMGNN_HOST_DEVICE bool takes_all(int64_t m, int64_t k, bool replace) {
  return k < 0 || (!replace && k >= m);
}

// First index i in sorted a[0, n) with a[i] >= x.
LMGNN_HOST_DEVICE int64_t lower_bound(const int64_t* a, int64_t n, int64_t x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// CSC position of the i-th eligible neighbour of a node whose range starts at p0, given
// the node's excluded positions ex[0, nx) (sorted, unique, all inside the range).
// ex[j] - p0 - j eligible positions precede ex[j]; that count is non-decreasing in j.
LMGNN_HOST_DEVICE int64_t eligible_position(int64_t p0, int64_t i, const int64_t* ex, int64_t nx) {
  int64_t lo = 0, hi = nx;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (ex[mid] - p0 - mid <= i) lo = mid + 1; else hi = mid;
  }
  return p0 + i + lo;
}

// The random word of draw c for (hop, relation, node).
LMGNN_HOST_DEVICE uint64_t draw_word(uint64_t seed, int64_t hop, int64_t num_rels, int64_t rel,
                                     int64_t node, int64_t c) {
  return philox_like(seed, static_cast<uint64_t>(hop * num_rels + rel), static_cast<uint64_t>(node),
                     static_cast<uint64_t>(c));
}

// Sorts a[0, n) ascending in place (insertion sort: n is a fanout, small).
LMGNN_HOST_DEVICE void small_sort(int64_t* a, int64_t n) {
  for (int64_t i = 1; i < n; ++i) {
    const int64_t x = a[i];
    int64_t j = i - 1;
    while (j >= 0 && a[j] > x) {
      a[j + 1] = a[j];
      --j;
    }
    a[j + 1] = x;
  }
}

// Draws the eligible indices of one node into out[0, k) (k = sample_count(...), not
// takes_all), sorted ascending. Membership in Floyd's algorithm is a scan of out[0, c):
// O(k^2) compares, cheap next to the memory traffic for the fanouts GNNs use.
LMGNN_HOST_DEVICE void draw_indices(uint64_t seed, int64_t hop, int64_t num_rels, int64_t rel,
                                    int64_t node, int64_t m, int64_t k, bool replace, int64_t* out) {
  if (replace) {
    for (int64_t c = 0; c < k; ++c) {
      out[c] = static_cast<int64_t>(
          uniform_below(draw_word(seed, hop, num_rels, rel, node, c), static_cast<uint64_t>(m)));
    }
  } else {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t j = m - k + c;
      int64_t t = static_cast<int64_t>(
          uniform_below(draw_word(seed, hop, num_rels, rel, node, c), static_cast<uint64_t>(j + 1)));
      for (int64_t q = 0; q < c; ++q) {
        if (out[q] == t) {
          t = j;
          break;
        }
      }
      out[c] = t;
    }
  }
  small_sort(out, k);
}

}  // namespace sampling
}  // namespace lmgnn
