// lmgnn::coo_to_csc — sort a COO edge list by destination (stable) into CSC.
//
//   src, dst : [E] int32 or int64 (same dtype, same device)
//   num_dst  : number of destination nodes (>= 0); every dst id must be < num_dst
//   returns  : indptr [num_dst + 1] int64, indices [E] (src dtype), perm [E] int64 with
//              indices == src[perm] and dst[perm] sorted, ties kept in input order.
#include "ops/coo_to_csc.h"

#include <torch/library.h>

#include "utils/check.h"

namespace lmgnn {

void check_coo_to_csc_args(const at::Tensor& src, const at::Tensor& dst, int64_t num_dst) {
  constexpr const char* op = "coo_to_csc";
  check_defined(op, src, "src");
  check_defined(op, dst, "dst");
  check_dim(op, src, "src", 1);
  check_dim(op, dst, "dst", 1);
  check_index_dtype(op, src, "src");
  check_index_dtype(op, dst, "dst");
  check_same_dtype(op, src, "src", dst, "dst");
  check_same_device(op, src, "src", dst, "dst");
  LMGNN_CHECK(src.numel() == dst.numel(), op, ": src and dst must have the same length, got ",
              src.numel(), " and ", dst.numel());
  LMGNN_CHECK(num_dst >= 0, op, ": num_dst must be >= 0, got ", num_dst);
}

TORCH_LIBRARY_FRAGMENT(lmgnn, m) {
  m.def("coo_to_csc(Tensor src, Tensor dst, SymInt num_dst) -> (Tensor indptr, Tensor indices, Tensor perm)",
        {at::Tag::pt2_compliant_tag});
}

}  // namespace lmgnn
