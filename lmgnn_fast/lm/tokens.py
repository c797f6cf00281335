"""Tokenize node texts once per graph and keep them as compact token-id arrays.

A graph's texts are tokenized a single time and stored as one flat token-id array per node
type (``uint16`` when the vocabulary fits, else ``int32``) plus row offsets, so a batch of
nodes is padded on demand without touching the tokenizer again. The arrays are saved beside
a run (``tokens/<node_type>.safetensors``) and reused when the texts, the tokenizer and
``max_length`` are unchanged (checked through a fingerprint).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TokenizedTexts", "tokenize_texts", "texts_fingerprint", "CHARS_PER_TOKEN"]


def _warn_cut(cut: list[tuple[int, int]], cap: int, max_length: int, where: str, ids) -> None:
    pos, n = cut[0]
    if ids is not None:
        v = ids[pos]
        node = repr(v.item() if hasattr(v, "item") else v)
    else:
        node = str(pos)
    more = f" (and {len(cut) - 1} more text{'s' if len(cut) > 2 else ''} of this kind)" if len(cut) > 1 else ""
    warnings.warn(f"tokenize: node {node}{' of ' + where if where else ''}: text of {n:,} characters cut to its "
                  f"first {cap:,} before tokenizing (lm.max_length {max_length} tokens x {CHARS_PER_TOKEN} "
                  f"characters){more}", stacklevel=3)


def texts_fingerprint(texts: list[str], tokenizer_name: str, max_length: int) -> str:
    """A short hash identifying (texts, tokenizer, max_length)."""
    h = hashlib.sha1()
    h.update(f"{tokenizer_name}\0{max_length}\0{len(texts)}\0".encode())
    for t in texts:
        h.update((t or "").encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass
class TokenizedTexts:
    """Token ids of ``N`` texts in one flat array.

    Attributes:
        tokens: ``[T]`` uint16 or int32, the token ids of all texts back to back.
        offsets: ``[N + 1]`` int64; text ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.
        pad_id: id used to pad a batch.
        fingerprint: identifies the texts, tokenizer and ``max_length`` it was built from.
    """

    tokens: Tensor
    offsets: Tensor
    pad_id: int
    fingerprint: str = ""

    def __len__(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def lengths(self) -> Tensor:
        """``[N]`` int64 number of tokens per text."""
        return self.offsets[1:] - self.offsets[:-1]

    def batch(self, ids: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Padded ``(input_ids, attention_mask)``, both ``[B, L]`` int64 with ``L`` the
        longest text among ``ids``."""
        ids = ids.to("cpu", torch.int64)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise IndexError(f"TokenizedTexts.batch: node id out of range [0, {len(self)})")
        starts = self.offsets[ids]
        lens = self.offsets[ids + 1] - starts
        b = int(ids.numel())
        width = int(lens.max()) if b else 0
        pos = torch.arange(width, dtype=torch.int64)
        mask = pos.unsqueeze(0) < lens.unsqueeze(1)  # [B, L]
        gather = (starts.unsqueeze(1) + pos.unsqueeze(0)).clamp_max(max(int(self.tokens.numel()) - 1, 0))
        input_ids = torch.full((b, width), self.pad_id, dtype=torch.int64)
        if self.tokens.numel():
            flat = self.tokens.to(torch.int64)
            input_ids = torch.where(mask, flat[gather], input_ids)
        return input_ids.to(device), mask.to(device=device, dtype=torch.int64)

    def save(self, path: str) -> None:
        """Write atomically to ``path`` (safetensors)."""
        from safetensors.torch import save_file

        tmp = f"{path}.tmp-{os.getpid()}"
        save_file(
            {"tokens": self.tokens.contiguous(), "offsets": self.offsets.contiguous()},
            tmp,
            metadata={"pad_id": str(self.pad_id), "fingerprint": self.fingerprint},
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "TokenizedTexts":
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
            tokens = f.get_tensor("tokens")
            offsets = f.get_tensor("offsets")
        return cls(tokens, offsets, int(meta["pad_id"]), meta.get("fingerprint", ""))


# A token of natural text spans a few characters (WordPiece gives one [UNK] for a word over
# 100 characters), so the first ``max_length`` tokens of a text lie within its first
# ``max_length * CHARS_PER_TOKEN`` characters; the rest is cut before the tokenizer sees it
# (a fast tokenizer encodes the whole text before truncating: a 50 MiB cell exhausts memory).
CHARS_PER_TOKEN = 100
# Characters passed to the tokenizer per call (at most ``chunk`` texts per call as well).
CHARS_PER_CALL = 1 << 24


def tokenize_texts(tokenizer, texts: list[str], max_length: int = 64, chunk: int = 4096,
                   name: str = "", where: str = "", ids=None) -> TokenizedTexts:
    """Tokenize ``texts`` (truncating to ``max_length`` tokens with special tokens).

    A text longer than ``max_length * CHARS_PER_TOKEN`` characters is cut there before it
    is tokenized (its kept tokens lie well inside that prefix); one warning names the first
    such node and how many there are.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: ``N`` strings; ``None`` counts as empty.
        max_length: the most tokens kept per text (including ``[CLS]``/``[SEP]``).
        chunk: texts passed to the tokenizer per call.
        name: tokenizer name, part of the fingerprint.
        where: what the texts are, for the warning (e.g. ``"node type 'paper'"``).
        ids: the texts' node ids (raw ids), for the warning; default their positions.

    Returns:
        TokenizedTexts with ``uint16`` ids when the vocabulary has at most 65,536 entries.
    """
    if max_length < 2:
        raise ValueError(f"tokenize_texts: max_length must be >= 2, got {max_length}")
    vocab = len(tokenizer)
    dtype = torch.uint16 if vocab <= 65536 else torch.int32
    cap = int(max_length) * CHARS_PER_TOKEN
    pieces: list[Tensor] = []
    lengths: list[int] = []
    cut: list[tuple[int, int]] = []  # (position, length) of the texts cut
    i = 0
    while i < len(texts):
        part: list[str] = []
        chars = 0
        while i < len(texts) and len(part) < chunk and (not part or chars < CHARS_PER_CALL):
            t = texts[i] if isinstance(texts[i], str) else ""
            if len(t) > cap:
                cut.append((i, len(t)))
                t = t[:cap]
            part.append(t)
            chars += len(t)
            i += 1
        enc = tokenizer(part, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
        for tok_ids in enc["input_ids"]:
            lengths.append(len(tok_ids))
            pieces.append(torch.tensor(tok_ids, dtype=torch.int32))
    if cut:
        _warn_cut(cut, cap, max_length, where, ids)
    tokens = torch.cat(pieces).to(dtype) if pieces else torch.empty(0, dtype=dtype)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    if lengths:
        offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return TokenizedTexts(tokens, offsets, int(pad), texts_fingerprint(texts, name, max_length))
