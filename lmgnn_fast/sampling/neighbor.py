"""``NeighborSampler``: multi-hop heterogeneous neighbour sampling into blocks."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lmgnn_fast.graph import EdgeType
from lmgnn_fast.ops.random import as_int64, mix_seed
from lmgnn_fast.ops.sampling import hetero_neighbor_sample
from lmgnn_fast.sampling.block import Block

FanoutSpec = Sequence[int | Sequence[int] | Mapping[EdgeType | str, int]]


class NeighborSampler:
    """Samples blocks of in-neighbours around seed nodes of a heterogeneous graph.

    ``fanouts[h]`` is the fanout of hop ``h + 1`` from the seeds (hop 1 samples the seeds'
    neighbours), as in PyG's ``num_neighbors``; the blocks come back outermost first, so
    ``blocks[-1]`` has the seeds as destinations and uses ``fanouts[0]``. Each hop's entry
    is an int (all relations), a list with one int per relation (in ``graph.edge_types``
    order) or a dict keyed by edge type or relation name (relations left out get 0).
    ``-1`` takes every neighbour.

    Sampling is deterministic: the same seeds, graph and seed give the same blocks for any
    number of threads. Without an explicit ``seed``, call ``i`` of :meth:`sample` uses
    ``mix_seed(self.seed, i)``; loaders pass explicit per-batch seeds.

    Args:
        graph: a ``HeteroGraph`` (``node_types``, ``edge_types``, ``num_nodes``, ``csc``).
        fanouts: per hop, see above.
        replace: draw with replacement.
        seed: base random seed.

    Example:
        >>> sampler = NeighborSampler(graph, [15, 10])
        >>> blocks = sampler.sample({"paper": torch.arange(1024)})
        >>> blocks[-1].dst_nodes("paper").shape
        torch.Size([1024])
    """

    def __init__(self, graph, fanouts: FanoutSpec, replace: bool = False, seed: int = 0):
        self.graph = graph
        self.node_types: list[str] = list(graph.node_types)
        self.edge_types: list[EdgeType] = [tuple(et) for et in graph.edge_types]
        self._type_id = {t: i for i, t in enumerate(self.node_types)}
        self.fanouts = self._normalize_fanouts(fanouts)
        self.replace = bool(replace)
        self.seed = int(seed)
        self._calls = 0
        self._pos_of_eid: dict[int, Tensor] = {}
        for et in self.edge_types:
            for t in (et[0], et[2]):
                if t not in self._type_id:
                    raise ValueError(f"NeighborSampler: edge type {et} names unknown node type {t!r}")
        self._src = [self._type_id[et[0]] for et in self.edge_types]
        self._dst = [self._type_id[et[2]] for et in self.edge_types]
        self._num_nodes = [int(graph.num_nodes[t]) for t in self.node_types]
        self._refresh_csc()

    def _refresh_csc(self) -> None:
        csc = [self.graph.csc[et] for et in self.edge_types]
        self._indptr = [c.indptr for c in csc]
        self._indices = [c.indices for c in csc]
        self._eid = [c.eid for c in csc]

    @property
    def num_layers(self) -> int:
        return len(self.fanouts)

    def _normalize_fanouts(self, fanouts: FanoutSpec) -> list[list[int]]:
        if isinstance(fanouts, (int, Mapping)) or len(fanouts) == 0:
            raise ValueError(f"NeighborSampler: fanouts must be a non-empty list with one entry per hop, "
                             f"got {fanouts!r}")
        R = len(self.edge_types)
        names = {}
        for r, et in enumerate(self.edge_types):
            names.setdefault(et[1], []).append(r)
        out = []
        for h, f in enumerate(fanouts):
            if isinstance(f, Mapping):
                row = [0] * R
                for key, val in f.items():
                    if isinstance(key, str):
                        rs = names.get(key)
                        if rs is None:
                            raise ValueError(f"NeighborSampler: fanouts[{h}] names unknown relation {key!r}")
                    else:
                        if tuple(key) not in self.edge_types:
                            raise ValueError(f"NeighborSampler: fanouts[{h}] names unknown edge type {key!r}")
                        rs = [self.edge_types.index(tuple(key))]
                    for r in rs:
                        row[r] = int(val)
            elif isinstance(f, int):
                row = [int(f)] * R
            else:
                row = [int(x) for x in f]
                if len(row) != R:
                    raise ValueError(f"NeighborSampler: fanouts[{h}] has {len(row)} entries but the graph "
                                     f"has {R} relations")
            bad = [x for x in row if x < -1]
            if bad:
                raise ValueError(f"NeighborSampler: fanouts[{h}] holds {bad[0]}; use -1 (all) or a count >= 0")
            out.append(row)
        return out

    def exclude_positions(self, exclude_eids: Mapping[EdgeType, Tensor]) -> list[Tensor]:
        """CSC positions (per relation, sorted, unique) of the given edge ids."""
        out = []
        for r, et in enumerate(self.edge_types):
            eids = exclude_eids.get(et)
            dev = self._indptr[r].device
            if eids is None or eids.numel() == 0:
                out.append(torch.empty(0, dtype=torch.long, device=dev))
                continue
            inv = self._pos_of_eid.get(r)
            if inv is None:
                eid = self._eid[r]
                size = int(eid.max()) + 1 if eid.numel() else 0
                inv = torch.full((size,), -1, dtype=torch.long, device=eid.device)
                inv[eid] = torch.arange(eid.numel(), device=eid.device)
                self._pos_of_eid[r] = inv
            eids = eids.to(inv.device).long()
            eids = eids[(eids >= 0) & (eids < inv.numel())]
            pos = inv[eids]
            out.append(torch.unique(pos[pos >= 0]).to(dev))
        for et in exclude_eids:
            if tuple(et) not in self.edge_types:
                raise ValueError(f"NeighborSampler: exclude_eids names unknown edge type {et!r}")
        return out

    def sample(self, seeds: Mapping[str, Tensor], exclude_eids: Mapping[EdgeType, Tensor] | None = None,
               seed: int | None = None) -> list[Block]:
        """Samples the blocks around ``seeds``.

        Args:
            seeds: per node type, unique node ids  # [S_t] int64; missing types have none
            exclude_eids: per edge type, edge ids never sampled (e.g. a link-prediction
                batch's positives and, under the reverse relation, the same ids).
            seed: random seed for this call (default: derived from ``self.seed`` and a call
                counter).

        Returns:
            ``num_layers`` blocks, outermost first; ``blocks[-1].dst_nodes(t)`` equals the seeds.
        """
        for t in seeds:
            if t not in self._type_id:
                raise ValueError(f"NeighborSampler: seeds name unknown node type {t!r}; "
                                 f"node types are {self.node_types}")
        dev = self._indptr[0].device
        seed_list = []
        for t in self.node_types:
            s = seeds.get(t)
            if s is None:
                s = torch.empty(0, dtype=torch.long, device=dev)
            s = torch.as_tensor(s)
            if s.device != dev and not (dev.type == "cpu" and self._indptr[0].is_pinned()):
                s = s.to(dev)
            seed_list.append(s.reshape(-1))
        if seed is None:
            seed = mix_seed(self.seed, self._calls)
            self._calls += 1
        exclude = self.exclude_positions(exclude_eids) if exclude_eids else None
        nodes, num_dst, indptr, indices, eid = hetero_neighbor_sample(
            self._indptr, self._indices, self._eid, self._src, self._dst, self._num_nodes, seed_list,
            [f for row in self.fanouts for f in row], self.replace, as_int64(seed), exclude,
            self.node_types)
        return blocks_from_output(self.node_types, self.edge_types, nodes, num_dst, indptr, indices, eid)


def blocks_from_output(node_types, edge_types, nodes, num_dst, indptr, indices, eid) -> list[Block]:
    """Wraps the flat output of ``hetero_neighbor_sample`` into blocks (outermost first)."""
    T, R = len(node_types), len(edge_types)
    L = len(nodes) // T
    nd = num_dst.tolist()
    return [
        Block(node_types=list(node_types), edge_types=list(edge_types),
              src_nodes={t: nodes[l * T + i] for i, t in enumerate(node_types)},
              num_dst={t: int(nd[l * T + i]) for i, t in enumerate(node_types)},
              indptr=list(indptr[l * R:(l + 1) * R]), indices=list(indices[l * R:(l + 1) * R]),
              eid=list(eid[l * R:(l + 1) * R]))
        for l in range(L)
    ]
