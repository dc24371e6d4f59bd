"""Recipe ``continual-hypernet``: Chandra et al. (2022), "Continual Learning with Dependency
Preserving Hypernetworks" (row [#75]), reduced to split digits.

Split digits (8×8 scikit-learn digits), 5 tasks of 2 classes ({0, 1}, {2, 3}, …),
task-incremental (the task id is given at test time); inputs ``(x − μ)/(σ + 0.1)`` per
feature with the train split's statistics. Target network 64-64-64-2 (ReLU, 8,450
parameters). Three learners per seed, each trained 500 Adam steps (lr 1e-3, batch 32) per
task, on the same data order:

- ``mlp``: the chunked MLP hypernetwork (29 chunks of 300, chunk and task embeddings of 32,
  hidden 64-64: 28,908 parameters, hypnettorch's ``ChunkedHMLP``), output regularizer
  β = 0.01 (von Oswald et al. 2020);
- ``rnn``: the RNN hypernetwork (weightlab's LSTM, H = 38: 28,444 parameters), same
  regularizer;
- ``finetune``: sequential fine-tuning, a shared 64-64-64 trunk and one 2-way head per task
  (all seeds as one population; trunk carried over, each task's head drawn fresh).

All seeds of one hypernetwork train as one population of generators
(:class:`~weightlab.hyper.continual.HyperPopulation`: parameters stacked, one vmapped
hypernetwork call and one vmapped target forward per step) in the ONE loop
(:func:`weightlab.train.train`), one call per task; each seed keeps its own data order
(:func:`stack_orders`) and the regularizer enters through the per-example loss. After each
task every seed's weights for all tasks seen come from one hypernetwork call. Training runs
on one intra-op thread (64-wide layers). A reduced version of the paper's split MNIST/CIFAR
settings: digits instead of MNIST, 500 steps per task.

Claims, on the mean over tasks of the final test accuracy (after the last task), seed means:
(a) each hypernetwork ≥ fine-tuning + 2 pts; (b) RNN ≥ MLP + 0.5 pt, and (a) for the RNN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from weightlab.core.snapshots import take_snapshot
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.continual import (
    ChunkedMLPHypernet,
    ChunkedRNNHypernet,
    HyperPopulation,
)
from weightlab.models.factory import build, model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.threads import intra_op_threads
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import evaluate_split, train
from weightlab.train.order import batch_indices, steps_per_epoch

ARMS = ("mlp", "rnn", "finetune")
HYPER_ARMS = ("mlp", "rnn")
LABELS = {"mlp": "MLP hypernetwork", "rnn": "RNN hypernetwork", "finetune": "fine-tuning"}
QUOTE_A = (
    "An effective approach to address such continual learning (CL) problems is to use "
    "hypernetworks which generate task dependent weights for a target network."
)
QUOTE_B = (
    "the proposed methods based on the RNN hypernetworks outperformed the baselines in all "
    "these CL settings and tasks"
)
# Fixed claim thresholds (from the issue), not options.
HYPER_OVER_FINETUNE_PTS = 2.0  # (a) each hypernetwork >= fine-tuning + 2 pts
RNN_OVER_MLP_PTS = 0.5  # (b) RNN >= MLP + 0.5 pt (and (a) for the RNN)
NORM_EPS = 0.1  # inputs (x - mu) / (sigma + 0.1)
CLASSES_PER_TASK = 2


@dataclass(frozen=True)
class ContinualHypernetConfig(RecipeConfig):
    seeds: int = opt(5, "number of independent seeds (error bars are over seeds)", min=1, max=100)
    data: str = opt("digits", "task: digits, split into 5 tasks of 2 classes")
    steps_per_task: int = opt(500, "Adam steps per task", min=1, max=100000)
    batch_size: int = opt(32, "batch size", min=1)
    lr: float = opt(1e-3, "Adam learning rate (every learner)", gt=0, max=10)
    beta: float = opt(0.01, "output-regularizer strength β", min=0, max=1e6)
    hidden: int = opt(64, "target network hidden width (64-h-h-2)", min=1, max=4096)
    chunk_size: int = opt(300, "hypernetwork chunk size", min=1, max=100000)
    emb_size: int = opt(32, "chunk and task embedding size", min=1, max=4096)
    mlp_width: int = opt(64, "MLP hypernetwork hidden width (two layers)", min=1, max=4096)
    rnn_hidden: int = opt(38, "RNN hypernetwork LSTM hidden size", min=1, max=4096)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"arm": str, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "diverged": bool,
            "acc_matrix": list,
            "final_acc": list,
            "just_trained_acc": list,
            "final_mean": (int, float, type(None)),
            "parameters": int,
        },
        "members",
    )
    for i, m in enumerate(metrics["members"]):
        if m["arm"] not in ARMS:
            raise ValueError(f"members[{i}] has arm {m['arm']!r}, expected one of {ARMS}")


def split_tasks(data: TaskData, classes_per_task: int = CLASSES_PER_TASK) -> list[TaskData]:
    """The split task: task ``t`` holds classes ``t·k … t·k + k − 1`` relabelled ``0 … k−1``;
    inputs normalized ``(x − μ)/(σ + 0.1)`` with the whole train split's per-feature mean
    and standard deviation."""
    mu = data.train.x.mean(dim=0)
    sd = data.train.x.std(dim=0)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return (x - mu) / (sd + NORM_EPS)

    tasks = []
    for t in range(data.num_classes // classes_per_task):
        lo = t * classes_per_task

        def part(split: Split, lo: int = lo) -> Split:
            keep = (split.y >= lo) & (split.y < lo + classes_per_task)
            return Split(norm(split.x[keep]), split.y[keep] - lo)

        tasks.append(
            TaskData(
                f"{data.name}-task{t}",
                part(data.train),
                part(data.val),
                part(data.test),
                classes_per_task,
                "classification",
            )
        )
    return tasks


def stack_orders(task: TaskData, orders: list[torch.Tensor]) -> tuple[TaskData, torch.Tensor]:
    """Per-member data orders as one task for :class:`HyperPopulation`: example ``k`` of
    the stacked train split holds member ``n``'s ``k``-th example of its own order
    (``x (S·B, N, in)``, ``y (S·B, N)``), read in sequence (the returned order). Validation
    and test splits are empty (members are evaluated by ``HyperPopulation.accuracy``)."""
    idx = torch.stack([o.reshape(-1) for o in orders], dim=1)  # (S·B, N)
    x, y = task.train.x[idx], task.train.y[idx]
    empty = Split(x[:0], y[:0])
    stacked = TaskData(task.name, Split(x, y), empty, empty, task.num_classes, task.kind)
    steps, batch = orders[0].shape
    return stacked, torch.arange(steps * batch).view(steps, batch)


def task_order(n: int, batch: int, steps: int, data_seed: int) -> torch.Tensor:
    """``steps`` batches of the seeded epoch permutations (the loop's order, cut)."""
    epochs = math.ceil(steps / steps_per_epoch(n, batch))
    return batch_indices(n, batch, epochs, data_seed)[:steps]


@torch.no_grad()
def _accuracy(model: nn.Module, task: TaskData) -> float:
    m = evaluate_split(model, task.test, "classification", lambda p, y: p.new_zeros(len(y)))
    return 100.0 * m["acc"]


class ContinualHypernet(Recipe):
    name = "continual-hypernet"
    family = "growth"
    row = 75
    paper = (
        "Chandra et al. 2022, Continual Learning with Dependency Preserving Hypernetworks "
        "(arXiv:2209.07712)"
    )
    claim = (
        "hypernetworks beat sequential fine-tuning on split digits, and the RNN hypernetwork "
        "beats the chunked MLP hypernetwork"
    )
    Config = ContinualHypernetConfig
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "steps_per_task": 4}
    broken: ClassVar[dict] = {"lr": 10.0}
    # measured in-process, one thread, digits cached, CPU time (2 shared cores, load ~7):
    # 1.6 s; the first run of a process 5.3-5.9 s (torch.optim's one-time import of
    # torch._dynamo, matplotlib)
    smoke_seconds = 1.6

    def validate(self, cfg: ContinualHypernetConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits every task's training examples (about a fifth of the split)."""
        data = self.load_data(cfg)
        if len(data.input_shape) != 1 or data.num_classes < 2 * CLASSES_PER_TASK:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape} and "
                f"{data.num_classes} classes; this recipe needs flat inputs and at least "
                f"{2 * CLASSES_PER_TASK} classes (two tasks of {CLASSES_PER_TASK})"
            )
        smallest = min(len(t.train) for t in split_tasks(data))
        if cfg.batch_size > smallest:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the smallest task's {smallest} "
                "training examples; use a smaller batch"
            )

    # -- learners ------------------------------------------------------------------------
    def _target(self, cfg: ContinualHypernetConfig, d_in: int) -> nn.Module:
        return build(MLP, [d_in, cfg.hidden, cfg.hidden, CLASSES_PER_TASK], seed=0)

    def _hypernet(self, cfg, arm: str, num_outputs: int, n_tasks: int, seed: int):
        common = dict(
            chunk_size=cfg.chunk_size,
            chunk_emb_size=cfg.emb_size,
            cond_emb_size=cfg.emb_size,
            num_conds=n_tasks,
            seed=seed,
        )
        if arm == "mlp":
            return ChunkedMLPHypernet(num_outputs, layers=(cfg.mlp_width, cfg.mlp_width), **common)
        return ChunkedRNNHypernet(num_outputs, hidden=cfg.rnn_hidden, **common)

    def _train_cfg(self, cfg, loss) -> TrainConfig:
        return TrainConfig(
            1,
            cfg.batch_size,
            cfg.steps_per_task,
            OptimConfig("adam", lr=cfg.lr),
            loss=loss,
        )

    def _hyper_arm(self, cfg, arm: str, tasks: list[TaskData]) -> list[dict]:
        """All seeds of one hypernetwork as one :class:`HyperPopulation`, trained by the
        loop, one call per task; each seed keeps its own data order (its batches are
        stacked along dim 1). Returns one record per seed."""
        d_in = tasks[0].train.x.shape[1]
        target = self._target(cfg, d_in)
        total = sum(p.numel() for p in target.parameters())
        hnets = [
            self._hypernet(cfg, arm, total, len(tasks), derive_seed(self.name, arm, s))
            for s in range(cfg.seeds)
        ]
        n_params = sum(p.numel() for p in hnets[0].parameters())
        model = HyperPopulation(hnets, target, beta=cfg.beta).to(cfg.device)
        rows = []
        diverged = False
        for t, task in enumerate(tasks):
            model.start_task(t)
            orders = [
                task_order(
                    len(task.train),
                    cfg.batch_size,
                    cfg.steps_per_task,
                    derive_seed(self.name, "data", s, t),
                )
                for s in range(cfg.seeds)
            ]
            stacked, order = stack_orders(task, orders)
            res = train(model, stacked, self._train_cfg(cfg, model.loss), 0, order=order)
            diverged = diverged or res.diverged
            rows.append(model.accuracy(tasks, t))
        out = []
        for s in range(cfg.seeds):
            matrix = [[None if math.isnan(v) else float(v) for v in r[s].tolist()] for r in rows]
            out.append(self._record(arm, s, matrix, diverged, n_params))
        return out

    def _finetune(self, cfg, tasks: list[TaskData], progress: bool) -> list[dict]:
        """Fine-tuning, all seeds as one population per task: the trunk (layers 0, 1)
        carries over, each task's head (layer 2) is drawn fresh; heads kept for testing."""
        from weightlab.population import MemberSpec, Population

        d_in = tasks[0].train.x.shape[1]
        widths = [d_in, cfg.hidden, cfg.hidden, CLASSES_PER_TASK]
        factory = model_factory(MLP, widths)
        trunk: dict[int, dict] = {}
        heads: dict[int, list[dict]] = {s: [] for s in range(cfg.seeds)}
        matrices: dict[int, list] = {s: [] for s in range(cfg.seeds)}
        diverged = {s: False for s in range(cfg.seeds)}
        train_cfg = self._train_cfg(cfg, "auto")
        for t, task in enumerate(tasks):
            specs, orders = [], {}
            for s in range(cfg.seeds):
                head_seed = derive_seed(self.name, "finetune", s, t)
                state = take_snapshot(factory(head_seed))
                if t > 0:
                    state.update(trunk[s])
                ds = derive_seed(self.name, "data", s, t)
                orders[ds] = task_order(len(task.train), cfg.batch_size, cfg.steps_per_task, ds)
                specs.append(MemberSpec(seed=head_seed, data_seed=ds, init_state=state))
            pop = Population(factory, specs, device=cfg.device)
            results = pop.fit(task, train_cfg, orders=orders)
            for s in range(cfg.seeds):
                state = pop.state(s)
                diverged[s] = diverged[s] or results[s].diverged
                trunk[s] = {k: v for k, v in state.items() if not k.startswith("layers.2.")}
                heads[s].append({k: v for k, v in state.items() if k.startswith("layers.2.")})
                model = factory(0)
                row = []
                for j in range(t + 1):
                    model.load_state_dict({**trunk[s], **heads[s][j]})
                    row.append(_accuracy(model, tasks[j]))
                matrices[s].append(row)
        n_params = sum(p.numel() for p in factory(0).parameters()) + (len(tasks) - 1) * (
            cfg.hidden * CLASSES_PER_TASK + CLASSES_PER_TASK
        )
        return [
            self._record("finetune", s, matrices[s], diverged[s], n_params)
            for s in range(cfg.seeds)
        ]

    @staticmethod
    def _record(arm: str, s: int, matrix: list, diverged: bool, n_params: int) -> dict:
        final = matrix[-1]
        finite = [a for a in final if a is not None and math.isfinite(a)]
        return {
            "arm": arm,
            "seed": s,
            "diverged": bool(diverged or len(finite) < len(final)),
            "acc_matrix": matrix,
            "final_acc": final,
            "just_trained_acc": [matrix[t][t] for t in range(len(matrix))],
            "final_mean": sum(finite) / len(finite) if len(finite) == len(final) else None,
            "parameters": n_params,
        }

    # -- run -----------------------------------------------------------------------------
    def run(self, cfg: ContinualHypernetConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        tasks = split_tasks(data)
        records: list[dict] = []
        bar = progress_bar(len(ARMS), self.name, "unit", progress, line_each_update=True)
        for arm in ("finetune", *HYPER_ARMS):
            if arm == "finetune":
                key = "finetune"

                def compute():
                    return {"arm": "finetune", "members": self._finetune(cfg, tasks, progress)}, {}
            else:
                key = arm

                def compute(arm=arm):
                    return {"arm": arm, "members": self._hyper_arm(cfg, arm, tasks)}, {}

            with intra_op_threads(1):  # 64-wide layers: splitting each op over threads only costs
                metrics, _ = rd.unit(key, compute, check=_check_unit)
            records.extend(metrics["members"])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        chance = [100 * majority_rate(t.test.y) for t in tasks]
        return self.summarize(cfg, records, chance)

    # -- summary and claims -----------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"{m['arm']} seed {m['seed']}"

    def summarize(self, cfg, records: list[dict], chance: list[float]) -> dict:
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            n_tasks = len(chance)
            fm, fs = mean_std([m["final_mean"] for m in kept])
            per_task = [mean_std([m["final_acc"][j] for m in kept]) for j in range(n_tasks)]
            just = [mean_std([m["just_trained_acc"][j] for m in kept]) for j in range(n_tasks)]
            seen = [
                mean_std([sum(m["acc_matrix"][t]) / (t + 1) for m in kept])[0]
                for t in range(n_tasks)
            ]
            rows.append(
                {
                    "arm": arm,
                    "final_mean": fm,
                    "final_std": fs,
                    "final_values": [m["final_mean"] for m in kept],
                    "seeds": [m["seed"] for m in kept],
                    "per_task_final": [x[0] for x in per_task],
                    "per_task_final_std": [x[1] for x in per_task],
                    "just_trained": [x[0] for x in just],
                    "forgetting": [a[0] - b[0] for a, b in zip(just, per_task, strict=True)],
                    "seen_mean_after_task": seen,
                    "parameters": ms[0]["parameters"] if ms else 0,
                    "diverged": len(ms) - len(kept),
                    "excluded": [self.member_name(m) for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "reduced_version": (
                f"reduced version: split digits (8×8) instead of split MNIST/CIFAR, "
                f"{cfg.steps_per_task} Adam steps per task"
            ),
            "accuracy": (
                "test accuracy (%) of each task's 2-way problem after the last task "
                "(task-incremental), mean over the 5 tasks"
            ),
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: list[float]) -> list[ClaimResult]:
        """(a) MLP and RNN hypernetworks each ≥ fine-tuning + 2 pts (mean final accuracy,
        seed means); (b) RNN ≥ MLP + 0.5 pt and RNN ≥ fine-tuning + 2 pts. Preconditions:
        fine-tuning learned every task right after training it (≥ chance + 10 pts), no
        diverged member read."""
        by = {r["arm"]: r for r in rows}
        ft = by["finetune"]
        learned = [
            baseline_learned(a, chance=c, name=f"fine-tuning task {j}")
            for j, (a, c) in enumerate(zip(ft["just_trained"], chance, strict=True))
        ]
        learned = [x for x in learned if x]
        excluded = [n for r in rows for n in r["excluded"]]

        def gap(arm: str) -> float:
            return by[arm]["final_mean"] - ft["final_mean"]

        def check_a():
            ok = {a: gap(a) >= HYPER_OVER_FINETUNE_PTS for a in HYPER_ARMS}
            detail = (
                f"fine-tuning {ft['final_mean']:.2f}%; "
                + ", ".join(
                    f"{LABELS[a]} {by[a]['final_mean']:.2f}% ({gap(a):+.2f} pts)"
                    for a in HYPER_ARMS
                )
                + f"; needed each >= +{HYPER_OVER_FINETUNE_PTS:g}"
            )
            ev = {a: {"final_mean": by[a]["final_mean"], "gap_pts": gap(a)} for a in HYPER_ARMS}
            ev["finetune"] = ft["final_mean"]
            return all(ok.values()), detail, ev

        def check_b():
            d = by["rnn"]["final_mean"] - by["mlp"]["final_mean"]
            ok = d >= RNN_OVER_MLP_PTS and gap("rnn") >= HYPER_OVER_FINETUNE_PTS
            detail = (
                f"RNN {by['rnn']['final_mean']:.2f}% vs MLP {by['mlp']['final_mean']:.2f}% "
                f"({d:+.2f} pts, needed >= +{RNN_OVER_MLP_PTS:g}); RNN vs fine-tuning "
                f"{gap('rnn'):+.2f} pts (needed >= +{HYPER_OVER_FINETUNE_PTS:g})"
            )
            return ok, detail, {"rnn_minus_mlp": d, "rnn_minus_finetune": gap("rnn")}

        pre = [*learned, no_divergence(excluded)]
        return [
            judge(
                "a",
                QUOTE_A,
                f"each hypernetwork's mean final accuracy is >= fine-tuning's + "
                f"{HYPER_OVER_FINETUNE_PTS:g} pts (seed means)",
                pre,
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"the RNN hypernetwork's mean final accuracy is >= the MLP hypernetwork's + "
                f"{RNN_OVER_MLP_PTS:g} pt, and >= fine-tuning's + {HYPER_OVER_FINETUNE_PTS:g}",
                pre,
                check_b,
            ),
        ]

    # -- report ----------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = summary["rows"]
        n_tasks = len(summary["chance_pct"])
        header = ["learner", "parameters", "final acc % (mean over tasks)", "n"]
        header += [f"task {j}" for j in range(n_tasks)]
        out = []
        for r in rows:
            out.append(
                [
                    LABELS[r["arm"]],
                    f"{r['parameters']:,}",
                    _pm(r["final_mean"], r["final_std"], 2),
                    str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
                    *[
                        _pm(m, sd, 1)
                        for m, sd in zip(r["per_task_final"], r["per_task_final_std"], strict=True)
                    ],
                ]
            )
        forget = [
            [
                LABELS[r["arm"]],
                *[
                    f"{_num(a):.1f} / {_num(f):+.1f}"
                    for a, f in zip(r["just_trained"], r["forgetting"], strict=True)
                ],
            ]
            for r in rows
        ]
        title = f"Final test accuracy, mean ± std over seeds — {summary['reduced_version']}"
        return [
            (title, header, out),
            (
                "Accuracy right after training each task / forgetting by the end (pts)",
                ["learner", *[f"task {j}" for j in range(n_tasks)]],
                forget,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        colors = {"mlp": "tab:blue", "rnn": "tab:red", "finetune": "gray"}
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        n = len(summary["chance_pct"])
        width = 0.27
        for i, r in enumerate(rows):
            xs = [j + (i - 1) * width for j in range(n)]
            axes[0].bar(
                xs,
                [_num(v) for v in r["per_task_final"]],
                width,
                yerr=[_num(v) for v in r["per_task_final_std"]],
                color=colors[r["arm"]],
                label=LABELS[r["arm"]],
                capsize=2,
            )
            axes[1].plot(
                range(1, n + 1),
                [_num(v) for v in r["seen_mean_after_task"]],
                "o-",
                color=colors[r["arm"]],
                label=LABELS[r["arm"]],
            )
        axes[0].set_xticks(range(n))
        axes[0].set_xticklabels([f"task {j}" for j in range(n)])
        axes[0].set_ylabel("final test accuracy (%)")
        axes[0].set_ylim(40, 101)
        axes[1].set_xlabel("tasks learned")
        axes[1].set_ylabel("mean test accuracy over tasks seen (%)")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle("Split digits, task-incremental: hypernetworks vs fine-tuning")
        return [
            Figure(
                "continual_accuracy.png", "Final accuracy per task and over tasks", figure_png(fig)
            )
        ]
