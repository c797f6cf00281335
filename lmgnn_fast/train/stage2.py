"""Stage 2 — R-GCN + task head on frozen LM embeddings.

``encode_all`` with the stage-1 LM (the pretrained one when stage 1 was not run) fills one
embedding cache per text node type; the R-GCN trains over sampled blocks reading its input
rows from the caches. The epoch with the best validation metric is kept (early stopping
after ``stage2.patience`` epochs without improvement).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["run"]


def run(trainer) -> dict:
    from lmgnn_fast.train.data import batches
    from lmgnn_fast.train.trainer import mix_seed

    cfg, c2 = trainer.cfg, trainer.cfg.stage2
    source = trainer.lm_source_for(2)
    trainer.load_lm(source)
    if trainer.text_types and (trainer.cache_source != source or not trainer.caches):
        trainer.encode_all(trainer.global_step)
    model = trainer.new_graph_model()
    opt = torch.optim.AdamW(model.parameters(), lr=c2.lr, weight_decay=c2.weight_decay, foreach=True)
    modules = nn.ModuleDict({"gnn": model})
    n = trainer.num_train_items()
    metric = trainer.task.primary_metric
    best = {"value": None, "epoch": -1, "state": None}

    def make_batches(epoch):
        return batches(n, c2.batch_size, mix_seed(cfg.run.seed, "stage2", epoch))

    def step(pos, epoch, i):
        loss = trainer.ddp_forward(lambda: trainer.gnn_batch_loss(model, pos, trainer.cache_features,
                                                                  mix_seed(cfg.run.seed, "s2", epoch, i)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def end_epoch(epoch):
        val, _ = trainer.gnn_scores(model, "val", trainer.cache_features)
        v = val.get(metric, float("nan"))
        if best["value"] is None or v > best["value"]:
            best.update(value=v, epoch=epoch, state={k: t.detach().clone() for k, t in model.state_dict().items()})
        elif c2.patience and epoch - best["epoch"] >= c2.patience:
            trainer.log(f"stage 2: no validation improvement for {c2.patience} epochs, stopping")
            return None
        return val

    def extra_state():
        return ({"value": best["value"], "epoch": best["epoch"]}, dict(best["state"] or {}))

    def restore_extra(meta, tensors):
        if meta:
            best.update(value=meta["value"], epoch=meta["epoch"], state=tensors or None)

    trainer.train_loop(2, c2.epochs, make_batches, step, end_epoch, modules, {"opt": opt},
                       extra_state, restore_extra)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    trainer.ckpt.save_stage(2, {f"gnn.{k}": v for k, v in model.state_dict().items()},
                            {"lm_source": source, "best_epoch": str(best["epoch"])})
    return trainer.evaluate_stage(2)
