"""Typed functional wrappers around the ``torch.ops.lmgnn`` operators.

Each family lives in its own module with its fake kernel, autograd registration and a
pure-torch reference (``*_ref``) used by the tests and as a fallback.
"""
from lmgnn_fast.ops.cache import *  # noqa: F401,F403
from lmgnn_fast.ops.convert import coo_to_csc, coo_to_csc_ref

__all__ = ["coo_to_csc", "coo_to_csc_ref"]
