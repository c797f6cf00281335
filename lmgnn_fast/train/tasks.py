"""The target task on the graph model: training batches and their loss, evaluation.

:class:`GNNTask` turns the task's training items into per-epoch batches (this rank's share
of each global batch), computes a batch's loss through the model's head, embeds nodes for
evaluation and scores a split under the protocol of ``metrics.py`` (fixed sampling seed
per split; link prediction ranked against fixed, filtered candidates).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.nn import GraphModel
from lmgnn_fast.train import builders, data_parallel
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import batches, known_edge_keys, split_items
from lmgnn_fast.train.metrics import classification_metrics, eval_negatives, ranking_metrics, ranks_from_scores
from lmgnn_fast.train.seeds import derive_seed

__all__ = ["GNNTask"]


class GNNTask:
    """Batches, losses and evaluation of ``ctx.task`` on a :class:`GraphModel`.

    Feature functions ``feats(block) -> {type: [block.num_src(t), F]}`` give the input rows
    of a batch's outermost block; ``lm_hook(blocks, x) -> x`` may replace some of them
    (stage 3 puts rows computed by the LM with gradients there).

    Args:
        ctx: the run context.
    """

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self._sampler = None
        self._lp_eid = None
        self._ends = None

    @property
    def sampler(self):
        """The neighbour sampler (``gnn.fanouts``), built on first use."""
        if self._sampler is None:
            self._sampler = builders.make_sampler(self.ctx.graph, [int(f) for f in self.ctx.cfg.gnn.fanouts],
                                                  seed=self.ctx.cfg.run.seed)
        return self._sampler

    def new_model(self, lm_dim: int) -> GraphModel:
        """A freshly initialized graph model (seeded by ``run.seed``) on the device.

        Args:
            lm_dim: width of the LM rows of the text node types (0 without LM).
        """
        c, g, task = self.ctx.cfg, self.ctx.graph, self.ctx.task
        torch.manual_seed(derive_seed(c.run.seed, "gnn-init"))
        return GraphModel(g.node_types, g.edge_types, g.num_nodes, task.type, task.num_classes, task.multilabel,
                          lm_dim, self.ctx.text_types, c.gnn.hidden, c.gnn.num_layers, num_bases=c.gnn.num_bases,
                          aggr=c.gnn.aggr, dropout=c.gnn.dropout, layer_norm=c.gnn.layer_norm,
                          feature_norm=c.gnn.feature_norm, decoder=c.task.decoder,
                          link_loss=c.task.loss).to(self.ctx.device)

    def items(self, split: str):
        """Items of ``split``: node ids, edge ids, or ``(src, dst)`` for link prediction."""
        return split_items(self.ctx.graph, self.ctx.task, split)

    def num_train_items(self) -> int:
        """Number of training items."""
        items = self.items("train")
        return int(items[0].numel() if isinstance(items, tuple) else items.numel())

    def edge_endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """``(src, dst)`` of edges ``eids`` of the task's relation (read from its CSC)."""
        if self._ends is None:
            csc = self.ctx.graph.csc[self.ctx.task.edge_type]
            eid = csc.eid.long()
            n = int(eid.max()) + 1 if eid.numel() else 0
            src = torch.full((n,), -1, dtype=torch.long)
            dst = torch.full((n,), -1, dtype=torch.long)
            deg = (csc.indptr[1:] - csc.indptr[:-1]).long()
            src[eid] = csc.indices.long()
            dst[eid] = torch.repeat_interleave(torch.arange(deg.numel()), deg)
            self._ends = (src, dst)
        src, dst = self._ends
        return src[eids], dst[eids]

    def sample(self, seeds: dict[str, Tensor], seed: int, exclude=None) -> list:
        """Blocks around ``seeds`` (sampling seed ``seed``), on the device."""
        blocks = self.sampler.sample(seeds, exclude_eids=exclude, seed=seed)
        return [b.to(self.ctx.device) for b in blocks]

    def train_batches(self, epoch: int, batch_size: int, tag: str) -> list[Tensor]:
        """This rank's share of the epoch's shuffled global batches of training positions
        (shuffle seeded by ``(run.seed, tag, epoch)``)."""
        n = self.num_train_items()
        return data_parallel.shard_batches(batches(n, batch_size, derive_seed(self.ctx.cfg.run.seed, tag, epoch)),
                                           self.ctx.dist)

    def batch_loss(self, model: GraphModel, pos: Tensor, feats, seed: int, lm_hook=None) -> Tensor:
        """Loss of the task on one training batch (positions ``pos`` into the train items),
        sampling blocks (and link-prediction negatives) with ``seed``."""
        ctx, task, g = self.ctx, self.ctx.task, self.ctx.graph
        dev = ctx.device
        items = self.items("train")

        def forward(blocks):
            x = feats(blocks[0])
            return model(x if lm_hook is None else lm_hook(blocks, x), blocks)

        if task.type == "node_classification":
            ids = items[pos]
            h = forward(self.sample({task.node_type: ids}, seed))[task.node_type]
            return model.head.loss(model.head(h), torch.as_tensor(g.labels[task.node_type])[ids].to(dev))
        if task.type == "edge_classification":
            eids = items[pos]
            s, d = self.edge_endpoints(eids)
            seeds, (ps, pd) = _seed_positions([(task.edge_type[0], s), (task.edge_type[2], d)])
            h = forward(self.sample(seeds, seed))
            logits = model.head(h[task.edge_type[0]][ps], h[task.edge_type[2]][pd])
            return model.head.loss(logits, torch.as_tensor(g.edge_labels[task.edge_type])[eids].to(dev))
        s_all, d_all = items
        s, d = s_all[pos], d_all[pos]
        st, _, dt = task.edge_type
        gen = torch.Generator().manual_seed(seed)
        k, n_dst, mode = ctx.cfg.task.num_negatives, g.num_nodes[dt], ctx.cfg.task.negatives
        if mode == "uniform":
            neg = torch.randint(0, n_dst, (s.numel(), k), generator=gen)
        elif mode == "joint":
            neg = torch.randint(0, n_dst, (k,), generator=gen).expand(s.numel(), k)
        else:
            neg = d.unsqueeze(0).expand(s.numel(), s.numel())
        seeds, (ps, pd, pn) = _seed_positions([(st, s), (dt, d), (dt, neg.reshape(-1))])
        eids = self._lp_eids(s, d)
        exclude = {task.edge_type: eids}
        rev = (getattr(g, "reverse_of", None) or {}).get(task.edge_type)
        if rev is not None:
            exclude[rev] = eids
        h = forward(self.sample(seeds, seed, exclude=exclude))
        hs, hd = h[st][ps], h[dt][pd]
        hn = h[dt][pn].view(s.numel(), neg.shape[1], -1)
        mask = None
        if mode == "in_batch":
            mask = ~torch.eye(s.numel(), dtype=torch.bool, device=dev)
            mask &= neg.to(dev) != d.to(dev).unsqueeze(1)
        return model.head.loss(model.head(hs, hd), model.head.score_candidates(hs, hn), mask)

    def _lp_eids(self, src: Tensor, dst: Tensor) -> Tensor:
        """Edge ids of the message-passing edges ``(src, dst)`` of the LP relation."""
        et = self.ctx.task.edge_type
        n_dst = self.ctx.graph.num_nodes[et[2]]
        if self._lp_eid is None:
            csc = self.ctx.graph.csc[et]
            deg = (csc.indptr[1:] - csc.indptr[:-1]).long()
            d = torch.repeat_interleave(torch.arange(deg.numel()), deg)
            keys = csc.indices.long() * n_dst + d
            order = torch.argsort(keys)
            self._lp_eid = (keys[order], csc.eid.long()[order])
        keys, eids = self._lp_eid
        if keys.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        q = src * n_dst + dst
        pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
        return eids[pos[keys[pos] == q]]

    @torch.no_grad()
    def embed_nodes(self, model: GraphModel, t: str, ids: Tensor, feats, seed: int) -> Tensor:
        """GNN output rows ``[len(ids), hidden]`` for nodes ``ids`` of type ``t`` (eval mode,
        sampled with the fixed evaluation seed; chunks sharded over ranks)."""
        model.eval()

        def chunk(i, j):
            blocks = self.sample({t: ids[i:j]}, derive_seed(seed, t, i))
            return model(feats(blocks[0]), blocks)[t]
        return data_parallel.map_chunks(ids.numel(), self.ctx.cfg.run.eval_batch_size, chunk, self.ctx.dist,
                                        self.ctx.cfg.gnn.hidden, self.ctx.device)

    def embed_unique(self, model: GraphModel, t: str, ids: Tensor, feats, seed: int) -> Tensor:
        """:meth:`embed_nodes` of ``ids`` that may repeat (each node embedded once)."""
        uniq, inv = torch.unique(ids, return_inverse=True)
        return self.embed_nodes(model, t, uniq, feats, seed)[inv.to(self.ctx.device)]

    def lp_candidates(self, split: str, s: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """The fixed, filtered evaluation candidates ``(neg [P, K], valid [P, K])`` of ``split``."""
        ctx = self.ctx
        n_dst = ctx.graph.num_nodes[ctx.task.edge_type[2]]
        return eval_negatives(s, d, n_dst, ctx.cfg.task.eval_negatives,
                              derive_seed(ctx.cfg.run.seed, "negatives", split), known_edge_keys(ctx.graph, ctx.task))

    @torch.no_grad()
    def scores(self, model: GraphModel, split: str, feats) -> tuple[dict, dict]:
        """Metrics and raw outputs of the model on ``split``.

        Returns:
            ``(metrics, outputs)``: outputs are ``ids``/``logits`` (classification) or
            ``src``/``dst``/``score``/``rank`` (link prediction).
        """
        task, g, cfg = self.ctx.task, self.ctx.graph, self.ctx.cfg
        seed = derive_seed(cfg.run.seed, "eval", split)
        items = self.items(split)
        if task.type == "node_classification":
            h = self.embed_nodes(model, task.node_type, items, feats, seed)
            logits = model.head(h).float().cpu()
            y = torch.as_tensor(g.labels[task.node_type])[items]
            return classification_metrics(logits, y, task.multilabel, cfg.task.threshold), \
                {"ids": items, "logits": logits}
        if task.type == "edge_classification":
            s, d = self.edge_endpoints(items)
            hs = self.embed_unique(model, task.edge_type[0], s, feats, seed)
            hd = self.embed_unique(model, task.edge_type[2], d, feats, seed + 1)
            logits = model.head(hs, hd).float().cpu()
            y = torch.as_tensor(g.edge_labels[task.edge_type])[items]
            return classification_metrics(logits, y, False), {"ids": items, "logits": logits}
        s, d = items
        neg, valid = self.lp_candidates(split, s, d)
        st, _, dt = task.edge_type
        hs = self.embed_unique(model, st, s, feats, seed)
        hd = self.embed_unique(model, dt, d, feats, seed + 1)
        hn = self.embed_unique(model, dt, neg.reshape(-1), feats, seed + 2).view(neg.shape[0], neg.shape[1], -1)
        pos = model.head(hs, hd).float().cpu()
        negs = model.head.score_candidates(hs, hn).float().cpu()
        ranks = ranks_from_scores(pos, negs, valid)
        return ranking_metrics(ranks), {"src": s, "dst": d, "score": pos, "rank": ranks}


def _seed_positions(parts: list[tuple[str, Tensor]]) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Unique seeds per node type from several id lists, and each list's positions in them."""
    by_type: dict[str, list[Tensor]] = {}
    for t, ids in parts:
        by_type.setdefault(t, []).append(ids.long())
    seeds, inv_of = {}, {}
    for t, lst in by_type.items():
        uniq, inv = torch.unique(torch.cat(lst), return_inverse=True)
        seeds[t] = uniq
        inv_of[t] = list(torch.split(inv, [x.numel() for x in lst]))
    return seeds, [inv_of[t].pop(0) for t, _ in parts]
