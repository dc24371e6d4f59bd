"""Recipe ``rethinking-pruning``: Liu, Sun, Zhou, Huang & Darrell (2019), "Rethinking the
Value of Network Pruning" (ICLR 2019, arXiv:1810.05270; row [#4]).

Part A, structured pruning (paper Sec. 4.1, L1-norm filter pruning of Li et al. 2017,
on an MLP): a 40-512-512-10 MLP on MNIST-1D trains with SGD (momentum 0.9, batch 60,
lr 0.1) for 60 epochs; 50% and 75% of each hidden layer's neurons with the smallest L1
norm of incoming weights are removed (:func:`weightlab.sparsity.structured.prune_structured`,
a physically smaller MLP). Three arms per ratio, all the same small architecture:

- ``finetuned``: the inherited weights, fine-tuned 20 epochs at lr 0.01 (Sec. 3);
- ``scratch-E``: fresh random weights, the large model's 60 epochs;
- ``scratch-B``: fresh random weights, the large model's training FLOPs (60 epochs ×
  the forward-FLOP ratio, uncapped; :mod:`weightlab.sparsity.scratch`).

Accuracy, for the claims: test accuracy at the early-stopping iteration (minimum
validation loss), as in part B and every other recipe; the final test accuracy (the
paper's measure) is reported beside it. At constant lr 0.1 a long Scratch-B run can
collapse late (its final accuracy near chance after a good early-stop accuracy): any
member whose final accuracy is below chance + 10 pts while its early-stop accuracy was
not is listed as "collapsed late" in the summary and the report. Positive control: after
2 epochs, the fine-tuned model leads Scratch-E by more than 1 pt (inherited weights are
worth something early, so the test can see a difference).

Part B, the lottery-ticket comparison (paper Sec. 6): the lottery MLP 40-300-100-10,
SGD momentum 0.9 at lr 0.1 (large) and 0.01 (small); IMP prunes 20% of every layer's
remaining weights per round and rewinds the survivors to θ0 (Frankle & Carbin 2019);
at densities 51.2%, 21.0% and 8.6% (rounds 3, 7 and 11) the ticket trains beside a
random re-initialization of its mask. Accuracy: test accuracy at the early-stopping
iteration (minimum validation loss), Frankle & Carbin's measure. The claim is a
no-difference claim: at lr 0.1 the 90% CI of the paired (per seed) difference
ticket - re-init lies inside ±1 pt at every density; its positive control: at lr 0.01
the ticket wins by more than 1 pt at some density ≤ 21%.

Every population trains the seeds (and, in part B, both learning rates and both arms)
as one computation. Units: the dense run, then per ratio the fine-tune, Scratch-E and
Scratch-B runs; then one unit per IMP round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.core.snapshots import restore_snapshot, take_snapshot
from weightlab.errors import ConfigError
from weightlab.init.schemes import INIT_SCHEMES
from weightlab.models.factory import model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import (
    CHANCE_MARGIN_PTS,
    baseline_learned,
    judge,
    majority_rate,
    no_divergence,
    stopped_before_end,
)
from weightlab.recipes.members import ENGINES, train_members
from weightlab.recipes.options import float_list, int_list
from weightlab.recipes.stats import mean_std, within_margin
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.sparsity.allocation import layer_rates
from weightlab.sparsity.imp import IMPConfig, density_schedule, imp_step
from weightlab.sparsity.scratch import mlp_forward_flops, scratch_budget, train_from_scratch
from weightlab.sparsity.structured import prune_structured
from weightlab.train.config import OptimConfig, TrainConfig

NAME = "rethinking-pruning"
QUOTE_SCRATCH = (
    "fine-tuning a pruned model only gives comparable or worse performance than training "
    "that model with randomly initialized weights"
)
QUOTE_LTH = (
    'with optimal learning rate, the "winning ticket" initialization as used in Frankle & '
    "Carbin (2019) does not bring improvement over random initialization"
)
# Fixed claim thresholds (methods.md row #4 and the issue), not options.
SCRATCH_TOLERANCE_PTS = 1.0  # scratch >= fine-tuned - 1 pt (seed means)
CONTROL_LEAD_PTS = 1.0  # after the control epochs, fine-tuned leads Scratch-E by > 1 pt
LTH_MARGIN_PTS = 1.0  # 90% CI of ticket - re-init inside ±1 pt
LTH_CONTROL_PTS = 1.0  # at the small lr the ticket wins by > 1 pt ...
LTH_CONTROL_DENSITY = 0.21  # ... at some density <= 21%
ARMS_A = ("dense", "finetuned", "scratch-E", "scratch-B")
ARMS_B = ("ticket", "reinit")


@dataclass(frozen=True)
class RethinkingPruningConfig(RecipeConfig):
    hidden: str = opt("512,512", "hidden widths of the large MLP (part A), comma-separated")
    init: str = opt("kaiming_uniform", "weight initialization", choices=tuple(INIT_SCHEMES))
    lr: float = opt(0.1, "SGD learning rate of the large model and of Scratch-E/B", gt=0, max=10)
    momentum: float = opt(0.9, "SGD momentum (both parts)", min=0, lt=1)
    batch_size: int = opt(60, "batch size (both parts)", min=1)
    epochs: int = opt(60, "epochs of the large model (= Scratch-E's)", min=1, max=10000)
    ratios: str = opt(
        "0.5,0.75", "fractions of each hidden layer's neurons pruned, comma-separated"
    )
    finetune_epochs: int = opt(20, "fine-tuning epochs of the pruned model", min=1, max=10000)
    finetune_lr: float = opt(0.01, "fine-tuning learning rate", gt=0, max=10)
    control_epochs: int = opt(
        2, "positive control: fine-tuned vs Scratch-E after this many epochs", min=1
    )
    lth_hidden: str = opt("300,100", "hidden widths of the lottery MLP (part B)")
    lth_lr_high: float = opt(0.1, "part B's large learning rate (the claim)", gt=0, max=10)
    lth_lr_low: float = opt(0.01, "part B's small learning rate (the control)", gt=0, max=10)
    lth_epochs: int = opt(
        30,
        "training epochs per IMP round (the claims need both dense runs' validation-loss "
        "minimum before the last epoch)",
        min=1,
        max=10000,
    )
    lth_rate: float = opt(0.2, "fraction of remaining weights IMP prunes per round", gt=0, lt=1)
    lth_rounds: int = opt(11, "IMP rounds (0.8^11 = 8.6% density)", min=1, max=60)
    lth_report: str = opt("3,7,11", "rounds where the ticket is compared with re-init")
    engine: str = opt("population", "train members as one population or in a loop", choices=ENGINES)

    def __post_init__(self) -> None:
        super().__post_init__()
        int_list(self.hidden, "hidden", distinct=False, sort=False)
        int_list(self.lth_hidden, "lth-hidden", distinct=False, sort=False)
        float_list(self.ratios, "ratios", gt=0, lt=1, sort=False)
        rounds = int_list(self.lth_report, "lth-report", distinct=False, sort=False)
        if max(rounds) > self.lth_rounds or len(set(rounds)) != len(rounds):
            raise ConfigError(
                f"--lth-report rounds must be distinct and at most --lth-rounds "
                f"({self.lth_rounds}); got {self.lth_report!r}"
            )
        if self.control_epochs > min(self.epochs, self.finetune_epochs):
            raise ConfigError(
                f"--control-epochs {self.control_epochs} exceeds --epochs or "
                "--finetune-epochs; choose a smaller control"
            )

    @property
    def hidden_widths(self) -> list[int]:
        return int_list(self.hidden, "hidden", distinct=False, sort=False)

    @property
    def ratio_list(self) -> list[float]:
        return float_list(self.ratios, "ratios", gt=0, lt=1, sort=False)

    @property
    def report_rounds(self) -> list[int]:
        return sorted(int_list(self.lth_report, "lth-report", distinct=False, sort=False))


def _acc_at_epoch(history, epoch: int) -> float | None:
    for p in history:
        if p.epoch >= epoch - 1e-9:
            return p.test_acc
    return None


def _record(res, **meta) -> dict:
    """One member's numbers (accuracies in percent)."""

    def pct(v):
        return None if v is None or not math.isfinite(v) else 100.0 * v

    control = meta.pop("control", None)
    return {
        **meta,
        "diverged": bool(res.diverged),
        "final_test_acc": pct(res.final.test_acc),
        "test_acc": pct(res.best.test_acc),
        "early_stop_step": int(res.best.step),
        "last_step": int(res.final.step),
        "control_acc": None if control is None else pct(_acc_at_epoch(res.history, control)),
    }


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {"arm": str, "seed": int, "diverged": bool, "final_test_acc": opt_num, "test_acc": opt_num},
        "members",
    )


class RethinkingPruning(Recipe):
    name = NAME
    family = "sparsity"
    row = 4
    paper = "Liu et al. 2019, Rethinking the Value of Network Pruning (arXiv:1810.05270)"
    claim = (
        "a pruned architecture trained from scratch matches fine-tuning it; at a large lr a "
        "lottery ticket is no better than random re-init"
    )
    Config = RethinkingPruningConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "hidden": "32,32",
        "epochs": 1,
        "finetune_epochs": 1,
        "control_epochs": 1,
        "lth_hidden": "32,16",
        "lth_epochs": 1,
        "lth_rounds": 2,
        "lth_report": "1,2",
    }
    # SGD at lr 10 with momentum: every member diverges or stays at chance
    broken: ClassVar[dict] = {
        "lr": 10.0,
        "finetune_lr": 10.0,
        "lth_lr_high": 10.0,
        "lth_lr_low": 5.0,
    }
    # measured in-process, one thread, MNIST-1D cached, CPU time (the machine was shared):
    # 2.3 s for a process's first run (report imports included), 1.2 s after
    smoke_seconds = 2.3

    # -- setup ------------------------------------------------------------------------
    def _setup(self, cfg: RethinkingPruningConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLPs "
                "need flat feature vectors (reshape x to (n, features))"
            )
        d, k = data.input_shape[0], data.num_classes
        for r in cfg.ratio_list:
            for n in cfg.hidden_widths:
                if int(n * (1 - r)) < 1:
                    raise ConfigError(
                        f"--ratios {r:g} would remove all {n} units of a hidden layer; "
                        f"use a ratio below {1 - 1 / n:.4g}"
                    )
        return data, d, k

    def validate(self, cfg: RethinkingPruningConfig, data_sizes: dict[str, int]) -> None:
        """Flat inputs; no ratio removes a whole layer; a batch fits the training split."""
        self._setup(cfg)
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training examples"
            )

    def _sgd(self, cfg, lr: float) -> OptimConfig:
        return OptimConfig("sgd", lr=lr, momentum=cfg.momentum)

    # -- run ----------------------------------------------------------------------------
    def run(self, cfg: RethinkingPruningConfig, rd: RunDir, progress: bool = False) -> dict:
        data, d, k = self._setup(cfg)
        n_units = 1 + 3 * len(cfg.ratio_list) + cfg.lth_rounds + 1
        bar = progress_bar(n_units, NAME, "unit", progress, line_each_update=True)
        records = self._part_a(cfg, rd, data, d, k, bar, progress)
        records += self._part_b(cfg, rd, data, d, k, bar, progress)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    def _part_a(self, cfg, rd, data, d, k, bar, progress) -> list[dict]:
        from weightlab.population import MemberSpec

        widths = [d, *cfg.hidden_widths, k]
        factory = model_factory(MLP, widths, init=cfg.init)
        train_cfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, self._sgd(cfg, cfg.lr))
        seeds = list(range(cfg.seeds))
        data_seed = {s: derive_seed(NAME, "data", s) for s in seeds}
        ctl = cfg.control_epochs
        records: list[dict] = []

        def step(desc: str) -> None:
            if bar is not None:
                bar.set_description(desc)

        def dense():
            specs = [
                MemberSpec(seed=derive_seed(NAME, "init", s), data_seed=data_seed[s]) for s in seeds
            ]
            results, finals = train_members(
                factory,
                specs,
                data,
                train_cfg,
                engine=cfg.engine,
                device=cfg.device,
                progress=progress,
            )
            members = [
                _record(res, arm="dense", ratio=0.0, seed=s, epochs=cfg.epochs, control=ctl)
                for s, res in zip(seeds, results, strict=True)
            ]
            tensors = {
                f"dense.{s}.{n}": v
                for s, f in zip(seeds, finals, strict=True)
                for n, v in f.items()
            }
            return {"members": members}, tensors

        step("part A: dense 40-512-512-10")
        metrics, dense_t = rd.unit("a-dense", dense, check=_check_unit)
        records += [{"part": "A", **m} for m in metrics["members"]]
        if bar is not None:
            bar.update(1)

        for ri, ratio in enumerate(cfg.ratio_list):
            small_w = [d, *(int(n * (1 - ratio)) for n in cfg.hidden_widths), k]
            small_factory = model_factory(MLP, small_w, init=cfg.init)
            fr = mlp_forward_flops(widths) / mlp_forward_flops(small_w)
            tag = f"r{round(100 * ratio):02d}"

            def finetune(ratio=ratio, small_factory=small_factory, small_w=small_w):
                specs = []
                for s in seeds:
                    model = factory(0)
                    state = {
                        n[len(f"dense.{s}.") :]: torch.nan_to_num(v, 0.0, 0.0, 0.0)
                        for n, v in dense_t.items()
                        if n.startswith(f"dense.{s}.")
                    }
                    restore_snapshot(model, state)
                    small = prune_structured(model, ratio).model
                    if small.widths != small_w:
                        raise RuntimeError(f"pruned widths {small.widths} != {small_w}")
                    specs.append(
                        MemberSpec(
                            seed=derive_seed(NAME, "init", s),
                            data_seed=derive_seed(NAME, "finetune-data", s),
                            init_state=take_snapshot(small),
                        )
                    )
                ft_cfg = TrainConfig(
                    cfg.finetune_epochs, cfg.batch_size, 0, self._sgd(cfg, cfg.finetune_lr)
                )
                results, _ = train_members(
                    small_factory,
                    specs,
                    data,
                    ft_cfg,
                    engine=cfg.engine,
                    device=cfg.device,
                    progress=progress,
                )
                return {
                    "members": [
                        _record(
                            res,
                            arm="finetuned",
                            ratio=ratio,
                            seed=s,
                            epochs=cfg.finetune_epochs,
                            control=ctl,
                        )
                        for s, res in zip(seeds, results, strict=True)
                    ]
                }, {}

            def scratch(kind, ratio=ratio, small_factory=small_factory, fr=fr, ri=ri):
                budget = scratch_budget(kind, cfg.epochs, fr)
                specs = [
                    MemberSpec(
                        seed=derive_seed(NAME, "scratch", kind, ri, s), data_seed=data_seed[s]
                    )
                    for s in seeds
                ]
                results, _ = train_from_scratch(
                    small_factory,
                    budget,
                    data,
                    train_cfg,
                    specs,
                    engine=cfg.engine,
                    device=cfg.device,
                    progress=progress,
                )
                return {
                    "members": [
                        _record(
                            res,
                            arm=f"scratch-{kind}",
                            ratio=ratio,
                            seed=s,
                            epochs=budget.epochs,
                            flop_ratio=fr,
                            control=ctl,
                        )
                        for s, res in zip(seeds, results, strict=True)
                    ]
                }, {}

            for key, fn, desc in (
                (f"a-{tag}-finetuned", finetune, "fine-tune"),
                (f"a-{tag}-scratch-E", lambda fn=scratch: fn("E"), "Scratch-E"),
                (f"a-{tag}-scratch-B", lambda fn=scratch: fn("B"), "Scratch-B"),
            ):
                step(f"part A: {ratio:.0%} pruned, {desc}")
                metrics, _ = rd.unit(key, fn, check=_check_unit)
                records += [{"part": "A", "flop_ratio": fr, **m} for m in metrics["members"]]
                if bar is not None:
                    bar.update(1)
        return records

    def _part_b(self, cfg, rd, data, d, k, bar, progress) -> list[dict]:
        from weightlab.population import MemberSpec

        widths = [d, *int_list(cfg.lth_hidden, "lth-hidden", distinct=False, sort=False), k]
        factory = model_factory(MLP, widths, init=cfg.init)
        names = [f"layers.{i}.weight" for i in range(len(widths) - 1)]
        shapes = {n: torch.Size((widths[i + 1], widths[i])) for i, n in enumerate(names)}
        imp = IMPConfig(
            rate=cfg.lth_rate, rate_overrides={}, target_density=1e-9, max_rounds=cfg.lth_rounds
        )
        densities = density_schedule(shapes, imp)
        rates = layer_rates(names, cfg.lth_rate, {})
        train_cfg = TrainConfig(cfg.lth_epochs, cfg.batch_size, 0, self._sgd(cfg, cfg.lth_lr_high))
        lrs = (cfg.lth_lr_high, cfg.lth_lr_low)
        seeds = list(range(cfg.seeds))
        report = set(cfg.report_rounds)
        records: list[dict] = []
        prev: dict[str, torch.Tensor] = {}
        for r, dens in enumerate(densities):
            if bar is not None:
                bar.set_description(f"part B: IMP round {r} (density {dens:.3f})")

            def compute(r=r, prev=prev, dens=dens):
                specs, meta, saved = [], [], {}
                for li, lr in enumerate(lrs):
                    optim = self._sgd(cfg, lr)
                    for s in seeds:
                        init_seed = derive_seed(NAME, "lth-init", s)
                        dseed = derive_seed(NAME, "lth-data", s)
                        masks = None
                        if r > 0:
                            key = f"ticket.{li}.{s}"
                            prev_masks = {n: prev[f"{key}.mask.{n}"].bool() for n in names}
                            prev_final = {
                                n: torch.nan_to_num(prev[f"{key}.final.{n}"], 0.0, 0.0, 0.0)
                                for n in names
                            }
                            masks = imp_step(prev_final, prev_masks, rates, "layerwise")
                        specs.append(
                            MemberSpec(seed=init_seed, data_seed=dseed, optim=optim, masks=masks)
                        )
                        meta.append(("ticket", li, s))
                        if r in report:
                            specs.append(
                                MemberSpec(
                                    seed=derive_seed(NAME, "lth-reinit", li, s, r),
                                    data_seed=dseed,
                                    optim=optim,
                                    masks=masks,
                                )
                            )
                            meta.append(("reinit", li, s))
                results, finals = train_members(
                    factory,
                    specs,
                    data,
                    train_cfg,
                    engine=cfg.engine,
                    device=cfg.device,
                    progress=progress,
                )
                members = []
                for (arm, li, s), spec, res, fin in zip(meta, specs, results, finals, strict=True):
                    mask = spec.masks or {n: torch.ones(shapes[n], dtype=torch.bool) for n in names}
                    if arm == "ticket":
                        saved.update({f"ticket.{li}.{s}.final.{n}": fin[n] for n in names})
                        saved.update({f"ticket.{li}.{s}.mask.{n}": mask[n].bool() for n in names})
                    density = sum(int(mask[n].sum()) for n in names) / sum(
                        shapes[n].numel() for n in names
                    )
                    members.append(
                        _record(res, arm=arm, lr=lrs[li], seed=s, round=r, density=density)
                    )
                return {"members": members}, saved

            metrics, prev = rd.unit(f"b-round-{r:02d}", compute, check=_check_unit)
            records += [{"part": "B", **m} for m in metrics["members"]]
            if bar is not None:
                bar.update(1)
        return records

    # -- summary and claims -------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        if m["part"] == "A":
            where = "" if m["arm"] == "dense" else f" at {m['ratio']:.0%} pruned"
            return f"{m['arm']}{where} seed {m['seed']}"
        return f"{m['arm']} lr {m['lr']:g} round {m['round']} seed {m['seed']}"

    def summarize(self, cfg: RethinkingPruningConfig, records: list[dict], chance: float) -> dict:
        """Rows of mean ± std over seeds (diverged members left out), and the claims."""
        rows_a, rows_b = [], []
        a = [m for m in records if m["part"] == "A"]
        for arm in ARMS_A:
            for ratio in sorted({m["ratio"] for m in a if m["arm"] == arm}):
                ms = sorted(
                    (m for m in a if m["arm"] == arm and m["ratio"] == ratio),
                    key=lambda m: m["seed"],
                )
                rows_a.append(self._row(ms, arm=arm, ratio=ratio, epochs=ms[0]["epochs"]))
        b = [m for m in records if m["part"] == "B"]
        tainted = {}
        for m in sorted(b, key=lambda m: m["round"]):
            key = (m["lr"], m["seed"])
            if m["arm"] == "ticket" and m["diverged"] and key not in tainted:
                tainted[key] = m["round"]
        for lr in (cfg.lth_lr_high, cfg.lth_lr_low):
            for r in sorted({m["round"] for m in b}):
                for arm in ARMS_B:
                    ms = sorted(
                        (m for m in b if m["lr"] == lr and m["round"] == r and m["arm"] == arm),
                        key=lambda m: m["seed"],
                    )
                    if ms:
                        rows_b.append(
                            self._row(
                                ms, tainted, arm=arm, lr=lr, round=r, density=ms[0]["density"]
                            )
                        )
        claims = [c.to_dict() for c in self.check_claims(cfg, rows_a, rows_b, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows_a": rows_a,
            "rows_b": rows_b,
            "claims": claims,
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "collapsed_late": self.collapsed_late(a, chance),
            "accuracy": "test accuracy (%) at the early-stopping iteration (minimum validation "
            "loss), both parts; part A's final test accuracy is reported beside it",
            "control_epochs": cfg.control_epochs,
        }

    def collapsed_late(self, members: list[dict], chance: float) -> list[dict]:
        """Members whose final test accuracy fell below chance + 10 pts although their
        accuracy at the early-stopping iteration was at or above it (reported, not hidden)."""
        floor = chance + CHANCE_MARGIN_PTS
        return [
            {
                "member": self.member_name(m),
                "test_acc": m["test_acc"],
                "final_test_acc": m["final_test_acc"],
            }
            for m in members
            if not m["diverged"]
            and m["test_acc"] is not None
            and m["final_test_acc"] is not None
            and m["test_acc"] >= floor > m["final_test_acc"]
        ]

    def _row(self, ms: list[dict], tainted: dict | None = None, **meta) -> dict:
        """Mean ± std of ``ms``; diverged members (and, in part B, members pruned from a
        diverged ticket: ``tainted[(lr, seed)]`` is the round it diverged) left out."""
        excluded, kept = [], []
        for m in ms:
            since = (tainted or {}).get((m.get("lr"), m["seed"]))
            if m["diverged"]:
                excluded.append(self.member_name(m) + " (diverged)")
            elif since is not None and since < m.get("round", 0):
                excluded.append(self.member_name(m) + " (pruned from a diverged ticket)")
            else:
                kept.append(m)
        out = dict(meta)
        for key in ("final_test_acc", "test_acc", "control_acc"):
            vals = [m[key] for m in kept]
            mean, std = mean_std(vals) if vals else (math.nan, math.nan)
            out[f"{key}_mean"], out[f"{key}_std"] = mean, std
            out[f"{key}_values"] = vals
        out["seeds"] = [m["seed"] for m in kept]
        out["early_stop_mean"] = (
            mean_std([m["early_stop_step"] for m in kept])[0] if kept else math.nan
        )
        out["last_step"] = max((m["last_step"] for m in ms), default=0)
        out["flop_ratio"] = ms[0].get("flop_ratio")
        out["excluded"] = excluded
        out["n"] = len(kept)
        return out

    @staticmethod
    def check_claims(
        cfg, rows_a: list[dict], rows_b: list[dict], chance: float
    ) -> list[ClaimResult]:
        def ex(rows):
            return [e for r in rows for e in r["excluded"]]

        by_a = {(r["arm"], r["ratio"]): r for r in rows_a}
        dense = by_a[("dense", 0.0)]
        ratios = sorted({r["ratio"] for r in rows_a if r["arm"] != "dense"})
        learned = baseline_learned(dense["test_acc_mean"], chance=chance)
        ft = [by_a[("finetuned", q)] for q in ratios]
        se = [by_a[("scratch-E", q)] for q in ratios]
        sb = [by_a[("scratch-B", q)] for q in ratios]
        ctl = cfg.control_epochs

        def control_a():
            leads = [
                (q, f["control_acc_mean"] - e["control_acc_mean"])
                for q, f, e in zip(ratios, ft, se, strict=True)
            ]
            ok = all(lead > CONTROL_LEAD_PTS for _, lead in leads)
            detail = (
                "; ".join(
                    f"{q:.0%}: fine-tuned - Scratch-E after {ctl} epochs {lead:+.2f} pts"
                    for q, lead in leads
                )
                + f" (needed > {CONTROL_LEAD_PTS:g} at every ratio)"
            )
            return ok, detail, {"leads": [{"ratio": q, "lead_pts": lead} for q, lead in leads]}

        control_ok, control_detail, _ = control_a() if not learned else (None, "", {})
        control_pre = f"positive control failed ({control_detail})" if control_ok is False else None

        def scratch_check(rows, label):
            def check():
                gaps = [
                    (q, s["test_acc_mean"], f["test_acc_mean"])
                    for q, s, f in zip(ratios, rows, ft, strict=True)
                ]
                ok = all(a - b >= -SCRATCH_TOLERANCE_PTS for _, a, b in gaps)
                detail = (
                    "; ".join(
                        f"{q:.0%}: {label} {a:.2f}% vs fine-tuned {b:.2f}% ({a - b:+.2f} pts)"
                        for q, a, b in gaps
                    )
                    + f"; needed >= -{SCRATCH_TOLERANCE_PTS:g} pt at every ratio"
                )
                ev = {
                    "gaps": [
                        {"ratio": q, label: a, "finetuned": b, "gap_pts": a - b} for q, a, b in gaps
                    ]
                }
                return ok, detail, ev

            return check

        by_b = {(r["lr"], r["round"], r["arm"]): r for r in rows_b}
        rep = [r for r in sorted({r["round"] for r in rows_b if r["arm"] == "reinit"})]
        hi, lo = cfg.lth_lr_high, cfg.lth_lr_low
        dense_hi = by_b.get((hi, 0, "ticket"))
        learned_b = baseline_learned(
            dense_hi["test_acc_mean"] if dense_hi else None, chance=chance, name="lottery MLP dense"
        )

        def pairs(lr, r):
            t, ri = by_b[(lr, r, "ticket")], by_b[(lr, r, "reinit")]
            common = sorted(set(t["seeds"]) & set(ri["seeds"]))
            a = [t["test_acc_values"][t["seeds"].index(s)] for s in common]
            b = [ri["test_acc_values"][ri["seeds"].index(s)] for s in common]
            return t, ri, a, b

        low_rounds = [r for r in rep if by_b[(lo, r, "ticket")]["density"] <= LTH_CONTROL_DENSITY]

        def control_b():
            wins = []
            for r in low_rounds:
                t, ri, a, b = pairs(lo, r)
                wins.append((t["density"], t["test_acc_mean"] - ri["test_acc_mean"]))
            ok = any(w > LTH_CONTROL_PTS for _, w in wins)
            detail = "; ".join(f"{d:.1%}: ticket - re-init {w:+.2f} pts" for d, w in wins) + (
                f" at lr {lo:g} (needed > {LTH_CONTROL_PTS:g} at some density <= {LTH_CONTROL_DENSITY:.0%})"
            )
            return ok, detail, {"wins": [{"density": d, "ticket_minus_reinit": w} for d, w in wins]}

        ctl_b_ok = None
        if low_rounds and not learned_b:
            ctl_b_ok, ctl_b_detail, _ = control_b()
        ctl_b_pre = f"positive control failed ({ctl_b_detail})" if ctl_b_ok is False else None

        def lth_check():
            out, ok = [], True
            for r in rep:
                t, ri, a, b = pairs(hi, r)
                inside, ev = within_margin(a, b, LTH_MARGIN_PTS)
                ok &= inside
                out.append({"density": t["density"], **ev})
            detail = (
                "; ".join(
                    f"{e['density']:.1%}: {e['mean_difference']:+.2f} pts, 90% CI [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}]"
                    for e in out
                )
                + f" at lr {hi:g} (needed every CI inside ±{LTH_MARGIN_PTS:g} pt)"
            )
            return ok, detail, {"densities": out}

        converged = [
            stopped_before_end(
                by_b[(lr, 0, "ticket")]["early_stop_mean"],
                by_b[(lr, 0, "ticket")]["last_step"],
                name=f"lottery MLP dense (lr {lr:g})",
            )
            for lr in (hi, lo)
            if (lr, 0, "ticket") in by_b
        ]
        no_low = (
            None if low_rounds else f"no compared density <= {LTH_CONTROL_DENSITY:.0%} in this run"
        )
        read_b = [by_b[(lr, r, arm)] for lr in (hi, lo) for r in rep for arm in ARMS_B]
        return [
            judge(
                "control-a",
                QUOTE_SCRATCH,
                f"positive control: after {ctl} epochs the fine-tuned model leads Scratch-E by > {CONTROL_LEAD_PTS:g} pt at every ratio",
                [learned, no_divergence(ex([dense, *ft, *se]))],
                control_a,
            ),
            judge(
                "scratch-b",
                QUOTE_SCRATCH,
                f"Scratch-B >= fine-tuned - {SCRATCH_TOLERANCE_PTS:g} pt (test accuracy at early stop, seed mean) at every ratio",
                [learned, no_divergence(ex([dense, *ft, *sb, *se])), control_pre],
                scratch_check(sb, "scratch-B"),
            ),
            judge(
                "scratch-e",
                QUOTE_SCRATCH,
                f"Scratch-E >= fine-tuned - {SCRATCH_TOLERANCE_PTS:g} pt (test accuracy at early stop, seed mean) at every ratio",
                [learned, no_divergence(ex([dense, *ft, *se])), control_pre],
                scratch_check(se, "scratch-E"),
            ),
            judge(
                "control-b",
                QUOTE_LTH,
                f"positive control: at lr {lo:g} the ticket beats re-init by > {LTH_CONTROL_PTS:g} pt at some density <= {LTH_CONTROL_DENSITY:.0%}",
                [no_low, learned_b, *converged, no_divergence(ex(read_b))],
                control_b,
            ),
            judge(
                "lth",
                QUOTE_LTH,
                f"at lr {hi:g}, ticket - re-init lies within ±{LTH_MARGIN_PTS:g} pt (90% CI of the paired difference) at every compared density",
                [no_low, learned_b, *converged, no_divergence(ex(read_b)), ctl_b_pre],
                lth_check,
            ),
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict):
        ctl = summary.get("control_epochs", 2)
        head_a = [
            "arm",
            "pruned",
            "epochs",
            "test acc % (early stop)",
            "final test acc %",
            f"acc % after {ctl} ep",
            "FLOP ratio",
            "n",
        ]
        rows_a = [
            [
                r["arm"],
                f"{r['ratio']:.0%}",
                str(r["epochs"]),
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["final_test_acc_mean"], r["final_test_acc_std"]),
                _pm(r["control_acc_mean"], r["control_acc_std"]),
                f"{r['flop_ratio']:.2f}" if r.get("flop_ratio") else "",
                str(r["n"]),
            ]
            for r in summary["rows_a"]
        ]
        head_b = ["lr", "round", "density", "arm", "test acc % (early stop)", "final acc %", "n"]
        rows_b = [
            [
                f"{r['lr']:g}",
                str(r["round"]),
                f"{100 * r['density']:.1f}%",
                "dense" if r["round"] == 0 else r["arm"],
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["final_test_acc_mean"], r["final_test_acc_std"]),
                str(r["n"]),
            ]
            for r in summary["rows_b"]
        ]
        out = [
            ("Part A: fine-tuning vs training from scratch (over seeds)", head_a, rows_a),
            ("Part B: IMP ticket vs random re-init of its mask (over seeds)", head_b, rows_b),
        ]
        late = summary.get("collapsed_late") or []
        if late:
            floor = summary["chance_pct"] + CHANCE_MARGIN_PTS
            out.append(
                (
                    f"Part A members that collapsed late (final test accuracy below chance + "
                    f"{CHANCE_MARGIN_PTS:g} = {floor:.1f}% after an early-stop accuracy above it)",
                    ["member", "test acc % (early stop)", "final test acc %"],
                    [
                        [m["member"], f"{m['test_acc']:.1f}", f"{m['final_test_acc']:.1f}"]
                        for m in late
                    ],
                )
            )
        return out

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ax = axes[0]
        rows = summary["rows_a"]
        ratios = sorted({r["ratio"] for r in rows if r["arm"] != "dense"})
        colors = {"finetuned": "tab:blue", "scratch-E": "tab:orange", "scratch-B": "tab:green"}
        for j, arm in enumerate(colors):
            pts = [next(r for r in rows if r["arm"] == arm and r["ratio"] == q) for q in ratios]
            x = [i + (j - 1) * 0.25 for i in range(len(ratios))]
            ax.bar(
                x,
                [_num(p["test_acc_mean"]) for p in pts],
                0.25,
                yerr=[_num(p["test_acc_std"]) for p in pts],
                color=colors[arm],
                label=arm,
            )
        dense = next(r for r in rows if r["arm"] == "dense")
        ax.axhline(_num(dense["test_acc_mean"]), color="gray", ls="--", lw=1, label="dense")
        ax.set_xticks(range(len(ratios)), [f"{q:.0%} pruned" for q in ratios])
        lo = min(_num(r["test_acc_mean"]) for r in rows)
        if math.isfinite(lo):
            ax.set_ylim(max(0, lo - 10), None)
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.set_title("A: structured pruning, fine-tune vs scratch")
        ax.legend(fontsize=8)
        ax = axes[1]
        for lr, ls in zip(
            sorted({r["lr"] for r in summary["rows_b"]}, reverse=True), ("-", "--"), strict=False
        ):
            for arm, c in (("ticket", "tab:blue"), ("reinit", "tab:red")):
                pts = [r for r in summary["rows_b"] if r["lr"] == lr and r["arm"] == arm]
                if arm == "reinit":
                    pts = [r for r in pts if r["round"] > 0]
                pts.sort(key=lambda r: -r["density"])
                ax.errorbar(
                    [100 * r["density"] for r in pts],
                    [_num(r["test_acc_mean"]) for r in pts],
                    yerr=[_num(r["test_acc_std"]) for r in pts],
                    color=c,
                    ls=ls,
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{arm}, lr {lr:g}",
                )
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy at early stop (%)")
        ax.set_title("B: lottery ticket vs re-init")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.suptitle("Rethinking the value of network pruning (mean ± std over seeds)")
        png = figure_png(fig)
        return [Figure("rethinking_pruning.png", "Fine-tune vs scratch; ticket vs re-init", png)]


__all__ = ["RethinkingPruning", "RethinkingPruningConfig"]
