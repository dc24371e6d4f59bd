"""The deep kernel machine (DKM) [#63].

Yang, Robeva, Milsom & Aitchison (2023), "A theory of representation learning gives a deep
generalisation of kernel methods" (ICML): in the Bayesian representation learning limit a deep
GP's posterior over each layer's Gram matrix is a point mass, found by maximising "an
interpretable objective combining a log-likelihood to improve performance with a series of
KL-divergences which keep the posteriors close to the prior". Here, for a fully connected ReLU
network in the stax convention (the same prior as the NNGP of
:func:`weightlab.kernels.analytic.fc_kernels` with ``depth = L``):

* Γ₁ = w²·XXᵀ/d + b² (the prior covariance of the first pre-activations),
* Γ_{ℓ+1} = Φ(G_ℓ) = w²·E_{(u,v)~N(0,G_ℓ)}[relu(u) relu(v)] + b² (the arc-cosine map, Cho &
  Saul 2009), applied to the learned Gram G_ℓ of layer ℓ's pre-activations,
* outputs Y (P × C) with columns y_c ~ N(0, Φ(G_L) + σ²I),

and the DKM objective over the train Grams G₁ … G_L (P × P, positive definite) is

    L(G₁, …, G_L) = Σ_c log N(y_c; 0, Φ(G_L) + σ²I) − Σ_ℓ ν_ℓ · KL(N(0, G_ℓ) ‖ N(0, Γ_ℓ)),

    KL(N(0, G) ‖ N(0, Γ)) = ½ [tr(Γ⁻¹G) − P + ln|Γ| − ln|G|],

with Γ_ℓ depending on G_{ℓ−1} (Γ₁ on the inputs only). ν_ℓ (the ratio of layer ℓ's width to
the output's) sets how far the Grams may move from the prior; ν → ∞ pins G_ℓ = Γ_ℓ, the NNGP.
Each G_ℓ = V_ℓ V_ℓᵀ with V_ℓ lower triangular, initialised at the prior (the NNGP Grams), and
−L is minimised with L-BFGS (deterministic, strong-Wolfe line search, so −L never rises).

Test points: as the paper's sparse DKM treats non-inducing points, with the training points as
the inducing points. At each layer the prior over [train; test] features is N(0, Γ); given the
learned train block G_ii, the test blocks are the Gaussian conditional
G_ti = Γ_ti Γ_ii⁻¹ G_ii and diag G_tt = diag(Γ_tt − Γ_ti Γ_ii⁻¹ Γ_it + Γ_ti Γ_ii⁻¹ G_ii Γ_ii⁻¹ Γ_it),
then Γ of the next layer follows by Φ. Predictions are the GP posterior with the last layer's
Φ(G_L) and noise σ². At G = prior this is exactly NNGP regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from weightlab.errors import ConfigError
from weightlab.kernels.regression import cholesky_factor

__all__ = ["DeepKernelMachine", "input_gram", "relu_gram_map", "relu_cross_map"]


class _ArcCosJ(torch.autograd.Function):
    """J(c) = √(1 − c²) + (π − arccos c)·c with the smooth derivative π − arccos c (autograd
    of the two terms separately is 0·∞ at c = ±1)."""

    @staticmethod
    def forward(ctx, c: Tensor) -> Tensor:
        c = c.clamp(-1.0, 1.0)
        ctx.save_for_backward(c)
        return torch.sqrt((1 - c * c).clamp_min(0.0)) + (math.pi - torch.arccos(c)) * c

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (c,) = ctx.saved_tensors
        return grad * (math.pi - torch.arccos(c))


def relu_cross_map(
    g_cross: Tensor, diag1: Tensor, diag2: Tensor, w_std: float = 1.0, b_std: float = 0.0
) -> Tensor:
    """Φ on a block: w²·√(g₁₁g₂₂)/(2π)·J(g₁₂/√(g₁₁g₂₂)) + b² (Cho & Saul 2009, the arc-cosine
    kernel of degree 1), for cross entries ``g_cross`` (n1, n2) and the two sides' variances."""
    norms = torch.sqrt(torch.outer(diag1, diag2).clamp_min(1e-300))
    c = g_cross / norms
    return w_std**2 * norms * _ArcCosJ.apply(c) / (2 * math.pi) + b_std**2


def relu_gram_map(g: Tensor, w_std: float = 1.0, b_std: float = 0.0) -> Tensor:
    """Φ(G) = w²·E_{N(0,G)}[relu(u) relu(v)] + b² for a Gram G (its diagonal is w²·G_ii/2 + b²
    exactly)."""
    d = torch.diagonal(g)
    return relu_cross_map(g, d, d, w_std, b_std)


def input_gram(x1: Tensor, x2: Tensor | None = None, w_std: float = 1.0, b_std: float = 0.0):
    """Γ₁ = w²·x₁x₂ᵀ/d + b² (stax: the first Dense layer's pre-activation covariance)."""
    x2 = x1 if x2 is None else x2
    return w_std**2 * (x1 @ x2.T) / x1.shape[1] + b_std**2


def _kl(g_factor: Tensor, prior: Tensor, jitter: float | None) -> Tensor:
    """KL(N(0, V Vᵀ) ‖ N(0, prior)) for a lower-triangular V."""
    p = prior.shape[0]
    lp, _ = cholesky_factor(prior, jitter)
    m = torch.linalg.solve_triangular(lp, g_factor, upper=False)  # tr(Γ⁻¹G) = ‖Lp⁻¹V‖²
    logdet_g = 2.0 * torch.log(torch.diagonal(g_factor).abs()).sum()
    logdet_p = 2.0 * torch.log(torch.diagonal(lp)).sum()
    return 0.5 * ((m * m).sum() - p + logdet_p - logdet_g)


class DeepKernelMachine:
    """A DKM with ``depth`` learned Gram layers over a ReLU NNGP prior (module docstring).

    ``x_train`` (P, d), ``y_train`` (P,) or (P, C); ``nu`` one value or one per layer;
    ``noise`` σ² of the Gaussian likelihood; ``w_std``/``b_std`` the prior's stax scales.
    Call :meth:`fit`, then :meth:`predict`. float64 throughout.
    """

    def __init__(
        self,
        x_train: Tensor,
        y_train: Tensor,
        *,
        depth: int = 2,
        nu: float | Sequence[float] = 1.0,
        noise: float = 0.1,
        w_std: float = 1.0,
        b_std: float = 0.0,
        jitter: float | None = None,
    ) -> None:
        if not isinstance(x_train, Tensor) or x_train.dim() != 2:
            raise ConfigError("x_train must be an (P, d) tensor; pass a 2-D tensor of inputs")
        p = x_train.shape[0]
        if not isinstance(y_train, Tensor) or y_train.dim() not in (1, 2) or len(y_train) != p:
            shape = tuple(y_train.shape) if isinstance(y_train, Tensor) else y_train
            raise ConfigError(
                f"y_train has shape {shape} but x_train has {p} rows; pass ({p},) or ({p}, C)"
            )
        if int(depth) != depth or depth < 1:
            raise ConfigError(f"depth must be a positive integer, got {depth}; pass e.g. 2")
        nus = [float(nu)] * depth if isinstance(nu, int | float) else [float(v) for v in nu]
        if len(nus) != depth or any(not (v > 0) for v in nus):
            raise ConfigError(f"nu must be > 0, one value or {depth} values; got {nu}")
        if not math.isfinite(float(noise)) or float(noise) <= 0:
            raise ConfigError(f"noise must be a finite variance > 0, got {noise}; pass e.g. 0.1")
        self.x = x_train.to(torch.float64)
        y = y_train.to(torch.float64)
        self.y = y.unsqueeze(1) if y.dim() == 1 else y
        self._vector = y_train.dim() == 1
        self.depth, self.nu, self.noise = int(depth), nus, float(noise)
        self.w_std, self.b_std, self.jitter = float(w_std), float(b_std), jitter
        self.history: list[float] = []
        # initialise every G_ℓ at the prior's Gram (the NNGP), as its Cholesky factor
        factors, gamma = [], input_gram(self.x, None, self.w_std, self.b_std)
        for _ in range(self.depth):
            lf, _ = cholesky_factor(gamma, jitter)
            factors.append(lf.clone().contiguous())
            gamma = relu_gram_map(lf @ lf.T, self.w_std, self.b_std)
        self._factors = [f.requires_grad_(True) for f in factors]

    # -- the objective ------------------------------------------------------------------
    def grams(self) -> list[Tensor]:
        """The train Grams G₁ … G_L (detached)."""
        with torch.no_grad():
            return [torch.tril(f) @ torch.tril(f).T for f in self._factors]

    def prior_grams(self) -> list[Tensor]:
        """The NNGP prior's Grams Γ₁ … Γ_L of the same layers (no learning)."""
        out, gamma = [], input_gram(self.x, None, self.w_std, self.b_std)
        for _ in range(self.depth):
            out.append(gamma)
            gamma = relu_gram_map(gamma, self.w_std, self.b_std)
        return out

    def terms(self) -> tuple[Tensor, list[Tensor]]:
        """(Σ_c log N(y_c; 0, Φ(G_L) + σ²I), [KL_ℓ]) at the current Grams."""
        gamma = input_gram(self.x, None, self.w_std, self.b_std)
        kls = []
        for v in self._factors:
            lv = torch.tril(v)
            kls.append(_kl(lv, gamma, self.jitter))
            gamma = relu_gram_map(lv @ lv.T, self.w_std, self.b_std)
        p, c = self.y.shape
        eye = torch.eye(p, dtype=torch.float64)
        lk, _ = cholesky_factor(gamma + self.noise * eye, self.jitter)
        z = torch.linalg.solve_triangular(lk, self.y, upper=False)
        logdet = 2.0 * torch.log(torch.diagonal(lk)).sum()
        loglik = -0.5 * ((z * z).sum() + c * logdet + p * c * math.log(2 * math.pi))
        return loglik, kls

    def objective(self) -> Tensor:
        """L = log-likelihood − Σ ν_ℓ KL_ℓ (module docstring); maximised by :meth:`fit`."""
        loglik, kls = self.terms()
        return loglik - sum(n * k for n, k in zip(self.nu, kls, strict=True))

    def fit(self, steps: int = 100, inner: int = 5) -> list[float]:
        """Maximise the objective with L-BFGS: ``steps`` rounds of at most ``inner`` iterations;
        the objective after each round is appended to :attr:`history` (never falls)."""
        if int(steps) != steps or steps < 0:
            raise ConfigError(f"steps must be a whole number >= 0, got {steps}")
        opt = torch.optim.LBFGS(
            self._factors,
            lr=1.0,
            max_iter=inner,
            line_search_fn="strong_wolfe",
            tolerance_grad=1e-10,
            tolerance_change=1e-12,
            history_size=20,
        )

        def closure():
            opt.zero_grad()
            try:
                loss = -self.objective()
            except ConfigError:  # a trial step left a Gram singular: reject it
                return torch.tensor(float("inf"), dtype=torch.float64)
            if not torch.isfinite(loss):
                return torch.tensor(float("inf"), dtype=torch.float64)
            loss.backward()
            return loss

        if not self.history:
            with torch.no_grad():
                self.history.append(float(self.objective()))
        for _ in range(int(steps)):
            opt.step(closure)
            with torch.no_grad():
                self.history.append(float(self.objective()))
        return self.history

    # -- prediction ---------------------------------------------------------------------
    def _test_kernels(self, x_test: Tensor, grams: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(Γ_ii, Γ_ti, diag Γ_tt) of the output kernel Φ(G_L) over train and test points."""
        xt = x_test.to(torch.float64)
        g_ii = input_gram(self.x, None, self.w_std, self.b_std)
        g_ti = input_gram(xt, self.x, self.w_std, self.b_std)
        g_tt = self.w_std**2 * (xt * xt).sum(1) / xt.shape[1] + self.b_std**2
        for learned in grams:
            # condition the prior N(0, Γ) over [train; test] on the learned train block
            lp, _ = cholesky_factor(g_ii, self.jitter)
            a = torch.cholesky_solve(g_ti.T, lp).T  # Γ_ti Γ_ii⁻¹
            new_ti = a @ learned
            new_tt = g_tt - (a * g_ti).sum(1) + ((a @ learned) * a).sum(1)
            new_ii = learned
            d_ii = torch.diagonal(new_ii)
            g_ti = relu_cross_map(new_ti, new_tt, d_ii, self.w_std, self.b_std)
            g_tt = self.w_std**2 * new_tt / 2 + self.b_std**2
            g_ii = relu_gram_map(new_ii, self.w_std, self.b_std)
        return g_ii, g_ti, g_tt

    @torch.no_grad()
    def predict(self, x_test: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean (m,) or (m, C) and latent variance (m,) at ``x_test``."""
        if (
            not isinstance(x_test, Tensor)
            or x_test.dim() != 2
            or x_test.shape[1] != self.x.shape[1]
        ):
            shape = tuple(x_test.shape) if isinstance(x_test, Tensor) else x_test
            raise ConfigError(
                f"x_test must be (m, {self.x.shape[1]}) like x_train, got {shape}; "
                "pass inputs with the training dimension"
            )
        k_ii, k_ti, k_tt = self._test_kernels(x_test, self.grams())
        eye = torch.eye(k_ii.shape[0], dtype=torch.float64)
        lk, _ = cholesky_factor(k_ii + self.noise * eye, self.jitter)
        mean = k_ti @ torch.cholesky_solve(self.y, lk)
        v = torch.linalg.solve_triangular(lk, k_ti.T, upper=False)
        var = k_tt - (v * v).sum(0)
        return (mean[:, 0] if self._vector else mean), var

    @torch.no_grad()
    def prior_distance(self) -> list[float]:
        """‖G_ℓ − Γ_ℓ(G_{ℓ−1})‖_F / ‖Γ_ℓ(G_{ℓ−1})‖_F per layer: how far each learned Gram is
        from the prior given the layer below (0 for the NNGP)."""
        out, gamma = [], input_gram(self.x, None, self.w_std, self.b_std)
        for g in self.grams():
            out.append(float(torch.linalg.norm(g - gamma) / torch.linalg.norm(gamma)))
            gamma = relu_gram_map(g, self.w_std, self.b_std)
        return out
