"""Typed functional wrappers around the ``torch.ops.lmgnn`` operators.

Each family lives in its own module with its fake kernel, autograd registration and a
pure-torch reference (``*_ref``) used by the tests and as a fallback.
"""
from lmgnn_fast.ops.aggregate import choose_order, rgcn_aggregate, rgcn_aggregate_ref
from lmgnn_fast.ops.attention import hetero_attention, hetero_attention_ref
from lmgnn_fast.ops.buffers import cpu_buffer_cache_info, empty_cpu_buffer_cache
from lmgnn_fast.ops.cache import (
    cache_admit,
    cache_admit_lfu,
    cache_admit_lfu_ref,
    cache_admit_ref,
    cache_gather,
    cache_gather_ref,
    cache_lookup,
    cache_lookup_ref,
    cache_update,
    cache_update_ref,
)
from lmgnn_fast.ops.convert import coo_to_csc, coo_to_csc_ref, csc_to_coo
from lmgnn_fast.ops.kernels import kernel_available
from lmgnn_fast.ops.layout import (
    RelLayout,
    StackedLayouts,
    build_layout,
    layout_from_block,
    layout_from_coo,
    layouts_from_blocks,
)
from lmgnn_fast.ops.sampling import hetero_neighbor_sample, hetero_neighbor_sample_ref

__all__ = [
    "coo_to_csc", "coo_to_csc_ref", "csc_to_coo",
    "hetero_neighbor_sample", "hetero_neighbor_sample_ref",
    "choose_order", "rgcn_aggregate", "rgcn_aggregate_ref",
    "hetero_attention", "hetero_attention_ref",
    "RelLayout", "StackedLayouts", "build_layout", "layout_from_block", "layout_from_coo", "layouts_from_blocks",
    "kernel_available",
    "cpu_buffer_cache_info", "empty_cpu_buffer_cache",
    "cache_lookup", "cache_gather", "cache_admit", "cache_admit_lfu", "cache_update",
    "cache_lookup_ref", "cache_gather_ref", "cache_admit_ref", "cache_admit_lfu_ref", "cache_update_ref",
]
