// CUDA kernel of lmgnn::cache_gather: one warp per id probes the hash map and copies the row
// from the cached rows (hit) or straight from the table (miss) -- a pinned host table is read
// in place over the bus (zero-copy), so hits and misses are served in the same pass.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/cache_common.h"
#include "ops/cuda/cache_cuda_utils.cuh"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

template <typename index_t, typename word_t>
__global__ void gather_kernel(const index_t* __restrict__ ids, int64_t n,
                              const int64_t* __restrict__ keys, const int64_t* __restrict__ vals,
                              int64_t mask, const word_t* __restrict__ cache,
                              const word_t* __restrict__ table, int64_t table_stride,
                              int64_t row_words, int64_t num_table_rows, int64_t cap,
                              word_t* __restrict__ out, int64_t* __restrict__ slots,
                              long long* __restrict__ bad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (i >= n) return;
  const int64_t id = ids[i];
  if (id < 0 || id >= num_table_rows) {  // never read: raised on the host after the pass
    if (threadIdx.x == 0) atomicMin(bad, static_cast<long long>(i));
    return;
  }
  const int64_t s = cache_probe(keys, vals, mask, id);
  if (threadIdx.x == 0) slots[i] = s;
  if (s < -1 || s >= cap) {  // a corrupt map: its slot lies outside the cached rows
    if (threadIdx.x == 0) atomicMin(bad + 1, static_cast<long long>(i));
    return;
  }
  const word_t* src = s >= 0 ? cache + s * row_words : table + id * table_stride;
  word_t* dst = out + i * row_words;
  for (int64_t w = threadIdx.x; w < row_words; w += blockDim.x) dst[w] = src[w];
}

std::tuple<at::Tensor, at::Tensor> cache_gather_cuda(const at::Tensor& ids_in,
                                                     const at::Tensor& keys,
                                                     const at::Tensor& vals,
                                                     const at::Tensor& rows,
                                                     const at::Tensor& table) {
  constexpr const char* op = "cache_gather";
  check_cache_gather_args(ids_in, keys, vals, rows, table);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(ids_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto ids = ids_in.contiguous();
  const int64_t n = ids.numel(), dim = rows.size(1);
  auto out = at::empty({n, dim}, rows.options());
  auto slots = at::empty({n}, ids.options().dtype(at::kLong));
  if (n == 0) return {out, slots};
  // Ids out of range and map slots outside the cached rows are flagged by the kernel (never
  // dereferenced) and raised after it: the op's one device->host read.
  auto bad = at::full({2}, n, ids.options().dtype(at::kLong));
  const char* table_ptr = table_device_ptr(op, table);
  const int64_t es = rows.element_size();
  const int64_t row_bytes = dim * es, table_stride_bytes = table.stride(0) * es;
  const int wb = copy_word_bytes(row_bytes, {table_stride_bytes},
                                 {rows.const_data_ptr(), table_ptr, out.const_data_ptr()});
  const dim3 block(32, kCacheWarps);
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_gather_cuda", [&] {
    LMGNN_WORD_SWITCH(wb, [&] {
      gather_kernel<index_t, word_t><<<blocks_for(n, kCacheWarps), block, 0, stream>>>(
          ids.const_data_ptr<index_t>(), n, keys.const_data_ptr<int64_t>(),
          vals.const_data_ptr<int64_t>(), keys.numel() - 1,
          static_cast<const word_t*>(rows.const_data_ptr()),
          reinterpret_cast<const word_t*>(table_ptr), table_stride_bytes / wb, row_bytes / wb,
          table.size(0), rows.size(0), static_cast<word_t*>(out.data_ptr()),
          slots.data_ptr<int64_t>(), reinterpret_cast<long long*>(bad.data_ptr<int64_t>()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  const auto host = bad.cpu();
  const int64_t bad_id = host.const_data_ptr<int64_t>()[0], bad_slot = host.const_data_ptr<int64_t>()[1];
  if (bad_id < n) {
    const int64_t v = ids[bad_id].item<int64_t>();
    check_id_range(op, "ids", v, v, table.size(0), "table rows");
  }
  if (bad_slot < n) {
    LMGNN_CHECK_INDEX(false, op, ": corrupt cache state: vals maps id ", ids[bad_slot].item<int64_t>(),
                      " (ids position ", bad_slot, ") to slot ", slots[bad_slot].item<int64_t>(),
                      ", outside [0, ", rows.size(0), ") (rows holds ", rows.size(0), " cached rows)");
  }
  return {out, slots};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("cache_gather", &cache_gather_cuda); }

}  // namespace lmgnn
