"""Signal-propagation diagnostics at initialization: per-layer forward and backward
variance measured on a batch beside their mean-field prediction, the input-output
Jacobian's singular values, and each weight's effective rank.

Notation of :mod:`weightlab.init.critical` (Roberts, Yaida & Hanin 2022, Ch. 5): for a
layer stack ``z^1 = b^1 + W^1 x``, ``z^{ℓ+1} = b^{ℓ+1} + W^{ℓ+1} σ(z^ℓ)``,

- ``K^ℓ`` (forward) is the mean over units of ``(z_i^ℓ)²`` for one input, averaged over
  the batch;
- ``G^ℓ`` (backward) is the mean over units of ``(∂L/∂z_i^ℓ)²`` for ``L = u · z^L`` with
  a standard-normal cotangent ``u``, averaged over the batch (so ``G^L ≈ 1``).

Their infinite-width prediction, with each layer's own measured scales
``C_W^ℓ = fan_in · mean(W^ℓ²)`` and ``C_b^ℓ = mean(b^ℓ²)``, starts from the input
(``K^1 = C_b^1 + C_W^1 |x|²/n_0``, per input) and iterates
``K^{ℓ+1} = C_b^{ℓ+1} + C_W^{ℓ+1} ⟨σ²⟩_{K^ℓ}`` (book Eq. 5.4), and backwards
``G^ℓ = χ⊥^ℓ (n_{ℓ+1}/n_ℓ) G^{ℓ+1}`` with ``χ⊥^ℓ = C_W^{ℓ+1}⟨σ'²⟩_{K^ℓ}`` (Eq. 5.51);
``χ∥^ℓ = C_W^{ℓ+1} g'(K^ℓ)`` (Eq. 5.50) is reported beside it.

:func:`propagate_population` runs the same measurement for N nets at once from stacked
standard-normal draws (``torch.bmm``), for several ``(activation, C_W, C_b)`` settings
that share each net's draws; its draw function is called twice per layer (forward, then
backward) so the weights never need to be held for all layers at once.

The effective rank is Roy & Vetterli (2007), "The effective rank: a measure of
effective dimensionality" (EUSIPCO), Def. 1: ``exp(H(p))`` with ``p_k = σ_k / Σ σ_j``
the normalized singular values and H the Shannon entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.init.critical import as_activation, chi_parallel, chi_perp, g_of_k


def effective_rank(weight: torch.Tensor) -> float:
    """Roy & Vetterli (2007) effective rank of a weight (flattened to ``(out, rest)``):
    ``exp(−Σ p_k log p_k)``, ``p = σ / ‖σ‖₁``; ``0`` for an all-zero weight. It lies in
    ``[1, min(out, rest)]``: 1 for rank one, the full dimension for equal singular values."""
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    s = torch.linalg.svdvals(w)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass(frozen=True)
class LayerSignal:
    """One layer ℓ (1-based) of a :class:`SignalReport`: measured ``K``/``G``, the mean
    field ``K_mf``/``G_mf``, the susceptibilities of the map to the next layer (``None``
    at the last layer), the layer's measured ``C_W``/``C_b`` and its weight's effective
    rank."""

    layer: int
    name: str
    K: float
    G: float
    K_mf: float
    G_mf: float
    chi_par: float | None
    chi_perp: float | None
    C_W: float
    C_b: float
    effective_rank: float


@dataclass(frozen=True)
class SignalReport:
    """Signal propagation through a model at init, for one batch."""

    activation: str
    layers: tuple[LayerSignal, ...]
    jacobian_singular_values: tuple[tuple[float, ...], ...]  # per probed input, descending

    @property
    def K(self) -> tuple[float, ...]:
        return tuple(x.K for x in self.layers)

    @property
    def G(self) -> tuple[float, ...]:
        return tuple(x.G for x in self.layers)

    @property
    def K_mf(self) -> tuple[float, ...]:
        return tuple(x.K_mf for x in self.layers)

    @property
    def G_mf(self) -> tuple[float, ...]:
        return tuple(x.G_mf for x in self.layers)


def _linear_stack(model: nn.Module) -> tuple[list[nn.Linear], str]:
    layers = getattr(model, "layers", None)
    act = getattr(model, "activation", None)
    if (
        not isinstance(layers, nn.ModuleList)
        or not isinstance(act, str)
        or not all(isinstance(m, nn.Linear) for m in layers)
    ):
        raise ConfigError(
            f"signal diagnostics need a weightlab MLP (Linear layers and an activation name); "
            f"got {type(model).__name__}"
        )
    return list(layers), act


def _mean_field_batch(act, cws, cbs, widths, x2: np.ndarray):
    """Per input (``x2`` = |x|²/n_0), the mean-field K, G (relative to the last layer),
    χ∥ and χ⊥ of every layer; returns the batch means of K, χ∥ and χ⊥ and G per input
    (``(layers, B)``, ``G[L] = 1``; the caller scales each input's column by its measured
    ``G^L``)."""
    n_layers = len(cws)
    k = np.empty((n_layers, len(x2)))
    k[0] = cbs[0] + cws[0] * x2
    for i in range(1, n_layers):
        k[i] = cbs[i] + cws[i] * g_of_k(act, k[i - 1])
    cpar = np.full((n_layers, len(x2)), np.nan)
    cperp = np.full((n_layers, len(x2)), np.nan)
    g = np.ones((n_layers, len(x2)))
    for i in range(n_layers - 2, -1, -1):
        cpar[i] = chi_parallel(act, k[i], cws[i + 1])
        cperp[i] = chi_perp(act, k[i], cws[i + 1])
        g[i] = cperp[i] * widths[i + 1] / widths[i] * g[i + 1]
    return k.mean(1), g, cpar.mean(1), cperp.mean(1)


def jacobian_singular_values(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of the input-output Jacobian ``∂f(x)/∂x`` at each
    input of ``x`` (``(B, ...)`` -> ``(B, min(out, in))``), by ``torch.func.jacrev`` under
    ``vmap``."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(xi):
        return functional_call(model, params, (xi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f))(x)
    return torch.linalg.svdvals(jac.reshape(x.shape[0], jac.shape[1], -1))


@torch.no_grad()
def _weights(model_layers):
    out = []
    for lin in model_layers:
        w = lin.weight.detach().to(torch.float64)
        cw = float(w.shape[1] * (w**2).mean())
        cb = float((lin.bias.detach().to(torch.float64) ** 2).mean()) if lin.bias is not None else 0
        out.append((cw, cb))
    return out


def signal_propagation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    jacobian_inputs: int = 4,
    ranks: bool = True,
) -> SignalReport:
    """Measure ``K^ℓ`` and ``G^ℓ`` of a weightlab MLP on the batch ``x`` (the cotangent
    ``u`` drawn from ``generator``, default seed 0), with the mean field beside them, the
    Jacobian singular values on the first ``jacobian_inputs`` inputs (0: none) and each
    weight's effective rank (``ranks=False``: NaN, skipping one SVD per layer)."""
    layers, act_name = _linear_stack(model)
    act = as_activation(act_name)
    x = x.flatten(1)
    if x.shape[0] < 1:
        raise ConfigError("signal diagnostics need a batch of at least one input")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    zs = []
    h = x
    with torch.enable_grad():
        for i, lin in enumerate(layers):
            z = lin(h)
            z.retain_grad()
            zs.append(z)
            if i < len(layers) - 1:
                h = act(z)
        u = torch.randn(zs[-1].shape, generator=g, dtype=torch.float64).to(zs[-1].dtype)
        (zs[-1] * u).sum().backward(inputs=zs)
    k_meas = [float((z.detach().double() ** 2).mean()) for z in zs]
    g_meas = [float((z.grad.double() ** 2).mean()) for z in zs]
    scales = _weights(layers)
    cws = [c for c, _ in scales]
    cbs = [b for _, b in scales]
    widths = [lin.out_features for lin in layers]
    x2 = (x.detach().double() ** 2).mean(1).numpy()
    k_mf, g_rel, cpar, cperp = _mean_field_batch(act, cws, cbs, widths, x2)
    # G relative to the last layer, per input, scaled by that input's measured G^L
    g_last = (zs[-1].grad.double() ** 2).mean(1).numpy()
    g_mf = (g_rel * g_last[None, :]).mean(1)
    names = [n for n, m in model.named_modules() if any(m is lin for lin in layers)]
    out = []
    for i, lin in enumerate(layers):
        last = i == len(layers) - 1
        out.append(
            LayerSignal(
                i + 1,
                names[i],
                k_meas[i],
                g_meas[i],
                float(k_mf[i]),
                float(g_mf[i]),
                None if last else float(cpar[i]),
                None if last else float(cperp[i]),
                cws[i],
                cbs[i],
                effective_rank(lin.weight) if ranks else math.nan,
            )
        )
    sv: tuple = ()
    if jacobian_inputs > 0:
        s = jacobian_singular_values(model, x[:jacobian_inputs].detach())
        sv = tuple(tuple(float(v) for v in row) for row in s)
    for lin in layers:
        for p in lin.parameters():
            p.grad = None
    return SignalReport(act.name, tuple(out), sv)


# -- populations of stacked weights ---------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One ``(activation, C_W, C_b)`` of a population run."""

    activation: str
    C_W: float
    C_b: float


@dataclass(frozen=True)
class PopulationSignal:
    """``K[n, s, ℓ]`` and ``G[n, s, ℓ]`` (float64) for net n, setting s and layer ℓ
    (0-based index ℓ-1): per-net means over units and the batch."""

    K: torch.Tensor
    G: torch.Tensor


def _apply(act_fns, z: torch.Tensor, groups) -> tuple[torch.Tensor, torch.Tensor]:
    """``σ(z)`` and ``σ'(z)`` per setting (dim 1 of ``z``)."""
    h = torch.empty_like(z)
    d = torch.empty_like(z)
    for (fn, dfn), idx in zip(act_fns, groups, strict=True):
        zi = z[:, idx]
        h[:, idx] = fn(zi)
        d[:, idx] = dfn(zi)
    return h, d


def propagate_population(
    draw: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]],
    x: torch.Tensor,
    settings: Sequence[Setting],
    depth: int,
    cotangent: torch.Tensor,
    progress: Callable[[int], None] | None = None,
) -> PopulationSignal:
    """Forward and backward signal of N nets × S settings at once.

    Args:
        draw: ``draw(ℓ)`` for ℓ = 1..depth returns ``(Z, ζ)``: standard-normal weights
            ``(N, n_ℓ, n_{ℓ-1})`` and bias draws ``(N, n_ℓ)`` (or None) of layer ℓ; net n's
            layer is ``W = √(C_W/n_{ℓ-1}) Z[n]``, ``b = √C_b ζ[n]`` under each setting. It is
            called twice per layer (forward, then backward in reverse) and must return the
            same values both times.
        x: inputs ``(S, B, n_0)`` (the same for every net) or ``(N, S, B, n_0)``.
        settings: the S settings (activations by name: relu, tanh, sin, gelu).
        cotangent: ``∂L/∂z^L``, shape ``(N, S, B, n_L)``; its device is where the work
            runs (``draw``'s tensors are moved there); the results come back on the CPU.
        progress: called with 1 after each layer pass.
    """
    s_n = len(settings)
    if s_n == 0 or depth < 1:
        raise ConfigError("propagate_population needs at least one setting and depth >= 1")
    names = sorted({s.activation for s in settings})
    acts = [as_activation(n) for n in names]
    act_fns = [(a.fn, a.derivative) for a in acts]
    groups = [[i for i, s in enumerate(settings) if s.activation == n] for n in names]
    dev = cotangent.device
    cw = torch.tensor([s.C_W for s in settings], dtype=torch.float32, device=dev)
    cb = torch.tensor([s.C_b for s in settings], dtype=torch.float32, device=dev)
    n_nets = cotangent.shape[0]
    if x.dim() == 3:
        x = x.unsqueeze(0).expand(n_nets, *x.shape)
    h = x.to(dev, torch.float32)
    b = h.shape[2]
    derivs = []
    k_out = torch.empty(n_nets, s_n, depth, dtype=torch.float64, device=dev)
    g_out = torch.empty_like(k_out)
    for layer in range(1, depth + 1):
        z_draw, bias = draw(layer)
        z_draw = z_draw.to(dev)
        bias = None if bias is None else bias.to(dev)
        fan_in = z_draw.shape[2]
        scale = (cw / fan_in).sqrt().view(1, s_n, 1, 1)
        y = torch.bmm(h.reshape(n_nets, s_n * b, fan_in), z_draw.transpose(1, 2))
        z = y.view(n_nets, s_n, b, -1) * scale
        if bias is not None:
            z = z + bias.view(n_nets, 1, 1, -1) * cb.sqrt().view(1, s_n, 1, 1)
        k_out[:, :, layer - 1] = z.double().pow(2).mean(dim=(2, 3))
        if layer < depth:
            h, d = _apply(act_fns, z, groups)
            derivs.append(d)
        if progress is not None:
            progress(1)
    delta = cotangent.to(torch.float32)
    g_out[:, :, depth - 1] = delta.double().pow(2).mean(dim=(2, 3))
    for layer in range(depth, 1, -1):
        z_draw = draw(layer)[0].to(dev)
        fan_in = z_draw.shape[2]
        scale = (cw / fan_in).sqrt().view(1, s_n, 1, 1)
        back = torch.bmm(delta.reshape(n_nets, s_n * b, -1), z_draw)
        delta = back.view(n_nets, s_n, b, fan_in) * scale * derivs[layer - 2]
        derivs[layer - 2] = None
        g_out[:, :, layer - 2] = delta.double().pow(2).mean(dim=(2, 3))
        if progress is not None:
            progress(1)
    return PopulationSignal(k_out.cpu(), g_out.cpu())


def loglog_slope(values: Sequence[float], first: int, last: int) -> float:
    """Least-squares slope of ``log values[ℓ]`` against ``log ℓ`` for ℓ = first..last
    (1-based layer numbers); NaN if any value is not positive and finite."""
    from weightlab.init.coord_check import loglog_slope as slope

    v = [float(x) for x in list(values)[first - 1 : last]]
    if len(v) < 2:
        return math.nan
    return slope(range(first, first + len(v)), v)


def plot_signal(report: SignalReport, path: str | Path, title: str | None = None) -> Path:
    """A PNG of ``K^ℓ`` and ``G^ℓ`` (measured, points; mean field, lines; log scale) and,
    when measured, the Jacobian's singular values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if report.jacobian_singular_values else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
    ls = [x.layer for x in report.layers]
    for ax, meas, mf, label in (
        (axes[0], report.K, report.K_mf, "forward K^ℓ"),
        (axes[1], report.G, report.G_mf, "backward G^ℓ"),
    ):
        ax.semilogy(ls, meas, "o", ms=3, label="measured")
        ax.semilogy(ls, mf, "-", label="mean field")
        ax.set_xlabel("layer ℓ")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if panels == 3:
        for row in report.jacobian_singular_values:
            axes[2].semilogy(range(1, len(row) + 1), row, ".-", ms=2, lw=0.8)
        axes[2].set_xlabel("index")
        axes[2].set_ylabel("Jacobian singular value")
        axes[2].grid(alpha=0.3)
    fig.suptitle(title or f"Signal propagation at init ({report.activation})")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.86, wspace=0.35)
    from weightlab.figures import save_figure

    return save_figure(fig, path, dpi=100, tight=False)


__all__ = [
    "LayerSignal",
    "PopulationSignal",
    "Setting",
    "SignalReport",
    "effective_rank",
    "jacobian_singular_values",
    "loglog_slope",
    "plot_signal",
    "propagate_population",
    "signal_propagation",
]
