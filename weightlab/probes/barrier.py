"""The linear-interpolation loss barrier between two models (linear mode connectivity).

For endpoints ``θ_A``, ``θ_B`` and ``θ_α = (1 − α)θ_A + αθ_B``, the barrier on a split is

    B(θ_A, θ_B) = max_α [ L(θ_α) − ((1 − α) L(θ_A) + α L(θ_B)) ]

over a grid of α in [0, 1] (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity
and the Lottery Ticket Hypothesis", Eq. 1, with the mean loss in place of the error; Entezari
et al. 2022 and Ainsworth et al. 2023, "Git Re-Basin", use the same form). The grid includes
both endpoints, where the bracket is 0, so the barrier is >= 0; a convex loss has barrier 0.

``align=True`` first permutes B's hidden units to match A's
(:func:`weightlab.probes.matching.permute_to_match`, Li et al. 2016's bipartite matching of
unit activations [#76]) on ``align_data`` (default: the split's inputs): two networks that
differ by a permutation of hidden units then have barrier 0.

Neither model changes: θ_α is loaded into a copy, evaluated in eval mode without gradients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from weightlab.data.task import Split
from weightlab.errors import ConfigError, DataError

__all__ = ["DEFAULT_ALPHAS", "BarrierResult", "interpolation_curve", "loss_barrier"]

DEFAULT_ALPHAS: tuple[float, ...] = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class BarrierResult:
    """The loss ``losses[i]`` (mean per-example loss) and accuracy ``accs[i]`` (%, None for
    regression) of θ_α at ``alphas[i]``; ``barrier`` the largest excess of the loss over the
    straight line between the endpoint losses, reached at ``alpha_max``; ``aligned`` whether
    B was permuted to A first."""

    alphas: tuple[float, ...]
    losses: tuple[float, ...]
    accs: tuple[float, ...] | None
    barrier: float
    alpha_max: float
    aligned: bool

    def to_dict(self) -> dict:
        return {
            "alphas": list(self.alphas),
            "losses": list(self.losses),
            "accs": None if self.accs is None else list(self.accs),
            "barrier": self.barrier,
            "alpha_max": self.alpha_max,
            "aligned": self.aligned,
        }


def _check_alphas(alphas: Sequence[float]) -> tuple[float, ...]:
    al = tuple(float(a) for a in alphas)
    if len(al) < 2 or any(not math.isfinite(a) or a < 0 or a > 1 for a in al):
        raise ConfigError(
            f"alphas {list(al)[:5]} must be >= 2 finite values in [0, 1]; e.g. 0, 0.1, ..., 1"
        )
    if 0.0 not in al or 1.0 not in al:
        raise ConfigError("alphas must include both endpoints 0 and 1")
    return tuple(sorted(set(al)))


def _split_loss(
    model: nn.Module, split: Split, loss_fn, batch_size: int
) -> tuple[float, float | None]:
    total, correct = 0.0, 0
    classify = not split.y.is_floating_point()
    for i in range(0, len(split), batch_size):
        out = model(split.x[i : i + batch_size])
        y = split.y[i : i + batch_size]
        total += float(loss_fn(out, y).double().sum())
        if classify:
            correct += int((out.argmax(-1) == y).sum())
    n = len(split)
    return total / n, (100.0 * correct / n if classify else None)


def interpolation_curve(
    model_a: nn.Module,
    model_b: nn.Module,
    split: Split,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    *,
    loss: str = "auto",
    batch_size: int = 4096,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...] | None]:
    """``(alphas, losses, accs)`` of θ_α on ``split`` (cross-entropy for integer labels,
    MSE for float targets, unless ``loss`` names one)."""
    from weightlab.adapters.interpolate import interpolate_state
    from weightlab.probes.matching import check_same_architecture
    from weightlab.train.losses import resolve_loss

    check_same_architecture(model_a, model_b)
    if not isinstance(split, Split) or len(split) == 0:
        raise DataError("the barrier needs a non-empty Split (x, y); pass e.g. data.test")
    al = _check_alphas(alphas)
    kind = "regression" if split.y.is_floating_point() else "classification"
    loss_fn = resolve_loss(loss, kind, split.y.ndim - 1 if kind == "regression" else None)
    sa = {k: v.detach() for k, v in model_a.state_dict().items()}
    sb = {k: v.detach() for k, v in model_b.state_dict().items()}
    probe = copy.deepcopy(model_a).eval()
    losses, accs = [], []
    with torch.no_grad():
        for a in al:
            probe.load_state_dict(interpolate_state(sa, sb, a))
            lo, acc = _split_loss(probe, split, loss_fn, batch_size)
            losses.append(lo)
            accs.append(acc)
    return al, tuple(losses), (None if accs[0] is None else tuple(accs))


def loss_barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    data_split: Split,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    align: bool = False,
    align_data: Split | torch.Tensor | None = None,
    loss: str = "auto",
    batch_size: int = 4096,
) -> BarrierResult:
    """The interpolation barrier of the module docstring on ``data_split``, with B first
    aligned to A by unit matching when ``align`` (weightlab MLPs)."""
    from weightlab.probes.matching import check_same_architecture, permute_to_match

    check_same_architecture(model_a, model_b)
    if align:
        model_b = permute_to_match(
            model_b, model_a, data_split if align_data is None else align_data
        )
    al, losses, accs = interpolation_curve(
        model_a, model_b, data_split, alphas, loss=loss, batch_size=batch_size
    )
    la, lb = losses[0], losses[-1]
    excess = [lo - ((1 - a) * la + a * lb) for a, lo in zip(al, losses, strict=True)]
    k = max(range(len(al)), key=lambda i: excess[i])
    return BarrierResult(al, losses, accs, float(excess[k]), al[k], bool(align))
