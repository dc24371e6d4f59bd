"""The scale mixture of NNGPs with an inverse-gamma prior: a Student-t process [#57].

Lee et al. (2022), "Scale Mixtures of Neural Network Gaussian Processes" (ICLR): put a prior on
the variance σ² of the last layer's weights; "in the case of inverse gamma priors, we recover
Student's t processes". Model (the paper's regression setting, Sec. 3 and its Theorem 3.1 /
Eq. 6; the observation noise is scaled by the same σ², which keeps the posterior closed form)::

    σ² ~ InvGamma(a, b),   f | σ² ~ GP(0, σ² K),   y | f, σ² ~ N(f, σ² s_n² I)

with K the NNGP kernel of the network with unit last-layer variance and ``noise`` = s_n².
Writing C = K_xx + s_n² I and q = yᵀ C⁻¹ y (n training points):

* marginal likelihood: y is multivariate Student-t, 2a degrees of freedom, shape (b/a)·C::

      log p(y) = lnΓ(a + n/2) − lnΓ(a) − (n/2) ln(2πb) − ½ ln|C| − (a + n/2) ln(1 + q/(2b));

* posterior predictive of a new observation y*: Student-t with ν = 2a + n degrees of freedom,
  location μ* = K_*x C⁻¹ y (the GP posterior mean) and squared scale
  ((2b + q)/(2a + n)) · (k_** + s_n² − K_*x C⁻¹ K_x*)
  (σ² | y ~ InvGamma(a + n/2, b + q/2), then y* | σ², y is Gaussian).

The GP counterpart for comparison is y ~ N(0, s²C) with a fitted signal variance s².
Hyperparameters of both are fitted by maximising the log marginal likelihood over log-parameters
with L-BFGS (deterministic; strong-Wolfe line search), for a fixed kernel matrix; kernel
hyperparameters (e.g. the NNGP's b_std) are chosen by the caller over a grid of kernels with
:func:`fit_best` (the largest marginal likelihood wins).

:func:`sample_scale_mixture_outputs` draws finite wide networks (NTK parametrization, stax
convention) whose readout weights have variance σ² ~ InvGamma(a, b) per network: the outputs'
marginal approaches the Student-t with 2a degrees of freedom and squared scale (b/a)·K(x, x).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from weightlab.errors import ConfigError
from weightlab.kernels.regression import _as_columns, _check_cross, _check_square, cholesky_factor

__all__ = [
    "FittedGP",
    "FittedStudentT",
    "StudentTPredictive",
    "fit_best",
    "fit_gp",
    "fit_student_t",
    "gaussian_log_density",
    "gp_log_marginal",
    "gp_predictive",
    "sample_inverse_gamma",
    "sample_scale_mixture_outputs",
    "student_t_log_density",
    "student_t_log_marginal",
    "student_t_process",
]


@dataclass(frozen=True)
class StudentTPredictive:
    """A Student-t posterior predictive: location, scale (not the standard deviation: the
    variance is scale²·ν/(ν−2) for ν > 2) and degrees of freedom ν."""

    loc: Tensor
    scale: Tensor
    dof: float

    def log_density(self, y: Tensor) -> Tensor:
        """Per-point log density of observations ``y`` (shape of ``loc``)."""
        return student_t_log_density(y, self.loc, self.scale, self.dof)


def _positive(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value}; pass e.g. 1.0")
    return v


def _vector_targets(y: Tensor, n: int) -> Tensor:
    cols, vector = _as_columns(y, n, "y_train")
    if not vector and cols.shape[1] != 1:
        raise ConfigError(
            f"y_train must be one output ({n},), got {tuple(y.shape)}; fit each output separately"
        )
    return cols[:, 0]


def _quad_and_logdet(
    k_train: Tensor, y: Tensor, noise: Tensor, jitter: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(C⁻¹y, q = yᵀC⁻¹y, ln|C|) for C = K + noise·I, differentiable in ``noise``."""
    eye = torch.eye(k_train.shape[0], dtype=k_train.dtype, device=k_train.device)
    factor, _ = cholesky_factor(k_train + noise * eye, jitter)
    alpha = torch.cholesky_solve(y.unsqueeze(1), factor)[:, 0]
    q = (y * alpha).sum()
    logdet = 2.0 * torch.log(torch.diagonal(factor)).sum()
    return alpha, q, logdet


def student_t_log_marginal(
    k_train: Tensor,
    y_train: Tensor,
    a: float | Tensor,
    b: float | Tensor,
    noise: float | Tensor,
    *,
    jitter: float | None = None,
) -> Tensor:
    """log p(y) of the inverse-gamma scale mixture (module docstring; a multivariate Student-t
    with 2a degrees of freedom and shape (b/a)(K + noise·I)). Differentiable in a, b, noise and
    K."""
    _check_square(k_train, "k_train")
    n = k_train.shape[0]
    y = _vector_targets(y_train, n).to(k_train.dtype)
    a_t, b_t, s_t = (torch.as_tensor(v, dtype=k_train.dtype) for v in (a, b, noise))
    _, q, logdet = _quad_and_logdet(k_train, y, s_t, jitter)
    half_n = 0.5 * n
    return (
        torch.lgamma(a_t + half_n)
        - torch.lgamma(a_t)
        - half_n * torch.log(2 * math.pi * b_t)
        - 0.5 * logdet
        - (a_t + half_n) * torch.log1p(q / (2 * b_t))
    )


def gp_log_marginal(
    k_train: Tensor,
    y_train: Tensor,
    signal: float | Tensor,
    noise: float | Tensor,
    *,
    jitter: float | None = None,
) -> Tensor:
    """log N(y; 0, signal·(K + noise·I)) (Rasmussen & Williams 2006, Eq. 2.30)."""
    _check_square(k_train, "k_train")
    n = k_train.shape[0]
    y = _vector_targets(y_train, n).to(k_train.dtype)
    s2, nz = (torch.as_tensor(v, dtype=k_train.dtype) for v in (signal, noise))
    _, q, logdet = _quad_and_logdet(k_train, y, nz, jitter)
    return -0.5 * (q / s2 + logdet + n * torch.log(2 * math.pi * s2))


def student_t_log_density(y: Tensor, loc: Tensor, scale: Tensor, dof: float | Tensor) -> Tensor:
    """Per-point log density of the location-scale Student-t with ``dof`` degrees of freedom."""
    nu = torch.as_tensor(dof, dtype=loc.dtype)
    z = (y.to(loc.dtype) - loc) / scale
    return (
        torch.lgamma((nu + 1) / 2)
        - torch.lgamma(nu / 2)
        - 0.5 * torch.log(nu * math.pi)
        - torch.log(scale)
        - (nu + 1) / 2 * torch.log1p(z * z / nu)
    )


def gaussian_log_density(y: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Per-point log N(y; mean, var)."""
    return -0.5 * ((y.to(mean.dtype) - mean) ** 2 / var + torch.log(2 * math.pi * var))


def _predictive_parts(
    k_train, y_train, k_test_train, k_test_diag, noise, jitter
) -> tuple[Tensor, Tensor, Tensor, int]:
    _check_square(k_train, "k_train")
    n = k_train.shape[0]
    y = _vector_targets(y_train, n).to(k_train.dtype)
    _check_cross(k_test_train, n, "k_test_train")
    m = k_test_train.shape[0]
    if not isinstance(k_test_diag, Tensor) or k_test_diag.shape != (m,):
        raise ConfigError(
            f"k_test_diag must have shape ({m},) (one prior variance per test point); pass the "
            "diagonal of the test kernel"
        )
    nz = torch.as_tensor(noise, dtype=k_train.dtype)
    eye = torch.eye(n, dtype=k_train.dtype, device=k_train.device)
    factor, _ = cholesky_factor(k_train + nz * eye, jitter)
    alpha = torch.cholesky_solve(y.unsqueeze(1), factor)[:, 0]
    loc = k_test_train.to(k_train.dtype) @ alpha
    v = torch.linalg.solve_triangular(factor, k_test_train.to(k_train.dtype).T, upper=False)
    var = (k_test_diag.to(k_train.dtype) + nz - (v * v).sum(0)).clamp_min(1e-300)
    return loc, var, (y * alpha).sum(), n


def student_t_process(
    k_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    k_test_diag: Tensor,
    a: float,
    b: float,
    noise: float,
    *,
    jitter: float | None = None,
) -> StudentTPredictive:
    """Posterior predictive of new *observations* under the inverse-gamma scale mixture (Lee et
    al. 2022, Theorem 3.1 for regression; module docstring): Student-t with ν = 2a + n, location
    K_*x C⁻¹ y and scale² = (2b + q)/(2a + n)·(k_** + noise − K_*x C⁻¹ K_x*)."""
    a = _positive(a, "a")
    b = _positive(b, "b")
    if not math.isfinite(float(noise)) or float(noise) < 0:
        raise ConfigError(f"noise must be a finite variance >= 0, got {noise}; pass e.g. 1e-2")
    loc, var, q, n = _predictive_parts(k_train, y_train, k_test_train, k_test_diag, noise, jitter)
    scale2 = (2 * b + q) / (2 * a + n) * var
    return StudentTPredictive(loc, scale2.sqrt(), 2 * a + n)


def gp_predictive(
    k_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    k_test_diag: Tensor,
    signal: float,
    noise: float,
    *,
    jitter: float | None = None,
) -> tuple[Tensor, Tensor]:
    """The GP counterpart: predictive mean and variance of new observations under
    y ~ N(0, signal·(K + noise·I)): (K_*x C⁻¹ y, signal·(k_** + noise − K_*x C⁻¹ K_x*))."""
    signal = _positive(signal, "signal")
    loc, var, _, _ = _predictive_parts(k_train, y_train, k_test_train, k_test_diag, noise, jitter)
    return loc, signal * var


@dataclass(frozen=True)
class FittedStudentT:
    a: float
    b: float
    noise: float
    log_marginal: float


@dataclass(frozen=True)
class FittedGP:
    signal: float
    noise: float
    log_marginal: float


#: Log-parameters are kept inside [-LOG_BOUND, LOG_BOUND] during fitting (a tanh squash), so
#: a flat direction cannot run off to inf.
LOG_BOUND = 12.0


def _maximise(
    objective: Callable[[Tensor], Tensor], start: Sequence[float], steps: int
) -> tuple[list[float], float]:
    """Maximise ``objective(exp(θ))`` over bounded log-parameters θ with L-BFGS."""
    raw = torch.tensor(
        [math.atanh(max(min(math.log(s) / LOG_BOUND, 0.999), -0.999)) for s in start],
        dtype=torch.float64,
        requires_grad=True,
    )
    opt = torch.optim.LBFGS(
        [raw], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def params() -> Tensor:
        return torch.exp(LOG_BOUND * torch.tanh(raw))

    def closure():
        opt.zero_grad()
        try:
            loss = -objective(params())
        except ConfigError:  # a trial step made the kernel singular: reject it
            return torch.tensor(float("inf"), dtype=torch.float64)
        if not torch.isfinite(loss):
            return torch.tensor(float("inf"), dtype=torch.float64)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        p = params()
        value = float(objective(p))
    return [float(v) for v in p], value


def fit_student_t(
    k_train: Tensor,
    y_train: Tensor,
    *,
    start: tuple[float, float, float] | None = None,
    steps: int = 200,
    jitter: float | None = None,
) -> FittedStudentT:
    """Fit (a, b, noise) of the Student-t process by maximising :func:`student_t_log_marginal`
    for the fixed kernel ``k_train`` (L-BFGS on log-parameters, deterministic). ``start``
    defaults to a = 2, b = 2·yᵀy/n (so the prior mean scale b/(a−1) ≈ the data's second moment)
    and noise = 0.1·mean diag K."""
    y = _vector_targets(y_train, k_train.shape[0]).to(k_train.dtype)
    if start is None:
        m2 = max(float((y * y).mean()), 1e-12) / max(float(torch.diagonal(k_train).mean()), 1e-12)
        start = (2.0, 2.0 * m2, 0.1 * float(torch.diagonal(k_train).mean()))
    (a, b, noise), value = _maximise(
        lambda p: student_t_log_marginal(k_train, y, p[0], p[1], p[2], jitter=jitter),
        start,
        steps,
    )
    return FittedStudentT(a, b, noise, value)


def fit_gp(
    k_train: Tensor,
    y_train: Tensor,
    *,
    start: tuple[float, float] | None = None,
    steps: int = 200,
    jitter: float | None = None,
) -> FittedGP:
    """Fit (signal, noise) of the GP y ~ N(0, signal·(K + noise·I)) by maximising
    :func:`gp_log_marginal` (L-BFGS on log-parameters, deterministic)."""
    y = _vector_targets(y_train, k_train.shape[0]).to(k_train.dtype)
    if start is None:
        diag = max(float(torch.diagonal(k_train).mean()), 1e-12)
        start = (max(float((y * y).mean()), 1e-12) / diag, 0.1 * diag)
    (signal, noise), value = _maximise(
        lambda p: gp_log_marginal(k_train, y, p[0], p[1], jitter=jitter), start, steps
    )
    return FittedGP(signal, noise, value)


def fit_best(
    kernels: Sequence[Tensor], y_train: Tensor, fit: Callable[..., FittedGP | FittedStudentT]
) -> tuple[int, FittedGP | FittedStudentT]:
    """Kernel hyperparameter selection by marginal likelihood: ``fit`` (:func:`fit_gp` or
    :func:`fit_student_t`) on each candidate train kernel; the index and fit of the best."""
    if not kernels:
        raise ConfigError("fit_best needs at least one candidate kernel; pass a non-empty list")
    best_i, best = -1, None
    for i, k in enumerate(kernels):
        try:
            f = fit(k, y_train)
        except ConfigError:
            continue
        if math.isfinite(f.log_marginal) and (best is None or f.log_marginal > best.log_marginal):
            best_i, best = i, f
    if best is None:
        raise ConfigError("no candidate kernel gave a finite marginal likelihood; check the data")
    return best_i, best


def sample_inverse_gamma(a: float, b: float, n: int, g: torch.Generator) -> Tensor:
    """n exact InvGamma(a, b) draws (float64) from ``g``: b / G with G ~ Gamma(a, 1) by the
    inverse CDF (``scipy.special.gammaincinv``) of uniforms."""
    from scipy.special import gammaincinv

    a = _positive(a, "a")
    b = _positive(b, "b")
    u = torch.rand(n, generator=g, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    gam = torch.from_numpy(gammaincinv(a, u.numpy()))
    return b / gam


def sample_scale_mixture_outputs(
    x: Tensor,
    n_nets: int,
    width: int,
    a: float,
    b: float,
    *,
    depth: int = 1,
    w_std: float = 1.0,
    b_std: float = 0.0,
    seed: int = 0,
    chunk: int = 64,
) -> Tensor:
    """Outputs ``(n_nets, m)`` of ``n_nets`` random ReLU MLPs at the inputs ``x`` ``(m, d)``.

    Each net: ``depth`` hidden Dense(width)+ReLU blocks in the stax NTK convention (weights
    w_std/√fan_in · N(0, 1), biases b_std · N(0, 1)), then a readout whose weights are
    σ·w_std/√width · N(0, 1) and bias σ·b_std·N(0, 1), with σ² ~ InvGamma(a, b) drawn once per
    net (Lee et al. 2022, Sec. 3.1). As width → ∞ the output at one input is Student-t with
    2a degrees of freedom and squared scale (b/a)·K(x, x), K the unit-variance NNGP. Drawn
    from ``weightlab.seeding.generator(seed)``, ``chunk`` nets at a time.
    """
    from weightlab.seeding import generator

    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ConfigError("x must be an (m, d) tensor of inputs; pass a 2-D tensor")
    for v, name in ((n_nets, "n_nets"), (width, "width"), (depth, "depth"), (chunk, "chunk")):
        if int(v) != v or v < 1:
            raise ConfigError(f"{name} must be a positive integer, got {v}")
    g = generator(seed)
    xd = x.to(torch.float64)
    scales = sample_inverse_gamma(a, b, n_nets, g).sqrt()
    out = []
    for start in range(0, n_nets, chunk):
        c = min(chunk, n_nets - start)
        h = xd.unsqueeze(0).expand(c, *xd.shape)  # (c, m, fan_in)
        for _ in range(depth):
            fan_in = h.shape[-1]
            w = torch.randn(c, fan_in, width, generator=g, dtype=torch.float64)
            bias = torch.randn(c, 1, width, generator=g, dtype=torch.float64)
            h = torch.relu(w_std / math.sqrt(fan_in) * (h @ w) + b_std * bias)
        v = torch.randn(c, width, 1, generator=g, dtype=torch.float64)
        rb = torch.randn(c, 1, generator=g, dtype=torch.float64)
        f = (h @ v)[..., 0] * (w_std / math.sqrt(width)) + b_std * rb
        out.append(scales[start : start + c].unsqueeze(1) * f)
    return torch.cat(out, 0)
