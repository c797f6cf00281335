"""Heterogeneous neighbour sampling: the sampler, blocks, loaders and negative samplers."""
from lmgnn_fast.sampling.block import Block, EdgeType
from lmgnn_fast.sampling.loaders import EdgeBatch, EdgeLoader, LinkBatch, LinkLoader, NodeBatch, NodeLoader
from lmgnn_fast.sampling.negative import (InBatchNegativeSampler, JointNegativeSampler, NegativeSampler,
                                          UniformNegativeSampler, make_negative_sampler)
from lmgnn_fast.sampling.neighbor import NeighborSampler, mix_seed

__all__ = ["Block", "EdgeType", "NeighborSampler", "mix_seed", "NodeLoader", "EdgeLoader", "LinkLoader",
           "NodeBatch", "EdgeBatch", "LinkBatch", "NegativeSampler", "UniformNegativeSampler",
           "JointNegativeSampler", "InBatchNegativeSampler", "make_negative_sampler"]
