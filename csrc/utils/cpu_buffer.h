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

// Whether empty_large asks for huge pages: only with LMGNN_CPU_HUGE_PAGES=1 (read once).
inline bool cpu_huge_pages_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LMGNN_CPU_HUGE_PAGES");
    return v != nullptr && v[0] == '1';
  }();
  return on;
}

// at::empty, and with LMGNN_CPU_HUGE_PAGES=1, for buffers of 8 MiB and more, a request
// (madvise MADV_HUGEPAGE, Linux) that the kernel back them with transparent huge pages.
// Such a buffer is a fresh mapping on every call (glibc serves it with mmap), and touching
// it page by page costs one fault per 4 KiB; with huge pages, one per 2 MiB. Off by
// default: on the 2-core VM the benchmarks ran on, whose host takes back free 2 MiB guest
// blocks (virtio-balloon free page reporting, order 9), a huge page often came from such a
// block and faulted at the host: a 768-channel layer interleaved with other work took
// 204-225 or 427-564 ms with the request, 230-307 ms without (alone in a loop: ~20% faster
// with it). Only advice: where THP is off, or the call fails, nothing changes.
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
