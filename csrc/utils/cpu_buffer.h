// Large CPU buffers that a kernel writes in full right after allocating them.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lmgnn {

// Whether empty_large asks for huge pages: on unless LMGNN_CPU_HUGE_PAGES=0 (read once).
inline bool cpu_huge_pages_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LMGNN_CPU_HUGE_PAGES");
    return v == nullptr || v[0] != '0';
  }();
  return on;
}

// at::empty, and for buffers of 8 MiB and more a request (madvise MADV_HUGEPAGE, Linux) that
// the kernel back them with transparent huge pages. Such a buffer is a fresh mapping on
// every call (glibc serves it with mmap), and touching it page by page costs one fault per
// 4 KiB -- about as long as the kernel's own pass over the buffer; with huge pages, one per
// 2 MiB. Only advice: where THP is off, or the call fails, nothing changes. On a virtual
// machine whose host takes back free guest memory (free page reporting), a huge page can
// cost a slow host fault instead; LMGNN_CPU_HUGE_PAGES=0 turns the request off.
inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t bytes = t.nbytes();
  if (t.device().is_cpu() && bytes >= 4 * kHuge && cpu_huge_pages_enabled()) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t hi = (begin + bytes) & ~(kHuge - 1);
    if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
  }
#endif
  return t;
}

}  // namespace lmgnn
