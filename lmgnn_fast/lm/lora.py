"""LoRA adapters on the LM (through ``peft``, an optional dependency: ``lmgnn_fast[lora]``).

:func:`add_lora` injects low-rank adapters into the named linear layers of a Hugging Face
encoder in place (the module object stays the same, so whatever holds it keeps working)
and freezes every other weight; :func:`merge_lora` folds the adapters into the base
weights and removes them, leaving a plain model with the fine-tuned weights — what the
stage checkpoints store, so they load with or without ``peft``.
"""
from __future__ import annotations

from torch import nn

from lmgnn_fast.lm.model import LMLoadError

__all__ = ["add_lora", "merge_lora", "has_lora", "lora_parameters"]

_ADAPTER = "default"


def _peft():
    try:
        import peft
    except ImportError:
        raise LMLoadError("lm.lora_r > 0 needs the peft package, which is not installed: "
                          "pip install 'lmgnn_fast[lora]' (or pip install peft), or set lm.lora_r 0") from None
    return peft


def _lora_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]


def has_lora(model: nn.Module) -> bool:
    """Whether ``model`` holds LoRA adapters."""
    return bool(_lora_modules(model))


def add_lora(model: nn.Module, r: int, alpha: float, dropout: float, targets: list[str]) -> list[nn.Parameter]:
    """Inject LoRA adapters of rank ``r`` into the linear layers named ``targets`` (the last
    part of their module names, e.g. ``query``, ``value``) and freeze all other weights.

    Args:
        model: a Hugging Face encoder (``BertModel`` and friends); changed in place.
        r: adapter rank (>= 1).
        alpha: scaling numerator (the update is ``alpha / r * B @ A``).
        dropout: dropout on the adapter's input.
        targets: module names to adapt.

    Returns:
        The trainable parameters (the adapters' ``A`` and ``B`` matrices).

    Raises:
        LMLoadError: ``peft`` is missing, no module of the model matches ``targets``, or
            ``r`` is not in ``[1, width]`` (``width``: the smallest input or output size of
            the adapted layers; a larger rank adds nothing).
    """
    linears = [(n.rsplit(".", 1)[-1], m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    names = {n for n, _ in linears}
    missing = [t for t in targets if t not in names]
    if missing:
        raise LMLoadError(f"lm.lora_targets: no linear layer of the LM is named {missing[0]!r} "
                          f"(its linear layers: {sorted(names)})")
    width = min(min(m.in_features, m.out_features) for n, m in linears if n in targets)
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= width:
        raise LMLoadError(f"lm.lora_r must be an integer in [1, {width}] for this LM (the narrowest adapted "
                          f"layer of {', '.join(map(repr, targets))} has {width} inputs or outputs), got {r!r}")
    peft = _peft()
    cfg = peft.LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout),
                          target_modules=list(targets), bias="none")
    peft.inject_adapter_in_model(cfg, model, adapter_name=_ADAPTER)
    return lora_parameters(model)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' parameters, set trainable; every other parameter of ``model`` frozen."""
    params = []
    for n, p in model.named_parameters():
        train = ".lora_" in n
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight (``W += alpha / r * B @ A``), put the plain
    base layer back in its place and make every parameter trainable again. A model without
    adapters is left as it is."""
    for name, mod in _lora_modules(model):
        base = mod.base_layer
        if _ADAPTER in getattr(mod, "lora_A", {}):
            base.weight.data += mod.get_delta_weight(_ADAPTER).to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
    for p in model.parameters():
        p.requires_grad_(True)
    if "peft_config" in vars(model):  # left by the injection; a later add_lora starts afresh
        del model.peft_config
