"""Loss curvature: the Hessian's top eigenvalue (sharpness) by power iteration on
Hessian-vector products, and its trace by Hutchinson's estimator.

The loss is the mean per-example training loss ``L(θ) = (1/n) Σ_i ℓ(f_θ(x_i), y_i)`` over
the given examples, and ``H = ∇²_θ L`` over the parameters that require gradients (a
model's masks and other Transforms are respected: the Hessian is taken with respect to
the free parameters, through the attached transforms). A Hessian-vector product is
Pearlmutter's (1994) double backward, ``Hv = ∇_θ (∇_θ L · v)``, accumulated over input
chunks (``L`` is a mean, so ``Hv`` is the chunk-size-weighted mean of the chunks' ``Hv``).

- :func:`top_eigenvalue`: power iteration ``v ← Hv / ‖Hv‖`` from a seeded Gaussian start;
  the estimate is the Rayleigh quotient ``vᵀHv``, stopped when it changes by less than
  ``tol`` (relative) between iterations. Power iteration converges to the eigenvalue of
  largest *magnitude*; near a minimum of a trained network that is the top (positive)
  eigenvalue, the sharpness of Cohen et al. (2021) and Rosenfeld & Risteski (2023),
  "Outliers with Opposing Signals" [#89]: gradient descent at step size η is stable only
  while it stays ≤ 2/η. The result says whether it converged.
- :func:`hessian_trace`: Hutchinson (1989): ``tr H = E[zᵀHz]`` for Rademacher ``z``, the
  mean over ``samples`` seeded draws with its standard error.
- :func:`sharpness_probe`: :func:`top_eigenvalue` as a training-loop probe
  (:mod:`weightlab.train.probes`), on a fixed subset of the training split.

Neither changes the model: parameters are only read, ``.grad`` is left untouched, and the
train/eval mode is restored (evaluated in eval mode, so dropout is off).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from weightlab.errors import ConfigError
from weightlab.seeding import generator

__all__ = [
    "HessianEigen",
    "HessianTrace",
    "hessian_trace",
    "hvp",
    "sharpness_probe",
    "top_eigenvalue",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HessianEigen:
    """Top Hessian eigenvalue by power iteration: ``value`` (the last Rayleigh quotient),
    ``iterations`` used, ``converged`` (relative change < ``tol``), ``n`` examples."""

    value: float
    iterations: int
    converged: bool
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HessianTrace:
    """Hutchinson's trace estimate: ``value`` (mean of ``zᵀHz``), ``stderr`` (its standard
    error over the ``samples`` draws), ``n`` examples."""

    value: float
    stderr: float
    samples: int
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _params(model: nn.Module) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no parameters that require gradients: nothing to probe")
    return params


def _loss_fn(loss_fn: LossFn | None, y: torch.Tensor) -> LossFn:
    if loss_fn is not None:
        return loss_fn
    if y.is_floating_point():
        return lambda p, t: (p - t).square().flatten(1).sum(1)
    return lambda p, t: nn.functional.cross_entropy(p, t, reduction="none")


def _check(x: torch.Tensor, y: torch.Tensor, chunk: int | None) -> int:
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(
            f"need matching, non-empty inputs and targets for a Hessian probe, got {len(x)} "
            f"and {len(y)} examples"
        )
    if chunk is not None and chunk < 1:
        raise ConfigError(f"chunk must be >= 1, got {chunk}")
    return len(x) if chunk is None else int(chunk)


def hvp(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    vs: list[torch.Tensor],
    loss_fn: LossFn | None = None,
    chunk: int | None = None,
) -> list[torch.Tensor]:
    """``H v`` for the mean loss over ``(x, y)``; ``vs`` has one tensor per parameter that
    requires gradients (``model.parameters()`` order). ``loss_fn(pred, y)`` returns
    per-example losses (default: squared error summed over outputs for float targets,
    cross-entropy for integer labels)."""
    params = _params(model)
    if len(vs) != len(params) or any(v.shape != p.shape for v, p in zip(vs, params, strict=True)):
        raise ConfigError("hvp: vs must match the shapes of the parameters that require grad")
    fn = _loss_fn(loss_fn, y)
    size = _check(x, y, chunk)
    n = len(x)
    out = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        for i in range(0, n, size):
            xb, yb = x[i : i + size], y[i : i + size]
            loss = fn(model(xb), yb).sum() / n
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
            hv = torch.autograd.grad(dot, params, allow_unused=True)
            for o, h in zip(out, hv, strict=True):
                if h is not None:
                    o.add_(h)
    return out


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((u.double() * v.double()).sum() for u, v in zip(a, b, strict=True))


class _EvalMode:
    def __init__(self, model: nn.Module) -> None:
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


def top_eigenvalue(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    chunk: int | None = None,
) -> HessianEigen:
    """Power iteration on ``H`` (module docstring); the start vector is Gaussian from
    ``generator(seed)``, so the same seed gives the same estimate."""
    if iters < 1 or not tol > 0:
        raise ConfigError(f"top_eigenvalue needs iters >= 1 and tol > 0, got {iters}, {tol}")
    params = _params(model)
    g = generator(seed)
    v = [torch.randn(p.shape, generator=g, dtype=torch.float64).to(p) for p in params]
    norm = math.sqrt(float(_dot(v, v)))
    v = [t / norm for t in v]
    value, done, used = float("nan"), False, 0
    with _EvalMode(model):
        for it in range(1, iters + 1):
            used = it
            hv = hvp(model, x, y, v, loss_fn, chunk)
            new = float(_dot(v, hv))
            norm = math.sqrt(float(_dot(hv, hv)))
            if not math.isfinite(new) or norm == 0.0:
                value = new
                break
            done = math.isfinite(value) and abs(new - value) <= tol * max(abs(new), 1e-12)
            value = new
            v = [t / norm for t in hv]
            if done:
                break
    return HessianEigen(value, used, done, len(x))


def hessian_trace(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | None = None,
    *,
    samples: int = 50,
    seed: int = 0,
    chunk: int | None = None,
) -> HessianTrace:
    """Hutchinson's estimate of ``tr H`` from ``samples`` Rademacher vectors drawn from
    ``generator(seed)``."""
    if samples < 2:
        raise ConfigError(f"hessian_trace needs samples >= 2 for a standard error, got {samples}")
    params = _params(model)
    g = generator(seed)
    vals = []
    with _EvalMode(model):
        for _ in range(samples):
            z = [
                (torch.randint(0, 2, p.shape, generator=g) * 2 - 1).to(p.dtype).to(p.device)
                for p in params
            ]
            vals.append(float(_dot(z, hvp(model, x, y, z, loss_fn, chunk))))
    t = torch.tensor(vals, dtype=torch.float64)
    return HessianTrace(float(t.mean()), float(t.std() / math.sqrt(samples)), samples, len(x))


def sharpness_probe(
    every: int,
    n: int | None = None,
    *,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    name: str = "sharpness",
):
    """A training-loop :class:`~weightlab.train.probes.Probe` recording the top Hessian
    eigenvalue of the run's own per-example loss on the first ``n`` training examples
    (all if ``None``) every ``every`` steps; keys ``<name>/value`` and
    ``<name>/converged``."""
    from weightlab.train.probes import Probe

    def fn(model: nn.Module, ctx) -> dict:
        tr = ctx.data.train
        x, y = (tr.x, tr.y) if n is None else (tr.x[:n], tr.y[:n])
        e = top_eigenvalue(model, x, y, ctx.loss_fn, iters=iters, tol=tol, seed=seed)
        return {"value": e.value, "converged": float(e.converged)}

    return Probe(name, every, fn)
