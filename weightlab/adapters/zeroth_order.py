"""Seeded zeroth-order tuning: SPSA / MeZO steps with shared randomness [#52].

"Just One Byte (per gradient)" (Zelikman et al. 2023) [#52]: with a shared random seed per
step, every worker regenerates the perturbations ``z ~ N(0, I)`` and needs to send only
the scalar projected gradient; "As machines only exchange single-byte projected gradients,
this is highly communication efficient". One step (MeZO, Malladi et al. 2023, Algorithm 1;
SPSA, Spall 1992):

    g_w = (L_w(θ + εz_w) − L_w(θ − εz_w)) / (2ε)   on worker w's own minibatch
    θ  ← θ − (lr / W) · Σ_w dequant(quant(g_w)) · z_w   every worker receives every message

Worker w's z_w comes from a seed of (run seed, step, w), as [#52] says: "By using a
(machine, sample) identifier as the random seed, each model can regenerate one another's
perturbations"; every replica regenerates the other workers' z_w to apply their scalars.
``directions="shared"`` instead gives all workers one z per step (then
``θ ← θ − lr · mean_w ĝ_w · z``: W minibatch estimates of one directional derivative).

``z`` is drawn parameter by parameter (in ``named_parameters`` order) from
``weightlab.seeding.generator(step_seed)``, never from a global RNG, and never sent or
stored across steps: a worker regenerates its own z once per step (kept for that step's
+εz, −2εz perturbations and its update; :func:`projected_gradient` without ``z`` is
MeZO's memory-free form that regenerates it at each use) and the other workers' z from
their seeds. After the two probes θ is restored exactly from a copy (MeZO's in-place
``+εz`` back step leaves z-dependent rounding, which would make the replicas drift). The 1-byte
form is the stated quantizer :class:`OneByteQuantizer`: ``q = clip(round(g / scale),
−127, 127)`` as int8, decoded as ``q·scale`` (fixed scale, default 0.05). The fp32 form
sends the scalar as 4 little-endian bytes.

Why this is not :func:`weightlab.train.train`: the one loop is backprop (loss.backward then
an optimizer step), and a step callback runs *after* that update, so it cannot replace it.
A zeroth-order step needs two forward passes at perturbed weights per worker, an exchange of
messages between replicas, and an update along a regenerated direction; no gradient or
optimizer exists. :func:`run_spsa` is that small procedure; it reuses weightlab's task
splits (:class:`~weightlab.data.task.TaskData`), batch orders
(:func:`weightlab.train.order.batch_indices`), losses and metrics
(:func:`weightlab.train.loop.evaluate_split`).
"""

from __future__ import annotations

import copy
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.seeding import derive_seed, generator
from weightlab.train.loop import evaluate_split
from weightlab.train.losses import resolve_loss
from weightlab.train.order import batch_indices

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
QUANTIZERS = ("fp32", "1byte")
DIRECTIONS = ("per_worker", "shared")


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for _, p in model.named_parameters() if p.requires_grad]


@torch.no_grad()
def perturb(params: Sequence[torch.Tensor], seed: int, scale: float) -> None:
    """``θ ← θ + scale · z`` in place, ``z`` regenerated from ``generator(seed)``: one
    ``randn`` per tensor, in order, on the CPU (moved to each tensor's device and dtype)."""
    g = generator(seed)
    for p in params:
        z = torch.randn(p.shape, generator=g, dtype=torch.float32)
        p.add_(z.to(device=p.device, dtype=p.dtype), alpha=scale)


def direction(params: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The perturbation ``z`` of :func:`perturb` as tensors (same draws, same order)."""
    g = generator(seed)
    return [
        torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.device, p.dtype) for p in params
    ]


@torch.no_grad()
def _add(params: Sequence[torch.Tensor], z: Sequence[torch.Tensor], scale: float) -> None:
    for p, zi in zip(params, z, strict=True):
        p.add_(zi, alpha=scale)


@torch.no_grad()
def projected_gradient(
    model: nn.Module,
    loss: Callable[[nn.Module], torch.Tensor],
    seed: int,
    eps: float,
    z: Sequence[torch.Tensor] | None = None,
    exact: bool = True,
) -> tuple[float, float]:
    """SPSA's projected gradient ``(L(θ+εz) − L(θ−εz)) / 2ε`` along ``z`` from ``seed``
    (MeZO Algorithm 1: perturb in place, +εz, −2εz, then back). Returns
    ``(g, (L₊ + L₋) / 2)``. ``z=None`` regenerates z from the seed at each perturbation
    (MeZO's memory-free form); ``z = direction(params, seed)`` reuses one regeneration.

    ``exact=True`` restores θ bit for bit from a copy (one parameter-sized buffer):
    MeZO's ``+εz`` back step leaves float rounding that depends on z, so replicas probing
    different directions would drift apart. ``exact=False`` is MeZO's in-place restore."""
    params = _params(model)
    saved = [p.detach().clone() for p in params] if exact else None
    step = (lambda c: perturb(params, seed, c)) if z is None else (lambda c: _add(params, z, c))
    step(eps)
    lp = float(loss(model))
    step(-2.0 * eps)
    lm = float(loss(model))
    if saved is None:
        step(eps)
    else:
        for p, v in zip(params, saved, strict=True):
            p.copy_(v)
    return (lp - lm) / (2.0 * eps), 0.5 * (lp + lm)


@torch.no_grad()
def apply_update(
    model: nn.Module, seed: int, lr: float, grad: float, z: Sequence[torch.Tensor] | None = None
) -> None:
    """``θ ← θ − lr · grad · z``, ``z`` regenerated from ``seed`` (or the given
    ``direction(params, seed)``)."""
    if z is None:
        perturb(_params(model), seed, -lr * grad)
    else:
        _add(_params(model), z, -lr * grad)


@dataclass(frozen=True)
class OneByteQuantizer:
    """[#52]'s 1-byte projected gradient: ``q = clip(round(g / scale), −127, 127)`` as one
    signed byte; ``decode(q) = q · scale``. Values beyond ±127·scale are clipped."""

    scale: float = 0.05

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ConfigError(f"quantizer scale must be a positive number, got {self.scale}")

    def encode(self, g: float) -> bytes:
        q = 0 if math.isnan(g) else int(max(-127, min(127, round(g / self.scale))))
        return struct.pack("<b", q)

    def decode(self, msg: bytes) -> float:
        return struct.unpack("<b", msg)[0] * self.scale


@dataclass(frozen=True)
class Float32Codec:
    """The full-precision message: the scalar as 4 little-endian float32 bytes."""

    def encode(self, g: float) -> bytes:
        return struct.pack("<f", g)

    def decode(self, msg: bytes) -> float:
        return struct.unpack("<f", msg)[0]


def make_codec(quantizer: str, scale: float = 0.05) -> OneByteQuantizer | Float32Codec:
    """``"1byte"`` -> :class:`OneByteQuantizer` (``scale``), ``"fp32"`` -> :class:`Float32Codec`."""
    if quantizer == "1byte":
        return OneByteQuantizer(scale)
    if quantizer == "fp32":
        return Float32Codec()
    raise ConfigError(f"unknown quantizer {quantizer!r}; choose one of {QUANTIZERS}")


@dataclass(frozen=True)
class SPSAConfig:
    """A seeded multi-worker SPSA run. ``seed`` fixes the perturbation seeds (worker w at
    step t: ``derive_seed("spsa", seed, t, w)``; ``directions="shared"``:
    ``derive_seed("spsa", seed, t)``), ``data_seed`` the workers' batch orders."""

    lr: float = 3e-4
    eps: float = 1e-3
    steps: int = 2000
    batch_size: int = 64
    workers: int = 4
    quantizer: str = "fp32"
    scale: float = 0.05
    seed: int = 0
    data_seed: int = 0
    eval_every: int = 100
    check_replicas: bool = True
    directions: str = "per_worker"

    def __post_init__(self) -> None:
        for name in ("lr", "eps", "scale"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"SPSA {name} must be a positive number, got {v}")
        for name in ("steps", "batch_size", "workers", "eval_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"SPSA {name} must be >= 1, got {getattr(self, name)}")
        if self.directions not in DIRECTIONS:
            raise ConfigError(f"unknown directions {self.directions!r}; choose one of {DIRECTIONS}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown quantizer {self.quantizer!r}; choose one of {QUANTIZERS}")


@dataclass
class SPSAResult:
    """Per step: the workers' mean of ``(L₊ + L₋)/2`` (``step_loss``) and bytes sent per
    worker (``bytes_per_worker``, one list per step); full-train-split loss every
    ``eval_every`` steps (``evals``: step, loss, acc); ``replicas_identical``: every
    replica bit-identical to worker 0 after every step (checked when asked)."""

    step_loss: list[float] = field(default_factory=list)
    bytes_per_worker: list[list[int]] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    replicas_identical: bool | None = None
    model: nn.Module | None = None

    @property
    def total_bytes(self) -> int:
        return sum(sum(b) for b in self.bytes_per_worker)


def shards(n: int, workers: int, seed: int) -> list[torch.Tensor]:
    """Disjoint data shards: a permutation of ``range(n)`` from ``generator(seed)`` split
    into ``workers`` nearly equal parts."""
    if workers > n:
        raise ConfigError(f"{workers} workers need at least as many training examples, got {n}")
    perm = torch.randperm(n, generator=generator(derive_seed("shards", seed)))
    return list(perm.tensor_split(workers))


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def run_spsa(
    model: nn.Module,
    data: TaskData,
    cfg: SPSAConfig,
    *,
    loss: str | LossFn = "auto",
    progress: Callable[[int], None] | None = None,
) -> SPSAResult:
    """Simulate ``cfg.workers`` workers tuning replicas of ``model`` (each a deep copy) with
    seeded SPSA [#52], each on its own shard of ``data.train``. Per step every worker sends
    one message (1 byte for ``"1byte"``, 4 for ``"fp32"``), every worker decodes all
    messages and applies the same mean update. Returns the history and worker 0's model."""
    kind = data.kind
    loss_fn = resolve_loss(loss, kind, 1 if kind == "classification" else data.train.y.ndim - 1)
    codec = make_codec(cfg.quantizer, cfg.scale)
    replicas = [copy.deepcopy(model) for _ in range(cfg.workers)]
    for r in replicas:
        r.eval()
    parts = shards(len(data.train), cfg.workers, cfg.data_seed)
    orders = []
    for w, idx in enumerate(parts):
        bs = min(cfg.batch_size, len(idx))
        epochs = math.ceil(cfg.steps / (len(idx) // bs))
        order = batch_indices(len(idx), bs, epochs, derive_seed("spsa-data", cfg.data_seed, w))
        orders.append(idx[order[: cfg.steps]])
    res = SPSAResult(replicas_identical=True if cfg.check_replicas else None)
    for t in range(cfg.steps):
        if cfg.directions == "shared":
            seeds_t = [derive_seed("spsa", cfg.seed, t)] * cfg.workers
        else:
            seeds_t = [derive_seed("spsa", cfg.seed, t, w) for w in range(cfg.workers)]
        msgs, losses, zs = [], [], []
        for w, rep in enumerate(replicas):
            b = orders[w][t]
            x, y = data.train.x[b], data.train.y[b]
            # each worker regenerates its z from its step seed itself (once per step)
            z = direction(_params(rep), seeds_t[w])
            zs.append(z)
            g, lv = projected_gradient(
                rep, lambda m, x=x, y=y: loss_fn(m(x), y).mean(), seeds_t[w], cfg.eps, z
            )
            msgs.append(codec.encode(g))
            losses.append(lv)
        res.bytes_per_worker.append([len(m) for m in msgs])
        res.step_loss.append(sum(losses) / len(losses))
        # every worker decodes every message itself and applies the mean update in the same
        # order: θ ← θ − (lr / W) Σ_w ĝ_w z_w, the other workers' z_w regenerated from their
        # seeds (shared directions: one z, θ ← θ − lr · mean(ĝ) · z)
        ghats = [codec.decode(m) for m in msgs]
        for r, rep in enumerate(replicas):
            if cfg.directions == "shared":
                apply_update(rep, seeds_t[0], cfg.lr, sum(ghats) / len(ghats), zs[r])
                continue
            for w, gw in enumerate(ghats):
                zw = zs[r] if w == r else direction(_params(rep), seeds_t[w])
                apply_update(rep, seeds_t[w], cfg.lr / cfg.workers, gw, zw)
        if cfg.check_replicas and res.replicas_identical:
            res.replicas_identical = all(_same(replicas[0], r) for r in replicas[1:])
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.steps:
            m = evaluate_split(replicas[0], data.train, kind, loss_fn)
            res.evals.append({"step": t + 1, **m})
        if progress is not None:
            progress(t + 1)
    res.model = replicas[0]
    return res


def initial_loss(model: nn.Module, split: Split, kind: str, loss: str | LossFn = "auto") -> dict:
    """The model's metrics on ``split`` before tuning (the run's step-0 point)."""
    return evaluate_split(model, split, kind, resolve_loss(loss, kind, 1))
