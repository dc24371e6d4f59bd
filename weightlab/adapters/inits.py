"""Adapter init strategies: how ``A`` and ``B`` (and possibly the base weight) start.

Every strategy is an :class:`AdapterInit` with two flags, ``needs_data`` and
``modifies_base``, and three hooks that :func:`weightlab.adapters.add_adapters` calls in
this order, all before any optimizer exists:

1. ``plan(model, plans) -> plans``: once, on the dry-run plans (one
   :class:`~weightlab.adapters.lora.AdapterPlan` per target). A data-driven init (EVA)
   runs its forward passes here and returns plans with changed ranks; the layers are then
   built with those ranks, so A's shape may differ from the requested rank.
2. ``make(base, plan, path)``: builds the adapter for one target. The default builds a
   :class:`~weightlab.adapters.lora.LoRALayer` (activation path) or
   :class:`~weightlab.adapters.lora.LoRADelta` (Transform path); a different delta form
   (LoLDU's ``P L_r diag(z) U_r``, Bone's block delta) returns its own module here.
3. ``__call__(adapter, ctx)``: fills the adapter's parameters. ``adapter.base_matrix()``
   is the frozen weight as a float32 ``(out, in·k)`` matrix; ``adapter.lora_A``
   ``(r, in·k)`` and ``adapter.lora_B`` ``(out, r)``; ``adapter.scaling`` = α/r.
   An init with ``modifies_base = True`` writes the new base with
   ``adapter.set_base_matrix(W)``; :func:`add_adapters` has already kept the original
   weight (and, after the call, the initial A and B) so that ``remove_adapters`` restores
   W₀ bit for bit and PEFT export can write the rank-2r form.

Implemented here: :class:`RandomInit` (PEFT's default and Gaussian), :class:`PiSSA`
(Meng et al. 2024, full or randomized SVD) and :class:`OLoRA` (Büyükakyüz 2024, QR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from weightlab.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from weightlab.adapters.lora import AdapterPlan

__all__ = [
    "AdapterInit",
    "AdapterInitContext",
    "BaseWeightsModifiedWarning",
    "OLoRA",
    "PiSSA",
    "RandomInit",
    "get_adapter_init",
    "randomized_svd",
]


class BaseWeightsModifiedWarning(UserWarning):
    """An adapter init rewrote the base weights (PiSSA, OLoRA, LoLDU)."""


@dataclass
class AdapterInitContext:
    """What an init sees for one target: its module name, its plan, its own generator
    (seeded from ``add_adapters(seed=)`` and the name), and the whole model."""

    name: str
    plan: AdapterPlan
    generator: torch.Generator
    model: nn.Module


class AdapterInit:
    """Base class of adapter init strategies (see the module docstring for the hooks).

    Attributes:
        name: short name (used in messages and PEFT's ``init_lora_weights``).
        needs_data: the init reads data (EVA); ``plan`` runs it.
        modifies_base: the init rewrites the base weight (PiSSA, OLoRA, LoLDU); a
            :class:`BaseWeightsModifiedWarning` is raised and W₀ kept for restoring.
    """

    name: str = "custom"
    needs_data: bool = False
    modifies_base: bool = False

    def plan(self, model: nn.Module, plans: list[AdapterPlan]) -> list[AdapterPlan]:
        """Adjust the plans before any layer is built (default: unchanged)."""
        return plans

    def make(self, base: nn.Module, plan: AdapterPlan, path: str) -> nn.Module | None:
        """Build the adapter for one target; ``None`` means the default LoRA form."""
        return None

    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:  # pragma: no cover
        raise NotImplementedError

    def peft_init(self) -> bool | str:
        """PEFT's ``init_lora_weights`` value for this init."""
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RandomInit(AdapterInit):
    """LoRA's random init (Hu et al. 2021, Sec. 4.1: "random Gaussian initialization for
    A and zero for B"), in PEFT's two forms, with B = 0 so ΔW = BA = 0 at start.

    ``kind="kaiming"``: PEFT's default, ``A ~ U(−1/√fan_in, 1/√fan_in)`` (Kaiming-uniform
    with a = √5, as ``nn.Linear``; gain √(2/(1+5)), bound gain·√(3/fan_in)).
    ``kind="gaussian"``: PEFT's ``"gaussian"``, ``A ~ N(0, (1/r)²)``.
    Draws come from the target's own generator (``add_adapters(seed=)``).
    """

    def __init__(self, kind: str = "kaiming") -> None:
        if kind not in ("kaiming", "gaussian"):
            raise ConfigError(f"unknown random adapter init {kind!r}; use 'kaiming' or 'gaussian'")
        self.kind = kind
        self.name = "random" if kind == "kaiming" else "gaussian"

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        a = adapter.lora_A
        r, fan_in = a.shape
        if self.kind == "kaiming":
            bound = 1.0 / math.sqrt(fan_in)
            draw = torch.rand(a.shape, generator=ctx.generator, dtype=torch.float64) * 2 - 1
            a.copy_(draw * bound)
        else:
            a.copy_(torch.randn(a.shape, generator=ctx.generator, dtype=torch.float64) / r)
        adapter.lora_B.zero_()

    def peft_init(self) -> bool | str:
        return True if self.kind == "kaiming" else "gaussian"

    def __repr__(self) -> str:
        return f"RandomInit({self.kind!r})"


def randomized_svd(
    w: torch.Tensor, q: int, niter: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomized truncated SVD ``w ≈ U diag(S) Vᵀ`` of rank ``q`` (Halko, Martinsson &
    Tropp 2011, Alg. 4.4: randomized subspace iteration with ``niter`` power steps, QR
    after every product), the algorithm of ``torch.svd_lowrank`` with the Gaussian test
    matrix drawn from ``generator`` instead of the global RNG. Returns ``(U, S, V)``."""
    m, n = w.shape
    omega = torch.randn(n, q, generator=generator, dtype=torch.float64).to(w.dtype)
    y, _ = torch.linalg.qr(w @ omega)
    for _ in range(niter):
        z, _ = torch.linalg.qr(w.mT @ y)
        y, _ = torch.linalg.qr(w @ z)
    b = y.mT @ w  # (q, n)
    ub, s, vh = torch.linalg.svd(b, full_matrices=False)
    return y @ ub, s, vh.mT


class PiSSA(AdapterInit):
    """PiSSA (Meng, Wang & Zhang 2024, "PiSSA: Principal Singular Values and Singular
    Vectors Adaptation of Large Language Models", Eq. 2–4): with W = U S Vᵀ,
    ``A = diag(√(S_r/s)) V_rᵀ``, ``B = U_r diag(√(S_r/s))`` (s = α/r, PEFT's convention
    so that s·BA is the principal part), and the base becomes the residual W − s·BA.

    ``niter=None``: full SVD (PEFT's ``"pissa"``); ``niter=N``: randomized rank-r SVD with
    N subspace iterations (PEFT's ``"pissa_niter_N"``; drawn from the target's generator,
    so it equals PEFT's only up to the randomized error, see tests).
    Modifies the base weights (warns; ``remove_adapters`` restores them).
    """

    modifies_base = True

    def __init__(self, niter: int | None = None) -> None:
        if niter is not None and (not isinstance(niter, int) or niter < 0):
            raise ConfigError(f"PiSSA niter must be None or an integer >= 0, got {niter!r}")
        self.niter = niter
        self.name = "pissa" if niter is None else f"pissa_niter_{niter}"

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        w = adapter.base_matrix()
        r, s = adapter.rank, adapter.scaling
        if self.niter is None:
            u, sv, vh = torch.linalg.svd(w, full_matrices=False)
            ur, sr, vhr = u[:, :r], sv[:r] / s, vh[:r]
        else:
            u, sv, v = randomized_svd(w, r, self.niter, ctx.generator)
            ur, sr, vhr = u, sv / s, v.mT
        root = torch.sqrt(sr)
        a = root[:, None] * vhr
        b = ur * root[None, :]
        adapter.lora_A.copy_(a)
        adapter.lora_B.copy_(b)
        adapter.set_base_matrix(w - s * (b @ a))

    def peft_init(self) -> bool | str:
        return self.name

    def __repr__(self) -> str:
        return f"PiSSA(niter={self.niter})"


class OLoRA(AdapterInit):
    """OLoRA (Büyükakyüz 2024, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language
    Models", Sec. 3): QR of the weight, W = QR; ``B = Q[:, :r]``, ``A = R[:r]``, and the
    base becomes W − s·BA (PEFT's ``"olora"``: Q and R unscaled). Modifies the base."""

    name = "olora"
    modifies_base = True

    @torch.no_grad()
    def __call__(self, adapter: Any, ctx: AdapterInitContext) -> None:
        w = adapter.base_matrix()
        r, s = adapter.rank, adapter.scaling
        q, rr = torch.linalg.qr(w)
        b, a = q[:, :r], rr[:r]
        adapter.lora_A.copy_(a)
        adapter.lora_B.copy_(b)
        adapter.set_base_matrix(w - s * (b @ a))

    def peft_init(self) -> bool | str:
        return "olora"


def get_adapter_init(init: str | AdapterInit) -> AdapterInit:
    """``"random"``/``"kaiming"``, ``"gaussian"``, ``"pissa"``, ``"pissa_niter_N"``,
    ``"olora"``, or an :class:`AdapterInit` instance (returned unchanged)."""
    if isinstance(init, AdapterInit):
        return init
    if not isinstance(init, str):
        raise ConfigError(f"adapter init must be a name or an AdapterInit, got {init!r}")
    key = init.lower()
    if key in ("random", "kaiming", "true"):
        return RandomInit("kaiming")
    if key == "gaussian":
        return RandomInit("gaussian")
    if key == "pissa":
        return PiSSA()
    if key.startswith("pissa_niter_") and key[12:].isdigit():
        return PiSSA(int(key[12:]))
    if key == "olora":
        return OLoRA()
    raise ConfigError(
        f"unknown adapter init {init!r}; use random, gaussian, pissa, pissa_niter_N, olora "
        "or an AdapterInit instance (EVA, LoLDU)"
    )
