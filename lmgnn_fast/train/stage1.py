"""Stage 1 — graph-aware LM: fine-tune the LM by link prediction over the graph's relations.

Each step takes a batch of edges ``(s, r, d)`` drawn (seeded, balanced over relations) from
the relations whose endpoints carry text, encodes every node of the batch plus
``stage1.num_negatives`` uniform negatives per destination type in one LM forward, and
scores each source against *all* nodes of its destination type in the batch (in-batch and
sampled negatives) with a per-relation DistMult (or dot) decoder; loss: softmax
cross-entropy of the true destination (other true destinations of the same source in the
batch are masked). With ``stage1.task_weight > 0`` the target task's loss on the LM
embeddings (node or edge classification head) is added on a batch of training items.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmgnn_fast.train.heads import EdgeHead, LinkDecoder, NodeHead
from lmgnn_fast.train.metrics import classification_metrics, ranking_metrics, ranks_from_scores

__all__ = ["run", "evaluate", "Stage1Heads"]


class Stage1Heads(nn.Module):
    def __init__(self, trainer):
        super().__init__()
        h = trainer.lm.hidden_size
        task = trainer.task
        self.decoder = LinkDecoder(len(trainer.relations), h, kind=trainer.cfg.task.decoder)
        self.task_head = None
        if trainer.cfg.stage1.task_weight > 0:
            if task.type == "node_classification":
                self.task_head = NodeHead(h, task.num_classes, multilabel=task.multilabel, dropout=0.1)
            elif task.type == "edge_classification":
                self.task_head = EdgeHead(h, task.num_classes, dropout=0.1)


def _epoch_edges(trainer, epoch: int):
    from lmgnn_fast.train.trainer import mix_seed

    cfg = trainer.cfg.stage1
    g = torch.Generator().manual_seed(mix_seed(trainer.cfg.run.seed, "stage1-edges", epoch))
    per = math.ceil(cfg.max_edges / max(len(trainer.relations), 1)) if cfg.max_edges > 0 else None
    rels, srcs, dsts = [], [], []
    for r, et in enumerate(trainer.relations):
        s, d = trainer.graph.edges(et)
        s, d = torch.as_tensor(s).long(), torch.as_tensor(d).long()
        if per is not None and s.numel() > per:
            pick = torch.randperm(s.numel(), generator=g)[:per]
            s, d = s[pick], d[pick]
        rels.append(torch.full((s.numel(),), r, dtype=torch.long))
        srcs.append(s)
        dsts.append(d)
    if not rels:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    rel, s, d = torch.cat(rels), torch.cat(srcs), torch.cat(dsts)
    perm = torch.randperm(rel.numel(), generator=g)
    return rel[perm], s[perm], d[perm]


def _lp_loss(trainer, heads, rel, s, d, gen, ids_by_type):
    """Registers the nodes this LP batch needs in ``ids_by_type`` and returns a closure
    computing the loss from the encoded rows."""
    rels = trainer.relations
    k = trainer.cfg.stage1.num_negatives
    st = [rels[int(r)][0] for r in rel]
    dt = [rels[int(r)][2] for r in rel]
    for t, v in zip(st, s):
        ids_by_type.setdefault(t, []).append(v.view(1))
    for t, v in zip(dt, d):
        ids_by_type.setdefault(t, []).append(v.view(1))
    for t in sorted(set(dt)):
        ids_by_type.setdefault(t, []).append(torch.randint(0, trainer.graph.num_nodes[t], (k,), generator=gen))

    def loss(rows, lookup):
        dev = trainer.device
        hs = torch.stack([rows[t][lookup[t][int(v)]] for t, v in zip(st, s)])
        q = heads.decoder.query(hs, rel.to(dev))
        total = 0.0
        for t in sorted(set(dt)):
            sel = torch.tensor([x == t for x in dt])
            cand = rows[t]
            logits = q[sel.to(dev)] @ cand.T
            target = torch.tensor([lookup[t][int(v)] for v in d[sel]], device=dev)
            r_s, s_s = rel[sel], s[sel]
            same = (r_s.unsqueeze(0) == r_s.unsqueeze(1)) & (s_s.unsqueeze(0) == s_s.unsqueeze(1))
            same &= target.cpu().unsqueeze(0) != target.cpu().unsqueeze(1)
            i, j = torch.nonzero(same, as_tuple=True)
            if i.numel():
                logits = logits.index_put((i.to(dev), target[j.to(dev)]), torch.tensor(float("-inf"), device=dev))
            total = total + F.cross_entropy(logits, target) * (int(sel.sum()) / rel.numel())
        return total

    return loss


def _task_nodes(trainer, ids, ids_by_type):
    """Register the nodes of task items ``ids``; returns a closure giving the task loss."""
    task, g = trainer.task, trainer.graph
    dev = trainer.device
    if task.type == "node_classification":
        ids_by_type.setdefault(task.node_type, []).append(ids)

        def loss(rows, lookup, head):
            h = rows[task.node_type][torch.tensor([lookup[task.node_type][int(v)] for v in ids], device=dev)]
            return head.loss(head(h), torch.as_tensor(g.labels[task.node_type])[ids].to(dev))
        return loss
    s, d = trainer._edge_endpoints(ids)
    st, _, dt = task.edge_type
    ids_by_type.setdefault(st, []).append(s)
    ids_by_type.setdefault(dt, []).append(d)

    def loss(rows, lookup, head):
        hs = rows[st][torch.tensor([lookup[st][int(v)] for v in s], device=dev)]
        hd = rows[dt][torch.tensor([lookup[dt][int(v)] for v in d], device=dev)]
        return head.loss(head(hs, hd), torch.as_tensor(g.edge_labels[task.edge_type])[ids].to(dev))
    return loss


def run(trainer) -> dict:
    from lmgnn_fast.train.dist import rank_slice
    from lmgnn_fast.train.trainer import mix_seed

    cfg, c1 = trainer.cfg, trainer.cfg.stage1
    trainer.load_lm("pretrained")
    torch.manual_seed(mix_seed(cfg.run.seed, "stage1-init"))
    heads = Stage1Heads(trainer).to(trainer.device)
    modules = nn.ModuleDict({"lm": trainer.lm.model, "s1": heads})
    groups = [{"params": trainer.lm.model.parameters(), "lr": c1.lr},
              {"params": heads.decoder.parameters(), "lr": c1.head_lr}]
    if heads.task_head is not None:
        groups.append({"params": heads.task_head.parameters(), "lr": c1.head_lr})
    opt = torch.optim.AdamW(groups, weight_decay=c1.weight_decay, foreach=True)
    use_lp = c1.lp_weight > 0 and len(trainer.relations) > 0
    use_task = heads.task_head is not None
    if not use_lp and not use_task:
        trainer.log("stage 1: nothing to train (no text relations and task_weight 0); saving the pretrained LM")
    task_items = trainer.task_items("train") if use_task else None
    epoch_edges = {}

    def make_batches(epoch):
        if use_lp:
            rel, s, d = _epoch_edges(trainer, epoch)
            epoch_edges[epoch] = (rel, s, d)
            return [(rel[i:i + c1.batch_size], s[i:i + c1.batch_size], d[i:i + c1.batch_size])
                    for i in range(0, rel.numel(), c1.batch_size)]
        if use_task:
            n = task_items.numel()
            return [None] * math.ceil(n / c1.task_batch_size)
        return []

    def step(batch, epoch, i):
        loss = trainer.ddp_forward(lambda: batch_loss(batch, epoch, i))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    def batch_loss(batch, epoch, i):
        gen = torch.Generator().manual_seed(mix_seed(cfg.run.seed, "stage1", epoch, i))
        ids_by_type: dict[str, list] = {}
        lp = _lp_loss(trainer, heads, *batch, gen, ids_by_type) if use_lp else None
        tl = None
        if use_task:
            perm = torch.randperm(task_items.numel(), generator=torch.Generator().manual_seed(
                mix_seed(cfg.run.seed, "stage1-task", epoch)))
            nb = max(1, math.ceil(task_items.numel() / c1.task_batch_size))
            j = i % nb
            tl = _task_nodes(trainer, rank_slice(task_items[perm[j * c1.task_batch_size:(j + 1) * c1.task_batch_size]],
                                                 trainer.dist), ids_by_type)
        uniq, lookup = {}, {}
        for t, parts in ids_by_type.items():
            u = torch.unique(torch.cat(parts))
            uniq[t] = u
            lookup[t] = {int(v): k for k, v in enumerate(u.tolist())}
        rows = trainer.encode_mixed(uniq)
        loss = 0.0
        if lp is not None:
            loss = loss + c1.lp_weight * lp(rows, lookup)
        if tl is not None:
            loss = loss + c1.task_weight * tl(rows, lookup, heads.task_head)
        return loss

    trainer.train_loop(1, c1.epochs if (use_lp or use_task) else 0, make_batches, step, lambda e: {},
                       modules, {"opt": opt})
    state = {f"lm.{k}": v for k, v in trainer.lm.model.state_dict().items()}
    state.update({f"s1.{k}": v for k, v in heads.state_dict().items()})
    trainer.ckpt.save_stage(1, state, {"relations": repr(trainer.relations)})
    trainer.lm_source = "stage1"
    return evaluate(trainer)


@torch.no_grad()
def evaluate(trainer) -> dict:
    """Val/test metrics of the stage-1 LM alone (its task head, or for link prediction its
    decoder), under the same protocol as the GNN stages."""
    from lmgnn_fast.train.dist import map_chunks

    sd = trainer.ckpt.load_stage(1)
    trainer.load_lm("stage1")
    heads = Stage1Heads(trainer).to(trainer.device)
    hs_state = {k[3:]: v for k, v in sd.items() if k.startswith("s1.")}
    if heads.task_head is None:
        hs_state = {k: v for k, v in hs_state.items() if not k.startswith("task_head.")}
    heads.load_state_dict(hs_state, strict=heads.task_head is None or any(k.startswith("task_head.") for k in hs_state))
    heads.eval()
    lm = trainer.lm
    lm.eval()
    task, g = trainer.task, trainer.graph
    bs = trainer.cfg.run.eval_batch_size

    def enc(t, ids):  # chunks sharded over ranks, rows all-gathered (identity for one process)
        uniq, inv = torch.unique(ids, return_inverse=True)
        rows = map_chunks(uniq.numel(), bs, lambda i, j: lm.encode(trainer.tokens[t], uniq[i:j]), trainer.dist,
                          lm.hidden_size, trainer.device)
        return rows[inv.to(trainer.device)]

    out = {}
    for split in ("val", "test"):
        items = trainer.task_items(split)
        if task.type == "link_prediction":
            if task.edge_type not in trainer.relations:
                return {"val": {}, "test": {}}
            r = trainer.relations.index(task.edge_type)
            s, d = items
            neg, valid = trainer.lp_candidates(split, s, d)
            hs, hd = enc(task.edge_type[0], s), enc(task.edge_type[2], d)
            hn = enc(task.edge_type[2], neg.reshape(-1)).view(neg.shape[0], neg.shape[1], -1)
            pos = heads.decoder(hs, hd, r).float().cpu()
            negs = heads.decoder.score_candidates(hs, hn, r).float().cpu()
            out[split] = ranking_metrics(ranks_from_scores(pos, negs, valid))
        elif heads.task_head is None:
            out[split] = {}
        elif task.type == "node_classification":
            logits = heads.task_head(enc(task.node_type, items)).float().cpu()
            y = torch.as_tensor(g.labels[task.node_type])[items]
            out[split] = classification_metrics(logits, y, task.multilabel, trainer.cfg.task.threshold)
        else:
            s, d = trainer._edge_endpoints(items)
            logits = heads.task_head(enc(task.edge_type[0], s), enc(task.edge_type[2], d)).float().cpu()
            y = torch.as_tensor(g.edge_labels[task.edge_type])[items]
            out[split] = classification_metrics(logits, y, False)
    return out
