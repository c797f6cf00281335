// CUDA kernel of lmgnn::cache_update: a stable sort of (id, position) picks the last
// occurrence of each id; one warp per winner writes its row to the table (in place, also
// when the table is pinned host memory), to the cached copy, and its version.
#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/cache_common.h"
#include "ops/cuda/cache_cuda_utils.cuh"

namespace lmgnn {
namespace {

template <typename word_t>
__global__ void update_kernel(const int64_t* __restrict__ sorted_ids,
                              const int64_t* __restrict__ pos, int64_t n,
                              const word_t* __restrict__ values, int64_t row_words, int64_t step,
                              word_t* __restrict__ table, int64_t* __restrict__ versions,
                              const int64_t* __restrict__ keys, const int64_t* __restrict__ vals,
                              int64_t mask, word_t* __restrict__ cache) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.y) + threadIdx.y;
  if (j >= n) return;
  const int64_t r = sorted_ids[j];
  if (j + 1 < n && sorted_ids[j + 1] == r) return;  // a later occurrence wins
  const int64_t i = pos[j];
  const int64_t s = cache_probe(keys, vals, mask, r);
  if (threadIdx.x == 0) versions[r] = step;
  const word_t* src = values + i * row_words;
  for (int64_t w = threadIdx.x; w < row_words; w += blockDim.x) {
    const word_t x = src[w];
    table[r * row_words + w] = x;
    if (s >= 0) cache[s * row_words + w] = x;
  }
}

// bad[0]: first position with an id outside [0, num_table_rows); bad[1]: first position
// whose map slot lies outside [-1, cap) (a corrupt map); n when there is none.
__global__ void update_check_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t num_table_rows,
                                    const int64_t* __restrict__ keys, const int64_t* __restrict__ vals,
                                    int64_t mask, int64_t cap, long long* __restrict__ bad) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int64_t id = ids[i];
  if (id < 0 || id >= num_table_rows) {
    atomicMin(bad, static_cast<long long>(i));
    return;
  }
  const int64_t s = cache_probe(keys, vals, mask, id);
  if (s < -1 || s >= cap) atomicMin(bad + 1, static_cast<long long>(i));
}

void cache_update_cuda(const at::Tensor& ids_in, const at::Tensor& values_in, int64_t step,
                       const at::Tensor& table, const at::Tensor& versions,
                       const at::Tensor& keys, const at::Tensor& vals, const at::Tensor& rows) {
  constexpr const char* op = "cache_update";
  check_cache_update_args(ids_in, values_in, table, versions, keys, vals, rows);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(ids_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto ids = ids_in.to(at::kLong).contiguous();
  const auto values = values_in.contiguous();
  const int64_t n = ids.numel();
  if (n == 0) return;
  {  // Validate before writing anything: the op's one device->host read.
    auto bad = at::full({2}, n, ids.options());
    update_check_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(
        ids.const_data_ptr<int64_t>(), n, table.size(0), keys.const_data_ptr<int64_t>(),
        vals.const_data_ptr<int64_t>(), keys.numel() - 1, rows.size(0),
        reinterpret_cast<long long*>(bad.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const auto host = bad.cpu();
    const int64_t bad_id = host.const_data_ptr<int64_t>()[0], bad_slot = host.const_data_ptr<int64_t>()[1];
    if (bad_id < n) {
      const int64_t v = ids[bad_id].item<int64_t>();
      check_id_range(op, "ids", v, v, table.size(0), "table rows");
    }
    if (bad_slot < n) {
      const int64_t v = ids[bad_slot].item<int64_t>();
      LMGNN_CHECK_INDEX(false, op, ": corrupt cache state: vals maps id ", v, " (ids position ",
                        bad_slot, ") to a slot outside [0, ", rows.size(0), ") (rows holds ",
                        rows.size(0), " cached rows)");
    }
  }
  char* table_ptr = table_device_ptr(op, table);

  auto opts = ids.options();
  auto iota = at::arange(n, opts);
  auto sorted_ids = at::empty({n}, opts);
  auto pos = at::empty({n}, opts);
  sort_pairs_i64(ids.const_data_ptr<int64_t>(), sorted_ids.data_ptr<int64_t>(),
                 iota.const_data_ptr<int64_t>(), pos.data_ptr<int64_t>(), n, opts, stream);

  const int64_t row_bytes = table.size(1) * table.element_size();
  const int wb = copy_word_bytes(row_bytes, {},
                                 {values.const_data_ptr(), table_ptr, rows.const_data_ptr()});
  const dim3 block(32, kCacheWarps);
  LMGNN_WORD_SWITCH(wb, [&] {
    update_kernel<word_t><<<blocks_for(n, kCacheWarps), block, 0, stream>>>(
        sorted_ids.const_data_ptr<int64_t>(), pos.const_data_ptr<int64_t>(), n,
        static_cast<const word_t*>(values.const_data_ptr()), row_bytes / wb, step,
        reinterpret_cast<word_t*>(table_ptr), versions.data_ptr<int64_t>(),
        keys.const_data_ptr<int64_t>(), vals.const_data_ptr<int64_t>(), keys.numel() - 1,
        static_cast<word_t*>(rows.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("cache_update", &cache_update_cuda); }

}  // namespace lmgnn
