"""Draw the initial weights of N population members straight into stacked ``(N, ...)``
buffers, bit-identical to ``factory(seed)`` for each seed, without building N modules.

:func:`~weightlab.models.build` initializes a model by running an init *plan*
(:func:`weightlab.init.schemes.init_plan`): an ordered list of draws from
``generator(seed)``. :func:`draw_stacked` builds the plan once on a meta-device template,
then for every member replays the same generator calls in the same order (same shapes,
so the same random streams) into a staging buffer, and applies the element-wise ops
(``* 2 - 1``, ``* bound``, the float32 rounding; ``* std``) to a chunk of members at once.
Element-wise IEEE arithmetic gives the same bits whether it runs on one member or many.

Supported: factories made by :func:`weightlab.models.model_factory` whose plan is fully
known (every parameter and buffer is set by the plan: Linear, Conv, ConvTranspose,
Embedding, RNN family, MultiheadAttention, normalization layers, parameter-free
modules). Anything else (a layer initialized by its own ``reset_parameters``, a buffer
the plan does not set) returns ``None``: the caller falls back to ``factory(seed)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from weightlab.init.schemes import Draw, Reset, init_plan
from weightlab.seeding import generator
from weightlab.threads import intra_op_threads

_STAGE_BYTES = 2 << 20  # staging per chunk of members: stays in cache for the element-wise ops


def _template(spec) -> nn.Module | None:
    try:
        with torch.device("meta"):
            return spec.cls(*spec.args, **spec.kwargs)
    except Exception:  # a constructor that cannot run on meta: use the plain path
        return None


def _covered(plan: list[Draw], tensors: dict[str, torch.Tensor]) -> bool:
    """Whether the plan sets every element of every tensor."""
    rows: dict[str, set[int]] = {}
    whole: set[str] = set()
    for d in plan:
        if d.rows is None:
            whole.add(d.name)
        else:
            rows.setdefault(d.name, set()).update(range(*d.rows))
    for name, t in tensors.items():
        if name in whole:
            continue
        if t.dim() == 0 or rows.get(name, set()) != set(range(t.shape[0])):
            return False
    return True


class _Worker:
    """Draws a range of members, one chunk at a time, through its own staging buffers
    (reused across chunks, with each member's per-draw views made once)."""

    def __init__(self, plan: list[Draw], slots: list[tuple[Draw, int, int]], chunk: int):
        self.plan, self.chunk = plan, chunk
        widths = {"uniform": 0, "normal": 0}
        for d, off, size in slots:
            widths[d.dist.kind] = max(widths[d.dist.kind], off + size)
        self.stage = {
            "uniform": torch.empty(chunk, widths["uniform"], dtype=torch.float64),
            "normal": torch.empty(chunk, widths["normal"], dtype=torch.float32),
        }
        self.views = [
            [
                (
                    d.dist.kind == "uniform",
                    self.stage[d.dist.kind][j, off : off + size].view(d.shape),
                )
                for d, off, size in slots
            ]
            for j in range(chunk)
        ]
        self.cols = {id(d): (off, size) for d, off, size in slots}

    def fill(self, seeds: Sequence[int], out: dict[str, torch.Tensor], c0: int) -> None:
        """Members ``c0 .. c0+len(seeds)``: replay each member's draws, then transform."""
        n = len(seeds)
        for j, seed in enumerate(seeds):
            g = generator(seed)
            for uniform, buf in self.views[j]:
                if uniform:  # torch.rand(shape, dtype=float64) == empty(...).uniform_(0, 1)
                    buf.uniform_(0.0, 1.0, generator=g)
                else:  # torch.randn(shape) == empty(...).normal_(0, 1)
                    buf.normal_(0.0, 1.0, generator=g)
        for d in self.plan:
            dst = out[d.name][c0 : c0 + n]
            if d.rows is not None:
                dst = dst[:, d.rows[0] : d.rows[1]]
            if d.dist.kind == "const":
                dst.fill_(d.dist.scale)
                continue
            off, size = self.cols[id(d)]
            v = self.stage[d.dist.kind][:n, off : off + size]
            if d.dist.kind == "uniform":  # (rand * 2 - 1) * bound, rounded to float32 by copy_
                v.mul_(2).sub_(1).mul_(d.dist.scale)
                if dst.dtype != torch.float32:  # build rounds to float32 first
                    v = v.float()
                dst.copy_(v.view(dst.shape))
            else:
                dst.copy_(torch.mul(v, d.dist.scale).view(dst.shape))


@torch.no_grad()
def draw_stacked(
    factory_or_spec, seeds: Sequence[int], threads: int | None = None
) -> dict[str, torch.Tensor] | None:
    """``{name: (N, ...) tensor}`` of every parameter and buffer (plain names, as
    :func:`weightlab.core.take_snapshot`), equal bit for bit to stacking
    ``factory(seed)`` over ``seeds``; ``None`` where the factory or its architecture is
    not supported (then build each member with ``factory(seed)``).

    Args:
        factory_or_spec: a :func:`~weightlab.models.model_factory` factory or its
            ``model_spec``.
        seeds: one init seed per member.
        threads: worker threads (default: ``torch.get_num_threads()``); members are
            split between them, each drawing from its own members' generators.
    """
    from weightlab.models.factory import ModelSpec

    spec = getattr(factory_or_spec, "model_spec", factory_or_spec)
    if not isinstance(spec, ModelSpec):
        return None
    template = _template(spec)
    if template is None:
        return None
    plan = init_plan(template, spec.init)
    if any(isinstance(step, Reset) for step in plan):
        return None
    tensors = dict(template.named_parameters())
    tensors.update(template.named_buffers())
    if not _covered(plan, tensors):
        return None
    seeds = [int(s) for s in seeds]
    n = len(seeds)
    out = {k: torch.empty((n, *t.shape), dtype=t.dtype) for k, t in tensors.items()}
    slots: list[tuple[Draw, int, int]] = []
    widths = {"uniform": 0, "normal": 0}
    for d in plan:
        if d.dist.kind != "const":
            size = int(torch.Size(d.shape).numel())
            slots.append((d, widths[d.dist.kind], size))
            widths[d.dist.kind] += size
    per_member = 8 * widths["uniform"] + 4 * widths["normal"]
    chunk = max(1, min(n, _STAGE_BYTES // max(1, per_member)))
    workers = max(1, min(int(threads or torch.get_num_threads()), -(-n // chunk)))
    bounds = [n * i // workers for i in range(workers + 1)]

    def run(w: int) -> None:
        worker = _Worker(plan, slots, chunk)
        for c0 in range(bounds[w], bounds[w + 1], chunk):
            worker.fill(seeds[c0 : min(c0 + chunk, bounds[w + 1])], out, c0)

    if workers == 1:
        run(0)
    else:  # torch ops release the GIL; one intra-op thread each avoids oversubscription
        with intra_op_threads(1), ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, range(workers)))
    return out


__all__ = ["draw_stacked"]
