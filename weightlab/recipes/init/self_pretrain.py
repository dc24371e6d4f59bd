"""Recipe ``self-pretrain``: "Never Train from Scratch: Fair Comparison of Long-Sequence Models
Requires Data-Driven Priors" (Amos, Berant & Gupta 2023, row [#30]).

MNIST-1D read as a sequence of 40 one-value tokens by matched sequence models
(:mod:`weightlab.models.sequence`): a tiny pre-LN Transformer (d 32, 2 layers, 4 heads), a
dilated 1-D CNN (36 channels, 4 layers) and a hand-written GRU (hidden 80); ~18.5k-20.2k
backbone parameters each. Two arms per architecture, the same seeds, heads and data orders:

- (a) random init (the build scheme, PyTorch's default), then supervised training;
- (b) masked-denoising self-pretraining on the *training inputs only*
  (:func:`weightlab.init.self_pretrain.self_pretrain`: 25% of the tokens of each sequence
  masked, squared error at the masked positions, ``copies`` fresh masks of every input per
  epoch), then the same supervised training from the pretrained backbone (head: the seed's
  own init, as in (a)).

Fixed epochs per phase; the supervised epochs are the same in (a) and (b). Every (architecture,
phase) trains its seeds as one population (vmap). Accuracy is test accuracy at the
early-stopping evaluation (minimum validation loss).

Claims, quoted from the abstract ("random initialization leads to gross overestimation of the
differences between architectures"):

1. the best-minus-worst architecture gap (per seed: the largest minus the smallest test
   accuracy over the architectures) after (b) is below (a)'s by more than one standard error
   of the paired difference ``gap_a − gap_b`` over seeds (needs >= 2 seeds);
2. the Transformer gains most: its mean ``(b) − (a)`` accuracy is the largest.

Preconditions: every architecture learns in (a) (mean test accuracy >= chance + 20 pts) and no
member diverged; else "not tested". Rows whose early-stopping step falls in the last 10% of
training are reported as still improving.

Budget (default run <= 5 min on 2 cores): the GRU is *not* in the default ``--archs`` (the
issue allows dropping it). It is the most expensive of the three: ~0.5 ms CPU per example-step
(forward and backward, one thread) against ~0.4 ms for the Transformer and ~0.2-0.3 ms for the
CNN, i.e. ~2 s per member-epoch of MNIST-1D's 3500 training sequences, as one population of
3 seeds as well. With it the budget left ~10 supervised epochs and ~6 pretraining passes,
too few: the Transformer's masked loss stays near the values' variance (~0.9) for the first
~8 passes before it drops to ~0.3 (by 12 passes with 4 heads; with 2 heads one seed had not
dropped by 16). ``--archs transformer,cnn,gru`` runs it (about twice the default's time).
Defaults: Adam, lr 1e-2 in both phases, batch 128, 20 supervised epochs, pretraining 3
epochs x 4 masked copies (12 passes over the inputs), 25% of tokens masked.

The supervised epochs, disclosed: the first default, 15, was chosen while the run's timing
was inflated by two other jobs on the 2 cores (5:20 wall), with the controls still
improving at the end (the CNN's validation loss bottoms out at ~15-18 epochs, the
Transformer's creeps down to the end). Alone on the idle 2-core machine 15 epochs took
3:16, so the default became the most epochs that keep the run <= ~4:30 there (10% under
the 5-minute budget): 20 (4:10; 22 took 4:44). The verdicts depend on it, and all three
runs are reported (2026-11-26): at 15 epochs the gap claim did not hold (paired
(a) − (b) +0.10 pts, SE 0.92) and the Transformer gained most by 0.1 pt; at 20 both held
(+2.23, SE 1.44; gains +2.53 vs +0.30 pts); at 22 both held (+3.13, SE 0.84; +3.53 vs
+0.40).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.init.self_pretrain import pretrained_init, self_pretrain
from weightlab.models.factory import model_factory
from weightlab.models.sequence import ARCHITECTURES, parameter_count
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    LATE_FRACTION,
    judge,
    majority_rate,
    no_divergence,
    still_improving,
)
from weightlab.recipes.members import accuracy_record
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE = (
    "random initialization leads to gross overestimation of the differences between architectures"
)
QUOTE_GAIN = (
    "we find vanilla Transformers to match the performance of S4 on Long Range Arena when "
    "properly pretrained"
)
ARMS = ("random", "pretrained")
# Matched backbones (~18.5k-20.2k parameters): fixed, not options.
ARCH_KWARGS = {
    "transformer": {"d": 32, "layers": 2, "heads": 4},
    "cnn": {"d": 36, "layers": 4, "kernel": 5},
    "gru": {"d": 80},
}
# Fixed thresholds (from the issue), not options.
LEARNED_MARGIN_PTS = 20.0  # precondition: every architecture in (a) >= chance + 20 pts
SE_MULTIPLE = 1.0  # claim 1: the gap shrinks by more than one standard error


def _parse_archs(text: str) -> list[str]:
    archs = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHITECTURES]
    if bad or len(archs) < 2 or len(set(archs)) != len(archs):
        raise ConfigError(
            f"--archs {text!r} must name >= 2 distinct architectures from: "
            f"{', '.join(ARCHITECTURES)}"
        )
    return archs


def _check_pretrain(m: dict) -> None:
    expect_fields(
        m,
        {"arch": str, "seeds": list, "train_loss": list, "val_loss": list, "seconds": float},
        "the metrics",
    )


def _check_train(m: dict) -> None:
    expect_fields(m, {"arch": str, "arm": str, "members": list, "seconds": float}, "the metrics")


def subset_train(data: TaskData, n: int) -> TaskData:
    """``data`` with only the first ``n`` training examples (0: all)."""
    if not n:
        return data
    train = Split(data.train.x[:n], data.train.y[:n])
    return TaskData(data.name, train, data.val, data.test, data.num_classes, data.kind)


@dataclass(frozen=True)
class SelfPretrainConfig(RecipeConfig):
    seeds: int = opt(
        3, "number of seeds (error bars and standard errors are over seeds)", min=1, max=1000
    )
    archs: str = opt(
        "transformer,cnn",
        "architectures, comma-separated, from transformer, cnn, gru (gru: ~2x the time)",
    )
    epochs: int = opt(20, "supervised epochs, the same in (a) and (b)", min=1)
    lr: float = opt(1e-2, "Adam learning rate of the supervised phase", gt=0, max=10)
    pretrain_epochs: int = opt(3, "(b) epochs of the denoising task", min=1)
    copies: int = opt(4, "(b) masked copies of the inputs per pretraining epoch", min=1)
    mask_fraction: float = opt(0.25, "(b) share of tokens masked per sequence", gt=0, lt=1)
    pretrain_lr: float = opt(1e-2, "(b) Adam learning rate of the pretraining", gt=0, max=10)
    batch_size: int = opt(128, "batch size of both phases", min=1)
    n_train: int = opt(0, "training examples kept (the first n of the train split; 0 = all)", min=0)


class SelfPretrain(Recipe):
    name = "self-pretrain"
    family = "init"
    row = 30
    paper = (
        "Amos, Berant & Gupta 2023, Never Train from Scratch: Fair Comparison of Long-Sequence "
        "Models Requires Data-Driven Priors"
    )
    claim = (
        "masked-denoising self-pretraining on the task's own inputs shrinks the accuracy gap "
        "between sequence architectures; the Transformer gains most"
    )
    Config = SelfPretrainConfig
    tasks = ("mnist1d",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 1,
        "pretrain_epochs": 1,
        "copies": 1,
        "n_train": 128,
        "batch_size": 64,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "pretrain_lr": 10.0, "epochs": 1}
    # CPU, warm in-process, one thread; a cold process adds ~3-6 s (first vmap, plotting)
    smoke_seconds = 3.0

    def validate(self, cfg: SelfPretrainConfig, data_sizes: dict[str, int]) -> None:
        """Architectures known, ``n_train`` and the batch within the training split, inputs
        of one sequence each."""
        _parse_archs(cfg.archs)
        n = cfg.n_train or data_sizes["train"]
        if n > data_sizes["train"]:
            raise ConfigError(
                f"--n-train {cfg.n_train} exceeds the {data_sizes['train']} training examples"
            )
        if cfg.batch_size > n:
            raise ConfigError(f"--batch-size {cfg.batch_size} exceeds the {n} training examples")
        shape = self.load_data(cfg).input_shape
        if len(shape) == 1 and not 1 <= round(cfg.mask_fraction * shape[0]) < shape[0]:
            raise ConfigError(
                f"--mask-fraction {cfg.mask_fraction} masks {round(cfg.mask_fraction * shape[0])} "
                f"of {shape[0]} tokens; choose one that masks at least one token and leaves one"
            )

    def run(self, cfg: SelfPretrainConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data = subset_train(self.load_data(cfg), cfg.n_train)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; the sequence models "
                "read (n, L) sequences of one value per token"
            )
        length, k = data.input_shape[0], data.num_classes
        archs = _parse_archs(cfg.archs)
        seeds = list(range(cfg.seeds))
        tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
        pre_optim = OptimConfig("adam", lr=cfg.pretrain_lr)
        records, pretrain, timing = [], {}, []
        bar = progress_bar(3 * len(archs), self.name, "unit", progress, line_each_update=True)
        for arch in archs:
            cls, kw = ARCHITECTURES[arch], ARCH_KWARGS[arch]
            clf = model_factory(cls, length, k, "classify", **kw)
            den = model_factory(cls, length, k, "denoise", **kw)

            def pre(arch=arch, den=den):
                t0 = time.process_time()
                res = self_pretrain(
                    den,
                    data.train.x,
                    mask_fraction=cfg.mask_fraction,
                    copies=cfg.copies,
                    epochs=cfg.pretrain_epochs,
                    batch_size=cfg.batch_size,
                    optim=pre_optim,
                    seeds=seeds,
                    mask_seed=derive_seed(self.name, "mask"),
                    data_seed=derive_seed(self.name, "pretrain-order"),
                    device=cfg.device,
                    progress=progress,
                )
                metrics = {
                    "arch": arch,
                    "seeds": seeds,
                    "train_loss": [[p.train_loss for p in r.history] for r in res.results],
                    "val_loss": [[p.val_loss for p in r.history] for r in res.results],
                    "diverged": [bool(r.diverged) for r in res.results],
                    "seconds": time.process_time() - t0,
                }
                tensors = {
                    f"s{s}.{n}": v
                    for s, st in zip(seeds, res.states, strict=True)
                    for n, v in st.items()
                }
                return metrics, tensors

            pm, states = rd.unit(f"pretrain-{arch}", pre, check=_check_pretrain)
            if pm["seeds"] != seeds:
                raise ConfigError(f"unit pretrain-{arch} was computed for other seeds; use --out")
            pretrain[arch] = pm
            if bar is not None:
                bar.update(1)
            secs = {"pretrain": pm["seconds"]}
            for arm in ARMS:

                def sup(arch=arch, arm=arm, clf=clf, states=states):
                    t0 = time.process_time()
                    specs = []
                    for s in seeds:
                        init = None
                        if arm == "pretrained":
                            prefix = f"s{s}."
                            st = {
                                n[len(prefix) :]: v
                                for n, v in states.items()
                                if n.startswith(prefix)
                            }
                            init = pretrained_init(clf, s, st)
                        specs.append(
                            MemberSpec(
                                seed=s,
                                data_seed=derive_seed(self.name, "data", s),
                                init_state=init,
                            )
                        )
                    results = Population(clf, specs, device=cfg.device).fit(
                        data, tcfg, progress=progress
                    )
                    members = [
                        {
                            "seed": s,
                            **accuracy_record(r),
                            "val_loss": [p.val_loss for p in r.history],
                        }
                        for s, r in zip(seeds, results, strict=True)
                    ]
                    return {
                        "arch": arch,
                        "arm": arm,
                        "members": members,
                        "seconds": time.process_time() - t0,
                    }, {}

                m, _ = rd.unit(f"train-{arch}-{arm}", sup, check=_check_train)
                records.extend({**x, "arch": arch, "arm": arm} for x in m["members"])
                secs[arm] = m["seconds"]
                if bar is not None:
                    bar.update(1)
            timing.append((arch, secs))
        if bar is not None:
            bar.close()
        self._measurements = [self._timing_table(cfg, timing, len(data.train), length, k)]
        return self.summarize(
            cfg, archs, records, pretrain, 100 * majority_rate(data.test.y), length, k
        )

    @staticmethod
    def _timing_table(cfg, timing, n, length, k):
        rows = []
        for arch, secs in timing:
            model = ARCHITECTURES[arch](length, k, **ARCH_KWARGS[arch])
            examples = cfg.seeds * n * cfg.epochs
            rows.append(
                [
                    arch,
                    str(parameter_count(model, backbone_only=True)),
                    f"{secs['pretrain']:.1f}",
                    f"{secs['random']:.1f}",
                    f"{secs['pretrained']:.1f}",
                    f"{1e6 * secs['random'] / examples:.0f}",
                ]
            )
        return (
            "CPU time per phase (process time, all seeds; reported only)",
            [
                "arch",
                "backbone params",
                "pretrain s",
                "(a) s",
                "(b) supervised s",
                "(a) µs per example-step",
            ],
            rows,
        )

    def summarize(self, cfg, archs, records, pretrain, chance, length, k) -> dict:
        rows = []
        for arch in archs:
            for arm in ARMS:
                ms = sorted(
                    (m for m in records if m["arch"] == arch and m["arm"] == arm),
                    key=lambda m: m["seed"],
                )
                kept = [m for m in ms if not m["diverged"]]
                acc = [100 * _num(m["test_acc"]) for m in kept]
                am, asd = mean_std(acc)
                em, esd = mean_std([m["early_stop_step"] for m in kept])
                rows.append(
                    {
                        "arch": arch,
                        "arm": arm,
                        "test_acc_mean": am,
                        "test_acc_std": asd,
                        "test_acc_values": [100 * _num(m["test_acc"]) for m in ms],
                        "early_stop_mean": em,
                        "early_stop_std": esd,
                        "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                        "final_acc_mean": mean_std([100 * _num(m["final_test_acc"]) for m in kept])[
                            0
                        ],
                        "n": len(kept),
                        "excluded": [f"{arch} {arm} seed {m['seed']}" for m in ms if m["diverged"]],
                    }
                )
        pre_rows = []
        for arch in archs:
            pm = pretrain[arch]
            curves = [[_num(v) for v in c] for c in pm["val_loss"]]
            mean_curve = [mean_std(vals)[0] for vals in zip(*curves, strict=True)]
            pre_rows.append(
                {
                    "arch": arch,
                    "val_loss_mean": mean_curve,
                    "train_loss_mean": [
                        mean_std([_num(v) for v in vals])[0]
                        for vals in zip(*pm["train_loss"], strict=True)
                    ],
                    "diverged": [
                        f"{arch} pretraining seed {s}"
                        for s, d in zip(pm["seeds"], pm.get("diverged", []), strict=False)
                        if d
                    ],
                }
            )
        late = still_improving(rows, lambda r: f"{r['arch']} {r['arm']}")
        claims = [c.to_dict() for c in self.check_claims(rows, chance, len(range(cfg.seeds)))]
        diverged = [f"{m['arch']} {m['arm']} seed {m['seed']}" for m in records if m["diverged"]]
        diverged += [d for r in pre_rows for d in r["diverged"]]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": len(records),
            "diverged_members": diverged,
            "archs": archs,
            "params": {
                a: parameter_count(ARCHITECTURES[a](length, k, **ARCH_KWARGS[a]), True)
                for a in archs
            },
            "rows": rows,
            "pretraining": pre_rows,
            "passes_per_epoch": cfg.copies,
            "still_improving": late,
            "chance_pct": chance,
            "claims": claims,
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
        }

    @staticmethod
    def gaps(rows: list[dict], arm: str) -> list[float]:
        """Per seed: the best minus the worst architecture's test accuracy under ``arm``
        (NaN where a member is missing or diverged)."""
        by = [r for r in rows if r["arm"] == arm]
        n = min(len(r["test_acc_values"]) for r in by)
        out = []
        for i in range(n):
            vals = [_num(r["test_acc_values"][i]) for r in by]
            out.append(max(vals) - min(vals) if all(math.isfinite(v) for v in vals) else math.nan)
        return out

    @classmethod
    def check_claims(cls, rows: list[dict], chance: float, seeds: int) -> list[ClaimResult]:
        """(1) gap after (b) below (a)'s by > 1 SE of the paired difference; (2) the
        Transformer's mean gain is the largest. Preconditions: every architecture learned in
        (a) (>= chance + 20 pts), no member diverged; (1) needs >= 2 seeds, (2) a Transformer."""
        random_rows = [r for r in rows if r["arm"] == "random"]
        weak = [
            f"{r['arch']} did not learn under random init: {_num(r['test_acc_mean']):.1f}% < "
            f"chance {chance:.1f}% + {LEARNED_MARGIN_PTS:g} pts"
            for r in random_rows
            if not _num(r["test_acc_mean"]) >= chance + LEARNED_MARGIN_PTS
        ]
        learned = "; ".join(weak) or None
        diverged = no_divergence([e for r in rows for e in r["excluded"]])

        def gap_check():
            ga, gb = cls.gaps(rows, "random"), cls.gaps(rows, "pretrained")
            diffs = [a - b for a, b in zip(ga, gb, strict=True)]
            dm, dsd = mean_std(diffs)
            se = dsd / math.sqrt(len(diffs))
            am, asd = mean_std(ga)
            bm, bsd = mean_std(gb)
            held = dm > SE_MULTIPLE * se
            detail = (
                f"best-minus-worst gap: (a) random {_pm(am, asd)} pts, (b) pretrained "
                f"{_pm(bm, bsd)} pts; paired (a) − (b) = {dm:+.2f} pts, SE {se:.2f} "
                f"(needed > {SE_MULTIPLE:g} SE)"
            )
            return (
                held,
                detail,
                {
                    "gap_random": ga,
                    "gap_pretrained": gb,
                    "difference_mean": dm,
                    "difference_se": se,
                },
            )

        def gain_check():
            gains = {}
            for r in random_rows:
                b = next(x for x in rows if x["arch"] == r["arch"] and x["arm"] == "pretrained")
                d = [
                    _num(bv) - _num(av)
                    for av, bv in zip(r["test_acc_values"], b["test_acc_values"], strict=True)
                ]
                m, s = mean_std(d)
                gains[r["arch"]] = (m, s / math.sqrt(len(d)))
            best = max(gains, key=lambda a: gains[a][0])
            others = [gains[a][0] for a in gains if a != "transformer"]
            held = gains["transformer"][0] > max(others)
            detail = (
                "mean gain (b) − (a): "
                + ", ".join(f"{a} {m:+.2f} ± {se:.2f} SE pts" for a, (m, se) in gains.items())
                + f"; largest: {best}"
            )
            return (
                held,
                detail,
                {
                    "gain_mean": {a: g[0] for a, g in gains.items()},
                    "gain_se": {a: g[1] for a, g in gains.items()},
                },
            )

        has_t = any(r["arch"] == "transformer" for r in rows)
        return [
            judge(
                "gap",
                QUOTE,
                "the best-minus-worst architecture accuracy gap after self-pretraining is below "
                "the gap under random init by more than one standard error (paired over seeds)",
                [
                    learned,
                    diverged,
                    None if seeds >= 2 else "one seed gives no standard error: use --seeds >= 2",
                ],
                gap_check,
            ),
            judge(
                "transformer-gains-most",
                QUOTE_GAIN,
                "the Transformer's mean accuracy gain from self-pretraining is the largest",
                [
                    learned,
                    diverged,
                    None if has_t else "the Transformer is not among --archs",
                ],
                gain_check,
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = [
            [
                r["arch"],
                r["arm"],
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                f"{_num(r['final_acc_mean']):.2f}",
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                f"{_num(r['last_step_mean']):.0f}",
                str(r["n"]),
            ]
            for r in summary["rows"]
        ]
        pre = [
            [
                r["arch"],
                str(summary["params"][r["arch"]]),
                " → ".join(f"{v:.3f}" for v in r["val_loss_mean"]),
            ]
            for r in summary["pretraining"]
        ]
        late = summary.get("still_improving", [])
        return [
            (
                f"Test accuracy at early stop (mean ± std over seeds; chance "
                f"{summary['chance_pct']:.1f}%; still improving in the last "
                f"{LATE_FRACTION:.0%}: {', '.join(late) or 'none'})",
                ["arch", "arm", "test acc %", "final acc %", "early-stop step", "last step", "n"],
                rows,
            ),
            (
                f"Pretraining: masked MSE on held-out masks per epoch (mean over seeds; "
                f"{summary['passes_per_epoch']} passes over the inputs per epoch)",
                ["arch", "backbone params", "masked MSE by epoch"],
                pre,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        archs = summary["archs"]
        by = {(r["arch"], r["arm"]): r for r in summary["rows"]}
        xs = range(len(archs))
        for j, (arm, color) in enumerate((("random", "tab:gray"), ("pretrained", "tab:blue"))):
            axes[0].bar(
                [x + (j - 0.5) * 0.38 for x in xs],
                [_num(by[(a, arm)]["test_acc_mean"]) for a in archs],
                0.38,
                yerr=[_num(by[(a, arm)]["test_acc_std"]) for a in archs],
                capsize=3,
                color=color,
                label={"random": "(a) random init", "pretrained": "(b) self-pretrained"}[arm],
            )
        axes[0].set_xticks(list(xs), archs)
        axes[0].axhline(summary["chance_pct"], color="k", lw=0.8, ls="--", label="chance")
        axes[0].set_ylabel("test accuracy at early stop (%)")
        axes[0].set_title("Supervised accuracy (mean ± std over seeds)")
        for i, r in enumerate(summary["pretraining"]):
            per, color = summary["passes_per_epoch"], f"C{i}"
            xs_p = [per * (j + 1) for j in range(len(r["val_loss_mean"]))]
            axes[1].plot(
                xs_p, r["val_loss_mean"], "o-", ms=3, color=color, label=f"{r['arch']} held-out"
            )
            axes[1].plot(
                xs_p, r["train_loss_mean"], ":", color=color, label=f"{r['arch']} train (mean)"
            )
        axes[1].set_xlabel("passes over the training inputs")
        axes[1].set_ylabel("masked MSE")
        axes[1].set_title("Masked-denoising pretraining (mean over seeds)")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        png = figure_png(fig)
        return [Figure("self_pretrain.png", "Accuracy by arm and pretraining loss", png)]


__all__ = ["SelfPretrain", "SelfPretrainConfig"]
