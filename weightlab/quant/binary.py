"""Binary weights: the mean-field (variational) learner and the metaplasticity baseline.

**Mean-field binary weights** (Li, Huang, Zou & Huang 2022, "Statistical mechanics of
continual learning: variational principle and mean-field potential", row [#46]). Each
weight ``w_i ∈ {±1}`` is a random variable with distribution ``q_i(w_i) ∝ exp(θ_i w_i)``
(a field ``θ_i``), mean ``m_i = tanh θ_i``. Training happens in field space, where
gradients are defined. Under the Gaussian field approximation (central limit over the
``N`` inputs) a unit's preactivation ``h = Σ_i w_i x_i / √N`` is Gaussian with

    μ = Σ_i m_i x_i / √N,        σ² = Σ_i (1 − m_i²) x_i² / N        (+ VAR_FLOOR),

and the perceptron's loss is the negative log of the probability that ``h`` has the
label's sign, ``−log Φ(y·μ/σ)`` (:func:`perceptron_nll`, computed with
``torch.special.log_ndtr``, stable for any ``z``).

Continual learning (the paper's variational principle): the posterior of task ``t − 1``
is the prior of task ``t``, so task ``t`` adds ``β Σ_i KL(q_i ‖ q_i^(t−1))``
(:func:`bernoulli_kl`, :class:`FieldPrior`); ``β`` sets the prior's strength (``β = 1``
with the summed data loss is the exact variational Bayes update). In field form, with
``A(θ) = log 2cosh θ``, ``KL = m (θ − θ') − log cosh θ + log cosh θ'``
(:func:`field_kl`), which equals the Bernoulli formula on the means and stays finite when
``|θ|`` is large.

Stacking (:class:`MeanFieldBinaryMLP`): hidden units are ``s = sign(h)``; their mean under
the Gaussian field is ``E[s] = erf(μ / (√2 σ)) = 2Φ(μ/σ) − 1`` (:func:`sign_expectation`)
and their second moment is ``E[s²] = 1``. The next layer treats its inputs ``s_i`` as
independent of its weights (moment matching, no sampling): ``μ = Σ m_i a_i / √N`` and
``σ² = Σ (E[s_i²] − m_i² a_i²) / N`` with ``a = E[s]``, which reduces to the formula above
for a deterministic input (``E[x²] = x²``).

The deterministic binary network is ``w = sign(m)`` (:func:`binarize`; ``θ = 0`` maps to
+1); :func:`binary_accuracy` scores it.

**Metaplasticity** (Laborieux, Ernoult, Hirtzlin & Querlioz 2021, "Synaptic metaplasticity
in binarized neural networks", Nat. Commun. 12:2549, Eq. 1 and their ``Adam_meta``):
binary weights are ``sign(W_h)`` of hidden weights ``W_h`` (:class:`SignLinear`, gradient
passed straight through the sign, :func:`sign_ste`). Every update that pushes a hidden
weight toward zero (its direction opposes ``sign(W_h)``) is multiplied by
``f_meta = 1 − tanh²(m · W_h)``; updates away from zero are unchanged; ``m = 0`` is the
plain optimizer on sign weights. The condition and factor use ``W_h`` before the update,
exactly as ``Adam_meta`` (there: ``sign(W_h) · exp_avg > 0``, i.e. the step
``−lr · exp_avg / denom`` opposes ``sign(W_h)``); the base optimizer's state (moments) is
updated from the raw gradient, as there. :class:`Metaplastic` wraps any torch optimizer;
:class:`MetaplasticCallback` does the same inside :func:`weightlab.train.train` (whose
optimizer cannot be replaced), and both call one function, :func:`metaplastic_update_`, so
they give identical weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from weightlab.errors import ConfigError

VAR_FLOOR = 1e-6
"""Floor on the Gaussian field variance σ²: when every weight of a unit is (numerically)
frozen, ``σ² = 0`` would make ``μ/σ`` infinite; with the floor ``|μ/σ| ≤ 10³ |μ|``."""

__all__ = [
    "VAR_FLOOR",
    "FieldPrior",
    "MeanFieldBinaryLinear",
    "MeanFieldBinaryMLP",
    "Metaplastic",
    "MetaplasticCallback",
    "SignLinear",
    "bernoulli_kl",
    "binarize",
    "binary_accuracy",
    "field_kl",
    "gaussian_field",
    "gaussian_log_probs",
    "meta_factor",
    "metaplastic_update_",
    "perceptron_nll",
    "pm_labels",
    "sign_expectation",
    "sign_ste",
]


# -- the Gaussian field approximation --------------------------------------------------
def gaussian_field(
    x: torch.Tensor, m: torch.Tensor, x_sq: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(μ, σ)`` of ``h = Σ_i w_i x_i / √N`` for independent ``w_i ∈ {±1}`` of means ``m``.

    Args:
        x: inputs (or their means) ``(..., N)``.
        m: weight means ``(out, N)``.
        x_sq: the inputs' second moments ``E[x²]`` (``(..., N)``); ``None`` means
            deterministic inputs (``x²``).

    Returns:
        ``μ = x mᵀ / √N`` and ``σ = √(max(VAR_FLOOR, (E[x²] Σ 1 − x² (m²)ᵀ) / N))``, both
        ``(..., out)``.
    """
    n = x.shape[-1]
    mu = x @ m.T / math.sqrt(n)
    if x_sq is None:
        var = x.square() @ (1 - m.square()).T / n
    else:
        var = (x_sq.sum(-1, keepdim=True) - x.square() @ m.square().T) / n
    return mu, var.clamp_min(VAR_FLOOR).sqrt()


def perceptron_nll(mu: torch.Tensor, sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``−log Φ(y μ / σ)`` per entry (``y`` in ±1, broadcast against ``μ``): the negative
    log-probability that the Gaussian preactivation has the label's sign. Uses
    ``torch.special.log_ndtr`` (finite value and gradient for any argument)."""
    return -torch.special.log_ndtr(y * mu / sigma)


def gaussian_log_probs(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Two-class log-probabilities ``[log Φ(−μ/σ), log Φ(μ/σ)]`` on a new last dim (class 0
    is ``y = −1``, class 1 is ``y = +1``). They are normalized, so cross-entropy on them is
    exactly :func:`perceptron_nll` and their argmax is ``sign(μ)``: a model returning them
    trains in :func:`weightlab.train.train` with the default loss."""
    z = mu / sigma
    return torch.stack((torch.special.log_ndtr(-z), torch.special.log_ndtr(z)), dim=-1)


def sign_expectation(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``E[sign(h)] = erf(μ / (√2 σ))`` for ``h ~ N(μ, σ²)``."""
    return torch.erf(mu / (math.sqrt(2.0) * sigma))


def pm_labels(y: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class labels 0/1 as −1/+1 floats."""
    return (2 * y - 1).to(dtype)


class MeanFieldBinaryLinear(nn.Module):
    """A layer of ``out_features`` units with binary weights in field space.

    Parameter ``theta`` ``(out, in)`` (fields; ``m = tanh θ``), initialized to 0 (every
    weight ±1 with probability ½) or, with ``init_std > 0``, to ``N(0, init_std²)`` drawn
    from ``generator`` (needed to break the symmetry of hidden units). ``bias=True`` adds a
    real, deterministic bias to ``μ``. ``forward(x, x_sq=None)`` returns ``(μ, σ)``
    (:func:`gaussian_field`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        *,
        init_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ConfigError(
                f"MeanFieldBinaryLinear needs positive sizes, got {in_features} -> {out_features}"
            )
        if init_std < 0:
            raise ConfigError(f"init_std must be >= 0, got {init_std}")
        self.in_features, self.out_features = in_features, out_features
        theta = torch.zeros(out_features, in_features)
        if init_std > 0:
            if generator is None:
                raise ConfigError("init_std > 0 needs a generator (weightlab.seeding.generator)")
            theta = init_std * torch.randn(out_features, in_features, generator=generator)
        self.theta = nn.Parameter(theta)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def m(self) -> torch.Tensor:
        """Weight means ``tanh θ``."""
        return torch.tanh(self.theta)

    def forward(
        self, x: torch.Tensor, x_sq: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mu, sigma = gaussian_field(x, self.m, x_sq)
        if self.bias is not None:
            mu = mu + self.bias
        return mu, sigma

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MeanFieldBinaryMLP(nn.Module):
    """Mean-field binary network ``sizes[0] → … → sizes[-1]`` with sign hidden units,
    propagated sample-free (module docstring). ``sizes[-1]`` must be 1: the output is the
    two-class log-probabilities (:func:`gaussian_log_probs`, ``(B, 2)``), so the model
    trains in the loop with the default cross-entropy (= ``−log Φ(yμ/σ)``). Hidden fields
    start at ``N(0, init_std²)`` from ``generator``; the output layer at 0. ``bias=True``
    gives the hidden units real biases (without them the network is an odd function of
    ``x``, ``f(−x) = −f(x)``, and cannot fit even targets such as XOR clusters)."""

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        init_std: float = 0.5,
        generator: torch.Generator,
        bias: bool = False,
    ) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or sizes[-1] != 1:
            raise ConfigError(
                f"MeanFieldBinaryMLP sizes must end in 1 output unit (binary labels), got {sizes}"
            )
        self.layers = nn.ModuleList(
            MeanFieldBinaryLinear(
                a,
                b,
                bias and i < len(sizes) - 2,
                init_std=init_std if i < len(sizes) - 2 else 0.0,
                generator=generator,
            )
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
        )

    def field(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(μ, σ)`` of the output unit, ``(B, 1)`` each."""
        a, a_sq = x, None
        for layer in self.layers[:-1]:
            mu, sigma = layer(a, a_sq)
            a = sign_expectation(mu, sigma)
            a_sq = torch.ones_like(a)
        return self.layers[-1](a, a_sq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, sigma = self.field(x)
        return gaussian_log_probs(mu[..., 0], sigma[..., 0])


# -- the deterministic binary network ----------------------------------------------------
def _sign(t: torch.Tensor) -> torch.Tensor:
    """±1 with 0 mapped to +1."""
    return torch.where(t >= 0, 1.0, -1.0).to(t.dtype)


@torch.no_grad()
def binarize(layer: MeanFieldBinaryLinear | SignLinear) -> torch.Tensor:
    """The deterministic binary weights ``sign(m)`` of a mean-field layer (``sign(W_h)`` of a
    :class:`SignLinear`), ``(out, in)`` in ±1 (ties to +1)."""
    if isinstance(layer, MeanFieldBinaryLinear):
        return _sign(layer.theta.detach())
    if isinstance(layer, SignLinear):
        return _sign(layer.weight.detach())
    raise ConfigError(
        f"binarize needs a MeanFieldBinaryLinear or SignLinear, got {type(layer).__name__}"
    )


@torch.no_grad()
def binary_accuracy(
    model: MeanFieldBinaryLinear | MeanFieldBinaryMLP | SignLinear,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """Accuracy of the deterministic binary network (weights :func:`binarize`, sign hidden
    units) on inputs ``x`` ``(n, N)`` and labels ``y`` (0/1 or ±1) ``(n,)``. A single layer
    with ``out`` units is ``out`` perceptrons: returns ``(out,)`` accuracies; an MLP
    returns a 0-d tensor."""
    yp = y.to(x.dtype) if y.is_floating_point() else pm_labels(y, x.dtype)
    if isinstance(model, MeanFieldBinaryMLP):
        a = x
        for layer in model.layers:
            h = a @ binarize(layer).T / math.sqrt(layer.in_features)
            if layer.bias is not None:
                h = h + layer.bias
            a = _sign(h)
        return (a[:, 0] == yp).to(x.dtype).mean()
    h = x @ binarize(model).T
    return (_sign(h) == yp[:, None]).to(x.dtype).mean(0)


# -- the continual-learning prior ----------------------------------------------------
def bernoulli_kl(m: torch.Tensor, m_prev: torch.Tensor) -> torch.Tensor:
    """``KL(q ‖ q')`` elementwise between distributions on ``{±1}`` with means ``m`` and
    ``m_prev``: with ``p = (1 + m)/2``, ``p' = (1 + m')/2``,
    ``p log(p/p') + (1 − p) log((1 − p)/(1 − p'))`` (``0 log 0 = 0``). Reference formula;
    training uses :func:`field_kl`."""
    p, pp = (1 + m) / 2, (1 + m_prev) / 2
    return (
        torch.xlogy(p, p)
        - torch.xlogy(p, pp)
        + torch.xlogy(1 - p, 1 - p)
        - torch.xlogy(1 - p, 1 - pp)
    )


def _log_cosh(t: torch.Tensor) -> torch.Tensor:
    a = t.abs()
    return a + F.softplus(-2 * a) - math.log(2.0)


def field_kl(theta: torch.Tensor, theta_prev: torch.Tensor) -> torch.Tensor:
    """:func:`bernoulli_kl` of ``tanh θ`` and ``tanh θ'`` in field form,
    ``tanh θ · (θ − θ') − log cosh θ + log cosh θ'``, elementwise (stable for large |θ|)."""
    return torch.tanh(theta) * (theta - theta_prev) - _log_cosh(theta) + _log_cosh(theta_prev)


class FieldPrior:
    """The previous task's posterior as a prior: a copy of every
    :class:`MeanFieldBinaryLinear`'s fields in ``model``, taken at construction.

    ``kl(model)`` returns ``Σ_i KL(q_i ‖ q_i^prev)`` over all those layers; ``per_unit``
    gives one sum per output unit of each layer (concatenated), so units that are separate
    perceptrons (arms) can carry their own ``β``. :meth:`loss` builds the per-example
    training loss for :func:`weightlab.train.train`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.names = [
            n for n, mod in model.named_modules() if isinstance(mod, MeanFieldBinaryLinear)
        ]
        if not self.names:
            raise ConfigError("FieldPrior needs a model with MeanFieldBinaryLinear layers")
        mods = dict(model.named_modules())
        self.theta_prev = {n: mods[n].theta.detach().clone() for n in self.names}

    def kl(self, model: nn.Module, per_unit: bool = False) -> torch.Tensor:
        mods = dict(model.named_modules())
        parts = [field_kl(mods[n].theta, self.theta_prev[n]).sum(-1) for n in self.names]
        per = torch.cat(parts)
        return per if per_unit else per.sum()

    def loss(
        self,
        model: nn.Module,
        data_loss,
        beta: float | torch.Tensor,
        n_train: int,
    ):
        """Per-example loss ``data_loss(pred, y) + β · KL / n_train``: its batch mean is the
        mean data loss plus ``β Σ KL / P``, i.e. (``×P``) the summed data loss plus
        ``β Σ_i KL(q_i ‖ q_i^prev)``. ``β``: a number, or one value per output unit
        (``per_unit``). ``data_loss`` returns ``(B,)``."""
        per_unit = isinstance(beta, torch.Tensor) and beta.ndim > 0

        def fn(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            kl = self.kl(model, per_unit=per_unit)
            reg = (beta * kl).sum() if per_unit else beta * kl
            return data_loss(pred, y) + reg / n_train

        return fn


# -- metaplasticity ------------------------------------------------------------------
class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return _sign(w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return grad


def sign_ste(w: torch.Tensor) -> torch.Tensor:
    """``sign(w)`` (exact ±1, ties to +1) with the identity straight-through gradient
    (BinaryConnect; Laborieux et al. 2021 pass it unclipped)."""
    return _SignSTE.apply(w)


class SignLinear(nn.Module):
    """Binary weights ``sign(W_h)`` of hidden weights ``weight`` ``(out, in)``:
    ``forward(x) = x sign(W_h)ᵀ / √in`` (straight-through gradient to ``W_h``). Hidden
    weights start at ``N(0, init_std²)`` from ``generator``."""

    def __init__(
        self, in_features: int, out_features: int, *, init_std: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0 or init_std <= 0:
            raise ConfigError("SignLinear needs positive sizes and init_std > 0")
        self.in_features, self.out_features = in_features, out_features
        w = init_std * torch.randn(out_features, in_features, generator=generator)
        self.weight = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ sign_ste(self.weight).T / math.sqrt(self.in_features)


def meta_factor(w: torch.Tensor, m: float | torch.Tensor) -> torch.Tensor:
    """``f_meta = 1 − tanh²(m · W_h)`` (Laborieux et al. 2021, Eq. 1)."""
    return 1 - torch.tanh(m * w).square()


@torch.no_grad()
def metaplastic_update_(
    p: torch.Tensor, before: torch.Tensor, m: float | torch.Tensor
) -> torch.Tensor:
    """Turn the plain update ``p − before`` into the metaplastic one, in place: entries
    whose update opposes ``sign(before)`` (toward zero or across it) become
    ``before + f_meta(before) · (p − before)``; the rest stay. Returns ``p``."""
    delta = p - before
    shrink = delta * torch.sign(before) < 0
    p.copy_(torch.where(shrink, before + meta_factor(before, m) * delta, p))
    return p


def _meta_params(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Laborieux et al.'s rule applies to weight matrices, not to 1-d biases or norms."""
    return [p for p in params if p.ndim >= 2]


class Metaplastic(torch.optim.Optimizer):
    """Metaplasticity around any torch optimizer (``Adam`` gives Laborieux et al.'s
    ``Adam_meta``, ``SGD`` without momentum their SGD rule): ``step()`` lets ``base`` take
    its step, then :func:`metaplastic_update_` rescales, with ``m`` (a number, or a tensor
    broadcastable to each weight, e.g. ``(out, 1)`` for one ``m`` per unit), the update of
    every parameter of ``params`` (default: every parameter of ``base`` with ``ndim ≥ 2``).
    ``param_groups`` and ``state`` are ``base``'s own (a schedule that sets ``lr`` on them
    reaches ``base``)."""

    def __init__(
        self,
        base: torch.optim.Optimizer,
        m: float | torch.Tensor,
        params: Iterable[torch.Tensor] | None = None,
    ) -> None:
        if isinstance(m, int | float) and (not math.isfinite(m) or m < 0):
            raise ConfigError(f"metaplasticity m must be >= 0, got {m}")
        self.base, self.m = base, m
        every = [p for g in base.param_groups for p in g["params"]]
        self.meta_params = _meta_params(every) if params is None else list(params)
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.state = base.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base.load_state_dict(state_dict)

    def step(self, closure=None):
        before = [p.detach().clone() for p in self.meta_params]
        loss = self.base.step(closure)
        for p, b in zip(self.meta_params, before, strict=True):
            metaplastic_update_(p.data, b, self.m)
        return loss

    def __repr__(self) -> str:
        return f"Metaplastic(m={self.m}, base={self.base.__class__.__name__})"


class MetaplasticCallback:
    """Metaplasticity inside :func:`weightlab.train.train`: a step callback that rescales
    each update of ``model``'s weight matrices (``ndim ≥ 2``, or ``names``) exactly as
    :class:`Metaplastic` does around the loop's optimizer (same function, same weights).

    It keeps the weights after every update as the next update's ``before``; the first
    ``before`` is copied at construction, so build it right before ``train`` (and use one
    callback per ``train`` call).
    """

    def __init__(
        self, model: nn.Module, m: float | torch.Tensor, names: Sequence[str] | None = None
    ) -> None:
        if isinstance(m, int | float) and (not math.isfinite(m) or m < 0):
            raise ConfigError(f"metaplasticity m must be >= 0, got {m}")
        named = dict(model.named_parameters())
        if names is None:
            names = [n for n, p in named.items() if p.ndim >= 2 and p.requires_grad]
        missing = [n for n in names if n not in named]
        if missing:
            raise ConfigError(f"MetaplasticCallback: the model has no parameter(s) {missing}")
        self.m = m
        self.params = [named[n] for n in names]
        self.before = [p.detach().clone() for p in self.params]

    def __call__(self, model: nn.Module, ctx) -> None:  # noqa: ARG002
        for p, b in zip(self.params, self.before, strict=True):
            metaplastic_update_(p.data, b, self.m)
            b.copy_(p.detach())
