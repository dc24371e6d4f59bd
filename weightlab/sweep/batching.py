"""Runs of one batch group proceed side by side; their ``train_members`` calls train as one
population.

The local executor runs a group's runs as greenlets in one OS thread (threads that ran a
torch op slow training in another even while blocked). A run's greenlet works as usual
until it calls :func:`weightlab.recipes.members.train_members` with the population engine;
the call is parked and control returns to the hub. Once every live run of the group is
parked or finished, the hub merges the parked calls, in run order, into populations of at
most ``cap`` members: calls merge when they train on equal data with one architecture, the
same ``TrainConfig`` but the optimizer, the same snapshot steps, dtype, device and data
orders. Each member keeps its own optimizer settings (``MemberSpec.optim``), data seed and
initial weights (drawn by its own run's factory and passed as ``init_state``, unless every
call's factory declares the same ``model_spec``: then the population draws them), so a merged
member trains as it would alone, to the engine's float tolerance: its last bits depend on
its batch mates (fused kernels walk a different tensor list). Merging is a pure function of
the group's calls, so the same sweep twice is byte-identical.

A group step is finished only when every run of the group holds its unit: while a group
runs, :class:`~weightlab.runs.rundir.RunDir` asks :meth:`GroupBatcher.unit_reusable`, so a
unit one run finished and a mate did not (a sweep killed between the two writes) is
recomputed with the whole group rather than by the mate alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from greenlet import greenlet

from weightlab.core.snapshots import take_snapshot


@dataclass
class _Call:
    run: int
    factory: Callable
    specs: list
    data: Any
    cfg: Any
    kw: dict
    signature: tuple = ()
    result: tuple | None = None
    error: BaseException | None = None


def architecture_signature(model: torch.nn.Module) -> tuple:
    """What makes two factories' models the same architecture: every module's class and
    plain settings (e.g. an MLP's activation), every parameter's and buffer's name, shape
    and dtype."""
    mods = []
    for name, m in model.named_modules():
        plain = sorted(
            (k, v)
            for k, v in vars(m).items()
            if not k.startswith("_")
            and k != "training"
            and isinstance(v, str | int | float | bool | tuple)
        )
        mods.append((name, type(m).__module__, type(m).__qualname__, repr(plain)))
    tensors = [(n, tuple(t.shape), str(t.dtype)) for n, t in model.state_dict().items()]
    return tuple(mods), tuple(tensors)


def _data_token(data: Any, cache: dict[int, str]) -> str:
    """Content hash of a task's splits (cached per object)."""
    key = id(data)
    if key not in cache:
        h = hashlib.sha256()
        h.update(repr((data.name, data.kind, data.num_classes, data.output_shape)).encode())
        for split in (data.train, data.val, data.test):
            for t in (split.x, split.y):
                t = t.detach().cpu().contiguous()
                h.update(repr((tuple(t.shape), str(t.dtype))).encode())
                h.update(t.numpy().tobytes() if t.numel() else b"")
        cache[key] = h.hexdigest()
    return cache[key]


def _same_train_config(a: Any, b: Any) -> bool:
    return type(a) is type(b) and all(
        getattr(a, f.name) == getattr(b, f.name) for f in fields(a) if f.name != "optim"
    )


def _same_orders(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@dataclass
class GroupBatcher:
    """The hub of one batch group (see the module docstring)."""

    cap: int
    paths: Sequence[Path] = ()
    hub: Any = None
    merged_calls: list[int] = field(default_factory=list)  # members per merged population
    _decisions: dict[str, bool] = field(default_factory=dict)
    _data_cache: dict[int, str] = field(default_factory=dict)

    # -- from a run's greenlet -------------------------------------------------------
    def park(self, factory, specs, data, cfg, **kw) -> tuple[list, list]:
        """Called by ``train_members``: hand the call to the hub, wait for its share."""
        call = _Call(-1, factory, list(specs), data, cfg, kw)
        out = self.hub.switch(call)
        return out

    def unit_reusable(self, key: str) -> bool:
        """A finished unit ``key`` is reused only if every run of the group holds it; the
        first run to ask decides for the whole group, so mates recompute together."""
        if key not in self._decisions:
            self._decisions[key] = all((p / "units" / f"{key}.json").exists() for p in self.paths)
        return self._decisions[key]

    # -- the hub ------------------------------------------------------------------------
    def run(self, jobs: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run ``jobs`` (one per run; each must catch its own errors and return an outcome)
        side by side; return their outcomes in order."""
        from weightlab.recipes import members
        from weightlab.runs import rundir

        self.hub = greenlet.getcurrent()
        glets = [greenlet(job, parent=self.hub) for job in jobs]
        outcomes: list[Any] = [None] * len(jobs)
        parked: dict[int, _Call] = {}

        def advance(i: int, *value: Any) -> None:
            got = glets[i].switch(*value)
            if glets[i].dead:
                outcomes[i] = got
            else:
                got.run = i
                parked[i] = got

        prev_batcher, prev_gate = members._batcher, rundir.unit_gate
        members._batcher, rundir.unit_gate = self, self.unit_reusable
        try:
            for i in range(len(glets)):
                advance(i)
            while parked:
                calls = [parked.pop(i) for i in sorted(parked)]
                for batch in self._merge(calls):
                    self._train(batch)
                for c in calls:
                    if c.error is not None:
                        err, c.error = c.error, None
                        try:
                            got = glets[c.run].throw(err)
                        except BaseException as e:  # the job let it through
                            outcomes[c.run] = e
                            continue
                        if glets[c.run].dead:
                            outcomes[c.run] = got
                        else:
                            got.run = c.run
                            parked[c.run] = got
                    else:
                        advance(c.run, c.result)
        finally:
            members._batcher, rundir.unit_gate = prev_batcher, prev_gate
        return outcomes

    def _merge(self, calls: list[_Call]) -> list[list[_Call]]:
        batches: list[list[_Call]] = []
        for c in calls:
            c.signature = architecture_signature(c.factory(c.specs[0].seed))
            n = len(c.specs)
            home = None
            if n < self.cap:
                for b in batches:
                    if sum(len(x.specs) for x in b) + n <= self.cap and self._compatible(b[0], c):
                        home = b
                        break
            if home is None:
                batches.append([c])
            else:
                home.append(c)
        return batches

    def _compatible(self, a: _Call, b: _Call) -> bool:
        ka = {k: v for k, v in a.kw.items() if k not in ("progress", "orders", "data_seed")}
        kb = {k: v for k, v in b.kw.items() if k not in ("progress", "orders", "data_seed")}
        return (
            ka == kb
            and a.signature == b.signature
            and _same_train_config(a.cfg, b.cfg)
            and _same_orders(a.kw.get("orders"), b.kw.get("orders"))
            and (
                a.data is b.data
                or _data_token(a.data, self._data_cache) == _data_token(b.data, self._data_cache)
            )
        )

    def _train(self, batch: list[_Call]) -> None:
        from weightlab.recipes.members import train_members_now

        first = batch[0]
        if len(batch) == 1:
            specs, factory = first.specs, first.factory
            kw = dict(first.kw)
        else:
            # factories declaring one ModelSpec (weightlab.models.model_factory) build the
            # same weights from a seed: the population draws them all at once, as alone
            spec0 = getattr(first.factory, "model_spec", None)
            same = spec0 is not None and all(
                getattr(c.factory, "model_spec", None) == spec0 for c in batch
            )
            specs = []
            for c in batch:
                seed0 = c.kw.get("data_seed", 0)
                for s in c.specs:
                    state = s.init_state
                    if state is None and not same:  # the member's own run draws its weights
                        state = take_snapshot(c.factory(s.seed))
                    specs.append(
                        replace(
                            s,
                            optim=s.optim if s.optim is not None else c.cfg.optim,
                            data_seed=s.data_seed if s.data_seed is not None else seed0,
                            init_state=state,
                        )
                    )
            factory = first.factory
            kw = {**first.kw, "progress": False}
        self.merged_calls.append(len(specs))
        try:
            results, finals = train_members_now(factory, specs, first.data, first.cfg, **kw)
        except Exception as e:
            for c in batch:
                c.error = e
            return
        at = 0
        for c in batch:
            n = len(c.specs)
            c.result = (results[at : at + n], finals[at : at + n])
            at += n
