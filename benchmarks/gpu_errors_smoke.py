"""GPU check, first step: an error raised by the host code of a CUDA kernel file must reach
Python as the same exception as on the CPU (run by ``gpu_check.sh``, which takes a cuda-gdb
backtrace if this process crashes instead)."""
import torch

import lmgnn_fast  # noqa: F401
from lmgnn_fast.cache import EmbeddingCache
from lmgnn_fast.ops import coo_to_csc

CASES = [
    ("coo_to_csc", lambda: coo_to_csc(torch.tensor([0, 1], device="cuda"), torch.tensor([0, 5], device="cuda"), 3)),
    ("cache_gather", lambda: EmbeddingCache(1000, 4, device="cuda", capacity=10).gather(torch.tensor([3, 1000]))),
]

if __name__ == "__main__":
    for name, fn in CASES:
        try:
            fn()
            print(f"{name}: raised nothing", flush=True)
        except IndexError as e:
            print(f"{name}: IndexError: {str(e).splitlines()[0]}", flush=True)
