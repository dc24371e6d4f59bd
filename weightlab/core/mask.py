"""The Mask transform: ``W_eff = W ⊙ M`` for a binary mask ``M``.

Used by every pruning method (Frankle & Carbin 2019; Han et al. 2015). Invariants:

- pruned weights are exactly zero in the forward pass (``W ⊙ M``);
- they get zero gradient (``∂L/∂W = ∂L/∂W_eff ⊙ M``);
- the stored weight is zeroed where ``M = 0`` when a mask is applied, so weight decay,
  optimizer moments and saved checkpoints hold exact zeros there as well; masking a model
  mid-training also zeroes the optimizer's state there (``apply_masks(..., optimizer)``).
"""

from __future__ import annotations

import torch
from torch import nn

from weightlab.core.selectors import plain_name
from weightlab.core.transforms import Transform, _resolve, attach, parametrized_names, transforms_of
from weightlab.errors import ConfigError


class Mask(Transform):
    """Binary mask stored as a buffer ``mask`` (same dtype as the weight, values 0/1)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().clone().float())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)

    def extra_repr(self) -> str:
        return f"density={self.mask.mean().item():.4f}"


def _check_mask(name: str, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != weight.shape:
        raise ConfigError(
            f"mask for {name!r} has shape {tuple(mask.shape)}, weight has {tuple(weight.shape)}; "
            "build masks from this model's weights (masks of another architecture do not fit)"
        )
    if not torch.all((mask == 0) | (mask == 1)):
        raise ConfigError(f"mask for {name!r} must hold only 0 and 1")
    return mask.to(device=weight.device)


def _mask_transform(model: nn.Module, name: str) -> Mask | None:
    masks = [t for t in transforms_of(model, name) if isinstance(t, Mask)]
    return masks[0] if masks else None


def _aliases(model: nn.Module) -> dict[int, list[str]]:
    """``id(stored parameter) -> its plain names`` (several names: tied parameters)."""
    out: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), []).append(plain_name(name))
    return out


def _refuse_tied(model: nn.Module, names) -> None:
    for aliases in _aliases(model).values():
        hit = [n for n in aliases if n in names]
        if hit and len(aliases) > 1:
            others = [n for n in aliases if n != hit[0]]
            raise ConfigError(
                f"parameter {hit[0]!r} is shared with {', '.join(map(repr, others))} (tied "
                "weights); a mask on one alias would not mask the others: untie them first"
            )


def _zero_optimizer_state(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, mask: torch.Tensor
) -> None:
    """Zero every state tensor of ``param`` shaped like it (Adam's ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``; SGD's ``momentum_buffer``...) where ``mask`` is 0."""
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.mul_(mask.to(value.device, value.dtype))


@torch.no_grad()
def apply_masks(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> nn.Module:
    """Attach (or update) a :class:`Mask` on each named parameter and zero the stored
    weight where the mask is 0. Names are plain parameter names.

    With ``optimizer``, its per-parameter state tensors (moments, momentum buffers) are
    zeroed at the pruned positions too; otherwise Adam's leftover moments keep moving
    pruned stored weights after masking (the gradient there is zero, the update is not).
    Tied parameters (one ``Parameter`` under two names) are refused, naming both aliases.
    """
    _refuse_tied(model, set(masks))
    for name, mask in masks.items():
        module, attr = _resolve(model, name)
        existing = _mask_transform(model, name)
        if existing is None:
            weight = getattr(module, attr)
            mask = _check_mask(name, weight, mask)
            attach(model, name, Mask(mask))
        else:
            mask = _check_mask(name, existing.mask, mask)
            existing.mask.copy_(mask)
        original = module.parametrizations[attr].original
        original.mul_(mask.to(original.dtype))
        if optimizer is not None:
            _zero_optimizer_state(optimizer, original, mask)
    return model


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{plain_name: bool mask}`` for every masked parameter."""
    out = {}
    for name in parametrized_names(model):
        m = _mask_transform(model, name)
        if m is not None:
            out[name] = m.mask.bool().clone()
    return out


def density(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of weights kept over all masks (1.0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return kept / total if total else 1.0


__all__ = ["Mask", "apply_masks", "density", "get_masks", "plain_name"]
