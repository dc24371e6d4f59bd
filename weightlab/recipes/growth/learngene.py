"""Recipe ``learngene``: Xia et al. (2024), "Exploring Learngene via Stage-wise Weight Sharing
for Initializing Variable-sized Models" (SWS, row [#12]), reduced from ImageNet-1K ViTs to
residual MLPs on MNIST-1D.

Models (:mod:`weightlab.growth.sws`): residual MLPs ``40 -> d`` stem, blocks
``h + W₂ relu(W₁ h)`` of width ``d = 128``, head ``d -> 10``; PyTorch's default
(Kaiming-uniform) init; Adam 1e-3, batch 64, constant rate; one evaluation per epoch.

Per seed:

1. teacher: a 12-block :class:`~weightlab.growth.sws.ResidualMLP`, 30 epochs (its cost is
   reported apart from SWS's, as the paper treats the teacher as given);
2. auxiliary: a :class:`~weightlab.growth.sws.StageSharedNet` of 3 stages × 4 applications
   (3 blocks' parameters, the teacher's depth), distilled from the teacher for 30 epochs with
   ``½ CE + ½ τ² KL(teacher ‖ student)``, ``τ = 2``. The loop hands a loss only
   ``(pred, target)``, so the teacher's logits, computed once on the fixed unaugmented train
   split, ride in the train targets (:func:`~weightlab.growth.sws.distillation_task`);
3. depths 6, 9, 12, each trained three ways:
   - SWS: :meth:`~weightlab.growth.sws.StageSharedNet.expand_to` (stage ``s`` gets
     ``depth/3`` untied copies of learngene block ``s``; stem and head copied), tuned 5
     epochs; the accuracy after 1 epoch is that run's first evaluation (the rate is
     constant and the data order of epoch 1 does not depend on the epoch count, so it is
     exactly a 1-epoch run);
   - teacher-block init: the teacher's blocks 2, 6 and 10 (0-based, one inside each stage)
     expanded the same way, with the teacher's stem and head, tuned alike (the control
     for "their learning process");
   - scratch: default init, 30 epochs.

Accuracy is test accuracy at the early-stopping evaluation (minimum validation loss) among
the run's evaluations (after 1 epoch there is one). Seeds train as populations (the
teacher, each depth's scratch nets, each depth's SWS and teacher-block nets); distillation
runs in the loop, one seed at a time, as each seed has its own teacher's targets.

Claims (thresholds fixed below; seed means, spread shown):

- (a) "consistent better performance compared to many models trained from scratch": SWS
  (5 epochs) >= scratch at every depth, with fewer total training FLOPs (distillation with
  the teacher's forward each step plus tuning, against scratch at every depth; the teacher's
  training reported apart);
- (b) "In some cases, SWS performs better only after 1 epoch tuning": at some depth SWS
  (1 epoch) >= scratch;
- (c) "both learngene layers and their learning process critically contribute": SWS
  >= teacher-block init + 1 pt at every depth, both after 1 epoch.

Stored parameters (learngene: stem, 3 blocks, head, against the sum over the target
models) and the FLOP totals are reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.growth.sws import (
    DistillationLoss,
    ResidualMLP,
    StageSharedNet,
    distillation_task,
    forward_flops,
    teacher_block_init,
)
from weightlab.init.schemes import INIT_SCHEMES
from weightlab.models.factory import model_factory
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    LATE_FRACTION,
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
)
from weightlab.recipes.members import ENGINES, train_members
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_A = "SWS achieves consistent better performance compared to many models trained from scratch"
QUOTE_B = "In some cases, SWS performs better only after 1 epoch tuning"
QUOTE_C = (
    "both learngene layers and their learning process critically contribute to providing "
    "knowledge and guidance for initializing models at varying scales"
)
QUOTE_STORED = "reducing around 20x parameters stored to initialize these models"
QUOTE_COST = "while reducing around 6.6x total training costs"
# Fixed claim thresholds (from the issue), not options.
SWS_OVER_SCRATCH_PTS = 0.0  # (a) SWS (tuned) >= scratch + 0 at every depth; (b) at some depth
SWS_OVER_TEACHER_BLOCK_PTS = 1.0  # (c) SWS >= teacher-block + 1 pt at every depth (short)

# the tuned arms: (key, init, epochs read: "short" or "tuned")
TUNED = (
    ("sws_short", "sws", "short"),
    ("sws", "sws", "tuned"),
    ("tb_short", "teacher_block", "short"),
    ("tb", "teacher_block", "tuned"),
)
ARMS = ("scratch", "sws_short", "sws", "tb_short", "tb")
SOLO = ("teacher", "auxiliary")


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--{flag} must be comma-separated integers like 6,9,12; got {text!r}"
        ) from None
    if len(set(vals)) != len(vals):
        raise ConfigError(f"--{flag} lists a value twice: {text!r}")
    return vals


@dataclass(frozen=True)
class LearngeneConfig(RecipeConfig):
    width: int = opt(128, "width d of the residual MLPs (stem 40 -> d, blocks d -> d -> d)", min=1)
    stages: int = opt(3, "stages S of the auxiliary model (one shared block each)", min=1, max=64)
    applications: int = opt(
        4, "applications of each stage's block (teacher depth = stages × applications)", min=1
    )
    depths: str = opt("6,9,12", "depths of the target models (multiples of --stages)")
    teacher_blocks: str = opt(
        "2,6,10",
        "teacher blocks (0-based, one inside each stage) expanded by the teacher-block control",
    )
    teacher_epochs: int = opt(30, "epochs training the teacher", min=1, max=10000)
    distill_epochs: int = opt(30, "epochs distilling the auxiliary model", min=1, max=10000)
    scratch_epochs: int = opt(30, "epochs training each depth from scratch", min=1, max=10000)
    tune_epochs: int = opt(5, "epochs tuning the SWS and teacher-block inits", min=1, max=10000)
    short_epochs: int = opt(
        1, "the short tuning read from the same runs (at most --tune-epochs)", min=1, max=10000
    )
    tau: float = opt(2.0, "distillation temperature τ", gt=0, max=100)
    lr: float = opt(1e-3, "Adam learning rate (every phase)", gt=0, max=10)
    batch_size: int = opt(64, "batch size", min=1)
    init: str = opt(
        "kaiming_uniform",
        "init of teacher, auxiliary and scratch nets",
        choices=tuple(INIT_SCHEMES),
    )
    engine: str = opt(
        "population", "train seeds as one population, or in a plain loop", choices=ENGINES
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        depths = _ints(self.depths, "depths")
        bad = [d for d in depths if d <= 0 or d % self.stages]
        if bad:
            raise ConfigError(
                f"--depths {bad[0]} is not a positive multiple of the {self.stages} stages "
                f"(expand_to gives each stage depth/{self.stages} blocks); use e.g. "
                f"{self.stages * 2},{self.stages * 3}"
            )
        blocks = _ints(self.teacher_blocks, "teacher-blocks")
        a = self.applications
        if len(blocks) != self.stages or any(
            not s * a <= b < (s + 1) * a for s, b in enumerate(blocks)
        ):
            ranges = ", ".join(f"{s * a}-{(s + 1) * a - 1}" for s in range(self.stages))
            raise ConfigError(
                f"--teacher-blocks {self.teacher_blocks} must name one block inside each of "
                f"the {self.stages} stages of the {self.stages * a}-block teacher ({ranges})"
            )
        if self.short_epochs > self.tune_epochs:
            raise ConfigError(
                f"--short-epochs {self.short_epochs} exceeds --tune-epochs {self.tune_epochs}; "
                "the short tuning is read from the tuning runs"
            )

    @property
    def depth_values(self) -> list[int]:
        return sorted(_ints(self.depths, "depths"))

    @property
    def block_values(self) -> list[int]:
        return _ints(self.teacher_blocks, "teacher-blocks")

    @property
    def teacher_depth(self) -> int:
        return self.stages * self.applications


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "depth": int,
            "seed": int,
            "diverged": bool,
            "test_acc": opt_num,
            "final_test_acc": opt_num,
            "early_stop_step": int,
            "last_step": int,
        },
        "members",
    )
    for i, m in enumerate(metrics["members"]):
        if m["arm"] not in ARMS + SOLO:
            raise ValueError(f"members[{i}] has arm {m['arm']!r}, expected one of {ARMS + SOLO}")


def _record(arm: str, depth: int, seed: int, result, upto: int | None = None) -> dict:
    """Accuracy fields of one member; ``upto`` reads only its first ``upto`` evaluations
    (a shorter run with the same constant rate and data order)."""
    hist = result.history if upto is None else result.history[:upto]
    if any(math.isfinite(p.val_loss) for p in hist):
        best = min(
            hist, key=lambda p: (p.val_loss if math.isfinite(p.val_loss) else math.inf, p.step)
        )
    else:
        best = hist[-1]  # nothing finite to stop early on: the last evaluation (TrainResult.best)
    diverged = bool(result.diverged) and (
        upto is None or (result.diverged_step is not None and result.diverged_step <= hist[-1].step)
    )
    return {
        "arm": arm,
        "depth": depth,
        "seed": seed,
        "diverged": diverged,
        "test_acc": best.test_acc,
        "final_test_acc": hist[-1].test_acc,
        "early_stop_step": best.step,
        "last_step": hist[-1].step,
    }


class Learngene(Recipe):
    name = "learngene"
    family = "growth"
    row = 12
    paper = (
        "Xia et al. 2024, Exploring Learngene via Stage-wise Weight Sharing for Initializing "
        "Variable-sized Models (arXiv:2404.16897)"
    )
    claim = (
        "a distilled stage-wise weight-shared learngene, expanded to variable depths, beats "
        "training from scratch and initialization from the teacher's own blocks"
    )
    Config = LearngeneConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "wine", "breast_cancer", "iris")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "width": 16,
        "applications": 2,
        "depths": "3,6",
        "teacher_blocks": "1,3,5",
        "teacher_epochs": 2,
        "distill_epochs": 2,
        "scratch_epochs": 2,
        "tune_epochs": 2,
        "batch_size": 350,
    }
    broken: ClassVar[dict] = {"lr": 10.0}
    # measured in-process, one thread, MNIST-1D cached, CPU time (2 cores shared by ~12 jobs):
    # 4.2 s for the first run after another recipe in the process, 1.9 s after
    smoke_seconds = 4.2

    # -- setup -------------------------------------------------------------------------
    def _setup(self, cfg: LearngeneConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's "
                "residual MLPs need flat feature vectors"
            )
        return data

    def validate(self, cfg: LearngeneConfig, data_sizes: dict[str, int]) -> None:
        """The batch fits the training split."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training "
                f"examples; choose at most {data_sizes['train']}"
            )

    def _factory(self, cfg: LearngeneConfig, data, depth: int):
        return model_factory(
            ResidualMLP, depth, data.input_shape[0], cfg.width, data.num_classes, init=cfg.init
        )

    # -- run -----------------------------------------------------------------------------
    def run(self, cfg: LearngeneConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.core.snapshots import take_snapshot
        from weightlab.population import MemberSpec

        data = self._setup(cfg)
        seeds = list(range(cfg.seeds))
        data_seed = {s: derive_seed(self.name, "data", s) for s in seeds}
        optim = OptimConfig("adam", lr=cfg.lr)
        teacher_f = self._factory(cfg, data, cfg.teacher_depth)
        reps = (cfg.applications,) * cfg.stages
        aux_f = model_factory(
            StageSharedNet, reps, data.input_shape[0], cfg.width, data.num_classes, init=cfg.init
        )
        n_units = 3 + len(seeds) + len(cfg.depth_values)
        bar = progress_bar(n_units, self.name, "unit", progress, line_each_update=True)

        def step(desc: str) -> None:
            if bar is not None:
                bar.set_description(desc)
                bar.update(1)

        def states(saved: dict, prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}

        records: list[dict] = []

        # 1. teachers: one population over seeds
        def compute_teacher():
            specs = [
                MemberSpec(seed=derive_seed(self.name, "teacher", s), data_seed=data_seed[s])
                for s in seeds
            ]
            tcfg = TrainConfig(cfg.teacher_epochs, cfg.batch_size, 0, optim)
            results, finals = train_members(
                teacher_f, specs, data, tcfg, engine=cfg.engine, device=cfg.device
            )
            saved = {
                f"{s}.{k}": v for s, f in zip(seeds, finals, strict=True) for k, v in f.items()
            }
            members = [
                _record("teacher", cfg.teacher_depth, s, r)
                for s, r in zip(seeds, results, strict=True)
            ]
            return {"members": members}, saved

        teacher_m, teacher_saved = rd.unit("teacher", compute_teacher, check=_check_unit)
        records += teacher_m["members"]
        step("teacher")
        teachers = {}
        for s in seeds:
            t = teacher_f(0)
            t.load_state_dict(states(teacher_saved, f"{s}."))
            teachers[s] = t

        # 2. distillation into the stage-shared auxiliary model, one seed at a time (loop)
        learngenes = {}
        for s in seeds:

            def compute_aux(s=s):
                dist = distillation_task(data, teachers[s].to(data.device))
                dcfg = TrainConfig(
                    cfg.distill_epochs, cfg.batch_size, 0, optim, loss=DistillationLoss(cfg.tau)
                )
                spec = MemberSpec(seed=derive_seed(self.name, "aux", s), data_seed=data_seed[s])
                results, finals = train_members(
                    aux_f, [spec], dist, dcfg, engine="loop", device=cfg.device
                )
                return {"members": [_record("auxiliary", sum(reps), s, results[0])]}, finals[0]

            aux_m, aux_state = rd.unit(f"aux-{s:02d}", compute_aux, check=_check_unit)
            records += aux_m["members"]
            aux = aux_f(0)
            aux.load_state_dict(aux_state)
            learngenes[s] = aux
            step(f"distill seed {s}")

        # 3. scratch at every depth: one population over seeds per depth
        def compute_scratch():
            out = []
            scfg = TrainConfig(cfg.scratch_epochs, cfg.batch_size, 0, optim)
            for d in cfg.depth_values:
                specs = [
                    MemberSpec(seed=derive_seed(self.name, "scratch", s, d), data_seed=data_seed[s])
                    for s in seeds
                ]
                results, _ = train_members(
                    self._factory(cfg, data, d),
                    specs,
                    data,
                    scfg,
                    engine=cfg.engine,
                    device=cfg.device,
                )
                out += [_record("scratch", d, s, r) for s, r in zip(seeds, results, strict=True)]
            return {"members": out}, {}

        scratch_m, _ = rd.unit("scratch", compute_scratch, check=_check_unit)
        records += scratch_m["members"]
        step("scratch")

        # 4. SWS and teacher-block inits per depth, tuned: one population of both per depth
        for d in cfg.depth_values:

            def compute_tuned(d=d):
                specs, meta = [], []
                for s in seeds:
                    inits = {
                        "sws": learngenes[s].expand_to(d),
                        "teacher_block": teacher_block_init(teachers[s], cfg.block_values, d),
                    }
                    for init, net in inits.items():
                        specs.append(
                            MemberSpec(
                                seed=derive_seed(self.name, "tune", s, d),
                                data_seed=data_seed[s],
                                init_state=take_snapshot(net),
                            )
                        )
                        meta.append((init, s))
                tcfg = TrainConfig(cfg.tune_epochs, cfg.batch_size, 0, optim)
                results, _ = train_members(
                    self._factory(cfg, data, d),
                    specs,
                    data,
                    tcfg,
                    engine=cfg.engine,
                    device=cfg.device,
                )
                out = []
                for (init, s), r in zip(meta, results, strict=True):
                    for arm, arm_init, length in TUNED:
                        if arm_init == init:
                            upto = cfg.short_epochs if length == "short" else None
                            out.append(_record(arm, d, s, r, upto))
                return {"members": out}, {}

            tuned_m, _ = rd.unit(f"tune-d{d:02d}", compute_tuned, check=_check_unit)
            records += tuned_m["members"]
            step(f"tune depth {d}")
        if bar is not None:
            bar.close()
        n_train = len(data.train)
        return self.summarize(
            cfg,
            records,
            chance=100 * majority_rate(data.test.y),
            n_train=n_train,
            sizes=(data.input_shape[0], data.num_classes),
        )

    # -- summary ---------------------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"{m['arm']} depth {m['depth']} seed {m['seed']}"

    @staticmethod
    def costs(cfg: LearngeneConfig, n_train: int, sizes: tuple[int, int]) -> dict:
        """Stored parameters and training FLOPs per seed (2 per multiply-add; a training
        step counted as 3 forwards; examples per epoch = ``(n // batch) · batch``)."""
        d_in, k = sizes
        w, depths, t = cfg.width, cfg.depth_values, cfg.teacher_depth
        per_epoch = (n_train // cfg.batch_size) * cfg.batch_size

        def params(blocks: int) -> int:
            return d_in * w + w + blocks * 2 * (w * w + w) + w * k + k

        def fwd(blocks: int) -> int:
            return forward_flops(d_in, w, k, blocks)

        scratch = sum(3 * fwd(d) * cfg.scratch_epochs * per_epoch for d in depths)
        distill = 3 * fwd(t) * cfg.distill_epochs * per_epoch
        teacher_online = fwd(t) * cfg.distill_epochs * per_epoch
        teacher_once = fwd(t) * n_train
        tune = sum(3 * fwd(d) * cfg.tune_epochs * per_epoch for d in depths)
        tune_short = sum(3 * fwd(d) * cfg.short_epochs * per_epoch for d in depths)
        sws = distill + teacher_online + tune
        stored_lg, stored_all = params(cfg.stages), sum(params(d) for d in depths)
        return {
            "stored_learngene": stored_lg,
            "stored_targets": stored_all,
            "stored_ratio": stored_all / stored_lg,
            "flops_scratch": scratch,
            "flops_sws": sws,
            "flops_sws_short": distill + teacher_online + tune_short,
            "flops_sws_as_run": distill + teacher_once + tune,
            "flops_teacher_training": 3 * fwd(t) * cfg.teacher_epochs * per_epoch,
            "flops_ratio": scratch / sws,
            "flops_ratio_as_run": scratch / (distill + teacher_once + tune),
        }

    def summarize(
        self,
        cfg: LearngeneConfig,
        records: list[dict],
        chance: float,
        n_train: int,
        sizes: tuple[int, int],
    ) -> dict:
        rows = []
        keys = [("teacher", cfg.teacher_depth), ("auxiliary", cfg.teacher_depth)] + [
            (a, d) for d in cfg.depth_values for a in ARMS
        ]
        for arm, d in keys:
            ms = sorted(
                (m for m in records if m["arm"] == arm and m["depth"] == d),
                key=lambda m: m["seed"],
            )
            if not ms:
                continue
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            am, asd = mean_std(acc)
            fm, fsd = mean_std(
                [
                    100 * m["final_test_acc"] if m["final_test_acc"] is not None else None
                    for m in kept
                ]
            )
            rows.append(
                {
                    "arm": arm,
                    "depth": d,
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "final_acc_mean": fm,
                    "final_acc_std": fsd,
                    "early_stop_mean": mean_std([m["early_stop_step"] for m in kept])[0],
                    "last_step_mean": mean_std([m["last_step"] for m in kept])[0],
                    "diverged": len(ms) - len(kept),
                    "excluded": [self.member_name(m) for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        costs = self.costs(cfg, n_train, sizes)
        claims = [c.to_dict() for c in self.check_claims(rows, chance, costs, cfg)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "costs": costs,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "epochs": {
                "teacher": cfg.teacher_epochs,
                "distill": cfg.distill_epochs,
                "scratch": cfg.scratch_epochs,
                "tune": cfg.tune_epochs,
                "short": cfg.short_epochs,
            },
            "reduced_version": (
                "reduced version of the paper's ImageNet-1K ViT setting: residual MLPs "
                f"(width {cfg.width}) on {cfg.data}"
            ),
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation "
            "loss) among the run's evaluations, one per epoch",
        }

    @staticmethod
    def check_claims(
        rows: list[dict], chance: float, costs: dict, cfg: LearngeneConfig
    ) -> list[ClaimResult]:
        """(a) SWS (tuned) >= scratch at every depth with fewer total training FLOPs;
        (b) SWS (short) >= scratch at some depth; (c) SWS (short) >= teacher-block (short)
        + 1 pt at every depth. Preconditions: every scratch baseline and the teacher learned;
        no member the claim reads diverged."""
        by = {(r["arm"], r["depth"]): r for r in rows}
        depths = sorted({r["depth"] for r in rows if r["arm"] == "scratch"})
        learned = [
            baseline_learned(
                by[("scratch", d)]["test_acc_mean"], chance=chance, name=f"scratch depth {d}"
            )
            for d in depths
        ]
        t = by.get(("teacher", cfg.teacher_depth))
        learned.append(
            baseline_learned(t["test_acc_mean"] if t else None, chance=chance, name="teacher")
        )
        learned = [x for x in learned if x]

        def excluded(*arms: str) -> str | None:
            return no_divergence(
                [n for a in arms for d in depths for n in by.get((a, d), {}).get("excluded", [])]
            )

        def acc(arm: str, d: int) -> float:
            return by[(arm, d)]["test_acc_mean"]

        def final(arm: str, d: int) -> float:
            v = by[(arm, d)].get("final_acc_mean")
            return math.nan if v is None else v

        def diffs(a: str, b: str) -> list[dict]:
            return [
                {
                    "depth": d,
                    a: acc(a, d),
                    b: acc(b, d),
                    "diff_pts": acc(a, d) - acc(b, d),
                    "final_diff_pts": final(a, d) - final(b, d),
                }
                for d in depths
            ]

        def on_final(ds: list[dict]) -> str:
            return "; at the last evaluation instead (reported, not judged): " + ", ".join(
                f"depth {x['depth']} {x['final_diff_pts']:+.2f}" for x in ds
            )

        te, se = cfg.tune_epochs, cfg.short_epochs

        def check_a():
            ds = diffs("sws", "scratch")
            fewer = costs["flops_sws"] < costs["flops_scratch"]
            ok = all(x["diff_pts"] >= SWS_OVER_SCRATCH_PTS for x in ds) and fewer
            detail = (
                f"SWS ({te} ep) - scratch ({cfg.scratch_epochs} ep): "
                + ", ".join(f"depth {x['depth']} {x['diff_pts']:+.2f}" for x in ds)
                + f" pts (needed all >= {SWS_OVER_SCRATCH_PTS:g}); total training FLOPs "
                f"scratch / SWS = {costs['flops_ratio']:.2f}x (needed > 1)" + on_final(ds)
            )
            return ok, detail, {"diffs": ds, "flops_ratio": costs["flops_ratio"]}

        def check_b():
            ds = diffs("sws_short", "scratch")
            ok = any(x["diff_pts"] >= SWS_OVER_SCRATCH_PTS for x in ds)
            detail = (
                f"SWS ({se} ep) - scratch ({cfg.scratch_epochs} ep): "
                + ", ".join(f"depth {x['depth']} {x['diff_pts']:+.2f}" for x in ds)
                + f" pts (needed >= {SWS_OVER_SCRATCH_PTS:g} at some depth)"
                + on_final(ds)
            )
            return ok, detail, {"diffs": ds}

        def check_c():
            ds = diffs("sws_short", "tb_short")
            ok = all(x["diff_pts"] >= SWS_OVER_TEACHER_BLOCK_PTS for x in ds)
            detail = (
                f"SWS - teacher-block init, both {se} ep: "
                + ", ".join(f"depth {x['depth']} {x['diff_pts']:+.2f}" for x in ds)
                + f" pts (needed all >= {SWS_OVER_TEACHER_BLOCK_PTS:g})"
                + on_final(ds)
            )
            return ok, detail, {"diffs": ds}

        none = None if depths else "the run has no depth"
        return [
            judge(
                "a",
                QUOTE_A,
                f"SWS tuned {te} epochs reaches at least scratch's accuracy "
                f"({cfg.scratch_epochs} epochs) at every depth, with fewer total training "
                "FLOPs (distillation incl. the teacher's forward, plus tuning; the teacher's "
                "training apart)",
                [none, *learned, excluded("sws", "scratch")],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                f"at some depth SWS tuned {se} epoch(s) reaches at least scratch's accuracy "
                f"({cfg.scratch_epochs} epochs)",
                [none, *learned, excluded("sws_short", "scratch")],
                check_b,
            ),
            judge(
                "c",
                QUOTE_C,
                f"SWS beats the teacher-block init (teacher blocks {cfg.teacher_blocks}, same "
                f"expansion) by >= {SWS_OVER_TEACHER_BLOCK_PTS:g} pt at every depth, both tuned "
                f"{se} epoch(s)",
                [none, *learned, excluded("sws_short", "tb_short")],
                check_c,
            ),
        ]

    # -- report ----------------------------------------------------------------------------
    @staticmethod
    def arm_label(arm: str, summary: dict) -> str:
        e = summary["epochs"]
        return {
            "teacher": f"teacher ({e['teacher']} ep)",
            "auxiliary": f"auxiliary, distilled ({e['distill']} ep)",
            "scratch": f"scratch ({e['scratch']} ep)",
            "sws_short": f"SWS ({e['short']} ep)",
            "sws": f"SWS ({e['tune']} ep)",
            "tb_short": f"teacher-block ({e['short']} ep)",
            "tb": f"teacher-block ({e['tune']} ep)",
        }[arm]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["depth", "arm", "test acc % (early stop)", "final test acc %", "n"]
        rows = [
            [
                str(r["depth"]),
                self.arm_label(r["arm"], summary),
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                _pm(r["final_acc_mean"], r["final_acc_std"], 2),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        late = [
            f"{self.arm_label(r['arm'], summary)} depth {r['depth']}"
            for r in summary["rows"]
            if r["arm"] in ("teacher", "auxiliary", "scratch")
            and r["last_step_mean"]
            and r["early_stop_mean"] >= (1 - LATE_FRACTION) * r["last_step_mean"]
        ]
        title = (
            "Accuracy by depth and arm (mean ± std over seeds; "
            f"{summary['reduced_version']}); "
            f"{len(late)} full-length rows early-stop in the last {LATE_FRACTION:.0%}"
            + (f": {', '.join(late)}" if late else "")
        )
        c = summary["costs"]
        cost_rows = [
            [
                "stored parameters: learngene (stem, stage blocks, head)",
                f"{c['stored_learngene']:,}",
            ],
            ["stored parameters: all target models", f"{c['stored_targets']:,}"],
            ["stored ratio (paper: " + QUOTE_STORED + ")", f"{c['stored_ratio']:.2f}x"],
            ["training FLOPs per seed: scratch, every depth", f"{c['flops_scratch']:.3e}"],
            ["... SWS: distillation (teacher forward each step) + tuning", f"{c['flops_sws']:.3e}"],
            ["... SWS with the short tuning", f"{c['flops_sws_short']:.3e}"],
            ["... SWS as run (teacher logits computed once)", f"{c['flops_sws_as_run']:.3e}"],
            ["... teacher training (reported apart)", f"{c['flops_teacher_training']:.3e}"],
            ["scratch / SWS (paper: " + QUOTE_COST + ")", f"{c['flops_ratio']:.2f}x"],
            ["scratch / SWS as run", f"{c['flops_ratio_as_run']:.2f}x"],
        ]
        return [
            (title, header, rows),
            ("Stored parameters and training FLOPs", ["", ""], cost_rows),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = summary["rows"]
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        styles = {
            "scratch": ("gray", "o-"),
            "sws_short": ("tab:blue", "s--"),
            "sws": ("tab:blue", "s-"),
            "tb_short": ("tab:orange", "^--"),
            "tb": ("tab:orange", "^-"),
        }
        for arm in ARMS:
            pts = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["depth"])
            color, fmt = styles[arm]
            ax.errorbar(
                [r["depth"] for r in pts],
                [_num(r["test_acc_mean"]) for r in pts],
                yerr=[_num(r["test_acc_std"]) for r in pts],
                fmt=fmt,
                ms=4,
                capsize=2,
                color=color,
                label=self.arm_label(arm, summary),
            )
        for arm, ls in (("teacher", ":"), ("auxiliary", "-.")):
            r = next((r for r in rows if r["arm"] == arm), None)
            if r is not None:
                ax.axhline(
                    _num(r["test_acc_mean"]),
                    color="k",
                    ls=ls,
                    lw=0.9,
                    label=self.arm_label(arm, summary),
                )
        ax.set_xlabel("depth (residual blocks)")
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.set_xticks(sorted({r["depth"] for r in rows if r["arm"] == "scratch"}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(
            f"SWS learngene vs scratch and teacher blocks\n({summary['reduced_version']})",
            fontsize=9,
        )
        return [Figure("accuracy_vs_depth.png", "Accuracy vs depth per arm", figure_png(fig))]


__all__ = ["Learngene", "LearngeneConfig"]
