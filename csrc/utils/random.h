// Counter-based random numbers: a pure function of (seed, stream, counter), so a draw
// depends on what it is for, never on which thread makes it or in what order.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LMGNN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LMGNN_HOST_DEVICE inline
#endif

namespace lmgnn {

// SplitMix64 finaliser: a bijective 64-bit mixer with full avalanche.
LMGNN_HOST_DEVICE uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// A 64-bit random word for (seed, a, b, c).
LMGNN_HOST_DEVICE uint64_t philox_like(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  return mix64(mix64(mix64(seed ^ mix64(a)) ^ b) + mix64(c ^ 0xD1B54A32D192ED03ULL));
}

// Uniform integer in [0, n) for n > 0 (Lemire's multiply-shift; bias < n / 2^64).
LMGNN_HOST_DEVICE uint64_t uniform_below(uint64_t word, uint64_t n) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(word, n);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(word) * n) >> 64);
#endif
}

}  // namespace lmgnn
