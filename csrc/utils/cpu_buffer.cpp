// The CPU block cache behind empty_large (see cpu_buffer.h).
//
// Blocks are whole 2 MiB multiples mapped with mmap (2 MiB aligned, so huge pages can back
// them when asked). A request takes the smallest free block that is large enough and at
// most a quarter (or 2 MiB) larger; otherwise a new block is mapped. Freed blocks are kept,
// least recently freed evicted first, while the cache holds more than its limit
// (LMGNN_CPU_BUFFER_CACHE_MB, default 1024; 0 turns caching off).
#include "utils/cpu_buffer.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "utils/check.h"

namespace lmgnn {

bool cpu_huge_pages_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LMGNN_CPU_HUGE_PAGES");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

namespace {

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kBlockAlign = 2 * kMiB;
constexpr int64_t kMinCached = kMiB;

int64_t env_limit_bytes() {
  const char* v = std::getenv("LMGNN_CPU_BUFFER_CACHE_MB");
  if (v == nullptr || v[0] == '\0') return 1024 * kMiB;
  char* end = nullptr;
  const long long mb = std::strtoll(v, &end, 10);
  LMGNN_CHECK(end != v && *end == '\0' && mb >= 0, "LMGNN_CPU_BUFFER_CACHE_MB must be a whole number of MiB >= 0, got '",
              v, "'");
  return static_cast<int64_t>(mb) * kMiB;
}

void* map_block(int64_t bytes) {
#if defined(__linux__)
  // Over-map by one alignment unit, then unmap the ragged ends: a 2 MiB aligned block.
  const size_t span = static_cast<size_t>(bytes + kBlockAlign);
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (begin + kBlockAlign - 1) & ~static_cast<uintptr_t>(kBlockAlign - 1);
  if (aligned > begin) munmap(raw, aligned - begin);
  const uintptr_t tail = begin + span - (aligned + bytes);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
#if defined(MADV_HUGEPAGE)
  if (cpu_huge_pages_enabled()) (void)madvise(reinterpret_cast<void*>(aligned), bytes, MADV_HUGEPAGE);
#endif
  return reinterpret_cast<void*>(aligned);
#else
  return std::aligned_alloc(static_cast<size_t>(kBlockAlign), static_cast<size_t>(bytes));
#endif
}

void unmap_block(void* p, int64_t bytes) {
#if defined(__linux__)
  munmap(p, static_cast<size_t>(bytes));
#else
  (void)bytes;
  std::free(p);
#endif
}

class BlockCache {
 public:
  BlockCache() : limit_(env_limit_bytes()) {}

  // A block of at least `bytes` (a multiple of kBlockAlign): returns {pointer, size}.
  std::pair<void*, int64_t> take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> g(mu_);
      auto it = by_size_.lower_bound(bytes);
      if (it != by_size_.end() && it->first <= bytes + std::max(bytes / 4, kBlockAlign)) {
        const auto block = *it->second;
        lru_.erase(it->second);
        by_size_.erase(it);
        cached_ -= block.second;
        in_use_ += block.second;
        ++hits_;
        return block;
      }
      ++misses_;
    }
    void* p = map_block(bytes);
    if (p == nullptr) {  // out of address space or memory: give the cached blocks back, retry once
      empty();
      p = map_block(bytes);
    }
    if (p == nullptr) throw std::bad_alloc();
    std::lock_guard<std::mutex> g(mu_);
    in_use_ += bytes;
    return {p, bytes};
  }

  void give_back(void* p, int64_t bytes) {
    std::list<std::pair<void*, int64_t>> evicted;
    {
      std::lock_guard<std::mutex> g(mu_);
      in_use_ -= bytes;
      lru_.emplace_back(p, bytes);
      by_size_.emplace(bytes, std::prev(lru_.end()));
      cached_ += bytes;
      while (cached_ > limit_ && !lru_.empty()) evict_oldest(evicted);
    }
    for (const auto& [q, n] : evicted) unmap_block(q, n);
  }

  void empty() {
    std::list<std::pair<void*, int64_t>> evicted;
    {
      std::lock_guard<std::mutex> g(mu_);
      while (!lru_.empty()) evict_oldest(evicted);
    }
    for (const auto& [q, n] : evicted) unmap_block(q, n);
  }

  CpuBufferCacheInfo info() {
    std::lock_guard<std::mutex> g(mu_);
    return {in_use_, cached_, limit_, hits_, misses_};
  }

 private:
  using Lru = std::list<std::pair<void*, int64_t>>;

  // Moves the least recently freed block to `out` (mu_ held).
  void evict_oldest(Lru& out) {
    const auto oldest = lru_.begin();
    auto [lo, hi] = by_size_.equal_range(oldest->second);
    for (auto it = lo; it != hi; ++it) {
      if (it->second == oldest) {
        by_size_.erase(it);
        break;
      }
    }
    cached_ -= oldest->second;
    out.splice(out.end(), lru_, oldest);
  }

  std::mutex mu_;
  Lru lru_;                                   // free blocks, least recently freed first
  std::multimap<int64_t, Lru::iterator> by_size_;
  int64_t limit_;
  int64_t in_use_ = 0, cached_ = 0, hits_ = 0, misses_ = 0;
};

// Never destroyed: tensors may die (and give their blocks back) during process exit.
BlockCache& cache() {
  static BlockCache* c = new BlockCache();
  return *c;
}

void report(void* p, int64_t delta) {
  if (c10::memoryProfilingEnabled()) {
    const auto i = cache().info();
    c10::reportMemoryUsageToProfiler(p, delta, static_cast<size_t>(i.in_use_bytes),
                                     static_cast<size_t>(i.in_use_bytes + i.cached_bytes),
                                     c10::Device(c10::DeviceType::CPU));
  }
}

struct Block {
  void* ptr;
  int64_t bytes;
};

void free_block(void* ctx) {
  const auto* b = static_cast<Block*>(ctx);
  report(b->ptr, -b->bytes);
  cache().give_back(b->ptr, b->bytes);
  delete b;
}

// The allocator of the tensors empty_large returns: requests of 1 MiB and more from the
// block cache, smaller ones from torch's CPU allocator. Their storages are ordinary
// (resizable: a resize takes a new block from here and copies).
class CachedCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    static const bool caching = cache().info().limit_bytes > 0;
    const auto bytes = static_cast<int64_t>(n);
    if (bytes < kMinCached || !caching) return c10::GetDefaultCPUAllocator()->allocate(n);
    const int64_t rounded = (bytes + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
    const auto [p, got] = cache().take(rounded);
    report(p, got);
    return {p, new Block{p, got}, &free_block, c10::Device(c10::DeviceType::CPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (!options.device().is_cpu()) return at::empty(sizes, options);
  static auto* allocator = new CachedCpuAllocator();  // never destroyed, as the cache
  return at::Tensor(at::detail::empty_generic(sizes, allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                              c10::typeMetaToScalarType(options.dtype()), std::nullopt));
}

at::Tensor contiguous_large(const at::Tensor& t) {
  if (t.is_contiguous()) return t;
  return empty_large(t.sizes(), t.options()).copy_(t);
}

CpuBufferCacheInfo cpu_buffer_cache_info() { return cache().info(); }

void empty_cpu_buffer_cache() { cache().empty(); }

}  // namespace lmgnn
