"""The block: one layer of sampled message passing over a heterogeneous graph."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from lmgnn_fast.graph import EdgeType


@dataclass
class Block:
    """One message-passing layer produced by the sampler and consumed by ``nn.RGCNConv``.

    Node sets follow the dst-prefix convention: for every node type ``t`` the destination
    nodes are the first ``num_dst[t]`` entries of ``src_nodes[t]``.

    Attributes:
        node_types: all node types of the graph, in the graph's order.
        edge_types: all relations of the graph; relation id ``r`` is the index here.
        src_nodes: per node type, global node ids (int64) of the layer's source nodes,
            destinations first. Types absent from the layer map to an empty tensor.
        num_dst: per node type, how many of ``src_nodes[t]`` are destination nodes.
        indptr: per relation ``r = (s, rel, d)``: ``[num_dst[d] + 1]`` int64 CSC row pointer.
        indices: per relation: local source indices into ``src_nodes[s]`` (int64).
        eid: per relation: global edge ids (the graph's ``eid`` of that relation).
        derived: structures computed from the block by its consumers, keyed by their
            builder (e.g. the aggregation layout of ``ops.layout_from_block``), so a block
            used by several layers builds each once. Not copied by :meth:`to`.
    """

    node_types: list[str]
    edge_types: list[EdgeType]
    src_nodes: dict[str, Tensor]
    num_dst: dict[str, int]
    indptr: list[Tensor]
    indices: list[Tensor]
    eid: list[Tensor]
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def num_src(self, node_type: str) -> int:
        return int(self.src_nodes[node_type].numel())

    def dst_nodes(self, node_type: str) -> Tensor:
        return self.src_nodes[node_type][: self.num_dst[node_type]]

    def num_edges(self, r: int | None = None) -> int:
        if r is None:
            return sum(int(i.numel()) for i in self.indices)
        return int(self.indices[r].numel())

    @property
    def device(self) -> torch.device:
        for t in self.src_nodes.values():
            return t.device
        return torch.device("cpu")

    def to(self, device, non_blocking: bool = False) -> "Block":
        mv = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Block(
            node_types=list(self.node_types),
            edge_types=list(self.edge_types),
            src_nodes={k: mv(v) for k, v in self.src_nodes.items()},
            num_dst=dict(self.num_dst),
            indptr=[mv(t) for t in self.indptr],
            indices=[mv(t) for t in self.indices],
            eid=[mv(t) for t in self.eid],
        )

    def __repr__(self) -> str:
        nodes = ", ".join(f"{t}: {self.num_dst[t]}/{self.num_src(t)}" for t in self.node_types)
        return f"Block(dst/src nodes {{{nodes}}}, edges={self.num_edges()}, relations={len(self.edge_types)})"
