"""Per-neuron Fourier spectrum of first-layer weights on one-hot ``Z_p`` inputs.

The probe of Tian (2025), "Provable Scaling Laws of Feature Emergence from Learning
Dynamics of Grokking" (row [#27]): in modular addition ``a + b mod p`` learned from
``[onehot(a), onehot(b)]``, the emerging features are Fourier modes of ``Z_p``. A hidden
unit ``j`` of a first Linear with weight ``W ∈ R^{h × 2p}`` has one weight per value of
``a`` (``u_j = W[j, :p]``) and one per value of ``b`` (``v_j = W[j, p:]``). For each such
vector ``x ∈ R^p`` the DFT is ``X_k = Σ_{a=0}^{p-1} x_a e^{-2πi k a / p}``, and the power at
frequency ``k ∈ {1, …, ⌊p/2⌋}`` is the one-sided

    P_k = |X_k|² + |X_{p−k}|²   (= 2 |X_k|² for a real x, except k = p/2: |X_{p/2}|²),

the DC term ``k = 0`` (the mean of ``x``) dropped. The *concentration* of ``x`` is
``max_k P_k / Σ_k P_k`` in ``[1/⌊p/2⌋, 1]``: 1 for a pure cosine ``cos(2π k a / p + φ)``
(its peak at ``k``), and for i.i.d. Gaussian weights with odd ``p`` the powers are i.i.d.
exponential, so the concentration is the largest of ``K = ⌊p/2⌋`` uniform spacings, with
mean ``H_K / K`` (``H_K`` the harmonic number): 0.1376 at ``p = 59``.

All functions take ``member_dims`` leading dims (population members, stacked by
:class:`weightlab.population.Population`) and compute every member at once;
:func:`fourier_probe` wraps them as a :class:`weightlab.train.probes.Probe`, so they run in
:func:`weightlab.train.train` and in populations alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from weightlab.errors import ConfigError
from weightlab.train.probes import Probe, param_probe

SUMMARIES = ("median", "mean", "min", "max")


def _check_p(p: int) -> int:
    if isinstance(p, bool) or not isinstance(p, int) or p < 3:
        raise ConfigError(f"p must be an integer >= 3 (one frequency besides DC), got {p!r}")
    return p


def frequencies(p: int) -> torch.Tensor:
    """The frequencies the spectrum reports: ``1, …, ⌊p/2⌋`` (int64)."""
    return torch.arange(1, _check_p(p) // 2 + 1)


def power_spectrum(x: torch.Tensor, p: int | None = None) -> torch.Tensor:
    """One-sided power ``P_k`` of ``x``'s last dim (length ``p``) at ``k = 1…⌊p/2⌋``,
    shape ``(*x.shape[:-1], ⌊p/2⌋)``, float64 (Tian 2025, row [#27]: the Fourier view of a
    hidden unit's weights over ``Z_p``; see the module docstring for the formula)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ConfigError("power_spectrum needs a floating tensor")
    p = x.shape[-1] if p is None else p
    if x.shape[-1] != _check_p(p):
        raise ConfigError(f"the last dim has {x.shape[-1]} entries; expected p = {p}")
    spec = torch.fft.rfft(x.to(torch.float64), dim=-1)[..., 1 : p // 2 + 1]
    power = spec.real.square() + spec.imag.square()
    double = torch.full((p // 2,), 2.0, dtype=torch.float64, device=x.device)
    if p % 2 == 0:  # the Nyquist bin k = p/2 is its own mirror image
        double[-1] = 1.0
    return power * double


def split_operands(weight: torch.Tensor, p: int, member_dims: int = 0) -> torch.Tensor:
    """A first-layer weight ``(*members, h, 2p)`` on ``[onehot(a), onehot(b)]`` as
    ``(*members, h, 2, p)``: index 0 the weights over ``a``, 1 over ``b``."""
    _check_p(p)
    if weight.ndim != member_dims + 2 or weight.shape[-1] != 2 * p:
        raise ConfigError(
            f"expected a weight of shape (*members, hidden, 2p = {2 * p}) with {member_dims} "
            f"member dim(s), got {tuple(weight.shape)}; pass the first Linear on "
            "[onehot(a), onehot(b)]"
        )
    return weight.reshape(*weight.shape[:-1], 2, p)


def neuron_spectrum(weight: torch.Tensor, p: int, member_dims: int = 0) -> torch.Tensor:
    """Per-neuron, per-operand power ``(*members, h, 2, ⌊p/2⌋)`` of a first-layer weight
    ``(*members, h, 2p)`` on one-hot ``Z_p`` pairs."""
    return power_spectrum(split_operands(weight, p, member_dims), p)


def concentration(power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max_k P_k / Σ_k P_k, argmax frequency)`` over the last dim of a power spectrum
    from :func:`power_spectrum` (frequencies start at 1). An all-zero (constant) vector
    has no non-DC power: concentration NaN, frequency 0."""
    total = power.sum(-1)
    top, arg = power.max(-1)
    conc = torch.where(total > 0, top / torch.where(total > 0, total, 1.0), math.nan)
    freq = torch.where(total > 0, arg + 1, 0)
    return conc, freq


def neuron_concentration(
    weight: torch.Tensor, p: int, member_dims: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concentration and peak frequency per neuron and operand, ``(*members, h, 2)`` each."""
    return concentration(neuron_spectrum(weight, p, member_dims))


def concentration_summary(conc: torch.Tensor, member_dims: int = 0) -> dict[str, torch.Tensor]:
    """``median``, ``mean``, ``min``, ``max`` of the concentrations over every neuron and
    operand (all but the member dims), NaNs (constant vectors) left out. The median is the
    lower one of an even count (``torch.nanmedian``)."""
    flat = conc.reshape(*conc.shape[:member_dims], -1)
    finite = ~flat.isnan()
    big = torch.where(finite, flat, -math.inf).max(-1).values
    small = torch.where(finite, flat, math.inf).min(-1).values
    return {
        "median": flat.nanmedian(-1).values,
        "mean": flat.nanmean(-1),
        "min": torch.where(finite.any(-1), small, math.nan),
        "max": torch.where(finite.any(-1), big, math.nan),
    }


def fourier_probe(
    every: int, p: int, param: str = "layers.0.weight", name: str = "fourier"
) -> Probe:
    """A probe recording the first layer's Fourier concentration summaries every ``every``
    steps: keys ``<name>/median``, ``/mean``, ``/min``, ``/max`` (over hidden units and both
    operands) and ``<name>/peak_share`` (the share of units whose ``a`` and ``b`` weights
    peak at the same frequency: the shared-frequency features of modular addition). A
    parameter probe (:func:`weightlab.train.probes.param_probe`): a population computes it
    once for all members on the stacked weights, with the loop's values."""
    _check_p(p)

    def fn(params: Mapping[str, torch.Tensor], init: object, md: int) -> dict:
        if param not in params:
            raise ConfigError(
                f"fourier probe: the model has no parameter {param!r}; parameters are: "
                f"{', '.join(params)}"
            )
        conc, freq = neuron_concentration(params[param].detach(), p, md)
        out = concentration_summary(conc, md)
        out["peak_share"] = (freq[..., 0] == freq[..., 1]).double().mean(-1)
        return out

    return param_probe(name, every, fn)


__all__ = [
    "SUMMARIES",
    "concentration",
    "fourier_probe",
    "frequencies",
    "neuron_concentration",
    "neuron_spectrum",
    "power_spectrum",
    "split_operands",
    "concentration_summary",
]
