"""Recipe ``random-teachers``: Sarnthein, Bachmann, Anagnostidis & Hofmann (2023), "Random
Teachers are Good Teachers" (row [#33]), a reduced version (a small CNN, 50 epochs).

Per seed, a teacher :class:`~weightlab.dynamics.random_teachers.DinoNet` (two convolutions,
32 channels, kernel 5, stride 2; DINO head 224-512-64, L2-normalized, → 1,024) is drawn and
frozen at its random initialization. Students start at ``√(1−ε²)·teacher + ε·fresh``
(:func:`~weightlab.dynamics.random_teachers.near_teacher`), ``ε ∈ {1e-3, 0.5, 1}``, and
distil the teacher's outputs on MNIST-1D's training inputs (labels unused): cross-entropy
from ``softmax(teacher/0.04)`` to ``softmax(student/0.1)``, AdamW (lr 1e-3, weight decay
0.04), batch 256, 50 epochs, no augmentation, no centering. The Gaussian-input arm
distils the same teacher at ``ε = 1e-3`` on i.i.d. ``N(0, 1)`` inputs of the same shape and
number (MNIST-1D's inputs have mean 0 and std 1 overall). The three data students of a
seed train as one population (they share inputs and targets); the Gaussian student is a
population of one.

Every network is read by the linear probe (:func:`weightlab.probes.linear_probe.linear_probe`:
standardized backbone features, scikit-learn's C = 1 logistic regression, fit on
MNIST-1D's 3,500 training examples, accuracy on its 1,000 test examples). A student's
*gain* is its probe accuracy minus its teacher's.

Claims (thresholds fixed here, seed means):

- (1) "a strong improvement of the distilled student over its teacher in terms of probing
  accuracy": at ``ε = 1e-3`` the student's probe ≥ the teacher's + 2 pts;
- (2) "deteriorate strongly if trained on random inputs": the Gaussian-input gain ≤ half
  the data gain; judged only if (1) held (else there is no gain to lose);
- (3) "the process of feature learning is strongly amplified if the student is initialized
  closely to the teacher": the gain at ``ε = 1e-3`` ≥ the gain at ``ε = 1`` + 1 pt.

Preconditions: the teacher's probe learned (≥ chance + 10 pts); no student diverged; for
(3), every student's held-out distillation loss fell during training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError, DataError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.options import float_list
from weightlab.recipes.stats import mean_std
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE_GAIN = (
    "we observe a strong improvement of the distilled student over its teacher in terms of "
    "probing accuracy"
)
QUOTE_RANDOM = "deteriorate strongly if trained on random inputs"
QUOTE_CLOSE = (
    "the process of feature learning is strongly amplified if the student is initialized "
    "closely to the teacher"
)
# Fixed claim thresholds (from the issue), not options.
GAIN_PTS = 2.0  # (1) student >= teacher + 2 pts at the smallest eps
RANDOM_FRACTION = 0.5  # (2) Gaussian-input gain <= half the data gain
CLOSE_PTS = 1.0  # (3) gain(smallest eps) >= gain(eps = 1) + 1 pt
GAUSSIAN_EPS = 1e-3
PAPER_EPOCHS = 50


@dataclass(frozen=True)
class RandomTeachersConfig(RecipeConfig):
    data: str = opt("mnist1d", "task: MNIST-1D (labels are used by the probe only)")
    eps: str = opt("0.001,0.5,1", "student distances ε from the teacher (increasing, in (0, 1])")
    epochs: int = opt(50, "distillation epochs", min=1, max=10000)
    batch_size: int = opt(256, "batch size", min=1)
    lr: float = opt(1e-3, "AdamW learning rate", gt=0, max=100)
    weight_decay: float = opt(0.04, "AdamW decoupled weight decay", min=0, max=10)
    channels: int = opt(32, "convolution channels of the backbone", min=1, max=1024)
    hidden: int = opt(512, "DINO head hidden width", min=1, max=8192)
    out_dim: int = opt(1024, "DINO output dimension K", min=2, max=65536)
    train_examples: int = opt(
        0, "distil and probe on the first N training examples (0: all 3,500)", min=0
    )
    gaussian_arm: bool = opt(True, "also distil on Gaussian inputs (claim 2)")

    def __post_init__(self) -> None:
        super().__post_init__()
        float_list(self.eps, "eps", gt=0, le=1, increasing=True, sort=False)

    @property
    def eps_values(self) -> list[float]:
        return [float(e) for e in self.eps.split(",")]


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "arm": str,
            "eps": num,
            "inputs": str,
            "probe_acc": num,
            "probe_train_acc": num,
            "loss_start": num,
            "loss_final": num,
            "diverged": bool,
        },
        "members",
    )


def _finite(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


class RandomTeachers(Recipe):
    name = "random-teachers"
    family = "dynamics"
    row = 33
    paper = (
        "Sarnthein, Bachmann, Anagnostidis & Hofmann 2023, Random Teachers are Good Teachers "
        "(arXiv:2302.12091)"
    )
    claim = (
        "a student distilled from a frozen random teacher probes better than the teacher; the "
        "gain collapses on Gaussian inputs and grows when the student starts near the teacher"
    )
    Config = RandomTeachersConfig
    tasks = ("mnist1d",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 1,
        "epochs": 1,
        "eps": "0.001,1",
        "batch_size": 128,
        "hidden": 32,
        "out_dim": 32,
        "channels": 4,
        "train_examples": 256,
    }
    broken: ClassVar[dict] = {"lr": 100.0, "epochs": 1}
    # measured in-process, one thread, loaded 2-core machine: 1.9 s CPU (6.5 s wall) the
    # first run of a process, 1.0 s after
    smoke_seconds = 2.0

    def validate(self, cfg: RandomTeachersConfig, data_sizes: dict[str, int]) -> None:
        n = cfg.train_examples or data_sizes["train"]
        if n > data_sizes["train"]:
            raise ConfigError(
                f"--train-examples {cfg.train_examples} exceeds the {data_sizes['train']} "
                "training examples"
            )
        if cfg.batch_size > n:
            raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {n} training examples")

    def run(self, cfg: RandomTeachersConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.recipes.units import seed_units

        data = self.load_data(cfg)
        if data.input_shape != (40,):
            raise ConfigError(
                f"--data {cfg.data}: this recipe's CNN needs 40-long 1-D inputs; got "
                f"{data.input_shape}"
            )

        def compute(s: int):
            return {"members": self.seed_members(cfg, data, s)}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    @staticmethod
    def seed_members(cfg: RandomTeachersConfig, data, s: int) -> list[dict]:
        """Teacher and students of seed ``s``, each probed."""
        from weightlab.dynamics.random_teachers import (
            DinoLoss,
            DinoNet,
            distillation_targets,
            near_teacher,
        )
        from weightlab.models.factory import model_factory
        from weightlab.population import MemberSpec
        from weightlab.probes.linear_probe import linear_probe
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig

        n = cfg.train_examples or len(data.train)
        xtr, ytr = data.train.x[:n].cpu(), data.train.y[:n].cpu()
        xte, yte = data.test.x.cpu(), data.test.y.cpu()
        factory = model_factory(
            DinoNet, channels=cfg.channels, hidden=cfg.hidden, out_dim=cfg.out_dim
        )
        teacher = factory(derive_seed("random-teachers", "teacher", s))
        fresh = factory(derive_seed("random-teachers", "fresh", s)).state_dict()
        loss = DinoLoss()
        train_cfg = TrainConfig(
            cfg.epochs,
            cfg.batch_size,
            0,
            OptimConfig("adamw", lr=cfg.lr, weight_decay=cfg.weight_decay),
            loss=loss,
        )

        def probe(model) -> tuple[float | None, float | None]:
            with torch.no_grad():
                ftr, fte = model.features(xtr), model.features(xte)
            try:
                p = linear_probe(ftr, ytr, fte, yte, num_classes=data.num_classes)
            except DataError:  # non-finite features: the member diverged
                return None, None
            return p.accuracy, p.train_accuracy

        def start_loss(init: dict) -> float:
            m = factory(0)
            m.load_state_dict(init)
            with torch.no_grad():
                return float(loss(m(xte), task.test.y).mean())

        t_acc, t_tr = probe(teacher)
        out = [
            {
                "seed": s,
                "arm": "teacher",
                "eps": None,
                "inputs": "none",
                "probe_acc": t_acc,
                "probe_train_acc": t_tr,
                "loss_start": None,
                "loss_final": None,
                "diverged": t_acc is None,
            }
        ]
        arms = [("data", e) for e in cfg.eps_values]
        if cfg.gaussian_arm:
            arms.append(("gaussian", GAUSSIAN_EPS))
        for inputs in ("data", "gaussian"):
            todo = [e for i, e in arms if i == inputs]
            if not todo:
                continue
            x = xtr
            if inputs == "gaussian":
                g = generator(derive_seed("random-teachers", "gaussian", s))
                x = torch.randn(xtr.shape, generator=g)
            task = distillation_targets(teacher, x, xte, f"distil-{inputs}")
            inits = [near_teacher(teacher.state_dict(), fresh, e) for e in todo]
            specs = [
                MemberSpec(
                    seed=derive_seed("random-teachers", "student", s, inputs, e),
                    init_state=init,
                    data_seed=derive_seed("random-teachers", "order", s),
                )
                for e, init in zip(todo, inits, strict=True)
            ]
            results, finals = train_members(factory, specs, task, train_cfg, device=cfg.device)
            for e, init, res, final in zip(todo, inits, results, finals, strict=True):
                student = factory(0)
                student.load_state_dict(final)
                acc, tr = probe(student)
                diverged = bool(res.diverged) or acc is None
                out.append(
                    {
                        "seed": s,
                        "arm": f"{inputs} eps={e:g}",
                        "eps": e,
                        "inputs": inputs,
                        "probe_acc": acc,
                        "probe_train_acc": tr,
                        "loss_start": _finite(start_loss(init)),
                        "loss_final": _finite(res.final.test_loss),
                        "diverged": diverged,
                    }
                )
        return out

    # -- summary and claims -----------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"{m['arm']} seed {m['seed']}"

    def summarize(self, cfg: RandomTeachersConfig, records: list[dict], chance: float) -> dict:
        seeds = sorted({m["seed"] for m in records})
        teacher = {m["seed"]: m for m in records if m["arm"] == "teacher"}
        rows = []
        arm_names = ["teacher"] + list(dict.fromkeys(m["arm"] for m in records if m["eps"]))
        for arm in arm_names:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["probe_acc"] for m in kept]
            gains = [
                100 * (m["probe_acc"] - teacher[m["seed"]]["probe_acc"])
                for m in kept
                if arm != "teacher" and not teacher[m["seed"]]["diverged"]
            ]
            am, asd = mean_std(acc)
            gm, gsd = mean_std(gains) if gains else (None, None)
            rows.append(
                {
                    "arm": arm,
                    "eps": ms[0]["eps"],
                    "inputs": ms[0]["inputs"],
                    "probe_acc_mean": am,
                    "probe_acc_std": asd,
                    "probe_acc_values": acc,
                    "gain_mean": gm,
                    "gain_std": gsd,
                    "loss_start_mean": mean_std([m["loss_start"] for m in kept])[0]
                    if arm != "teacher"
                    else None,
                    "loss_final_mean": mean_std([m["loss_final"] for m in kept])[0]
                    if arm != "teacher"
                    else None,
                    "loss_fell": all(
                        m["loss_final"] is not None and m["loss_final"] < m["loss_start"]
                        for m in kept
                    )
                    if arm != "teacher"
                    else None,
                    "n": len(kept),
                    "excluded": [self.member_name(m) for m in ms if m["diverged"]],
                }
            )
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "eps_values": cfg.eps_values,
            "chance_pct": chance,
            "seeds": len(seeds),
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "reduced_version": (
                "reduced version: a small 1-D CNN on MNIST-1D; the paper distils larger "
                "networks on image data"
            ),
            "epochs": cfg.epochs,
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        """(1) gain at the smallest ε >= 2 pts; (2) Gaussian gain <= half of it (if (1)
        held); (3) gain at the smallest ε >= gain at ε = 1 + 1 pt."""
        rows = summary["rows"]
        by = {r["arm"]: r for r in rows}
        teacher = by["teacher"]
        data_rows = sorted((r for r in rows if r["inputs"] == "data"), key=lambda r: r["eps"])
        close = data_rows[0] if data_rows else None
        far = next((r for r in data_rows if r["eps"] == 1.0), None)
        gauss = next((r for r in rows if r["inputs"] == "gaussian"), None)
        learned = baseline_learned(
            teacher["probe_acc_mean"], chance=summary["chance_pct"], name="teacher probe"
        )
        excluded = [n for r in rows for n in r["excluded"]]

        def gain_of(r):
            return r["gain_mean"] if r and r["gain_mean"] is not None else math.nan

        def check_1():
            g = gain_of(close)
            detail = (
                f"teacher probe {teacher['probe_acc_mean']:.2f}%, student at ε={close['eps']:g} "
                f"{close['probe_acc_mean']:.2f}% (gain {g:+.2f} pts, std "
                f"{close['gain_std']:.2f}); needed >= +{GAIN_PTS:g}"
            )
            return g >= GAIN_PTS, detail, {"gain_pts": g, "teacher": teacher["probe_acc_mean"]}

        held_1 = None
        if not learned and close is not None and not no_divergence(excluded):
            held_1 = check_1()[0]

        def check_2():
            gd, gg = gain_of(close), gain_of(gauss)
            ok = gg <= RANDOM_FRACTION * gd
            detail = (
                f"gain on data {gd:+.2f} pts, on Gaussian inputs {gg:+.2f} pts; needed "
                f"Gaussian <= {RANDOM_FRACTION:g} x data = {RANDOM_FRACTION * gd:+.2f}"
            )
            return ok, detail, {"data_gain_pts": gd, "gaussian_gain_pts": gg}

        def check_3():
            gc, gf = gain_of(close), gain_of(far)
            detail = (
                f"gain at ε={close['eps']:g} {gc:+.2f} pts, at ε=1 {gf:+.2f} pts "
                f"(difference {gc - gf:+.2f}); needed >= +{CLOSE_PTS:g}"
            )
            return gc >= gf + CLOSE_PTS, detail, {"close_gain_pts": gc, "far_gain_pts": gf}

        no_close = None if close else "the run has no data student"
        no_gauss = None if gauss else "the run has no Gaussian-input arm (--gaussian-arm)"
        no_far = None if far else "the run has no student at ε = 1"
        not_1 = (
            None
            if held_1
            else "claim (1) did not hold, so there is no data gain to deteriorate"
            if held_1 is False
            else "claim (1) was not tested"
        )
        fell = [
            f"{r['arm']}'s held-out distillation loss did not fall"
            for r in data_rows
            if not r["loss_fell"]
        ]
        return [
            judge(
                "1",
                QUOTE_GAIN,
                f"at the smallest ε the student's linear-probe accuracy is >= the teacher's "
                f"+ {GAIN_PTS:g} pts (seed means)",
                [no_close, learned, no_divergence(excluded)],
                check_1,
            ),
            judge(
                "2",
                QUOTE_RANDOM,
                f"the Gaussian-input student's gain is <= {RANDOM_FRACTION:g} x the data gain "
                "(judged only where claim (1) held)",
                [no_close, no_gauss, learned, no_divergence(excluded), not_1],
                check_2,
            ),
            judge(
                "3",
                QUOTE_CLOSE,
                f"the gain at the smallest ε is >= the gain at ε = 1 + {CLOSE_PTS:g} pt",
                [no_close, no_far, learned, no_divergence(excluded), *fell],
                check_3,
            ),
        ]

    # -- report -----------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        def f(v, digits=2, sign=False):
            if v is None or not math.isfinite(v):
                return ""
            return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"

        rows = [
            [
                r["arm"],
                f"{f(r['probe_acc_mean'])} ± {f(r['probe_acc_std'])}",
                (
                    f"{f(r['gain_mean'], sign=True)} ± {f(r['gain_std'])}"
                    if r["gain_mean"] is not None
                    else ""
                ),
                f"{f(r['loss_start_mean'], 3)} → {f(r['loss_final_mean'], 3)}"
                if r["loss_start_mean"] is not None
                else "",
                str(r["n"]) + (f" ({len(r['excluded'])} diverged)" if r["excluded"] else ""),
            ]
            for r in summary["rows"]
        ]
        title = (
            f"Linear-probe test accuracy (%) of the backbone features, mean ± std over "
            f"{summary['seeds']} seeds; gain = student − its teacher; held-out distillation "
            f"loss at start → after {summary['epochs']} epochs — {summary['reduced_version']}"
        )
        return [(title, ["arm", "probe acc %", "gain (pts)", "distillation loss", "n"], rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        colors = [
            "gray"
            if r["arm"] == "teacher"
            else "tab:orange"
            if r["inputs"] == "gaussian"
            else "tab:blue"
            for r in rows
        ]
        means = [r["probe_acc_mean"] if r["probe_acc_mean"] is not None else math.nan for r in rows]
        stds = [r["probe_acc_std"] if r["probe_acc_std"] is not None else 0.0 for r in rows]
        xs = range(len(rows))
        ax.bar(xs, means, yerr=stds, color=colors, capsize=3)
        for x, r in zip(xs, rows, strict=True):
            ax.scatter([x] * len(r["probe_acc_values"]), r["probe_acc_values"], color="k", s=8)
        ax.set_xticks(list(xs), [r["arm"] for r in rows], rotation=20, fontsize=8)
        finite = [m for m in means if math.isfinite(m)]
        if finite:
            ax.set_ylim(max(0.0, min(finite) - 10), min(100.0, max(finite) + 5))
        ax.set_ylabel("linear-probe test accuracy (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.set_title("Random teacher vs distilled students (MNIST-1D backbone features)")
        return [Figure("probe_accuracy.png", "Probe accuracy per arm", figure_png(fig))]
