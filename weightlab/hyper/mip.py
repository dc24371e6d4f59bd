"""Magnitude Invariant Parametrizations (MIP) for hypernetworks.

Ortiz, Guttag & Dalca (2023), "Magnitude Invariant Parametrizations Improve Hypernetwork
Learning": a hypernetwork ``h`` mapping a hyperparameter ``γ ∈ [0, 1]^k`` to the weights
of a target network shows "a magnitude proportionality between the inputs and outputs of
the hypernetwork" (with raw ``γ``, zero biases and ReLU, ``h(cγ) = c·h(γ)``), which the
paper links to unstable training. MIP, as in the authors' HyperLight library, changes two
things:

- **input encoding** of constant norm: ``γ ↦ [cos(πγ/2), sin(πγ/2)]`` (each of the ``k``
  entries gives two, ``‖·‖² = k`` for every ``γ``);
- **additive output**: ``θ(γ) = θ₀ + head(h(γ))``, ``θ₀`` the target's own initial weights
  (biases 0) stored as the output layer's bias and learned with it.

Initialization (HyperLight's ``FullyConnectedNet`` and ``init_independent_weights``):
Kaiming-normal, fan-out weights (``std = gain/√fan_out``, the activation's gain for hidden
layers, gain 1 for the head), zero hidden biases. The default control
(:func:`default_hypernet`) takes raw ``γ``, has a zero output bias and no ``θ₀``.

:class:`MIPHypernet` produces one flat row per condition, cut into the target's parameter
shapes by :func:`weightlab.hyper.generated.split_flat`; :class:`HyperTarget` applies them
with ``torch.func.functional_call`` and trains in :func:`weightlab.train.train` with one
``γ`` per step (:class:`GammaStream`, a step callback) and the γ-dependent loss
:meth:`HyperTarget.loss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.hyper.generated import parameter_shapes, split_flat
from weightlab.seeding import generator as seeded_generator
from weightlab.seeding import seeded_global_cpu_rng
from weightlab.train.callbacks import StepContext

__all__ = [
    "ENCODINGS",
    "GammaStream",
    "HyperTarget",
    "MIPHypernet",
    "default_hypernet",
    "encode_gamma",
    "magnitude_ratio",
    "mixed_loss",
    "mip_hypernet",
]

ENCODINGS = ("cos|sin", "raw")
HIDDEN_ACTIVATIONS = {"relu": (torch.relu, math.sqrt(2.0)), "tanh": (torch.tanh, 5.0 / 3.0)}


def encode_gamma(gamma: torch.Tensor, encoding: str = "cos|sin") -> torch.Tensor:
    """``(..., k)`` → ``(..., 2k)``: ``[cos(πγ/2), sin(πγ/2)]`` (MIP, norm ``√k`` for every
    ``γ``), or ``γ`` itself (``"raw"``, the default hypernetwork's input)."""
    if encoding == "raw":
        return gamma
    if encoding != "cos|sin":
        raise ConfigError(f"unknown γ encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    z = 0.5 * math.pi * gamma
    return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)


def _kaiming_fan_out(linear: nn.Linear, gain: float, g: torch.Generator) -> None:
    """HyperLight's ``kaiming_normal_fanout``: ``W ~ N(0, (gain/√fan_out)²)``, bias 0."""
    fan_out = linear.weight.shape[0]
    w = torch.randn(linear.weight.shape, generator=g, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(w * (gain / math.sqrt(fan_out)))
        if linear.bias is not None:
            linear.bias.zero_()


class MIPHypernet(nn.Module):
    """A fully connected hypernetwork ``γ ∈ [0,1]^k → θ``, flat, in the target's
    ``named_parameters`` order.

    Args:
        target: the network whose parameters are produced (its shapes and, with
            ``residual=True``, its current weights as ``θ₀``; its biases enter as 0).
        hidden: hidden widths of the hypernetwork.
        activation: ``"relu"`` or ``"tanh"`` between hidden layers.
        k: number of hyperparameters in ``γ``.
        encoding: ``"cos|sin"`` (MIP) or ``"raw"``.
        residual: ``θ(γ) = θ₀ + head(h)`` with ``θ₀`` the head's bias (MIP); else the head's
            bias is 0 (it still trains).
        seed: seeds every weight (one generator, layer by layer).
    """

    def __init__(
        self,
        target: nn.Module,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        k: int = 1,
        encoding: str = "cos|sin",
        residual: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if activation not in HIDDEN_ACTIVATIONS:
            raise ConfigError(
                f"unknown hypernetwork activation {activation!r}; choose relu or tanh"
            )
        if encoding not in ENCODINGS:
            raise ConfigError(
                f"unknown γ encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}"
            )
        if k < 1 or not hidden or any(int(w) < 1 for w in hidden):
            raise ConfigError(f"need k >= 1 and positive hidden widths, got k={k}, {hidden}")
        self.shapes = parameter_shapes(target)
        self.k, self.encoding, self.activation = int(k), encoding, activation
        self.residual = bool(residual)
        total = sum(math.prod(s) for s in self.shapes.values())
        widths = [self.k * (2 if encoding == "cos|sin" else 1), *map(int, hidden)]
        with seeded_global_cpu_rng(seed):  # the constructors' draws, overwritten below
            self.layers = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
            self.head = nn.Linear(widths[-1], total)
        g = seeded_generator(seed)
        gain = HIDDEN_ACTIVATIONS[activation][1]
        for layer in self.layers:
            _kaiming_fan_out(layer, gain, g)
        _kaiming_fan_out(self.head, 1.0, g)
        if self.residual:
            with torch.no_grad():
                self.head.bias.copy_(self.base_from(target))

    def base_from(self, target: nn.Module) -> torch.Tensor:
        """``θ₀``, flat: the target's weights with its biases set to 0."""
        own = dict(target.named_parameters())
        parts = []
        for name in self.shapes:
            p = own[name].detach()
            parts.append(torch.zeros_like(p) if name.endswith("bias") else p)
        return torch.cat([p.reshape(-1) for p in parts]).to(self.head.bias.dtype)

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        """``(N, k)`` → ``(N, P)`` (or ``(k,)`` → ``(P,)``)."""
        act = HIDDEN_ACTIVATIONS[self.activation][0]
        h = encode_gamma(gamma, self.encoding)
        for layer in self.layers:
            h = act(layer(h))
        return self.head(h)

    def params(self, gamma: torch.Tensor) -> dict[str, torch.Tensor]:
        """``θ(γ)`` as ``{name: tensor}`` (``gamma`` of shape ``(k,)``)."""
        return split_flat(self(gamma), self.shapes)


def mip_hypernet(target: nn.Module, **kwargs) -> MIPHypernet:
    """The MIP hypernetwork: cos|sin input, ``θ₀`` + head."""
    return MIPHypernet(target, encoding="cos|sin", residual=True, **kwargs)


def default_hypernet(target: nn.Module, **kwargs) -> MIPHypernet:
    """The default control: raw ``γ``, zero output bias, no ``θ₀``."""
    return MIPHypernet(target, encoding="raw", residual=False, **kwargs)


@torch.no_grad()
def magnitude_ratio(hnet: MIPHypernet, hi: float = 1.0, lo: float = 0.1) -> float:
    """``‖θ(hi)‖ / ‖θ(lo)‖`` with every entry of ``γ`` set alike: exactly ``hi/lo`` for a
    raw-input, zero-bias ReLU hypernetwork (positive homogeneity), about 1 under MIP."""
    dtype = hnet.head.weight.dtype
    a = hnet(torch.full((hnet.k,), hi, dtype=dtype))
    b = hnet(torch.full((hnet.k,), lo, dtype=dtype))
    return float(a.norm() / b.norm())


class HyperTarget(nn.Module):
    """The target network ``f(x; θ(γ))`` for the current ``γ`` (a buffer), applied with
    ``torch.func.functional_call``; the target's own parameters are frozen (only the
    hypernetwork trains).

    With ``permutation`` (a class permutation ``π``), :meth:`loss` is the paper's mixed
    objective ``L_γ = (1 − γ)·CE(f, y) + γ·CE(f, π(y))`` per example, at the current ``γ``
    (``k = 1``).
    """

    def __init__(
        self,
        hypernet: MIPHypernet,
        target: nn.Module,
        permutation: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.hypernet = hypernet
        self.target = target
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.register_buffer("gamma", torch.zeros(hypernet.k))
        if permutation is not None:
            self.register_buffer("permutation", permutation.detach().clone().long())
        else:
            self.permutation = None

    def set_gamma(self, gamma: float | torch.Tensor) -> None:
        g = torch.as_tensor(gamma, dtype=self.gamma.dtype, device=self.gamma.device)
        if g.numel() not in (1, self.gamma.numel()) or (g < 0).any() or (g > 1).any():
            raise ConfigError(f"γ must lie in [0, 1]^{self.gamma.numel()}, got {g.tolist()}")
        self.gamma.copy_(g.expand_as(self.gamma))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.target, self.hypernet.params(self.gamma), (x,))

    def loss(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-example ``(1 − γ)·CE(pred, y) + γ·CE(pred, π(y))``."""
        if self.permutation is None:
            raise ConfigError("HyperTarget.loss needs a class permutation; pass permutation=")
        return mixed_loss(pred, y, self.gamma[0], self.permutation)


def mixed_loss(
    pred: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor, permutation: torch.Tensor
) -> torch.Tensor:
    """``(1 − γ)·CE(pred, y) + γ·CE(pred, π(y))`` per example: ``pred (..., C)``, ``y (...)``,
    ``gamma`` broadcastable to ``y``."""
    c = pred.shape[-1]
    ce = F.cross_entropy(pred.reshape(-1, c), y.reshape(-1), reduction="none").view(y.shape)
    ce_perm = F.cross_entropy(
        pred.reshape(-1, c), permutation[y].reshape(-1), reduction="none"
    ).view(y.shape)
    return (1 - gamma) * ce + gamma * ce_perm


class GammaStream:
    """A step callback feeding one ``γ`` per step: ``gammas[0]`` is set at construction
    (step 1 trains on it), and after update ``t`` the model gets ``gammas[t]``."""

    def __init__(self, model: HyperTarget, gammas: torch.Tensor) -> None:
        self.gammas = gammas
        model.set_gamma(gammas[0])

    def __call__(self, model: nn.Module, ctx: StepContext) -> None:
        if ctx.step < len(self.gammas):
            model.set_gamma(self.gammas[ctx.step])
