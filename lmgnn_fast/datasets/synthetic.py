"""A seeded synthetic heterogeneous text graph whose labels are carried by both the text
and the structure.

Generative model (all vectorized numpy; 1M nodes / 10M edges take seconds without text):

1. **Nodes.** ``num_nodes`` split evenly over ``num_node_types`` types ``t0, t1, …``
   (integer ids ``0..n_t-1`` per type). Every node gets a latent class, uniform over
   ``num_classes``; only ``t0`` exposes it as a label (task ``label``).
2. **Degrees.** Every node gets a Chung–Lu weight drawn from a Pareto law with tail
   exponent ``degree_exponent`` (capped), so expected degrees follow a power law.
3. **Relations.** ``num_relations`` relations ``r0, r1, …``; relation ``r < T`` links
   ``t(r) -> t(r+1 mod T)`` so every type takes part, further ones draw their endpoint
   types at random. ``num_edges`` are spread evenly over the relations. Per edge the source
   is drawn by weight; with probability ``homophily`` the destination is drawn by weight
   among the destination type's nodes *of the source's class*, otherwise among all of
   them (planted homophily). Duplicate pairs and self-loops are dropped (the generator
   draws a few percent more to make up for them, so counts are close to, and never above,
   ``num_edges``).
4. **Text** (``with_text=True``). A made-up vocabulary of ``vocab_size`` pronounceable
   words; each class owns a disjoint block of topic words. A node's text has
   ``text_length`` (a ``(min, max)`` range) tokens, each drawn with probability
   ``topic_strength`` from its class's topic (Zipf within the block) and otherwise from a
   Zipf background over the whole vocabulary (ranks shuffled, so background
   words favour no class) — a planted topic model.

Tasks: ``label`` (node classification of ``t0``, seeded 80/10/10 split) and ``link``
(link prediction on relation ``r0``, seeded 80/10/10 edge split).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lmgnn_fast.datasets._common import Tables, finalize, seeded_split
from lmgnn_fast.io.errors import OptionError

NAME = "synthetic"
_CONSONANTS = list("bdfgklmnprstvz") + ["ch", "sh", "th", "tr", "br", "kl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def make_vocabulary(size: int, seed: int) -> list[str]:
    """``size`` distinct pronounceable made-up words (2–4 syllables), seeded."""
    rng = np.random.default_rng(seed)
    syll = np.array([c + v for c in _CONSONANTS for v in _VOWELS])
    words: dict[str, None] = {}
    while len(words) < size:
        n = max(size - len(words), 16) * 2
        k = rng.integers(2, 5, size=n)
        parts = syll[rng.integers(0, len(syll), size=(n, 4))]
        for row, m in zip(parts, k):
            words["".join(row[:m])] = None
            if len(words) >= size:
                break
    return list(words)


def _weighted_pick(rng, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index i with P ∝ weight among the cumulative-weight interval ``[lo, hi)`` per draw."""
    u = lo + rng.random(lo.shape[0]) * (hi - lo)
    return np.minimum(np.searchsorted(cum, u, side="right"), cum.shape[0] - 1)


def synthetic_tables(num_nodes: int = 10_000, num_edges: int = 100_000, num_node_types: int = 3,
                     num_relations: int = 4, num_classes: int = 5, seed: int = 0,
                     with_text: bool = True, homophily: float = 0.8, degree_exponent: float = 2.5,
                     vocab_size: int = 2_000, topic_strength: float = 0.4,
                     text_length: tuple[int, int] = (8, 24)) -> Tables:
    """Generate the synthetic tables in the directory format.

    Args:
        num_nodes: total nodes over all types (each type gets at least one).
        num_edges: target number of edges over all relations.
        num_node_types: number of node types ``t0..``.
        num_relations: number of relations ``r0..``.
        num_classes: number of latent classes (labels of ``t0``).
        seed: seed of everything.
        with_text: generate a ``text`` column (off for very large benchmark graphs).
        homophily: probability that an edge's destination shares the source's class.
        degree_exponent: power-law exponent of the expected degrees (> 2).
        vocab_size: made-up vocabulary size (at least ``2 * num_classes``).
        topic_strength: probability that a token comes from the node's class topic.
        text_length: ``(min, max)`` tokens per text.

    Returns:
        ``(metadata, nodes, edges)``; ids are integers.
    """
    if num_node_types < 1 or num_relations < 1 or num_classes < 1:
        raise OptionError("synthetic: num_node_types, num_relations and num_classes must be >= 1, got "
                         f"{num_node_types}, {num_relations}, {num_classes}")
    if num_nodes < num_node_types:
        raise OptionError(f"synthetic: num_nodes={num_nodes} is below num_node_types={num_node_types}")
    if num_edges < 0:
        raise OptionError(f"synthetic: num_edges must be >= 0, got {num_edges}")
    if not 0.0 <= homophily <= 1.0 or not 0.0 <= topic_strength <= 1.0:
        raise OptionError(f"synthetic: homophily={homophily} and topic_strength={topic_strength} must be in [0, 1]")
    if degree_exponent <= 2.0:
        raise OptionError(f"synthetic: degree_exponent must be > 2, got {degree_exponent}")
    if with_text and (vocab_size < 2 * num_classes or not 1 <= text_length[0] <= text_length[1]):
        raise OptionError(f"synthetic: need vocab_size >= 2*num_classes and 1 <= min <= max text length, got "
                         f"vocab_size={vocab_size}, text_length={text_length}")
    rng = np.random.default_rng(seed)
    types = [f"t{i}" for i in range(num_node_types)]
    counts = np.full(num_node_types, num_nodes // num_node_types, dtype=np.int64)
    counts[: num_nodes % num_node_types] += 1

    klass, cum_all, order, cum_sorted, bounds = {}, {}, {}, {}, {}
    for t, n in zip(types, counts):
        c = rng.integers(0, num_classes, size=n)
        w = np.minimum(rng.pareto(degree_exponent - 1.0, size=n) + 1.0, max(n / 10.0, 2.0))
        klass[t] = c
        cum_all[t] = np.cumsum(w)
        o = np.argsort(c, kind="stable")
        order[t] = o
        cum_sorted[t] = np.cumsum(w[o])
        starts = np.searchsorted(c[o], np.arange(num_classes + 1))
        cs = np.concatenate([[0.0], cum_sorted[t]])
        bounds[t] = (cs[starts[:-1]], cs[starts[1:]])  # cumulative weight range per class

    rel_types = []
    for r in range(num_relations):
        if r < num_node_types:
            rel_types.append((types[r], f"r{r}", types[(r + 1) % num_node_types]))
        else:
            s, d = rng.integers(0, num_node_types, size=2)
            rel_types.append((types[s], f"r{r}", types[d]))
    per_rel = np.full(num_relations, num_edges // num_relations, dtype=np.int64)
    per_rel[: num_edges % num_relations] += 1

    edges = {}
    for et, m in zip(rel_types, per_rel):
        s_t, _, d_t = et
        src, dst = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for _attempt in range(4):
            need = int(m) - src.size
            if need <= 0:
                break
            k = int(need * 1.05) + 16
            s = _weighted_pick(rng, cum_all[s_t], np.zeros(k), np.full(k, cum_all[s_t][-1]))
            c = klass[s_t][s]
            same = rng.random(k) < homophily
            lo, hi = bounds[d_t]
            lo_e = np.where(same, lo[c], 0.0)
            hi_e = np.where(same, hi[c], cum_sorted[d_t][-1])
            empty = hi_e <= lo_e  # the class has no node of the destination type
            lo_e[empty], hi_e[empty] = 0.0, cum_sorted[d_t][-1]
            d = order[d_t][_weighted_pick(rng, cum_sorted[d_t], lo_e, hi_e)]
            src, dst = np.concatenate([src, s]), np.concatenate([dst, d])
            keep = src != dst if s_t == d_t else np.ones(src.size, bool)
            src, dst = src[keep], dst[keep]
            key = src * int(counts[types.index(d_t)]) + dst
            _, first = np.unique(key, return_index=True)
            first.sort()
            src, dst = src[first], dst[first]
        src, dst = src[:m], dst[:m]
        cols = {"src": pa.array(src, pa.int64()), "dst": pa.array(dst, pa.int64())}
        if et == rel_types[0]:
            cols["split"] = seeded_split(src.size, seed + 1)
        edges[et] = pa.table(cols)

    if with_text:
        vocab = pa.array(make_vocabulary(vocab_size, seed))
        block = vocab_size // num_classes
        background_cum = np.cumsum(1.0 / np.arange(1, vocab_size + 1) ** 1.1)
        background_word = np.random.default_rng([seed, 7]).permutation(vocab_size)  # rank -> word
        topic = 1.0 / np.arange(1, block + 1) ** 0.8
        topic_cum = np.cumsum(topic)

    nodes = {}
    for i, (t, n) in enumerate(zip(types, counts)):
        cols = {"id": pa.array(np.arange(n, dtype=np.int64))}
        if with_text:
            lens = rng.integers(text_length[0], text_length[1] + 1, size=n)
            total = int(lens.sum())
            owner = np.repeat(klass[t], lens)
            from_topic = rng.random(total) < topic_strength
            w_bg = background_word[np.minimum(
                np.searchsorted(background_cum, rng.random(total) * background_cum[-1], side="right"),
                vocab_size - 1)]
            w_tp = owner * block + np.searchsorted(topic_cum, rng.random(total) * topic_cum[-1], side="right")
            words = np.minimum(np.where(from_topic, w_tp, w_bg), vocab_size - 1)
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32 if total < 2**31 else np.int64)
            list_type = pa.ListArray if offsets.dtype == np.int32 else pa.LargeListArray
            tokens = list_type.from_arrays(pa.array(offsets), vocab.take(pa.array(words)))
            cols["text"] = pc.binary_join(tokens, " ")
        if i == 0:
            cols["label"] = pa.array(klass[t], pa.int64())
            cols["split"] = seeded_split(int(n), seed + 2)
        nodes[t] = pa.table(cols)

    metadata = {
        "name": NAME,
        "node_types": types,
        "edge_types": [list(et) for et in rel_types],
        "add_reverse_edges": True,
        "tasks": [
            {"name": "label", "type": "node_classification", "node_type": "t0", "multilabel": False,
             "num_classes": num_classes},
            {"name": "link", "type": "link_prediction", "edge_type": list(rel_types[0])},
        ],
        "label_names": {"t0": [str(c) for c in range(num_classes)]},
    }
    return finalize(metadata, nodes, edges)
