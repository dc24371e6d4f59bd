"""Recipe ``sparse-rl``: "On the Interplay Between Sparsity and Training in Deep
Reinforcement Learning" (row [#99]), as a supervised proxy.

Reinforcement learning is out of scope for weightlab (no environments among the allowed
data, and classic control has no spatial structure), so this recipe keeps the paper's
comparison and replaces the RL agent with a supervised classifier on an image task:
scikit-learn's digits (8x8 images, 64 inputs), an MLP 64-256-10 with ReLU. Masks on
the input->hidden weights, all with the same number of non-zeros (256 · 9 = 2,304):

- ``local``: every hidden unit sees one 3x3 patch of the image (9/64 = 14% density; the
  36 patch positions are dealt out to the units in turn), the spatially-biased
  architecture;
- ``random``: every hidden unit sees 9 random pixels (same fan-in, no locality);
- ``dense36``: 36 fully-connected hidden units (36 · 64 = 2,304 weights), the other 220
  units removed (their rows, biases and readout columns masked).

Each mask trains in two modes: ``frozen`` (hidden weights and biases fixed at their
random initialization, only the readout learns: a parameter group with ``lr_mult=0``) and
``trained`` (everything learns). Seeds × masks × modes train as one population.
Accuracy is test accuracy at the early-stopping iteration (minimum validation loss).

Claims: (a) in some mode the best and worst masks differ by >= 2 pt with the 95% CI of
the paired difference over seeds excluding 0; (b) the best mask differs between the
modes, each >= 1 pt ahead of its runner-up (seed means).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.init.schemes import INIT_SCHEMES
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    LATE_FRACTION,
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
    still_improving,
)
from weightlab.recipes.members import train_members
from weightlab.recipes.stats import mean_std, paired_difference_ci
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

MASKS = ("local", "random", "dense36")
MODES = ("frozen", "trained")
QUOTE_EFFECT = "sparse structure has a significant effect on learning performance"
QUOTE_DEPENDS = (
    "choosing the best sparse architecture for a given domain depends on whether the hidden "
    "layer weights are fixed or learned"
)
EFFECT_PTS = 2.0  # (a) best - worst mask >= 2 pt in some mode, 95% CI excluding 0
EFFECT_LEVEL = 0.95
LEAD_PTS = 1.0  # (b) each mode's best >= 1 pt ahead of its runner-up
PATCH = 3  # local receptive field: PATCH x PATCH pixels


def image_side(features: int) -> int:
    """The side of a square image with ``features`` pixels (8 for digits)."""
    side = math.isqrt(features)
    if side * side != features or side < PATCH:
        raise ConfigError(
            f"the local mask needs square images of side >= {PATCH}; the data has {features} "
            "features (use --data digits)"
        )
    return side


def local_mask(hidden: int, side: int) -> torch.Tensor:
    """``(hidden, side²)`` bool: unit ``u`` sees the PATCH x PATCH patch at position
    ``u mod P`` of the ``P = (side - PATCH + 1)²`` positions (row-major)."""
    n = side - PATCH + 1
    mask = torch.zeros(hidden, side * side, dtype=torch.bool)
    for u in range(hidden):
        r0, c0 = divmod(u % (n * n), n)
        for r in range(r0, r0 + PATCH):
            mask[u, r * side + c0 : r * side + c0 + PATCH] = True
    return mask


def random_fanin_mask(hidden: int, features: int, fanin: int, g: torch.Generator) -> torch.Tensor:
    """``(hidden, features)`` bool: every unit sees ``fanin`` inputs drawn at random."""
    mask = torch.zeros(hidden, features, dtype=torch.bool)
    for u in range(hidden):
        mask[u, torch.randperm(features, generator=g)[:fanin]] = True
    return mask


def mask_set(kind: str, hidden: int, features: int, classes: int, seed: int) -> dict:
    """The weight masks of ``kind`` (``local``, ``random``, ``dense<k>`` with ``k`` =
    the non-zeros over the input size) for an MLP ``features-hidden-classes``."""
    side = image_side(features)
    nnz = hidden * PATCH * PATCH
    if kind == "local":
        return {"layers.0.weight": local_mask(hidden, side)}
    if kind == "random":
        g = generator(derive_seed("sparse-rl", "random-mask", seed))
        return {"layers.0.weight": random_fanin_mask(hidden, features, PATCH * PATCH, g)}
    units = nnz // features
    if units * features != nnz or units > hidden:
        raise ConfigError(
            f"a dense layer with {nnz} weights needs {nnz / features:g} units of {features} "
            "inputs; choose --hidden so that hidden·9 is a multiple of the input size"
        )
    keep = torch.zeros(hidden, dtype=torch.bool)
    keep[:units] = True
    return {
        "layers.0.weight": keep[:, None].expand(hidden, features).clone(),
        "layers.0.bias": keep.clone(),
        "layers.1.weight": keep[None, :].expand(classes, hidden).clone(),
    }


@dataclass(frozen=True)
class SparseRLConfig(RecipeConfig):
    seeds: int = opt(5, "number of independent seeds (paired over masks and modes)", min=1)
    data: str = opt("digits", "task: 8x8 digits (the local mask needs square images)")
    hidden: int = opt(256, "hidden ReLU units (hidden·9 must be a multiple of 64)", min=1)
    init: str = opt("kaiming_uniform", "weight initialization", choices=tuple(INIT_SCHEMES))
    lr: float = opt(
        3e-3,
        "Adam learning rate (at 1e-3 the frozen readout still improved at 300 epochs)",
        gt=0,
        max=10,
    )
    epochs: int = opt(
        1200,
        "training epochs (at 400 the frozen readouts still early-stopped in the last 10%; at "
        "1200 no row does: 123 s wall on 2 idle cores)",
        min=1,
        max=100000,
    )
    batch_size: int = opt(60, "batch size", min=1)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"mask": str, "mode": str, "seed": int, "diverged": bool, "nnz": int},
        "members",
    )


class SparseRL(Recipe):
    name = "sparse-rl"
    family = "sparsity"
    row = 99
    paper = "On the Interplay Between Sparsity and Training in Deep Reinforcement Learning"
    claim = (
        "supervised proxy (RL out of scope): local vs random vs dense masks of equal non-zeros "
        "rank differently with frozen and trained hidden weights"
    )
    Config = SparseRLConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 2, "epochs": 2, "hidden": 64}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread (CPU time; the machine was shared)
    smoke_seconds = 2.6

    def _setup(self, cfg: SparseRLConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; flatten images to "
                "(n, side²) features"
            )
        features = data.input_shape[0]
        image_side(features)
        for kind in MASKS:
            mask_set(kind, cfg.hidden, features, data.num_classes, 0)
        return data, features

    def validate(self, cfg: SparseRLConfig, data_sizes: dict[str, int]) -> None:
        """The masks fit the data (square images, a whole number of dense units) and the
        batch fits the training split."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training "
                f"examples; choose at most {data_sizes['train']}"
            )
        self._setup(cfg)

    def run(self, cfg: SparseRLConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data, features = self._setup(cfg)
        classes = data.num_classes
        factory = model_factory(MLP, [features, cfg.hidden, classes], init=cfg.init)
        seeds = list(range(cfg.seeds))
        optims = {
            "trained": OptimConfig("adam", lr=cfg.lr),
            "frozen": OptimConfig(
                "adam", lr=cfg.lr, groups=(ParamGroup(("layers.0.*",), lr_mult=0.0),)
            ),
        }
        train_cfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, optims["trained"])

        def compute():
            specs, meta = [], []
            for s in seeds:
                for mode in MODES:
                    for kind in MASKS:
                        masks = mask_set(kind, cfg.hidden, features, classes, s)
                        specs.append(
                            MemberSpec(
                                seed=derive_seed("sparse-rl", "init", s),
                                data_seed=derive_seed("sparse-rl", "data", s),
                                optim=optims[mode],
                                masks=masks,
                            )
                        )
                        meta.append((kind, mode, s, int(masks["layers.0.weight"].sum())))
            results, _ = train_members(
                factory, specs, data, train_cfg, device=cfg.device, progress=progress
            )
            members = [
                {
                    "mask": kind,
                    "mode": mode,
                    "seed": s,
                    "nnz": nnz,
                    **r.to_dict(),
                    "test_acc": r.best.test_acc,
                }
                for (kind, mode, s, nnz), r in zip(meta, results, strict=True)
            ]
            return {"members": members}, {}

        metrics, _ = rd.unit("all", compute, check=_check_unit)
        return self.summarize(metrics["members"], chance=100 * majority_rate(data.test.y))

    # -- summary and claims ---------------------------------------------------------
    def summarize(self, members: list[dict], chance: float) -> dict:
        rows = []
        for mode in MODES:
            for kind in MASKS:
                ms = sorted(
                    (m for m in members if m["mode"] == mode and m["mask"] == kind),
                    key=lambda m: m["seed"],
                )
                kept = [m for m in ms if not m["diverged"]]
                acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
                (am, asd) = mean_std(acc)
                rows.append(
                    {
                        "mode": mode,
                        "mask": kind,
                        "nnz": ms[0]["nnz"] if ms else 0,
                        "test_acc_mean": am,
                        "test_acc_std": asd,
                        "test_acc_values": acc,
                        "seeds": [m["seed"] for m in kept],
                        "early_stop_mean": mean_std([m["early_stop_step"] for m in kept])[0],
                        "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                        "diverged": [
                            f"{kind} {mode} seed {m['seed']}" for m in ms if m["diverged"]
                        ],
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
            "still_improving": still_improving(rows, lambda r: f"{r['mask']} {r['mode']}"),
            "members": len(members),
            "diverged_members": [
                f"{m['mask']} {m['mode']} seed {m['seed']}" for m in members if m["diverged"]
            ],
            "proxy": "supervised proxy on digits; reinforcement learning is out of scope",
            "accuracy": "test accuracy (%) at the early-stopping iteration (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """(a) in some mode, best - worst mask (by seed mean) >= EFFECT_PTS with the 95% CI
        of the paired difference excluding 0; (b) the best mask differs between the modes
        and leads its runner-up by >= LEAD_PTS in each. Both need each mode's best mask to
        have learned (chance + 10 pts) and no diverged member."""
        by_mode = {
            mode: sorted(
                (r for r in rows if r["mode"] == mode),
                key=lambda r: -(r["test_acc_mean"] if r["test_acc_mean"] is not None else -1e9),
            )
            for mode in MODES
        }
        reasons = [no_divergence([d for r in rows for d in r["diverged"]])]
        for mode, ranked in by_mode.items():
            reasons.append(
                baseline_learned(ranked[0]["test_acc_mean"], chance=chance, name=f"best {mode}")
            )

        def paired(a: dict, b: dict):
            common = sorted(set(a["seeds"]) & set(b["seeds"]))
            return (
                [a["test_acc_values"][a["seeds"].index(s)] for s in common],
                [b["test_acc_values"][b["seeds"].index(s)] for s in common],
            )

        def check_a():
            per = {}
            for mode, ranked in by_mode.items():
                best, worst = ranked[0], ranked[-1]
                m, lo, hi = paired_difference_ci(*paired(best, worst), EFFECT_LEVEL)
                per[mode] = {
                    "best": best["mask"],
                    "worst": worst["mask"],
                    "difference": m,
                    "ci_low": lo,
                    "ci_high": hi,
                    "held": m >= EFFECT_PTS and lo > 0,
                }
            detail = "; ".join(
                f"{mode}: {p['best']} - {p['worst']} = {p['difference']:+.2f} pts, "
                f"{EFFECT_LEVEL:.0%} CI [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]"
                for mode, p in per.items()
            )
            detail += f"; needed in some mode >= {EFFECT_PTS:g} pts with the CI above 0"
            return any(p["held"] for p in per.values()), detail, {"per_mode": per}

        def check_b():
            per = {
                mode: {
                    "best": ranked[0]["mask"],
                    "runner_up": ranked[1]["mask"],
                    "lead": ranked[0]["test_acc_mean"] - ranked[1]["test_acc_mean"],
                }
                for mode, ranked in by_mode.items()
            }
            differs = per["frozen"]["best"] != per["trained"]["best"]
            leads = all(p["lead"] >= LEAD_PTS for p in per.values())
            detail = "; ".join(
                f"{mode}: best {p['best']}, {p['lead']:+.2f} pts ahead of {p['runner_up']}"
                for mode, p in per.items()
            )
            detail += (
                f"; needed different bests (got {'different' if differs else 'the same'}) "
                f"each >= {LEAD_PTS:g} pt ahead"
            )
            return differs and leads, detail, {"per_mode": per, "bests_differ": differs}

        return [
            judge(
                "a",
                QUOTE_EFFECT,
                f"in some mode the best and worst masks of equal non-zeros differ by >= "
                f"{EFFECT_PTS:g} pts, {EFFECT_LEVEL:.0%} CI of the paired difference excluding 0",
                reasons,
                check_a,
            ),
            judge(
                "b",
                QUOTE_DEPENDS,
                f"the best mask with frozen hidden weights differs from the best with trained "
                f"ones, each >= {LEAD_PTS:g} pt ahead of its runner-up (seed means)",
                reasons,
                check_b,
            ),
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict):
        header = ["mode", "mask", "non-zeros", "test acc %", "early-stop step", "n"]
        rows = [
            [
                r["mode"],
                r["mask"],
                str(r["nnz"]),
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                "n/a" if r["early_stop_mean"] is None else f"{r['early_stop_mean']:.0f}",
                str(r["n"]) + (f" ({len(r['diverged'])} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        late = summary.get("still_improving", [])
        title = (
            f"Masks of equal non-zeros, hidden weights frozen or trained ({len(late)} of "
            f"{len(rows)} rows early-stop in the last {LATE_FRACTION:.0%} of training, i.e. "
            f"were still improving{': ' + ', '.join(late) if late else ''})"
        )
        return [(title, header, rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2))
        width = 0.25
        for j, kind in enumerate(MASKS):
            pts = [
                r
                for mode in MODES
                for r in summary["rows"]
                if r["mode"] == mode and r["mask"] == kind
            ]
            x = [i + (j - 1) * width for i in range(len(MODES))]
            m = [r["test_acc_mean"] if r["test_acc_mean"] is not None else math.nan for r in pts]
            s = [r["test_acc_std"] if r["test_acc_std"] is not None else 0.0 for r in pts]
            ax.bar(x, m, width, yerr=s, capsize=3, label=kind, alpha=0.75)
            for xi, r in zip(x, pts, strict=True):
                vals = [v for v in r["test_acc_values"] if v is not None]
                ax.plot([xi] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(MODES)), [f"hidden {m}" for m in MODES])
        accs = [v for r in summary["rows"] for v in r["test_acc_values"] if v is not None]
        if accs:
            ax.set_ylim(max(0, min(accs) - 10), min(100, max(accs) + 3))
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
        ax.set_title("Supervised proxy: equal non-zero masks, frozen vs trained hidden layer")
        png = figure_png(fig)
        return [Figure("sparse_rl.png", "Accuracy by mask and mode", png)]
