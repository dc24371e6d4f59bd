"""Population optimizer: SGD / Adam / AdamW / SGLD over one flat buffer holding every
member's parameters.

The updates are PyTorch's:

- ``torch.optim.SGD``: heavy-ball momentum ``b_t = μ b_{t-1} + g_t`` (``b_1 = g_1``) and
  ``θ_t = θ_{t-1} - lr b_t``, or Nesterov's ``θ_t = θ_{t-1} - lr (g_t + μ b_t)``
  (Sutskever et al. 2013, Eq. 3-4 in PyTorch's reformulation); L2 weight decay added to
  the gradient.
- ``torch.optim.Adam`` (Kingma & Ba 2015, Algorithm 1) with L2 weight decay added to the
  gradient, and ``torch.optim.AdamW`` (Loshchilov & Hutter 2019, Algorithm 2) with decoupled
  decay ``θ <- θ (1 - lr λ)`` before the Adam step.

They run as PyTorch's fused multi-tensor kernels (``torch._fused_adam_``,
``torch._fused_adamw_``, ``torch._fused_sgd_``), with a learning rate recomputed per step
from the member's :class:`~weightlab.train.Schedule`. Members sharing one
:class:`~weightlab.train.OptimConfig` without parameter groups take one call over the whole
buffer; otherwise there is one call per (setting, parameter group), each over views of the
buffer, one per parameter and range of consecutive members. The views are built once (and
again only when members are frozen), and :meth:`weightlab.population.Population.fit` puts
each setting's members on consecutive positions (:func:`config_blocks`), so mixed settings
in any member order cost one view per (setting, parameter). Where torch has no fused
kernel for the device, the same arithmetic runs as a reference implementation.

SGLD (``OptimConfig(name="sgld")``, Welling & Teh 2011, Eq. 4, full batch) runs
:func:`weightlab.dynamics.sgld.sgld_update_`, the loop's arithmetic, with each member's
noise ``ξ_t`` drawn from ``derive_seed("sgld", member seed, t)`` (``seeds``) in the layout's
parameter order, so a member equals its solo run; masks multiply the noise as well.

Each step: masks multiply the gradient (``∂L/∂W = ∂L/∂W_eff ⊙ M``; stored weights are zero
where ``M = 0``, so weight decay adds nothing there, moments stay exactly zero and pruned
weights stay exactly zero), then clipping (``clip_value`` clamps entries; ``clip_norm``
rescales each member's whole gradient by ``min(1, c / (‖g‖₂ + 1e-6))`` as
``torch.nn.utils.clip_grad_norm_``), then the update. Nothing is reduced across members, so
a member whose gradient turns NaN never touches another; :meth:`PopulationOptimizer.freeze`
stops a member's updates (its weights and moments stay as they are).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from weightlab.dynamics.sgld import sgld_noise, sgld_update_
from weightlab.train.config import OptimConfig

_FUSED: dict[str, bool] = {}

# Multipliers (lr_mult, wd_mult) per plain parameter name, for one OptimConfig.
Multipliers = Mapping[str, tuple[float, float]]


def fused_available(device: torch.device) -> bool:
    """Whether ``torch._fused_adam_`` / ``_fused_adamw_`` / ``_fused_sgd_`` run on
    ``device``'s type (CPU support arrived after torch 2.3, the oldest version weightlab
    supports)."""
    kind = torch.device(device).type
    if kind not in _FUSED:
        try:
            p, g = torch.zeros(2, device=device), torch.ones(2, device=device)
            m, v = torch.zeros_like(p), torch.zeros_like(p)
            t = torch.ones((), device=device)
            kw = dict(beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8)
            torch._fused_adam_(
                [p], [g], [m], [v], [], [t], lr=0.1, **kw, amsgrad=False, maximize=False
            )
            torch._fused_adamw_(
                [p], [g], [m], [v], [], [t], lr=0.1, **kw, amsgrad=False, maximize=False
            )
            torch._fused_sgd_(
                [p],
                [g],
                [m],
                weight_decay=0.0,
                momentum=0.9,
                lr=0.1,
                dampening=0.0,
                nesterov=True,
                maximize=False,
                is_first_step=True,
            )
            _FUSED[kind] = True
        except (AttributeError, RuntimeError, NotImplementedError, TypeError):
            _FUSED[kind] = False
    return _FUSED[kind]


def adam_reference_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    step: int,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """Adam / AdamW with ``torch.optim.Adam``'s single-tensor arithmetic (the fallback where
    the fused kernel is unavailable)."""
    b1, b2 = betas
    bc1, bc2_sqrt = 1 - b1**step, math.sqrt(1 - b2**step)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        if weight_decay:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)


def sgd_reference_(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    bufs: Sequence[torch.Tensor],
    first: bool,
    *,
    lr: float,
    momentum: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    """SGD (heavy-ball or Nesterov momentum, no dampening) with ``torch.optim.SGD``'s
    single-tensor arithmetic."""
    for j, (p, g) in enumerate(zip(params, grads, strict=True)):
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        if bufs:
            buf = bufs[j].copy_(g) if first else bufs[j].mul_(momentum).add_(g)
            g = g.add(buf, alpha=momentum) if nesterov else buf
        p.add_(g, alpha=-lr)


class FlatLayout:
    """Parameter ``j`` of every member lives in ``flat[N*off_j : N*(off_j+numel_j)]`` as an
    ``(N, *shape_j)`` contiguous block, so a layer's stacked weight is one dense tensor."""

    def __init__(self, n: int, shapes: dict[str, torch.Size]) -> None:
        self.n = n
        self.names = list(shapes)
        self.shapes = dict(shapes)
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for name, shape in shapes.items():
            numel = int(torch.Size(shape).numel())
            self.offsets[name] = (off, numel)
            off += numel
        self.per_member = off

    @property
    def total(self) -> int:
        return self.n * self.per_member

    def view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        off, numel = self.offsets[name]
        return flat[self.n * off : self.n * (off + numel)].view(self.n, *self.shapes[name])

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.view(flat, name) for name in self.names}

    def rows(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Every parameter block as an ``(N, numel_j)`` view, in layout order."""
        return [self.view(flat, name).reshape(self.n, -1) for name in self.names]

    def pieces(
        self, flat: torch.Tensor, names: Sequence[str], runs: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """Views of ``flat`` covering parameters ``names`` (layout order) of the members in
        ``runs`` (``[start, stop)`` ranges). A run of all members takes consecutive
        parameter blocks as one slice, so the whole buffer is a single tensor."""
        out: list[torch.Tensor] = []
        for a, b in runs:
            if (a, b) == (0, self.n):
                for lo, hi in _spans([self.offsets[k] for k in names]):
                    out.append(flat[self.n * lo : self.n * hi])
            else:
                out.extend(self.view(flat, k)[a:b] for k in names)
        return out


def _spans(blocks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge ``(offset, numel)`` blocks into maximal consecutive ``[lo, hi)`` spans."""
    spans: list[tuple[int, int]] = []
    for off, numel in sorted(blocks):
        if spans and spans[-1][1] == off:
            spans[-1] = (spans[-1][0], off + numel)
        else:
            spans.append((off, off + numel))
    return spans


def config_blocks(configs: Sequence[Hashable]) -> list[int]:
    """Positions ``0..n-1`` reordered so that members with equal configs are adjacent:
    configs in order of first appearance, each config's members in their own order.

    Engines index members by position, and :class:`PopulationOptimizer` updates each
    config's members as maximal ranges of consecutive positions (:func:`_runs`), one view
    per range and parameter. Interleaved configs (member ``i`` with learning rate
    ``i % 8``) would cost one small view per member and parameter in every call;
    :meth:`weightlab.population.Population.fit` therefore builds each chunk's engine in
    this order (mapping positions back to members everywhere), so each config is one
    range. The identity for configs already in blocks (a single config included)."""
    blocks: dict[Hashable, list[int]] = {}
    for i, c in enumerate(configs):
        blocks.setdefault(c, []).append(i)
    return [i for block in blocks.values() for i in block]


def _runs(members: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted member indices as maximal ``[start, stop)`` ranges."""
    runs: list[tuple[int, int]] = []
    for i in sorted(members):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


@dataclass
class _Call:
    """One kernel call: a setting, a group's multipliers, and the views it updates."""

    cfg: OptimConfig
    slot: int  # index of cfg among the plan's distinct configs (its schedule factor)
    lr_mult: float
    wd_mult: float
    keys: list[str]
    runs: list[tuple[int, int]]
    params: list[torch.Tensor]
    state: tuple[list[torch.Tensor], ...]  # (exp_avg, exp_avg_sq), (momentum,), (noise,), ()
    grads: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.adam = self.cfg.name in ("adam", "adamw")
        self.sgld = self.cfg.name == "sgld"
        self.weight_decay = self.cfg.weight_decay * self.wd_mult
        self.base_lr = self.cfg.lr * self.lr_mult  # the loop's lr * lr_mult, before the factor
        self.step_ts: list[torch.Tensor] = []  # the shared step counter, once per view


class PopulationOptimizer:
    """Fused SGD / Adam / AdamW (and SGLD) on a flat ``(N * P)`` parameter buffer, per-member
    settings.

    Args:
        flat: the parameter buffer (layout of ``layout``), updated in place.
        layout: where each parameter of each member lives.
        configs: one :class:`OptimConfig` per member; members may differ in any field.
        masks: plain name -> ``(N, *shape)`` 0/1 masks multiplied into the gradient.
        total_steps: the run's length (for :meth:`Schedule.factor`).
        multipliers: per distinct config with groups, ``{name: (lr_mult, wd_mult)}`` for
            every parameter (from :func:`weightlab.train.groups.resolve_groups`).
        seeds: each member's seed (``MemberSpec.seed``): SGLD's noise stream; needed
            only when a member uses ``sgld``.

    Set :attr:`record_grad_norm` (:attr:`record_grad`) to keep each step's per-member
    gradient norm (a copy of the flat gradient), masked and before clipping, in
    :attr:`last_grad_norm` (:attr:`last_grad`).
    """

    def __init__(
        self,
        flat: torch.Tensor,
        layout: FlatLayout,
        configs: Sequence[OptimConfig],
        masks: dict[str, torch.Tensor] | None = None,
        *,
        total_steps: int = 0,
        multipliers: Mapping[OptimConfig, Multipliers] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> None:
        self.flat, self.layout = flat, layout
        self.configs = list(configs)
        if len(self.configs) != layout.n:
            raise ValueError(f"{len(self.configs)} optimizer configs for {layout.n} members")
        self.total_steps = int(total_steps)
        self.multipliers = dict(multipliers or {})
        for c in set(self.configs):
            if c.groups and c not in self.multipliers:
                raise ValueError("parameter groups need their resolved multipliers")
        self.masks = {k: v.to(flat.dtype) for k, v in (masks or {}).items()}
        self.steps = 0
        adam = any(c.name in ("adam", "adamw") for c in self.configs)
        mom = any(c.name == "sgd" and c.momentum > 0 for c in self.configs)
        self.exp_avg = torch.zeros_like(flat) if adam else None
        self.exp_avg_sq = torch.zeros_like(flat) if adam else None
        self.momentum = torch.zeros_like(flat) if mom else None
        self.sgld = any(c.name == "sgld" for c in self.configs)
        if self.sgld and (seeds is None or len(seeds) != layout.n):
            raise ValueError("SGLD members need their seeds: pass seeds=[one per member]")
        self.seeds = [int(s) for s in seeds] if seeds is not None else None
        self.noise = torch.zeros_like(flat) if self.sgld else None
        self._step_t = torch.zeros((), dtype=torch.float32, device=flat.device)
        self.fused = fused_available(flat.device)
        self.frozen: set[int] = set()
        clip_norm = [c.clip_norm for c in self.configs]
        self._clip_norm = (
            torch.tensor(clip_norm, dtype=flat.dtype, device=flat.device)
            if any(clip_norm)
            else None
        )
        self.record_grad_norm = False
        self.record_grad = False
        self.last_grad_norm: torch.Tensor | None = None
        self.last_grad: torch.Tensor | None = None
        self.last_clip_scale: torch.Tensor | None = None
        self._build_plan()

    # -- plan: which views each kernel call updates (built once, rebuilt on freeze) -------
    def _build_plan(self) -> None:
        by_cfg: dict[OptimConfig, list[int]] = {}
        for i, c in enumerate(self.configs):
            if i not in self.frozen:
                by_cfg.setdefault(c, []).append(i)
        names = self.layout.names
        self._calls: list[_Call] = []
        self._clip_runs: list[tuple[float, list[tuple[int, int]]]] = []
        # per distinct config: its schedule, or None when the factor is always 1
        self._schedules = [
            None if c.schedule.kind == "constant" and not c.schedule.warmup_steps else c.schedule
            for c in by_cfg
        ]
        for slot, (cfg, members) in enumerate(by_cfg.items()):
            runs = _runs(members)
            groups: dict[tuple[float, float], list[str]] = {}
            mults = self.multipliers.get(cfg) if cfg.groups else None
            for k in names:
                key = tuple(map(float, mults[k])) if mults else (1.0, 1.0)
                groups.setdefault(key, []).append(k)
            for (lr_mult, wd_mult), keys in groups.items():
                if cfg.name in ("adam", "adamw"):
                    state = (
                        self._pieces(self.exp_avg, keys, runs),
                        self._pieces(self.exp_avg_sq, keys, runs),
                    )
                elif cfg.name == "sgld":
                    state = (self._pieces(self.noise, keys, runs),)
                elif cfg.momentum > 0:
                    state = (self._pieces(self.momentum, keys, runs),)
                else:
                    state = ()
                params = self._pieces(self.flat, keys, runs)
                call = _Call(cfg, slot, lr_mult, wd_mult, keys, runs, params, state)
                call.step_ts = [self._step_t] * len(params)
                self._calls.append(call)
            if cfg.clip_value > 0:
                self._clip_runs.append((cfg.clip_value, runs))
        self._grad_for: torch.Tensor | None = None
        self._clip_value: list[tuple[float, list[torch.Tensor]]] = []

    def _pieces(self, t: torch.Tensor, keys, runs) -> list[torch.Tensor]:
        return self.layout.pieces(t, keys, runs)

    def _bind_grad(self, grad: torch.Tensor) -> None:
        """Point the plan's gradient views at ``grad`` (once per gradient buffer)."""
        if self._grad_for is grad:
            return
        for call in self._calls:
            call.grads = self._pieces(grad, call.keys, call.runs)
        names = self.layout.names
        self._clip_value = [(c, self._pieces(grad, names, runs)) for c, runs in self._clip_runs]
        self._grad_masks = [(self.layout.view(grad, k), m) for k, m in self.masks.items()]
        self._grad_rows = self.layout.rows(grad)
        self._grad_for = grad

    def freeze(self, members: Iterable[int]) -> None:
        """Stop updating ``members`` (e.g. diverged ones): their weights and optimizer
        state are left exactly as they are from now on."""
        new = set(int(i) for i in members) - self.frozen
        if new:
            self.frozen |= new
            self._build_plan()

    # -- per-member gradient norms ---------------------------------------------------------
    def grad_norms(self, grad: torch.Tensor) -> torch.Tensor:
        """``(N,)`` L2 norm of each member's whole gradient, as ``clip_grad_norm_`` computes
        it: the norm of the per-parameter norms."""
        rows = self.layout.rows(grad)
        per_param = torch.stack([torch.linalg.vector_norm(r, dim=1) for r in rows])
        return torch.linalg.vector_norm(per_param, dim=0)

    # -- the update ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """Apply one update given the flat gradient (modified in place: masked, clipped)."""
        self._bind_grad(grad)
        for view, mask in self._grad_masks:
            view.mul_(mask)
        if self.record_grad_norm:
            self.last_grad_norm = self.grad_norms(grad)
        if self.record_grad:
            self.last_grad = grad.detach().clone()
        for c, views in self._clip_value:
            torch._foreach_clamp_min_(views, -c)
            torch._foreach_clamp_max_(views, c)
        if self._clip_norm is not None:
            self._clip_by_norm(grad)
        self.steps += 1
        self._step_t.fill_(float(self.steps))
        done, total = self.steps - 1, max(1, self.total_steps)
        factors = [1.0 if s is None else s.factor(done, total) for s in self._schedules]
        if self.sgld:
            self._draw_noise()
        for call in self._calls:
            # as the loop's set_lr: lr * lr_mult * schedule factor
            lr = call.base_lr * factors[call.slot]
            if call.sgld:
                sgld_update_(
                    call.params, call.grads, call.state[0], lr=lr, weight_decay=call.weight_decay
                )
            elif call.adam:
                self._adam(call, lr, call.weight_decay)
            else:
                self._sgd(call, lr, call.weight_decay)

    def _draw_noise(self) -> None:
        """Fill :attr:`noise` with every member's ``ξ_t`` (float32 draws, cast), masked."""
        layout, per = self.layout, self.layout.per_member
        zero = torch.zeros(per, dtype=torch.float32)
        draws = torch.stack(
            [
                zero if i in self.frozen else sgld_noise(self.seeds[i], self.steps, per)
                for i in range(layout.n)
            ]
        ).to(self.flat.device, self.flat.dtype)
        for k in layout.names:  # member i's draw is cut in the layout's (model's) order
            off, numel = layout.offsets[k]
            view = layout.view(self.noise, k)
            view.copy_(draws[:, off : off + numel].reshape(view.shape))
            if k in self.masks:
                view.mul_(self.masks[k])

    def _clip_by_norm(self, grad: torch.Tensor) -> None:
        norms = self.last_grad_norm if self.record_grad_norm else None
        if norms is None:
            norms = self.grad_norms(grad)
        c = self._clip_norm
        scale = torch.where(c > 0, (c / (norms + 1e-6)).clamp(max=1.0), torch.ones_like(c))
        self.last_clip_scale = scale
        per_member = scale.unsqueeze(1)
        for r in self._grad_rows:
            r.mul_(per_member)

    def _adam(self, call: _Call, lr: float, wd: float) -> None:
        cfg = call.cfg
        m, v = call.state
        decoupled = cfg.name == "adamw"
        if not self.fused:
            adam_reference_(
                call.params,
                call.grads,
                m,
                v,
                self.steps,
                lr=lr,
                betas=cfg.betas,
                eps=cfg.eps,
                weight_decay=wd,
                decoupled=decoupled,
            )
            return
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        kernel(
            call.params,
            call.grads,
            m,
            v,
            [],
            call.step_ts,
            lr=lr,
            beta1=cfg.betas[0],
            beta2=cfg.betas[1],
            weight_decay=wd,
            eps=cfg.eps,
            amsgrad=False,
            maximize=False,
        )

    def _sgd(self, call: _Call, lr: float, wd: float) -> None:
        cfg = call.cfg
        buf = call.state[0] if call.state else []
        if not self.fused:
            sgd_reference_(
                call.params,
                call.grads,
                buf,
                self.steps == 1,
                lr=lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov,
                weight_decay=wd,
            )
            return
        torch._fused_sgd_(
            call.params,
            call.grads,
            buf,
            weight_decay=wd,
            momentum=cfg.momentum,
            lr=lr,
            dampening=0.0,
            nesterov=cfg.nesterov,
            maximize=False,
            is_first_step=self.steps == 1,
        )
