"""Layer collapse: a pruned network that can no longer pass signal from input to output.

Tanaka et al. (2020), "Pruning neural networks without any data by iteratively
conserving synaptic flow", Sec. 3, define layer collapse as "the premature pruning of an
entire layer making a network untrainable". :func:`layer_collapse` reports it two ways:

- **empty layers**: a mask with no kept weight (checked for every model);
- **no path** (chains only: an MLP, or shapes that chain ``(out_l, in_l)`` with
  ``in_{l+1} = out_l``): the boolean product ``|M_L| ⋯ |M_1|`` is zero, i.e. no input
  reaches any output through kept weights; the layer where the forward signal dies is
  named. Per layer, ``effective`` counts the kept weights on some input-output path
  (the others cannot affect the output). Conv masks
  in a chain are reduced to ``(out, in)`` by "any kernel position kept".

For non-chain models (residual blocks, attention, several inputs to a layer) only the
per-layer empty check is made: skip connections bypass layers, so a zero product would
not mean the network is cut; ``report.chain`` is then False and ``report.path`` None.
Biases are not part of the check (a bias-only output is constant in the input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.errors import ConfigError


@dataclass
class CollapseReport:
    """``empty``: layers with no kept weight; ``cut``: in a chain without an
    input-output path, the layer where the forward signal dies (the first layer none of
    whose outputs any input reaches through kept weights); ``path``: whether some input reaches some
    output through kept weights (``None`` when the model is not a chain);
    ``effective``: per layer of a chain, kept weights on some input-output path
    (weights off every path cannot affect the output); ``kept``: kept weights per layer."""

    chain: bool
    empty: list[str] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)
    path: bool | None = None
    kept: dict[str, int] = field(default_factory=dict)
    effective: dict[str, int] = field(default_factory=dict)

    @property
    def collapsed(self) -> bool:
        """Whether some layer is empty or (in a chain) no input-output path is left."""
        return bool(self.empty) or self.path is False

    @property
    def layers(self) -> list[str]:
        """Every layer named as collapsed (empty or cut), in layer order."""
        return [n for n in self.kept if n in set(self.empty) | set(self.cut)]

    def to_dict(self) -> dict:
        return {
            "chain": self.chain,
            "collapsed": self.collapsed,
            "path": self.path,
            "empty": list(self.empty),
            "cut": list(self.cut),
            "kept": dict(self.kept),
            "effective": dict(self.effective),
        }


def _as_matrix(name: str, m: torch.Tensor) -> torch.Tensor:
    b = m.detach().bool().cpu()
    if b.dim() < 2:
        raise ConfigError(f"mask for {name!r} has shape {tuple(b.shape)}; expected a weight matrix")
    return b.reshape(b.shape[0], b.shape[1], -1).any(-1) if b.dim() > 2 else b


def _is_chain_model(model: nn.Module, names: list[str]) -> bool:
    from weightlab.models.mlp import MLP

    if isinstance(model, MLP):
        return names == [f"layers.{i}.weight" for i in range(len(model.layers))]
    if isinstance(model, nn.Sequential):
        weighted = [f"{n}.weight" for n, m in model.named_children() if isinstance(m, (nn.Linear))]
        others_ok = all(
            isinstance(m, nn.Linear) or not any(True for _ in m.parameters())
            for m in model.children()
        )
        return others_ok and names == weighted
    return False


def layer_collapse(
    model_or_shapes: nn.Module | Mapping[str, torch.Size],
    masks: Mapping[str, torch.Tensor],
) -> CollapseReport:
    """Which layers of ``masks`` collapse (see the module docstring).

    ``model_or_shapes``: the model the masks belong to (a weightlab ``MLP`` or an
    ``nn.Sequential`` of Linear layers and parameter-free activations counts as a chain
    when ``masks`` covers all its Linear weights, in order), or an ordered
    ``{name: shape}`` map that the caller declares a chain (its layers must connect:
    ``shape_{l+1}[1] == shape_l[0]``). Masks must match the shapes."""
    names = list(masks)
    if not names:
        raise ConfigError("layer_collapse needs at least one mask")
    if isinstance(model_or_shapes, nn.Module):
        params = dict(model_or_shapes.named_parameters())
        from weightlab.core.selectors import plain_name

        shapes = {plain_name(k): v.shape for k, v in params.items()}
        missing = [n for n in names if n not in shapes]
        if missing:
            raise ConfigError(f"masks name {missing[:3]}, which the model does not have")
        chain = _is_chain_model(model_or_shapes, names)
    else:
        shapes = {n: torch.Size(s) for n, s in model_or_shapes.items()}
        missing = [n for n in names if n not in shapes]
        if missing:
            raise ConfigError(f"masks name {missing[:3]}, which the shapes do not list")
        chain = names == list(shapes)
    for n in names:
        if tuple(masks[n].shape) != tuple(shapes[n]):
            raise ConfigError(
                f"mask for {n!r} has shape {tuple(masks[n].shape)}, the weight has "
                f"{tuple(shapes[n])}"
            )
    mats = {n: _as_matrix(n, masks[n]) for n in names}
    kept = {n: int(masks[n].detach().bool().sum()) for n in names}
    report = CollapseReport(chain=False, empty=[n for n in names if kept[n] == 0], kept=kept)
    if chain:
        for a, b in zip(names[:-1], names[1:], strict=True):
            if mats[b].shape[1] != mats[a].shape[0]:
                if isinstance(model_or_shapes, nn.Module):
                    chain = False
                    break
                raise ConfigError(
                    f"shapes do not chain: {b!r} takes {mats[b].shape[1]} inputs but {a!r} "
                    f"gives {mats[a].shape[0]} outputs"
                )
    if not chain:
        return report
    report.chain = True
    # forward: units reachable from some input; backward: units reaching some output
    reach = [torch.ones(mats[names[0]].shape[1], dtype=torch.bool)]
    for n in names:
        reach.append((mats[n].float() @ reach[-1].float()) > 0)
    back = [torch.ones(mats[names[-1]].shape[0], dtype=torch.bool)]
    for n in reversed(names):
        back.append((back[-1].float() @ mats[n].float()) > 0)
    back.reverse()  # back[l]: units feeding layer l's inputs that reach an output
    report.path = bool(reach[-1].any())
    for i, n in enumerate(names):
        on_path = mats[n] & back[i + 1][:, None] & reach[i][None, :]
        full = masks[n].detach().bool().cpu()
        if full.dim() > 2:  # conv: kept kernel entries of on-path (out, in) pairs
            flat = full.reshape(full.shape[0], full.shape[1], -1)
            report.effective[n] = int((flat & on_path[..., None]).sum())
        else:
            report.effective[n] = int(on_path.sum())
        if reach[i].any() and not reach[i + 1].any():
            report.cut.append(n)  # the layer where the forward signal dies
    return report


__all__ = ["CollapseReport", "layer_collapse"]
