"""A population: N members of one architecture trained as one computation.

Each member has its own init seed, data order, optimizer settings, mask and start state;
its result equals that member trained alone by :func:`weightlab.train.train` (to float
tolerance): same batches (:func:`weightlab.train.batch_indices`), same evaluation steps,
same metrics. Plain :class:`~weightlab.models.MLP` members take a hand-written batched
fast path (:mod:`weightlab.population.mlp_engine`); any other module runs through
``torch.func.vmap`` (:mod:`weightlab.population.func_engine`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from weightlab.core.mask import _check_mask, apply_masks
from weightlab.core.selectors import is_transform_state
from weightlab.core.snapshots import restore_snapshot, take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, RunFileError
from weightlab.init.stacked import draw_stacked
from weightlab.models.dropout import replace_dropout
from weightlab.population import mlp_engine
from weightlab.population.func_engine import FuncEngine
from weightlab.population.loss import EngineLoss
from weightlab.population.mlp_engine import MLPEngine
from weightlab.population.optim import config_blocks
from weightlab.population.seq_engine import (
    SequentialEngine,
    log_path,
    refuse_random_forward,
    vmap_rejection,
)
from weightlab.population.spec import MemberSpec
from weightlab.progress import progress_bar
from weightlab.runs.files import atomic_write_json, load_tensors, read_json, save_tensors
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.groups import resolve_groups
from weightlab.train.loop import (
    EvalPoint,
    TrainResult,
    cast_data,
    check_snapshot_steps,
    eval_steps,
)
from weightlab.train.losses import resolve_loss
from weightlab.train.metrics import r2_and_rel_err, target_stats
from weightlab.train.order import batch_indices, steps_per_epoch
from weightlab.train.samplers import check_order

if TYPE_CHECKING:
    from weightlab.population.buckets import BucketedPopulation
from weightlab.train.probes import (
    Probe,
    ProbeContext,
    check_probes,
    layer_norms,
    probe_param_names,
    relative_changes,
    run_probes,
    to_jsonable,
    total_distance,
)

FORMAT_VERSION = 2
_MIB = 1 << 20


class Population:
    """``N`` members built by ``factory(spec.seed)`` (or ``spec.init_state``), trained together.

    Args:
        factory: ``seed -> nn.Module``, e.g. ``weightlab.models.model_factory(MLP, [40, 300, 100, 10])``.
        specs: one :class:`MemberSpec` per member.
        device: where training runs.
        data_seed: data-order seed of members whose ``spec.data_seed`` is ``None``.
        memory_budget_mib: members are trained in chunks whose estimated memory (weights,
            optimizer state, activations) fits this budget; the split depends only on sizes
            and the budget, so results are reproducible.
        dtype: floating dtype of weights, buffers and data in training (``torch.float64``
            for equivalence tests against ``train(..., dtype=torch.float64)``).
    """

    def __init__(
        self,
        factory: Callable[[int], nn.Module],
        specs: Sequence[MemberSpec],
        device: torch.device | str = "cpu",
        data_seed: int = 0,
        memory_budget_mib: float = 2048,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        specs = list(specs)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ConfigError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.dtype = dtype
        if not specs:
            raise ConfigError("a population needs at least one MemberSpec; pass specs=[...]")
        if not memory_budget_mib > 0:
            raise ConfigError(f"memory_budget_mib must be > 0, got {memory_budget_mib}")
        for s in specs:
            if not isinstance(s, MemberSpec):
                raise ConfigError(f"specs must be MemberSpec instances, got {type(s).__name__}")
            if s.optim is not None and not isinstance(s.optim, OptimConfig):
                raise ConfigError("MemberSpec.optim must be a weightlab.train.OptimConfig or None")
        self.factory = factory
        self.specs = specs
        self.device = torch.device(device)
        self.data_seed = int(data_seed)
        self.memory_budget_mib = float(memory_budget_mib)
        self.template = factory(specs[0].seed)
        self._act_numel, self._in_numel = 0, 0
        self._measured_shape: tuple[int, ...] | None = None
        self._seq_reason: str | None = None  # why vmap rejects the model (sequential path)
        self._path_logged = False
        self._param_names = [n for n, _ in self.template.named_parameters()]
        self._buffer_names = [n for n, _ in self.template.named_buffers()]
        if any(is_transform_state(n) for n in self._param_names):
            raise ConfigError(
                "the factory must return plain modules; pass masks through MemberSpec.masks"
            )
        stacked = None  # weights drawn straight into (N, ...) buffers, bit-identical
        if all(s.init_state is None for s in specs):
            stacked = draw_stacked(factory, [s.seed for s in specs])
        if stacked is not None and set(stacked) == {*self._param_names, *self._buffer_names}:
            for i, s in enumerate(specs):
                self._check_member_masks(i, s)
        else:
            members = [self._build_member(i, s) for i, s in enumerate(specs)]
            stacked = {k: torch.stack([m[k] for m in members]) for k in members[0]}
        self._params = {k: stacked[k].to(self.device, dtype) for k in self._param_names}
        self._buffers = {k: self._cast(stacked[k].to(self.device)) for k in self._buffer_names}
        self._masks: dict[str, torch.Tensor] = {}
        masked = sorted({k for s in specs for k in (s.masks or {})}, key=self._param_names.index)
        for k in masked:
            stack = torch.ones_like(self._params[k])
            for i, s in enumerate(specs):
                if s.masks and k in s.masks:
                    stack[i] = s.masks[k].to(stack.device, stack.dtype)
            self._masks[k] = stack
            self._params[k].mul_(stack)

    def __len__(self) -> int:
        return len(self.specs)

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        """Floating tensors in the population's dtype; integer ones (counters) unchanged."""
        return t.to(self.dtype) if t.is_floating_point() else t

    @staticmethod
    def sweep(
        factories: Mapping[Hashable, Callable[[int], nn.Module]],
        members: Sequence[tuple[Hashable, MemberSpec]],
        **kwargs,
    ) -> BucketedPopulation:
        """Members of different architectures (e.g. a width sweep) as one population:
        ``factories`` maps key -> ``seed -> nn.Module``, ``members`` lists ``(key, MemberSpec)``;
        one bucket (engine) per key, no padding. Returns a
        :class:`~weightlab.population.buckets.BucketedPopulation` (same ``fit`` / ``state`` /
        ``member`` / ``evaluate``, results in ``members`` order); ``kwargs`` as for
        :class:`Population`."""
        from weightlab.population.buckets import BucketedPopulation

        return BucketedPopulation(factories, members, **kwargs)

    # -- construction --------------------------------------------------------------------
    def _build_member(self, i: int, spec: MemberSpec) -> dict[str, torch.Tensor]:
        model = self.factory(spec.seed)
        names = [n for n, _ in model.named_parameters()]
        shapes = {n: p.shape for n, p in model.named_parameters()}
        ref = dict(self.template.named_parameters())
        if names != self._param_names or any(shapes[n] != ref[n].shape for n in names):
            raise ConfigError(
                f"factory({spec.seed}) built a different architecture than factory({self.specs[0].seed}); "
                "a population needs one architecture"
            )
        if spec.init_state is not None:
            if not isinstance(spec.init_state, dict):
                raise ConfigError(f"member {i}: init_state must be a take_snapshot dict")
            model = model.to(self.dtype)
            restore_snapshot(model, spec.init_state)
        self._check_member_masks(i, spec)
        return take_snapshot(model)

    def _check_member_masks(self, i: int, spec: MemberSpec) -> None:
        if not spec.masks:
            return
        ref = dict(self.template.named_parameters())
        for name, mask in (spec.masks or {}).items():
            if name not in ref:
                raise ConfigError(
                    f"member {i}: mask for unknown parameter {name!r}; "
                    f"use plain names such as {self._param_names[0]!r}"
                )
            if not isinstance(mask, torch.Tensor):
                raise ConfigError(f"member {i}: mask for {name!r} must be a tensor")
            _check_mask(name, ref[name].detach(), mask.detach().cpu())

    # -- engines -------------------------------------------------------------------------
    def _is_fast(self) -> bool:
        return mlp_engine.supports(self.template)

    def _per_member_bytes(self, batch: int, optimizers: bool = True) -> int:
        """Estimated bytes per member in training: weights, grad, optimizer state, masks,
        the population's own copy, and activations kept for the backward pass."""
        p = sum(v[0].numel() for v in self._params.values())
        b = sum(v[0].numel() for v in self._buffers.values())
        copies = 6 if optimizers else 2
        state = p * (copies + (1 if self._masks else 0)) + 2 * b
        act = self._activation_numel() * batch * 4
        return self._itemsize() * (state + act + batch * self._input_numel())

    def _itemsize(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    def _input_numel(self) -> int:
        return max(1, self._in_numel)

    def _activation_numel(self) -> int:
        """Outputs of all leaf modules for one example (measured by :meth:`_measure`)."""
        return max(1, self._act_numel)

    def _measure(self, data: TaskData) -> None:
        if self._measured_shape == data.input_shape:
            return
        total = 0

        def hook(_m, _i, out):
            nonlocal total
            if isinstance(out, torch.Tensor):
                total += out[0].numel()

        model = self.factory(self.specs[0].seed).to(self.dtype)
        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                model.eval()
                model(data.train.x[:2].cpu())
        except Exception as e:
            raise ConfigError(
                f"the model cannot run on inputs of shape {tuple(data.train.x.shape[1:])}: {e}"
            ) from e
        finally:
            for h in handles:
                h.remove()
        self._act_numel = total
        self._in_numel = int(math.prod(data.input_shape))
        if not self._is_fast():  # generic path: vmap, or member by member if vmap rejects it
            self._seq_reason = vmap_rejection(replace_dropout(model), data.train.x[:2].cpu())
            if not self._path_logged:
                log_path(model, self._seq_reason)
                self._path_logged = True
        self._measured_shape = data.input_shape

    def _chunks(self, batch: int, optimizers: bool = True) -> list[list[int]]:
        """Consecutive member ranges whose estimated memory fits the budget."""
        per = self._per_member_bytes(batch, optimizers)
        size = max(1, int(self.memory_budget_mib * _MIB // per))
        n = len(self.specs)
        return [list(range(s, min(n, s + size))) for s in range(0, n, size)]

    def _eval_rows(self, n: int) -> int:
        per_row = self._itemsize() * 3 * (self._activation_numel() + self._input_numel()) * n
        return int(max(1, min(8192, self.memory_budget_mib * _MIB // (2 * per_row))))

    def _engine(
        self,
        members: list[int],
        optims: list[OptimConfig] | None,
        loss: EngineLoss | None = None,
        opt_kwargs: dict | None = None,
    ):
        idx = torch.tensor(members, device=self.device)
        params = {k: v.index_select(0, idx) for k, v in self._params.items()}
        masks = {k: v.index_select(0, idx) for k, v in self._masks.items()}
        kw = {"loss": loss, "opt_kwargs": opt_kwargs}
        if self._is_fast():
            return MLPEngine(self.template, params, masks, optims, self.device, **kw)
        buffers = {k: v.index_select(0, idx) for k, v in self._buffers.items()}
        template = replace_dropout(self.factory(self.specs[0].seed).to(self.dtype))  # as the loop
        seeds = [self.specs[i].seed for i in members]
        cls = FuncEngine if self._seq_reason is None else SequentialEngine
        return cls(template, params, buffers, masks, optims, self.device, seeds=seeds, **kw)

    def _store(self, members: list[int], engine) -> None:
        idx = torch.tensor(members, device=self.device)
        with torch.no_grad():
            for k, v in engine.params().items():
                self._params[k].index_copy_(0, idx, v.detach())
            for k, v in engine.buffers().items():
                self._buffers[k].index_copy_(0, idx, v)

    # -- training ------------------------------------------------------------------------
    def fit(
        self,
        data: TaskData,
        cfg: TrainConfig,
        snapshot_steps: Sequence[int] = (),
        progress: bool = False,
        probes: Sequence[Probe] = (),
        orders: Mapping[int, torch.Tensor] | None = None,
    ) -> list[TrainResult]:
        """Train every member; ``results[i]`` has the semantics of
        ``weightlab.train.train(member_i, data, cfg, data_seed=..., seed=spec.seed,
        snapshot_steps=..., probes=..., order=...)``.

        Explicit data orders (samplers, :mod:`weightlab.train.samplers`): ``orders`` maps
        each member's data seed (``spec.data_seed``, or the population's ``data_seed``) to
        a ``(T, cfg.batch_size)`` index tensor, the same ``T`` for all; member ``i`` then
        trains ``T`` steps on ``orders[seed_i]`` as ``train(..., order=orders[seed_i])``
        does. ``None``: :func:`weightlab.train.batch_indices` per data seed.

        Divergence: a member whose mean training loss since the last evaluation is
        non-finite at an evaluation gets ``diverged=True`` and ``diverged_step``; that
        evaluation is recorded, then the member stops updating (weights and optimizer state
        frozen) and gets no further evaluations, snapshots or probes. The others go on,
        unaffected: nothing is reduced across members.

        Probes: the built-ins (``Probe.kind`` other than ``"user"``) are computed for all
        members at once; user probes run per member on a materialized module.

        Raises:
            ConfigError: before training, for a snapshot step outside ``[0, T]``, a
                warm-up longer than the run, a parameter group matching nothing, a loss
                that does not fit the task, a batch larger than the train split, or
                ``orders`` missing a member's data seed or malformed.
        """
        return self._train(self._plan(data, cfg, snapshot_steps, probes, orders), progress)

    def _plan(
        self,
        data: TaskData,
        cfg: TrainConfig,
        snapshot_steps: Sequence[int],
        probes: Sequence[Probe],
        orders: Mapping[int, torch.Tensor] | None = None,
    ) -> _Run:
        """Everything :meth:`fit` checks and derives before the first update: any bad
        input raises here, before a weight changes (a sweep plans every bucket first)."""
        if not isinstance(cfg, TrainConfig):
            raise ConfigError("cfg must be a weightlab.train.TrainConfig")
        probes = check_probes(probes)
        data = cast_data(data.to(self.device), self.dtype)
        self._measure(data)
        if not self._is_fast():
            model = self.factory(self.specs[0].seed).to(self.dtype)
            refuse_random_forward(model, data.train.x[:2].cpu())
        n_train = len(data.train)
        spe = steps_per_epoch(n_train, cfg.batch_size)
        total = spe * cfg.epochs
        seeds = [s.data_seed if s.data_seed is not None else self.data_seed for s in self.specs]
        if orders is not None:
            orders = _check_orders(orders, seeds, n_train, cfg.batch_size)
            total = next(iter(orders.values())).shape[0]
        snaps = check_snapshot_steps(snapshot_steps, total)
        optims = [s.optim if s.optim is not None else cfg.optim for s in self.specs]
        multipliers = {}
        for o in dict.fromkeys(optims):
            o.schedule.check(total)
            if o.groups:
                multipliers[o] = resolve_groups(self._param_names, o.groups, self.template)
        loss = EngineLoss.resolve(cfg.loss, data.kind, data.output_shape)
        if orders is None:
            orders = {
                ds: batch_indices(n_train, cfg.batch_size, cfg.epochs, ds)
                for ds in sorted(set(seeds))
            }
        return _Run(
            data=data,
            spe=spe,
            total=total,
            batch_size=cfg.batch_size,
            evals=set(eval_steps(total, spe, cfg.eval_every)),
            snaps=snaps,
            probes=probes,
            loss=loss,
            probe_loss=resolve_loss(cfg.loss, data.kind, len(data.output_shape)),
            stats={
                name: target_stats(split.y) if data.kind == "regression" else None
                for name, split in (("val", data.val), ("test", data.test))
            },
            optims=optims,
            multipliers=multipliers,
            seeds=seeds,
            orders={ds: orders[ds].to(self.device) for ds in sorted(set(seeds))},
        )

    def _train(self, run: _Run, progress: bool) -> list[TrainResult]:
        """Train every member as :meth:`fit` describes, on a checked :meth:`_plan`."""
        data, total, snaps, probes = run.data, run.total, run.snaps, run.probes
        optims, seeds, orders = run.optims, run.seeds, run.orders
        results = [TrainResult(history=[]) for _ in self.specs]
        chunks = self._chunks(run.batch_size)
        bar = None
        if progress:
            bar = progress_bar(total * len(self.specs), "population", "member-step", leave=False)
        x_all = _rows(data.train.x) if self._is_fast() else data.train.x
        for members in chunks:
            # equal optimizer configs on consecutive engine positions (one range per config
            # in every optimizer call); positions map back through ``members`` everywhere
            members = [members[p] for p in config_blocks([optims[i] for i in members])]
            opt_kwargs = {
                "total_steps": total,
                "multipliers": run.multipliers,
                "seeds": [self.specs[i].seed for i in members],  # SGLD's noise streams
            }
            engine = self._engine(members, [optims[i] for i in members], run.loss, opt_kwargs)
            chunk_seeds = [seeds[i] for i in members]
            shared = len(set(chunk_seeds)) == 1
            order = (
                orders[chunk_seeds[0]]
                if shared
                else torch.stack([orders[s] for s in chunk_seeds], dim=1)
            )  # (steps, B) or (steps, n, B)
            live = list(range(len(members)))  # chunk positions still training
            init = engine.flat.detach().clone() if probes else None
            if 0 in snaps:
                self._snapshot(members, engine, results, 0, live)
            self._probe(run, members, engine, results, 0, live, init)
            running = torch.zeros(len(members), device=self.device, dtype=torch.float64)
            count = 0
            rows = self._eval_rows(len(members))
            for step in range(1, total + 1):
                due = [p for p in probes if p.due(step)]
                engine.opt.record_grad_norm = any(p.kind == "grad_norm" for p in due)
                engine.opt.record_grad = any(p.kind == "user" for p in due)
                idx = order[step - 1]
                running += engine.train_step(x_all[idx], data.train.y[idx])
                count += 1
                if step in snaps:
                    self._snapshot(members, engine, results, step, live)
                if due:
                    self._probe(run, members, engine, results, step, live, init, due)
                if step in run.evals:
                    gone = self._evaluate_point(
                        run, members, engine, results, rows, step, running / count, live
                    )
                    running.zero_()
                    count = 0
                    if gone:
                        engine.opt.freeze(gone)
                        live = [j for j in live if j not in gone]
                if bar is not None:
                    bar.update(len(members))
                if not live:
                    break
            self._store(members, engine)
            del engine
        if bar is not None:
            bar.close()
        return results

    def _snapshot(self, members, engine, results, step: int, live: list[int]) -> None:
        params = {k: v.detach().to("cpu", copy=True) for k, v in engine.params().items()}
        buffers = {k: v.detach().to("cpu", copy=True) for k, v in engine.buffers().items()}
        for j in live:
            snap = {k: params[k][j].clone() for k in self._param_names}
            snap.update({k: buffers[k][j].clone() for k in self._buffer_names})
            results[members[j]].snapshots[step] = snap

    def _evaluate_point(
        self, run, members, engine, results, rows, step, train_loss, live
    ) -> list[int]:
        """Append each live member's :class:`EvalPoint`; return the chunk positions whose
        training loss is non-finite (flagged diverged at ``step``)."""
        data, spe = run.data, run.spe
        metrics = {}
        for name, split in (("val", data.val), ("test", data.test)):
            if len(split) == 0:  # no examples: NaN metrics (null in run files), as in the loop
                nan = [math.nan] * len(members)
                if data.kind == "regression":
                    metrics[name] = (nan, None, nan, nan)
                else:
                    metrics[name] = (nan, nan, None, None)
                continue
            loss, second = engine.evaluate(split, rows)
            loss = (loss / len(split)).tolist()
            if data.kind == "regression":
                ss_tot, y_sq = run.stats[name]
                r2, rel = r2_and_rel_err(second, ss_tot.to(second.device), y_sq.to(second.device))
                metrics[name] = (loss, None, r2.tolist(), rel.tolist())
            else:
                metrics[name] = (loss, (second.double() / len(split)).tolist(), None, None)
        tr = train_loss.tolist()
        gone = []
        for j in live:
            v, t = metrics["val"], metrics["test"]

            def at(values, j=j):
                return None if values is None else values[j]

            point = EvalPoint(
                step,
                step / spe,
                tr[j],
                v[0][j],
                at(v[1]),
                t[0][j],
                at(t[1]),
                val_r2=at(v[2]),
                test_r2=at(t[2]),
                val_rel_err=at(v[3]),
                test_rel_err=at(t[3]),
            )
            res = results[members[j]]
            res.history.append(point)
            if not math.isfinite(tr[j]):
                res.diverged, res.diverged_step = True, step
                gone.append(j)
        return gone

    # -- probes --------------------------------------------------------------------------
    def _probe(self, run, members, engine, results, step, live, init, due=None) -> None:
        """Run the probes due at ``step`` for the live members: built-ins vectorized over
        the chunk (:mod:`weightlab.train.probes` math with a member dim), user probes per
        member on a materialized module. Rows match :func:`weightlab.train.train`'s."""
        due = [p for p in run.probes if p.due(step)] if due is None else due
        if not due or not live:
            return
        params = engine.params()
        shapes = {k: v.shape[1:] for k, v in params.items()}
        init_views = engine.layout.views(init) if init is not None else None
        rows: dict[int, dict] = {j: {"step": step} for j in live}
        for p in due:
            per_member = None  # {key: (N,) tensor} for built-ins
            if p.kind == "weight_norm":
                names = probe_param_names(p, shapes)
                per_member = {
                    f"{p.name}/{k}": v
                    for k, v in layer_norms({n: params[n] for n in names}, 1).items()
                }
            elif p.kind == "relative_change":
                names = probe_param_names(p, shapes)
                changes = relative_changes({n: params[n] for n in names}, init_views, 1)
                per_member = {f"{p.name}/{k}": v for k, v in changes.items()}
            elif p.kind == "distance_from_init":
                per_member = {p.name: total_distance(params, init_views, 1)}
            elif p.kind == "grad_norm":
                per_member = {} if step == 0 else {p.name: engine.opt.last_grad_norm}
            elif p.kind == "train_loss":
                split = run.data.train
                total, _ = engine.evaluate(split, self._eval_rows(len(members)))
                per_member = {p.name: total / len(split)}
            elif p.kind == "params":
                self._param_probe(p, params, init_views, live, rows)
                continue
            if per_member is not None:
                for key, vals in per_member.items():
                    vals = vals.detach().to("cpu", torch.float64).tolist()
                    for j in live:
                        rows[j][key] = float(vals[j])
                continue
            for j in live:  # user probe: one member at a time
                row = self._user_probe(p, run, members, engine, step, j, init_views)
                row.pop("step")
                rows[j].update(row)
        for j in live:
            results[members[j]].probes.append(rows[j])

    @staticmethod
    def _param_probe(probe, params, init_views, live, rows) -> None:
        """A :func:`~weightlab.train.probes.param_probe`: one call on the stacked members."""
        value = probe.stacked(params, init_views, 1)
        items = value.items() if isinstance(value, Mapping) else [(None, value)]
        for key, vals in items:
            full = probe.name if key is None else f"{probe.name}/{key}"
            vals = torch.as_tensor(vals).detach().to("cpu")
            for j in live:
                rows[j][full] = to_jsonable(vals[j], full)

    def _user_probe(self, probe, run, members, engine, step, j, init_views) -> dict:
        i = members[j]
        model = self._module(
            i,
            {k: v[j] for k, v in engine.params().items()},
            {k: v[j] for k, v in engine.buffers().items()},
        )
        grads = None
        if step > 0 and engine.opt.last_grad is not None:
            grads = {k: v[j].clone() for k, v in engine.layout.views(engine.opt.last_grad).items()}
        ctx = ProbeContext(
            step,
            run.data,
            run.probe_loss,
            {k: v[j].clone() for k, v in init_views.items()},
            grads,
            self.specs[i].seed,
        )
        return run_probes([probe], model, ctx) or {"step": step}

    # -- inspection ----------------------------------------------------------------------
    def member(self, i: int) -> nn.Module:
        """An ordinary module (the factory's architecture, on the population's device) with
        member ``i``'s current weights and buffers; its masks attached with
        :func:`weightlab.core.apply_masks`."""
        if not -len(self) <= i < len(self):
            raise ConfigError(f"member index {i} out of range for a population of {len(self)}")
        i = i % len(self)
        return self._module(
            i,
            {k: v[i] for k, v in self._params.items()},
            {k: v[i] for k, v in self._buffers.items()},
        )

    def _module(
        self, i: int, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]
    ) -> nn.Module:
        """``factory(seed_i)`` in the population's dtype on its device, holding ``params``
        and ``buffers``, with member ``i``'s masks attached."""
        model = self.factory(self.specs[i].seed).to(self.device)
        model = model.to(self.dtype)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name])
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        if self.specs[i].masks:
            apply_masks(model, {k: v.to(self.device) for k, v in self.specs[i].masks.items()})
        return model

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s current weights and buffers in :func:`take_snapshot` format (CPU)."""
        out = {k: self._params[k][i].detach().to("cpu", copy=True) for k in self._param_names}
        out.update({k: self._buffers[k][i].to("cpu", copy=True) for k in self._buffer_names})
        return out

    def evaluate(self, split: Split, loss: object = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean loss and a score on ``split`` (eval mode), each of shape ``(N,)``.

        Integer targets: ``(loss, accuracy)``, cross-entropy by default. Float targets
        (regression): ``(loss, R²)``, MSE by default. ``loss`` is a ``TrainConfig.loss``.
        """
        split = split.to(self.device)
        y = split.y.to(self.dtype) if split.y.is_floating_point() else split.y
        x = split.x.to(self.dtype) if split.x.is_floating_point() else split.x  # token ids stay
        split = Split(x, y)
        kind = "regression" if y.is_floating_point() else "classification"
        eloss = EngineLoss.resolve(loss, kind, tuple(y.shape[1:]))
        self._measure_split(split)
        losses = torch.empty(len(self), dtype=torch.float64)
        scores = torch.empty(len(self), dtype=torch.float64)
        stats = target_stats(y) if kind == "regression" else None
        for members in self._chunks(1, optimizers=False):
            engine = self._engine(members, None, eloss)
            total, second = engine.evaluate(split, self._eval_rows(len(members)))
            losses[members] = total.cpu() / len(split)
            if stats is None:
                scores[members] = second.cpu().double() / len(split)
            else:
                scores[members] = r2_and_rel_err(second.cpu(), *stats)[0].cpu()
        return losses.to(self.dtype), scores.to(self.dtype)

    def _measure_split(self, split: Split) -> None:
        fake = TaskData("eval", split, split, split, 0)
        self._measure(fake)

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``weights.safetensors`` (stacked weights, buffers, per-member masks), then
        ``manifest.json`` (format version, the weights file's SHA-256, specs with optimizer
        settings, data seed, budget, dtype); both atomic, the manifest last, so a
        manifest always describes the weights file next to it."""
        directory = Path(directory)
        tensors = {f"param/{k}": v.detach().cpu().contiguous() for k, v in self._params.items()}
        tensors.update({f"buffer/{k}": v.cpu().contiguous() for k, v in self._buffers.items()})
        members = []
        for i, s in enumerate(self.specs):
            for k, m in (s.masks or {}).items():
                tensors[f"mask/{i}/{k}"] = m.detach().to("cpu", torch.float32).contiguous()
            members.append(
                {
                    "seed": int(s.seed),
                    "data_seed": s.data_seed,
                    "optim": None if s.optim is None else s.optim.to_dict(),
                    "masks": sorted(s.masks or {}),
                }
            )
        manifest = {
            "format": "weightlab.population",
            "version": FORMAT_VERSION,
            "data_seed": self.data_seed,
            "memory_budget_mib": self.memory_budget_mib,
            "dtype": str(self.dtype).removeprefix("torch."),
            "members": members,
        }
        save_tensors(directory / "weights.safetensors", tensors)
        manifest["weights_sha256"] = _sha256(directory / "weights.safetensors")
        atomic_write_json(directory / "manifest.json", manifest)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        factory: Callable[[int], nn.Module],
        device: torch.device | str = "cpu",
    ) -> Population:
        """Rebuild a population saved with :meth:`save` (weights, buffers, masks, specs).

        Raises:
            RunFileError: not a saved population, a format version this weightlab does not
                read, or a weights file whose SHA-256 differs from the manifest's.
        """
        directory = Path(directory)
        manifest = read_json(directory / "manifest.json", "population manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != "weightlab.population":
            raise RunFileError(f"{directory} does not hold a saved weightlab population")
        version = manifest.get("version")
        if version != FORMAT_VERSION:
            raise RunFileError(
                f"saved population in {directory} has format version {version!r}; this "
                f"weightlab reads version {FORMAT_VERSION}: save it again with this version"
            )
        weights = directory / "weights.safetensors"
        if not weights.is_file():
            raise RunFileError(f"{weights} is missing; save the population again")
        if _sha256(weights) != manifest.get("weights_sha256"):
            raise RunFileError(
                f"{weights} does not match its manifest (SHA-256 differs); the files were "
                "modified or mixed from two saves: save the population again"
            )
        tensors = load_tensors(weights)
        dtype = getattr(torch, str(manifest.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise RunFileError(f"saved population in {directory} has an unknown dtype")
        try:
            specs = []
            for i, m in enumerate(manifest["members"]):
                optim = m["optim"]
                if optim is not None:
                    optim = OptimConfig.from_dict(optim)
                masks = {k: tensors[f"mask/{i}/{k}"] for k in m["masks"]} or None
                state = {
                    k[len("param/") :]: v[i] for k, v in tensors.items() if k.startswith("param/")
                }
                state.update(
                    {
                        k[len("buffer/") :]: v[i]
                        for k, v in tensors.items()
                        if k.startswith("buffer/")
                    }
                )
                specs.append(MemberSpec(m["seed"], m["data_seed"], optim, masks, state))
            pop = cls(
                factory,
                specs,
                device,
                manifest["data_seed"],
                manifest["memory_budget_mib"],
                dtype=dtype,
            )
        except (KeyError, TypeError, IndexError) as e:
            raise RunFileError(
                f"saved population in {directory} is incomplete ({e}); save it again"
            ) from e
        for s in pop.specs:  # the loaded weights are the current state, not an init to keep
            s.init_state = None
        return pop


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class _Run:
    """What one :meth:`Population.fit` call checked and derives, shared across its chunks."""

    data: TaskData
    spe: int
    total: int
    batch_size: int
    evals: set[int]
    snaps: set[int]
    probes: tuple[Probe, ...]
    loss: EngineLoss
    probe_loss: Callable
    stats: dict[str, tuple[torch.Tensor, torch.Tensor] | None]
    optims: list[OptimConfig]  # per member
    multipliers: dict[OptimConfig, dict[str, tuple[float, float]]]  # configs with groups
    seeds: list[int]  # data-order seed per member
    orders: dict[int, torch.Tensor]  # data-order seed -> (steps, B) batch indices


def _check_orders(
    orders: Mapping[int, torch.Tensor], seeds: list[int], n: int, batch_size: int
) -> dict[int, torch.Tensor]:
    """``Population.fit``'s explicit orders, checked: one per member data seed, each a
    valid :func:`~weightlab.train.samplers.check_order` tensor, all with one step count."""
    if not isinstance(orders, Mapping):
        raise ConfigError(
            "orders must map each member's data seed to a (steps, batch) index tensor"
        )
    missing = sorted(set(seeds) - set(orders))
    if missing:
        raise ConfigError(
            f"orders has no data order for data seed(s) {missing[:5]}; pass one per "
            "member data seed"
        )
    checked = {ds: check_order(orders[ds], n, batch_size) for ds in sorted(set(seeds))}
    steps = sorted({o.shape[0] for o in checked.values()})
    if len(steps) > 1:
        raise ConfigError(
            f"orders have different step counts {steps}; a population trains every member "
            "for the same number of steps"
        )
    return checked


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Inputs as ``(n, features)`` rows for the MLP fast path (``MLP.forward``'s
    ``flatten(1)``; a SIREN's 1-D inputs become ``(n, 1)``)."""
    return x.reshape(x.shape[0], -1)
