"""Random-feature attention: a single multi-head attention layer with M heads whose query-key
matrices are frozen random draws and whose value vectors are the only trainable weights,
fitted in closed form by ridge regression.

Fu, Guo, Bai & Mei (2023), "What can a Single Attention Layer Learn? A Study Through the
Random Features Lens" (arXiv:2307.11353): a sequence of key vectors and a separate query,
"randomly sampled frozen query and key matrices, and trainable value matrices"; the
query-key product is sampled directly (the abstract's "the query-key weight matrix (the
product of the query and key matrix)"), zero-mean Gaussian or Gaussian with a non-zero mean.

Input layout: ``x`` of shape ``(n, N + 1, d)``; ``x[:, 0]`` is the query ``x_0`` and
``x[:, 1:]`` are the N keys ``x_1 … x_N`` (each in R^d). Each token is augmented with a
constant, ``x̃ = [x, 1] ∈ R^{d+1}``. The layer computes::

    f(x) = Σ_{m=1}^{M} ⟨v_m, (1/N) Σ_{i=1}^{N} σ(x̃_0ᵀ W_m x̃_i) · x̃_i⟩ / √M

with ``W_m ∈ R^{(d+1)×(d+1)}`` frozen (the query-key product of head m), ``σ`` the attention
nonlinearity (ReLU by default, the random-feature activation of the paper's theory) and
``v_m ∈ R^{d+1}`` trainable: f is linear in ``V = (v_1 … v_M)``, so the features
``φ(x) = [φ_1(x), …, φ_M(x)] / √M``, ``φ_m(x) = (1/N) Σ_i σ(x̃_0ᵀW_m x̃_i) x̃_i`` make the fit a
ridge regression in ``M·(d+1)`` unknowns. f is invariant to permutations of the keys.

Samplers (``qk_sampler``): ``"gaussian"`` (entries N(0, s²), ``s = qk_std``, default
``1/√(d+1)``), ``"nonzero_mean"`` (the same plus ``qk_mean · I`` on the d×d query-key block, so
every head's score contains ``qk_mean·⟨x_0, x_i⟩``) or a callable ``(M, d + 1, generator) ->``
tensor ``(M, d+1, d+1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator

__all__ = ["QK_SAMPLERS", "RandomFeatureAttention", "ridge_fit", "sample_qk"]

QK_SAMPLERS = ("gaussian", "nonzero_mean")
_ACTS: dict[str, Callable[[Tensor], Tensor]] = {"relu": torch.relu, "exp": torch.exp}


def sample_qk(
    heads: int,
    d: int,
    sampler: str | Callable = "gaussian",
    *,
    qk_mean: float = 1.0,
    qk_std: float | None = None,
    g: torch.Generator,
) -> Tensor:
    """``(heads, d + 1, d + 1)`` float64 query-key matrices (module docstring's samplers)."""
    if callable(sampler):
        w = torch.as_tensor(sampler(heads, d + 1, g), dtype=torch.float64)
        if tuple(w.shape) != (heads, d + 1, d + 1):
            raise ConfigError(
                f"qk_sampler returned shape {tuple(w.shape)}, expected {(heads, d + 1, d + 1)}; "
                "return one (d+1, d+1) matrix per head"
            )
        return w
    if sampler not in QK_SAMPLERS:
        raise ConfigError(
            f"unknown qk_sampler {sampler!r}; choose one of: {', '.join(QK_SAMPLERS)} "
            "or pass a callable (heads, d + 1, generator) -> tensor"
        )
    std = 1.0 / math.sqrt(d + 1) if qk_std is None else float(qk_std)
    if not (math.isfinite(std) and std >= 0):
        raise ConfigError(f"qk_std must be >= 0, got {qk_std}")
    w = torch.randn((heads, d + 1, d + 1), generator=g, dtype=torch.float64) * std
    if sampler == "nonzero_mean":
        w[:, :d, :d] += float(qk_mean) * torch.eye(d, dtype=torch.float64)
    return w


def ridge_fit(features: Tensor, y: Tensor, ridge: float) -> Tensor:
    """The ridge readout ``argmin_V ‖F V − y‖² + λ‖V‖²`` with ``λ = ridge · tr(FFᵀ)/n``
    (relative to the mean squared feature norm), in the dual form ``V = Fᵀ(FFᵀ + λI)^{-1}y``
    when there are more features than rows, else the primal ``(FᵀF + λI)^{-1}Fᵀy``; solved by
    :func:`weightlab.kernels.regression.cholesky_solve` (jitter escalation)."""
    from weightlab.kernels.regression import cholesky_solve

    if not (math.isfinite(float(ridge)) and ridge >= 0):
        raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}; pass e.g. 1e-6")
    f = features.to(torch.float64)
    yy = y.to(torch.float64)
    n, p = f.shape
    lam = float(ridge) * float(f.square().sum()) / max(n, 1)
    if p > n:
        k = f @ f.T
        k.diagonal().add_(lam)
        return f.T @ cholesky_solve(k, yy)
    k = f.T @ f
    k.diagonal().add_(lam)
    return cholesky_solve(k, f.T @ yy)


class RandomFeatureAttention(nn.Module):
    """M attention heads with frozen random query-key matrices and trainable values, fitted by
    ridge regression (Fu et al. 2023; the formula and input layout are in the module docstring).

    Args:
        d: token dimension (query and keys in R^d).
        heads: M > 0.
        qk_sampler: ``"gaussian"``, ``"nonzero_mean"`` or a callable (see :func:`sample_qk`).
        qk_mean: the identity coefficient of ``"nonzero_mean"``.
        qk_std: standard deviation of the Gaussian entries (default ``1/√(d+1)``).
        activation: ``"relu"`` or ``"exp"`` (σ in the formula), or a callable.
        seed: seed of the query-key draws.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        qk_sampler: str | Callable = "gaussian",
        *,
        qk_mean: float = 1.0,
        qk_std: float | None = None,
        activation: str | Callable[[Tensor], Tensor] = "relu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(heads) <= 0:
            raise ConfigError(f"RandomFeatureAttention heads must be > 0, got {heads}")
        if int(d) <= 0:
            raise ConfigError(f"RandomFeatureAttention d must be > 0, got {d}")
        if isinstance(activation, str) and activation not in _ACTS:
            raise ConfigError(
                f"unknown attention activation {activation!r}; choose one of: {', '.join(_ACTS)}"
            )
        self.d, self.heads = int(d), int(heads)
        self.act = _ACTS[activation] if isinstance(activation, str) else activation
        g = generator(derive_seed("rf-attention", seed, "qk"))
        qk = sample_qk(self.heads, self.d, qk_sampler, qk_mean=qk_mean, qk_std=qk_std, g=g)
        self.register_buffer("qk", qk)
        self.v = nn.Parameter(torch.zeros(self.heads * (self.d + 1), dtype=torch.float64))

    @property
    def num_features(self) -> int:
        """Trainable parameters: ``M·(d+1)``."""
        return self.heads * (self.d + 1)

    def features(self, x: Tensor, chunk: int = 512) -> Tensor:
        """φ(x) ``(n, M·(d+1))`` float64 for ``x`` ``(n, N + 1, d)`` (query first)."""
        if x.dim() != 3 or x.shape[-1] != self.d or x.shape[1] < 2:
            raise ConfigError(
                f"RandomFeatureAttention expects inputs (n, N + 1, {self.d}) with the query at "
                f"position 0 and N >= 1 keys, got {tuple(x.shape)}"
            )
        xt = torch.cat(
            [x.to(torch.float64), x.new_ones((*x.shape[:2], 1), dtype=torch.float64)], -1
        )
        out = []
        for s in range(0, xt.shape[0], chunk):
            b = xt[s : s + chunk]
            q, keys = b[:, 0], b[:, 1:]  # (B, d+1), (B, N, d+1)
            qw = torch.einsum("bj,mjk->bmk", q, self.qk)  # x̃_0ᵀ W_m
            scores = torch.einsum("bmk,bnk->bmn", qw, keys)  # (B, M, N)
            phi = torch.einsum("bmn,bnk->bmk", self.act(scores), keys) / keys.shape[1]
            out.append(phi.reshape(b.shape[0], -1))
        return torch.cat(out) / math.sqrt(self.heads)

    def fit_ridge(self, x: Tensor, y: Tensor, ridge: float = 1e-6) -> RandomFeatureAttention:
        """Closed-form values: ridge on the features (:func:`ridge_fit`); ``y`` ``(n,)``."""
        with torch.no_grad():
            self.v.copy_(ridge_fit(self.features(x), y.reshape(len(y)), ridge))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.v
