"""Inductive bias as information: ``−log₂ P(test loss ≤ ε)`` over hypotheses drawn at random
from a hypothesis space, with the test-loss distribution modelled from a sample.

Boopathy et al. (2024), "Towards Exact Computation of Inductive Bias": the
inductive bias a task requires relative to a hypothesis space is the information needed to
pick a well-generalizing hypothesis from it, ``I = −log₂ P_h(L(h) ≤ ε)``; it is estimated by
"modeling the loss distribution of random hypotheses drawn from a hypothesis space". The
distribution model of the paper body could not be confirmed here, so the model is named in
every result:

* ``"lognormal"`` (default): ``log L ~ N(μ, σ²)``, a Gaussian fitted to the log losses (mean
  and sample std);
* ``"scaled_chi2"``: ``L ≈ s·χ²_k`` with ``k = 2·mean²/var`` and ``s = var/(2·mean)`` (method of
  moments; a test MSE is a sum of squared residuals). Moments make it sensitive to a heavy
  right tail of the losses (a few near-singular readouts);
* ``"empirical"``: the fraction of sampled hypotheses with ``L ≤ ε`` (``inf`` bits when none).

Every result carries a consistency check of the model against the sample: the two-sided
binomial test of the observed count of hypotheses under ε against the model's
``P·num_hypotheses`` (``consistency_p``; ``consistent`` when ≥ :data:`CONSISTENCY_LEVEL`). A
deep-tail estimate cannot be refuted by the sample, but a model that misplaces the part of
the distribution the sample resolves is flagged.

Hypotheses: :func:`relu_feature_hypotheses` (random ReLU features, least-squares readout) and
:func:`fourier_feature_hypotheses` (random Fourier features of a Gaussian kernel, median
heuristic bandwidth; Rahimi & Recht 2007), both vectorized over a batch of hypotheses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = [
    "LOSS_MODELS",
    "InductiveBias",
    "fourier_feature_hypotheses",
    "inductive_bias_bits",
    "median_bandwidth",
    "relu_feature_hypotheses",
]

LOSS_MODELS = {
    "lognormal": "Gaussian fitted to the log test losses (log-normal)",
    "scaled_chi2": "scaled chi-square s·χ²_k fitted by moments to the test losses",
    "empirical": "empirical fraction of sampled hypotheses",
}
CONSISTENCY_LEVEL = 1e-3  # binomial test p-value below which the model is flagged
Task = tuple[Tensor, Tensor, Tensor, Tensor]
Sampler = Callable[[Task, int, torch.Generator], Tensor]


@dataclass(frozen=True)
class InductiveBias:
    """An estimate of ``−log₂ P(L ≤ ε)``: ``bits``, the ``model`` (a key of
    :data:`LOSS_MODELS`) and its description, its fitted ``params``, ``log2_prob``, the sample's
    size, mean and std, the ``empirical_fraction`` with ``L ≤ ε``, and the binomial
    consistency check of the model against that count (``consistency_p``, ``consistent``)."""

    bits: float
    model: str
    model_description: str
    eps: float
    log2_prob: float
    params: dict
    num_hypotheses: int
    loss_mean: float
    loss_std: float
    empirical_fraction: float
    consistency_p: float
    consistent: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _as_task(task) -> Task:
    if isinstance(task, tuple) and len(task) == 4:
        xtr, ytr, xte, yte = task
    elif hasattr(task, "train") and hasattr(task, "test"):
        xtr, ytr, xte, yte = task.train.x, task.train.y, task.test.x, task.test.y
        if not ytr.is_floating_point():  # classification: one-hot regression targets
            k = int(task.num_classes)
            ytr = torch.nn.functional.one_hot(ytr, k)
            yte = torch.nn.functional.one_hot(yte, k)
    else:
        raise ConfigError(
            "task must be a TaskData or a tuple (x_train, y_train, x_test, y_test); pass one"
        )

    def flat(x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).to(torch.float64)

    def cols(y: Tensor) -> Tensor:
        y = y.to(torch.float64)
        return y.reshape(-1, 1) if y.dim() == 1 else y.reshape(y.shape[0], -1)

    return flat(xtr), cols(ytr), flat(xte), cols(yte)


def _fit_and_test(ftr: Tensor, ytr: Tensor, fte: Tensor, yte: Tensor, ridge: float) -> Tensor:
    """Per hypothesis (batch dim B): least-squares readout on ``ftr`` ``(B, n, p)`` (ridge
    ``ridge·tr(FᵀF)/p``, tiny by default: least squares), test MSE on ``fte``. ``(B,)``."""
    b, n, p = ftr.shape
    if p <= n:
        gram = ftr.transpose(1, 2) @ ftr
        lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1) + 1e-300
        gram = gram + lam[:, None, None] * torch.eye(p, dtype=ftr.dtype)
        coef = torch.linalg.solve(gram, ftr.transpose(1, 2) @ ytr)
    else:  # more features than points: the minimum-norm (ridge -> 0) interpolant
        gram = ftr @ ftr.transpose(1, 2)
        lam = ridge * gram.diagonal(dim1=1, dim2=2).mean(-1) + 1e-300
        gram = gram + lam[:, None, None] * torch.eye(n, dtype=ftr.dtype)
        coef = ftr.transpose(1, 2) @ torch.linalg.solve(gram, ytr.expand(b, *ytr.shape))
    pred = fte @ coef
    return (pred - yte).square().mean(dim=(1, 2))


def _check_width(width: int) -> None:
    if int(width) <= 0:
        raise ConfigError(f"hypothesis width (number of random features) must be > 0, got {width}")


def relu_feature_hypotheses(width: int, *, bias_std: float = 0.0, ridge: float = 1e-8) -> Sampler:
    """Hypotheses ``h(x) = a·relu(W x + b)``: ``W`` rows ~ N(0, I/d), ``b ~ N(0, bias_std²)``,
    ``a`` the least-squares readout on the training split. Returns a sampler ``(task, count, g)
    -> (count,)`` test MSEs."""
    _check_width(width)

    def sample(task: Task, count: int, g: torch.Generator) -> Tensor:
        xtr, ytr, xte, yte = task
        d = xtr.shape[1]
        w = torch.randn((count, d, width), generator=g, dtype=torch.float64) / math.sqrt(d)
        b = torch.randn((count, 1, width), generator=g, dtype=torch.float64) * bias_std
        return _fit_and_test(torch.relu(xtr @ w + b), ytr, torch.relu(xte @ w + b), yte, ridge)

    return sample


def median_bandwidth(x: Tensor) -> float:
    """The median heuristic: the median pairwise Euclidean distance between rows of ``x``."""
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    dist = torch.cdist(x, x)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1)
    return float(dist[iu[0], iu[1]].median())


def fourier_feature_hypotheses(
    width: int, *, bandwidth: float | None = None, ridge: float = 1e-8
) -> Sampler:
    """Hypotheses ``h(x) = a·√2 cos(Ω x / ℓ + β)``, ``Ω ~ N(0, I)``, ``β ~ U[0, 2π)``: random
    Fourier features of the Gaussian kernel ``exp(−‖x − x'‖²/(2ℓ²))`` (Rahimi & Recht 2007),
    ``ℓ`` = ``bandwidth`` or the median heuristic on the training inputs; least-squares readout."""
    _check_width(width)

    def sample(task: Task, count: int, g: torch.Generator) -> Tensor:
        xtr, ytr, xte, yte = task
        d = xtr.shape[1]
        ell = median_bandwidth(xtr) if bandwidth is None else float(bandwidth)
        om = torch.randn((count, d, width), generator=g, dtype=torch.float64) / ell
        beta = torch.rand((count, 1, width), generator=g, dtype=torch.float64) * 2 * math.pi

        def phi(x: Tensor) -> Tensor:
            return math.sqrt(2.0) * torch.cos(x @ om + beta)

        return _fit_and_test(phi(xtr), ytr, phi(xte), yte, ridge)

    return sample


def _log2_prob(losses: Tensor, eps: float, model: str) -> tuple[float, dict]:
    from scipy import stats

    v = losses.to(torch.float64)
    if model == "empirical":
        frac = float((v <= eps).double().mean())
        return (math.log2(frac) if frac > 0 else -math.inf), {"fraction": frac}
    if model == "lognormal":
        if bool((v <= 0).any()):
            raise ConfigError("the lognormal loss model needs positive losses; use scaled_chi2")
        logs = v.log()
        mu, sd = float(logs.mean()), float(logs.std())
        if sd == 0:
            return (0.0 if math.log(eps) >= mu else -math.inf), {"mu": mu, "sigma": sd}
        lp = float(stats.norm.logcdf((math.log(eps) - mu) / sd))
        return lp / math.log(2), {"mu": mu, "sigma": sd}
    mean, var = float(v.mean()), float(v.var())
    if mean <= 0 or var <= 0:
        return (0.0 if eps >= mean else -math.inf), {"k": math.inf, "scale": 0.0}
    k, s = 2 * mean * mean / var, var / (2 * mean)
    lp = float(stats.chi2.logcdf(eps / s, k))
    return lp / math.log(2), {"k": k, "scale": s}


def inductive_bias_bits(
    hypothesis_sampler: Sampler,
    task,
    eps: float,
    *,
    num_hypotheses: int = 1000,
    model: str = "lognormal",
    seed: int = 0,
    batch: int = 100,
) -> InductiveBias:
    """``−log₂ P(L(h) ≤ ε)`` for ``h`` drawn by ``hypothesis_sampler`` (Boopathy et al. 2024).

    Args:
        hypothesis_sampler: ``(task, count, generator) -> (count,)`` test losses of ``count``
            fresh hypotheses (e.g. :func:`relu_feature_hypotheses`).
        task: a :class:`~weightlab.data.TaskData` (classification labels become one-hot
            targets) or ``(x_train, y_train, x_test, y_test)``.
        eps: the loss level ε > 0 (e.g. ``0.5·Var(y)``).
        num_hypotheses: hypotheses sampled (> 1), in batches of ``batch``.
        model: key of :data:`LOSS_MODELS`; named in the result.
        seed: the draws' seed.
    """
    if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps must be a loss level > 0, got {eps}; pass e.g. 0.5 * Var(y)")
    if model not in LOSS_MODELS:
        raise ConfigError(f"unknown loss model {model!r}; choose one of: {', '.join(LOSS_MODELS)}")
    if int(num_hypotheses) < 2 or int(batch) < 1:
        raise ConfigError(
            f"num_hypotheses must be >= 2 and batch >= 1, got {num_hypotheses} and {batch}"
        )
    t = _as_task(task)
    g = generator(derive_seed("inductive-bias", seed))
    parts, left = [], int(num_hypotheses)
    while left > 0:
        parts.append(hypothesis_sampler(t, min(batch, left), g).reshape(-1).to(torch.float64))
        left -= parts[-1].numel()
    losses = torch.cat(parts)
    if not bool(torch.isfinite(losses).all()):
        raise ConfigError("some sampled hypotheses have non-finite test loss; check the task")
    lp, params = _log2_prob(losses, float(eps), model)
    below = int((losses <= eps).sum())
    pval = _binomial_p(below, int(losses.numel()), 2.0**lp if lp > -math.inf else 0.0)
    return InductiveBias(
        bits=-lp if lp != -math.inf else math.inf,
        model=model,
        model_description=LOSS_MODELS[model],
        eps=float(eps),
        log2_prob=lp,
        params=params,
        num_hypotheses=int(losses.numel()),
        loss_mean=float(losses.mean()),
        loss_std=float(losses.std()),
        empirical_fraction=below / int(losses.numel()),
        consistency_p=pval,
        consistent=pval >= CONSISTENCY_LEVEL,
    )


def _binomial_p(k: int, n: int, p: float) -> float:
    """Two-sided binomial test p-value of ``k`` successes in ``n`` at rate ``p``."""
    from scipy.stats import binomtest

    if p <= 0.0:
        return 1.0 if k == 0 else 0.0
    if p >= 1.0:
        return 1.0 if k == n else 0.0
    return float(binomtest(k, n, p).pvalue)
