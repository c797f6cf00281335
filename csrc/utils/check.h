// Argument checks shared by every op. Messages start with the op name and show the
// offending values; user errors raise (TORCH_CHECK -> Python RuntimeError/ValueError),
// they never reach an internal assert or a segfault.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace lmgnn {

inline void check_defined(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
}

inline void check_index_dtype(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", name,
              " must be int32 or int64, got ", t.scalar_type());
}

inline void check_float_dtype(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

inline void check_numel(const char* op, const at::Tensor& t, const char* name, int64_t n) {
  TORCH_CHECK(t.numel() == n, op, ": ", name, " must have ", n, " elements, got ", t.numel());
}

inline void check_same_device(const char* op, const at::Tensor& a, const char* an,
                              const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", an, " is on ", a.device(), " but ", bn,
              " is on ", b.device());
}

inline void check_same_dtype(const char* op, const at::Tensor& a, const char* an,
                             const at::Tensor& b, const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", an, " is ", a.scalar_type(),
              " but ", bn, " is ", b.scalar_type());
}

inline void check_device_type(const char* op, const at::Tensor& t, const char* name,
                              c10::DeviceType type) {
  TORCH_CHECK(t.device().type() == type, op, ": ", name, " must be on ", type, ", got ",
              t.device());
}

// An id range already reduced to (min, max) on the host; `count` is the exclusive bound.
inline void check_id_range(const char* op, const char* name, int64_t min_id, int64_t max_id,
                           int64_t count, const char* what) {
  TORCH_CHECK_INDEX(min_id >= 0, op, ": ", name, " holds id ", min_id,
                    " out of range for ", what, " (", count, ")");
  TORCH_CHECK_INDEX(max_id < count, op, ": ", name, " holds id ", max_id,
                    " out of range for ", what, " (", count, ")");
}

}  // namespace lmgnn
