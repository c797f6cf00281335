"""A tiny randomly initialised BERT for fast tests (no download, no real weights)."""
from __future__ import annotations

import os
import re
from collections import Counter

__all__ = ["make_tiny_bert"]


def make_tiny_bert(texts: list[str], folder: str, hidden_size: int = 32, num_layers: int = 2,
                   num_heads: int = 2, max_vocab: int = 2000, max_position: int = 128,
                   seed: int = 0) -> str:
    """Write a random ``BertModel`` (``num_layers`` layers, hidden ``hidden_size``) and a
    WordPiece tokenizer whose vocabulary is built from the words of ``texts`` into
    ``folder``; returns ``folder`` (load it with ``LMEncoder.from_pretrained(folder)``)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    os.makedirs(folder, exist_ok=True)
    words = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", (t or "").lower()))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in words for c in w})
    vocab = special + [w for w, _ in words.most_common(max_vocab)]
    vocab += [c for c in chars if c not in vocab] + [f"##{c}" for c in chars]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, intermediate_size=2 * hidden_size,
                     max_position_embeddings=max_position)
    BertModel(cfg).save_pretrained(folder)
    return folder
