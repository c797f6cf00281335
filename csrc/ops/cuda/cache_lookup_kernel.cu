// CUDA kernel of lmgnn::cache_lookup: one thread per id probes the hash map.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/cache_common.h"
#include "ops/cuda/cache_cuda_utils.cuh"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

template <typename index_t>
__global__ void lookup_kernel(const index_t* __restrict__ ids, int64_t n,
                              const int64_t* __restrict__ keys, const int64_t* __restrict__ vals,
                              int64_t mask, int64_t* __restrict__ slots) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) slots[i] = cache_probe(keys, vals, mask, static_cast<int64_t>(ids[i]));
}

at::Tensor cache_lookup_cuda(const at::Tensor& ids_in, const at::Tensor& keys,
                             const at::Tensor& vals, int64_t num_rows) {
  constexpr const char* op = "cache_lookup";
  check_cache_lookup_args(ids_in, keys, vals, num_rows);
  check_device_type(op, ids_in, "ids", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(ids_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto ids = ids_in.contiguous();
  const int64_t n = ids.numel();
  auto slots = at::empty({n}, ids.options().dtype(at::kLong));
  if (n == 0) return slots;
  check_ids_in_range_cuda(op, ids, num_rows, "num_rows");
  LMGNN_DISPATCH_INDEX(ids.scalar_type(), "cache_lookup_cuda", [&] {
    lookup_kernel<index_t><<<blocks_for(n, 256), 256, 0, stream>>>(
        ids.const_data_ptr<index_t>(), n, keys.const_data_ptr<int64_t>(),
        vals.const_data_ptr<int64_t>(), keys.numel() - 1, slots.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return slots;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("cache_lookup", &cache_lookup_cuda); }

}  // namespace lmgnn
