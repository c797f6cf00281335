// CUDA kernels of lmgnn::rgcn_aggregate and lmgnn::rgcn_aggregate_backward. Mirrors the CPU
// kernel step by step (layout, orders, cost model: ops/rgcn_aggregate.cpp):
//   per-pair sums (one block per pair), a grouped GEMM over the relation segments of the
//   pair buffer that reads the segment offsets from device memory (tile offsets per
//   relation are computed on the device, the grid is sized by the bound P/TM + R, so no
//   host sync), the per-destination reduction in relation order (no atomics), and
//   at::mm for the dense products (root term, bases; order 3: one GEMM over the dense
//   [N_dst, R * F_in] aggregate, written by one block per destination). Ids are range-checked in-kernel
//   (CUDA_KERNEL_ASSERT), as is dst_ptr/dst_pairs against pair_dst wherever a kernel reduces
//   per destination; the host checks shapes, dtypes and devices, and under
//   LMGNN_CHECK_INPUTS=full every invariant the CPU kernel checks (make_layout).
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include "ops/rgcn_aggregate.h"
#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 16;

__device__ __forceinline__ int64_t upper_bound_dev(const int64_t* a, int64_t n, int64_t v) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) >> 1;
    if (a[mid] <= v) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// agg[p] = norm_p * sum_{e in pair p} x[col[e]]   (one block per pair)
template <typename scalar_t, typename index_t>
__global__ void segment_sum_kernel(const scalar_t* __restrict__ x, const index_t* __restrict__ col,
                                   const int64_t* __restrict__ pair_ptr, int64_t P, int64_t E, int64_t F,
                                   int64_t N_src, bool mean, scalar_t* __restrict__ agg) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t p = blockIdx.x;
  if (p >= P) return;
  const int64_t b = pair_ptr[p], e = pair_ptr[p + 1];
  CUDA_KERNEL_ASSERT(b >= 0 && b <= e && e <= E);
  const acc_t s = (mean && e > b) ? acc_t(1) / static_cast<acc_t>(e - b) : acc_t(1);
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    acc_t acc = 0;
    for (int64_t k = b; k < e; ++k) {
      const int64_t j = col[k];
      CUDA_KERNEL_ASSERT(j >= 0 && j < N_src);
      acc += static_cast<acc_t>(x[j * F + f]);
    }
    agg[p * F + f] = static_cast<scalar_t>(acc * s);
  }
}

// out[i] = base[i] + sum_{p in pairs of i} y[p]   (one block per destination)
template <typename scalar_t, typename index_t>
__global__ void dst_reduce_kernel(const scalar_t* __restrict__ y, const int64_t* __restrict__ dst_ptr,
                                  const index_t* __restrict__ dst_pairs, const index_t* __restrict__ pair_dst,
                                  const scalar_t* __restrict__ base, bool base_is_row, int64_t N_dst,
                                  int64_t P, int64_t F, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = blockIdx.x;
  if (i >= N_dst) return;
  CUDA_KERNEL_ASSERT(dst_ptr[i] >= 0 && dst_ptr[i] <= dst_ptr[i + 1] && dst_ptr[i + 1] <= P);
  CUDA_KERNEL_ASSERT(i != 0 || (dst_ptr[0] == 0 && dst_ptr[N_dst] == P));
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    acc_t acc = base ? static_cast<acc_t>(base[(base_is_row ? 0 : i * F) + f]) : acc_t(0);
    for (int64_t k = dst_ptr[i]; k < dst_ptr[i + 1]; ++k) {
      const int64_t p = dst_pairs[k];
      CUDA_KERNEL_ASSERT(p >= 0 && p < P);
      // the pairs of destination i, each once (increasing): dst_pairs agrees with pair_dst
      CUDA_KERNEL_ASSERT(static_cast<int64_t>(pair_dst[p]) == i &&
                         (k == dst_ptr[i] || p > static_cast<int64_t>(dst_pairs[k - 1])));
      acc += static_cast<acc_t>(y[p * F + f]);
    }
    out[i * F + f] = static_cast<scalar_t>(acc);
  }
}

// z[i, b, :] = sum_{p in pairs of i} comp[r_p, b] * agg[p]
template <typename scalar_t, typename index_t>
__global__ void basis_combine_kernel(const scalar_t* __restrict__ agg, const scalar_t* __restrict__ comp,
                                     const int64_t* __restrict__ rel_ptr, const int64_t* __restrict__ dst_ptr,
                                     const index_t* __restrict__ dst_pairs, const index_t* __restrict__ pair_dst,
                                     int64_t R, int64_t N_dst, int64_t P, int64_t B, int64_t F,
                                     scalar_t* __restrict__ z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = blockIdx.x;
  if (i >= N_dst) return;
  CUDA_KERNEL_ASSERT(dst_ptr[i] >= 0 && dst_ptr[i] <= dst_ptr[i + 1] && dst_ptr[i + 1] <= P);
  CUDA_KERNEL_ASSERT(i != 0 || (dst_ptr[0] == 0 && dst_ptr[N_dst] == P));
  for (int64_t q = threadIdx.x; q < B * F; q += blockDim.x) {
    const int64_t bb = q / F, f = q % F;
    acc_t acc = 0;
    for (int64_t k = dst_ptr[i]; k < dst_ptr[i + 1]; ++k) {
      const int64_t p = dst_pairs[k];
      CUDA_KERNEL_ASSERT(p >= 0 && p < P);
      CUDA_KERNEL_ASSERT(static_cast<int64_t>(pair_dst[p]) == i &&
                         (k == dst_ptr[i] || p > static_cast<int64_t>(dst_pairs[k - 1])));
      const int64_t r = upper_bound_dev(rel_ptr, R + 1, p) - 1;
      acc += static_cast<acc_t>(comp[r * B + bb]) * static_cast<acc_t>(agg[p * F + f]);
    }
    z[i * B * F + q] = static_cast<scalar_t>(acc);
  }
}

// dx[j] = sum over the edges of source j (pair p) of norm_p * dagg[p]
template <typename scalar_t, typename index_t>
__global__ void src_scatter_kernel(const scalar_t* __restrict__ dagg, const int64_t* __restrict__ src_ptr,
                                   const index_t* __restrict__ src_pairs, const int64_t* __restrict__ pair_ptr,
                                   int64_t N_src, int64_t P, int64_t E, int64_t F, bool mean,
                                   scalar_t* __restrict__ dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t j = blockIdx.x;
  if (j >= N_src) return;
  CUDA_KERNEL_ASSERT(src_ptr[j] >= 0 && src_ptr[j] <= src_ptr[j + 1] && src_ptr[j + 1] <= E);
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    acc_t acc = 0;
    for (int64_t k = src_ptr[j]; k < src_ptr[j + 1]; ++k) {
      const int64_t p = src_pairs[k];
      CUDA_KERNEL_ASSERT(p >= 0 && p < P);
      const int64_t cnt = pair_ptr[p + 1] - pair_ptr[p];
      const acc_t s = (mean && cnt > 0) ? acc_t(1) / static_cast<acc_t>(cnt) : acc_t(1);
      acc += s * static_cast<acc_t>(dagg[p * F + f]);
    }
    dx[j * F + f] = static_cast<scalar_t>(acc);
  }
}

// Order 3: z[i, r * F : (r + 1) * F] = norm_{i,r} * sum_{j in N_r(i)} x[j], zeros where the
// pair (r, i) is empty (one block per destination; every element of z written once).
template <typename scalar_t, typename index_t>
__global__ void dense_sum_kernel(const scalar_t* __restrict__ x, const index_t* __restrict__ col,
                                 const int64_t* __restrict__ pair_ptr, const int64_t* __restrict__ rel_ptr,
                                 const int64_t* __restrict__ dst_ptr, const index_t* __restrict__ dst_pairs,
                                 const index_t* __restrict__ pair_dst, int64_t R, int64_t N_dst, int64_t P,
                                 int64_t E, int64_t F, int64_t N_src, bool mean, scalar_t* __restrict__ z) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t i = blockIdx.x;
  if (i >= N_dst) return;
  CUDA_KERNEL_ASSERT(dst_ptr[i] >= 0 && dst_ptr[i] <= dst_ptr[i + 1] && dst_ptr[i + 1] <= P);
  CUDA_KERNEL_ASSERT(i != 0 || (dst_ptr[0] == 0 && dst_ptr[N_dst] == P));
  scalar_t* zrow = z + i * R * F;
  int64_t next = 0;  // first slot not yet written
  for (int64_t k = dst_ptr[i]; k < dst_ptr[i + 1]; ++k) {
    const int64_t p = dst_pairs[k];
    CUDA_KERNEL_ASSERT(p >= 0 && p < P);
    CUDA_KERNEL_ASSERT(static_cast<int64_t>(pair_dst[p]) == i);
    const int64_t r = upper_bound_dev(rel_ptr, R + 1, p) - 1;
    CUDA_KERNEL_ASSERT(r >= next && r < R);
    const int64_t b = pair_ptr[p], e = pair_ptr[p + 1];
    CUDA_KERNEL_ASSERT(b >= 0 && b <= e && e <= E);
    const acc_t s = (mean && e > b) ? acc_t(1) / static_cast<acc_t>(e - b) : acc_t(1);
    for (int64_t q = threadIdx.x; q < (r - next) * F; q += blockDim.x) zrow[next * F + q] = scalar_t(0);
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
      acc_t acc = 0;
      for (int64_t t = b; t < e; ++t) {
        const int64_t j = col[t];
        CUDA_KERNEL_ASSERT(j >= 0 && j < N_src);
        acc += static_cast<acc_t>(x[j * F + f]);
      }
      zrow[r * F + f] = static_cast<scalar_t>(acc * s);
    }
    next = r + 1;
  }
  for (int64_t q = threadIdx.x; q < (R - next) * F; q += blockDim.x) zrow[next * F + q] = scalar_t(0);
}

// Order 3 backward: dx[j] = sum over the edges of source j (pair p = (r, i)) of norm_p * dz[i, r]
template <typename scalar_t, typename index_t>
__global__ void src_scatter_dense_kernel(const scalar_t* __restrict__ dz, const int64_t* __restrict__ src_ptr,
                                         const index_t* __restrict__ src_pairs, const int64_t* __restrict__ pair_ptr,
                                         const int64_t* __restrict__ rel_ptr, const index_t* __restrict__ pair_dst,
                                         int64_t R, int64_t N_src, int64_t N_dst, int64_t P, int64_t E, int64_t F,
                                         bool mean, scalar_t* __restrict__ dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t j = blockIdx.x;
  if (j >= N_src) return;
  CUDA_KERNEL_ASSERT(src_ptr[j] >= 0 && src_ptr[j] <= src_ptr[j + 1] && src_ptr[j + 1] <= E);
  for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
    acc_t acc = 0;
    for (int64_t k = src_ptr[j]; k < src_ptr[j + 1]; ++k) {
      const int64_t p = src_pairs[k];
      CUDA_KERNEL_ASSERT(p >= 0 && p < P);
      const int64_t i = pair_dst[p];
      CUDA_KERNEL_ASSERT(i >= 0 && i < N_dst);
      const int64_t r = upper_bound_dev(rel_ptr, R + 1, p) - 1;
      const int64_t cnt = pair_ptr[p + 1] - pair_ptr[p];
      const acc_t s = (mean && cnt > 0) ? acc_t(1) / static_cast<acc_t>(cnt) : acc_t(1);
      acc += s * static_cast<acc_t>(dz[(i * R + r) * F + f]);
    }
    dx[j * F + f] = static_cast<scalar_t>(acc);
  }
}

// Order 2 backward per pair: dagg[p] = sum_b comp[r,b] dz[i_p,b];  dots[p,b] = <agg[p], dz[i_p,b]>
template <typename scalar_t, typename index_t>
__global__ void basis_pair_grads_kernel(const scalar_t* __restrict__ dz, const scalar_t* __restrict__ agg,
                                        const scalar_t* __restrict__ comp, const int64_t* __restrict__ rel_ptr,
                                        const index_t* __restrict__ pair_dst, int64_t R, int64_t P,
                                        int64_t N_dst, int64_t B, int64_t F, scalar_t* __restrict__ dagg,
                                        at::opmath_type<scalar_t>* __restrict__ dots) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t red[kThreads];
  const int64_t p = blockIdx.x;
  if (p >= P) return;
  const int64_t r = upper_bound_dev(rel_ptr, R + 1, p) - 1;
  const int64_t i = pair_dst[p];
  CUDA_KERNEL_ASSERT(i >= 0 && i < N_dst);
  const scalar_t* zrow = dz + i * B * F;
  if (dagg) {
    for (int64_t f = threadIdx.x; f < F; f += blockDim.x) {
      acc_t acc = 0;
      for (int64_t bb = 0; bb < B; ++bb)
        acc += static_cast<acc_t>(comp[r * B + bb]) * static_cast<acc_t>(zrow[bb * F + f]);
      dagg[p * F + f] = static_cast<scalar_t>(acc);
    }
  }
  if (dots) {
    for (int64_t bb = 0; bb < B; ++bb) {
      acc_t d = 0;
      for (int64_t f = threadIdx.x; f < F; f += blockDim.x)
        d += static_cast<acc_t>(agg[p * F + f]) * static_cast<acc_t>(zrow[bb * F + f]);
      red[threadIdx.x] = d;
      __syncthreads();
      for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
        __syncthreads();
      }
      if (threadIdx.x == 0) dots[p * B + bb] = red[0];
      __syncthreads();
    }
  }
}

// dcomp[r, b] = sum_{p in relation r} dots[p, b]  (one thread per (r, b), in pair order)
template <typename acc_t>
__global__ void relation_sum_kernel(const acc_t* __restrict__ dots, const int64_t* __restrict__ rel_ptr,
                                    int64_t R, int64_t B, acc_t* __restrict__ out) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= R * B) return;
  const int64_t r = q / B, bb = q % B;
  acc_t acc = 0;
  for (int64_t p = rel_ptr[r]; p < rel_ptr[r + 1]; ++p) acc += dots[p * B + bb];
  out[q] = acc;
}

// tile_ptr[r] = sum_{r' < r} ceil(P_r' / kTile) — computed on the device (R is small).
// Also checks rel_ptr (0, non-decreasing, ends at P) before any GEMM reads rows through it.
__global__ void tile_ptr_kernel(const int64_t* __restrict__ rel_ptr, int64_t R, int64_t P,
                                int64_t* __restrict__ tile_ptr) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  CUDA_KERNEL_ASSERT(rel_ptr[0] == 0 && rel_ptr[R] == P);
  tile_ptr[0] = 0;
  for (int64_t r = 0; r < R; ++r) {
    CUDA_KERNEL_ASSERT(rel_ptr[r] <= rel_ptr[r + 1]);
    tile_ptr[r + 1] = tile_ptr[r] + (rel_ptr[r + 1] - rel_ptr[r] + kTile - 1) / kTile;
  }
}

// Grouped GEMM over relation row segments: C[rows of g] = A[rows of g] @ B_g with
// B_g(k, n) = Bw[g * sbg + k * sbk + n * sbn]. A [P, K], C [P, N] row-major.
// grid.x: row tiles (bound ceil(P / kTile) + R; surplus blocks exit), grid.y: column tiles.
template <typename scalar_t>
__global__ void grouped_gemm_rows_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ Bw,
                                         int64_t sbg, int64_t sbk, int64_t sbn,
                                         const int64_t* __restrict__ rel_ptr, const int64_t* __restrict__ tile_ptr,
                                         int64_t R, int64_t K, int64_t N, scalar_t* __restrict__ C) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t As[kTile][kTile + 1];
  __shared__ acc_t Bs[kTile][kTile + 1];
  const int64_t t = blockIdx.x;
  if (t >= tile_ptr[R]) return;  // uniform over the block
  const int64_t g = upper_bound_dev(tile_ptr, R + 1, t) - 1;
  const int64_t row0 = rel_ptr[g] + (t - tile_ptr[g]) * kTile, row_end = rel_ptr[g + 1];
  const int64_t col0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int ty = threadIdx.y, tx = threadIdx.x;
  const int64_t row = row0 + ty, c = col0 + tx;
  acc_t acc = 0;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    As[ty][tx] = (row < row_end && k0 + tx < K) ? static_cast<acc_t>(A[row * K + k0 + tx]) : acc_t(0);
    Bs[ty][tx] = (k0 + ty < K && c < N) ? static_cast<acc_t>(Bw[g * sbg + (k0 + ty) * sbk + c * sbn]) : acc_t(0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += As[ty][kk] * Bs[kk][tx];
    __syncthreads();
  }
  if (row < row_end && c < N) C[row * N + c] = static_cast<scalar_t>(acc);
}

// Grouped GEMM with the K dimension segmented by relation: C_g = A[rows of g]^T @ G[rows of g]
// (A [P, M], G [P, N], C [R, M, N]); grid (N tiles, M tiles, R). Empty relations write zeros.
template <typename scalar_t>
__global__ void grouped_gemm_ksum_kernel(const scalar_t* __restrict__ A, const scalar_t* __restrict__ G,
                                         const int64_t* __restrict__ rel_ptr, int64_t P, int64_t M,
                                         int64_t N, scalar_t* __restrict__ C) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t As[kTile][kTile + 1];  // [m][k]
  __shared__ acc_t Bs[kTile][kTile + 1];  // [k][n]
  const int64_t g = blockIdx.z;
  const int64_t lo = rel_ptr[g], hi = rel_ptr[g + 1];
  CUDA_KERNEL_ASSERT(lo >= 0 && lo <= hi && hi <= P);
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int ty = threadIdx.y, tx = threadIdx.x;
  acc_t acc = 0;
  for (int64_t k0 = lo; k0 < hi; k0 += kTile) {
    As[ty][tx] = (k0 + tx < hi && m0 + ty < M) ? static_cast<acc_t>(A[(k0 + tx) * M + m0 + ty]) : acc_t(0);
    Bs[ty][tx] = (k0 + ty < hi && n0 + tx < N) ? static_cast<acc_t>(G[(k0 + ty) * N + n0 + tx]) : acc_t(0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += As[ty][kk] * Bs[kk][tx];
    __syncthreads();
  }
  if (m0 + ty < M && n0 + tx < N) C[g * M * N + (m0 + ty) * N + n0 + tx] = static_cast<scalar_t>(acc);
}

struct Layout {
  at::Tensor col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs;
  int64_t E, P, R, N_dst, N_src;
};

// Under LMGNN_CHECK_INPUTS=full the layout is copied to the host and checked there with
// the CPU kernels' checks (check_rgcn_layout: clear errors for every inconsistency, at the
// cost of a sync); otherwise the kernels assert what they read (CUDA_KERNEL_ASSERT).
Layout make_layout(const char* op, const at::Tensor& x, const at::Tensor& col, const at::Tensor& pair_ptr,
                   const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr,
                   const at::Tensor& dst_pairs, const at::Tensor& src_ptr, const at::Tensor& src_pairs,
                   bool need_src) {
  if (full_input_checks()) {
    check_rgcn_layout(op, x.size(0), col.cpu().contiguous(), pair_ptr.cpu().contiguous(),
                      pair_dst.cpu().contiguous(), rel_ptr.cpu().contiguous(), dst_ptr.cpu().contiguous(),
                      dst_pairs.cpu().contiguous(), src_ptr.cpu().contiguous(), src_pairs.cpu().contiguous(),
                      need_src);
  }
  return Layout{col.contiguous(),     pair_ptr.contiguous(), pair_dst.contiguous(),
                rel_ptr.contiguous(), dst_ptr.contiguous(),  dst_pairs.contiguous(),
                src_ptr.contiguous(), src_pairs.contiguous(), col.numel(), pair_dst.numel(),
                rel_ptr.numel() - 1,  dst_ptr.numel() - 1,   x.size(0)};
}

at::Tensor form_weight(const at::Tensor& comp, const at::Tensor& v) {
  const int64_t B = v.size(0), F_in = v.size(1), F_out = v.size(2);
  return at::mm(comp, v.reshape({B, F_in * F_out})).view({comp.size(0), F_in, F_out});
}

// Y[p] = A[p] @ op(W_{r_p}); `transpose` uses W_r^T (W [R, N, K] then).
template <typename scalar_t>
void launch_rows_gemm(const at::Tensor& a, const at::Tensor& w, bool transpose, const Layout& l,
                      at::Tensor& y, cudaStream_t stream) {
  const int64_t K = a.size(1), N = y.size(1);
  if (l.P == 0 || N == 0) return;
  auto tile_ptr = at::empty({l.R + 1}, l.rel_ptr.options());
  tile_ptr_kernel<<<1, 1, 0, stream>>>(l.rel_ptr.const_data_ptr<int64_t>(), l.R, l.P, tile_ptr.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t sbg = w.size(1) * w.size(2);
  const int64_t sbk = transpose ? 1 : N, sbn = transpose ? K : 1;
  dim3 grid(static_cast<unsigned>((l.P + kTile - 1) / kTile + l.R), static_cast<unsigned>((N + kTile - 1) / kTile));
  grouped_gemm_rows_kernel<scalar_t><<<grid, dim3(kTile, kTile), 0, stream>>>(
      a.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), sbg, sbk, sbn, l.rel_ptr.const_data_ptr<int64_t>(),
      tile_ptr.const_data_ptr<int64_t>(), l.R, K, N, y.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rgcn_aggregate_cuda(
    const at::Tensor& x_in, const at::Tensor& col, const at::Tensor& pair_ptr, const at::Tensor& pair_dst,
    const at::Tensor& rel_ptr, const at::Tensor& dst_ptr, const at::Tensor& dst_pairs, const at::Tensor& src_ptr,
    const at::Tensor& src_pairs, const at::Tensor& weight_in, const std::optional<at::Tensor>& comp_in,
    const std::optional<at::Tensor>& x_root, const std::optional<at::Tensor>& root_weight,
    const std::optional<at::Tensor>& bias, bool mean, int64_t order) {
  constexpr const char* op = "rgcn_aggregate";
  check_rgcn_aggregate_args(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs,
                            weight_in, comp_in, x_root, root_weight, bias, order);
  check_device_type(op, x_in, "x", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const Layout l = make_layout(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs, /*need_src=*/false);
  const auto x = x_in.contiguous();
  const auto weight = weight_in.contiguous();
  const int64_t F_in = x.size(1), F_out = weight.size(2);
  const int64_t B = order == kPairGemm ? 1 : weight.size(0);
  if (order == kDensePairs) {
    auto z = at::empty({l.N_dst, l.R * F_in}, x.options());
    LMGNN_DISPATCH_FLOATING(x.scalar_type(), "rgcn_aggregate_cuda", [&] {
      LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_cuda", [&] {
        if (l.N_dst > 0 && l.R * F_in > 0) {
          dense_sum_kernel<scalar_t, index_t><<<l.N_dst, kThreads, 0, stream>>>(
              x.const_data_ptr<scalar_t>(), l.col.const_data_ptr<index_t>(), l.pair_ptr.const_data_ptr<int64_t>(),
              l.rel_ptr.const_data_ptr<int64_t>(), l.dst_ptr.const_data_ptr<int64_t>(),
              l.dst_pairs.const_data_ptr<index_t>(), l.pair_dst.const_data_ptr<index_t>(), l.R, l.N_dst,
              l.P, l.E, F_in, l.N_src, mean, z.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
    });
    const auto out = root_plus_product(z, weight.view({l.R * F_in, F_out}), x_root, root_weight, bias);
    return {out, at::empty({0, F_in}, x.options()), z};
  }
  auto agg = at::empty({l.P, F_in}, x.options());
  auto out = at::empty({l.N_dst, F_out}, x.options());
  at::Tensor basis_in;
  LMGNN_DISPATCH_FLOATING(x.scalar_type(), "rgcn_aggregate_cuda", [&] {
    LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_cuda", [&] {
      if (l.P > 0 && F_in > 0) {
        segment_sum_kernel<scalar_t, index_t><<<l.P, kThreads, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), l.col.const_data_ptr<index_t>(), l.pair_ptr.const_data_ptr<int64_t>(),
            l.P, l.E, F_in, l.N_src, mean, agg.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (order == kBasisCombine) {
        const auto comp = comp_in->contiguous();
        basis_in = at::empty({l.N_dst, B * F_in}, x.options());
        if (l.N_dst > 0) {
          basis_combine_kernel<scalar_t, index_t><<<l.N_dst, kThreads, 0, stream>>>(
              agg.const_data_ptr<scalar_t>(), comp.const_data_ptr<scalar_t>(), l.rel_ptr.const_data_ptr<int64_t>(),
              l.dst_ptr.const_data_ptr<int64_t>(), l.dst_pairs.const_data_ptr<index_t>(),
              l.pair_dst.const_data_ptr<index_t>(), l.R, l.N_dst, l.P, B, F_in, basis_in.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        out = root_plus_product(basis_in, weight.view({B * F_in, F_out}), x_root, root_weight, bias);
      } else {
        basis_in = at::empty({0, B * F_in}, x.options());
        const auto [root, root_is_row] = root_term(x_root, root_weight, bias);
        const auto w = order == kPairGemm ? weight : form_weight(comp_in->contiguous(), weight);
        auto y = at::empty({l.P, F_out}, x.options());
        launch_rows_gemm<scalar_t>(agg, w, /*transpose=*/false, l, y, stream);
        if (l.N_dst > 0 && F_out > 0) {
          const auto base = root.defined() ? root.contiguous() : root;
          dst_reduce_kernel<scalar_t, index_t><<<l.N_dst, kThreads, 0, stream>>>(
              y.const_data_ptr<scalar_t>(), l.dst_ptr.const_data_ptr<int64_t>(), l.dst_pairs.const_data_ptr<index_t>(),
              l.pair_dst.const_data_ptr<index_t>(), base.defined() ? base.const_data_ptr<scalar_t>() : nullptr, root_is_row, l.N_dst, l.P, F_out,
              out.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    });
  });
  return {out, agg, basis_in};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rgcn_aggregate_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& col, const at::Tensor& pair_ptr,
    const at::Tensor& pair_dst, const at::Tensor& rel_ptr, const at::Tensor& dst_ptr, const at::Tensor& dst_pairs,
    const at::Tensor& src_ptr, const at::Tensor& src_pairs, const at::Tensor& weight_in,
    const std::optional<at::Tensor>& comp_in, const std::optional<at::Tensor>& x_root,
    const std::optional<at::Tensor>& root_weight, const at::Tensor& agg_in, const at::Tensor& basis_in,
    bool mean, int64_t order, std::array<bool, 6> needs) {
  constexpr const char* op = "rgcn_aggregate_backward";
  check_rgcn_aggregate_args(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs,
                            weight_in, comp_in, x_root, root_weight, std::nullopt, order);
  check_device_type(op, x_in, "x", c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(x_in.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const Layout l = make_layout(op, x_in, col, pair_ptr, pair_dst, rel_ptr, dst_ptr, dst_pairs, src_ptr, src_pairs, /*need_src=*/needs[0]);
  const auto weight = weight_in.contiguous();
  const int64_t F_in = x_in.size(1), F_out = weight.size(2);
  const int64_t B = order == kPairGemm ? 1 : weight.size(0);
  check_rgcn_aggregate_backward_args(op, grad_out_in, x_in, agg_in, basis_in, x_root, l.N_dst, l.P, l.R, B,
                                     F_out, order, needs);
  const auto g = grad_out_in.contiguous();
  const auto agg = agg_in.contiguous();
  auto none = [&] { return at::empty({0}, x_in.options()); };
  at::Tensor dx = none(), dweight = none(), dcomp = none(), dxr = none(), dwr = none(), db = none();

  LMGNN_DISPATCH_FLOATING(x_in.scalar_type(), "rgcn_aggregate_backward_cuda", [&] {
    LMGNN_DISPATCH_INDEX(col.scalar_type(), "rgcn_aggregate_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
      at::Tensor dagg;
      if (order == kDensePairs) {
        const auto wflat = weight.view({l.R * F_in, F_out});
        if (needs[1]) dweight = at::mm(basis_in.t(), g).view({l.R, F_in, F_out});
        if (needs[0]) {
          const auto dz = at::mm(g, wflat.t()).contiguous();  // [N_dst, R * F_in]
          dx = at::empty({l.N_src, F_in}, x_in.options());
          if (l.N_src > 0 && F_in > 0) {
            src_scatter_dense_kernel<scalar_t, index_t><<<l.N_src, kThreads, 0, stream>>>(
                dz.const_data_ptr<scalar_t>(), l.src_ptr.const_data_ptr<int64_t>(),
                l.src_pairs.const_data_ptr<index_t>(), l.pair_ptr.const_data_ptr<int64_t>(),
                l.rel_ptr.const_data_ptr<int64_t>(), l.pair_dst.const_data_ptr<index_t>(), l.R, l.N_src, l.N_dst,
                l.P, l.E, F_in, mean, dx.data_ptr<scalar_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
        }
      } else if (order == kBasisCombine) {
        const auto comp = comp_in->contiguous();
        const auto vflat = weight.view({B * F_in, F_out});
        if (needs[1]) dweight = at::mm(basis_in.t(), g).view({B, F_in, F_out});
        if (needs[0] || needs[2]) {
          const auto dz = at::mm(g, vflat.t()).contiguous();
          if (needs[0]) dagg = at::empty({l.P, F_in}, x_in.options());
          at::Tensor dots;
          if (needs[2]) dots = at::empty({l.P, B}, x_in.options().dtype(acc_type));
          if (l.P > 0) {
            basis_pair_grads_kernel<scalar_t, index_t><<<l.P, kThreads, 0, stream>>>(
                dz.const_data_ptr<scalar_t>(), agg.const_data_ptr<scalar_t>(), comp.const_data_ptr<scalar_t>(),
                l.rel_ptr.const_data_ptr<int64_t>(), l.pair_dst.const_data_ptr<index_t>(), l.R, l.P, l.N_dst, B, F_in,
                needs[0] ? dagg.data_ptr<scalar_t>() : nullptr, needs[2] ? dots.data_ptr<acc_t>() : nullptr);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          if (needs[2]) {
            auto dc = at::empty({l.R, B}, x_in.options().dtype(acc_type));
            if (l.R * B > 0) {
              relation_sum_kernel<acc_t><<<(l.R * B + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
                  dots.const_data_ptr<acc_t>(), l.rel_ptr.const_data_ptr<int64_t>(), l.R, B, dc.data_ptr<acc_t>());
              C10_CUDA_KERNEL_LAUNCH_CHECK();
            }
            dcomp = dc.to(x_in.scalar_type());
          }
        }
      } else {
        const bool need_dw = order == kPairGemm ? needs[1] : (needs[1] || needs[2]);
        if (needs[0] || need_dw) {
          const auto w = order == kPairGemm ? weight : form_weight(comp_in->contiguous(), weight);
          const auto gp = g.index_select(0, l.pair_dst).contiguous();  // [P, F_out]
          if (needs[0]) {
            dagg = at::empty({l.P, F_in}, x_in.options());
            launch_rows_gemm<scalar_t>(gp, w, /*transpose=*/true, l, dagg, stream);
          }
          if (need_dw) {
            auto dw = at::empty({l.R, F_in, F_out}, x_in.options());
            if (l.R > 0 && F_in > 0 && F_out > 0) {
              dim3 grid(static_cast<unsigned>((F_out + kTile - 1) / kTile), static_cast<unsigned>((F_in + kTile - 1) / kTile),
                        static_cast<unsigned>(l.R));
              grouped_gemm_ksum_kernel<scalar_t><<<grid, dim3(kTile, kTile), 0, stream>>>(
                  agg.const_data_ptr<scalar_t>(), gp.const_data_ptr<scalar_t>(), l.rel_ptr.const_data_ptr<int64_t>(),
                  l.P, F_in, F_out, dw.data_ptr<scalar_t>());
              C10_CUDA_KERNEL_LAUNCH_CHECK();
            }
            weight_grads_from_dw(dw, weight, comp_in, order, needs, dweight, dcomp);
          }
        }
      }
      if (needs[0] && order != kDensePairs) {
        dx = at::empty({l.N_src, F_in}, x_in.options());
        if (l.N_src > 0 && F_in > 0) {
          src_scatter_kernel<scalar_t, index_t><<<l.N_src, kThreads, 0, stream>>>(
              dagg.const_data_ptr<scalar_t>(), l.src_ptr.const_data_ptr<int64_t>(), l.src_pairs.const_data_ptr<index_t>(),
              l.pair_ptr.const_data_ptr<int64_t>(), l.N_src, l.P, l.E, F_in, mean, dx.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    });
  });
  root_grads(g, x_root, root_weight, needs, dxr, dwr, db);
  return {dx, dweight, dcomp, dxr, dwr, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CUDA, m) {
  m.impl("rgcn_aggregate", &rgcn_aggregate_cuda);
  m.impl("rgcn_aggregate_backward", &rgcn_aggregate_backward_cuda);
}

}  // namespace lmgnn
