"""Stage 3 — LM and R-GCN trained end to end, with the embedding cache.

Per batch, at most ``stage3.lm_train_nodes`` of the sampled input nodes that carry text go
through the LM with gradients — the seeds first (they are the prefix of each type's input
nodes), then a seeded random choice of the others; every other input row is read from the
cache. The recomputed rows are written back (cache version = the global step). A full
refresh (``encode_all``) runs every ``stage3.refresh_every`` epochs and always before the
final evaluation. The first ``stage3.warmup_epochs`` epochs train the GNN alone (LM
frozen). ``lm_train_nodes: -1`` sends every sampled text node through the LM (no cache
reads) — the baseline the cache is measured against.
"""
from __future__ import annotations

import time

import torch
from torch import nn

__all__ = ["run"]


def run(trainer) -> dict:
    from lmgnn_fast.train.data import batches
    from lmgnn_fast.train.dist import sync_cache_update
    from lmgnn_fast.train.trainer import mix_seed

    cfg, c3 = trainer.cfg, trainer.cfg.stage3
    source = trainer.lm_source_for(3)
    trainer.load_lm(source)
    if trainer.cache_source != source or not trainer.caches:
        trainer.encode_all(trainer.global_step)
    model = trainer.new_graph_model()
    if trainer.ckpt.has_stage(2):
        sd = trainer.ckpt.load_stage(2)
        model.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("gnn.")})
    lm = trainer.lm
    opt_lm = torch.optim.AdamW(lm.model.parameters(), lr=c3.lm_lr, weight_decay=0.01, foreach=True)
    opt_gnn = torch.optim.AdamW(model.parameters(), lr=c3.gnn_lr, foreach=True)
    modules = nn.ModuleDict({"lm": lm.model, "gnn": model})
    n = trainer.num_train_items()
    state = {"warm": False}
    lm_nodes_seen = [0]

    def lm_hook(blocks, x):
        if state["warm"] or c3.lm_train_nodes == 0:
            return x
        first, last = blocks[0], blocks[-1]
        cand_t, cand_p = [], []
        for j, t in enumerate(trainer.text_types):
            ns = first.num_src(t)
            cand_t.append(torch.full((ns,), j, dtype=torch.long))
            cand_p.append(torch.arange(ns))
        ct, cp = torch.cat(cand_t), torch.cat(cand_p)
        is_seed = torch.cat([torch.arange(first.num_src(t)) < last.num_dst[t] for t in trainer.text_types])
        g = torch.Generator().manual_seed(mix_seed(cfg.run.seed, "s3-lm", trainer.global_step))
        rest = torch.nonzero(~is_seed).flatten()
        rest = rest[torch.randperm(rest.numel(), generator=g)]
        order = torch.cat([torch.nonzero(is_seed).flatten(), rest])
        if c3.lm_train_nodes > 0:
            order = order[:c3.lm_train_nodes]
        chosen = {t: cp[order][ct[order] == j] for j, t in enumerate(trainer.text_types)}
        ids = {t: first.src_nodes[t][p.to(first.src_nodes[t].device)].cpu() for t, p in chosen.items()}
        rows = trainer.encode_mixed(ids)
        lm_nodes_seen[0] += sum(int(v.numel()) for v in ids.values())
        x = dict(x)
        for t, p in chosen.items():
            if p.numel():
                xt = x[t].clone()
                xt[p.to(trainer.device)] = rows[t].to(xt.dtype)
                x[t] = xt
            # every rank calls this (it all-gathers the rows under torchrun): caches stay identical
            sync_cache_update(trainer.caches[t], ids[t], rows[t], trainer.global_step, trainer.dist)
        return x

    def make_batches(epoch):
        bl = batches(n, c3.batch_size, mix_seed(cfg.run.seed, "stage3", epoch))
        return bl[:c3.max_steps_per_epoch] if c3.max_steps_per_epoch > 0 else bl

    def start_epoch(epoch):
        state["warm"] = epoch < c3.warmup_epochs
        lm.model.requires_grad_(not state["warm"])

    def step(pos, epoch, i):
        loss = trainer.ddp_forward(lambda: trainer.gnn_batch_loss(
            model, pos, trainer.cache_features, mix_seed(cfg.run.seed, "s3", epoch, i), lm_hook=lm_hook))
        opt_lm.zero_grad(set_to_none=True)
        opt_gnn.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
        if not state["warm"]:
            opt_lm.step()
        opt_gnn.step()
        return float(loss.detach())

    refreshed = {"epoch": -1}

    def end_epoch(epoch):
        if c3.refresh_every and (epoch + 1) % c3.refresh_every == 0 and not state["warm"]:
            t0 = time.time()
            trainer.lm_source = "stage3-training"
            trainer.encode_all(trainer.global_step)
            refreshed["epoch"] = epoch
            trainer.log(f"stage 3: cache refreshed in {time.time() - t0:.1f}s")
        val, _ = trainer.gnn_scores(model, "val", trainer.cache_features)
        return val

    trainer.train_loop(3, c3.epochs, make_batches, step, end_epoch, modules,
                       {"lm": opt_lm, "gnn": opt_gnn}, start_epoch_hook=start_epoch)
    lm.model.requires_grad_(True)
    state_sd = {f"lm.{k}": v for k, v in lm.model.state_dict().items()}
    state_sd.update({f"gnn.{k}": v for k, v in model.state_dict().items()})
    trainer.ckpt.save_stage(3, state_sd, {"lm_source": "stage3"})
    trainer.lm_source = "stage3"
    if refreshed["epoch"] == c3.epochs - 1 and trainer.cache_source == "stage3-training":
        trainer.cache_source = "stage3"  # the last refresh used exactly the final LM
    res = trainer.evaluate_stage(3)
    ep = [r["epoch_time_s"] for r in trainer.history.get("stage3", []) if "epoch_time_s" in r]
    res["epoch_time_s"] = ep
    res["steps_per_epoch"] = len(make_batches(0))
    res["lm_nodes_per_epoch"] = lm_nodes_seen[0] / max(len(ep), 1)
    return res
