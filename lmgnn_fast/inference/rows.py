"""The final LM rows of a run, stored with a hash of each text, so loading encodes only new or
changed texts.

At the end of training the run writes, per text node type,
``RUN_DIR/lm_rows/<node_type>.safetensors``: ``rows`` ``[N, H]`` float32 (the LM embedding
of every node's text: the rows the final graph model read, or the final LM's own rows) and
``text_hash`` ``[N, 16]`` uint8 (BLAKE2b-128 of each text, UTF-8), with metadata naming the
LM that computed them (``lm_source``: ``pretrained``/``stage1``/``stage3``, ``lm_weights``:
the checksum of those weights, ``lm_name``, ``max_length``, ``pooling``).

:func:`reuse_positions` matches rows by text, not by position: a graph loaded again with
texts edited, nodes added, removed or reordered reuses the row of every text it still has,
and only the others go through the LM.

This module imports nothing above ``lmgnn_fast.io``: the trainer writes these files.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from lmgnn_fast.io.paths import safe_join

__all__ = ["ROWS_DIR", "HASH_BYTES", "StoredRows", "text_hashes", "rows_path", "save_rows", "load_rows",
           "reuse_positions"]

ROWS_DIR = "lm_rows"
HASH_BYTES = 16
# The metadata keys that must agree for stored rows to be reused.
IDENTITY_KEYS = ("lm_source", "lm_weights", "lm_name", "max_length", "pooling")


@dataclass
class StoredRows:
    """One node type's stored rows.

    Attributes:
        rows: ``[N, H]`` float32.
        hashes: ``[N, 16]`` uint8, the hash of the text each row was computed from.
        meta: the LM that computed them (see the module docstring).
    """

    rows: Tensor
    hashes: Tensor
    meta: dict


def text_hashes(texts) -> Tensor:
    """``[N, 16]`` uint8: BLAKE2b-128 of each text's UTF-8 bytes (``None`` counts as ``""``)."""
    buf = bytearray()
    for x in texts:
        buf += hashlib.blake2b((x or "").encode("utf-8", "replace"), digest_size=HASH_BYTES).digest()
    return torch.frombuffer(buf, dtype=torch.uint8).view(-1, HASH_BYTES).clone() if buf else \
        torch.zeros(0, HASH_BYTES, dtype=torch.uint8)


def rows_path(run_dir: str, node_type: str) -> str:
    """``run_dir/lm_rows/<node_type>.safetensors`` (the type checked to be a name)."""
    return safe_join(os.path.join(run_dir, ROWS_DIR), node_type, ".safetensors", "node type")


def save_rows(run_dir: str, node_type: str, rows: Tensor, hashes: Tensor, meta: dict) -> str:
    """Write one node type's rows atomically (temporary file, then ``os.replace``).

    Args:
        run_dir: the run directory.
        node_type: the node type.
        rows: ``[N, H]`` float32.
        hashes: ``[N, 16]`` uint8 (:func:`text_hashes` of the texts the rows encode).
        meta: string values identifying the LM (see the module docstring).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    if rows.shape[0] != hashes.shape[0]:
        raise ValueError(f"save_rows: {rows.shape[0]} rows but {hashes.shape[0]} text hashes for {node_type!r}")
    path = rows_path(run_dir, node_type)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        save_file({"rows": rows.detach().float().cpu().contiguous(), "text_hash": hashes.cpu().contiguous()}, tmp,
                  metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_rows(run_dir: str, node_type: str) -> StoredRows | None:
    """The stored rows of ``node_type``, or ``None`` when the run has none (a run from
    before they were written) or the file cannot be read."""
    from safetensors import safe_open

    path = rows_path(run_dir, node_type)
    if not os.path.isfile(path):
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            rows, hashes = f.get_tensor("rows"), f.get_tensor("text_hash")
    except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, never fatal
        return None
    if rows.dim() != 2 or hashes.shape != (rows.shape[0], HASH_BYTES):
        return None
    return StoredRows(rows, hashes, meta)


def _keys(hashes: Tensor) -> Tensor:
    """The first 8 bytes of each hash as one int64 (for sorting and search)."""
    return hashes[:, :8].contiguous().view(torch.int64).reshape(-1)


def reuse_positions(stored: StoredRows, hashes: Tensor) -> Tensor:
    """For each text hash, the position of a stored row computed from the same text.

    Args:
        stored: the stored rows.
        hashes: ``[N, 16]`` uint8 hashes of the texts wanted.

    Returns:
        ``[N]`` int64 positions into ``stored.rows``; ``-1`` where no stored row has that text.
    """
    n = hashes.shape[0]
    out = torch.full((n,), -1, dtype=torch.long)
    if n == 0 or stored.hashes.shape[0] == 0:
        return out
    keys = _keys(stored.hashes)
    order = torch.argsort(keys)
    sk = keys[order]
    want = _keys(hashes)
    pos = torch.searchsorted(sk, want).clamp_max(sk.numel() - 1)
    cand = order[pos]
    same = torch.all(stored.hashes[cand] == hashes, dim=1)  # all 16 bytes agree
    out[same] = cand[same]
    return out
