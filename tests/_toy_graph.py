"""A small text-attributed heterogeneous graph for the trainer tests.

``write_toy_dir(path)`` writes it in the documented directory format; papers carry a topic
(the label) that both their text and their citations reveal.
"""
from __future__ import annotations

import json
import os

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
