"""Heterogeneous neighbour sampling: the sampler, blocks and loaders."""
from lmgnn_fast.sampling.block import Block, EdgeType

__all__ = ["Block", "EdgeType"]
