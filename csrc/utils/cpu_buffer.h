// Large CPU buffers of the aggregation kernels, served from a cache of freed blocks.
//
// A kernel's large buffers (aggregates, gradients, outputs: tens to hundreds of MiB per
// call) would otherwise be fresh mappings on every call: glibc serves requests over its
// mmap threshold (at most 32 MiB) with mmap and unmaps them on free, so the kernel touches
// every 4 KiB page of every buffer for the first time, one page fault each (a 768-channel
// layer's fwd+bwd took ~95,000 faults per call, ~30% of its time, on the benchmark VM).
// The cache keeps freed blocks (like torch's CUDA caching allocator) and hands them out
// again; the tensors it returns are ordinary CPU tensors (own allocator, resizable storage)
// whose memory goes back to the cache when they die. Allocations and frees are reported to
// the torch profiler, so memory profiles (and the benchmarks' peak memory) see them.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lmgnn {

// Whether cached blocks ask for transparent huge pages: only with LMGNN_CPU_HUGE_PAGES=1.
bool cpu_huge_pages_enabled();

// An uninitialized tensor; on the CPU, of 1 MiB or more, from the block cache (other
// devices: at::empty, which on CUDA is torch's caching allocator already).
at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options);

// `t` if contiguous, else a contiguous copy in an empty_large buffer.
at::Tensor contiguous_large(const at::Tensor& t);

struct CpuBufferCacheInfo {
  int64_t in_use_bytes;   // blocks held by live tensors
  int64_t cached_bytes;   // freed blocks kept for reuse
  int64_t limit_bytes;    // the most cached_bytes may reach (LMGNN_CPU_BUFFER_CACHE_MB)
  int64_t hits;           // requests served from the cache
  int64_t misses;         // requests that mapped a new block
};

CpuBufferCacheInfo cpu_buffer_cache_info();

// Unmaps every cached (free) block; blocks in use are unaffected.
void empty_cpu_buffer_cache();

}  // namespace lmgnn
