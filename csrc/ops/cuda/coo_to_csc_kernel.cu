// CUDA kernel of lmgnn::coo_to_csc: a stable radix sort of (dst, position) pairs with cub,
// then indptr by binary search over the sorted keys. One host sync: the (min, max) of dst,
// to reject out-of-range ids before they index anything.
#include <ATen/core/Tensor.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cub/device/device_radix_sort.cuh>

#include "ops/coo_to_csc.h"
#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

constexpr int kThreads = 256;

template <typename index_t>
__global__ void indptr_kernel(const index_t* __restrict__ sorted_dst, int64_t E, int64_t num_dst,
                              int64_t* __restrict__ indptr) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v > num_dst) return;
  // lower_bound(sorted_dst, v)
  int64_t lo = 0, hi = E;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (static_cast<int64_t>(sorted_dst[mid]) < v) lo = mid + 1; else hi = mid;
  }
  indptr[v] = lo;
}

template <typename index_t>
__global__ void gather_kernel(const index_t* __restrict__ src, const int64_t* __restrict__ perm,
                              int64_t E, index_t* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < E) out[i] = src[perm[i]];
}

int end_bit_for(int64_t num_dst) {
  int bits = 1;
  while (bits < 63 && (int64_t{1} << bits) <= num_dst) ++bits;
  return bits;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> coo_to_csc_cuda(const at::Tensor& src_in,
                                                               const at::Tensor& dst_in,
                                                               int64_t num_dst) {
  check_coo_to_csc_args(src_in, dst_in, num_dst);
  check_device_type("coo_to_csc", src_in, "src", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(src_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto src = src_in.contiguous();
  const auto dst = dst_in.contiguous();
  const int64_t E = src.numel();

  auto indptr = at::zeros({num_dst + 1}, src.options().dtype(at::kLong));
  auto indices = at::empty({E}, src.options());
  auto perm = at::empty({E}, src.options().dtype(at::kLong));
  if (E == 0) return {indptr, indices, perm};

  {
    auto [mn, mx] = at::aminmax(dst);
    const int64_t lo = mn.item<int64_t>(), hi = mx.item<int64_t>();
    check_id_range("coo_to_csc", "dst", lo, hi, num_dst, "num_dst");
  }

  LMGNN_DISPATCH_INDEX(src.scalar_type(), "coo_to_csc_cuda", [&] {
    auto iota = at::arange(E, src.options().dtype(at::kLong));
    auto sorted_dst = at::empty_like(dst);
    size_t temp_bytes = 0;
    const int end_bit = end_bit_for(num_dst);
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        nullptr, temp_bytes, dst.const_data_ptr<index_t>(), sorted_dst.data_ptr<index_t>(),
        iota.const_data_ptr<int64_t>(), perm.data_ptr<int64_t>(), E, 0, end_bit, stream));
    auto temp = at::empty({static_cast<int64_t>(temp_bytes)}, src.options().dtype(at::kByte));
    C10_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        temp.data_ptr(), temp_bytes, dst.const_data_ptr<index_t>(), sorted_dst.data_ptr<index_t>(),
        iota.const_data_ptr<int64_t>(), perm.data_ptr<int64_t>(), E, 0, end_bit, stream));

    const int64_t blocks_ptr = (num_dst + 1 + kThreads - 1) / kThreads;
    indptr_kernel<index_t><<<blocks_ptr, kThreads, 0, stream>>>(
        sorted_dst.const_data_ptr<index_t>(), E, num_dst, indptr.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t blocks_e = (E + kThreads - 1) / kThreads;
    gather_kernel<index_t><<<blocks_e, kThreads, 0, stream>>>(
        src.const_data_ptr<index_t>(), perm.const_data_ptr<int64_t>(), E,
        indices.data_ptr<index_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {indptr, indices, perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) { m.impl("coo_to_csc", &coo_to_csc_cuda); }

}  // namespace lmgnn
