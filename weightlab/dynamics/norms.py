"""Norm-based complexity measures of ReLU networks, as functions and as probes.

- :func:`path_norm`: the ℓ1 path norm ``𝟙ᵀ|W_L|⋯|W₁|𝟙``, the sum over every input-output path
  of the product of the absolute weights along it (the path regularizer with p = 1 of
  Neyshabur, Tomioka & Srebro 2015, "Norm-Based Capacity Control in Neural Networks").
  Biases are not paths from an input and are left out (the measure of the
  bias-free network).
- :func:`two_layer_norm`: ``(1/m) Σ_j |a_j| ‖w_j‖₂`` of a two-layer network
  ``f(x) = (1/m) Σ_j a_j σ(w_jᵀx)``, the complexity proxy whose slow growth under GD
  Montanari & Urbani (2025, "Dynamical Decoupling of Generalization and Overfitting in
  Large Two-Layer Networks", methods row [#98]) track. With ``k`` outputs (a readout ``(k, m)``) ``|a_j|`` is the column's ℓ1 norm
  ``Σ_o |a_oj|``, the two-layer analogue of the ℓ1 path norm.

Both take weights oriented as ``nn.Linear`` stores them (``(out, in)``), with
``member_dims`` leading dims of population members (``1`` for a population's stacked
``(N, out, in)`` blocks), as the built-in probes' math in :mod:`weightlab.train.probes`
does. :func:`path_norm_probe` and :func:`two_layer_norm_probe` wrap them as parameter
probes (:func:`weightlab.train.probes.param_probe`): a population computes them once for
all members on its stacked parameters, with the loop's values. Per-layer weight norms and relative
change from init are the built-ins :func:`weightlab.train.probes.weight_norm` and
:func:`~weightlab.train.probes.relative_change` (vectorized in populations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import torch

from weightlab.errors import ConfigError
from weightlab.train.probes import Probe, param_probe


def _check_member_dims(member_dims: int) -> None:
    if isinstance(member_dims, bool) or not isinstance(member_dims, int) or member_dims < 0:
        raise ConfigError(f"member_dims must be an integer >= 0, got {member_dims!r}")


def path_norm(weights: Sequence[torch.Tensor], member_dims: int = 0) -> torch.Tensor:
    """ℓ1 path norm ``𝟙ᵀ|W_L|⋯|W₁|𝟙`` (Neyshabur et al. 2015, path regularizer, p = 1).

    Args:
        weights: the layers' weight matrices, first layer first, each ``(*M, out, in)``
            (``nn.Linear`` orientation) with the same ``member_dims`` leading dims ``M``;
            layer ``l``'s ``in`` must equal layer ``l-1``'s ``out``.
        member_dims: leading member dims (0 for one network).

    Returns:
        ``(*M,)``: one value per member (a 0-dim tensor for one network), in the weights'
        dtype (computed in float64 at least, then cast back).
    """
    _check_member_dims(member_dims)
    weights = list(weights)
    if not weights:
        raise ConfigError("path_norm needs at least one weight matrix")
    lead = tuple(weights[0].shape[:member_dims])
    for i, w in enumerate(weights):
        if w.ndim != member_dims + 2 or tuple(w.shape[:member_dims]) != lead:
            raise ConfigError(
                f"path_norm: weight {i} has shape {tuple(w.shape)}; expected "
                f"{member_dims} member dims {lead} followed by (out, in)"
            )
        if i and w.shape[-1] != weights[i - 1].shape[-2]:
            raise ConfigError(
                f"path_norm: weight {i} takes {w.shape[-1]} inputs but weight {i - 1} gives "
                f"{weights[i - 1].shape[-2]} outputs; pass the layers in forward order"
            )
    dtype = torch.promote_types(weights[0].dtype, torch.float64)
    v = torch.ones(*lead, weights[0].shape[-1], 1, dtype=dtype, device=weights[0].device)
    for w in weights:
        v = w.abs().to(dtype) @ v  # (*M, out, 1): Σ over paths into each unit
    return v.sum(dim=(-2, -1)).to(weights[0].dtype)


def two_layer_norm(w: torch.Tensor, a: torch.Tensor, member_dims: int = 0) -> torch.Tensor:
    """``(1/m) Σ_j |a_j| ‖w_j‖₂`` of ``f(x) = (1/m) Σ_j a_j σ(w_jᵀx)`` (Montanari & Urbani
    2025's complexity proxy).

    Args:
        w: first layer ``(*M, m, d)`` (row ``j`` is ``w_j``).
        a: readout ``(*M, m)`` or ``(*M, k, m)`` (``nn.Linear`` weight; with ``k`` outputs
            ``|a_j|`` is ``Σ_o |a_oj|``), in the ``1/m`` (mean-field) scaling of the formula:
            a model storing ``f = Σ_j ã_j σ(w_jᵀx)`` has ``a = m ã``.
        member_dims: leading member dims.

    Returns:
        ``(*M,)`` (a 0-dim tensor for one network).
    """
    _check_member_dims(member_dims)
    lead = tuple(w.shape[:member_dims])
    if w.ndim != member_dims + 2 or tuple(a.shape[:member_dims]) != lead:
        raise ConfigError(
            f"two_layer_norm: w has shape {tuple(w.shape)} and a {tuple(a.shape)}; expected "
            f"{member_dims} shared member dims, w (m, d) and a (m,) or (k, m)"
        )
    if a.ndim == member_dims + 1:
        a = a.unsqueeze(-2)
    m = w.shape[-2]
    if a.ndim != member_dims + 2 or a.shape[-1] != m:
        raise ConfigError(
            f"two_layer_norm: the readout of shape {tuple(a.shape)} does not read the {m} "
            "hidden units of w; pass a as (m,) or (k, m)"
        )
    dtype = torch.promote_types(w.dtype, torch.float64)
    col = a.abs().to(dtype).sum(-2)  # (*M, m)
    return ((col * w.to(dtype).norm(dim=-1)).sum(-1) / m).to(w.dtype)


def _pick(names: Sequence[str], globs: Sequence[str], what: str) -> list[str]:
    picked = [n for n in names if any(fnmatchcase(n, g) for g in globs)]
    if not picked:
        raise ConfigError(
            f"{what}: params {list(globs)} match no parameter; parameters are: {', '.join(names)}"
        )
    return picked


def path_norm_probe(every: int, params: Sequence[str] = (), name: str = "path_norm") -> Probe:
    """A probe recording :func:`path_norm` of the selected weight matrices (``fnmatch`` globs
    over plain names, in the model's parameter order; ``()`` = every parameter with two
    dims, i.e. an MLP's Linear weights). One value per step."""
    globs = (params,) if isinstance(params, str) else tuple(params)

    def fn(ps: Mapping[str, torch.Tensor], init: object, md: int) -> torch.Tensor:
        if globs:
            names = _pick(list(ps), globs, f"probe {name!r}")
        else:
            names = [n for n, p in ps.items() if p.ndim == 2 + md]
        return path_norm([ps[n] for n in names], md)

    return param_probe(name, every, fn)


def two_layer_norm_probe(
    every: int,
    first: str = "layers.0.weight",
    second: str = "layers.1.weight",
    readout_scale: float = 1.0,
    name: str = "two_layer_norm",
) -> Probe:
    """A probe recording :func:`two_layer_norm` with ``w`` = parameter ``first`` and
    ``a = readout_scale ×`` parameter ``second`` (``readout_scale = m`` for a model that
    stores the mean-field readout ``a/m`` in an ``nn.Linear``). One value per step."""
    if not readout_scale > 0:
        raise ConfigError(f"readout_scale must be > 0, got {readout_scale!r}")

    def fn(ps: Mapping[str, torch.Tensor], init: object, md: int) -> torch.Tensor:
        for n in (first, second):
            if n not in ps:
                raise ConfigError(
                    f"probe {name!r}: the model has no parameter {n!r}; parameters are: "
                    f"{', '.join(ps)}"
                )
        return two_layer_norm(ps[first], readout_scale * ps[second], md)

    return param_probe(name, every, fn)
