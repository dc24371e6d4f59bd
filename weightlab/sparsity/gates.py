"""Layer gates and TRSP, two-stage regularization-based layer pruning (TRSP: "Two-Stage
Regularization-Based Structured Pruning for LLMs", methods row 97).

A gated layer computes ``y = x + g · (F(x) − x)`` with a learnable scalar ``g`` starting at
1 (the original layer); ``g = 0`` is the identity, i.e. the layer removed. The gate wraps
the whole input-to-output map of a layer, so it also removes a post-LN BERT layer (whose
residual sits inside its LayerNorms) and a residual-free hidden layer of an MLP.

- Stage 1: ``loss + λ₁ · Σ_l |g_l|`` (an L1 penalty on every gate).
- Stage 2: the ``k`` layers with the smallest ``|g|`` are chosen for removal and
  ``λ₂ · Σ_{l removed} ‖F_l(x) − x‖² / ‖x‖²`` (per example, norms over all of its
  positions and features) is added, moving their knowledge into the kept layers.
- Then the chosen layers are replaced by :class:`Bypass` (dropped); no retraining.

Training runs in :func:`weightlab.train.train`: :meth:`TRSP.loss` wraps the task's
per-example loss (penalties only in training mode, so evaluations report the task loss)
and :meth:`TRSP.callback` is a step callback that starts stage 2 after
``stage1_steps`` updates. Gates get their own learning rate through a
:class:`~weightlab.train.ParamGroup` on ``*.gate`` (:func:`gate_group`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.train.callbacks import StepCallback, StepContext
from weightlab.train.config import ParamGroup
from weightlab.train.losses import LossFn

__all__ = [
    "TRSP",
    "Bypass",
    "GatedLayer",
    "add_gates",
    "bert_layer_names",
    "gate_group",
    "gate_values",
    "gated_layers",
    "lowest_gates",
    "mlp_layer_names",
    "remove_layers",
]


class GatedLayer(nn.Module):
    """``y = x + g · (layer(x, ...) − x)``, ``g`` a scalar parameter initialised to 1.

    With ``penalize`` set (stage 2) and in training mode, ``penalty`` holds the last
    forward's per-example ``‖layer(x) − x‖² / ‖x‖²`` (shape ``(B,)``).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        p = next(layer.parameters(), None)
        dtype = p.dtype if p is not None else torch.float32
        device = p.device if p is not None else None
        self.gate = nn.Parameter(torch.ones((), dtype=dtype, device=device))
        self.penalize = False
        self.penalty: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        d = self.layer(x, *args, **kwargs) - x
        if self.penalize and self.training:
            num = d.flatten(1).square().sum(1)
            self.penalty = num / x.flatten(1).square().sum(1).clamp_min(1e-12)
        return x + self.gate * d


class Bypass(nn.Module):
    """A removed layer: returns its first input unchanged (extra arguments ignored)."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ConfigError(f"the model has no layer {name!r}; name a submodule") from None


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def add_gates(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Wrap each named layer of ``model`` in a :class:`GatedLayer` (in place); returns the
    names. Gate parameters are ``<name>.gate``, the layer's own ``<name>.layer.*``."""
    names = list(names)
    if not names:
        raise ConfigError("no layers to gate; name at least one layer")
    for name in names:
        layer = _get(model, name)
        if isinstance(layer, GatedLayer):
            raise ConfigError(f"layer {name!r} is already gated")
        _set(model, name, GatedLayer(layer))
    return names


def bert_layer_names(model: nn.Module) -> list[str]:
    """``encoder.layer.{i}`` for every encoder layer of a BERT model."""
    try:
        layers = model.get_submodule("encoder.layer")
    except AttributeError:
        raise ConfigError("the model has no encoder.layer list; pass a BERT model") from None
    return [f"encoder.layer.{i}" for i in range(len(layers))]


def mlp_layer_names(mlp: nn.Module) -> list[str]:
    """The gateable hidden layers of weightlab's ReLU :class:`~weightlab.models.MLP`:
    ``layers.i`` for square hidden-to-hidden Linears (``0 < i < L − 1``).

    The MLP applies ReLU after ``layers.i``; since the layer's input is itself a ReLU output
    (non-negative), ``relu(x + g · (W x + b − x))`` at ``g = 0`` is ``relu(x) = x``, so the
    gate removes Linear and ReLU together.
    """
    if getattr(mlp, "activation", None) != "relu" or not hasattr(mlp, "layers"):
        raise ConfigError(
            "layer gates on an MLP need weightlab's MLP with activation 'relu' (g = 0 must be "
            "the identity); use a relu MLP"
        )
    n = len(mlp.layers)
    names = [
        f"layers.{i}"
        for i in range(1, n - 1)
        if mlp.layers[i].in_features == mlp.layers[i].out_features
    ]
    if not names:
        raise ConfigError("the MLP has no square hidden layer to gate; use equal hidden widths")
    return names


def gated_layers(model: nn.Module) -> dict[str, GatedLayer]:
    """Every :class:`GatedLayer` in ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, GatedLayer)}


def gate_values(model: nn.Module) -> dict[str, float]:
    """Current gate value per gated layer."""
    return {n: float(m.gate.detach()) for n, m in gated_layers(model).items()}


def lowest_gates(model: nn.Module, k: int) -> list[str]:
    """Names of the ``k`` gated layers with the smallest ``|g|`` (ties: earlier layer first),
    in model order."""
    values = gate_values(model)
    if not 0 < k < len(values):
        raise ConfigError(
            f"cannot remove {k} of {len(values)} gated layers; choose 1..{len(values) - 1}"
        )
    order = sorted(range(len(values)), key=lambda i: (abs(list(values.values())[i]), i))
    names = list(values)
    return [names[i] for i in sorted(order[:k])]


def remove_layers(model: nn.Module, names: Sequence[str]) -> None:
    """Replace each named layer (gated or not) by :class:`Bypass`, in place."""
    for name in names:
        _get(model, name)
        _set(model, name, Bypass())


def gate_group(lr_mult: float) -> ParamGroup:
    """A parameter group giving every gate ``lr_mult`` × the base learning rate and no
    weight decay."""
    return ParamGroup(match=("*.gate",), lr_mult=lr_mult, wd_mult=0.0)


@dataclass
class TRSP:
    """TRSP's two regularizers and its stage switch.

    Args:
        lambda1: weight of the stage-1 L1 penalty ``Σ |g|``.
        lambda2: weight of the stage-2 penalty ``‖F(x) − x‖² / ‖x‖²`` on the layers to
            be removed.
        n_remove: how many layers stage 2 targets (the lowest ``|g|``).
        stage1_steps: updates before stage 2 starts (for :meth:`callback`).
    """

    lambda1: float
    lambda2: float
    n_remove: int
    stage1_steps: int = 0
    targets: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.lambda1 >= 0 and self.lambda2 >= 0):
            raise ConfigError("TRSP's lambda1 and lambda2 must be >= 0")
        if self.n_remove < 1:
            raise ConfigError(f"TRSP must remove >= 1 layer, got {self.n_remove}")

    def loss(self, model: nn.Module, base: LossFn) -> LossFn:
        """Per-example ``base(pred, y) + λ₁ Σ|g| (+ λ₂ Σ_targets penalty in stage 2)``;
        in eval mode just ``base``. ``model`` must carry gates (:func:`add_gates`)."""
        layers = gated_layers(model)
        if not layers:
            raise ConfigError("TRSP needs a gated model; call add_gates first")

        def trsp_loss(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = base(pred, y)
            if not model.training:
                return out
            out = out + self.lambda1 * sum(m.gate.abs() for m in layers.values())
            for name in self.targets:
                pen = layers[name].penalty
                if pen is None:
                    raise ConfigError(f"gated layer {name!r} was not run in this forward")
                out = out + self.lambda2 * pen
            return out

        return trsp_loss

    def start_stage2(self, model: nn.Module) -> list[str]:
        """Choose the ``n_remove`` lowest-``|g|`` layers and switch their penalty on."""
        self.targets = lowest_gates(model, self.n_remove)
        layers = gated_layers(model)
        for name in self.targets:
            layers[name].penalize = True
        return list(self.targets)

    def callback(self) -> StepCallback:
        """A step callback that calls :meth:`start_stage2` after update ``stage1_steps``
        (``0`` or a step past the run: stage 2 never starts)."""

        def trsp_stage(model: nn.Module, ctx: StepContext) -> None:
            if ctx.step == self.stage1_steps:
                self.start_stage2(model)

        return trsp_stage

    def finish(self, model: nn.Module) -> list[str]:
        """Drop the stage-2 targets (or, if stage 2 never ran, the lowest gates now);
        returns the removed names."""
        names = self.targets or lowest_gates(model, self.n_remove)
        remove_layers(model, names)
        self.targets = []
        return list(names)
