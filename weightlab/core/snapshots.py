"""Weight snapshots (θ0 at init, θk at iteration k) for rewinding.

A snapshot is ``{plain_name: tensor}`` of the stored parameters (and, optionally,
buffers such as BatchNorm running statistics), keyed by the names of the plain
architecture so it applies to masked and unmasked copies alike.
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.core.selectors import is_transform_state, plain_name
from weightlab.core.transforms import _resolve
from weightlab.errors import ConfigError


@torch.no_grad()
def take_snapshot(model: nn.Module, buffers: bool = True) -> dict[str, torch.Tensor]:
    """Detached CPU copies of all parameters (and buffers except masks)."""
    out = {plain_name(n): p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}
    if buffers:
        for n, b in model.named_buffers():
            if not is_transform_state(n):
                out[n] = b.detach().to("cpu", copy=True)
    return out


@torch.no_grad()
def restore_snapshot(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> nn.Module:
    """Rewind: copy snapshot values into the model's stored parameters (and buffers).

    Where a Mask is attached, the restored weight is multiplied by it, so pruned
    weights stay exactly zero (rewinding as in Frankle et al. 2020, "Linear Mode
    Connectivity and the Lottery Ticket Hypothesis").
    """
    from weightlab.core.mask import Mask

    params = {plain_name(n): p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers() if not is_transform_state(n)}
    missing = [n for n in params if n not in snapshot]
    if missing:
        raise ConfigError(
            f"snapshot lacks parameters {missing[:3]}; it was taken from another architecture"
        )
    for name, p in params.items():
        value = snapshot[name]
        if value.shape != p.shape:
            raise ConfigError(
                f"snapshot {name!r} has shape {tuple(value.shape)}, model has {tuple(p.shape)}"
            )
        p.copy_(value)
        module, attr = _resolve(model, name)
        if hasattr(module, "parametrizations") and attr in module.parametrizations:
            for t in module.parametrizations[attr]:
                if isinstance(t, Mask):
                    p.mul_(t.mask.to(p.dtype))
    for name, b in buffers.items():
        if name in snapshot:
            b.copy_(snapshot[name])
    return model
