"""NUPES's power-exponent search (Yvinec, Dapogny & Bailly 2023, "NUPES: Non-Uniform
Post-Training Quantization via Power Exponent Search", row [#83]).

The power quantizer (:class:`~weightlab.quant.levels.PowerExponent`, the paper's Eq. 3)
maps a weight ``x`` with clipping range ``s`` to ``sign(x)|x/s|^a`` on the symmetric narrow
integer grid and back with the inverse power, so its levels ``s·sign(q)|q/qmax|^(1/a)``
crowd near zero for ``a < 1``; ``a = 1`` is the uniform grid. This module chooses ``a``:

- **data-free** (:func:`search_exponent`, :func:`power_quantize`): for every ``a`` of a
  fixed grid (default 0.30, 0.35, …, 1.00), the per-group MSE clipping range (the core's
  ``mse`` estimator: ratio ``r·max|W|`` over ``r = 1/100 … 1``, coarse-to-fine), then the
  layer's weight reconstruction error; ``a`` minimizes it. The grid contains ``a = 1``, so
  the search cannot lose to the uniform grid on weight MSE (up to float rounding). This is
  the paper's data-free setting, a grid search over ``a`` instead of its gradient-based
  exponent fit.
- **data-driven** (:func:`calibrated_power_quantize`): the same candidates (each ``a`` with
  its weight-MSE scale), but ``a`` minimizes the layer's *output* reconstruction error on
  calibration inputs, ``‖X Wᵀ − X Ŵ_aᵀ‖²_F = Σ_rows d_iᵀ H d_i`` with ``d = Ŵ_a − W`` and
  ``H = XᵀX`` accumulated from the FP32 model's inputs to that layer (layer-wise, FP32
  inputs, every layer independent). What is NOT implemented from the paper: its
  data-driven NUPES also *learns the quantized weights* over the whole quantized space and
  the exponent by gradient descent on a block-wise reconstruction loss; here only ``a`` is
  chosen (from the grid), rounding stays nearest and the scale stays the weight-MSE one.

The weight errors are computed without a power inside the ratio loop: ``|x/c|^a·qmax =
|x|^a·(qmax/c^a)`` with ``|x|^a`` computed once per ``a``, and the levels' magnitudes
``(k/qmax)^(1/a)`` read from a ``qmax + 1`` table. This equals the core's arithmetic up to
float rounding (tested against :func:`~weightlab.quant.scales.mse_search_scale`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.quant.granularity import Granularity, check_granularity, group_view
from weightlab.quant.levels import check_bits, check_exponent
from weightlab.quant.quantizer import Quantizer, QuantSpec, quantize

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(15))
SCALES = ("mse", "minmax")
MSE_RATIOS = 100
_STRIDE = 10  # the core's coarse-to-fine MSE search: every 10th ratio, then ±9 around the best
_TINY = 1e-12  # the core's scale floor


@dataclass(frozen=True)
class ExponentSearch:
    """One layer's search: the chosen ``exponent``, the ``grid`` and each candidate's
    ``errors`` (the layer's weight MSE, or its output error on the calibration inputs
    per calibration row, under ``criterion``)."""

    exponent: float
    grid: tuple[float, ...]
    errors: tuple[float, ...]
    criterion: str  # "weight" or "output"

    def to_dict(self) -> dict:
        return {
            "exponent": self.exponent,
            "grid": list(self.grid),
            "errors": list(self.errors),
            "criterion": self.criterion,
        }


def check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The exponent grid as a tuple; every value in ``(0, 1]`` (one-line error otherwise)."""
    vals = tuple(float(check_exponent(a)) for a in grid)
    if not vals:
        raise ConfigError("the exponent grid is empty; give at least one a in (0, 1]")
    return vals


def _check(bits: int, granularity: Granularity, scale: str, shape) -> None:
    check_bits(bits, 2)
    check_granularity(granularity, tuple(shape))
    if scale not in SCALES:
        raise ConfigError(f"NUPES scale must be one of {', '.join(SCALES)}, got {scale!r}")


class _SortedGroups:
    """Each group's ``|W|`` sorted ascending with prefix sums of ``|W|`` and ``W²``
    (float64; masked entries set to 0, which land on level 0 with zero error), so the
    squared error of any clipping range and exponent costs ``qmax`` binary searches per
    group instead of a pass over the weights."""

    def __init__(self, weight: torch.Tensor, granularity: Granularity, valid) -> None:
        x = group_view(weight.detach(), granularity).abs().to(torch.float64)
        if valid is not None:
            x = x * group_view(valid.detach().to(torch.float64), granularity)
        self.xs = torch.sort(x, dim=-1).values.contiguous()  # (A, G, g)
        zero = torch.zeros(*x.shape[:-1], 1, dtype=torch.float64)
        self.s1 = torch.cat([zero, self.xs.cumsum(-1)], dim=-1)  # (A, G, g + 1)
        self.s2 = torch.cat([zero, self.xs.square().cumsum(-1)], dim=-1)
        self.m = self.xs[..., -1:]  # (A, G, 1) max|W|
        self.g = x.shape[-1]

    def errors(self, c: torch.Tensor, exps: torch.Tensor, qmax: int) -> torch.Tensor:
        """Squared error sums ``(A, G, M)`` of ``M`` candidates: clipping ranges ``c``
        ``(A, G, M)`` with exponents ``exps`` ``(M,)``. A weight ``x`` rounds to level
        ``k`` when ``(x/c)^a·qmax ∈ [k − ½, k + ½)``, i.e. between the boundaries
        ``c·((k ± ½)/qmax)^(1/a)``; bin ``k`` adds ``Σx² − 2 c ℓ_k Σx + c² ℓ_k² n`` with
        ``ℓ_k = (k/qmax)^(1/a)``."""
        k = torch.arange(qmax + 1, dtype=torch.float64)
        inv = (1.0 / exps).unsqueeze(-1)  # (M, 1)
        bnd = ((k[:-1] + 0.5) / qmax).pow(inv)  # (M, qmax)
        lv = (k / qmax).pow(inv)  # (M, qmax + 1)
        A, G, M = c.shape
        edges = (c.unsqueeze(-1) * bnd).reshape(A, G, M * qmax)
        idx = torch.searchsorted(self.xs, edges.contiguous()).reshape(A, G, M, qmax)
        lo = torch.cat([torch.zeros_like(idx[..., :1]), idx], dim=-1)  # (A, G, M, qmax + 1)
        hi = torch.cat([idx, torch.full_like(idx[..., :1], self.g)], dim=-1)

        def between(s: torch.Tensor) -> torch.Tensor:
            take = lambda i: s.gather(-1, i.reshape(A, G, -1)).reshape(i.shape)  # noqa: E731
            return take(hi) - take(lo)

        n = (hi - lo).to(torch.float64)
        cl = c.unsqueeze(-1) * lv  # (A, G, M, qmax + 1) the levels' magnitudes
        err = between(self.s2) - 2.0 * cl * between(self.s1) + cl.square() * n
        return err.sum(-1).clamp_min(0.0)


def _ratio_search(
    sg: _SortedGroups, grid: tuple[float, ...], qmax: int, scale: str, n: int = MSE_RATIOS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per exponent and group, the clipping ratio of the core's ``mse`` estimator
    (:func:`~weightlab.quant.scales.mse_search_scale`: every 10th of ``r = 1/n … 1``,
    then every ratio within 9 of each group's best; all of them for ``n <= 20``) or 1
    (``minmax``), all exponents at once. Returns ``(ratio, error)``, both ``(A, G, K)``."""
    K = len(grid)
    exps = torch.tensor(grid, dtype=torch.float64)
    A, G, _ = sg.m.shape
    if scale == "minmax":
        ratio = torch.ones(A, G, K, dtype=torch.float64)
        return ratio, sg.errors((ratio * sg.m).clamp_min(_TINY), exps, qmax)
    rgrid = torch.arange(1, n + 1, dtype=torch.float64) / n
    if n <= 20:
        cand = torch.arange(n).expand(A, G, K, n)
    else:
        coarse = torch.arange(_STRIDE - 1, n, _STRIDE)
        if coarse[-1] != n - 1:
            coarse = torch.cat([coarse, torch.tensor([n - 1])])
        C = len(coarse)
        r1 = rgrid[coarse].repeat(K).expand(A, G, K * C)
        e1 = sg.errors((r1 * sg.m).clamp_min(_TINY), exps.repeat_interleave(C), qmax)
        centre = coarse[e1.reshape(A, G, K, C).argmin(-1)]  # (A, G, K)
        offsets = torch.arange(-(_STRIDE - 1), _STRIDE)
        cand = (centre.unsqueeze(-1) + offsets).clamp(0, n - 1)  # (A, G, K, 19)
    R = cand.shape[-1]
    r2 = rgrid[cand].reshape(A, G, K * R)
    e2 = sg.errors((r2 * sg.m).clamp_min(_TINY), exps.repeat_interleave(R), qmax)
    e2 = e2.reshape(A, G, K, R)
    pick = e2.argmin(-1, keepdim=True)  # the first minimum, as torch.argmin in the core
    ratio = rgrid[cand.gather(-1, pick).squeeze(-1)]
    return ratio, e2.gather(-1, pick).squeeze(-1)


def search_exponent(
    weight: torch.Tensor,
    bits: int,
    granularity: Granularity = "channel",
    grid: Sequence[float] = DEFAULT_GRID,
    scale: str = "mse",
    valid: torch.Tensor | None = None,
) -> tuple[float, torch.Tensor]:
    """Data-free NUPES exponent search for one weight: for each ``a`` in ``grid`` the
    power level set with the ``scale`` clipping range per group (``mse``: the core's
    MSE search; ``minmax``: ``max|W|``), then the weight MSE (mean over the weight's
    entries, ``valid`` ones only when a 0/1 mask is given). All exponents, ratios and
    groups are evaluated at once. Returns ``(a, errors)``: the minimizing exponent (the
    first on a tie) and the ``(len(grid),)`` float64 errors."""
    grid = check_grid(grid)
    _check(bits, granularity, scale, weight.shape)
    sg = _SortedGroups(weight, granularity, valid)
    _, err = _ratio_search(sg, grid, 2 ** (bits - 1) - 1, scale)
    n = weight.numel() if valid is None else max(1, int(valid.sum()))
    errors = err.sum(dim=(0, 1)) / n
    return grid[int(errors.argmin())], errors


def power_weights(
    weight: torch.Tensor,
    bits: int,
    granularity: Granularity = "channel",
    grid: Sequence[float] = DEFAULT_GRID,
    scale: str = "mse",
    valid: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every candidate's dequantized weight: ``(K, *weight.shape)`` for the ``K`` exponents
    of ``grid`` (each with its own ``scale`` clipping range, as :func:`search_exponent`),
    in the weight's dtype, and the ``(K,)`` weight MSEs. Used by the data-driven search."""
    grid = check_grid(grid)
    _check(bits, granularity, scale, weight.shape)
    qmax = 2 ** (bits - 1) - 1
    sg = _SortedGroups(weight, granularity, valid)
    ratio, err = _ratio_search(sg, grid, qmax, scale)
    w = weight.detach()
    wv = group_view(w, granularity)
    vv = None if valid is None else group_view(valid.detach().to(w.dtype), granularity)
    outs = []
    for i, a in enumerate(grid):
        c = (ratio[..., i : i + 1] * sg.m).clamp_min(_TINY).to(w.dtype)  # (A, G, 1)
        lv = (torch.arange(qmax + 1, dtype=torch.float64) / qmax).pow(1.0 / a).to(w.dtype)
        k = torch.round(wv.abs().pow(a) * (qmax / c.pow(a))).clamp_(max=qmax)
        q = torch.sign(wv) * lv[k.long()] * c
        if vv is not None:
            q = q * vv
        outs.append(q.reshape(w.shape))
    n = w.numel() if valid is None else max(1, int(valid.sum()))
    return torch.stack(outs), err.sum(dim=(0, 1)) / n


def output_errors(
    weight: torch.Tensor, candidates: torch.Tensor, gram: torch.Tensor
) -> torch.Tensor:
    """``Σ_rows d_iᵀ H d_i`` for every candidate (``d = Ŵ_k − W``, flattened to
    ``(out, in)``; ``H`` the ``(in, in)`` Gram matrix of the layer's inputs): the squared
    Frobenius error of the layer's outputs on the calibration inputs. ``(K,)`` float64."""
    w = weight.detach().reshape(weight.shape[0], -1)
    h = gram.to(w.dtype)
    out = []
    for cand in candidates:
        d = cand.reshape(w.shape) - w
        out.append(float(((d @ h) * d).sum()))
    return torch.tensor(out, dtype=torch.float64)


def _targets(model: nn.Module, select) -> dict[str, tuple[nn.Module, str]]:
    from weightlab.quant.quantizer import _as_selector

    picked = _as_selector(select)(model)
    if not picked:
        raise ConfigError("the quantizer selector matches no weight; fix the name globs or types")
    return picked


def _stored_weight(module: nn.Module, attr: str) -> torch.Tensor:
    from weightlab.quant.quantizer import _stored

    return _stored(module, attr)


def _mask_of(model: nn.Module, name: str) -> torch.Tensor | None:
    from weightlab.core.mask import Mask
    from weightlab.core.transforms import transforms_of

    for t in transforms_of(model, name):
        if isinstance(t, Mask):
            return t.mask
    return None


def _spec(bits: int, a: float, granularity: Granularity) -> QuantSpec:
    return QuantSpec(bits=bits, levels="power", scale="mse", granularity=granularity, exponent=a)


def power_quantize(
    model: nn.Module,
    bits: int,
    select=None,
    granularity: Granularity = "channel",
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Quantizer], dict[str, ExponentSearch]]:
    """Data-free NUPES PTQ: :func:`search_exponent` on every weight ``select`` picks
    (default every Linear and Conv weight), then :func:`~weightlab.quant.quantizer.quantize`
    with ``QuantSpec(levels="power", exponent=a, scale="mse", granularity=...)`` per weight.
    Returns ``({name: Quantizer}, {name: ExponentSearch})``."""
    grid = check_grid(grid)
    check_bits(bits, 2)
    picked = _targets(model, select)
    searches = {}
    bar = _bar(len(picked), "nupes search", progress)
    for name, (module, attr) in picked.items():
        w = _stored_weight(module, attr)
        a, errors = search_exponent(w, bits, granularity, grid, "mse", _mask_of(model, name))
        searches[name] = ExponentSearch(a, grid, tuple(errors.tolist()), "weight")
        _tick(bar)
    _close(bar)
    specs = {n: _spec(bits, s.exponent, granularity) for n, s in searches.items()}
    qs = quantize(model, next(iter(specs.values())), select, seed=seed, specs=specs)
    return qs, searches


@torch.no_grad()
def layer_grams(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    *,
    row_mask: torch.Tensor | None = None,
    batch: int = 256,
) -> tuple[dict[str, torch.Tensor], int]:
    """Gram matrices ``H = Σ x xᵀ`` (float64) of the inputs each named weight's Linear sees
    when ``model`` runs on ``x`` (forward pre-hooks, eval mode, in batches). ``row_mask``
    (``(len(x), L)`` 0/1, for token inputs ``(B, L, in)``) keeps only the rows of real
    tokens (padding left out). Returns ``(grams, rows)``, ``rows`` the number of input
    rows each Gram sums (the same for every layer)."""
    modules = dict(model.named_modules())
    grams: dict[str, torch.Tensor] = {}
    rows = [0]
    current: dict[str, torch.Tensor | None] = {"mask": None}
    hooks = []
    for name in names:
        mod_name = name.rsplit(".", 1)[0]
        module = modules[mod_name]
        if not isinstance(module, nn.Linear):
            raise ConfigError(
                f"data-driven NUPES calibrates Linear layers only; {name!r} belongs to a "
                f"{type(module).__name__}"
            )

        def hook(mod, inputs, name=name):
            h = inputs[0]
            flat = h.reshape(-1, h.shape[-1]).to(torch.float64)
            if current["mask"] is not None:
                flat = flat[current["mask"].reshape(-1).bool()]
            g = flat.T @ flat
            grams[name] = grams[name] + g if name in grams else g

        hooks.append(module.register_forward_pre_hook(hook))
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            mb = None if row_mask is None else row_mask[i : i + batch]
            current["mask"] = mb
            model(xb)
            rows[0] += len(xb) if mb is None else int(mb.sum())
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return grams, rows[0]


def check_calibration(x: torch.Tensor | None) -> int:
    """The number of calibration samples; one-line error when there are none."""
    n = 0 if x is None else len(x)
    if n == 0:
        raise ConfigError(
            "data-driven NUPES needs calibration data; pass calibration inputs (e.g. 256 "
            "training samples) or use the data-free search (power_quantize)"
        )
    return n


def calibrated_power_quantize(
    model: nn.Module,
    bits: int,
    x: torch.Tensor | None,
    select=None,
    granularity: Granularity = "channel",
    grid: Sequence[float] = DEFAULT_GRID,
    *,
    row_mask: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, Quantizer], dict[str, ExponentSearch]]:
    """Data-driven NUPES PTQ (see the module doc for what differs from the paper): the
    FP32 model runs once on the calibration inputs ``x`` (e.g. 256 samples) to collect
    each selected Linear's input Gram matrix; each layer's ``a`` then minimizes its output
    reconstruction error (per calibration row) over ``grid``, every candidate with its
    weight-MSE clipping range; the chosen power quantizers are attached as in
    :func:`power_quantize`. ``x`` None or empty is a one-line :class:`ConfigError`."""
    check_calibration(x)
    grid = check_grid(grid)
    check_bits(bits, 2)
    picked = _targets(model, select)
    grams, rows = layer_grams(model, x, list(picked), row_mask=row_mask)
    searches = {}
    bar = _bar(len(picked), "nupes calibration", progress)
    for name, (module, attr) in picked.items():
        w = _stored_weight(module, attr)
        cands, _ = power_weights(w, bits, granularity, grid, "mse", _mask_of(model, name))
        errors = output_errors(w, cands, grams[name]) / max(1, rows)
        a = grid[int(errors.argmin())]
        searches[name] = ExponentSearch(a, grid, tuple(errors.tolist()), "output")
        _tick(bar)
    _close(bar)
    specs = {n: _spec(bits, s.exponent, granularity) for n, s in searches.items()}
    qs = quantize(model, next(iter(specs.values())), select, seed=seed, specs=specs)
    return qs, searches


def _bar(total: int, desc: str, enabled: bool):
    from weightlab.progress import progress_bar

    return progress_bar(total, desc, "layer", enabled)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


def _close(bar) -> None:
    if bar is not None:
        bar.close()
