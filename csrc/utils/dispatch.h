// Compile-time switches in one place: turn runtime flags into template parameters once.
#pragma once

#include <ATen/Dispatch.h>

// LMGNN_BOOL_SWITCH(cond, NAME, ...) runs the body with `constexpr bool NAME = cond`.
#define LMGNN_BOOL_SWITCH(COND, NAME, ...)   \
  [&] {                                      \
    if (COND) {                              \
      constexpr static bool NAME = true;     \
      return __VA_ARGS__();                  \
    } else {                                 \
      constexpr static bool NAME = false;    \
      return __VA_ARGS__();                  \
    }                                        \
  }()

// Values: float, double, half, bfloat16 (accumulate in at::opmath_type<scalar_t>).
#define LMGNN_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, __VA_ARGS__)

// Indices: int32 or int64, bound to `index_t`.
#define LMGNN_DISPATCH_INDEX(TYPE, NAME, ...) AT_DISPATCH_INDEX_TYPES(TYPE, NAME, __VA_ARGS__)
