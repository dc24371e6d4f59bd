"""LoLDU (Shi et al. 2024, "LoLDU: Low-Rank Adaptation via Lower-Diag-Upper Decomposition
for Parameter-Efficient Fine-Tuning"), as in the authors' code (github.com/SKDDJ/LoLDU,
``minloldu/loldu.py``).

A pivoted LU of the weight, ``W = P·L·D·U`` (L unit lower, D diagonal, U unit upper,
P a permutation; ``torch.linalg.lu`` then D = diag of its U, U divided row-wise by D).
With rank r: ``B = (P·L)[:, :r]`` and ``A = U[:r]`` are frozen, and per layer only the r
diagonal values ``z`` (init D[:r]) and one scalar scale ``s`` (init α/r) are trained:

    ΔW = s · B · diag(z) · A,     base ← W − s·B·diag(z)·A   (the residual)

so the model is unchanged at init, and LoLDU *modifies the base* (warns; ``remove_adapters``
restores W exactly, ``merge_adapters``/``unmerge_adapters`` work as for LoRA). It trains on
the activation side: ``y = base(x) + s·((x Aᵀ) ⊙ z) Bᵀ``; r + 1 trainable values per layer.

The rank is required (the authors' default, 768, is full rank for their models; weightlab
has no full-rank default). PEFT has no LoLDU: :func:`save_loldu` / :func:`load_loldu` use
weightlab's own safetensors file, and ``export_peft`` refuses with one line.

Use: ``add_adapters(model, select, init=LoLDU(8))``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weightlab.adapters.inits import AdapterInit, AdapterInitContext
from weightlab.adapters.lora import (
    AdapterPlan,
    LoRALayer,
    _set_submodule,
    adapter_modules,
    rebind,
)
from weightlab.errors import ConfigError, DataError

__all__ = ["LoLDU", "LoLDULayer", "ldu", "load_loldu", "save_loldu"]

FORMAT = "weightlab-loldu"


def ldu(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pivoted LDU decomposition ``w = P @ L @ diag(D) @ U`` (LoLDU, Sec. 3; the authors'
    ``ldu_decomposition``): partial-pivoting LU ``w = P L U₀`` (``torch.linalg.lu``), then
    ``D = diag(U₀)`` and ``U = U₀ / D`` row-wise (unit diagonal). For ``w (m, n)``:
    P ``(m, m)``, L ``(m, k)``, D ``(k,)``, U ``(k, n)`` with k = min(m, n)."""
    p, lower, upper = torch.linalg.lu(w)
    d = torch.diagonal(upper)
    return p, lower, d, upper / d[:, None]


class LoLDULayer(LoRALayer):
    """Activation-side LoLDU around a frozen ``base_layer``: ``lora_A = U_r (r, in·k)`` and
    ``lora_B = (P L)_r (out, r)`` frozen; trained ``vector_z (r,)`` and
    ``scaling_factor ()`` (the authors' names). ``delta() = s·B·diag(z)·A``."""

    peft_exportable = False

    def __init__(self, base_layer: nn.Module, plan: AdapterPlan) -> None:
        super().__init__(base_layer, plan, 0.0)
        self.lora_A.requires_grad_(False)
        self.lora_B.requires_grad_(False)
        kw = {"dtype": self.lora_A.dtype, "device": self.lora_A.device}
        self.vector_z = nn.Parameter(torch.ones(plan.rank, **kw))
        self.scaling_factor = nn.Parameter(torch.tensor(float(plan.scaling), **kw))

    def delta(self) -> torch.Tensor:
        d = self.scaling_factor * ((self.lora_B * self.vector_z) @ self.lora_A)
        return d.view(self.plan.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        base = self.base_layer
        if isinstance(base, nn.Linear):
            h = F.linear(x, self.lora_A) * self.vector_z
            return y + self.scaling_factor * F.linear(h, self.lora_B)
        a = self.lora_A.view(self.rank, *base.weight.shape[1:])
        conv = F.conv1d if isinstance(base, nn.Conv1d) else F.conv2d
        if base.padding_mode != "zeros":
            x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
            h = conv(x, a, None, base.stride, 0, base.dilation)
        else:
            h = conv(x, a, None, base.stride, base.padding, base.dilation)
        extra = [1] * (base.weight.dim() - 2)
        h = h * self.vector_z.view(1, -1, *extra)
        return y + self.scaling_factor * conv(h, self.lora_B.view(*self.lora_B.shape, *extra))

    def extra_repr(self) -> str:
        return f"rank={self.rank}, loldu"


class LoLDU(AdapterInit):
    """LoLDU init and delta form (module docstring): pass as ``add_adapters(..., init=
    LoLDU(rank))``. ``rank`` is required and replaces ``add_adapters``' rank (α is scaled
    with it, so the initial s = α/r is kept; ``add_adapters`` checks its own ``rank`` first,
    so for layers narrower than its default 8 pass the same rank there). Activation path
    only. Modifies the base."""

    name = "loldu"
    modifies_base = True

    def __init__(self, rank: int | None = None) -> None:
        if rank is None:
            raise ConfigError("LoLDU needs a rank, e.g. LoLDU(8); there is no full-rank default")
        if not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"LoLDU rank must be an integer >= 1, got {rank!r}")
        self.rank = rank
        self._model: nn.Module | None = None

    def plan(self, model: nn.Module, plans: list[AdapterPlan]) -> list[AdapterPlan]:
        self._model = model
        out = []
        for p in plans:
            if self.rank > min(p.in_features, p.out_features):
                raise ConfigError(
                    f"LoLDU rank {self.rank} for layer {p.name!r} (weight {p.weight_shape}) "
                    f"exceeds min(in, out) = {min(p.in_features, p.out_features)}; lower it"
                )
            out.append(rebind(p, rank=self.rank, alpha=p.alpha * self.rank / p.rank))
        return out

    def make(self, base: nn.Module, plan: AdapterPlan, path: str) -> nn.Module:
        if path != "activation":
            raise ConfigError("LoLDU trains on the activation side; use path='activation'")
        layer = LoLDULayer(base, plan)
        _set_submodule(self._model, plan.name, layer)
        return layer

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        w = adapter.base_matrix().double()
        p, lower, d, upper = ldu(w)
        r = adapter.rank
        if not torch.isfinite(upper[:r]).all() or (d[:r] == 0).any():
            raise ConfigError(
                f"layer {ctx.name!r} has a zero pivot among its first {r} LU pivots; "
                "lower the LoLDU rank or exclude the layer"
            )
        b = p @ lower[:, :r]
        a, z = upper[:r], d[:r]
        s = float(adapter.scaling_factor)
        adapter.lora_A.copy_(a)
        adapter.lora_B.copy_(b)
        adapter.vector_z.copy_(z)
        adapter.set_base_matrix(w - s * ((b * z) @ a))

    def peft_init(self) -> bool | str:
        return "loldu"

    def __repr__(self) -> str:
        return f"LoLDU({self.rank})"


_KEYS = ("lora_A", "lora_B", "vector_z", "scaling_factor")


def save_loldu(model: nn.Module, path: str | Path) -> Path:
    """Write the model's LoLDU adapters to one safetensors file (weightlab's own format:
    per layer ``<name>.lora_A``, ``.lora_B``, ``.vector_z``, ``.scaling_factor``; metadata
    ``format`` and the ranks). PEFT has no LoLDU, so this is its export."""
    layers = {n: a for n, a in adapter_modules(model).items() if isinstance(a, LoLDULayer)}
    if not layers:
        raise ConfigError("the model has no LoLDU adapters to save; add_adapters(init=LoLDU(r))")
    tensors = {
        f"{n}.{k}": getattr(a, k).detach().contiguous().clone()
        for n, a in layers.items()
        for k in _KEYS
    }
    meta = {"format": FORMAT, "ranks": json.dumps({n: a.rank for n, a in layers.items()})}
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


@torch.no_grad()
def load_loldu(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a :func:`save_loldu` file into a model that has the same LoLDU adapters
    (``add_adapters(model, select, init=LoLDU(r))`` on the same base: the residual base
    is recomputed from W, the trained ``z`` and ``s`` are read)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as e:
        raise DataError(f"cannot read LoLDU file {path}: {str(e).splitlines()[0]}") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a weightlab LoLDU file (format {meta.get('format')!r})")
    layers = {n: a for n, a in adapter_modules(model).items() if isinstance(a, LoLDULayer)}
    ranks = json.loads(meta["ranks"])
    if set(ranks) != set(layers):
        raise ConfigError(
            f"LoLDU file layers {sorted(ranks)} differ from the model's {sorted(layers)}; "
            "add the same adapters first"
        )
    for n, a in layers.items():
        for k in _KEYS:
            t, dst = tensors[f"{n}.{k}"], getattr(a, k)
            if t.shape != dst.shape:
                raise ConfigError(
                    f"LoLDU file {n}.{k} has shape {tuple(t.shape)}, the model "
                    f"{tuple(dst.shape)}; the base shapes do not match"
                )
            dst.copy_(t)
    return model
