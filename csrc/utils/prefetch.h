// Software prefetch for the CPU gather and scatter kernels. Their rows are read at random
// (x[col[e]], dz[pair_dst[p]], ...), so the hardware prefetcher cannot see them coming and
// every row costs a DRAM round trip; issuing the cache lines of the row a few edges ahead
// overlaps those round trips (the index array itself is read in order).
#pragma once

#include <algorithm>
#include <cstdint>

namespace lmgnn {

constexpr int64_t kCacheLine = 64;

// Requests every cache line of [p, p + bytes) for reading.
inline void prefetch_bytes(const void* p, int64_t bytes) {
#if defined(__GNUC__) || defined(__clang__)
  const char* c = static_cast<const char*>(p);
  for (int64_t o = 0; o < bytes; o += kCacheLine) __builtin_prefetch(c + o, 0, 3);
#else
  (void)p;
  (void)bytes;
#endif
}

// How many rows ahead to prefetch: about 2 KiB in flight, at least one row. On the uniform
// benchmark block (1 thread) prefetching took 10-15% off a 128-channel layer's fwd+bwd
// (2 and 4 KiB alike, 8 KiB no better) and made no measurable difference at 768 channels,
// whose 3 KiB rows the hardware prefetcher follows once the first line is requested.
inline int64_t prefetch_distance(int64_t row_bytes) {
  return std::clamp<int64_t>(2048 / std::max<int64_t>(1, row_bytes), 1, 16);
}

// For a loop that reads the edges k of [begin, end) in order and, at each, the row
// base + row_of(k) * row_elems: make_row_prefetch issues the first rows, step(k) the row of
// edge k + distance.
template <typename T, typename RowOf>
class RowPrefetch {
 public:
  RowPrefetch(const T* base, int64_t row_elems, int64_t begin, int64_t end, RowOf row_of)
      : base_(base), row_elems_(row_elems), end_(end),
        ahead_(prefetch_distance(row_elems * static_cast<int64_t>(sizeof(T)))), row_of_(row_of) {
    for (int64_t k = begin; k < std::min(begin + ahead_, end_); ++k) issue(k);
  }
  void step(int64_t k) const {
    if (k + ahead_ < end_) issue(k + ahead_);
  }

 private:
  void issue(int64_t k) const {
    const int64_t bytes = row_elems_ * static_cast<int64_t>(sizeof(T));
    prefetch_bytes(base_ + static_cast<int64_t>(row_of_(k)) * row_elems_, bytes);
  }
  const T* base_;
  int64_t row_elems_, end_, ahead_;
  RowOf row_of_;
};

template <typename T, typename RowOf>
RowPrefetch<T, RowOf> make_row_prefetch(const T* base, int64_t row_elems, int64_t begin, int64_t end,
                                        RowOf row_of) {
  return RowPrefetch<T, RowOf>(base, row_elems, begin, end, row_of);
}

}  // namespace lmgnn
