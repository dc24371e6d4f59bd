"""Recipe ``n2n-compression``: Ashok et al. (2018), "N2N Learning: Network to Network
Compression via Policy Gradient Reinforcement Learning" (row [#90]), a reduced version.

The paper compresses CNN teachers (ResNet-34 and others) with ~100 episodes of 5 rollouts
per stage, each student distilled for 5 epochs on the full training set. Here:

- **teacher**: an MLP of ``depth`` Linear layers at ``width`` (default 8 × 256) trained on
  MNIST-1D once per run (one unit, one teacher seed);
- **stage 1** (default): a bidirectional-LSTM policy keeps or removes each layer
  (:class:`weightlab.sparsity.n2n.RemovalPolicy`), ``episodes × rollouts`` students
  (40 × 4), REINFORCE with a moving-average baseline; ``--stages 2`` adds stage 2, a
  shrink policy on the best stage-1 student (:class:`~weightlab.sparsity.n2n.ShrinkPolicy`);
- **students**: the kept layers start from the teacher's weights where shapes allow
  (:func:`~weightlab.sparsity.n2n.inherit_state`) and are distilled for one epoch on a seeded
  subset of 1,000 training examples, MSE on the teacher's logits (the authors' code);
  reward ``C (2 − C) · A_student / A_teacher`` on validation accuracy;
- **control**: random search draws as many architectures (keep each layer with
  probability 1/2; uniform shrink fractions in stage 2).

Within a search seed a student's reward is a function of its architecture only (fixed
subset, data order and fresh-layer seeds), so rewards are cached by architecture (as the
authors' code caches by model hash) and shared by the policy and the random control: the
comparison measures which sampler *finds* better students. Units: the teacher, then per
search seed the random control (its students as one population per student shape) and the
policy search (episodes in order; each episode's new students as one bucketed population).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from weightlab.core.snapshots import take_snapshot
from weightlab.errors import ConfigError
from weightlab.models.factory import build, model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.members import train_members
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.distill import distillation_task, label_accuracy
from weightlab.sparsity.n2n import (
    INVALID_REWARD,
    SHRINK_FRACTIONS,
    MovingBaseline,
    PolicyOptimizer,
    RemovalPolicy,
    ShrinkPolicy,
    compression,
    inherit_state,
    layer_features,
    mlp_params,
    n2n_reward,
    random_removal,
    random_shrink,
    reinforce_loss,
    student_widths,
)
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "Our approach uses this reward signal with policy gradients to train the policies to find "
    "a locally optimal student network."
)
WIN_SEEDS = 4  # the policy's best reward beats random's in at least this many seeds (of 5)
SAMPLERS = ("policy", "random")


@dataclass(frozen=True)
class N2NConfig(RecipeConfig):
    seeds: int = opt(5, "search seeds (policy and random control each)", min=1, max=100)
    depth: int = opt(8, "Linear layers of the teacher MLP", min=2, max=32)
    width: int = opt(256, "hidden width of the teacher MLP", min=2, max=4096)
    teacher_epochs: int = opt(30, "teacher training epochs (Adam)", min=1, max=1000)
    teacher_lr: float = opt(1e-3, "teacher learning rate (Adam)", gt=0, max=10)
    teacher_batch: int = opt(100, "teacher batch size", min=1)
    stages: int = opt(
        1, "1: layer removal only; 2: then shrink the best stage-1 student", choices=(1, 2)
    )
    episodes: int = opt(40, "policy updates per stage", min=1, max=10000)
    rollouts: int = opt(4, "students sampled per episode", min=1, max=256)
    student_samples: int = opt(1000, "training examples each student is distilled on", min=1)
    student_epochs: int = opt(1, "distillation epochs per student", min=1, max=1000)
    student_batch: int = opt(25, "student batch size", min=1)
    student_lr: float = opt(
        3e-3,
        "student learning rate (Adam; the authors use 5e-4 for 5 full epochs, students here "
        "get 40 steps)",
        gt=0,
        max=10,
    )
    policy_lr: float = opt(
        0.01,
        "policy learning rate (Adam; the authors use 0.003 over 100 episodes, here 40)",
        gt=0,
        max=10,
    )
    baseline_decay: float = opt(0.8, "decay of the moving-average reward baseline", min=0, lt=1)
    engine: str = opt(
        "population",
        "train each batch of new students as bucketed populations, or in a plain loop",
        choices=("population", "loop"),
    )


def _arch_key(keep: list[bool], fractions: list[float] | None) -> str:
    key = "".join("1" if k else "0" for k in keep)
    if fractions is not None:
        key += ":" + ",".join(f"{f:g}" for f in fractions)
    return key


def _check_teacher(m: dict) -> None:
    expect_fields(
        m,
        {"val_acc": (int, float), "test_acc": (int, float), "params": int, "diverged": bool},
        "the metrics",
    )


_STUDENT = {
    "key": str,
    "widths": list,
    "params": int,
    "compression": (int, float),
    "val_acc": (int, float, type(None)),
    "test_acc": (int, float, type(None)),
    "reward": (int, float),
    "diverged": bool,
}


def _check_search(m: dict) -> None:
    expect_fields(
        m, {"seed": int, "sampler": str, "samples": list, "students": list}, "the metrics"
    )
    expect_list_of(m["students"], _STUDENT, "students")
    expect_list_of(m["samples"], {"key": str, "reward": (int, float), "stage": int}, "samples")


class N2NCompression(Recipe):
    name = "n2n-compression"
    family = "sparsity"
    row = 90
    paper = (
        "Ashok et al. 2018, N2N Learning: Network to Network Compression via Policy Gradient "
        "Reinforcement Learning (arXiv:1709.06030)"
    )
    claim = (
        "reduced version (an MLP teacher, short student distillation): a REINFORCE policy over "
        "layer removal (then shrinkage) finds students with higher reward C(2-C)·A_s/A_t than "
        "random search with the same budget"
    )
    Config = N2NConfig
    tasks = ("mnist1d", "digits")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "depth": 4,
        "width": 32,
        "teacher_epochs": 3,
        "episodes": 3,
        "rollouts": 2,
        "student_samples": 200,
        "student_batch": 50,
    }
    # Adam at lr 10 wrecks the teacher: its accuracy stays near chance, so no claim is tested.
    broken: ClassVar[dict] = {"teacher_lr": 10.0, "teacher_epochs": 1}
    smoke_seconds = 1.6

    # -- setup -----------------------------------------------------------------------
    def _setup(self, cfg: N2NConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; the MLP teacher "
                "needs flat feature vectors"
            )
        widths = [data.input_shape[0], *([cfg.width] * (cfg.depth - 1)), data.num_classes]
        return data, widths

    def validate(self, cfg: N2NConfig, data_sizes: dict[str, int]) -> None:
        """Batches and the students' subset must fit the training split."""
        n = data_sizes["train"]
        if cfg.teacher_batch > n:
            raise ConfigError(
                f"--teacher-batch {cfg.teacher_batch} exceeds the {n} training examples"
            )
        if cfg.student_samples > n:
            raise ConfigError(
                f"--student-samples {cfg.student_samples} exceeds the {n} training examples; "
                f"choose at most {n}"
            )
        if cfg.student_batch > cfg.student_samples:
            raise ConfigError(
                f"--student-batch {cfg.student_batch} exceeds --student-samples "
                f"{cfg.student_samples}; choose a smaller batch"
            )
        self._setup(cfg)

    # -- students --------------------------------------------------------------------
    def _evaluate(self, cfg, ctx: dict, archs: list[tuple[list[bool], list[float] | None]]):
        """Rewards of ``archs`` (cached by architecture); trains the uncached ones as
        bucketed populations (or in the loop) and fills ``ctx["cache"]``."""
        cache, widths, seed = ctx["cache"], ctx["widths"], ctx["seed"]
        todo: dict[str, tuple[list[int], dict]] = {}
        for keep, fr in archs:
            key = _arch_key(keep, fr)
            if key in cache or key in todo:
                continue
            sw = student_widths(widths, keep, fr)
            if sw is None:
                cache[key] = {
                    "key": key,
                    "widths": [],
                    "params": 0,
                    "compression": 1.0,
                    "val_acc": None,
                    "test_acc": None,
                    "reward": INVALID_REWARD,
                    "diverged": False,
                }
                continue
            fresh_seed = derive_seed("n2n", "fresh", seed, key)
            fresh = take_snapshot(build(MLP, sw, seed=fresh_seed))
            state, _ = inherit_state(ctx["teacher_state"], widths, keep, sw, fresh)
            todo[key] = (sw, state, fresh_seed)
        if todo:
            self._train_students(cfg, ctx, todo)
        return [cache[_arch_key(k, f)]["reward"] for k, f in archs]

    def _train_students(self, cfg, ctx: dict, todo: dict) -> None:
        from weightlab.population import MemberSpec, Population

        data, dtask, cache = ctx["data"], ctx["dtask"], ctx["cache"]
        tcfg = TrainConfig(
            cfg.student_epochs,
            cfg.student_batch,
            0,
            OptimConfig("adam", lr=cfg.student_lr),
            loss="mse",
        )
        keys = list(todo)
        finals: dict[str, dict] = {}
        diverged: dict[str, bool] = {}
        by_shape: dict[tuple, list[str]] = {}
        for k in keys:
            by_shape.setdefault(tuple(todo[k][0]), []).append(k)
        if cfg.engine == "population":
            factories = {s: model_factory(MLP, list(s)) for s in by_shape}
            members = [
                (tuple(todo[k][0]), MemberSpec(seed=todo[k][2], init_state=todo[k][1]))
                for k in keys
            ]
            pop = Population.sweep(factories, members, device=cfg.device, data_seed=ctx["order"])
            results = pop.fit(dtask, tcfg)
            _, val_acc = pop.evaluate(data.val)
            _, test_acc = pop.evaluate(data.test)
            accs = {k: (float(val_acc[i]), float(test_acc[i])) for i, k in enumerate(keys)}
            diverged = {k: results[i].diverged for i, k in enumerate(keys)}
        else:
            accs = {}
            for shape, ks in by_shape.items():
                specs = [MemberSpec(seed=todo[k][2], init_state=todo[k][1]) for k in ks]
                res, fin = train_members(
                    model_factory(MLP, list(shape)),
                    specs,
                    dtask,
                    tcfg,
                    engine="loop",
                    device=cfg.device,
                    data_seed=ctx["order"],
                )
                for k, r, f in zip(ks, res, fin, strict=True):
                    finals[k] = f
                    diverged[k] = r.diverged
                    model = MLP(list(shape)).to(cfg.device)
                    model.load_state_dict(f)
                    accs[k] = (label_accuracy(model, data.val), label_accuracy(model, data.test))
        for k in keys:
            sw = todo[k][0]
            va, te = accs[k]
            bad = diverged[k] or not math.isfinite(va)
            params = mlp_params(sw)
            cache[k] = {
                "key": k,
                "widths": list(sw),
                "params": params,
                "compression": compression(params, ctx["teacher_params"]),
                "val_acc": None if bad else va,
                "test_acc": None if bad else te,
                "reward": INVALID_REWARD
                if bad
                else n2n_reward(va, ctx["teacher_acc"], params, ctx["teacher_params"]),
                "diverged": bool(diverged[k]),
            }

    # -- search ----------------------------------------------------------------------
    def _search(self, cfg, ctx: dict, sampler: str, stage: int, base: str | None) -> list[dict]:
        """``episodes × rollouts`` samples of one sampler in one stage; returns the samples
        (key, reward, stage, episode) in order."""
        widths, seed = ctx["widths"], ctx["seed"]
        g = generator(derive_seed("n2n", sampler, "draws", seed, stage))
        n_layers = len(widths) - 1
        if stage == 1:
            feats = layer_features(widths)
            policy = build(RemovalPolicy, seed=derive_seed("n2n", "policy", seed, stage))
        else:
            keep = [c == "1" for c in base]
            sw = student_widths(widths, keep)
            feats = layer_features(sw)
            fixed = [False] * (len(sw) - 2) + [True]
            policy = build(ShrinkPolicy, seed=derive_seed("n2n", "policy", seed, stage))
        opt_ = PolicyOptimizer(policy.parameters(), cfg.policy_lr)
        baseline = MovingBaseline(cfg.baseline_decay)
        samples = []
        for e in range(cfg.episodes):
            archs, logps = [], []
            for _ in range(cfg.rollouts):
                if stage == 1:
                    if sampler == "policy":
                        k, lp = policy.sample(feats, g)
                        logps.append(lp)
                    else:
                        k = random_removal(n_layers, g)
                    archs.append((k, None))
                else:
                    if sampler == "policy":
                        fr, lp = policy.sample(feats, g, fixed)
                        logps.append(lp)
                    else:
                        fr = random_shrink(len(sw) - 1, g, SHRINK_FRACTIONS, fixed)
                    archs.append((keep, fr))
            if sampler == "random":
                samples += [{"archs": a, "episode": e} for a in archs]
                continue
            rewards = self._evaluate(cfg, ctx, archs)
            loss = reinforce_loss(logps, baseline.advantages(rewards))
            opt_.step(loss)
            baseline.update(rewards)
            samples += [
                {"key": _arch_key(*a), "reward": r, "stage": stage, "episode": e}
                for a, r in zip(archs, rewards, strict=True)
            ]
            if ctx.get("bar") is not None:
                ctx["bar"].update(cfg.rollouts)
        if sampler == "random":  # independent draws: one batch of students
            archs = [s["archs"] for s in samples]
            rewards = self._evaluate(cfg, ctx, archs)
            samples = [
                {"key": _arch_key(*a), "reward": r, "stage": stage, "episode": s["episode"]}
                for a, s, r in zip(archs, samples, rewards, strict=True)
            ]
            if ctx.get("bar") is not None:
                ctx["bar"].update(len(samples))
        return samples

    # -- run ----------------------------------------------------------------------------
    def run(self, cfg: N2NConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data, widths = self._setup(cfg)
        factory = model_factory(MLP, widths)
        tcfg = TrainConfig(
            cfg.teacher_epochs, cfg.teacher_batch, 0, OptimConfig("adam", lr=cfg.teacher_lr)
        )

        def teacher_unit():
            (res,), (state,) = train_members(
                factory,
                [MemberSpec(seed=derive_seed("n2n", "teacher"))],
                data,
                tcfg,
                device=cfg.device,
                data_seed=derive_seed("n2n", "teacher-data"),
            )
            model = factory(0).to(cfg.device)
            model.load_state_dict(state)
            return {
                "val_acc": label_accuracy(model, data.val),
                "test_acc": label_accuracy(model, data.test),
                "params": mlp_params(widths),
                "diverged": bool(res.diverged),
                "history": [p.to_dict() for p in res.history],
            }, state

        tm, tstate = rd.unit("teacher", teacher_unit, check=_check_teacher)
        teacher = factory(0).to(cfg.device)
        teacher.load_state_dict(tstate)
        chance = 100 * majority_rate(data.test.y)
        per_stage = cfg.episodes * cfg.rollouts
        total = cfg.seeds * 2 * cfg.stages * per_stage
        bar = progress_bar(total, "n2n", "student", progress)
        records = []
        learned = tm["val_acc"] > 0 and not tm["diverged"]
        for s in range(cfg.seeds):
            ctx = {
                "seed": s,
                "widths": widths,
                "data": data,
                "teacher_state": tstate,
                "teacher_acc": tm["val_acc"],
                "teacher_params": tm["params"],
                "order": derive_seed("n2n", "student-order", s),
                "cache": {},
                "bar": bar,
            }
            if learned:
                ctx["dtask"] = distillation_task(
                    data, teacher, n_train=cfg.student_samples, seed=derive_seed("n2n", "subset", s)
                )
            for sampler in ("random", "policy"):

                def compute(sampler=sampler, ctx=ctx):
                    if not learned:  # nothing to distil from: the claim is not tested
                        return {
                            "seed": ctx["seed"],
                            "sampler": sampler,
                            "samples": [],
                            "students": [],
                        }, {}
                    samples = self._search(cfg, ctx, sampler, 1, None)
                    best = max(samples, key=lambda x: (x["reward"], x["key"]))
                    if cfg.stages == 2 and best["reward"] > INVALID_REWARD:
                        samples += self._search(cfg, ctx, sampler, 2, best["key"])
                    keys = dict.fromkeys(x["key"] for x in samples)
                    students = [ctx["cache"][k] for k in keys]
                    return {
                        "seed": ctx["seed"],
                        "sampler": sampler,
                        "samples": samples,
                        "students": students,
                    }, {}

                m, _ = rd.unit(f"{sampler}-s{s}", compute, check=_check_search)
                for st in m["students"]:  # the random control's rewards are shared
                    ctx["cache"].setdefault(st["key"], st)
                records.append(m)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, tm, records, chance)

    # -- summary and claims --------------------------------------------------------------
    def summarize(self, cfg: N2NConfig, teacher: dict, records: list[dict], chance: float) -> dict:
        rows = []
        for m in records:
            if not m["samples"]:
                continue
            rewards = [x["reward"] for x in m["samples"]]
            students = {st["key"]: st for st in m["students"]}
            best = max(m["samples"], key=lambda x: (x["reward"], x["key"]))
            running, cur = [], -math.inf
            for r in rewards:
                cur = max(cur, r)
                running.append(cur)
            rows.append(
                {
                    "seed": m["seed"],
                    "sampler": m["sampler"],
                    "best_reward": best["reward"],
                    "best": students[best["key"]],
                    "mean_reward": sum(rewards) / len(rewards),
                    "distinct": len(students),
                    "running_best": running,
                    "rewards": rewards,
                    "diverged": [k for k, st in students.items() if st["diverged"]],
                }
            )
        claims = [c.to_dict() for c in self.check_claims(teacher, rows, chance, cfg.seeds)]
        diverged = sorted(
            {f"{r['sampler']} seed {r['seed']} {k}" for r in rows for k in r["diverged"]}
        )
        best = max(
            (r for r in rows),
            key=lambda r: (r["best_reward"], r["sampler"] == "policy"),
            default=None,
        )
        # each distinct trained student once: the samplers of a seed share their students,
        # and an empty student trains nothing
        trained = {(m["seed"], st["key"]) for m in records for st in m["students"] if st["widths"]}
        summary_rows = []
        for sampler in SAMPLERS:
            rs = [r for r in rows if r["sampler"] == sampler]
            bm, bs = mean_std([r["best_reward"] for r in rs])
            mm, ms = mean_std([r["mean_reward"] for r in rs])
            summary_rows.append(
                {
                    "sampler": sampler,
                    "best_reward_mean": bm,
                    "best_reward_std": bs,
                    "mean_reward_mean": mm,
                    "mean_reward_std": ms,
                    "distinct_mean": mean_std([r["distinct"] for r in rs])[0],
                    "n": len(rs),
                }
            )
        return {
            "recipe": self.name,
            "paper": self.paper,
            "reduced_version": (
                f"reduced version: MLP teacher {cfg.depth}x{cfg.width} on {cfg.data}, "
                f"{cfg.episodes} episodes x "
                f"{cfg.rollouts} rollouts per stage, students distilled {cfg.student_epochs} "
                f"epoch(s) on {cfg.student_samples} examples (the paper: CNN teachers, ~100 "
                "episodes x 5 rollouts, 5 epochs on the full data)"
            ),
            "stages": cfg.stages,
            "teacher": {k: teacher[k] for k in ("val_acc", "test_acc", "params", "diverged")},
            "chance_pct": chance,
            "rows": rows,
            "summary_rows": summary_rows,
            "best_student": None
            if best is None
            else {"sampler": best["sampler"], "seed": best["seed"], **best["best"]},
            "claims": claims,
            "members": 1 + len(trained),
            "diverged_members": diverged,
        }

    @staticmethod
    def check_claims(
        teacher: dict, rows: list[dict], chance: float, seeds: int
    ) -> list[ClaimResult]:
        """Policy vs random: the seed mean of the best reward, and the number of seeds in
        which the policy's best reward is strictly higher (at least ``WIN_SEEDS`` of 5,
        scaled to the number of seeds)."""
        pol = {r["seed"]: r for r in rows if r["sampler"] == "policy"}
        rnd = {r["seed"]: r for r in rows if r["sampler"] == "random"}
        common = sorted(set(pol) & set(rnd))
        need = math.ceil(WIN_SEEDS / 5 * seeds)
        pre = [
            baseline_learned(
                None if teacher["diverged"] else 100 * teacher["test_acc"],
                chance=chance,
                name="teacher",
            ),
            None if common else "no seed has both a policy and a random search",
            no_divergence(
                f"{r['sampler']} seed {r['seed']} {k}" for r in rows for k in r["diverged"]
            ),
        ]

        def check():
            p = [pol[s]["best_reward"] for s in common]
            q = [rnd[s]["best_reward"] for s in common]
            wins = sum(a > b for a, b in zip(p, q, strict=True))
            pm, qm = sum(p) / len(p), sum(q) / len(q)
            held = pm > qm and wins >= need
            detail = (
                f"best reward: policy {pm:.4f} vs random {qm:.4f} (mean over {len(common)} seeds); "
                f"policy higher in {wins}/{len(common)} seeds, needed mean higher and >= {need}"
            )
            return (
                held,
                detail,
                {
                    "policy_best": p,
                    "random_best": q,
                    "wins": wins,
                    "needed_wins": need,
                    "seeds": common,
                },
            )

        return [
            judge(
                "a",
                QUOTE,
                f"the policy's best reward beats random search's (same number of students) on "
                f"the seed mean and in >= {need} of {seeds} seeds",
                pre,
                check,
            )
        ]

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        t = summary["teacher"]
        out = [
            (
                f"Teacher ({summary['reduced_version']})",
                ["params", "val acc %", "test acc %"],
                [[str(t["params"]), f"{100 * t['val_acc']:.1f}", f"{100 * t['test_acc']:.1f}"]],
            )
        ]
        out.append(
            (
                "Search (mean ± std over seeds)",
                ["sampler", "best reward", "mean reward", "distinct students", "seeds"],
                [
                    [
                        r["sampler"],
                        _pm(r["best_reward_mean"], r["best_reward_std"], 4),
                        _pm(r["mean_reward_mean"], r["mean_reward_std"], 4),
                        f"{r['distinct_mean']:.1f}" if r["n"] else "n/a",
                        str(r["n"]),
                    ]
                    for r in summary["summary_rows"]
                ],
            )
        )
        rows = []
        for r in summary["rows"]:
            b = r["best"]
            acc = "n/a" if b["test_acc"] is None else f"{100 * b['test_acc']:.1f}"
            rows.append(
                [
                    str(r["seed"]),
                    r["sampler"],
                    f"{r['best_reward']:.4f}",
                    b["key"],
                    "-".join(map(str, b["widths"])),
                    f"{b['params']} ({100 * b['compression']:.1f}% removed)",
                    acc,
                ]
            )
        out.append(
            (
                "Best student per seed and sampler (reported only)",
                ["seed", "sampler", "reward", "keep flags", "widths", "params", "test acc %"],
                rows,
            )
        )
        return out

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = {"policy": "tab:blue", "random": "tab:orange"}
        for sampler in SAMPLERS:
            rs = [r for r in summary["rows"] if r["sampler"] == sampler]
            if not rs:
                continue
            n = min(len(r["running_best"]) for r in rs)
            for r in rs:
                axes[0].plot(
                    range(1, n + 1), r["running_best"][:n], color=colors[sampler], alpha=0.25
                )
            mean = [sum(r["running_best"][i] for r in rs) / len(rs) for i in range(n)]
            axes[0].plot(range(1, n + 1), mean, color=colors[sampler], lw=2, label=sampler)
            mr = [sum(r["rewards"][i] for r in rs) / len(rs) for i in range(n)]
            axes[1].plot(range(1, n + 1), mr, ".", color=colors[sampler], ms=3, label=sampler)
        axes[0].set_ylabel("best reward so far (empty student: -1)")
        axes[0].set_ylim(bottom=0)
        axes[1].set_ylabel("reward of each sample (mean over seeds)")
        for ax in axes:
            ax.set_xlabel("students sampled")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle("N2N: policy search vs random search (thin: seeds; thick: mean)")
        png = figure_png(fig)
        return [Figure("search_rewards.png", "Best reward vs students sampled", png)]
