"""NTK-parametrized fully connected networks in ``stax``'s convention, and their exact
equivalents as plain weightlab :class:`~weightlab.models.mlp.MLP` s (for the population's
MLP fast path).

Novak et al. 2020 ("Neural Tangents: Fast and Easy Infinite Neural Networks in Python",
ICLR, ``stax.Dense``) and Jacot et al. 2018 (Eq. 1) write a dense layer as
``h = (w_std/√fan_in) W x + b_std b`` with ``W, b ~ N(0, 1)``. Gradient descent with rate
``η`` on the stored ``(W, b)`` is gradient descent on the effective weights ``W_eff = c W``
(``c = w_std/√fan_in``) and ``b_eff = b_std b`` with per-tensor rates ``η c²`` and
``η b_std²`` (``ΔW_eff = c ΔW = −η c² ∂L/∂W_eff``): :func:`ntk_to_mlp` and
:func:`ntk_lr_groups` give that standard-parametrization model and its parameter groups,
:func:`mlp_to_ntk` maps trained weights back.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.seeding import seeded_global_cpu_rng


class Erf(nn.Module):
    """The pointwise ``erf`` activation (``stax.Erf``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


class NTKLinear(nn.Linear):
    """A Linear layer in the NTK parametrization of ``stax`` (Novak et al. 2020, "Neural
    Tangents", ``stax.Dense``; Jacot et al. 2018, Eq. 1):

        h = (w_std / √fan_in) · W x + b_std · b,   W_ij, b_i ~ N(0, 1),

    so the stored parameters are O(1) and the width scaling lives in the forward pass."""

    def __init__(
        self, in_features: int, out_features: int, w_std: float = 1.0, b_std: float = 0.0
    ) -> None:
        super().__init__(in_features, out_features, bias=b_std != 0.0)
        self.w_std, self.b_std = float(w_std), float(b_std)
        self.weight_mult = self.w_std / in_features**0.5
        self.bias_mult = self.b_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias * self.bias_mult
        return nn.functional.linear(x * self.weight_mult, self.weight, b)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", w_std={self.w_std}, b_std={self.b_std}"


_ACT = {"relu": nn.ReLU, "erf": Erf, "linear": nn.Identity, "tanh": nn.Tanh}


def ntk_mlp(
    widths: Iterable[int],
    *,
    activation: str = "relu",
    w_std: float = 1.0,
    b_std: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> nn.Sequential:
    """An MLP ``widths = [in, h1, …, hL, out]`` in ``stax``'s NTK parametrization:
    ``L`` (:class:`NTKLinear` + activation) blocks, then a readout :class:`NTKLinear`, every
    stored entry ~ N(0, 1) drawn from a generator seeded with ``seed``. Its kernels at
    infinite width are :func:`weightlab.kernels.analytic.fc_kernels` with ``depth = L``."""
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w <= 0 for w in widths):
        raise ConfigError(f"ntk_mlp widths must be >= 2 positive integers, got {widths}")
    if activation not in _ACT:
        raise ConfigError(f"unknown activation {activation!r}; choose one of: {', '.join(_ACT)}")
    g = torch.Generator().manual_seed(int(seed))
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        lin = NTKLinear(a, b, w_std, b_std)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=g, dtype=torch.float64))
            if lin.bias is not None:
                lin.bias.copy_(torch.randn(b, generator=g, dtype=torch.float64))
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(_ACT[activation]())
    return nn.Sequential(*layers).to(dtype)


def _ntk_linears(model: nn.Sequential) -> list[NTKLinear]:
    lins = [m for m in model if isinstance(m, NTKLinear)]
    if not lins:
        raise ConfigError("expected an ntk_mlp (a Sequential of NTKLinear layers)")
    return lins


def ntk_to_mlp(model: nn.Sequential):
    """The same function as a plain :class:`~weightlab.models.mlp.MLP` holding the effective
    weights ``W_eff = (w_std/√fan_in) W`` and biases ``b_std b`` (zero without a bias)."""
    from weightlab.models.mlp import MLP

    lins = _ntk_linears(model)
    acts = {type(m) for m in model if not isinstance(m, NTKLinear)}
    names = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Identity: "linear"}
    if len(acts) > 1 or not acts <= set(names):
        raise ConfigError("ntk_to_mlp needs relu, tanh or linear activations (MLP has no erf)")
    activation = names[acts.pop()] if acts else "linear"
    widths = [lins[0].in_features] + [lin.out_features for lin in lins]
    with seeded_global_cpu_rng(0):  # MLP's constructor draws; every value is overwritten
        mlp = MLP(widths, activation=activation)
    mlp = mlp.to(lins[0].weight.dtype)
    with torch.no_grad():
        for dst, src in zip(mlp.layers, lins, strict=True):
            dst.weight.copy_(src.weight * src.weight_mult)
            if src.bias is None:
                dst.bias.zero_()
            else:
                dst.bias.copy_(src.bias * src.bias_mult)
    return mlp


def ntk_lr_groups(model: nn.Sequential) -> tuple:
    """Parameter groups that make SGD on :func:`ntk_to_mlp`'s model the NTK-parametrized
    SGD of ``model``: weights ``lr × w_std²/fan_in``, biases ``lr × b_std²`` (0: frozen at
    zero when the layer has no bias)."""
    from weightlab.train.config import ParamGroup

    out = []
    for i, lin in enumerate(_ntk_linears(model)):
        out.append(ParamGroup((f"layers.{i}.weight",), lr_mult=lin.weight_mult**2))
        out.append(ParamGroup((f"layers.{i}.bias",), lr_mult=lin.bias_mult**2))
    return tuple(out)


def mlp_to_ntk(mlp, template: nn.Sequential) -> nn.Sequential:
    """Inverse of :func:`ntk_to_mlp`: ``template`` (an :func:`ntk_mlp` of the same shape)
    copied, holding ``mlp``'s weights divided by the multipliers."""
    import copy

    out = copy.deepcopy(template).to(mlp.layers[0].weight.dtype)
    lins = _ntk_linears(out)
    if len(lins) != len(mlp.layers):
        raise ConfigError("mlp_to_ntk: the MLP and the template have different depths")
    with torch.no_grad():
        for src, dst in zip(mlp.layers, lins, strict=True):
            dst.weight.copy_(src.weight / dst.weight_mult)
            if dst.bias is not None:
                dst.bias.copy_(src.bias / dst.bias_mult)
    return out
