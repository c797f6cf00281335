// Helpers shared by the CUDA kernels of the lmgnn::cache_* operators.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include <cub/device/device_radix_sort.cuh>

#include "utils/check.h"

namespace lmgnn {

constexpr int kCacheWarps = 8;  // rows per 256-thread block: one warp per row

// Raises an IndexError naming `op` and the offending id unless every id is in [0, count).
// The only host sync of the cache ops: one (min, max) read back.
inline void check_ids_in_range_cuda(const char* op, const at::Tensor& ids, int64_t count,
                                    const char* what) {
  if (ids.numel() == 0) return;
  auto [mn, mx] = at::aminmax(ids);
  check_id_range(op, "ids", mn.item<int64_t>(), mx.item<int64_t>(), count, what);
}

// Device address of a table: a CUDA tensor, or pinned host memory mapped into the device's
// address space (unified addressing), read and written in place by the kernels.
inline char* table_device_ptr(const char* op, const at::Tensor& table) {
  if (table.is_cuda()) return static_cast<char*>(table.data_ptr());
  LMGNN_CHECK(table.device().is_cpu(), op, ": table must be on CUDA or in pinned host memory, got ",
              table.device());
  if (table.numel() == 0) return nullptr;
  cudaPointerAttributes attr{};
  C10_CUDA_CHECK(cudaPointerGetAttributes(&attr, table.data_ptr()));
  LMGNN_CHECK(attr.type == cudaMemoryTypeHost && attr.devicePointer != nullptr, op,
              ": a host table must be pinned (page-locked) to be read by the CUDA kernels; use "
              "backing='pinned' or pin_memory()");
  return static_cast<char*>(attr.devicePointer);
}

// The widest word that divides the row size and every base address / row stride given.
inline int copy_word_bytes(int64_t row_bytes, std::initializer_list<int64_t> strides,
                           std::initializer_list<const void*> ptrs) {
  for (int w : {16, 8, 4, 2}) {
    bool ok = row_bytes % w == 0;
    for (int64_t s : strides) ok = ok && s % w == 0;
    for (const void* p : ptrs) ok = ok && reinterpret_cast<uintptr_t>(p) % w == 0;
    if (ok) return w;
  }
  return 1;
}

template <int W> struct Word;
template <> struct Word<16> { using type = uint4; };
template <> struct Word<8> { using type = uint64_t; };
template <> struct Word<4> { using type = uint32_t; };
template <> struct Word<2> { using type = uint16_t; };
template <> struct Word<1> { using type = uint8_t; };

// Runs `f.template operator()<word_t>()` with the word type of `bytes`.
#define LMGNN_WORD_SWITCH(BYTES, ...)                                         \
  [&] {                                                                     \
    switch (BYTES) {                                                        \
      case 16: { using word_t = Word<16>::type; return __VA_ARGS__(); }    \
      case 8: { using word_t = Word<8>::type; return __VA_ARGS__(); }      \
      case 4: { using word_t = Word<4>::type; return __VA_ARGS__(); }      \
      case 2: { using word_t = Word<2>::type; return __VA_ARGS__(); }      \
      default: { using word_t = Word<1>::type; return __VA_ARGS__(); }     \
    }                                                                       \
  }()

// Stable radix sort of int64 (key, value) pairs on `stream`.
inline void sort_pairs_i64(const int64_t* keys_in, int64_t* keys_out, const int64_t* vals_in,
                           int64_t* vals_out, int64_t n, const at::TensorOptions& opts,
                           cudaStream_t stream) {
  LMGNN_CHECK(n < INT_MAX, "cache: at most ", INT_MAX, " items per sort, got ", n);
  if (n == 0) return;
  size_t temp_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys_in, keys_out, vals_in,
                                                 vals_out, static_cast<int>(n), 0, 64, stream));
  auto temp = at::empty({static_cast<int64_t>(temp_bytes)}, opts.dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys_in, keys_out,
                                                 vals_in, vals_out, static_cast<int>(n), 0, 64,
                                                 stream));
}

inline int64_t blocks_for(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

}  // namespace lmgnn
