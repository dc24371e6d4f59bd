"""Recipe ``mup-transfer``: μP's learning rate stays put across widths, SP's drifts (row [#58]).

Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks" (Tensor Programs IV)
propose the maximal-update parametrization μP; Yang et al. 2021 ("Tensor Programs V")
show that its best hyperparameters transfer across width. MLPs 40-w-w-10 on MNIST-1D,
``w ∈ {64, 128, 256, 512, 1024}``, in SP and in μP with base width 64 (``mup``'s
placement, trained in its abc-equivalent folded form so every member is a plain MLP on
the population fast path; exact when Adam's ε = 0, and ε = 1e-8 here), Adam at ≥ 6
learning rates a factor 2 apart (default 2⁻¹²…2⁻⁵), 2 seeds, batch 64, 500 steps at a
constant lr. One population per width (one unit each): SP and μP × lrs × seeds.

The training split is cut to ``k · batch`` examples with ``k`` the largest divisor of the
step count that fits (3,200 of MNIST-1D's 3,500 for 500 steps: 10 epochs of 50), so the
run is exactly ``steps`` updates; an evaluation every ``last_steps`` steps makes the last
evaluation's training loss the mean over the last 50 steps. Best lr = the lowest of that,
mean over seeds (a diverged member counts as +inf).

Claims: (a) under μP every width's best lr is within 1 grid step of width 64's; (b) under
SP width 1024's is ≥ 2 steps away; (c) coordinate check over the first 5 steps (after
updates 1-5, lr 2⁻⁸): under μP every layer's log-log slope of mean |output| against
width is within ±0.2, under SP some layer's is ≥ 0.5. Preconditions of (a) and (b): width
64's best lr is not on the grid's edge, and the grid has the issue's ≥ 6 learning rates
(a smaller grid, as in the smoke run, is reported as not tested).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from weightlab.data.task import Split
from weightlab.errors import ConfigError
from weightlab.init.base_shapes import BaseShapes
from weightlab.init.coord_check import coord_check
from weightlab.init.parametrization import Record, get_parametrization, lr_groups, parametrize
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge
from weightlab.recipes.stats import num as _num
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

PARAMS = ("sp", "mup")
QUOTE_FEATURES = (
    "We propose simple modifications to the standard parametrization to allow for feature "
    "learning in the limit"
)
QUOTE_SP = (
    "the standard and NTK parametrizations of a neural network do not admit infinite-width "
    "limits that can learn features"
)
# Fixed claim thresholds (from the issue), not options.
STAYS_STEPS = 1  # (a) μP: every width within 1 grid step of the base width's best lr
DRIFT_STEPS = 2  # (b) SP: the widest width >= 2 steps away
FLAT_SLOPE = 0.2  # (c) μP: every layer |slope| <= 0.2 over the first steps
GROW_SLOPE = 0.5  # (c) SP: some layer's slope >= 0.5
MIN_LRS = 6  # (a), (b): the lr grid needs >= 6 values


@dataclass(frozen=True)
class MupTransferConfig(RecipeConfig):
    seeds: int = opt(2, "number of seeds per (parametrization, width, lr)", min=1, max=1000)
    widths: str = opt("64,128,256,512,1024", "hidden widths w of the 40-w-w-10 MLPs")
    base_width: int = opt(64, "μP's base width (must be one of --widths)", min=1)
    lr_log2_min: int = opt(-12, "smallest learning rate, as log2", min=-40, max=10)
    lr_log2_max: int = opt(
        -5, "largest learning rate, as log2 (grid: factor 2 apart)", min=-40, max=10
    )
    steps: int = opt(500, "training steps at a constant lr", min=1, max=1_000_000)
    last_steps: int = opt(50, "best lr = lowest mean training loss over the last N steps", min=1)
    batch_size: int = opt(64, "batch size", min=1)
    coord_steps: int = opt(5, "coordinate check: steps recorded after init", min=1, max=100)
    coord_lr_log2: int = opt(-8, "coordinate check: Adam lr as log2", min=-40, max=10)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            ws = [int(w) for w in self.widths.split(",")]
        except ValueError:
            raise ConfigError(
                f"--widths must be comma-separated integers like 64,256; got {self.widths!r}"
            ) from None
        if any(w <= 0 for w in ws) or len(set(ws)) != len(ws):
            raise ConfigError(f"--widths must be distinct positive integers; got {self.widths!r}")
        if len(ws) < 2:
            raise ConfigError(
                f"a width sweep needs at least two widths; got --widths {self.widths}"
            )
        if self.base_width not in ws:
            raise ConfigError(
                f"--base-width {self.base_width} must be one of --widths {self.widths}"
            )
        if self.lr_log2_max - self.lr_log2_min < 2:
            raise ConfigError("the lr grid needs >= 3 values: --lr-log2-max >= --lr-log2-min + 2")
        if self.steps % self.last_steps:
            raise ConfigError(
                f"--steps {self.steps} must be a multiple of --last-steps {self.last_steps}"
            )

    @property
    def width_values(self) -> list[int]:
        return sorted(int(w) for w in self.widths.split(","))

    @property
    def lr_exps(self) -> list[int]:
        return list(range(self.lr_log2_min, self.lr_log2_max + 1))


def steps_layout(n_train: int, batch: int, steps: int) -> tuple[int, int]:
    """``(examples, epochs)``: ``k · batch`` examples, ``k`` the largest divisor of
    ``steps`` with ``k · batch <= n_train``, and ``steps / k`` epochs: exactly ``steps``."""
    ks = [k for k in range(1, steps + 1) if steps % k == 0 and k * batch <= n_train]
    if not ks:
        raise ConfigError(f"--batch-size {batch} exceeds the {n_train} training examples")
    k = max(ks)
    return k * batch, steps // k


def _check_width_unit(metrics: dict) -> None:
    expect_fields(metrics, {"width": int, "members": list, "seconds": (int, float)}, "the metrics")
    expect_list_of(
        metrics["members"],
        {"param": str, "lr_log2": int, "seed": int, "last_train_loss": (int, float, type(None)),
         "diverged": bool},
        "members",
    )  # fmt: skip


def _check_coord_unit(metrics: dict) -> None:
    expect_fields(metrics, {"sp": dict, "mup": dict}, "the metrics")


class MupTransfer(Recipe):
    name = "mup-transfer"
    family = "init"
    row = 58
    paper = (
        "Yang & Hu 2021, Feature Learning in Infinite-Width Neural Networks (arXiv:2011.14522); "
        "Yang et al. 2021, Tensor Programs V (arXiv:2203.03466)"
    )
    claim = "under μP the best Adam lr stays put across widths; under SP it drifts"
    Config = MupTransferConfig
    tasks = ("mnist1d", "digits", "wine", "breast_cancer", "iris")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 1, "widths": "8,16,32", "base_width": 8, "lr_log2_min": -8,
        "lr_log2_max": -6, "steps": 20, "last_steps": 10, "batch_size": 32, "coord_steps": 2,
    }  # fmt: skip
    broken: ClassVar[dict] = {"lr_log2_min": 8, "lr_log2_max": 10, "coord_lr_log2": 10}
    # measured in-process, one thread, MNIST-1D cached, CPU time (2 cores shared by ~12
    # jobs): 4.8 s for the first run of a process, 2.9 s after (half of it the figure)
    smoke_seconds = 4.8

    def validate(self, cfg: MupTransferConfig, data_sizes: dict[str, int]) -> None:
        """The batch (and the coordinate check's steps) fit the training split."""
        steps_layout(data_sizes["train"], cfg.batch_size, cfg.steps)
        if cfg.coord_steps * cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--coord-steps {cfg.coord_steps} × --batch-size {cfg.batch_size} exceeds the "
                f"{data_sizes['train']} training examples"
            )

    def _setup(self, cfg: MupTransferConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLPs "
                "need flat feature vectors"
            )
        d_in, k = data.input_shape[0], data.num_classes
        b = cfg.base_width
        shapes = BaseShapes.infer(MLP([d_in, b, b, k]), MLP([d_in, b + 1, b + 1, k]))
        return data, d_in, k, shapes

    def run(self, cfg: MupTransferConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data, d_in, k, shapes = self._setup(cfg)
        n, epochs = steps_layout(len(data.train), cfg.batch_size, cfg.steps)
        sub = replace(data, train=Split(data.train.x[:n], data.train.y[:n]))
        # μP's rules and base shapes, as saved beside weights (here: nothing is scaled yet)
        rd.write_json("base_shapes.json", Record(get_parametrization("mup"), shapes).to_dict())
        train_cfg = TrainConfig(epochs, cfg.batch_size, cfg.last_steps, OptimConfig("adam"))
        widths = cfg.width_values
        bar = progress_bar(len(widths) + 1, self.name, "unit", progress, line_each_update=True)
        records, timing = [], []
        for w in widths:

            def compute(w=w):
                schemes = {"sp": "sp", "mup": "mup-folded"}

                def factory(seed, p):
                    m = build(MLP, [d_in, w, w, k], seed=seed)
                    parametrize(m, schemes[p], shapes if p == "mup" else None)
                    return m

                with torch.device("meta"):  # names and shapes only
                    probe = MLP([d_in, w, w, k])
                groups = {
                    p: lr_groups(probe, Record(get_parametrization(s), shapes), "adam")
                    for p, s in schemes.items()
                }
                members, meta = [], []
                for p in PARAMS:
                    for e in cfg.lr_exps:
                        for s in range(cfg.seeds):
                            init = derive_seed(self.name, "init", s, w)
                            optim = OptimConfig("adam", lr=2.0**e, groups=groups[p])
                            spec = MemberSpec(
                                seed=init, optim=optim, data_seed=derive_seed(self.name, "data", s)
                            )
                            members.append(((p, w), spec))  # fmt: skip
                            meta.append((p, e, s))
                factories = {(p, w): (lambda seed, p=p: factory(seed, p)) for p in PARAMS}
                t0 = time.perf_counter()
                pop = Population.sweep(factories, members, device=cfg.device)
                results = pop.fit(sub, train_cfg, progress=progress)
                seconds = time.perf_counter() - t0
                flops = pop.useful_flops_per_step(sub.train.x[: cfg.batch_size], cfg.batch_size)
                out = []
                for (p, e, s), r in zip(meta, results, strict=True):
                    last = r.history[-1]
                    ok = (
                        not r.diverged and last.step == cfg.steps and math.isfinite(last.train_loss)
                    )
                    out.append(
                        {"param": p, "lr_log2": e, "seed": s, "diverged": not ok,
                         "last_train_loss": last.train_loss if ok else None,
                         "final_test_acc": last.test_acc if ok else None}
                    )  # fmt: skip
                return {"width": w, "members": out, "seconds": seconds,
                        "useful_flops": flops * cfg.steps}, {}  # fmt: skip

            metrics, _ = rd.unit(f"width-{w:05d}", compute, check=_check_width_unit)
            records.extend({**m, "width": w} for m in metrics["members"])
            timing.append((w, metrics["seconds"], metrics.get("useful_flops", 0)))
            if bar is not None:
                bar.update(1)

        def compute_coord():
            out = {}
            for p in PARAMS:

                def b(w, p=p):
                    m = build(MLP, [d_in, w, w, k], seed=derive_seed(self.name, "coord", w))
                    rec = parametrize(m, p, shapes if p == "mup" else None)
                    optim = OptimConfig("adam", lr=2.0**cfg.coord_lr_log2,
                                        groups=lr_groups(m, rec, "adam"))  # fmt: skip
                    return m, TrainConfig(1, cfg.batch_size, 0, optim)

                out[p] = coord_check(b, widths, data, steps=cfg.coord_steps).to_dict()
            return out, {}

        coord, _ = rd.unit("coord-check", compute_coord, check=_check_coord_unit)
        if bar is not None:
            bar.update(1)
            bar.close()
        peak = _peak_flops()
        self._measurements = [
            (
                "Population throughput per width (useful matmul FLOPs only; peak = this "
                f"machine's fp32 2048² matmul rate, {peak / 1e9:.0f} GF/s, measured now)",
                ["width", "seconds", "useful GFLOP", "share of peak"],
                [[str(w), f"{sec:.1f}", f"{fl / 1e9:.0f}", f"{100 * fl / sec / peak:.0f}%"]
                 for w, sec, fl in timing],
            )
        ]  # fmt: skip
        return self.summarize(cfg, records, coord, chance_loss=math.log(k))

    # -- summary and claims ---------------------------------------------------------------
    def summarize(
        self, cfg: MupTransferConfig, records: list[dict], coord: dict, chance_loss: float
    ) -> dict:
        exps = cfg.lr_exps
        rows, best = [], {}
        for p in PARAMS:
            for w in cfg.width_values:
                losses = []
                for e in exps:
                    ms = [m for m in records if m["param"] == p and m["width"] == w
                          and m["lr_log2"] == e]  # fmt: skip
                    vals = [math.inf if m["diverged"] else m["last_train_loss"] for m in ms]
                    losses.append(sum(vals) / len(vals) if vals else math.nan)
                i = min(range(len(exps)), key=lambda j: (losses[j], j))
                best[(p, w)] = i
                rows.append({"param": p, "width": w, "best_lr_log2": exps[i],
                             "loss_by_lr": [None if not math.isfinite(x) else x for x in losses]})  # fmt: skip
        steps = list(range(1, cfg.coord_steps + 1))
        coord_rows = {}
        for p in PARAMS:
            c = coord[p]
            vals = [c["slopes"][t][n] for t in steps for n in c["layers"]]
            vals = [math.nan if v is None else float(v) for v in vals]  # JSON null = nan
            ok = all(math.isfinite(v) for v in vals)
            coord_rows[p] = {
                "max_abs_slope": max(abs(v) for v in vals) if ok else None,
                "max_slope": max(vals) if ok else None,
            }
        base = next(r for r in rows if r["param"] == "mup" and r["width"] == cfg.base_width)
        base_best = min((x for x in base["loss_by_lr"] if x is not None), default=math.inf)
        not_learned = (
            None
            if base_best < chance_loss
            else f"width {cfg.base_width}'s best training loss {base_best:.3f} is not below "
            f"chance's {chance_loss:.3f} (ln of the class count): the sweep did not learn"
        )
        claims = [c.to_dict() for c in self.check_claims(cfg, best, coord_rows, not_learned)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "lr_log2_grid": exps,
            "rows": rows,
            "coord_check": coord,
            "coord_summary": coord_rows,
            "claims": claims,
            "members": len(records),
            "diverged_members": [
                f"{m['param']} w={m['width']} lr=2^{m['lr_log2']} seed {m['seed']}"
                for m in records
                if m["diverged"]
            ],
            "best_lr": "lowest training loss over the last "
            f"{cfg.last_steps} of {cfg.steps} steps, mean of {cfg.seeds} seeds",
        }

    @staticmethod
    def check_claims(
        cfg: MupTransferConfig, best: dict, coord_rows: dict, not_learned: str | None = None
    ) -> list[ClaimResult]:
        """(a) μP stays put, (b) SP drifts (both need width ``base``'s best lr off the grid's
        edge and >= 6 lrs), (c) the coordinate check; all need the sweep to have learned and, for (c),
        finite activations."""
        exps, widths = cfg.lr_exps, cfg.width_values
        b, top = cfg.base_width, widths[-1]
        edge = []
        for p in PARAMS:
            if best[(p, b)] in (0, len(exps) - 1):
                edge.append(f"{p} width {b}'s best lr 2^{exps[best[(p, b)]]} is on the grid's edge")
        if len(exps) < MIN_LRS:
            edge.append(f"the lr grid has {len(exps)} values, fewer than the {MIN_LRS} needed")
        pre = "; ".join(edge) or None

        finite = (
            None
            if all(v["max_abs_slope"] is not None for v in coord_rows.values())
            else "the coordinate check has non-finite activations (a diverged step)"
        )

        def check_a():
            d = {w: best[("mup", w)] - best[("mup", b)] for w in widths}
            detail = (
                "μP best lr (log2) by width: "
                + ", ".join(f"{w}: {exps[best[('mup', w)]]} ({d[w]:+d})" for w in widths)
                + f"; needed every |step| <= {STAYS_STEPS}"
            )
            return all(abs(x) <= STAYS_STEPS for x in d.values()), detail, {"steps": d}

        def check_b():
            d = best[("sp", top)] - best[("sp", b)]
            detail = (
                "SP best lr (log2) by width: "
                + ", ".join(f"{w}: {exps[best[('sp', w)]]}" for w in widths)
                + f"; width {top} is {d:+d} steps from width {b}'s, needed |steps| >= {DRIFT_STEPS}"
            )
            return abs(d) >= DRIFT_STEPS, detail, {"steps": d}

        def check_c():
            mu, sp = coord_rows["mup"]["max_abs_slope"], coord_rows["sp"]["max_slope"]
            detail = (f"steps 1-{cfg.coord_steps}: μP max |slope| {mu:.3f} (needed <= "
                      f"{FLAT_SLOPE}), SP max slope {sp:.3f} (needed >= {GROW_SLOPE})")  # fmt: skip
            return mu <= FLAT_SLOPE and sp >= GROW_SLOPE, detail, coord_rows

        return [
            judge("a", QUOTE_FEATURES, f"under μP every width's best Adam lr is within "
                  f"{STAYS_STEPS} grid step of width {b}'s (stays put)", [not_learned, pre], check_a),
            judge("b", QUOTE_SP, f"under SP width {top}'s best Adam lr is >= {DRIFT_STEPS} "
                  f"grid steps from width {b}'s (drifts)", [not_learned, pre], check_b),
            judge("c", QUOTE_SP, f"coordinate check, first {cfg.coord_steps} steps: under μP "
                  f"every layer's log-log slope vs width is within ±{FLAT_SLOPE}; under SP some "
                  f"layer's is >= {GROW_SLOPE}", [not_learned, finite], check_c),
        ]  # fmt: skip

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        exps = summary["lr_log2_grid"]
        header = ["param", "width", "best lr", *[f"2^{e}" for e in exps]]
        rows = [
            [r["param"], str(r["width"]), f"2^{r['best_lr_log2']}",
             *["div" if x is None else f"{x:.3f}" for x in r["loss_by_lr"]]]
            for r in summary["rows"]
        ]  # fmt: skip
        coord = []
        for p in PARAMS:
            c = summary["coord_check"][p]
            for t, sl in enumerate(c["slopes"]):
                coord.append(
                    [p, str(t), *["nan" if sl[n] is None else f"{sl[n]:+.2f}" for n in c["layers"]]]
                )
        layers = summary["coord_check"]["sp"]["layers"]
        return [
            ("Training loss over the last steps (mean of seeds) by lr", header, rows),
            ("Coordinate check: log-log slope of mean |output| vs width, by step",
             ["param", "step", *layers], coord),
        ]  # fmt: skip

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        exps = summary["lr_log2_grid"]
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        for ax, p in zip(axes[:2], PARAMS, strict=True):
            for r in (r for r in summary["rows"] if r["param"] == p):
                ys = [math.nan if x is None else x for x in r["loss_by_lr"]]
                ax.plot(exps, ys, "o-", ms=3, label=f"w={r['width']}")
            ax.set_yscale("log")
            ax.set_xlabel("log2 lr")
            ax.set_ylabel("train loss, last steps")
            ax.set_title(p.upper() if p == "sp" else "μP")
            ax.legend(fontsize=7)
        for ax, p in zip(axes[2:], PARAMS, strict=True):
            c = summary["coord_check"][p]
            ws = c["widths"]
            last = len(c["slopes"]) - 1
            for n in c["layers"]:
                ax.plot(ws, [_num(c["scale"][str(w)][last][n]) for w in ws], "o-", ms=3,
                        label=f"{n} ({_num(c['slopes'][last][n]):+.2f})")  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("width")
            ax.set_title(f"coord check {p}, step {last}")
            ax.legend(fontsize=7)
        png = figure_png(fig, dpi=100)
        return [Figure("mup_transfer.png", "lr sweeps by width and coordinate check", png)]


def _peak_flops(size: int = 2048, seconds: float = 0.3) -> float:
    """This machine's fp32 matmul rate now (best of repeated 2048² products)."""
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))  # not the global RNG
    a @ a
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ a
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best
