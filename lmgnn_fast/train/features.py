"""The feature source: the LM, the token cache and the embedding caches of a run.

Text node types get their input rows from here: :meth:`FeatureSource.cache_features`
reads the embedding caches (stages 2 and 3), :meth:`FeatureSource.encode_mixed` runs the LM
(with gradients when enabled) over the texts of a few nodes of several types (stages 1 and
3), :meth:`FeatureSource.encode_all` refreshes the caches with the current LM. The source
tracks which weights the LM holds (``lm_source``: ``"pretrained"``, ``"stage1"``,
``"stage3"``, or ``"stage3-training"`` while stage 3 changes it) and which weights filled
the caches (``cache_source``), so a cache is only recomputed when it is stale.

With ``run.partitioned`` the rows live in one
:class:`~lmgnn_fast.partition.PartitionedTable` per text type instead (``tables``; each
rank holds its nodes' rows, see :mod:`lmgnn_fast.train.partitioned`): reading, writing back
and refreshing them are collective, and every rank calls them in the same order.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

from lmgnn_fast.io.paths import safe_join
from lmgnn_fast.train import builders, data_parallel, partitioned
from lmgnn_fast.train.context import RunContext
from lmgnn_fast.train.loop import show_progress

__all__ = ["FeatureSource"]


class FeatureSource:
    """LM, tokens and embedding caches of the text node types of ``ctx.graph``.

    Args:
        ctx: the run context (config, graph, text types, device, checkpoints).
    """

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.lm = None
        self.lm_source: str | None = None
        self.cache_source: str | None = None
        self.tokens: dict = {}
        self.caches: dict = {}
        self.tables: dict = {}  # run.partitioned: PartitionedTable per text type
        self._pretrained = None

    @property
    def hidden_size(self) -> int:
        """Width of the LM rows (0 when the run has no LM)."""
        return self.lm.hidden_size if self.lm is not None else 0

    def load_lm(self, source: str) -> None:
        """Put the LM with weights ``source`` (``"pretrained"``, ``"stage1"``, ``"stage3"``)
        in ``self.lm``; the first call builds it and tokenizes every text node type."""
        from lmgnn_fast.lm import LMEncoder

        if (self.lm is not None and self.lm_source == source) or not self.ctx.text_types:
            return
        if self.lm is None:
            c = self.ctx.cfg.lm
            self.lm = LMEncoder.from_pretrained(c.name, pooling=c.pooling,
                                                gradient_checkpointing=c.gradient_checkpointing)
            self.lm.set_autocast(self.ctx.device, c.precision)
            self.lm.to(self.ctx.device)
            self._pretrained = {k: v.detach().clone() for k, v in self.lm.model.state_dict().items()}
            self.lm_source = "pretrained"
            self.tokenize()
        if source == "pretrained":
            if self.lm_source != "pretrained":
                self.lm.model.load_state_dict(self._pretrained)
        else:
            sd = self.ctx.ckpt.load_stage(int(source[-1]))
            self.lm.model.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("lm.")})
        self.lm_source = source

    def trainable_lm_parameters(self) -> list:
        """The LM parameters a stage trains: with ``lm.lora_r > 0`` LoRA adapters injected
        into ``lm.lora_targets`` (every other LM weight frozen), else every LM weight.

        Raises:
            LMLoadError: LoRA asked for without ``peft`` installed, or a target not in the LM.
        """
        c = self.ctx.cfg.lm
        if not c.lora_r:
            return list(self.lm.model.parameters())
        from lmgnn_fast.lm.lora import add_lora

        return add_lora(self.lm.model, int(c.lora_r), c.lora_alpha, c.lora_dropout, list(c.lora_targets))

    def merge_lora(self) -> None:
        """Fold LoRA adapters (if any) into the LM's weights and remove them."""
        if self.ctx.cfg.lm.lora_r:
            from lmgnn_fast.lm.lora import merge_lora

            merge_lora(self.lm.model)

    def lm_weights_changed(self, source: str, cache_current: bool = False) -> None:
        """Record that training changed the LM in place: it now holds ``source``.

        Args:
            source: the new name of the LM's weights.
            cache_current: the caches were last filled with exactly these weights.
        """
        self.lm_source = source
        if cache_current:
            self.cache_source = source

    def tokenize(self) -> None:
        """Tokenize every text node type once; reuse ``<out_dir>/tokens/<type>.safetensors``
        when texts, tokenizer and ``max_length`` are unchanged. With a machine share only
        its leader tokenizes (or reads the cache), and the ranks map its token ids."""
        ctx = self.ctx
        os.makedirs(os.path.join(ctx.out_dir, "tokens"), exist_ok=True)
        for t in ctx.text_types:
            if ctx.share is not None:
                self.tokens[t] = ctx.share.share_tokens(lambda t=t: self._tokenize_type(t))
            else:
                self.tokens[t] = self._tokenize_type(t)

    def _tokenize_type(self, t: str):
        from lmgnn_fast.lm import TokenizedTexts, texts_fingerprint

        ctx = self.ctx
        texts = list(ctx.graph.text[t])
        fp = texts_fingerprint(texts, self.lm.name, ctx.cfg.lm.max_length)
        path = safe_join(os.path.join(ctx.out_dir, "tokens"), t, ".safetensors", "node type")
        if os.path.exists(path):
            tok = TokenizedTexts.load(path)
            if tok.fingerprint == fp:
                return tok
        with warnings.catch_warnings(record=True) as caught:  # a text cut before tokenizing: one log line
            warnings.simplefilter("always")
            tok = self.lm.tokenize(texts, ctx.cfg.lm.max_length, where=f"node type {t!r}", ids=ctx.graph.raw_ids.get(t))
        for w in caught:
            ctx.log(f"warning: {w.message}")
        if ctx.dist.is_main:
            tok.save(path)
        return tok

    def lm_source_for(self, stage: int) -> str:
        """The LM weights stage ``stage`` starts from: stage 1's when it ran (now or before)."""
        if stage >= 2 and (1 in self.ctx.stages or self.ctx.ckpt.has_stage(1)):
            return "stage1"
        return "pretrained"

    def encode_all(self, step: int = 0) -> None:
        """Fill one embedding cache per text node type with the current LM (version ``step``)."""
        ctx = self.ctx
        for t in ctx.text_types:
            n = ctx.graph.num_nodes[t]
            if ctx.partition is not None:
                if t not in self.tables:
                    self.tables[t] = partitioned.make_table(ctx.partition, t, self.lm.hidden_size, ctx.dist,
                                                            ctx.cfg.run.partition_cache)
                partitioned.encode_all_partitioned(self.lm, self.tokens[t], self.tables[t],
                                                   ctx.cfg.lm.encode_batch_size, ctx.dist)
                continue
            if t not in self.caches:
                self.caches[t] = self._new_cache(n)
            if ctx.share is not None:
                data_parallel.encode_all_shared(self.lm, self.tokens[t], self.caches[t],
                                                ctx.cfg.lm.encode_batch_size, step, ctx.dist, ctx.share)
                continue
            if ctx.dist.is_distributed:
                data_parallel.encode_all_sharded(self.lm, self.tokens[t], self.caches[t],
                                                 ctx.cfg.lm.encode_batch_size, step, ctx.dist)
                continue
            self.lm.encode_all(self.tokens[t], self.caches[t], batch_size=ctx.cfg.lm.encode_batch_size,
                               step=step, desc=f"encode {t}", progress=show_progress(ctx.cfg.run))
        self.cache_source = self.lm_source

    def _new_cache(self, n: int):
        ctx = self.ctx
        cap, policy, dim = ctx.cfg.stage3.cache_capacity, ctx.cfg.stage3.cache_policy, self.lm.hidden_size
        if ctx.share is None:
            return builders.make_cache(n, dim, ctx.device, capacity=cap, policy=policy)
        return ctx.share.shared_cache(lambda path: builders.make_cache(n, dim, ctx.device, capacity=cap, policy=policy,
                                                                       shared_path=path), n, dim)

    def ensure_cache(self) -> None:
        """:meth:`encode_all` unless the caches already hold the current LM's rows."""
        if self.ctx.text_types and (self.cache_source != self.lm_source or not (self.caches or self.tables)):
            self.encode_all(self.ctx.global_step)

    def encode_mixed(self, ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """One LM forward (with grad if enabled) over the texts of several node types.

        Args:
            ids: per node type, node ids ``[N_t]``.

        Returns:
            Per node type ``[N_t, hidden]`` rows (types with no ids: ``[0, hidden]``).
        """
        parts, types = [], []
        for t, v in ids.items():
            if v.numel():
                parts.append(self.tokens[t].batch(v.cpu(), "cpu"))
                types.append((t, v.numel()))
        if not parts:
            return {t: torch.zeros(0, self.lm.hidden_size, device=self.ctx.device) for t in ids}
        width = max(p[0].shape[1] for p in parts)
        pad = self.tokens[types[0][0]].pad_id
        inp = torch.cat([nn.functional.pad(p[0], (0, width - p[0].shape[1]), value=pad) for p in parts])
        mask = torch.cat([nn.functional.pad(p[1], (0, width - p[1].shape[1]), value=0) for p in parts])
        out = self.lm(inp.to(self.ctx.device), mask.to(self.ctx.device))
        res, o = {}, 0
        for t, n in types:
            res[t] = out[o:o + n]
            o += n
        for t in ids:
            res.setdefault(t, out.new_zeros(0, out.shape[1]))
        return res

    def encode_ids(self, t: str, ids: Tensor) -> Tensor:
        """LM rows ``[len(ids), hidden]`` of nodes ``ids`` of type ``t`` (no grad; evaluation
        chunks of ``run.eval_batch_size`` sharded over ranks, rows all-gathered)."""
        uniq, inv = torch.unique(ids, return_inverse=True)
        with torch.no_grad():
            rows = data_parallel.map_chunks(uniq.numel(), self.ctx.cfg.run.eval_batch_size,
                                            lambda i, j: self.lm.encode(self.tokens[t], uniq[i:j]), self.ctx.dist,
                                            self.lm.hidden_size, self.ctx.device)
        return rows[inv.to(self.ctx.device)]

    def cache_features(self, block) -> dict[str, Tensor]:
        """Input rows of a block's source nodes read from the caches: per text type
        ``[block.num_src(t), hidden]`` (partitioned: fetched from their owners, collective)."""
        if self.ctx.partition is not None:
            return {t: self.tables[t].fetch(block.src_nodes[t]).to(self.ctx.device) for t in self.ctx.text_types}
        return {t: self.caches[t].gather(block.src_nodes[t].to(self.ctx.device)) for t in self.ctx.text_types}

    def table_rows(self, t: str) -> Tensor:
        """The whole ``[N_t, hidden]`` table of ``t`` (partitioned: gathered from every
        owner, collective)."""
        if self.ctx.partition is not None:
            return partitioned.gather_table(self.tables[t], self.ctx.dist)
        return self.caches[t].table[:self.ctx.graph.num_nodes[t]]

    def write_back(self, t: str, ids: Tensor, rows: Tensor, step: int) -> None:
        """Write LM rows recomputed during training into the cache of ``t`` (every rank
        calls it; under ``torchrun`` the rows of all ranks go into every rank's cache;
        partitioned: to their owners, and every rank's cached copies are re-read)."""
        if self.ctx.partition is not None:
            self.tables[t].scatter(ids.cpu(), rows.detach().float().cpu())
            return
        data_parallel.sync_cache_update(self.caches[t], ids, rows, step, self.ctx.dist)
