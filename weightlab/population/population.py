"""A population: N members of one architecture trained as one computation.

Each member has its own init seed, data order, optimizer settings, mask and start state;
its result equals that member trained alone by :func:`weightlab.train.train` (to float
tolerance): same batches (:func:`weightlab.train.batch_indices`), same evaluation steps,
same metrics. Plain :class:`~weightlab.models.MLP` members take a hand-written batched
fast path (:mod:`weightlab.population.mlp_engine`); any other module runs through
``torch.func.vmap`` (:mod:`weightlab.population.func_engine`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from weightlab.core.mask import _check_mask, apply_masks
from weightlab.core.selectors import is_transform_state
from weightlab.core.snapshots import restore_snapshot, take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, RunFileError
from weightlab.population import mlp_engine
from weightlab.population.func_engine import FuncEngine
from weightlab.population.mlp_engine import MLPEngine
from weightlab.population.spec import MemberSpec
from weightlab.progress import progress_bar
from weightlab.runs.files import atomic_write_json, load_tensors, read_json, save_tensors
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import EvalPoint, TrainResult, eval_steps
from weightlab.train.order import batch_indices, steps_per_epoch

FORMAT_VERSION = 1
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
    """

    def __init__(
        self,
        factory: Callable[[int], nn.Module],
        specs: Sequence[MemberSpec],
        device: torch.device | str = "cpu",
        data_seed: int = 0,
        memory_budget_mib: float = 2048,
    ) -> None:
        specs = list(specs)
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
        self._param_names = [n for n, _ in self.template.named_parameters()]
        self._buffer_names = [n for n, _ in self.template.named_buffers()]
        if any(is_transform_state(n) for n in self._param_names):
            raise ConfigError(
                "the factory must return plain modules; pass masks through MemberSpec.masks"
            )
        members = [self._build_member(i, s) for i, s in enumerate(specs)]
        self._params = {
            k: torch.stack([m[k] for m in members]).to(self.device) for k in self._param_names
        }
        self._buffers = {
            k: torch.stack([m[k] for m in members]).to(self.device) for k in self._buffer_names
        }
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
            restore_snapshot(model, spec.init_state)
        for name, mask in (spec.masks or {}).items():
            if name not in shapes:
                raise ConfigError(
                    f"member {i}: mask for unknown parameter {name!r}; "
                    f"use plain names such as {self._param_names[0]!r}"
                )
            if not isinstance(mask, torch.Tensor):
                raise ConfigError(f"member {i}: mask for {name!r} must be a tensor")
            _check_mask(name, ref[name].detach(), mask.detach().cpu())
        return take_snapshot(model)

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
        return 4 * (state + act + batch * self._input_numel())

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

        model = self.factory(self.specs[0].seed)
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
        self._measured_shape = data.input_shape

    def _chunks(self, batch: int, optimizers: bool = True) -> list[list[int]]:
        """Consecutive member ranges whose estimated memory fits the budget."""
        per = self._per_member_bytes(batch, optimizers)
        size = max(1, int(self.memory_budget_mib * _MIB // per))
        n = len(self.specs)
        return [list(range(s, min(n, s + size))) for s in range(0, n, size)]

    def _eval_rows(self, n: int) -> int:
        per_row = 4 * 3 * (self._activation_numel() + self._input_numel()) * n
        return int(max(1, min(8192, self.memory_budget_mib * _MIB // (2 * per_row))))

    def _engine(self, members: list[int], optims: list[OptimConfig] | None):
        idx = torch.tensor(members, device=self.device)
        params = {k: v.index_select(0, idx) for k, v in self._params.items()}
        masks = {k: v.index_select(0, idx) for k, v in self._masks.items()}
        if self._is_fast():
            return MLPEngine(self.template, params, masks, optims, self.device)
        buffers = {k: v.index_select(0, idx) for k, v in self._buffers.items()}
        template = self.factory(self.specs[0].seed)
        return FuncEngine(template, params, buffers, masks, optims, self.device)

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
    ) -> list[TrainResult]:
        """Train every member; ``results[i]`` has the semantics of
        ``weightlab.train.train(member_i, data, cfg, data_seed=..., snapshot_steps=...)``.

        A member whose training loss becomes non-finite gets ``diverged=True`` (its later
        metrics may be NaN) while the others keep training.
        """
        if not isinstance(cfg, TrainConfig):
            raise ConfigError("cfg must be a weightlab.train.TrainConfig")
        data = data.to(self.device)
        self._measure(data)
        n_train = len(data.train)
        spe = steps_per_epoch(n_train, cfg.batch_size)
        seeds = [s.data_seed if s.data_seed is not None else self.data_seed for s in self.specs]
        orders = {
            ds: batch_indices(n_train, cfg.batch_size, cfg.epochs, ds).to(self.device)
            for ds in sorted(set(seeds))
        }
        total = spe * cfg.epochs
        evals = set(eval_steps(total, spe, cfg.eval_every))
        snaps = {int(s) for s in snapshot_steps}
        optims = [s.optim if s.optim is not None else cfg.optim for s in self.specs]
        results = [TrainResult(history=[]) for _ in self.specs]
        chunks = self._chunks(cfg.batch_size)
        bar = None
        if progress:
            bar = progress_bar(total * len(self.specs), "population", "member-step", leave=False)
        fast = self._is_fast()
        x_all = data.train.x.flatten(1) if fast else data.train.x
        for members in chunks:
            engine = self._engine(members, [optims[i] for i in members])
            chunk_seeds = [seeds[i] for i in members]
            shared = len(set(chunk_seeds)) == 1
            order = (
                orders[chunk_seeds[0]]
                if shared
                else torch.stack([orders[s] for s in chunk_seeds], dim=1)
            )  # (steps, B) or (steps, n, B)
            if 0 in snaps:
                self._snapshot(members, engine, results, 0)
            running = torch.zeros(len(members), device=self.device, dtype=torch.float64)
            count = 0
            rows = self._eval_rows(len(members))
            for step in range(1, total + 1):
                idx = order[step - 1]
                x = x_all[idx]
                y = data.train.y[idx]
                running += engine.train_step(x, y)
                count += 1
                if step in snaps:
                    self._snapshot(members, engine, results, step)
                if step in evals:
                    self._evaluate_point(
                        members, engine, results, data, rows, step, spe, running / count
                    )
                    running.zero_()
                    count = 0
                if bar is not None:
                    bar.update(len(members))
            self._store(members, engine)
            del engine
        if bar is not None:
            bar.close()
        return results

    def _snapshot(self, members, engine, results, step: int) -> None:
        params = {k: v.detach().to("cpu", copy=True) for k, v in engine.params().items()}
        buffers = {k: v.detach().to("cpu", copy=True) for k, v in engine.buffers().items()}
        for j, i in enumerate(members):
            snap = {k: params[k][j].clone() for k in self._param_names}
            snap.update({k: buffers[k][j].clone() for k in self._buffer_names})
            results[i].snapshots[step] = snap

    def _evaluate_point(self, members, engine, results, data, rows, step, spe, train_loss):
        vl, vc = engine.evaluate(data.val, rows)
        tl, tc = engine.evaluate(data.test, rows)
        nv, nt = len(data.val), len(data.test)
        tr = train_loss.tolist()
        vl, vc, tl, tc = (vl / nv).tolist(), vc.tolist(), (tl / nt).tolist(), tc.tolist()
        for j, i in enumerate(members):
            point = EvalPoint(step, step / spe, tr[j], vl[j], vc[j] / nv, tl[j], tc[j] / nt)
            results[i].history.append(point)
            if not math.isfinite(tr[j]):
                results[i].diverged = True

    # -- inspection ----------------------------------------------------------------------
    def member(self, i: int) -> nn.Module:
        """An ordinary module (the factory's architecture, on the population's device) with
        member ``i``'s current weights and buffers; its masks attached with
        :func:`weightlab.core.apply_masks`."""
        if not -len(self) <= i < len(self):
            raise ConfigError(f"member index {i} out of range for a population of {len(self)}")
        i = i % len(self)
        model = self.factory(self.specs[i].seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self._params[name][i])
            for name, b in model.named_buffers():
                b.copy_(self._buffers[name][i])
        model = model.to(self.device)
        if self.specs[i].masks:
            apply_masks(model, {k: v.to(self.device) for k, v in self.specs[i].masks.items()})
        return model

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s current weights and buffers in :func:`take_snapshot` format (CPU)."""
        out = {k: self._params[k][i].detach().to("cpu", copy=True) for k in self._param_names}
        out.update({k: self._buffers[k][i].to("cpu", copy=True) for k in self._buffer_names})
        return out

    def evaluate(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member mean cross-entropy and accuracy on ``split`` (eval mode), shape ``(N,)``."""
        split = split.to(self.device)
        if self._is_fast():
            split = Split(split.x.flatten(1), split.y)
        self._measure_split(split)
        losses = torch.empty(len(self), dtype=torch.float64)
        accs = torch.empty(len(self), dtype=torch.float64)
        for members in self._chunks(1, optimizers=False):
            engine = self._engine(members, None)
            loss, correct = engine.evaluate(split, self._eval_rows(len(members)))
            losses[members] = loss.cpu() / len(split)
            accs[members] = correct.cpu().double() / len(split)
        return losses.float(), accs.float()

    def _measure_split(self, split: Split) -> None:
        fake = TaskData("eval", split, split, split, 0)
        self._measure(fake)

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> None:
        """Write ``weights.safetensors`` (stacked weights, buffers, per-member masks) and
        ``manifest.json`` (specs with optimizer settings, data seed, budget); atomic writes."""
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
            "members": members,
        }
        save_tensors(directory / "weights.safetensors", tensors)
        atomic_write_json(directory / "manifest.json", manifest)

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        factory: Callable[[int], nn.Module],
        device: torch.device | str = "cpu",
    ) -> Population:
        """Rebuild a population saved with :meth:`save` (weights, buffers, masks, specs)."""
        directory = Path(directory)
        manifest = read_json(directory / "manifest.json", "population manifest")
        tensors = load_tensors(directory / "weights.safetensors")
        if not isinstance(manifest, dict) or manifest.get("format") != "weightlab.population":
            raise RunFileError(f"{directory} does not hold a saved weightlab population")
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
            pop = cls(factory, specs, device, manifest["data_seed"], manifest["memory_budget_mib"])
        except (KeyError, TypeError, IndexError) as e:
            raise RunFileError(
                f"saved population in {directory} is incomplete ({e}); save it again"
            ) from e
        for s in pop.specs:  # the loaded weights are the current state, not an init to keep
            s.init_state = None
        return pop
