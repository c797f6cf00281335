"""A small text-attributed heterogeneous graph for the trainer tests.

``write_toy_dir(path)`` writes it in the documented directory format; papers carry a topic
(the label) that both their text and their citations reveal. ``toy_graph()`` builds the same
graph in memory following the ``HeteroGraph`` contract, for builds without the data layer.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import SimpleNamespace

import torch

TOPICS = [["graph", "node", "edge", "walk"], ["protein", "cell", "gene", "enzyme"],
          ["market", "price", "trade", "stock"]]
FILLER = ["the", "a", "study", "of", "new", "method", "results", "we", "show"]


def _tables(num_papers=60, num_authors=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    topic = torch.randint(0, 3, (num_papers,), generator=g)
    papers = []
    for i in range(num_papers):
        words = [TOPICS[int(topic[i])][int(j)] for j in torch.randint(0, 4, (3,), generator=g)]
        words += [FILLER[int(j)] for j in torch.randint(0, len(FILLER), (3,), generator=g)]
        split = ["train", "train", "train", "val", "test"][i % 5]
        multi = [str(int(topic[i]))] + ([str((int(topic[i]) + 1) % 3)] if i % 4 == 0 else [])
        papers.append({"id": f"p{i}", "text": " ".join(words), "label": int(topic[i]), "split": split,
                       "multi": "|".join(multi)})
    authors = [{"id": f"a{i}", "text": f"author {FILLER[i % len(FILLER)]} {TOPICS[i % 3][i % 4]}"}
               for i in range(num_authors)]
    cites, writes = [], []
    for i in range(num_papers):
        same = [j for j in range(num_papers) if j != i and int(topic[j]) == int(topic[i])]
        for k in torch.randint(0, len(same), (3,), generator=g).tolist():
            cites.append((f"p{i}", f"p{same[k]}"))
        a = (int(topic[i]) + 3 * int(torch.randint(0, num_authors // 3, (1,), generator=g))) % num_authors
        writes.append((f"a{a}", f"p{i}", int(i % 2)))
    cites = sorted(set(cites))
    return papers, authors, cites, writes


def write_toy_dir(path: str, num_papers: int = 60, seed: int = 0, multilabel: bool = False) -> str:
    """Write the toy graph in the documented directory format (CSV)."""
    import csv

    papers, authors, cites, writes = _tables(num_papers, seed=seed)
    os.makedirs(os.path.join(path, "nodes"), exist_ok=True)
    os.makedirs(os.path.join(path, "edges"), exist_ok=True)
    with open(os.path.join(path, "nodes", "paper.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "split"])
        for p in papers:
            w.writerow([p["id"], p["text"], p["multi"] if multilabel else p["label"], p["split"]])
    with open(os.path.join(path, "nodes", "author.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for a in authors:
            w.writerow([a["id"], a["text"]])
    with open(os.path.join(path, "edges", "paper__cites__paper.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src", "dst"])
        w.writerows(cites)
    with open(os.path.join(path, "edges", "author__writes__paper.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src", "dst", "label"])
        w.writerows(writes)
    meta = {"name": "toy", "node_types": ["paper", "author"],
            "edge_types": [["paper", "cites", "paper"], ["author", "writes", "paper"]],
            "add_reverse_edges": True,
            "tasks": [{"name": "topic", "type": "node_classification", "node_type": "paper",
                       "multilabel": multilabel},
                      {"name": "cites", "type": "link_prediction", "edge_type": ["paper", "cites", "paper"]},
                      {"name": "role", "type": "edge_classification", "edge_type": ["author", "writes", "paper"]}]}
    with open(os.path.join(path, "metadata.json"), "w") as f:
        json.dump(meta, f)
    return path


@dataclass
class _CSC:
    indptr: torch.Tensor
    indices: torch.Tensor
    eid: torch.Tensor


def _csc(src, dst, eid, n_dst):
    order = torch.argsort(dst * (src.numel() + 1) + torch.arange(src.numel()), stable=True)
    indptr = torch.zeros(n_dst + 1, dtype=torch.long)
    indptr[1:] = torch.cumsum(torch.bincount(dst, minlength=n_dst), 0)
    return _CSC(indptr, src[order], eid[order])


def toy_graph(num_papers: int = 60, seed: int = 0, multilabel: bool = False):
    """The toy graph as an in-memory object following the ``HeteroGraph`` contract."""
    papers, authors, cites, writes = _tables(num_papers, seed=seed)
    pid = {p["id"]: i for i, p in enumerate(papers)}
    aid = {a["id"]: i for i, a in enumerate(authors)}
    n = {"paper": len(papers), "author": len(authors)}
    split = [p["split"] for p in papers]
    masks = {"paper": {s: torch.tensor([x == s for x in split]) for s in ("train", "val", "test")}}
    if multilabel:
        lab = torch.zeros(len(papers), 3)
        for i, p in enumerate(papers):
            for c in p["multi"].split("|"):
                lab[i, int(c)] = 1
    else:
        lab = torch.tensor([p["label"] for p in papers])
    cs = torch.tensor([pid[a] for a, _ in cites])
    cd = torch.tensor([pid[b] for _, b in cites])
    g = torch.Generator().manual_seed(seed)
    r = torch.rand(cs.numel(), generator=g)
    cmask = {"train": r < 0.8, "val": (r >= 0.8) & (r < 0.9), "test": r >= 0.9}
    ws = torch.tensor([aid[a] for a, _, _ in writes])
    wd = torch.tensor([pid[b] for _, b, _ in writes])
    wl = torch.tensor([x for _, _, x in writes])
    wr = torch.rand(ws.numel(), generator=g)
    wmask = {"train": wr < 0.8, "val": (wr >= 0.8) & (wr < 0.9), "test": wr >= 0.9}
    ets = [("paper", "cites", "paper"), ("author", "writes", "paper"),
           ("paper", "rev-cites", "paper"), ("paper", "rev-writes", "author")]
    tr = cmask["train"]
    ceid = torch.arange(cs.numel())
    weid = torch.arange(ws.numel())
    csc = {ets[0]: _csc(cs[tr], cd[tr], ceid[tr], n["paper"]),
           ets[1]: _csc(ws, wd, weid, n["paper"]),
           ets[2]: _csc(cd[tr], cs[tr], ceid[tr], n["paper"]),
           ets[3]: _csc(wd, ws, weid, n["author"])}
    edges = {ets[0]: (cs[tr], cd[tr]), ets[1]: (ws, wd), ets[2]: (cd[tr], cs[tr]), ets[3]: (wd, ws)}
    tasks = [SimpleNamespace(name="topic", type="node_classification", node_type="paper", edge_type=None,
                             multilabel=multilabel, num_classes=3),
             SimpleNamespace(name="cites", type="link_prediction", node_type=None, edge_type=ets[0],
                             multilabel=False, num_classes=None),
             SimpleNamespace(name="role", type="edge_classification", node_type=None, edge_type=ets[1],
                             multilabel=False, num_classes=2)]
    return SimpleNamespace(
        node_types=["paper", "author"], edge_types=ets, num_nodes=n, csc=csc,
        reverse_of={ets[0]: ets[2], ets[2]: ets[0], ets[1]: ets[3], ets[3]: ets[1]},
        edges=lambda et: edges[et],
        raw_ids={"paper": [p["id"] for p in papers], "author": [a["id"] for a in authors]},
        text={"paper": [p["text"] for p in papers], "author": [a["text"] for a in authors]},
        labels={"paper": lab, "author": None}, label_names={"paper": ["0", "1", "2"]},
        masks=masks, edge_labels={ets[1]: wl}, edge_masks={ets[1]: wmask}, tasks=tasks,
        lp_edges={"cites": {s: (cs[m], cd[m]) for s, m in cmask.items()}},
    )
