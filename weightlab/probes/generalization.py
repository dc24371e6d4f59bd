"""Per-layer divergences between train and test representations [#80].

He, Yu & Goldfeld (2024), "Information-Theoretic Generalization Bounds for Deep Neural
Networks", bound the generalization error by the Kullback–Leibler divergence or the
1-Wasserstein distance between the train and test distributions of a layer's internal
representation ``T_k``; the abstract: "The KL divergence bound shrinks as the layer index
increases, while the Wasserstein bound implies the existence of a layer that serves as a
generalization funnel, which attains a minimal 1-Wasserstein distance". This module
estimates both from samples:

- :func:`gaussian_kl` fits a Gaussian to each sample (mean, covariance with ``1/n``) and
  returns the closed form (:func:`kl_gaussians`)
  ``KL(N(μ₀, Σ₀) ‖ N(μ₁, Σ₁)) = ½ [tr(Σ₁⁻¹Σ₀) + (μ₁ − μ₀)ᵀ Σ₁⁻¹ (μ₁ − μ₀) − d + ln det Σ₁ − ln det Σ₀]``;
  a ``ridge`` (relative to the mean variance) is added to both covariances so a
  rank-deficient layer (wider than its input's rank) gives a finite number;
- :func:`sliced_w1` averages, over ``L`` directions ``θ`` uniform on the sphere (a seeded
  generator), the exact 1-D W₁ between the projected samples,
  ``W₁(a, b) = ∫ |F_a(t) − F_b(t)| dt`` (empirical CDFs; any sample sizes). Its closed form
  for Gaussians, with the same directions, is :func:`sliced_w1_gaussians`, from the 1-D
  ``W₁(N(m₀, s₀²), N(m₁, s₁²)) = E|a + bZ| = |b|√(2/π) e^{−a²/2b²} + a(1 − 2Φ(−a/|b|))``,
  ``a = m₀ − m₁``, ``b = s₀ − s₁`` (the monotone coupling ``F₁⁻¹∘F₀`` is optimal in 1-D).

A linear layer maps ``N(μ, Σ)`` to ``N(Wμ, WΣWᵀ)``, so on a linear network with Gaussian
inputs both estimators have closed forms at every layer (tested).
:func:`layer_divergences` captures the named layers' outputs on the two input sets (one
eval-mode forward each, under ``no_grad``; the model is not changed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from weightlab.errors import ConfigError, DataError
from weightlab.seeding import generator


def _as2d(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.ndim != 2 or len(x) < 2:
        raise DataError(
            f"{what} must be (examples >= 2, dim) features; got shape {tuple(x.shape)}: "
            "flatten them first"
        )
    return x.detach().to(torch.float64)


def kl_gaussians(
    mu0: torch.Tensor, cov0: torch.Tensor, mu1: torch.Tensor, cov1: torch.Tensor
) -> float:
    """``KL(N(μ₀, Σ₀) ‖ N(μ₁, Σ₁))`` in nats (module docstring), by Cholesky factors."""
    mu0, mu1 = mu0.to(torch.float64), mu1.to(torch.float64)
    cov0, cov1 = cov0.to(torch.float64), cov1.to(torch.float64)
    d = mu0.numel()
    try:
        l0 = torch.linalg.cholesky(cov0)
        l1 = torch.linalg.cholesky(cov1)
    except RuntimeError:
        raise DataError(
            "a covariance is not positive definite; pass a ridge > 0 or use more examples "
            "than dimensions"
        ) from None
    a = torch.cholesky_solve(cov0, l1)
    diff = (mu1 - mu0).reshape(-1, 1)
    maha = float(diff.T @ torch.cholesky_solve(diff, l1))
    logdet = 2 * (torch.log(torch.diagonal(l1)).sum() - torch.log(torch.diagonal(l0)).sum())
    return 0.5 * (float(torch.trace(a)) + maha - d + float(logdet))


def gaussian_fit(x: torch.Tensor, ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and ``1/n`` covariance of ``x`` ``(n, d)`` in float64, plus
    ``ridge · mean variance · I``."""
    x = _as2d(x, "x")
    mu = x.mean(0)
    c = x - mu
    cov = c.T @ c / len(x)
    if ridge > 0:
        scale = float(torch.diagonal(cov).mean()) or 1.0
        cov = cov + ridge * scale * torch.eye(len(mu), dtype=torch.float64, device=x.device)
    return mu, cov


def gaussian_kl(p: torch.Tensor, q: torch.Tensor, ridge: float = 1e-8) -> float:
    """Gaussian-fit ``KL(P ‖ Q)`` from samples ``p`` ``(n, d)`` and ``q`` ``(m, d)``."""
    p, q = _as2d(p, "p"), _as2d(q, "q")
    if p.shape[1] != q.shape[1]:
        raise DataError(f"p and q have different dims ({p.shape[1]} vs {q.shape[1]})")
    return kl_gaussians(*gaussian_fit(p, ridge), *gaussian_fit(q, ridge))


def random_directions(dim: int, num: int, seed: int, device="cpu") -> torch.Tensor:
    """``num`` unit vectors ``(num, dim)`` uniform on the sphere, float64, from ``seed``."""
    if num < 1 or dim < 1:
        raise ConfigError(f"need >= 1 projection and dim >= 1; got {num} and {dim}")
    g = generator(seed)
    th = torch.randn(num, dim, generator=g, dtype=torch.float64)
    return (th / th.norm(dim=1, keepdim=True)).to(device)


def w1_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact W₁ between the empirical distributions of the rows of ``a`` ``(L, n)`` and
    ``b`` ``(L, m)`` (one distance per row): ``∫ |F_a − F_b| dt`` on the merged support.
    One sort of the merged values; ``F_a − F_b`` is the running sum of ``+1/n`` (a point of
    ``a``) and ``−1/m`` (a point of ``b``)."""
    n, m = a.shape[-1], b.shape[-1]
    both, order = torch.cat([a, b], -1).sort(dim=-1)
    step = torch.cat([a.new_full(a.shape, 1.0 / n), b.new_full(b.shape, -1.0 / m)], -1).gather(
        -1, order
    )
    diff = step.cumsum(-1)[..., :-1]
    return (diff.abs() * both.diff(dim=-1)).sum(-1)


def sliced_w1(
    p: torch.Tensor,
    q: torch.Tensor,
    num_projections: int = 256,
    seed: int = 0,
    directions: torch.Tensor | None = None,
) -> float:
    """Sliced W₁: the mean over random unit directions ``θ`` of ``W₁(θᵀP, θᵀQ)``."""
    p, q = _as2d(p, "p"), _as2d(q, "q")
    if p.shape[1] != q.shape[1]:
        raise DataError(f"p and q have different dims ({p.shape[1]} vs {q.shape[1]})")
    th = (
        random_directions(p.shape[1], num_projections, seed, p.device)
        if directions is None
        else directions.to(p)
    )
    return float(w1_1d(th @ p.T, th @ q.T).mean())


def w1_gaussians_1d(m0, s0, m1, s1) -> torch.Tensor:
    """Closed-form W₁ between 1-D Gaussians ``N(m0, s0²)`` and ``N(m1, s1²)``
    (broadcasting tensors; module docstring)."""
    a = torch.as_tensor(m0, dtype=torch.float64) - torch.as_tensor(m1, dtype=torch.float64)
    b = (torch.as_tensor(s0, dtype=torch.float64) - torch.as_tensor(s1, dtype=torch.float64)).abs()
    safe = b.clamp_min(1e-300)
    normal = torch.distributions.Normal(0.0, 1.0)
    val = b * math.sqrt(2 / math.pi) * torch.exp(-(a**2) / (2 * safe**2)) + a * (
        1 - 2 * normal.cdf(-a / safe)
    )
    return torch.where(b > 0, val, a.abs())


def sliced_w1_gaussians(
    mu0: torch.Tensor, cov0: torch.Tensor, mu1: torch.Tensor, cov1: torch.Tensor, directions
) -> float:
    """Sliced W₁ between ``N(μ₀, Σ₀)`` and ``N(μ₁, Σ₁)`` over the given unit directions
    ``(L, d)``: each projection is ``N(θᵀμ, θᵀΣθ)``."""
    th = directions.to(torch.float64)
    s0 = torch.einsum("ld,de,le->l", th, cov0.to(th), th).clamp_min(0).sqrt()
    s1 = torch.einsum("ld,de,le->l", th, cov1.to(th), th).clamp_min(0).sqrt()
    return float(w1_gaussians_1d(th @ mu0.to(th), s0, th @ mu1.to(th), s1).mean())


@dataclass(frozen=True)
class LayerDivergence:
    """Train-vs-test divergences of one layer's outputs (``name``: its module path)."""

    name: str
    dim: int
    kl_gaussian: float  # Gaussian-fit KL(train ‖ test), nats
    sliced_w1: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def capture_outputs(
    model: torch.nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The outputs ``(n, features)`` (flattened per example) of the modules at ``layers``
    on input ``x``: one eval-mode forward under ``no_grad``, the model's mode restored."""
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules or n == ""]
    if missing:
        names = [n for n in modules if n]
        raise ConfigError(
            f"layer(s) {missing} do not exist in this model; its modules are: "
            f"{', '.join(names[:40])}{' ...' if len(names) > 40 else ''}"
        )
    out: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(
            lambda _m, _i, o, n=n: out.__setitem__(n, o.detach().reshape(len(x), -1))
        )
        for n in layers
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: out[n] for n in layers}


def layer_divergences(
    model: torch.nn.Module,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    layers: Sequence[str],
    *,
    num_projections: int = 256,
    seed: int = 0,
    ridge: float = 1e-8,
    progress: bool = False,
) -> list[LayerDivergence]:
    """Gaussian-fit KL(train ‖ test) and sliced W₁ of each named layer's output, in order.
    The directions of layer ``i`` come from ``derive_seed("sliced-w1", seed, dim)``, so
    layers of one width share them."""
    from weightlab.progress import progress_bar
    from weightlab.seeding import derive_seed

    tr = capture_outputs(model, x_train, layers)
    te = capture_outputs(model, x_test, layers)
    res = []
    bar = progress_bar(len(layers), "divergences", "layer", progress)
    for n in layers:
        d = tr[n].shape[1]
        th = random_directions(
            d, num_projections, derive_seed("sliced-w1", seed, d), x_train.device
        )
        res.append(
            LayerDivergence(
                n, d, gaussian_kl(tr[n], te[n], ridge), sliced_w1(tr[n], te[n], directions=th)
            )
        )
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return res
