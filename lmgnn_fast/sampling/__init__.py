"""Heterogeneous neighbour sampling: the sampler, blocks and loaders."""
from lmgnn_fast.sampling.block import Block, EdgeType
from lmgnn_fast.sampling.neighbor import NeighborSampler, mix_seed

__all__ = ["Block", "EdgeType", "NeighborSampler", "mix_seed"]
