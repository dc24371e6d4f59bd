"""Output scale α: lazy vs rich training, ``f(x) = α (f_θ(x) − f_θ0(x))``.

Chizat, Oyallon & Bach 2019 scale a model's output by α; large α trains lazily (close to
the linearized model), small α learns features. Kumar et al. 2024 ("Grokking as the
Transition from Lazy to Rich Training Dynamics", [#39]) and Petrini et al. 2023
("Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning", [#54]) turn
this knob. The centring ``f_θ0`` comes from a frozen copy of the initial model, evaluated
on every input (training, validation and test alike), so the output at initialization is
exactly zero. Under MSE the function moves at speed ``η α²`` (one gradient step changes
``f`` by ``-η α² K (f − y)``, ``K`` the tangent kernel), so :func:`default_lr` is
``η = η₀ / α²``.

The frozen copy holds its tensors as *buffers*, so they are never trained, travel with
``copy.deepcopy`` and state dicts, and are stacked per member by populations (each
member is centred on its own initialization). α is a 0-dim buffer too: members whose
``MemberSpec.init_state`` carries different α train as one population.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from weightlab.errors import ConfigError


def _check_alpha(alpha: float) -> float:
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"output scale alpha must be a number > 0, got {alpha!r}") from None
    if not (math.isfinite(a) and a > 0):
        raise ConfigError(f"output scale alpha must be finite and > 0, got {alpha}; pass e.g. 1.0")
    return a


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters are buffers (same names): never trained."""
    out = copy.deepcopy(model)
    for m in out.modules():
        for name, p in list(m._parameters.items()):
            del m._parameters[name]
            if p is not None:
                m.register_buffer(name, p.detach().clone())
            else:
                setattr(m, name, None)
    return out


class OutputScale(nn.Module):
    """``α (model(x) − initial(x))`` (``centered``) or ``α · model(x)``; ``initial`` is
    :func:`frozen_copy` of ``model`` as passed in."""

    def __init__(self, model: nn.Module, alpha: float, centered: bool = True) -> None:
        super().__init__()
        # a buffer, not a Python float: it travels with state dicts and snapshots, and a
        # population stacks it per member, so members with different α train as one
        self.register_buffer("alpha", torch.tensor(_check_alpha(alpha), dtype=torch.float64))
        self.centered = bool(centered)
        self.model = model
        self.initial = frozen_copy(model) if centered else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if self.initial is not None:
            with torch.no_grad():
                out0 = self.initial(x)
            out = out - out0
        return self.alpha * out

    def extra_repr(self) -> str:
        return f"alpha={float(self.alpha):g}, centered={self.centered}"


def output_scale(model: nn.Module, alpha: float, centered: bool = True) -> OutputScale:
    """Wrap ``model`` (at its initialization) as ``f = α (f_θ − f_θ0)`` [#39, #54]."""
    return OutputScale(model, alpha, centered)


def default_lr(lr0: float, alpha: float) -> float:
    """``η₀ / α²``: the same function-space speed for every α under MSE."""
    return float(lr0) / _check_alpha(alpha) ** 2
