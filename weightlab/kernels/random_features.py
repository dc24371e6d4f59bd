"""Random-feature networks: a frozen random hidden layer and a closed-form ridge readout.

A depth-2 *random net* (Rahimi & Recht 2008; the "bandlimited random nets" of Li et al.,
"How Powerful are Shallow Neural Networks with Bandlimited Random Weights?", Eq. 1) is

    f(x) = Σ_j β_j · φ(w_jᵀx + b_j) / √N,        (w_j, b_j) drawn once and frozen,

with only the readout β trained, here in closed form by ridge regression:

    β(λ) = argmin ‖Φβ − y‖² + λ‖β‖²,   Φ_ij = φ(w_jᵀx_i + b_j) / √N   (sums, not means).

The 1/√N makes ΦΦᵀ converge to the kernel E_w[φ(wᵀx + b)φ(wᵀx' + b)] as N → ∞ (the
NNGP kernel of one hidden layer), so ridges are comparable across widths; pass
``normalize=False`` for raw features. The solve uses the cheaper of the primal form
``(ΦᵀΦ + λI)β = Φᵀy`` (N ≤ n) and the dual form ``β = Φᵀ(ΦΦᵀ + λI)⁻¹y`` (n < N), both in
float64 by Cholesky (λ > 0, :func:`~weightlab.kernels.regression.cholesky_solve`) or the eigendecomposition's pseudo-inverse (λ = 0: the
minimum-norm least-squares readout).

:meth:`RandomFeatureNet.ridge_path` tunes λ over a grid from *one* eigendecomposition of the
smaller Gram matrix (Simon et al., "More is Better in Modern Machine Learning", Sec. 2: RF
ridge regression at the validation-optimal ridge): with ``G = V diag(s) Vᵀ`` every λ's
predictions are ``A diag(1/(s + λ)) b`` for fixed ``A``, ``b``.

Samplers (the hidden ``W`` of shape ``(N, d)`` and ``b`` of shape ``(N,)``), shared with the
initializer registry (:mod:`weightlab.init.registry`):

- ``"gaussian"``: ``W ~ N(0, std²/d)``, ``b ~ N(0, bias_std²)`` (the NNGP convention
  ``w_std/√fan_in``, ``b_std``; registry ``normal``);
- ``"uniform"``: ``W, b ~ U[−B, B]`` with ``B = bound`` (default 1; registry ``uniform``),
  the bounded domain of bandlimited random nets;
- ``"nonzero_mean"``: ``W ~ N(mean/√d, std²/d)`` (registry ``shifted_normal``),
  ``b ~ N(0, bias_std²)``;
- any registered init scheme's name (its ``weight`` and ``bias``, e.g. ``"he"``, whose
  bias is zero), with ``sampler_params`` as the scheme's parameters;
- a callable ``(shape, generator) -> Tensor`` drawing both ``W`` and ``b``.

``W`` and ``b`` draw from their own generators, ``generator(derive_seed("random_features",
seed, "weight"|"bias"))``; the global RNG is never read.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import weightlab.init.random_feature_samplers  # noqa: F401  (registers "shifted_normal")
from weightlab.errors import ConfigError
from weightlab.init.registry import InitContext, get_initializer
from weightlab.kernels.regression import cholesky_solve
from weightlab.seeding import derive_seed, generator

Sampler = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "erf": torch.erf,
    "sin": torch.sin,
    "cos": torch.cos,
    "sigmoid": torch.sigmoid,
    "gelu": nn.functional.gelu,
    "softplus": nn.functional.softplus,
    "sign": torch.sign,
    "linear": lambda u: u,
}

BUILTIN_SAMPLERS = ("gaussian", "uniform", "nonzero_mean")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return v


def check_ridge(ridge: Any) -> float:
    """``ridge`` as a float; negative, NaN or infinite is a one-line :class:`ConfigError`."""
    try:
        v = float(ridge)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v >= 0):
        raise ConfigError(f"ridge must be a finite number >= 0, got {ridge!r}")
    return v


def _activation(activation: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)} "
            "or pass a callable"
        )
    return ACTIVATIONS[activation]


def _registry_pair(
    name: str, params: dict, in_features: int, width: int, activation: Any
) -> tuple[Sampler, Sampler]:
    init = get_initializer(name, **params)
    if init.needs:
        raise ConfigError(
            f"init scheme {name!r} needs {' and '.join(init.needs)}; a random-feature net "
            "draws data-free: pick a data-free scheme or a built-in sampler"
        )
    act = activation if isinstance(activation, str) else None

    def ctx(what: str, g: torch.Generator) -> InitContext:
        return InitContext(
            name=f"hidden.{what}",
            module=nn.Module(),
            fan_in=in_features,
            fan_out=width,
            index=0,
            depth=1,
            activation=act,
            generator=g,
            dtype=torch.float64,
        )

    return (
        lambda shape, g: init.weight(torch.Size(shape), ctx("weight", g)),
        lambda shape, g: init.bias(torch.Size(shape), ctx("bias", g)),
    )


def _samplers(
    weight_sampler: str | Sampler,
    in_features: int,
    width: int,
    activation: Any,
    bound: float | None,
    mean: float | None,
    std: float | None,
    bias_std: float | None,
    params: dict,
) -> tuple[Sampler, Sampler]:
    """``(weight sampler, bias sampler)``, each ``(shape, generator) -> float64 tensor``."""
    if bound is not None and weight_sampler != "uniform":
        raise ConfigError("bound applies to weight_sampler='uniform' only; drop it or switch")
    if mean is not None and weight_sampler != "nonzero_mean":
        raise ConfigError("mean applies to weight_sampler='nonzero_mean' only; drop it or switch")
    builtin = isinstance(weight_sampler, str) and weight_sampler in BUILTIN_SAMPLERS
    if (std is not None or bias_std is not None) and not (builtin and weight_sampler != "uniform"):
        raise ConfigError(
            "std and bias_std apply to weight_sampler='gaussian' or 'nonzero_mean' only"
        )
    if params and (builtin or callable(weight_sampler)):
        raise ConfigError(
            f"sampler parameters {sorted(params)} apply to registry schemes only; "
            "use bound/mean/std/bias_std for the built-in samplers"
        )
    if callable(weight_sampler):
        return weight_sampler, weight_sampler
    if not isinstance(weight_sampler, str):
        raise ConfigError(f"weight_sampler must be a name or a callable, got {weight_sampler!r}")
    sd = 1.0 if std is None else _positive("std", std)
    bsd = 1.0 if bias_std is None else _positive("bias_std", bias_std)
    scale = sd / math.sqrt(in_features)
    normal = get_initializer("normal", std=bsd)
    if weight_sampler == "gaussian":
        w_init = get_initializer("normal", std=scale)
    elif weight_sampler == "nonzero_mean":
        m = 1.0 if mean is None else float(mean)
        if not math.isfinite(m):
            raise ConfigError(f"mean must be a finite number, got {mean!r}")
        w_init = get_initializer("shifted_normal", mean=m / math.sqrt(in_features), std=scale)
    elif weight_sampler == "uniform":
        b = 1.0 if bound is None else _positive("bound", bound)
        w_init = normal = get_initializer("uniform", bound=b)
    else:
        try:
            return _registry_pair(weight_sampler, params, in_features, width, activation)
        except ConfigError as e:
            if "unknown init scheme" in str(e):
                raise ConfigError(
                    f"unknown weight_sampler {weight_sampler!r}; choose "
                    f"{', '.join(BUILTIN_SAMPLERS)}, a registered init scheme, or a callable"
                ) from None
            raise
    w_pair = _registry_pair_from(w_init, in_features, width)
    b_pair = _registry_pair_from(normal, in_features, width)
    return w_pair, b_pair


def _registry_pair_from(init: Any, in_features: int, width: int) -> Sampler:
    def draw(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        ctx = InitContext(
            name="hidden",
            module=nn.Module(),
            fan_in=in_features,
            fan_out=width,
            index=0,
            depth=1,
            activation=None,
            generator=g,
            dtype=torch.float64,
        )
        return init.weight(torch.Size(shape), ctx)

    return draw


def _spd_solve(a: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``a x = rhs`` for a symmetric positive-definite ``a`` (float64) by Cholesky
    (:func:`weightlab.kernels.regression.cholesky_solve`: no jitter unless the factorization
    fails at exactly ``a``, then its escalation)."""
    return cholesky_solve(a, rhs)


def _inverse_spectrum(s: torch.Tensor, ridge: float) -> torch.Tensor:
    """``1/(s + λ)``, zero where ``s + λ`` is at the eigensolver's noise level
    (``≤ m · eps · max s``): the minimum-norm solution at λ = 0."""
    cutoff = float(s.max().clamp_min(0)) * s.numel() * torch.finfo(s.dtype).eps
    shifted = s.clamp_min(0) + ridge
    return torch.where(shifted > cutoff, 1.0 / shifted.clamp_min(1e-300), torch.zeros_like(s))


def _pinv_solve(a: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    s, v = torch.linalg.eigh(a)
    return v @ (_inverse_spectrum(s, ridge)[:, None] * (v.T @ rhs))


@dataclass(frozen=True)
class RidgePath:
    """MSEs (mean over samples and outputs) along a ridge grid; ``best`` is the index of the
    smallest validation MSE (the first on ties) and ``ridge`` its λ. ``test_mse`` is
    ``None`` when no test set was given. ``coef``: the readout ``(N, O)`` at ``ridge``."""

    ridges: torch.Tensor
    train_mse: torch.Tensor
    val_mse: torch.Tensor
    test_mse: torch.Tensor | None
    best: int
    ridge: float
    coef: torch.Tensor


def _as_targets(y: torch.Tensor, n: int) -> torch.Tensor:
    y = y.to(torch.float64)
    y = y[:, None] if y.dim() == 1 else y
    if y.dim() != 2 or y.shape[0] != n:
        raise ConfigError(f"targets of shape {tuple(y.shape)} do not match {n} inputs")
    return y


def ridge_path_features(
    phi_train: torch.Tensor,
    y_train: torch.Tensor,
    phi_val: torch.Tensor,
    y_val: torch.Tensor,
    ridges: torch.Tensor | list[float],
    phi_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
) -> RidgePath:
    """Ridge regression on given features ``Φ`` (``(n, N)``) over a grid of λ from *one*
    eigendecomposition of the smaller Gram matrix (``ΦᵀΦ``, N × N, when ``N ≤ n``; else
    ``ΦΦᵀ``, n × n), float64. With eigenpairs ``(s, V)`` the predictions on any set are
    ``A diag(1/(s + λ)) b``: primal ``b = VᵀΦᵀy``, ``A = Φ_set V``; dual ``b = Vᵀy``,
    ``A = Φ_set Φᵀ V`` (``A = V diag(s)`` on the training set). Each further λ costs
    ``O(n_set · m · O)``. ``coef`` is the readout ``(N, O)`` at the λ of least validation
    MSE (the first on ties). Eigen-directions with ``s + λ`` at the solver's noise level
    (``≤ m · eps · max s``) are dropped, so λ = 0 gives the minimum-norm solution."""
    lams = _check_ridges(ridges)
    if (phi_test is None) != (y_test is None):
        raise ConfigError("pass both the test features and the test targets, or neither")
    phi = phi_train.to(torch.float64)
    if phi.dim() != 2:
        raise ConfigError(f"features must be (n, N), got shape {tuple(phi.shape)}")
    n, width = phi.shape
    y = _as_targets(y_train, n)
    sets = {"val": (phi_val, y_val)}
    if phi_test is not None:
        sets["test"] = (phi_test, y_test)
    for key, (ps, _) in sets.items():
        if ps.dim() != 2 or ps.shape[1] != width:
            raise ConfigError(
                f"{key} features of shape {tuple(ps.shape)} do not have {width} columns"
            )
    if width > n:  # dual: the n x n Gram and the sets' cross-Grams
        kernels = {k: (ps.to(torch.float64) @ phi.T, ys) for k, (ps, ys) in sets.items()}
        path = ridge_path_kernel(
            phi @ phi.T,
            y,
            *kernels["val"],
            lams,
            *(kernels["test"] if "test" in kernels else (None, None)),
        )
        return dataclasses.replace(path, coef=phi.T @ path.coef)
    s, v = torch.linalg.eigh(phi.T @ phi)
    a_sets = {"train": (phi @ v, y)}
    for key, (ps, ys) in sets.items():
        p = ps.to(torch.float64)
        a_sets[key] = (p @ v, _as_targets(ys, p.shape[0]))
    return _path(s, v, v.T @ (phi.T @ y), a_sets, lams)


def ridge_path_kernel(
    k_train: torch.Tensor,
    y_train: torch.Tensor,
    k_val: torch.Tensor,
    y_val: torch.Tensor,
    ridges: torch.Tensor | list[float],
    k_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
) -> RidgePath:
    """Kernel ridge regression ``K_set (K + λI)⁻¹ y`` over a grid of λ from one
    eigendecomposition ``K = V diag(s) Vᵀ`` (float64): the predictions are
    ``K_set V diag(1/(s + λ)) Vᵀ y`` (``V diag(s/(s + λ)) Vᵀ y`` on the training set).
    ``k_val``/``k_test`` are the cross-kernels ``(n_set, n)``. ``coef`` holds the dual
    coefficients ``(K + λI)⁻¹ y`` ``(n, O)`` at the best λ (``Φᵀ coef`` is the primal
    readout of features with ``K = ΦΦᵀ``). Used by :func:`ridge_path_features` when
    ``N > n``, and directly where kernels are accumulated (nested feature counts)."""
    lams = _check_ridges(ridges)
    if (k_test is None) != (y_test is None):
        raise ConfigError("pass both the test kernel and the test targets, or neither")
    k = k_train.to(torch.float64)
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ConfigError(f"k_train must be square, got shape {tuple(k.shape)}")
    n = k.shape[0]
    y = _as_targets(y_train, n)
    sets = {"val": (k_val, y_val)}
    if k_test is not None:
        sets["test"] = (k_test, y_test)
    s, v = torch.linalg.eigh(k)
    a_sets = {"train": (v * s.clamp_min(0), y)}
    for key, (ks, ys) in sets.items():
        kk = ks.to(torch.float64)
        if kk.dim() != 2 or kk.shape[1] != n:
            raise ConfigError(f"{key} kernel of shape {tuple(kk.shape)} does not have {n} columns")
        a_sets[key] = (kk @ v, _as_targets(ys, kk.shape[0]))
    return _path(s, v, v.T @ y, a_sets, lams)


def _check_ridges(ridges: torch.Tensor | list[float]) -> torch.Tensor:
    lams = torch.as_tensor(ridges, dtype=torch.float64).flatten()
    if lams.numel() == 0:
        raise ConfigError("ridges is empty; pass at least one ridge value")
    for lam in lams.tolist():
        check_ridge(lam)
    return lams


def _path(
    s: torch.Tensor,
    v: torch.Tensor,
    b: torch.Tensor,
    a_sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    lams: torch.Tensor,
) -> RidgePath:
    """MSEs of ``A diag(1/(s + λ)) b`` per set and λ; ``coef`` ``V diag(1/(s + λ*)) b``."""
    s = s.clamp_min(0)
    mse: dict[str, list[float]] = {k: [] for k in a_sets}
    for lam in lams.tolist():
        cb = _inverse_spectrum(s, lam)[:, None] * b
        for key, (a, ys) in a_sets.items():
            mse[key].append(float(((a @ cb - ys) ** 2).mean()))
    val = torch.tensor(mse["val"], dtype=torch.float64)
    finite = torch.where(torch.isfinite(val), val, torch.full_like(val, float("inf")))
    best = int(torch.argmin(finite))
    lam_best = float(lams[best])
    return RidgePath(
        ridges=lams,
        train_mse=torch.tensor(mse["train"], dtype=torch.float64),
        val_mse=val,
        test_mse=torch.tensor(mse["test"], dtype=torch.float64) if "test" in mse else None,
        best=best,
        ridge=lam_best,
        coef=v @ (_inverse_spectrum(s, lam_best)[:, None] * b),
    )


class RandomFeatureNet(nn.Module):
    """``f(x) = φ(x Wᵀ + b) β / √N``: a frozen random hidden layer (buffers ``weight``
    ``(N, d)`` and ``bias`` ``(N,)``, drawn once from the seed) and a linear readout
    (parameter ``readout``, ``(out_features, N)``, zero until fitted). See the module
    docstring for the samplers; ``sampler_params`` go to a registry scheme's constructor.

    ``bias=False`` drops the hidden bias; ``normalize`` scales features by ``1/√N``;
    buffers and features are in ``dtype`` (float64 by default); ridge solves run in
    float64 whatever ``dtype``."""

    def __init__(
        self,
        in_features: int,
        width: int,
        weight_sampler: str | Sampler = "gaussian",
        activation: str | Callable[[torch.Tensor], torch.Tensor] = "relu",
        bias: bool = True,
        seed: int = 0,
        bound: float | None = None,
        mean: float | None = None,
        std: float | None = None,
        bias_std: float | None = None,
        out_features: int = 1,
        normalize: bool = True,
        dtype: torch.dtype = torch.float64,
        **sampler_params: Any,
    ) -> None:
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.width = _positive_int("width", width)
        out_features = _positive_int("out_features", out_features)
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.phi = _activation(activation)
        self.activation = activation if isinstance(activation, str) else "callable"
        self.sampler = weight_sampler if isinstance(weight_sampler, str) else "callable"
        self.seed = int(seed)
        self.normalize = bool(normalize)
        w_draw, b_draw = _samplers(
            weight_sampler,
            self.in_features,
            self.width,
            activation,
            bound,
            mean,
            std,
            bias_std,
            sampler_params,
        )
        w = w_draw((self.width, self.in_features), self._gen("weight"))
        _check_draw(w, (self.width, self.in_features), "weight")
        self.register_buffer("weight", w.to(dtype))
        if bias:
            b = b_draw((self.width,), self._gen("bias"))
            _check_draw(b, (self.width,), "bias")
            self.register_buffer("bias", b.to(dtype))
        else:
            self.bias = None
        self.readout = nn.Parameter(torch.zeros(out_features, self.width, dtype=dtype))

    def _gen(self, what: str) -> torch.Generator:
        return generator(derive_seed("random_features", self.seed, what))

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ConfigError(
                f"input of shape {tuple(x.shape)} does not match the model: expected "
                f"(n, {self.in_features})"
            )
        return x.to(self.weight.dtype)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``Φ = φ(x Wᵀ + b) / √N`` (``/√N`` only with ``normalize``), shape ``(n, N)``."""
        x = self._check_input(x)
        pre = x @ self.weight.T
        if self.bias is not None:
            pre = pre + self.bias
        out = self.phi(pre)
        return out / math.sqrt(self.width) if self.normalize else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Φ(x) βᵀ``, shape ``(n, out_features)``."""
        return self.features(x) @ self.readout.T

    def _set_readout(self, beta: torch.Tensor) -> None:
        """``beta``: ``(N, O)``."""
        self.readout = nn.Parameter(beta.T.to(self.weight.dtype).contiguous())

    @staticmethod
    def _targets(y: torch.Tensor, n: int) -> torch.Tensor:
        return _as_targets(y, n)

    def fit_ridge(self, x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
        """Fit the readout in closed form, ``β = argmin ‖Φβ − y‖² + λ‖β‖²`` (primal solve
        when ``N ≤ n``, dual otherwise; float64; Cholesky for λ > 0, the minimum-norm
        least-squares solution for λ = 0). ``y``: ``(n,)`` or ``(n, O)``; the readout
        becomes ``(O, N)``. Returns the training predictions ``(n, O)``."""
        lam = check_ridge(ridge)
        phi = self.features(x).to(torch.float64)
        y = self._targets(y, phi.shape[0])
        n, width = phi.shape
        solve = _spd_solve if lam > 0 else (lambda a, r: _pinv_solve(a, r, 0.0))
        if width <= n:
            a = phi.T @ phi
            a.diagonal().add_(lam)
            beta = solve(a, phi.T @ y)
        else:
            a = phi @ phi.T
            a.diagonal().add_(lam)
            beta = phi.T @ solve(a, y)
        self._set_readout(beta)
        return phi @ beta

    def ridge_path(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
        ridges: torch.Tensor | list[float],
        x_test: torch.Tensor | None = None,
        y_test: torch.Tensor | None = None,
        fit: bool = True,
    ) -> RidgePath:
        """Ridge over a grid of λ from one eigendecomposition
        (:func:`ridge_path_features` on this net's features); with ``fit`` the readout is
        set to the λ of least validation MSE."""
        if (x_test is None) != (y_test is None):
            raise ConfigError("pass both x_test and y_test, or neither")
        path = ridge_path_features(
            self.features(x_train),
            y_train,
            self.features(x_val),
            y_val,
            ridges,
            None if x_test is None else self.features(x_test),
            y_test,
        )
        if fit:
            self._set_readout(path.coef)
        return path

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, width={self.width}, sampler={self.sampler!r}, "
            f"activation={self.activation!r}, seed={self.seed}"
        )


def _check_draw(t: Any, shape: tuple[int, ...], what: str) -> None:
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ConfigError(f"weight_sampler returned {got} for the {what} of shape {shape}")


__all__ = [
    "ACTIVATIONS",
    "RandomFeatureNet",
    "RidgePath",
    "check_ridge",
    "ridge_path_features",
    "ridge_path_kernel",
]
