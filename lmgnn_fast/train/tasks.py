"""The target task on the graph model: training batches and their loss, evaluation.

:class:`GNNTask` gives the loader of the task's training items (``lmgnn_fast.sampling``'s
``NodeLoader``, ``EdgeLoader`` or ``LinkLoader``: shuffling, rank sharding, sampling,
negatives and exclusion of the positives), computes a batch's loss through the model's
head, embeds nodes for evaluation and scores a split under the protocol of ``metrics.py``
(fixed sampling seed per split; link prediction ranked against fixed, filtered candidates).

With ``run.partitioned`` the sampler is the distributed one over this rank's part, the
loaders give each rank the items it owns (``shard="owner"``, no prefetch thread) and the
loss of a batch is weighted by the rank's share of it, so DDP's gradient average is the
global batch's mean gradient; evaluation runs the single process's chunks and sampling
seeds through the same collective sampler and row fetch, with an empty call on a rank that
has one chunk fewer (``map_chunks``'s ``idle``), so its metrics equal the replicated run's
for the same weights.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lmgnn_fast.nn import GraphModel
from lmgnn_fast.sampling import EdgeBatch, EdgeLoader, LinkLoader, NodeBatch, NodeLoader
from lmgnn_fast.train import builders, data_parallel, partitioned
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.data import known_edge_keys, split_items
from lmgnn_fast.train.errors import DataError
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
        self._ends = None

    @property
    def sampler(self):
        """The neighbour sampler (``gnn.fanouts``), built on first use."""
        if self._sampler is None:
            ctx = self.ctx
            fanouts, seed = [int(f) for f in ctx.cfg.gnn.fanouts], ctx.cfg.run.seed
            self._sampler = builders.make_sampler(ctx.graph, fanouts, seed=seed) if ctx.partition is None \
                else partitioned.make_sampler(ctx.partition, fanouts, ctx.dist, seed)
        return self._sampler

    def new_model(self, lm_dim: int) -> GraphModel:
        """A freshly initialized graph model (seeded by ``run.seed``) on the device.

        Args:
            lm_dim: width of the LM rows of the text node types (0 without LM).
        """
        torch.manual_seed(derive_seed(self.ctx.cfg.run.seed, "gnn-init"))
        return builders.make_graph_model(self.ctx.cfg, self.ctx.graph, self.ctx.task, lm_dim,
                                         self.ctx.text_types).to(self.ctx.device)

    def items(self, split: str):
        """Items of ``split``: node ids, edge ids, or ``(src, dst)`` for link prediction."""
        return split_items(self.ctx.graph, self.ctx.task, split)

    def split_labels(self, split: str) -> Tensor:
        """Labels of the items of ``split`` (node or edge classification), in :meth:`items` order."""
        task, g = self.ctx.task, self.ctx.graph
        items = self.items(split)
        if task.type == "node_classification":
            return torch.as_tensor(g.labels[task.node_type])[items]
        if task.type == "edge_classification":
            return torch.as_tensor(g.edge_labels[task.edge_type])[items]
        raise ValueError(f"task {task.name!r} ({task.type}) has no labels")

    def num_train_items(self) -> int:
        """Number of training items."""
        items = self.items("train")
        return int(items[0].numel() if isinstance(items, tuple) else items.numel())

    def edge_endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """``(src, dst)`` of edges ``eids`` of the task's relation, from its full edge list
        (held-out link-prediction edges of the same relation included).

        Raises:
            DataError: an edge whose endpoints the graph does not hold.
        """
        if self._ends is None:
            self._ends = self.ctx.graph.all_edges(self.ctx.task.edge_type)
        src, dst = self._ends
        eids = eids.long().cpu()
        s, d = src[eids], dst[eids]
        if (s < 0).any():
            bad = int(eids[s < 0][0])
            raise DataError(f"relation {list(self.ctx.task.edge_type)}: edge {bad} of task "
                            f"{self.ctx.task.name!r} is neither in the message-passing graph nor "
                            "among the held-out link-prediction edges")
        return s, d

    def sample(self, seeds: dict[str, Tensor], seed: int) -> list:
        """Blocks around ``seeds`` (sampling seed ``seed``), on the device."""
        blocks = self.sampler.sample(seeds, seed=seed)
        return [b.to(self.ctx.device) for b in blocks]

    def train_loader(self, batch_size: int, tag: str, max_batches: int = 0):
        """The loader of the training items: ``NodeLoader``, ``EdgeLoader`` or ``LinkLoader``
        (negatives ``task.negatives``, the batch's positives and their reverses excluded from
        its blocks), shuffled per epoch from ``(run.seed, tag)``, giving this rank its share
        of each global batch (partitioned: the items it owns, built in the caller's thread).

        Args:
            batch_size: the global batch size.
            tag: names the stage's draws (``"stage2"``, ``"stage3"``).
            max_batches: cut each epoch after this many batches (0: full epochs).
        """
        ctx, task, g = self.ctx, self.ctx.task, self.ctx.graph
        common = dict(batch_size=batch_size, shuffle=True, seed=derive_seed(ctx.cfg.run.seed, tag), prefetch=1,
                      rank=ctx.dist.rank, world_size=ctx.dist.world_size, max_batches=max_batches)
        if ctx.partition is not None:  # sampling is collective: in the main thread, in step order
            common.update(prefetch=0, shard="owner", owners=ctx.partition.owners)
        if task.type == "node_classification":
            return NodeLoader(g, self.sampler, task.node_type, seeds=self.items("train"), **common)
        if task.type == "edge_classification":
            return EdgeLoader(g, self.sampler, task.edge_type, edge_ids=self.items("train"), **common)
        return LinkLoader(g, self.sampler, task.edge_type, split="train", negative=ctx.cfg.task.negatives,
                          num_negatives=ctx.cfg.task.num_negatives, **common)

    def batch_loss(self, model: GraphModel, batch, feats, lm_hook=None) -> Tensor:
        """Loss of the task on one batch of :meth:`train_loader`, by the model's head.

        A batch of an owner-sharded loader (``batch.share`` set) gives its loss weighted by
        ``share x W``; with no item of this rank (``share == 0``) a zero loss over the
        parameters, after the same feature reads (collectives) as any batch."""
        batch = batch.to(self.ctx.device)
        blocks = batch.blocks
        x = feats(blocks[0])
        if lm_hook is not None:
            x = lm_hook(blocks, x)
        share = batch.share
        if share == 0:
            return sum(p.sum() for p in model.parameters()) * 0.0 + sum(v.sum() for v in x.values()) * 0.0
        h = model(x, blocks)
        head = model.head
        if isinstance(batch, NodeBatch):
            loss = head.loss(head(h[batch.node_type]), batch.labels)
        elif isinstance(batch, EdgeBatch):
            st, _, dt = batch.edge_type
            loss = head.loss(head(h[st][batch.src], h[dt][batch.dst]), batch.labels)
        else:
            st, _, dt = batch.edge_type
            hs = h[st][batch.src]
            mask = batch.neg_dst != batch.dst.unsqueeze(1) if batch.negative_mode == "in_batch" else None
            loss = head.loss(head(hs, h[dt][batch.dst]), head.score_candidates(hs, h[dt][batch.neg_dst]), mask)
        return loss if share is None else loss * (share * self.ctx.dist.world_size)

    @torch.no_grad()
    def embed_nodes(self, model: GraphModel, t: str, ids: Tensor, feats, seed: int) -> Tensor:
        """GNN output rows ``[len(ids), hidden]`` for nodes ``ids`` of type ``t`` (eval mode,
        sampled with the fixed evaluation seed; chunks sharded over ranks)."""
        model.eval()

        def chunk(i, j):
            blocks = self.sample({t: ids[i:j]}, derive_seed(seed, t, i))
            return model(feats(blocks[0]), blocks)[t]

        def idle():  # partitioned: a chunk's collectives (sampling, row fetch) with no nodes
            feats(self.sample({t: ids[:0]}, 0)[0])
        return data_parallel.map_chunks(ids.numel(), self.ctx.cfg.run.eval_batch_size, chunk, self.ctx.dist,
                                        self.ctx.cfg.gnn.hidden, self.ctx.device,
                                        idle=idle if self.ctx.partition is not None else None)

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
            ``src``/``dst``/``score``/``rank`` (link prediction; with ``neg_score`` ``[P, K]``
            and ``valid``, the candidates' scores and which of them count).
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
        return ranking_metrics(ranks), {"src": s, "dst": d, "score": pos, "rank": ranks, "neg_score": negs,
                                        "valid": valid}

