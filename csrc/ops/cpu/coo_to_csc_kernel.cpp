// CPU kernel of lmgnn::coo_to_csc: a parallel, stable counting sort.
//
// The edge list is cut into T chunks. Each chunk counts its destinations into its own
// histogram; a column-wise prefix over (destination, chunk) gives every chunk its own
// write offset per destination; each chunk then scatters its edges in input order. The
// result is stable and identical for any T. When T histograms would not fit a budget
// proportional to the input (num_dst >> E), T falls back to 1.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "ops/coo_to_csc.h"
#include "utils/check.h"
#include "utils/cpu_range.h"
#include "utils/dispatch.h"

namespace lmgnn {
namespace {

constexpr int64_t kGrain = 1 << 15;

std::tuple<at::Tensor, at::Tensor, at::Tensor> coo_to_csc_cpu(const at::Tensor& src_in,
                                                              const at::Tensor& dst_in,
                                                              int64_t num_dst) {
  check_coo_to_csc_args(src_in, dst_in, num_dst);
  check_device_type("coo_to_csc", src_in, "src", c10::DeviceType::CPU);
  const auto src = src_in.contiguous();
  const auto dst = dst_in.contiguous();
  const int64_t E = src.numel();

  auto indptr = at::zeros({num_dst + 1}, src.options().dtype(at::kLong));
  auto indices = at::empty({E}, src.options());
  auto perm = at::empty({E}, src.options().dtype(at::kLong));
  if (E == 0) return {indptr, indices, perm};

  LMGNN_DISPATCH_INDEX(src.scalar_type(), "coo_to_csc_cpu", [&] {
    const index_t* s = src.const_data_ptr<index_t>();
    const index_t* d = dst.const_data_ptr<index_t>();
    const auto [dmin, dmax] = cpu_min_max(d, E);
    check_id_range("coo_to_csc", "dst", dmin, dmax, num_dst, "num_dst");

    int64_t T = std::min<int64_t>(at::get_num_threads(), (E + kGrain - 1) / kGrain);
    // Budget: T histograms of num_dst counters may cost at most ~4 counters per edge.
    while (T > 1 && T * (num_dst + 1) > 4 * E + (1 << 20)) --T;
    T = std::max<int64_t>(T, 1);
    const int64_t chunk = (E + T - 1) / T;

    std::vector<int64_t> hist(static_cast<size_t>(T) * num_dst, 0);
    at::parallel_for(0, T, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t* h = hist.data() + t * num_dst;
        const int64_t b = t * chunk, e = std::min(E, b + chunk);
        for (int64_t i = b; i < e; ++i) ++h[d[i]];
      }
    });

    int64_t* ip = indptr.data_ptr<int64_t>();
    // Column sums, then an exclusive scan over destinations (O(num_dst), sequential).
    at::parallel_for(0, num_dst, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t v = b; v < e; ++v) {
        int64_t c = 0;
        for (int64_t t = 0; t < T; ++t) c += hist[t * num_dst + v];
        ip[v + 1] = c;
      }
    });
    for (int64_t v = 0; v < num_dst; ++v) ip[v + 1] += ip[v];
    // Turn each chunk's counts into its write offsets.
    at::parallel_for(0, num_dst, kGrain, [&](int64_t b, int64_t e) {
      for (int64_t v = b; v < e; ++v) {
        int64_t off = ip[v];
        for (int64_t t = 0; t < T; ++t) {
          const int64_t c = hist[t * num_dst + v];
          hist[t * num_dst + v] = off;
          off += c;
        }
      }
    });

    index_t* out_idx = indices.data_ptr<index_t>();
    int64_t* out_perm = perm.data_ptr<int64_t>();
    at::parallel_for(0, T, 1, [&](int64_t tb, int64_t te) {
      for (int64_t t = tb; t < te; ++t) {
        int64_t* off = hist.data() + t * num_dst;
        const int64_t b = t * chunk, e = std::min(E, b + chunk);
        for (int64_t i = b; i < e; ++i) {
          const int64_t pos = off[d[i]]++;
          out_idx[pos] = s[i];
          out_perm[pos] = i;
        }
      }
    });
  });
  return {indptr, indices, perm};
}

}  // namespace

TORCH_LIBRARY_IMPL(lmgnn, CPU, m) { m.impl("coo_to_csc", &coo_to_csc_cpu); }

}  // namespace lmgnn
