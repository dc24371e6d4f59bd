"""Interop with ``torch.nn.utils.prune``.

``torch.nn.utils.prune`` and ``torch.nn.utils.parametrize`` (which weightlab's masks use)
cannot share a weight: prune replaces ``weight`` by ``weight_orig`` plus a forward
pre-hook that writes ``weight = weight_orig * weight_mask``, while a parametrization
turns ``weight`` into a property. So the two never meet on one module:

- :func:`to_torch_prune` (export): masks are read with :func:`~weightlab.core.get_masks`,
  a deep copy is :func:`~weightlab.core.merge` d (plain parameters, pruned entries zero),
  and each mask is attached with ``prune.custom_from_mask``. The input is not modified.
- :func:`from_torch_prune` (import, in place): each pruned parameter's ``<name>_mask`` is
  read, ``prune.remove`` makes the weight plain again (``weight_orig * mask``), then the
  masks are attached with :func:`~weightlab.core.apply_masks`.

A round trip gives the same masks and the same outputs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from weightlab.core.mask import apply_masks, get_masks
from weightlab.core.transforms import _resolve
from weightlab.errors import ConfigError
from weightlab.sparsity.export import merged_copy


def to_torch_prune(model: nn.Module, masks: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A merged copy of ``model`` with ``masks`` (default: the masks attached to it)
    attached through ``torch.nn.utils.prune.custom_from_mask``."""
    masks = get_masks(model) if masks is None else dict(masks)
    if not masks:
        raise ConfigError("the model has no masks to export; attach some with apply_masks")
    out = merged_copy(model)
    for name, mask in masks.items():
        module, attr = _resolve(out, name)
        weight = getattr(module, attr)
        if tuple(mask.shape) != tuple(weight.shape):
            raise ConfigError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, weight has "
                f"{tuple(weight.shape)}; give masks shaped like the model's weights"
            )
        prune.custom_from_mask(module, attr, mask.to(weight.device, torch.bool))
    return out


def pruned_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{plain_name: bool mask}`` of every parameter pruned with ``torch.nn.utils.prune``."""
    out = {}
    for mname, module in model.named_modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                names = [h._tensor_name for h in getattr(hook, "_pruning_methods", [hook])]
                for attr in dict.fromkeys(names):
                    mask = getattr(module, f"{attr}_mask")
                    out[f"{mname}.{attr}" if mname else attr] = mask.detach().bool().clone()
    return out


def from_torch_prune(model: nn.Module) -> nn.Module:
    """In place: ``prune.remove`` on every pruned parameter, then the same masks attached
    with :func:`~weightlab.core.apply_masks`. Returns ``model``."""
    masks = pruned_masks(model)
    if not masks:
        raise ConfigError("the model has no torch.nn.utils.prune masks to import")
    for name in masks:
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        prune.remove(module, attr)
    return apply_masks(model, masks)


__all__ = ["from_torch_prune", "pruned_masks", "to_torch_prune"]
