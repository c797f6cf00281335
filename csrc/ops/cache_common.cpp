// Checks shared by the lmgnn::cache_* operators (see cache_common.h).
#include "ops/cache_common.h"

#include "utils/check.h"

namespace lmgnn {

CachePolicy parse_cache_policy(const char* op, const std::string& policy) {
  if (policy == "clock") return CachePolicy::kClock;
  if (policy == "lru") return CachePolicy::kLru;
  LMGNN_CHECK(false, op, ": policy must be 'clock' or 'lru', got '", policy, "'");
}

void check_cache_map_args(const char* op, const at::Tensor& keys, const at::Tensor& vals) {
  check_defined(op, keys, "keys");
  check_defined(op, vals, "vals");
  check_dim(op, keys, "keys", 1);
  check_dim(op, vals, "vals", 1);
  LMGNN_CHECK(keys.scalar_type() == at::kLong && vals.scalar_type() == at::kLong, op,
              ": keys and vals must be int64, got ", keys.scalar_type(), " and ",
              vals.scalar_type());
  const int64_t h = keys.numel();
  LMGNN_CHECK(h > 0 && (h & (h - 1)) == 0, op, ": keys must have a power-of-two length, got ", h);
  check_numel(op, vals, "vals", h);
  LMGNN_CHECK(keys.is_contiguous() && vals.is_contiguous(), op,
              ": keys and vals must be contiguous");
  check_same_device(op, keys, "keys", vals, "vals");
}

void check_cache_ids(const char* op, const at::Tensor& ids, const char* name) {
  check_defined(op, ids, name);
  check_dim(op, ids, name, 1);
  check_index_dtype(op, ids, name);
}

}  // namespace lmgnn
