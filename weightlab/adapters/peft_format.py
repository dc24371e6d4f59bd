"""PEFT's LoRA adapter format: ``adapter_config.json`` + ``adapter_model.safetensors``.

:func:`export_peft` writes what ``peft.PeftModel.from_pretrained`` loads on the *original*
base model with the same outputs; :func:`import_peft` reads a PEFT LoRA adapter into a
weightlab model. Only JSON and safetensors are read (nothing is unpickled).

Conventions (PEFT 0.21):

- tensors ``base_model.model.<module>.lora_A.weight`` ``(r, in, *kernel)`` and
  ``...lora_B.weight`` ``(out, r, *1)``; scaling ``lora_alpha / r``;
- targets as one exact regular expression (``target_modules`` as a string is
  ``re.fullmatch``-ed by PEFT), ranks and α differing from the most common in
  ``rank_pattern`` / ``alpha_pattern``;
- a base-modifying init (PiSSA, OLoRA) is exported as PEFT's own conversion does
  (``save_pretrained(path_initial_model_for_weight_conversion=...)``): on the original
  base W₀ the adapter is the rank-2r pair ``A' = [A; A₀]``, ``B' = [B, −B₀]`` with α' = 2α
  (same s), so ``W₀ + s·B'A' = W₀ − s·B₀A₀ + s·BA``, the trained residual model.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from weightlab.adapters.lora import (
    _MERGED,
    SUPPORTED,
    AdapterSet,
    LoRADelta,
    LoRALayer,
    adapter_modules,
    add_adapters,
)
from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError, DataError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_peft", "import_peft"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."


def _export_pair(a) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    A, B = a.lora_A.detach(), a.lora_B.detach()
    rank, alpha = a.rank, a.alpha
    if hasattr(a, "init_A"):  # base-modifying init: rank-2r on the original base
        A = torch.cat([A, a.init_A.to(A.dtype)], 0)
        B = torch.cat([B, -a.init_B.to(B.dtype)], 1)
        rank, alpha = 2 * rank, 2 * alpha
    shape = a.plan.weight_shape
    A = A.reshape(rank, *shape[1:]).contiguous()
    B = B.reshape(shape[0], rank, *([1] * (len(shape) - 2))).contiguous()
    return A, B, rank, alpha


def export_peft(
    model: nn.Module, folder: str | Path, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write the model's LoRA adapters in PEFT's format into ``folder`` (created).

    Returns the folder. Raises ConfigError for a model without adapters, with merged
    adapters, or with an adapter form PEFT's LoRA cannot hold (e.g. LoLDU).
    """
    if any(_MERGED in m.__dict__ for m in model.modules()):
        raise ConfigError("the model's adapters are merged; call unmerge_adapters(model) first")
    adapters = adapter_modules(model)
    if not adapters:
        raise ConfigError("the model has no LoRA adapters to export; add_adapters first")
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    dropout = 0.0
    for name, a in adapters.items():
        if not isinstance(a, LoRALayer | LoRADelta) or not getattr(a, "peft_exportable", True):
            raise ConfigError(
                f"adapter on {name!r} is a {type(a).__name__}, which PEFT's LoRA format cannot "
                "hold; save it with its own format"
            )
        A, B, ranks[name], alphas[name] = _export_pair(a)
        tensors[f"{PREFIX}{name}.lora_A.weight"] = A
        tensors[f"{PREFIX}{name}.lora_B.weight"] = B
        if isinstance(a, LoRALayer) and isinstance(a.dropout, nn.Dropout):
            dropout = a.dropout.p
    r = Counter(ranks.values()).most_common(1)[0][0]
    alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": "(?:" + "|".join(re.escape(n) for n in adapters) + ")",
        "rank_pattern": {re.escape(n): k for n, k in ranks.items() if k != r},
        "alpha_pattern": {re.escape(n): v for n, v in alphas.items() if v != alpha},
        "init_lora_weights": True,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "inference_mode": True,
    }
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    return folder


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).is_file():
            raise DataError(
                f"adapter folder {folder} has no {name}; give a PEFT LoRA adapter folder"
            )
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"cannot read {folder / CONFIG_NAME} ({str(e).splitlines()[0]}); re-export the adapter"
        ) from e
    if not isinstance(config, dict):
        raise DataError(f"{folder / CONFIG_NAME} is not a JSON object; re-export the adapter")
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(folder / WEIGHTS_NAME))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"cannot read {folder / WEIGHTS_NAME} ({msg}); the file is corrupt: re-export it"
        ) from e
    return config, tensors


def _pattern_value(patterns: dict, name: str, default):
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):  # PEFT's get_pattern_key rule
            return value
    return default


def import_peft(model: nn.Module, folder: str | Path, *, path: str = "activation") -> AdapterSet:
    """Load a PEFT LoRA adapter folder onto ``model`` (the base it was trained on) as
    weightlab adapters (``path`` as :func:`add_adapters`). Outputs equal PEFT's.

    Raises:
        DataError: missing or corrupt files, a target the model lacks, or base shapes
            that do not match the adapter's.
        ConfigError: a PEFT option weightlab does not implement (DoRA, rsLoRA, ...).
    """
    folder = Path(folder)
    config, tensors = _read(folder)
    if config.get("peft_type") != "LORA":
        raise ConfigError(
            f"{folder / CONFIG_NAME} is a {config.get('peft_type')!r} adapter; only LORA imports"
        )
    for key, ok in (("use_dora", False), ("use_rslora", False), ("fan_in_fan_out", False)):
        if bool(config.get(key, False)) != ok:
            raise ConfigError(f"PEFT option {key}=true is not supported by import_peft")
    if config.get("bias", "none") != "none":
        raise ConfigError("PEFT option bias != 'none' is not supported by import_peft")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
        if m is None:
            raise DataError(
                f"{folder / WEIGHTS_NAME} holds {key!r}, not a LoRA tensor; give a PEFT LoRA adapter"
            )
        pairs.setdefault(m.group(1), {})[m.group(2)] = t
    modules = dict(model.named_modules())
    overrides = {}
    for name, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            missing = "".join(sorted({"A", "B"} - set(ab)))
            raise DataError(
                f"adapter for {name!r} lacks its lora_{missing} tensor; the file is incomplete: "
                "re-export it"
            )
        module = modules.get(name)
        if not isinstance(module, SUPPORTED):
            raise DataError(
                f"the adapter targets {name!r}, which this model lacks (or is not Linear/Conv); "
                "load it on the base model it was trained for"
            )
        A, B = ab["A"], ab["B"]
        w = tuple(module.weight.shape)
        r = A.shape[0]
        ok = tuple(A.shape[1:]) == w[1:] and B.shape[0] == w[0] and B.shape[1] == r
        if not ok or B[0, 0].numel() != 1:
            raise DataError(
                f"adapter for {name!r} has lora_A {tuple(A.shape)}, lora_B {tuple(B.shape)} but "
                f"the model's weight is {w}; load it on the base model it was trained for"
            )
        alpha = _pattern_value(config.get("alpha_pattern") or {}, name, config.get("lora_alpha", 8))
        overrides[name] = {"rank": int(r), "alpha": float(alpha)}
    sel = Selector(types=SUPPORTED, include=tuple(pairs))
    dropout = float(config.get("lora_dropout", 0.0) or 0.0) if path == "activation" else 0.0
    aset = add_adapters(model, sel, overrides=overrides, dropout=dropout, path=path)
    with torch.no_grad():
        for name, a in aset.adapters.items():
            a.lora_A.copy_(pairs[name]["A"].reshape(a.lora_A.shape))
            a.lora_B.copy_(pairs[name]["B"].reshape(a.lora_B.shape))
    return aset
