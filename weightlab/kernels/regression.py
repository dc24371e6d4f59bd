"""Kernel models: a jitter-stabilized Cholesky solve, kernel ridge regression, the GP posterior
and the NTK-GP mean of a linearized network at training time t.

Conventions (shared by every function here):

* kernels are ``(n, n)`` train Grams and ``(m, n)`` test-train blocks; targets are ``(n,)`` or
  ``(n, k)`` (one column per output) and predictions keep that trailing shape;
* float64 in, float64 out unless the inputs are another floating dtype;
* bad input raises one-line :class:`~weightlab.errors.ConfigError` naming problem and fix.

The NTK-GP mean is the gradient-flow closed form of Lee et al. (2019), "Wide Neural Networks of
Any Depth Evolve as Linear Models Under Gradient Descent", Eq. (9) (and Jacot et al. 2018,
"Neural Tangent Kernel", Sec. 5, for the infinite-width kernel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from weightlab.errors import ConfigError

__all__ = [
    "cholesky_factor",
    "cholesky_solve",
    "jitter_schedule",
    "gp_posterior",
    "kernel_ridge",
    "ntk_gp_mean",
]

#: The relative jitters tried (times the mean of the diagonal) after the plain factorization
#: fails: 1e-10, 1e-9, ..., up to :data:`MAX_RELATIVE_JITTER`.
FIRST_RELATIVE_JITTER = 1e-10
MAX_RELATIVE_JITTER = 1e-4


def _check_square(k: Tensor, name: str) -> None:
    if not isinstance(k, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(k).__name__}; pass a tensor")
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ConfigError(
            f"{name} must be a square (n, n) kernel matrix, got shape {tuple(k.shape)}; "
            "pass the train Gram"
        )
    if not torch.is_floating_point(k):
        raise ConfigError(f"{name} must be floating point, got {k.dtype}; cast it to float64")


def _as_columns(y: Tensor, n: int, name: str) -> tuple[Tensor, bool]:
    """``y`` as an ``(n, k)`` matrix, and whether it was a vector."""
    if not isinstance(y, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(y).__name__}; pass a tensor")
    if y.dim() not in (1, 2) or y.shape[0] != n:
        raise ConfigError(
            f"{name} has shape {tuple(y.shape)} but the kernel has {n} rows; "
            f"pass {name} as ({n},) or ({n}, k)"
        )
    return (y.unsqueeze(1), True) if y.dim() == 1 else (y, False)


def _check_cross(k_cross: Tensor, n: int, name: str) -> None:
    if not isinstance(k_cross, Tensor) or k_cross.dim() != 2 or k_cross.shape[1] != n:
        shape = tuple(k_cross.shape) if isinstance(k_cross, Tensor) else type(k_cross).__name__
        raise ConfigError(
            f"{name} must have shape (m, {n}) to match the {n} training points, got {shape}; "
            "pass the test-train kernel block"
        )


def jitter_schedule(k: Tensor, jitter: float | None = None) -> list[float]:
    """The diagonal jitters :func:`cholesky_factor` tries, in order.

    ``jitter=None``: 0, then 1e-10·mean(diag K), ×10 each time, up to 1e-4·mean(diag K).
    A number: exactly that jitter (no escalation).
    """
    if jitter is not None:
        if not math.isfinite(float(jitter)) or float(jitter) < 0:
            raise ConfigError(f"jitter must be a finite number >= 0, got {jitter}; pass e.g. 1e-8")
        return [float(jitter)]
    scale = float(torch.diagonal(k.detach()).abs().mean()) if k.shape[0] else 1.0
    if not math.isfinite(scale) or scale == 0.0:
        scale = 1.0
    out = [0.0]
    rel = FIRST_RELATIVE_JITTER
    while rel <= MAX_RELATIVE_JITTER * (1 + 1e-9):
        out.append(rel * scale)
        rel *= 10.0
    return out


def cholesky_factor(k: Tensor, jitter: float | None = None) -> tuple[Tensor, float]:
    """The lower Cholesky factor of ``k + jitter·I`` and the jitter that made it succeed.

    Jitter escalation (see :func:`jitter_schedule`): the plain factorization first, then
    relative jitters 1e-10 … 1e-4 of the mean diagonal. A matrix that is still not positive
    definite raises a one-line ConfigError naming the largest jitter tried.
    """
    _check_square(k, "kernel matrix")
    if not bool(torch.isfinite(k).all()):
        raise ConfigError("kernel matrix has NaN or inf entries; check the kernel's inputs")
    ksym = 0.5 * (k + k.transpose(0, 1))
    eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
    tried = jitter_schedule(ksym, jitter)
    for j in tried:
        factor, info = torch.linalg.cholesky_ex(ksym + j * eye if j else ksym)
        if int(info) == 0:
            return factor, j
    raise ConfigError(
        f"kernel matrix ({k.shape[0]}x{k.shape[0]}) is not positive definite even with jitter "
        f"{tried[-1]:.3g} added to the diagonal; add a ridge/noise term or pass a larger jitter="
    )


def cholesky_solve(k: Tensor, rhs: Tensor, jitter: float | None = None) -> Tensor:
    """Solve ``(k + jitter·I) x = rhs`` for a symmetric positive (semi)definite ``k``.

    ``rhs`` is ``(n,)`` or ``(n, k)``; the result has its shape. ``jitter=None`` escalates
    (0, then 1e-10·mean diag ×10 up to 1e-4·mean diag); a number uses exactly that jitter.
    Raises ConfigError naming the largest jitter tried when ``k`` is not positive definite.
    """
    _check_square(k, "kernel matrix")
    cols, vector = _as_columns(rhs, k.shape[0], "rhs")
    factor, _ = cholesky_factor(k, jitter)
    x = torch.cholesky_solve(cols.to(factor.dtype), factor)
    return x.squeeze(1) if vector else x


def kernel_ridge(
    k_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    ridge: float = 0.0,
    *,
    jitter: float | None = None,
) -> Tensor:
    """Kernel ridge regression: ``K_*x (K + ridge·I)^{-1} y``.

    ``ridge=0`` is kernel (interpolating) regression, the t → ∞ limit of
    :func:`ntk_gp_mean` with f₀ = 0 (Lee et al. 2019, Eq. 16). Returns ``(m,)`` or ``(m, k)``.
    """
    _check_square(k_train, "k_train")
    n = k_train.shape[0]
    _as_columns(y_train, n, "y_train")
    _check_cross(k_test_train, n, "k_test_train")
    if not math.isfinite(float(ridge)) or float(ridge) < 0:
        raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}; pass e.g. 1e-6")
    eye = torch.eye(n, dtype=k_train.dtype, device=k_train.device)
    alpha = cholesky_solve(k_train + float(ridge) * eye, y_train, jitter)
    return k_test_train @ alpha


def gp_posterior(
    k_train: Tensor,
    y_train: Tensor,
    k_test_train: Tensor,
    k_test_diag: Tensor,
    noise: float | Tensor,
    *,
    include_noise: bool = False,
    jitter: float | None = None,
) -> tuple[Tensor, Tensor]:
    """GP regression posterior (Rasmussen & Williams 2006, Eqs. 2.25–2.26).

    ``noise`` is the observation-noise *variance* σ²: mean = K_*x (K + σ²I)^{-1} y,
    var = k_** − diag(K_*x (K + σ²I)^{-1} K_x*) (the latent f's variance; plus σ² with
    ``include_noise=True``, the predictive variance of a new observation). ``k_test_diag`` is
    the ``(m,)`` prior variance at the test points. Returns ``(mean, var)``; mean is ``(m,)``
    or ``(m, k)``, var is ``(m,)`` (shared by all outputs).
    """
    _check_square(k_train, "k_train")
    n = k_train.shape[0]
    _as_columns(y_train, n, "y_train")
    _check_cross(k_test_train, n, "k_test_train")
    m = k_test_train.shape[0]
    if not isinstance(k_test_diag, Tensor) or k_test_diag.shape != (m,):
        shape = tuple(k_test_diag.shape) if isinstance(k_test_diag, Tensor) else k_test_diag
        raise ConfigError(
            f"k_test_diag must have shape ({m},) (one prior variance per test point), got "
            f"{shape}; pass the diagonal of the test kernel"
        )
    noise_t = torch.as_tensor(noise, dtype=k_train.dtype, device=k_train.device)
    if noise_t.dim() != 0 or not bool(torch.isfinite(noise_t)) or float(noise_t) < 0:
        raise ConfigError(f"noise must be a finite variance >= 0, got {noise}; pass e.g. 1e-2")
    eye = torch.eye(n, dtype=k_train.dtype, device=k_train.device)
    factor, _ = cholesky_factor(k_train + noise_t * eye, jitter)
    cols, vector = _as_columns(y_train, n, "y_train")
    alpha = torch.cholesky_solve(cols.to(factor.dtype), factor)
    mean = k_test_train @ alpha
    v = torch.linalg.solve_triangular(factor, k_test_train.transpose(0, 1), upper=False)
    var = k_test_diag - (v * v).sum(0)
    if include_noise:
        var = var + noise_t
    return (mean.squeeze(1) if vector else mean), var


def _flow_weights(eig: Tensor, t: float, lr: float) -> Tensor:
    """(1 − e^{−ηλt})/λ per eigenvalue (ηt at λ = 0); 1/λ at t = ∞."""
    tau = lr * t
    lam = eig.clamp_min(0.0)
    tiny = lam <= eig.abs().max() * 1e-14 if eig.numel() else lam > 0
    safe = torch.where(tiny, torch.ones_like(lam), lam)
    w = -torch.expm1(-safe * tau) / safe
    return torch.where(tiny, torch.full_like(lam, tau), w)


def _discrete_weights(eig: Tensor, steps: float, lr: float) -> Tensor:
    """(1 − (1 − ηλ)^k)/λ per eigenvalue (ηk at λ = 0): k steps of discrete GD."""
    lam = eig.clamp_min(0.0)
    tiny = lam <= eig.abs().max() * 1e-14 if eig.numel() else lam > 0
    safe = torch.where(tiny, torch.ones_like(lam), lam)
    w = (1.0 - torch.pow(1.0 - lr * safe, steps)) / safe
    return torch.where(tiny, torch.full_like(lam, lr * steps), w)


def ntk_gp_mean(
    ntk_train: Tensor,
    ntk_test_train: Tensor,
    y_train: Tensor,
    t: float,
    lr: float = 1.0,
    f0_train: Tensor | None = None,
    f0_test: Tensor | None = None,
    *,
    discrete: bool = False,
    jitter: float | None = None,
) -> Tensor:
    """The mean prediction of a linearized network after training time ``t`` (NTK-GP mean).

    Convention: loss ½‖f(X) − y‖² (a sum, not a mean), gradient descent on the parameters with
    learning rate η = ``lr`` for ``t`` steps; in the gradient-flow limit the function follows
    df/dτ = −ηΘ(f − y) with τ = t steps, so (Lee et al. 2019, Eq. 9)

        f_t(X*) = f₀(X*) + Θ_{*x} Θ^{-1} (I − e^{−ηΘt}) (y − f₀(X)).

    Θ^{-1}(I − e^{−ηΘt}) is evaluated through the eigendecomposition Θ = V diag(λ) Vᵀ as
    V diag((1 − e^{−ηλt})/λ) Vᵀ (the λ → 0 limit ηt is used for null directions, so a singular
    Θ is fine at finite t). ``t = inf`` is kernel regression
    f₀(X*) + Θ_{*x} Θ^{-1}(y − f₀(X)) through :func:`cholesky_solve`. ``discrete=True`` uses
    the exact discrete-GD factor (1 − (1 − ηλ)^t)/λ instead of the exponential: the
    linearized model after exactly ``t`` GD steps (t must then be a whole number). With a
    *mean* loss ½·(1/n)‖f − y‖², pass ``lr/n``. ``f0_train``/``f0_test`` default to 0 (the
    centred network, or the infinite-width ensemble mean). ``t`` is the number of steps
    (time t·lr in units of the kernel).
    """
    _check_square(ntk_train, "ntk_train")
    n = ntk_train.shape[0]
    cols, vector = _as_columns(y_train, n, "y_train")
    _check_cross(ntk_test_train, n, "ntk_test_train")
    m = ntk_test_train.shape[0]
    t_f = float(t)
    if math.isnan(t_f) or t_f < 0:
        raise ConfigError(f"training time t must be >= 0 (or inf), got {t}; pass t >= 0")
    if not math.isfinite(float(lr)) or float(lr) <= 0:
        raise ConfigError(f"lr must be a finite number > 0, got {lr}; pass e.g. 1.0")
    if discrete and math.isfinite(t_f) and t_f != round(t_f):
        raise ConfigError(f"discrete=True needs a whole number of steps t, got {t}")

    def _f0(f0: Tensor | None, rows: int, name: str) -> Tensor:
        if f0 is None:
            return torch.zeros(rows, cols.shape[1], dtype=ntk_train.dtype, device=cols.device)
        if not isinstance(f0, Tensor) or f0.shape[0] != rows or f0.numel() != rows * cols.shape[1]:
            shape = tuple(f0.shape) if isinstance(f0, Tensor) else type(f0).__name__
            raise ConfigError(
                f"{name} must have {rows} rows and the targets' {cols.shape[1]} column(s), got "
                f"{shape}; pass the network's outputs at init"
            )
        return f0.reshape(rows, cols.shape[1]).to(ntk_train.dtype)

    f0x = _f0(f0_train, n, "f0_train")
    f0s = _f0(f0_test, m, "f0_test")
    resid = cols.to(ntk_train.dtype) - f0x
    if math.isinf(t_f):
        coef = cholesky_solve(ntk_train, resid, jitter)
    else:
        sym = 0.5 * (ntk_train + ntk_train.transpose(0, 1))
        eig, vecs = torch.linalg.eigh(sym)
        weights = (_discrete_weights if discrete else _flow_weights)(eig, t_f, float(lr))
        coef = vecs @ (weights.unsqueeze(1) * (vecs.transpose(0, 1) @ resid))
    out = f0s + ntk_test_train.to(ntk_train.dtype) @ coef
    return out.squeeze(1) if vector else out
