"""Heterogeneous neighbour sampling: the sampler, blocks, loaders and negative samplers."""
from lmgnn_fast.sampling.block import Block
from lmgnn_fast.sampling.loaders import EdgeBatch, EdgeLoader, LinkBatch, LinkLoader, NodeBatch, NodeLoader
from lmgnn_fast.sampling.negative import (
                                          InBatchNegativeSampler,
                                          JointNegativeSampler,
                                          NegativeSampler,
                                          UniformNegativeSampler,
                                          make_negative_sampler,
)
from lmgnn_fast.sampling.neighbor import NeighborSampler

__all__ = ["Block", "NeighborSampler", "NodeLoader", "EdgeLoader", "LinkLoader",
           "NodeBatch", "EdgeBatch", "LinkBatch", "NegativeSampler", "UniformNegativeSampler",
           "JointNegativeSampler", "InBatchNegativeSampler", "make_negative_sampler"]
