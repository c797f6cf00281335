// Thread-count-independent CPU reductions (see cpu_fixed_order.h).
#include "utils/cpu_fixed_order.h"
#include "utils/cpu_tasks.h"

#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <vector>

#include "utils/check.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

constexpr int64_t kRowBlock = 256;   // output rows per GEMM tile
constexpr int64_t kMinChunk = 2048;  // a reduction is cut into chunks of at least this length
constexpr int64_t kMaxChunks = 16;   // and into at most this many (partials held at once)

// Chunks of a reduction of length K: their number and length depend on K alone.
inline std::pair<int64_t, int64_t> chunking(int64_t K) {
  const int64_t n = std::clamp<int64_t>(K / kMinChunk, 1, kMaxChunks);
  return {n, (K + n - 1) / n};
}

}  // namespace

at::Tensor& mm_fixed_order_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  LMGNN_CHECK(a.is_cpu() && b.is_cpu() && out.is_cpu(), "mm_fixed_order: CPU tensors expected");
  LMGNN_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "mm_fixed_order: a ", a.sizes(),
              " and b ", b.sizes(), " cannot be multiplied");
  LMGNN_CHECK(out.is_contiguous() && out.dim() == 2 && out.size(0) == a.size(0) && out.size(1) == b.size(1),
              "mm_fixed_order: out must be a contiguous [", a.size(0), ", ", b.size(1), "] tensor, got ",
              out.sizes());
  const int64_t M = a.size(0), K = a.size(1);
  const auto [chunks, chunk] = chunking(K);
  const int64_t blocks = (M + kRowBlock - 1) / kRowBlock;
  at::Tensor part = chunks > 1 ? at::empty({chunks, M, b.size(1)}, out.options()) : out;
  for_each_task(blocks * chunks, [&](int64_t t) {
    const int64_t c = t / blocks, m0 = (t % blocks) * kRowBlock, m = std::min(kRowBlock, M - m0);
    const int64_t k0 = std::min(c * chunk, K), k = std::min(chunk, K - k0);
    const auto a_t = a.narrow(0, m0, m).narrow(1, k0, k);
    const auto b_t = b.narrow(0, k0, k);
    if (chunks > 1) {
      auto dst = part.select(0, c).narrow(0, m0, m);
      at::mm_out(dst, a_t, b_t);
    } else if (accumulate) {
      out.narrow(0, m0, m).addmm_(a_t, b_t);
    } else {
      auto dst = out.narrow(0, m0, m);
      at::mm_out(dst, a_t, b_t);
    }
  });
  if (chunks > 1) {
    // elementwise, in chunk order: each element's sum is the same whoever computes it
    auto sum = part.select(0, 0);
    for (int64_t c = 1; c < chunks; ++c) sum.add_(part.select(0, c));
    if (accumulate) {
      out.add_(sum);
    } else {
      out.copy_(sum);
    }
  }
  return out;
}

at::Tensor mm_fixed_order(const at::Tensor& a, const at::Tensor& b) {
  auto out = at::empty({a.size(0), b.size(1)}, a.options());
  return mm_fixed_order_out(out, a, b);
}

at::Tensor column_sum_fixed_order(const at::Tensor& x_in) {
  LMGNN_CHECK(x_in.is_cpu() && x_in.dim() == 2, "column_sum_fixed_order: a 2-D CPU tensor expected, got ",
              x_in.sizes());
  const auto x = x_in.contiguous();
  const int64_t N = x.size(0), F = x.size(1);
  const auto [chunks, chunk] = chunking(N);
  at::Tensor out = at::empty({F}, x.options());
  LMGNN_DISPATCH_FLOATING(x.scalar_type(), "column_sum_fixed_order", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    std::vector<acc_t> part(chunks * F, acc_t(0));
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    for_each_task(chunks, [&](int64_t c) {
      acc_t* p = part.data() + c * F;
      for (int64_t i = std::min(c * chunk, N); i < std::min((c + 1) * chunk, N); ++i) {
        const scalar_t* row = xp + i * F;
        for (int64_t f = 0; f < F; ++f) p[f] += static_cast<acc_t>(row[f]);
      }
    });
    scalar_t* o = out.data_ptr<scalar_t>();
    for (int64_t f = 0; f < F; ++f) {
      acc_t s = part[f];
      for (int64_t c = 1; c < chunks; ++c) s += part[c * F + f];
      o[f] = static_cast<scalar_t>(s);
    }
  });
  return out;
}

}  // namespace lmgnn
