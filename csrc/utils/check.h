// Argument checks shared by every op. Messages start with the op name and show the
// offending values; user errors raise (TORCH_CHECK -> Python RuntimeError/ValueError),
// they never reach an internal assert or a segfault.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace lmgnn {

// Error messages are assembled into a std::string here, without iostreams, and handed to
// TORCH_CHECK as one string. Formatting an integer through a std::ostream from inside this
// module (what TORCH_CHECK's variadic form does) crashed with a segfault on a GPU machine
// (torch 2.11 wheel, that machine's g++), so no message of ours goes through one.
namespace detail {

template <typename T>
void append(std::string& s, const T& x) {
  using U = std::decay_t<T>;
  if constexpr (std::is_same_v<U, bool>) {
    s += x ? "true" : "false";
  } else if constexpr (std::is_same_v<U, char>) {
    s += x;
  } else if constexpr (std::is_integral_v<U>) {
    s += std::to_string(x);
  } else if constexpr (std::is_floating_point_v<U>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(x));
    s += buf;
  } else if constexpr (std::is_convertible_v<const U&, std::string_view>) {
    s += std::string_view(x);
  } else if constexpr (std::is_same_v<U, c10::ScalarType>) {
    s += c10::toString(x);
  } else if constexpr (std::is_same_v<U, c10::Device>) {
    s += x.str();
  } else if constexpr (std::is_same_v<U, c10::DeviceType>) {
    s += c10::DeviceTypeName(x, /*lower_case=*/true);
  } else if constexpr (std::is_same_v<U, c10::IntArrayRef> || std::is_same_v<U, std::vector<int64_t>>) {
    s += '[';
    for (size_t i = 0; i < x.size(); ++i) {
      if (i) s += ", ";
      s += std::to_string(x[i]);
    }
    s += ']';
  } else {
    static_assert(sizeof(U) == 0, "lmgnn error messages: add a formatter for this type");
  }
}

template <typename... Args>
std::string str(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}

}  // namespace detail
}  // namespace lmgnn

// TORCH_CHECK / TORCH_CHECK_INDEX with the message built by lmgnn::detail::str (evaluated
// only when the check fails).
#define LMGNN_CHECK(cond, ...) TORCH_CHECK(cond, ::lmgnn::detail::str(__VA_ARGS__))
#define LMGNN_CHECK_INDEX(cond, ...) TORCH_CHECK_INDEX(cond, ::lmgnn::detail::str(__VA_ARGS__))

namespace lmgnn {

inline void check_defined(const char* op, const at::Tensor& t, const char* name) {
  LMGNN_CHECK(t.defined(), op, ": ", name, " is undefined");
}

inline void check_index_dtype(const char* op, const at::Tensor& t, const char* name) {
  LMGNN_CHECK(t.scalar_type() == at::kLong || t.scalar_type() == at::kInt, op, ": ", name,
              " must be int32 or int64, got ", t.scalar_type());
}

inline void check_float_dtype(const char* op, const at::Tensor& t, const char* name) {
  LMGNN_CHECK(at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a floating-point tensor, got ", t.scalar_type());
}

inline void check_dim(const char* op, const at::Tensor& t, const char* name, int64_t dim) {
  LMGNN_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D, got shape ", t.sizes());
}

inline void check_numel(const char* op, const at::Tensor& t, const char* name, int64_t n) {
  LMGNN_CHECK(t.numel() == n, op, ": ", name, " must have ", n, " elements, got ", t.numel());
}

inline void check_same_device(const char* op, const at::Tensor& a, const char* an,
                              const at::Tensor& b, const char* bn) {
  LMGNN_CHECK(a.device() == b.device(), op, ": ", an, " is on ", a.device(), " but ", bn,
              " is on ", b.device());
}

inline void check_same_dtype(const char* op, const at::Tensor& a, const char* an,
                             const at::Tensor& b, const char* bn) {
  LMGNN_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", an, " is ", a.scalar_type(),
              " but ", bn, " is ", b.scalar_type());
}

inline void check_device_type(const char* op, const at::Tensor& t, const char* name,
                              c10::DeviceType type) {
  LMGNN_CHECK(t.device().type() == type, op, ": ", name, " must be on ", type, ", got ",
              t.device());
}

// LMGNN_CHECK_INPUTS=full (read once per process): also run the input checks that would
// cost a device->host sync on CUDA (every CPU kernel runs all of its checks anyway). See
// docs/interfaces.md, "Input checks", for which checks are always on.
inline bool full_input_checks() {
  static const bool full = [] {
    const char* v = std::getenv("LMGNN_CHECK_INPUTS");
    return v != nullptr && std::string_view(v) == "full";
  }();
  return full;
}

// An id range already reduced to (min, max) on the host; `count` is the exclusive bound.
inline void check_id_range(const char* op, const char* name, int64_t min_id, int64_t max_id,
                           int64_t count, const char* what) {
  LMGNN_CHECK_INDEX(min_id >= 0, op, ": ", name, " holds id ", min_id,
                    " out of range for ", what, " (", count, ")");
  LMGNN_CHECK_INDEX(max_id < count, op, ": ", name, " holds id ", max_id,
                    " out of range for ", what, " (", count, ")");
}

}  // namespace lmgnn
