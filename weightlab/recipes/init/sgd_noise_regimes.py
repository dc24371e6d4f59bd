"""Recipe ``sgd-noise-regimes``: Sclocchi, Geiger & Wyart (2023), "Dissecting the Effects of
SGD Noise in Distinct Regimes of Deep Learning" (arXiv:2301.13703, ICML 2023; row [#54]).

Setup, following the paper where the abstract and the methods row allow:

- task ``mnist1d_binary`` (MNIST-1D digits 0-4 vs 5-9), ``P ∈ {256, 1024, 4000}`` training
  examples drawn class-balanced from MNIST-1D's 4000 train+val examples; test = its 1000
  test examples;
- an MLP ``40-h-h-1`` (ReLU, PyTorch's default init) with a scalar output, wrapped as
  ``F = α (f_θ − f_θ0)`` by :func:`weightlab.init.output_scale` (centred on a frozen copy
  of the initial net, so ``F ≡ 0`` at init on every input); ``α = 10`` is lazy, ``α = 0.1``
  rich (the abstract: "alpha is a key parameter that controls if the network is 'lazy'
  (alpha >> 1) or instead learns features (alpha << 1)");
- the hinge loss ``ℓ = max(0, 1 − y F)`` on labels ``y = ±1``, so the training loss reaches
  exactly 0 and SGD stops once every margin is >= 1 (the "stopping process whereby all
  data are fitted");
- plain SGD (no momentum, no weight decay) at batch ``B`` with learning rate
  ``η = η₀ / α²`` (:func:`weightlab.init.default_lr`). This is SGD with rate ``η₀`` on the
  paper's normalized loss ``α⁻² mean ℓ(y F)``, so the temperature is ``T = η₀ / B``. ``T``
  varies through ``η₀`` at fixed ``B``: every ``(α, P)`` cell's temperatures × seeds are
  one population with a per-member learning rate (``MemberSpec.optim``); seed ``s`` has the
  same init and the same data order at every ``T`` and ``α`` (common random numbers).
  Each ``α`` has its own temperature grid: the stable learning rate scales like ``α``
  (the loss's curvature is ``α⁻¹ ℓ' ∇²f``), so the rich net diverges or dies at
  temperatures the lazy one needs;
- a fixed epoch budget per ``P`` ("trained to zero training error": members still making
  training errors at the end are listed and make their cell's claims "not tested").

Measured per member from its final weights: test and train error (sign of ``F``), the
hinge loss, and ``‖w_T − w_0‖ / ‖w_0‖`` over all trained parameters (``w_0`` is the frozen
copy inside :class:`~weightlab.init.OutputScale`).

Claims (thresholds are module constants, not options):

- ``a-P<P>``, one per ``P``: from the smallest to the largest ``T`` the test error moves
  in opposite directions at the two ``α``: the signs of ``Δ = err(T_max) − err(T_min)``
  (means over seeds) are opposite (both non-zero) at that ``P``. Judged per ``P``, so a
  ``P`` whose cells did not fit is "not tested" without hiding the others.
- ``b-lazy`` and ``b-rich`` (one per ``α``): ``T_c``, the smallest ``T`` whose mean test
  error differs from the smallest ``T``'s by >= :data:`TC_PTS` points, rises strictly
  with ``P`` over the run's sizes, as the issue states. A ``P`` where no ``T`` moves the
  error that much is censored: ``T_c > T_max``. A censored ``T_c`` counts as above every
  uncensored one, and a pair of sizes whose smaller one is censored cannot show a rise,
  so the claim then does not hold. The log-log slope of ``T_c`` vs ``P`` (least squares
  over the uncensored sizes, >= 2 needed) is reported, not judged. Note: the authors'
  APS March Meeting 2023 abstract on this work writes the cross-over as
  ``T_c ~ P^{-a}``, i.e. falling with ``P``; the issue's direction is kept here and the
  measured slope shows which one the run supports.

Preconditions of every claim: each member it reads reached zero training error and none
diverged. Claim (a) reads every temperature at its ``P``; ``T_c`` reads, at each ``P``,
the temperatures up to ``T_c`` (all of them where it is censored): a member above ``T_c``
cannot change it. No member of the regime may have diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.core.snapshots import restore_snapshot
from weightlab.errors import ConfigError
from weightlab.init.output_scale import default_lr, output_scale
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_SIGN = "SGD noise can be detrimental or instead useful depending on the training regime"
QUOTE_TC = (
    "the characteristic temperature T_c where the noise of SGD starts affecting the trained "
    "model (and eventually performance) is a power law of P"
)
# Fixed claim thresholds (from the issue), not options.
TC_PTS = 2.0  # T_c: the first T whose mean test error differs from T_min's by >= 2 points
MIN_TEMPS = 5  # the ">= 5 log-spaced values" of T
MIN_SIZES = 3  # T_c must rise over (at least) the three sizes
TASK = "mnist1d_binary"
POOL = 4000


def hinge_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example hinge ``max(0, 1 − y F)`` with ``y = 2·target − 1 ∈ {−1, +1}``; ``pred``
    is ``(..., B, 1)`` (a scalar output), ``target`` int labels ``(B,)`` or ``(N, B)``.
    Returns ``pred.shape[:-1]``."""
    y = 2.0 * target.to(pred.dtype) - 1.0
    return torch.clamp(1.0 - y * pred[..., 0], min=0.0)


def _numbers(text: str, flag: str, kind: type, least: int = 1, distinct: bool = True) -> list:
    try:
        vals = [kind(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--{flag} must be comma-separated {kind.__name__}s like 1,2,4; got {text!r}"
        ) from None
    if len(vals) < least or any(not (math.isfinite(v) and v > 0) for v in vals):
        raise ConfigError(f"--{flag} must list at least {least} positive values; got {text!r}")
    if distinct and len(set(vals)) != len(vals):
        raise ConfigError(f"--{flag} lists a value twice: {text!r}")
    return vals


@dataclass(frozen=True)
class SGDNoiseConfig(RecipeConfig):
    seeds: int = opt(
        2, "independent seeds (init and data order; error bars are over seeds)", min=1, max=1000
    )
    data: str = opt(TASK, "task: binary MNIST-1D (digits 0-4 vs 5-9)")
    sizes: str = opt("256,1024,4000", "training-set sizes P (drawn from the 4000-example pool)")
    epochs_per_size: str = opt(
        "450,450,450", "epochs at each size of --sizes (same order): the fixed budget per P"
    )
    alpha_lazy: float = opt(10.0, "output scale alpha of the lazy regime", gt=0, max=1e6)
    alpha_rich: float = opt(0.1, "output scale alpha of the rich (feature) regime", gt=0, max=1e6)
    temps_lazy: str = opt(
        "0.016,0.032,0.064,0.128,0.256",
        "temperatures T = eta0/B at the lazy alpha (log-spaced; eta = eta0/alpha^2)",
    )
    temps_rich: str = opt(
        "0.000056,0.0001,0.00018,0.00032,0.00056",
        "temperatures T = eta0/B at the rich alpha (log-spaced; eta = eta0/alpha^2)",
    )
    batch_size: int = opt(64, "SGD batch size B (fixed; T varies through the learning rate)", min=1)
    width: int = opt(64, "hidden width h of the 40-h-h-1 MLP", min=1, max=4096)
    n_val: int = opt(
        500,
        "validation examples from the pool left after drawing P (at most what is left)",
        min=0,
        max=POOL,
    )
    draw_seed: int = opt(0, "seed of the class-balanced draw of the P training examples", min=0)
    evals: int = opt(10, "evaluations (train loss, val, test) per run", min=1, max=10000)

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = self.size_values
        if any(p > POOL for p in sizes):
            raise ConfigError(f"--sizes must be <= {POOL} (the MNIST-1D pool); got {self.sizes}")
        if len(self.epoch_values) != len(sizes):
            raise ConfigError(
                f"--epochs-per-size lists {len(self.epoch_values)} values for "
                f"{len(sizes)} sizes; give one per size of --sizes"
            )
        _ = (self.lazy_temps, self.rich_temps)  # parsed here so a bad grid fails early
        if not self.alpha_rich < self.alpha_lazy:
            raise ConfigError(
                f"--alpha-rich ({self.alpha_rich:g}) must be below --alpha-lazy "
                f"({self.alpha_lazy:g})"
            )

    @property
    def size_values(self) -> list[int]:
        return _numbers(self.sizes, "sizes", int)

    @property
    def epoch_values(self) -> list[int]:
        return _numbers(self.epochs_per_size, "epochs-per-size", int, distinct=False)

    @property
    def lazy_temps(self) -> list[float]:
        return sorted(_numbers(self.temps_lazy, "temps-lazy", float, least=2))

    @property
    def rich_temps(self) -> list[float]:
        return sorted(_numbers(self.temps_rich, "temps-rich", float, least=2))

    def regimes(self) -> list[tuple[str, float, list[float]]]:
        """``(regime, alpha, temperatures)``, rich first."""
        return [
            ("rich", self.alpha_rich, self.rich_temps),
            ("lazy", self.alpha_lazy, self.lazy_temps),
        ]

    def epochs_for(self, size: int) -> int:
        return dict(zip(self.size_values, self.epoch_values, strict=True))[size]


def _check_unit(metrics: dict) -> None:
    expect_fields(
        metrics,
        {"regime": str, "alpha": (int, float), "size": int, "members": list},
        "the metrics",
    )
    opt_num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {
            "temp": (int, float),
            "seed": int,
            "lr": (int, float),
            "diverged": bool,
            "train_err": opt_num,
            "train_loss": opt_num,
            "test_err": opt_num,
            "rel_change": opt_num,
            "history": list,
        },
        "members",
    )


class SGDNoiseRegimes(Recipe):
    name = "sgd-noise-regimes"
    family = "init"
    row = 54
    paper = (
        "Sclocchi, Geiger & Wyart 2023, Dissecting the Effects of SGD Noise in Distinct "
        "Regimes of Deep Learning (arXiv:2301.13703)"
    )
    claim = (
        "the SGD temperature T moves test error in opposite directions in the lazy and rich "
        "regimes; the temperature T_c where it starts to matter changes with P as a power law"
    )
    Config = SGDNoiseConfig
    tasks = (TASK,)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 1,
        "sizes": "32,64",
        "epochs_per_size": "20,10",
        "temps_lazy": "0.01,0.1",
        "temps_rich": "0.0002,0.001",
        "batch_size": 16,
        "width": 16,
        "n_val": 32,
        "evals": 2,
    }
    broken: ClassVar[dict] = {
        "epochs_per_size": "1,1",
        "temps_lazy": "1e-6,2e-6",
        "temps_rich": "1e-8,2e-8",
    }
    # measured in-process, one thread, MNIST-1D cached, CPU time (2 cores, load ~2): 2.4 s
    # for the first run of a process, 0.9 s after
    smoke_seconds = 2.5

    def task_params(self, cfg: SGDNoiseConfig) -> dict:
        return {"n_train": max(cfg.size_values), "n_val": cfg.n_val, "seed": cfg.draw_seed}

    def validate(self, cfg: SGDNoiseConfig, data_sizes: dict[str, int]) -> None:
        """The task is binary MNIST-1D and the batch fits the smallest training set."""
        if cfg.data != TASK:
            raise ConfigError(f"--data must be {TASK} (the recipe draws P from its pool)")
        small = min(cfg.size_values)
        if cfg.batch_size > small:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the smallest size P = {small}; "
                "lower it or drop that size"
            )

    # -- training ------------------------------------------------------------------------
    @staticmethod
    def factory(width: int, alpha: float, d_in: int = 40):
        def make(seed: int):
            return output_scale(build(MLP, [d_in, width, width, 1], seed=seed), alpha)

        return make

    def run(self, cfg: SGDNoiseConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population
        from weightlab.recipes.tasks import load_task

        cells = [(reg, a, temps, p) for reg, a, temps in cfg.regimes() for p in cfg.size_values]
        records: list[dict] = []
        timing: list[list[str]] = []
        bar = progress_bar(len(cells), self.name, "cell", progress, line_each_update=True)
        for regime, alpha, temps, size in cells:

            def compute(regime=regime, alpha=alpha, temps=temps, size=size):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                params = {"n_train": size, "n_val": cfg.n_val, "seed": cfg.draw_seed}
                data = load_task(self, cfg.data, cfg.device, params)
                factory = self.factory(cfg.width, alpha, data.input_shape[0])
                specs, meta = [], []
                for t in temps:
                    for s in range(cfg.seeds):
                        lr = default_lr(t * cfg.batch_size, alpha)
                        specs.append(
                            MemberSpec(
                                seed=derive_seed(self.name, "init", s),
                                data_seed=derive_seed(self.name, "order", s),
                                optim=OptimConfig("sgd", lr=lr),
                            )
                        )
                        meta.append((t, s, lr))
                epochs = cfg.epochs_for(size)
                steps = epochs * (size // cfg.batch_size)
                train_cfg = TrainConfig(
                    epochs,
                    cfg.batch_size,
                    max(1, steps // cfg.evals),
                    OptimConfig("sgd", lr=1.0),
                    loss=hinge_loss,
                )
                pop = Population(factory, specs, device=cfg.device)
                results = pop.fit(data, train_cfg, progress=progress)
                out = []
                for i, ((t, s, lr), res) in enumerate(zip(meta, results, strict=True)):
                    m = self.measure(factory, specs[i].seed, pop.state(i), data)
                    out.append(
                        {
                            "temp": t,
                            "seed": s,
                            "lr": lr,
                            "diverged": bool(res.diverged),
                            **m,
                            "history": [
                                [p.step, p.train_loss if math.isfinite(p.train_loss) else None]
                                for p in res.history
                            ],
                        }
                    )
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                metrics = {
                    "regime": regime,
                    "alpha": alpha,
                    "size": size,
                    "epochs": epochs,
                    "steps": steps,
                    "members": out,
                    "cpu_s": cpu,
                    "wall_s": wall,
                }
                return metrics, {}

            metrics, _ = rd.unit(f"{regime}-P{size}", compute, check=_check_unit)
            records.extend(
                {**m, "regime": regime, "alpha": alpha, "size": size} for m in metrics["members"]
            )
            timing.append(
                [
                    regime,
                    f"{alpha:g}",
                    str(size),
                    str(metrics.get("steps", "")),
                    f"{metrics.get('cpu_s', math.nan):.1f}",
                    f"{metrics.get('wall_s', math.nan):.1f}",
                ]
            )
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        self._measurements = [
            (
                "CPU and wall time per (alpha, P) cell (one population each)",
                ["regime", "alpha", "P", "steps", "CPU s", "wall s"],
                timing,
            )
        ]
        return self.summarize(cfg, records)

    @staticmethod
    def measure(factory, seed: int, state: dict, data) -> dict:
        """Train/test error (sign of F), train hinge loss and ``‖w_T − w_0‖ / ‖w_0‖`` over
        all trained parameters (``w_0``: the frozen initial copy in the OutputScale)."""
        model = factory(seed)
        restore_snapshot(model, state)
        model.eval()
        out = {}
        with torch.no_grad():
            for name, split in (("train", data.train), ("test", data.test)):
                f = model(split.x.to(torch.float32))[:, 0]
                y = 2.0 * split.y.to(f.dtype) - 1.0
                ok = bool(torch.isfinite(f).all())
                out[f"{name}_err"] = float((y * f <= 0).float().mean()) if ok else None
                if name == "train":
                    out["train_loss"] = (
                        float(hinge_loss(f[:, None], split.y).mean()) if ok else None
                    )
            num = den = 0.0
            for pname, p in model.model.named_parameters():
                p0 = getattr(
                    model.initial.get_submodule(pname.rsplit(".", 1)[0]), pname.rsplit(".", 1)[1]
                )
                num += float((p.double() - p0.double()).square().sum())
                den += float(p0.double().square().sum())
        out["rel_change"] = math.sqrt(num / den) if math.isfinite(num) and den > 0 else None
        return out

    # -- summary and claims ----------------------------------------------------------------
    @staticmethod
    def member_name(m: dict) -> str:
        return f"{m['regime']} P={m['size']} T={m['temp']:g} seed {m['seed']}"

    def summarize(self, cfg: SGDNoiseConfig, records: list[dict]) -> dict:
        rows = []
        for regime, alpha, temps in cfg.regimes():
            for size in cfg.size_values:
                for t in temps:
                    ms = sorted(
                        (
                            m
                            for m in records
                            if m["regime"] == regime and m["size"] == size and m["temp"] == t
                        ),
                        key=lambda m: m["seed"],
                    )
                    errs = [None if m["test_err"] is None else 100 * m["test_err"] for m in ms]
                    te_m, te_s = mean_std(errs)
                    rc_m, rc_s = mean_std([m["rel_change"] for m in ms])
                    train = [m["train_err"] for m in ms]
                    rows.append(
                        {
                            "regime": regime,
                            "alpha": alpha,
                            "size": size,
                            "temp": t,
                            "lr": ms[0]["lr"] if ms else None,
                            "test_err_mean": te_m,
                            "test_err_std": te_s,
                            "test_err_values": errs,
                            "rel_change_mean": rc_m,
                            "rel_change_std": rc_s,
                            "train_err_max": max(
                                (100 * v for v in train if v is not None), default=None
                            ),
                            "train_loss_max": max(
                                (m["train_loss"] for m in ms if m["train_loss"] is not None),
                                default=None,
                            ),
                            "not_fitted": [
                                self.member_name(m)
                                for m in ms
                                if m["train_err"] is None or m["train_err"] > 0
                            ],
                            "diverged": [self.member_name(m) for m in ms if m["diverged"]],
                            "n": len(ms),
                        }
                    )
        tcs = self.critical_temperatures(rows)
        claims = [c.to_dict() for c in self.check_claims(rows, tcs)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "critical_temperatures": tcs,
            "claims": claims,
            "members": len(records),
            "diverged_members": [self.member_name(m) for m in records if m["diverged"]],
            "not_fitted_members": [n for r in rows for n in r["not_fitted"]],
            "setup": (
                f"MLP 40-{cfg.width}-{cfg.width}-1 (ReLU), F = alpha (f - f0), hinge loss, "
                f"SGD at batch B = {cfg.batch_size}, lr = T B / alpha^2; epochs per P "
                + ", ".join(
                    f"{p}: {e}" for p, e in zip(cfg.size_values, cfg.epoch_values, strict=True)
                )
            ),
            "error": "test error (%) from the sign of F after the last step, mean ± std over seeds",
        }

    @staticmethod
    def critical_temperatures(rows: list[dict]) -> list[dict]:
        """Per (regime, P): ``T_c``, the smallest T whose mean test error differs from the
        smallest T's by >= :data:`TC_PTS` points (``censored`` if none does), and per
        regime the least-squares slope of ``log T_c`` on ``log P`` over uncensored sizes."""
        out = []
        for regime in dict.fromkeys(r["regime"] for r in rows):
            per = []
            for size in sorted({r["size"] for r in rows if r["regime"] == regime}):
                cell = sorted(
                    (r for r in rows if r["regime"] == regime and r["size"] == size),
                    key=lambda r: r["temp"],
                )
                base = _num(cell[0]["test_err_mean"])
                hit = next(
                    (
                        r
                        for r in cell[1:]
                        if math.isfinite(_num(r["test_err_mean"]))
                        and abs(_num(r["test_err_mean"]) - base) >= TC_PTS
                    ),
                    None,
                )
                per.append(
                    {
                        "size": size,
                        "t_c": None if hit is None else hit["temp"],
                        "censored": hit is None,
                        "t_max": cell[-1]["temp"],
                        "shift_pts": None if hit is None else _num(hit["test_err_mean"]) - base,
                    }
                )
            pts = [(math.log(p["size"]), math.log(p["t_c"])) for p in per if not p["censored"]]
            slope = None
            if len(pts) >= 2 and len({x for x, _ in pts}) >= 2:
                mx = sum(x for x, _ in pts) / len(pts)
                my = sum(y for _, y in pts) / len(pts)
                sxx = sum((x - mx) ** 2 for x, _ in pts)
                slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
            out.append(
                {"regime": regime, "sizes": per, "loglog_slope": slope, "slope_points": len(pts)}
            )
        return out

    @staticmethod
    def _fit_problems(rows: list[dict]) -> list[str | None]:
        not_fit = [n for r in rows for n in r["not_fitted"]]
        reason = None
        if not_fit:
            shown = ", ".join(not_fit[:4]) + (" ..." if len(not_fit) > 4 else "")
            reason = f"{len(not_fit)} member(s) did not reach zero training error: {shown}"
        return [reason, no_divergence([n for r in rows for n in r["diverged"]])]

    @staticmethod
    def check_claims(rows: list[dict], tcs: list[dict]) -> list[ClaimResult]:
        claims = []
        sizes = sorted({r["size"] for r in rows})
        regimes = list(dict.fromkeys(r["regime"] for r in rows))

        def cell(regime, size):
            return sorted(
                (r for r in rows if r["regime"] == regime and r["size"] == size),
                key=lambda r: r["temp"],
            )

        few_t = [
            f"the {g} grid has {len(cell(g, sizes[0]))} temperatures, fewer than {MIN_TEMPS}"
            for g in regimes
            if len(cell(g, sizes[0])) < MIN_TEMPS
        ]
        for size in sizes:
            both = [r for g in regimes for r in cell(g, size)]

            def check_sign(size=size):
                d = {}
                for g in regimes:
                    c = cell(g, size)
                    d[g] = _num(c[-1]["test_err_mean"]) - _num(c[0]["test_err_mean"])
                sgn = {g: (v > 0) - (v < 0) for g, v in d.items()}
                held = sgn["rich"] * sgn["lazy"] < 0
                detail = (
                    "; ".join(
                        f"{g}: test error {_num(cell(g, size)[0]['test_err_mean']):.2f}% at "
                        f"T={cell(g, size)[0]['temp']:g} -> "
                        f"{_num(cell(g, size)[-1]['test_err_mean']):.2f}% at "
                        f"T={cell(g, size)[-1]['temp']:g} ({d[g]:+.2f} pts)"
                        for g in regimes
                    )
                    + "; needed opposite, non-zero signs"
                )
                return held, detail, {"delta_pts": d, "sign": sgn}

            claims.append(
                judge(
                    f"a-P{size}",
                    QUOTE_SIGN,
                    f"at P = {size}, test error moves in opposite directions from the smallest "
                    "to the largest T at the rich and the lazy alpha (means over seeds)",
                    [*few_t, *SGDNoiseRegimes._fit_problems(both)],
                    check_sign,
                )
            )
        for entry in tcs:
            g = entry["regime"]
            rs = [r for r in rows if r["regime"] == g]
            # T_c reads the temperatures up to T_c at each P (all of them where censored):
            # those members must have fit; a member above T_c does not change T_c.
            upto = {p["size"]: math.inf if p["censored"] else p["t_c"] for p in entry["sizes"]}
            read = [r for r in rs if r["temp"] <= upto[r["size"]]]
            fit_problem = SGDNoiseRegimes._fit_problems(read)[0]
            diverged = SGDNoiseRegimes._fit_problems(rs)[1]
            few_p = (
                None
                if len(sizes) >= MIN_SIZES
                else f"the run has {len(sizes)} sizes, fewer than {MIN_SIZES}"
            )
            few_g = [x for x in few_t if x.startswith(f"the {g} ")]

            def check_tc(entry=entry):
                per = entry["sizes"]
                rises, problems = True, []
                for a, b in zip(per[:-1], per[1:], strict=True):
                    if a["censored"]:
                        rises = False
                        problems.append(f"P={a['size']} censored (T_c > {a['t_max']:g})")
                    elif not b["censored"] and not b["t_c"] > a["t_c"]:
                        rises = False
                        problems.append(f"T_c(P={b['size']}) <= T_c(P={a['size']})")
                slope = entry["loglog_slope"]
                detail = (
                    "T_c by P: "
                    + ", ".join(
                        f"P={p['size']}: "
                        + (f"> {p['t_max']:g} (censored)" if p["censored"] else f"{p['t_c']:g}")
                        for p in per
                    )
                    + "; needed a strict rise over every step of P"
                    + (f" ({'; '.join(problems)})" if problems else "")
                    + "; log-log slope "
                    + (
                        "n/a"
                        if slope is None
                        else f"{slope:+.3f} over {entry['slope_points']} uncensored sizes"
                    )
                )
                return rises, detail, {"sizes": per, "loglog_slope": slope}

            claims.append(
                judge(
                    f"b-{g}",
                    QUOTE_TC,
                    f"at the {g} alpha, T_c (the smallest T moving mean test error by >= "
                    f"{TC_PTS:g} pts from the smallest T's) rises strictly with P",
                    [few_p, *few_g, fit_problem, diverged],
                    check_tc,
                )
            )
        return claims

    # -- report ----------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "regime",
            "alpha",
            "P",
            "T",
            "lr",
            "test error %",
            "||w_T-w_0||/||w_0||",
            "max train err %",
            "fitted",
        ]
        rows = [
            [
                r["regime"],
                f"{r['alpha']:g}",
                str(r["size"]),
                f"{r['temp']:g}",
                f"{_num(r['lr']):.4g}",
                _pm(r["test_err_mean"], r["test_err_std"], 2),
                _pm(r["rel_change_mean"], r["rel_change_std"], 3),
                "n/a" if r["train_err_max"] is None else f"{r['train_err_max']:.2f}",
                f"{r['n'] - len(r['not_fitted'])}/{r['n']}",
            ]
            for r in summary["rows"]
        ]
        tc_rows = [
            [
                e["regime"],
                str(p["size"]),
                f"> {p['t_max']:g} (censored)" if p["censored"] else f"{p['t_c']:g}",
                "n/a" if p["shift_pts"] is None else f"{p['shift_pts']:+.2f}",
            ]
            for e in summary["critical_temperatures"]
            for p in e["sizes"]
        ]
        slopes = [
            [
                e["regime"],
                "n/a" if e["loglog_slope"] is None else f"{e['loglog_slope']:+.3f}",
                str(e["slope_points"]),
            ]
            for e in summary["critical_temperatures"]
        ]
        return [
            (f"Per cell and temperature ({summary['setup']}); mean ± std over seeds", header, rows),
            (
                f"T_c: first T moving mean test error by >= {TC_PTS:g} pts",
                ["regime", "P", "T_c", "shift (pts)"],
                tc_rows,
            ),
            ("log-log slope of T_c vs P (uncensored sizes)", ["regime", "slope", "points"], slopes),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter

        regimes = [e["regime"] for e in summary["critical_temperatures"]]
        fig, axes = plt.subplots(1, len(regimes) + 1, figsize=(5 * (len(regimes) + 1), 4))
        sizes = sorted({r["size"] for r in summary["rows"]})
        colors = plt.cm.viridis([i / max(1, len(sizes) - 1) * 0.85 for i in range(len(sizes))])
        for ax, g in zip(axes, regimes, strict=False):
            for size, c in zip(sizes, colors, strict=True):
                cell = sorted(
                    (r for r in summary["rows"] if r["regime"] == g and r["size"] == size),
                    key=lambda r: r["temp"],
                )
                ax.errorbar(
                    [r["temp"] for r in cell],
                    [_num(r["test_err_mean"]) for r in cell],
                    yerr=[_num(r["test_err_std"]) for r in cell],
                    fmt="o-",
                    ms=4,
                    capsize=2,
                    color=c,
                    label=f"P = {size}",
                )
            alpha = next(r["alpha"] for r in summary["rows"] if r["regime"] == g)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("T = eta0 / B")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{g}: alpha = {alpha:g}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        ax = axes[-1]
        for e, mk in zip(summary["critical_temperatures"], ("o", "s", "^", "v"), strict=False):
            xs = [p["size"] for p in e["sizes"]]
            ys = [p["t_max"] if p["censored"] else p["t_c"] for p in e["sizes"]]
            line = ax.plot(xs, ys, "-", label=f"{e['regime']}")[0]
            for p, y in zip(e["sizes"], ys, strict=True):
                ax.plot(
                    p["size"],
                    y,
                    mk,
                    color=line.get_color(),
                    mfc="none" if p["censored"] else line.get_color(),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("P (training examples)")
        ax.set_ylabel("T_c (open: censored at the grid's top)")
        ax.set_title("T_c vs P")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.suptitle("SGD noise: test error vs temperature, lazy and rich")
        png = figure_png(fig)
        return [Figure("sgd_noise.png", "Test error vs T per P; T_c vs P", png)]
