"""Scalable neural network kernels (SNNK): a neuron ``act(⟨w, x⟩ + b)`` written as a dot product
``Φ(x)ᵀΨ(w)`` of random features of the input and of the weights, so inputs and parameters are
disentangled and meet only in the final dot product.

Sehanobish et al. (2023), "Scalable Neural Network Kernels", Sec. 3. Their
universal random features (URFs) cover general activations; here only the activations with an
*exact* Gaussian random-feature identity are built (the issue's rule: other activations only
with the paper's construction cited): ``sin``, ``cos`` and ``exp``.

The identities (ω ~ N(0, I_d), derived from the Gaussian moment-generating function
``E_ω[exp(ωᵀz)] = exp(zᵀz / 2)``, which holds for complex ``z`` too since both sides are
entire in ``z``):

* **exp** (the positive random features of Choromanski et al. 2021, FAVOR+, Lemma 1), with
  ``z = w + x``::

      exp(⟨w, x⟩) = E_ω[ exp(ωᵀw − ‖w‖²/2) · exp(ωᵀx − ‖x‖²/2) ]

* **sin / cos**, with ``z = w + i·x``: ``zᵀz = ‖w‖² − ‖x‖² + 2i⟨w, x⟩``, so
  ``E_ω[exp(ωᵀw) · exp(iωᵀx)] = exp((‖w‖² − ‖x‖²)/2) · exp(i⟨w, x⟩)``; real and imaginary
  parts give::

      cos(⟨w, x⟩) = E_ω[ exp(ωᵀw − ‖w‖²/2) · exp(‖x‖²/2) · cos(ωᵀx) ]
      sin(⟨w, x⟩) = E_ω[ exp(ωᵀw − ‖w‖²/2) · exp(‖x‖²/2) · sin(ωᵀx) ]

With m i.i.d. draws ω_1..ω_m, ``Φ(x)_j = φ(ω_jᵀx, x)/√m`` and ``Ψ(w)_j = ψ(ω_jᵀw, w)/√m``,
``Φ(x)ᵀΨ(w)`` is an unbiased Monte-Carlo estimate whose standard error falls as ``m^{-1/2}``.
Its second moment per draw is at most ``exp(‖w‖² + ‖x‖²)`` (sin/cos) or
``exp(‖w‖² + ‖x‖² + 2⟨w, x⟩)·...`` (exp), so the estimator is only useful for moderate norms.
Since ``⟨w, x⟩ = ⟨w/c, c·x⟩`` for any ``c > 0``, :class:`SNNKLinear` feeds ``c·x`` to Φ and
``w/c`` to Ψ (``input_scale`` c, default ``1/√d``), which keeps both norms O(1) for inputs
with O(1) entries.

A bias is absorbed by augmenting: ``⟨[w, b], [x, 1]⟩ = ⟨w, x⟩ + b``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "SNNK_ACTIVATIONS",
    "SNNKLinear",
    "check_activation",
    "input_features",
    "weight_features",
]

#: Activations with an exact Gaussian random-feature identity (module docstring).
SNNK_ACTIVATIONS = ("sin", "cos", "exp")
_EXACT = {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp}


def check_activation(activation: str) -> str:
    """``activation`` if it has a random-feature construction here, else a one-line ConfigError."""
    if activation not in SNNK_ACTIVATIONS:
        raise ConfigError(
            f"SNNK activation {activation!r} has no exact random-feature construction here; "
            f"use one of: {', '.join(SNNK_ACTIVATIONS)}"
        )
    return activation


def input_features(x: Tensor, omega: Tensor, activation: str) -> Tensor:
    """Φ(x): ``(n, d) -> (n, m)`` for frozen ``omega`` ``(m, d)`` (module docstring's identities),
    scaled by ``1/√m`` so that ``Φ(x) @ Ψ(w)ᵀ`` averages over the m draws."""
    check_activation(activation)
    m = omega.shape[0]
    proj = x @ omega.T
    sq = 0.5 * x.square().sum(-1, keepdim=True)
    if activation == "exp":
        phi = torch.exp(proj - sq)
    elif activation == "sin":
        phi = torch.exp(sq) * torch.sin(proj)
    else:
        phi = torch.exp(sq) * torch.cos(proj)
    return phi / math.sqrt(m)


def weight_features(w: Tensor, omega: Tensor, activation: str) -> Tensor:
    """Ψ(w): ``(k, d) -> (k, m)``, rows of weights (one neuron each): ``exp(ωᵀw − ‖w‖²/2)/√m``
    (the same weight-side feature for sin, cos and exp)."""
    check_activation(activation)
    m = omega.shape[0]
    proj = w @ omega.T
    return torch.exp(proj - 0.5 * w.square().sum(-1, keepdim=True)) / math.sqrt(m)


class SNNKLinear(nn.Module):
    """A feedforward layer ``act(x Wᵀ + b)`` replaced by its SNNK factorization
    ``Φ(c·[x, 1]) V`` with ``V = Ψ([W, b]/c)ᵀ`` (Sehanobish et al. 2023, Sec. 3; identities in
    the module docstring).

    The random projections ω ``(m, in_features + 1)`` are frozen buffers drawn from ``seed``.
    ``V`` (``(m, out_features)``) is the only trainable tensor: :meth:`from_weights` sets it to
    ``Ψ(W̃/c)ᵀ`` so the layer is an unbiased estimate of the original neuron outputs, and
    training it directly is the SNNK layer used in place of an FFL (``m·out`` trainable
    parameters instead of ``(in + 1)·out``). ``weights=None`` draws W with the default
    ``nn.Linear`` init (U(±1/√in), from ``seed``) and starts from its Ψ.

    Args:
        in_features, out_features: the replaced layer's sizes.
        num_features: m, the number of random features (> 0).
        activation: ``"sin"``, ``"cos"`` or ``"exp"``; others raise :class:`ConfigError`.
        input_scale: c > 0 in ``⟨w, x⟩ = ⟨w/c, c·x⟩``; default ``1/√in_features``.
        seed: seed of ω (and of W when none is given).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_features: int,
        activation: str = "sin",
        *,
        input_scale: float | None = None,
        weights: tuple[Tensor, Tensor | None] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_activation(activation)
        for name, v in (
            ("in_features", in_features),
            ("out_features", out_features),
            ("num_features", num_features),
        ):
            if int(v) <= 0:
                raise ConfigError(f"SNNKLinear {name} must be > 0, got {v}; pass a positive count")
        c = 1.0 / math.sqrt(in_features) if input_scale is None else float(input_scale)
        if not (math.isfinite(c) and c > 0):
            raise ConfigError(f"SNNKLinear input_scale must be > 0, got {input_scale}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.num_features, self.activation, self.input_scale = int(num_features), activation, c
        g = generator(derive_seed("snnk", seed, "omega"))
        omega = torch.randn((self.num_features, self.in_features + 1), generator=g)
        self.register_buffer("omega", omega.to(torch.float64))
        if weights is None:
            gw = generator(derive_seed("snnk", seed, "weight"))
            bound = 1.0 / math.sqrt(in_features)
            w = (torch.rand((out_features, in_features), generator=gw) * 2 - 1) * bound
            b = (torch.rand((out_features,), generator=gw) * 2 - 1) * bound
        else:
            w, b = weights
        self.v = nn.Parameter(self._psi(w, b).to(dtype))

    def _augment_w(self, w: Tensor, b: Tensor | None) -> Tensor:
        w = w.detach().to(torch.float64)
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ConfigError(
                f"SNNKLinear weights have shape {tuple(w.shape)}, expected "
                f"({self.out_features}, {self.in_features}); pass the replaced layer's weight"
            )
        bias = torch.zeros(self.out_features, dtype=torch.float64) if b is None else b.detach()
        return torch.cat([w, bias.to(torch.float64).reshape(-1, 1)], 1)

    def _psi(self, w: Tensor, b: Tensor | None) -> Tensor:
        wt = self._augment_w(w, b) / self.input_scale
        return weight_features(wt, self.omega, self.activation).T  # (m, out)

    @classmethod
    def from_linear(
        cls, layer: nn.Linear, num_features: int, activation: str = "sin", **kwargs
    ) -> SNNKLinear:
        """The SNNK estimate of ``act(layer(x))`` for a trained or initialized ``nn.Linear``."""
        return cls(
            layer.in_features,
            layer.out_features,
            num_features,
            activation,
            weights=(layer.weight, layer.bias),
            dtype=layer.weight.dtype,
            **kwargs,
        )

    def features(self, x: Tensor) -> Tensor:
        """Φ(c·[x, 1]) ``(n, m)`` in ω's dtype (float64 unless cast; the frozen input side)."""
        if x.shape[-1] != self.in_features:
            raise ConfigError(
                f"SNNKLinear expects inputs with {self.in_features} features, got "
                f"{x.shape[-1]}; reshape the input or rebuild the layer"
            )
        dt = self.omega.dtype
        xd = x.to(dt)
        xt = torch.cat([xd, xd.new_ones((*x.shape[:-1], 1))], -1) * self.input_scale
        return input_features(xt, self.omega, self.activation)

    def forward(self, x: Tensor) -> Tensor:
        return (self.features(x).to(self.v.dtype)) @ self.v

    @staticmethod
    def exact(x: Tensor, w: Tensor, b: Tensor | None, activation: str) -> Tensor:
        """The neurons being estimated: ``act(x Wᵀ + b)``."""
        check_activation(activation)
        z = x @ w.T + (0 if b is None else b)
        return _EXACT[activation](z)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_features={self.num_features}, activation={self.activation!r}, "
            f"input_scale={self.input_scale:.4g}"
        )
