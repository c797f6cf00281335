"""The trainer: state shared by the three stages, batching, evaluation and outputs.

The stages themselves live in ``stage1.py``, ``stage2.py`` and ``stage3.py``; each takes a
:class:`Trainer`, trains, saves ``checkpoints/stage{k}.safetensors`` and returns its
validation/test metrics computed by :meth:`Trainer.evaluate_stage` — the same function
``python -m lmgnn_fast.evaluate`` calls, so a saved run re-evaluates to the same numbers.
"""
from __future__ import annotations

import json
import os
import sys
import time
import zlib

import torch
from torch import Tensor, nn

from lmgnn_fast.io.paths import safe_join
from lmgnn_fast.train import _deps
from lmgnn_fast.train import dist as tdist
from lmgnn_fast.train.checkpoint import atomic_write_json, seed_everything, set_rng_state
from lmgnn_fast.train.config import Config
from lmgnn_fast.train.data import (TargetTask, known_edge_keys, resolve_relations, resolve_task,
                                   split_items, text_types)
from lmgnn_fast.train.errors import DataError, SimulatedInterrupt, TrainingError
from lmgnn_fast.train.heads import bce_link_loss, contrastive_loss
from lmgnn_fast.train.metrics import (classification_metrics, eval_negatives, ranking_metrics,
                                      ranks_from_scores)

__all__ = ["Trainer", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU. A CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"run.device: unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise TrainingError(f"run.device is {name!r} but CUDA is not available ({why}); "
                                "use --run.device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(f"run.device is {name!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


def mix_seed(*parts) -> int:
    """A deterministic 31-bit seed from ``parts`` (ints/strings)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


class Trainer:
    """Holds the graph, task, LM, token cache, embedding caches and the run directory.

    Args:
        cfg: the full configuration.
        graph: an already loaded graph (default: load ``cfg.data.name``).
        log: where progress lines go (default: print to stdout).
    """

    def __init__(self, cfg: Config, graph=None, log=None):
        self.cfg = cfg.validate()
        self.log = log or (lambda *a: print(*a, flush=True))
        self.device = resolve_device(cfg.run.device)
        self.dist = tdist.setup(self.device, cfg.run.dist_timeout)  # torchrun rank (or 1 process)
        self.device = self.dist.device
        if not self.dist.is_main:
            self.log = lambda *a: None
        if cfg.run.num_threads > 0:
            torch.set_num_threads(cfg.run.num_threads)
        self.stages = cfg.stage_list
        self.graph = graph if graph is not None else _deps.load_graph(cfg.data.name, cfg.data.options)
        self.task: TargetTask = resolve_task(self.graph, cfg.task)
        self.relations = resolve_relations(self.graph, cfg.stage1.relations)
        if self.task.type == "link_prediction" and self.task.edge_type not in self.relations \
                and self.task.edge_type[0] in text_types(self.graph) and self.task.edge_type[2] in text_types(self.graph):
            self.relations.append(self.task.edge_type)
        self.text_types = text_types(self.graph) if cfg.gnn.text_features else []
        if not self.text_types and (1 in self.stages or 3 in self.stages):
            why = "gnn.text_features is false" if not cfg.gnn.text_features else "no node type of the graph has text"
            raise DataError(f"stages 1 and 3 train the LM but {why}; use --run.stages 2")
        os.makedirs(cfg.run.out_dir, exist_ok=True)
        self.out_dir = cfg.run.out_dir
        self.ckpt = tdist.RankZeroCheckpoints(self.out_dir, self.dist)
        self.history: dict[str, list[dict]] = {}
        self.results: dict[str, dict] = {}
        self.global_step = 0
        self.resume_state = None
        self.lm = None
        self.lm_source = None  # which weights self.lm holds: "pretrained" | "stage1" | "stage3"
        self.tokens: dict = {}
        self.caches: dict = {}
        self.cache_source = None
        self._sampler = None
        self._lp_eid = None

    # ------------------------------------------------------------------ setup
    @property
    def sampler(self):
        if self._sampler is None:
            self._sampler = _deps.make_sampler(self.graph, [int(f) for f in self.cfg.gnn.fanouts],
                                               seed=self.cfg.run.seed)
        return self._sampler

    def load_lm(self, source: str) -> None:
        """Put the LM with weights ``source`` ("pretrained", "stage1", "stage3") in ``self.lm``."""
        from lmgnn_fast.lm import LMEncoder

        if (self.lm is not None and self.lm_source == source) or not self.text_types:
            return
        if self.lm is None:
            c = self.cfg.lm
            self.lm = LMEncoder.from_pretrained(c.name, pooling=c.pooling,
                                                gradient_checkpointing=c.gradient_checkpointing)
            self.lm.set_autocast(self.device, c.precision)
            self.lm.to(self.device)
            self._pretrained_lm = {k: v.detach().clone() for k, v in self.lm.model.state_dict().items()}
            self.lm_source = "pretrained"
            self.tokenize()
        if source == "pretrained":
            if self.lm_source != "pretrained":
                self.lm.model.load_state_dict(self._pretrained_lm)
        else:
            sd = self.ckpt.load_stage(int(source[-1]))
            self.lm.model.load_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("lm.")})
        self.lm_source = source

    def tokenize(self) -> None:
        """Tokenize every text node type once; reuse ``<out_dir>/tokens/<type>.safetensors``
        when texts, tokenizer and ``max_length`` are unchanged."""
        from lmgnn_fast.lm import TokenizedTexts, texts_fingerprint

        os.makedirs(os.path.join(self.out_dir, "tokens"), exist_ok=True)
        for t in self.text_types:
            texts = list(self.graph.text[t])
            fp = texts_fingerprint(texts, self.lm.name, self.cfg.lm.max_length)
            path = safe_join(os.path.join(self.out_dir, "tokens"), t, ".safetensors", "node type")
            if os.path.exists(path):
                tok = TokenizedTexts.load(path)
                if tok.fingerprint == fp:
                    self.tokens[t] = tok
                    continue
            tok = self.lm.tokenize(texts, self.cfg.lm.max_length)
            if self.dist.is_main:
                tok.save(path)
            self.tokens[t] = tok

    def lm_source_for(self, stage: int) -> str:
        """The LM weights stage ``stage`` starts from."""
        if stage >= 2 and (1 in self.stages or self.ckpt.has_stage(1)):
            return "stage1"
        return "pretrained"

    def encode_all(self, step: int = 0) -> None:
        """Fill one embedding cache per text node type with the current LM."""
        cap = self.cfg.stage3.cache_capacity
        for t in self.text_types:
            n = self.graph.num_nodes[t]
            if t not in self.caches:
                self.caches[t] = _deps.make_cache(n, self.lm.hidden_size, self.device, capacity=cap,
                                                  policy=self.cfg.stage3.cache_policy)
            if self.dist.is_distributed:
                tdist.encode_all_sharded(self.lm, self.tokens[t], self.caches[t], self.cfg.lm.encode_batch_size,
                                         step, self.dist)
                continue
            self.lm.encode_all(self.tokens[t], self.caches[t], batch_size=self.cfg.lm.encode_batch_size,
                               step=step, desc=f"encode {t}", progress=self.cfg.run.progress)
        self.cache_source = self.lm_source

    def encode_mixed(self, ids: dict[str, Tensor]) -> dict[str, Tensor]:
        """One LM forward (with grad if enabled) over the texts of several node types."""
        parts, types = [], []
        for t, v in ids.items():
            if v.numel():
                parts.append(self.tokens[t].batch(v.cpu(), "cpu"))
                types.append((t, v.numel()))
        if not parts:
            return {t: torch.zeros(0, self.lm.hidden_size, device=self.device) for t in ids}
        width = max(p[0].shape[1] for p in parts)
        pad = self.tokens[types[0][0]].pad_id
        inp = torch.cat([nn.functional.pad(p[0], (0, width - p[0].shape[1]), value=pad) for p in parts])
        mask = torch.cat([nn.functional.pad(p[1], (0, width - p[1].shape[1]), value=0) for p in parts])
        out = self.lm(inp.to(self.device), mask.to(self.device))
        res, o = {}, 0
        for t, n in types:
            res[t] = out[o:o + n]
            o += n
        for t in ids:
            res.setdefault(t, out.new_zeros(0, out.shape[1]))
        return res

    # ------------------------------------------------------------------ GNN batches
    def cache_features(self, block) -> dict[str, Tensor]:
        return {t: self.caches[t].gather(block.src_nodes[t].to(self.device)) for t in self.text_types}

    def sample(self, seeds: dict[str, Tensor], seed: int, exclude=None):
        blocks = self.sampler.sample(seeds, exclude_eids=exclude, seed=seed)
        return [b.to(self.device) for b in blocks]

    def lp_eids(self, src: Tensor, dst: Tensor) -> Tensor:
        """Edge ids of the message-passing edges ``(src, dst)`` of the LP relation."""
        et = self.task.edge_type
        if self._lp_eid is None:
            csc = self.graph.csc[et]
            deg = (csc.indptr[1:] - csc.indptr[:-1]).long()
            d = torch.repeat_interleave(torch.arange(deg.numel()), deg)
            keys = csc.indices.long() * self.graph.num_nodes[et[2]] + d
            order = torch.argsort(keys)
            self._lp_eid = (keys[order], csc.eid.long()[order])
        keys, eids = self._lp_eid
        if keys.numel() == 0:
            return torch.empty(0, dtype=torch.long)
        q = src * self.graph.num_nodes[et[2]] + dst
        pos = torch.searchsorted(keys, q).clamp_max(keys.numel() - 1)
        return eids[pos[keys[pos] == q]]

    def task_items(self, split: str):
        return split_items(self.graph, self.task, split)

    def num_train_items(self) -> int:
        items = self.task_items("train")
        return int(items[0].numel() if isinstance(items, tuple) else items.numel())

    def gnn_batch_loss(self, model, pos: Tensor, feats, seed: int, lm_hook=None) -> Tensor:
        """Loss of the task on one training batch (positions ``pos`` into the train items).

        ``feats(block) -> dict[type, Tensor]`` gives the input rows of ``blocks[0]``;
        ``lm_hook(blocks, x)`` may replace some of them (stage 3)."""
        task, g = self.task, self.graph
        items = self.task_items("train")
        gen = torch.Generator().manual_seed(seed)
        if task.type == "node_classification":
            ids = items[pos]
            blocks = self.sample({task.node_type: ids}, seed)
            x = feats(blocks[0]) if lm_hook is None else lm_hook(blocks, feats(blocks[0]))
            h = model(x, blocks)[task.node_type]
            y = torch.as_tensor(g.labels[task.node_type])[ids].to(self.device)
            return model.head.loss(model.head(h), y)
        if task.type == "edge_classification":
            eids = items[pos]
            s, d = self._edge_endpoints(eids)
            seeds, (ps, pd) = _seed_positions([(task.edge_type[0], s), (task.edge_type[2], d)])
            blocks = self.sample(seeds, seed)
            x = feats(blocks[0]) if lm_hook is None else lm_hook(blocks, feats(blocks[0]))
            h = model(x, blocks)
            logits = model.head(h[task.edge_type[0]][ps], h[task.edge_type[2]][pd])
            y = torch.as_tensor(g.edge_labels[task.edge_type])[eids].to(self.device)
            return model.head.loss(logits, y)
        # link prediction
        s_all, d_all = items
        s, d = s_all[pos], d_all[pos]
        st, _, dt = task.edge_type
        k = self.cfg.task.num_negatives
        n_dst = g.num_nodes[dt]
        mode = self.cfg.task.negatives
        if mode == "uniform":
            neg = torch.randint(0, n_dst, (s.numel(), k), generator=gen)
        elif mode == "joint":
            neg = torch.randint(0, n_dst, (k,), generator=gen).expand(s.numel(), k)
        else:
            neg = d.unsqueeze(0).expand(s.numel(), s.numel())
        seeds, (ps, pd, pn) = _seed_positions([(st, s), (dt, d), (dt, neg.reshape(-1))])
        eids = self.lp_eids(s, d)
        exclude = {task.edge_type: eids}
        rev = (getattr(g, "reverse_of", None) or {}).get(task.edge_type)
        if rev is not None:
            exclude[rev] = eids
        blocks = self.sample(seeds, seed, exclude=exclude)
        x = feats(blocks[0]) if lm_hook is None else lm_hook(blocks, feats(blocks[0]))
        h = model(x, blocks)
        hs, hd = h[st][ps], h[dt][pd]
        hn = h[dt][pn].view(s.numel(), neg.shape[1], -1)
        ps_score = model.head(hs, hd)
        ns_score = model.head.score_candidates(hs, hn)
        mask = None
        if mode == "in_batch":
            mask = ~torch.eye(s.numel(), dtype=torch.bool, device=self.device)
            mask &= neg.to(self.device) != d.to(self.device).unsqueeze(1)
        loss_fn = contrastive_loss if self.cfg.task.loss == "contrastive" else bce_link_loss
        return loss_fn(ps_score, ns_score, mask)

    def _edge_endpoints(self, eids: Tensor) -> tuple[Tensor, Tensor]:
        """Endpoints of edges ``eids`` of the target relation (indexed by edge id)."""
        if getattr(self, "_ec_ends", None) is None:
            csc = self.graph.csc[self.task.edge_type]
            eid = csc.eid.long()
            n = int(eid.max()) + 1 if eid.numel() else 0
            src = torch.full((n,), -1, dtype=torch.long)
            dst = torch.full((n,), -1, dtype=torch.long)
            deg = (csc.indptr[1:] - csc.indptr[:-1]).long()
            src[eid] = csc.indices.long()
            dst[eid] = torch.repeat_interleave(torch.arange(deg.numel()), deg)
            self._ec_ends = (src, dst)
        src, dst = self._ec_ends
        return src[eids], dst[eids]

    @torch.no_grad()
    def embed_nodes(self, model, t: str, ids: Tensor, feats, seed: int) -> Tensor:
        """GNN output rows ``[len(ids), hidden]`` for nodes ``ids`` of type ``t`` (eval mode,
        sampled with the fixed evaluation seed)."""
        model.eval()

        def chunk(i, j):  # sharded over ranks by tdist.map_chunks (same chunks and seeds)
            blocks = self.sample({t: ids[i:j]}, mix_seed(seed, t, i))
            return model(feats(blocks[0]), blocks)[t]
        return tdist.map_chunks(ids.numel(), self.cfg.run.eval_batch_size, chunk, self.dist,
                                self.cfg.gnn.hidden, self.device)

    @torch.no_grad()
    def gnn_scores(self, model, split: str, feats) -> tuple[dict, dict]:
        """Metrics and raw outputs of the GNN model on ``split`` (eval protocol: fixed
        sampling seed per split; LP ranked as documented in ``metrics.py``)."""
        task, g = self.task, self.graph
        seed = mix_seed(self.cfg.run.seed, "eval", split)
        items = self.task_items(split)
        if task.type == "node_classification":
            h = self.embed_nodes(model, task.node_type, items, feats, seed)
            logits = model.head(h).float().cpu()
            y = torch.as_tensor(g.labels[task.node_type])[items]
            return classification_metrics(logits, y, task.multilabel, self.cfg.task.threshold), \
                {"ids": items, "logits": logits}
        if task.type == "edge_classification":
            s, d = self._edge_endpoints(items)
            hs = self._embed_unique(model, task.edge_type[0], s, feats, seed)
            hd = self._embed_unique(model, task.edge_type[2], d, feats, seed + 1)
            logits = model.head(hs, hd).float().cpu()
            y = torch.as_tensor(g.edge_labels[task.edge_type])[items]
            return classification_metrics(logits, y, False), {"ids": items, "logits": logits}
        s, d = items
        neg, valid = self.lp_candidates(split, s, d)
        st, _, dt = task.edge_type
        hs = self._embed_unique(model, st, s, feats, seed)
        hd = self._embed_unique(model, dt, d, feats, seed + 1)
        hn = self._embed_unique(model, dt, neg.reshape(-1), feats, seed + 2).view(neg.shape[0], neg.shape[1], -1)
        pos = model.head(hs, hd).float().cpu()
        negs = model.head.score_candidates(hs, hn).float().cpu()
        ranks = ranks_from_scores(pos, negs, valid)
        return ranking_metrics(ranks), {"src": s, "dst": d, "score": pos, "rank": ranks}

    def lp_candidates(self, split: str, s: Tensor, d: Tensor):
        n_dst = self.graph.num_nodes[self.task.edge_type[2]]
        return eval_negatives(s, d, n_dst, self.cfg.task.eval_negatives,
                              mix_seed(self.cfg.run.seed, "negatives", split), known_edge_keys(self.graph, self.task))

    def _embed_unique(self, model, t: str, ids: Tensor, feats, seed: int) -> Tensor:
        uniq, inv = torch.unique(ids, return_inverse=True)
        return self.embed_nodes(model, t, uniq, feats, seed)[inv.to(self.device)]

    # ------------------------------------------------------------------ stage runs
    def new_graph_model(self):
        from lmgnn_fast.train.model import GraphModel

        torch.manual_seed(mix_seed(self.cfg.run.seed, "gnn-init"))
        lm_dim = self.lm.hidden_size if self.lm is not None else 0
        return GraphModel(self.graph, self.task, lm_dim, self.text_types, self.cfg.gnn,
                          self.cfg.task).to(self.device)

    def evaluate_stage(self, stage: int) -> dict:
        """Val/test metrics of the checkpoint of ``stage`` (what ``evaluate`` reports)."""
        from lmgnn_fast.train import stage1

        if stage == 1:
            return stage1.evaluate(self)
        sd = self.ckpt.load_stage(stage)
        self.load_lm("stage3" if stage == 3 else sd_meta_lm(self, stage))
        if self.text_types and (self.cache_source != self.lm_source or not self.caches):
            self.encode_all(self.global_step)
        model = self.new_graph_model()
        model.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("gnn.")})
        feats = self.cache_features
        res = {}
        for split in ("val", "test"):
            res[split], _ = self.gnn_scores(model, split, feats)
        self._final_model = model
        return res

    def train_loop(self, stage: int, epochs: int, make_batches, step_fn, end_epoch, modules: nn.Module,
                   optimizers: dict, extra_state=None, restore_extra=None, start_epoch_hook=None):
        """Epochs of ``step_fn(batch, epoch, i) -> loss`` with progress bars, mid-epoch
        checkpoints and resuming. ``end_epoch(epoch) -> dict | None`` returns validation
        metrics (``None`` stops early)."""
        from tqdm.auto import tqdm

        hist = self.history.setdefault(f"stage{stage}", [])
        start_epoch, start_step = 0, 0
        rs = self.resume_state
        if rs is not None and rs["state"]["stage"] == stage:
            modules.load_state_dict({k: v for k, v in rs["model"].items() if not k.startswith("__extra__.")})
            for name, opt in optimizers.items():
                opt.load_state_dict(rs["optim"][name])
            start_epoch, start_step = rs["state"]["epoch"], rs["state"]["step"]
            self.global_step = rs["state"]["global_step"]
            hist[:] = rs["state"].get("history", [])
            if restore_extra is not None:
                restore_extra(rs["state"].get("extra"), {k[10:]: v for k, v in rs["model"].items()
                                                        if k.startswith("__extra__.")})
            set_rng_state(rs["state"]["rng"])
            self.resume_state = None
            self.log(f"stage {stage}: resuming at epoch {start_epoch}, step {start_step} "
                     f"(global step {self.global_step})")

        def save(epoch, step):
            extra_json, extra_t = (extra_state() if extra_state else (None, {}))
            sd = dict(modules.state_dict())
            sd.update({f"__extra__.{k}": v for k, v in extra_t.items()})
            self.ckpt.save_last({"stage": stage, "epoch": epoch, "step": step, "global_step": self.global_step,
                                 "history": hist, "extra": extra_json}, sd, optimizers)

        self.ddp_forward = tdist.wrap_modules(modules, self.dist)  # step closures run through it
        ce = self.cfg.run.checkpoint_every
        for epoch in range(start_epoch, epochs):
            if start_epoch_hook is not None:
                start_epoch_hook(epoch)
            bl = tdist.shard_batches(make_batches(epoch), self.dist)
            modules.train()
            bar = tqdm(total=len(bl), desc=f"stage {stage} epoch {epoch + 1}/{epochs}",
                       disable=not self.cfg.run.progress or not self.dist.is_main, leave=False, unit="batch", file=sys.stderr)
            bar.update(start_step if epoch == start_epoch else 0)
            t0 = time.time()
            for i, batch in enumerate(bl):
                if epoch == start_epoch and i < start_step:
                    continue
                loss = tdist.mean_over_ranks(step_fn(batch, epoch, i), self.dist)
                self.global_step += 1
                tdist.maybe_fail(self.dist, self.global_step)
                hist.append({"step": self.global_step, "epoch": epoch, "loss": float(loss)})
                bar.set_postfix(loss=f"{float(loss):.4f}")
                bar.update(1)
                if ce and self.global_step % ce == 0 and i + 1 < len(bl):
                    save(epoch, i + 1)
                if self.cfg.run.interrupt_after_steps and self.global_step >= self.cfg.run.interrupt_after_steps:
                    bar.close()
                    raise SimulatedInterrupt(f"interrupted after {self.global_step} steps (run.interrupt_after_steps)")
            bar.close()
            epoch_time = time.time() - t0
            val = end_epoch(epoch)
            rec = {"step": self.global_step, "epoch": epoch, "epoch_time_s": epoch_time}
            if val:
                rec.update({f"val_{k}": v for k, v in val.items()})
                self.log(f"stage {stage} epoch {epoch + 1}: " + ", ".join(f"val {k} {v:.4f}" for k, v in val.items())
                         + f" ({epoch_time:.1f}s)")
            hist.append(rec)
            save(epoch + 1, 0)
            start_step = 0
            if val is None:
                break

    def write_metrics(self) -> None:
        if not self.dist.is_main:
            return
        atomic_write_json(os.path.join(self.out_dir, "metrics.json"),
                          {"task": {"name": self.task.name, "type": self.task.type,
                                    "primary_metric": self.task.primary_metric},
                           "stages": self.results, "history": self.history})
        try:
            from lmgnn_fast.train.plots import plot_curves

            plot_curves(self.history, os.path.join(self.out_dir, "curves.png"))
        except Exception as e:  # noqa: BLE001 - a plot must never fail a run
            self.log(f"warning: could not draw curves.png: {e}")

    def load_previous_results(self) -> None:
        path = os.path.join(self.out_dir, "metrics.json")
        if os.path.exists(path):
            with open(path) as f:
                m = json.load(f)
            self.results = m.get("stages", {})
            self.history = m.get("history", {})

    def run(self) -> dict:
        """Run the configured stages; returns ``{"stage{k}": {"val": .., "test": ..}}``."""
        from lmgnn_fast.train import stage1, stage2, stage3

        self.log("lmgnn_fast.train configuration:\n" + self.cfg.to_yaml())
        if self.dist.is_main:
            self.cfg.save(os.path.join(self.out_dir, "config.yaml"))
        self.log(f"task {self.task.name!r} ({self.task.type}), device {self.device}"
                 + (f", {self.dist.world_size} processes" if self.dist.is_distributed else ""))
        seed_everything(self.cfg.run.seed)
        if self.cfg.run.resume:
            self.load_previous_results()
            last = self.ckpt.load_last()
            if last is not None:
                state, model, optim = last
                self.resume_state = {"state": state, "model": model, "optim": optim}
        else:
            self.ckpt.clear_last()
        runners = {1: stage1.run, 2: stage2.run, 3: stage3.run}
        for stage in self.stages:
            key = f"stage{stage}"
            rs = self.resume_state
            if self.cfg.run.resume and key in self.results and self.ckpt.has_stage(stage) and \
                    (rs is None or rs["state"]["stage"] != stage):
                self.log(f"stage {stage}: already done, skipping (resume)")
                continue
            t0 = time.time()
            with oom_guard(self.cfg, stage):
                res = runners[stage](self)
            res["time_s"] = round(time.time() - t0, 2)
            self.results[key] = res
            self.write_metrics()
        self.ckpt.clear_last()
        self.write_outputs()
        self.log(format_table(self.results, self.task))
        return self.results

    def write_outputs(self) -> None:
        from lmgnn_fast.train.outputs import write_outputs

        write_outputs(self)


def sd_meta_lm(trainer: Trainer, stage: int) -> str:
    from lmgnn_fast.train.checkpoint import load_tensors

    _, meta = load_tensors(trainer.ckpt.stage_path(stage))
    return meta.get("lm_source", "pretrained")


def _seed_positions(parts: list[tuple[str, Tensor]]) -> tuple[dict[str, Tensor], list[Tensor]]:
    """Unique seeds per node type from several id lists, and each list's positions in them."""
    by_type: dict[str, list[Tensor]] = {}
    for t, ids in parts:
        by_type.setdefault(t, []).append(ids.long())
    seeds, inv_of = {}, {}
    for t, lst in by_type.items():
        cat = torch.cat(lst)
        uniq, inv = torch.unique(cat, return_inverse=True)
        seeds[t] = uniq
        inv_of[t] = list(torch.split(inv, [x.numel() for x in lst]))
    out = []
    for t, _ in parts:
        out.append(inv_of[t].pop(0))
    return seeds, out


class oom_guard:
    """Turn an out-of-memory error into a message naming the settings to lower."""

    def __init__(self, cfg: Config, stage: int):
        self.cfg, self.stage = cfg, stage

    def __enter__(self):
        return self

    def __exit__(self, tp, e, tb):
        if e is None:
            return False
        oom = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or (
            isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)))
        if not oom:
            return False
        c = self.cfg
        hints = {1: [f"stage1.batch_size (now {c.stage1.batch_size})", f"stage1.num_negatives (now {c.stage1.num_negatives})",
                     f"lm.max_length (now {c.lm.max_length})", "or set lm.gradient_checkpointing true"],
                 2: [f"stage2.batch_size (now {c.stage2.batch_size})", f"gnn.fanouts (now {c.gnn.fanouts})",
                     f"lm.encode_batch_size (now {c.lm.encode_batch_size})", f"stage3.cache_capacity (now {c.stage3.cache_capacity})"],
                 3: [f"stage3.lm_train_nodes (now {c.stage3.lm_train_nodes})", f"stage3.batch_size (now {c.stage3.batch_size})",
                     f"lm.max_length (now {c.lm.max_length})", f"gnn.fanouts (now {c.gnn.fanouts})",
                     "or set lm.gradient_checkpointing true"]}[self.stage]
        raise TrainingError(f"out of memory in stage {self.stage} on {c.run.device}: lower " + ", ".join(hints)) from e


def format_table(results: dict, task: TargetTask) -> str:
    """Markdown table of validation/test metrics per stage."""
    keys = []
    for r in results.values():
        for split in ("val", "test"):
            for k in (r.get(split) or {}):
                if k not in keys:
                    keys.append(k)
    head = "| stage | split | " + " | ".join(keys) + " | time (s) |"
    lines = [f"\nResults: task {task.name} ({task.type})", head, "|" + "---|" * (len(keys) + 3)]
    for stage in sorted(results):
        r = results[stage]
        for split in ("val", "test"):
            m = r.get(split) or {}
            vals = " | ".join(f"{m[k]:.4f}" if k in m else "-" for k in keys)
            lines.append(f"| {stage} | {split} | {vals} | {r.get('time_s', '-')} |")
    return "\n".join(lines)
