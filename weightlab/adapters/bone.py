"""Bone (Kang 2024, "Bone: Block Affine Transformation as Parameter Efficient Fine-tuning
Methods for Large Language Models"), in the form PEFT keeps as MiSS with
``init_weights="bat"`` (``peft.tuners.miss``): the frozen weight W₀ ``(out, in)`` is cut
into r×r blocks ``W₀[i, j]`` (i over out/r, j over in/r) and one trainable r×r matrix
``B_i`` per block row (``miss_block`` ``(out/r, r, r)``, init 0) gives

    W_eff[i, j] = W₀[i, j] + W₀[i, j] · B_i + B_i

("weight guide": the delta is built from W₀'s own blocks). Trainable: out·r per layer.
Because the delta needs W₀ it trains on the Transform path (``W_eff`` formed, dense
weight gradient), as MiSS does. ``B = 0`` at start, so the model is unchanged; no base
weights are rewritten. In and out must be divisible by r; other layers are excluded with
a one-line warning, and a rank that divides no selected layer is a ConfigError.

Use: ``add_adapters(model, select, rank=16, init=Bone())`` (the path is always
``"transform"``); ``merge_adapters``/``unmerge_adapters``/``remove_adapters`` work.
:func:`export_bone_peft` writes a PEFT MiSS ``bat`` adapter (``PeftModel.from_pretrained``
loads it on the original base with the same outputs).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightlab.adapters.inits import AdapterInit, AdapterInitContext
from weightlab.adapters.lora import _MERGED, AdapterPlan, LoRADelta, adapter_modules
from weightlab.core.transforms import Transform, attach
from weightlab.errors import ConfigError

__all__ = ["Bone", "BoneDelta", "BoneExcludedWarning", "bone_delta", "export_bone_peft"]


class BoneExcludedWarning(UserWarning):
    """Selected layers whose in/out are not divisible by Bone's rank were left out."""


def bone_delta(weight: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """Bone's delta ``ΔW[i, j] = W[i, j]·B_i + B_i`` for ``weight (out, in)`` and
    ``block (out/r, r, r)`` (MiSS ``bat``)."""
    n_out, r = block.shape[0], block.shape[-1]
    out, fan_in = weight.shape
    # W's row block i as (in, r): rows (a, j) = W[i·r + a, j·r : (j+1)·r]; one (in × r)·(r × r)
    # product per row block instead of (out/r)·(in/r) tiny r × r products, and no permutes
    w = weight.reshape(n_out, r * (fan_in // r), r)
    d = torch.matmul(w, block).reshape(n_out, r, fan_in // r, r) + block[:, :, None, :]
    return d.reshape(out, fan_in)


class BoneDelta(LoRADelta):
    """Transform ``W ↦ W + bone_delta(W, miss_block)``; a :class:`LoRADelta` subclass so
    that merge/unmerge/remove and :class:`AdapterSet` treat it as an adapter. It has no
    ``lora_A``/``lora_B``; PEFT LoRA export refuses it."""

    peft_exportable = False

    def __init__(self, plan: AdapterPlan, dtype: torch.dtype, device=None) -> None:
        Transform.__init__(self)
        self.rank, self.alpha, self.scaling, self.plan = plan.rank, plan.alpha, 1.0, plan
        r = plan.rank
        self.miss_block = nn.Parameter(
            torch.zeros(plan.out_features // r, r, r, dtype=dtype, device=device)
        )
        self._owner = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + bone_delta(weight, self.miss_block)

    def delta(self) -> torch.Tensor:
        return bone_delta(self._weight_param().detach(), self.miss_block)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, bone"


class Bone(AdapterInit):
    """Bone / MiSS ``bat`` delta form (module docstring): ``init=Bone()``; block size r is
    ``add_adapters``' rank (per-target overrides apply). ``miss_block`` starts at 0
    (no special init). Linear layers only."""

    name = "bone"

    def __init__(self) -> None:
        self._model: nn.Module | None = None

    def plan(self, model: nn.Module, plans: list[AdapterPlan]) -> list[AdapterPlan]:
        self._model = model
        keep = [
            p
            for p in plans
            if p.kind == "Linear" and p.in_features % p.rank == 0 and p.out_features % p.rank == 0
        ]
        if not keep:
            raise ConfigError(
                f"Bone rank {plans[0].rank} divides no selected Linear layer's in and out "
                "features; choose a rank that divides them"
            )
        dropped = [p.name for p in plans if p not in keep]
        if dropped:
            warnings.warn(
                f"Bone leaves out {', '.join(dropped)}: in and out must be divisible by the "
                "rank (Linear layers only)",
                BoneExcludedWarning,
                stacklevel=3,
            )
        return keep

    def make(self, base: nn.Module, plan: AdapterPlan, path: str) -> nn.Module:
        delta = BoneDelta(plan, base.weight.dtype, base.weight.device)
        base.weight.requires_grad_(False)
        attach(self._model, f"{plan.name}.weight", delta)
        delta._owner = (base, "weight")
        return delta

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        adapter.miss_block.zero_()

    def peft_init(self) -> bool | str:
        return "bat"

    def __repr__(self) -> str:
        return "Bone()"


def export_bone_peft(
    model: nn.Module, folder: str | Path, *, base_model_name_or_path: str | None = None
) -> Path:
    """Write the model's Bone adapters as a PEFT MiSS ``bat`` adapter into ``folder``
    (``adapter_config.json`` with ``peft_type = "MISS"``, ``init_weights = "bat"``, and
    ``adapter_model.safetensors`` with ``base_model.model.<layer>.miss_block``). MiSS has
    no per-layer rank, so every Bone layer must share one r (else a one-line ConfigError)."""
    if any(_MERGED in m.__dict__ for m in model.modules()):
        raise ConfigError("the model's adapters are merged; call unmerge_adapters(model) first")
    layers = {n: a for n, a in adapter_modules(model).items() if isinstance(a, BoneDelta)}
    if not layers:
        raise ConfigError("the model has no Bone adapters to export; add_adapters(init=Bone())")
    ranks = sorted({a.rank for a in layers.values()})
    if len(ranks) > 1:
        raise ConfigError(f"PEFT's MiSS holds one rank, the Bone layers have {ranks}; use one")
    config = {
        "peft_type": "MISS",
        "task_type": None,
        "base_model_name_or_path": base_model_name_or_path,
        "r": ranks[0],
        "mini_r": 1,
        "miss_dropout": 0.0,
        "init_weights": "bat",
        "target_modules": "(?:" + "|".join(re.escape(n) for n in layers) + ")",
        "exclude_modules": None,
        "bias": "none",
        "modules_to_save": None,
        "inference_mode": True,
    }
    tensors = {
        f"base_model.model.{n}.miss_block": a.miss_block.detach().contiguous().clone()
        for n, a in layers.items()
    }
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    return folder
