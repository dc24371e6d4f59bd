"""Recipe ``criticality``: Roberts, Yaida & Hanin, *The Principles of Deep Learning
Theory* (2022), row [#66]: tuning ``(C_W, C_b)`` to criticality keeps signals O(1) over
depth; each activation's universality class sets how.

64 random MLPs per setting (``--seeds``), width 512, depth 50 (pre-activations
``z^1 .. z^50``, the last one the output), no training. Inputs are the task's first
``--inputs`` training examples, each rescaled so the first pre-activation variance is
``K^1 = C_b + C_W |x|²/n_0 = 1`` (``K*`` for GELU). Measured per net (means over units
and inputs): the forward variance ``K^ℓ`` and the backward gradient variance ``G^ℓ``
(the mean square of ``∂(u·z^L)/∂z^ℓ`` for a standard-normal ``u``); the claims read the
means over nets, beside the infinite-width mean field of :mod:`weightlab.init.critical`.
Settings (the issue's, by class):

- ReLU at ``C_W ∈ {1.8, 2, 2.2}``, ``C_b = 0``: flat only at 2 (``K^50/K^1`` and
  ``G^1/G^50`` in [0.5, 2]); both < 0.05 at 1.8, both > 20 at 2.2;
- tanh and sin at ``C_W ∈ {0.8, 1, 2}``, ``C_b = 0``: at 1 a power law (log-log slope of
  ``K^ℓ``, ℓ = 10..50, in [−1.3, −0.7]); at 0.8 exponential (``K^50/K^10 < 1e-2``); at 2
  a finite fixed point (``K^50`` within 5% of ``K^40``) while ``G^1/G^50 ≥ 10``;
- GELU from ``K*`` at its critical ``(C_W, C_b)`` (solved here: 1.983, 0.173, K* =
  3.56): ``K^ℓ`` within 15% of K* over the 50 layers; at He's ``(2, 0)``:
  ``K^50 < 1e-6 K^1``.

All settings of one net share its standard-normal draws (``W = √(C_W/n) Z``,
``b = √C_b ζ``, common random numbers), so the 64 nets × 11 settings are one batched
computation per layer (:func:`weightlab.init.signal.propagate_population`, ``torch.bmm``);
each net's draws come from its own seed and are drawn again for the backward pass. A
unit is a chunk of nets. ``K^1`` equals its target in expectation by construction: it is
reported, not judged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from weightlab.errors import ConfigError
from weightlab.init.critical import critical_point, mean_field
from weightlab.init.signal import Setting, loglog_slope, propagate_population
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge, no_divergence
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed, generator

QUOTE_CRIT = (
    "By tuning networks to criticality, we give a practical solution to the exploding and "
    "vanishing gradient problem"
)
QUOTE_CLASS = (
    "lets us categorize networks built from different activation functions into "
    "universality classes"
)
# Fixed thresholds (the issue's), not options.
FLAT_BAND = (0.5, 2.0)  # ReLU at C_W = 2: K_L/K_1 and G_1/G_L inside
RELU_SHRINK = 0.05  # ReLU at 1.8: both ratios below
RELU_GROW = 20.0  # ReLU at 2.2: both ratios above
SLOPE_BAND = (-1.3, -0.7)  # tanh/sin at C_W = 1: log-log slope of K over l = 10..L
SLOPE_FIRST = 10
ORDERED_MAX = 1e-2  # tanh/sin at 0.8: K_L / K_10 below
FIXED_TOL = 0.05  # tanh/sin at 2: |K_L / K_{L-10} - 1| at most
CHAOS_GRAD = 10.0  # tanh/sin at 2: G_1 / G_L at least
GELU_TOL = 0.15  # GELU critical: max_l |K_l / K* - 1| at most
GELU_HE_MAX = 1e-6  # GELU at (2, 0): K_L / K_1 below
MIN_SLOPE_DEPTH = 20  # a power-law window needs layers 10..L with L >= 20


def settings() -> list[tuple[str, Setting, float]]:
    """``(key, setting, K^1 target)`` of every setting, in a fixed order."""
    gelu = critical_point("gelu")
    out = [(f"relu@{c:g}", Setting("relu", c, 0.0), 1.0) for c in (1.8, 2.0, 2.2)]
    for act in ("tanh", "sin"):
        out += [(f"{act}@{c:g}", Setting(act, c, 0.0), 1.0) for c in (0.8, 1.0, 2.0)]
    out.append(("gelu@critical", Setting("gelu", gelu.C_W, gelu.C_b), gelu.K_star))
    out.append(("gelu@he", Setting("gelu", 2.0, 0.0), gelu.K_star))
    return out


@dataclass(frozen=True)
class CriticalityConfig(RecipeConfig):
    seeds: int = opt(64, "random MLPs (nets) per setting, one seed each", min=2, max=4096)
    width: int = opt(512, "hidden width n of every layer", min=2, max=8192)
    depth: int = opt(50, "number of layers L (pre-activations z^1..z^L)", min=2, max=1000)
    inputs: int = opt(4, "inputs per net (the task's first training examples)", min=1, max=256)
    chunk: int = opt(16, "nets per unit (a unit is computed at once and saved)", min=1)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"nets": list, "settings": list, "seconds": (int, float)}, "metrics")


class Criticality(Recipe):
    name = "criticality"
    family = "init"
    row = 66
    paper = (
        "Roberts, Yaida & Hanin 2022, The Principles of Deep Learning Theory "
        "(arXiv:2106.10165), Ch. 5"
    )
    claim = (
        "forward and backward variance stay O(1) over 50 layers only at criticality; off it "
        "they vanish or explode, by universality class (ReLU, tanh/sin, GELU)"
    )
    Config = CriticalityConfig
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification", "regression")
    smoke: ClassVar[dict] = {"seeds": 4, "width": 64, "depth": 20, "inputs": 2, "chunk": 2}
    trains = False
    # measured in-process, one thread, MNIST-1D cached, CPU time (the 2 cores were shared
    # by ~12 jobs): 3.2 s for the first run of a process (imports, GELU's solve), 1.2 s after
    smoke_seconds = 3.2

    def validate(self, cfg: CriticalityConfig, data_sizes: dict[str, int]) -> None:
        """The inputs exist in the training split."""
        if cfg.inputs > data_sizes["train"]:
            raise ConfigError(
                f"--inputs {cfg.inputs} exceeds the {data_sizes['train']} training examples"
            )

    @staticmethod
    def scaled_inputs(x: torch.Tensor, sets: list[tuple[str, Setting, float]]) -> torch.Tensor:
        """``(S, B, n_0)``: each input rescaled so ``C_b + C_W |x|²/n_0`` is the setting's
        K^1 target."""
        x = x.flatten(1).to(torch.float64)
        msq = (x**2).mean(1, keepdim=True)
        if torch.any(msq <= 0):
            raise ConfigError("an input is all zeros; it cannot be scaled to K^1 (use other data)")
        out = []
        for _, s, k1 in sets:
            if k1 <= s.C_b:
                raise ConfigError(f"K^1 target {k1} must exceed C_b {s.C_b}")
            out.append(x * torch.sqrt((k1 - s.C_b) / (s.C_W * msq)))
        return torch.stack(out).to(torch.float32)

    def run(self, cfg: CriticalityConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        sets = settings()
        x = self.scaled_inputs(data.train.x[: cfg.inputs].cpu(), sets)
        n0 = x.shape[2]
        starts = list(range(0, cfg.seeds, cfg.chunk))
        bar = progress_bar(len(starts) * (2 * cfg.depth - 1), self.name, "layer pass", progress)
        tick = None if bar is None else bar.update
        ks, gs, secs = [], [], []
        for start in starts:
            nets = list(range(start, min(start + cfg.chunk, cfg.seeds)))

            def compute(nets=nets):
                t0 = time.perf_counter()
                sig = self.propagate(cfg, nets, x, n0, [s for _, s, _ in sets], tick)
                metrics = {"nets": nets, "settings": [k for k, _, _ in sets]}
                metrics["seconds"] = time.perf_counter() - t0
                return metrics, {"K": sig.K, "G": sig.G}

            metrics, tensors = rd.unit(f"nets-{start:04d}", compute, check=_check_unit)
            if metrics["settings"] != [k for k, _, _ in sets]:
                raise ConfigError(
                    f"unit nets-{start:04d} was computed for other settings; use a new --out"
                )
            ks.append(tensors["K"].double())
            gs.append(tensors["G"].double())
            secs.append(metrics["seconds"])
        if bar is not None:
            bar.close()
        self._measurements = [
            (
                "Compute time per unit (reported only)",
                ["units", "nets per unit", "total s", "s per net"],
                [
                    [
                        str(len(secs)),
                        str(cfg.chunk),
                        f"{sum(secs):.1f}",
                        f"{sum(secs) / cfg.seeds:.2f}",
                    ]
                ],
            )
        ]
        return self.summarize(cfg, sets, torch.cat(ks), torch.cat(gs), cfg.data)

    def propagate(self, cfg, nets: list[int], x, n0: int, sets: list[Setting], tick):
        """K and G of the given nets under every setting (one batched computation)."""
        n = len(nets)
        gen_cot = generator(derive_seed(self.name, "cotangent", nets[0], n))
        cot = torch.randn(n, len(sets), x.shape[1], cfg.width, generator=gen_cot)
        cot = cot.to(cfg.device)  # the work runs where the cotangent lives

        def draw(layer: int):
            fan_in = n0 if layer == 1 else cfg.width
            z = torch.empty(n, cfg.width, fan_in)
            b = torch.empty(n, cfg.width)
            for j, net in enumerate(nets):
                g = generator(derive_seed(self.name, "net", net, layer))
                z[j].normal_(generator=g)
                b[j].normal_(generator=g)
            return z, b

        return propagate_population(draw, x, sets, cfg.depth, cot, progress=tick)

    # -- summary and claims ------------------------------------------------------------
    def summarize(self, cfg, sets, K: torch.Tensor, G: torch.Tensor, data_name: str) -> dict:
        rows = []
        for i, (key, s, k1) in enumerate(sets):
            k, g = K[:, i, :], G[:, i, :]
            finite = torch.isfinite(k).all(1) & torch.isfinite(g).all(1) & (k > 0).all(1)
            bad = [int(j) for j in torch.nonzero(~finite).flatten()]
            kk, gg = k[finite], g[finite]
            mf = mean_field(s.activation, s.C_W, s.C_b, k1, cfg.depth)
            k_mean, g_mean = kk.mean(0), gg.mean(0)
            rows.append(
                {
                    "key": key,
                    "activation": s.activation,
                    "C_W": s.C_W,
                    "C_b": s.C_b,
                    "K1_target": k1,
                    "K_mean": [float(v) for v in k_mean],
                    "K_q10": [float(v) for v in kk.quantile(0.1, dim=0)] if len(kk) else [],
                    "K_q90": [float(v) for v in kk.quantile(0.9, dim=0)] if len(kk) else [],
                    "G_mean": [float(v) for v in g_mean],
                    "G_q10": [float(v) for v in gg.quantile(0.1, dim=0)] if len(gg) else [],
                    "G_q90": [float(v) for v in gg.quantile(0.9, dim=0)] if len(gg) else [],
                    # per-net K_L/K_1: the spread of single nets (finite-width fluctuations)
                    "net_ratio_median": float((kk[:, -1] / kk[:, 0]).median()) if len(kk) else None,
                    "net_K_L_over_K_1": [float(v) for v in kk[:, -1] / kk[:, 0]],
                    "K_mf": list(mf.K),
                    "G_mf": list(mf.G),
                    "chi_par_mf": list(mf.chi_par),
                    "chi_perp_mf": list(mf.chi_perp),
                    "nonfinite_nets": bad,
                    "n": int(finite.sum()),
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, cfg.depth)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "config": {"nets": cfg.seeds, "width": cfg.width, "depth": cfg.depth},
            "data": data_name,
            "rows": rows,
            "by_construction": {
                r["key"]: {"K1_target": r["K1_target"], "K1_measured": r["K_mean"][0]} for r in rows
            },
            "claims": claims,
            "members": cfg.seeds * len(rows),
            "diverged_members": [f"{r['key']} net {j}" for r in rows for j in r["nonfinite_nets"]],
        }

    @staticmethod
    def ratios(r: dict, depth: int) -> dict:
        """The measured and mean-field numbers the claims read."""
        out = {}
        for tag, k, g in (("", r["K_mean"], r["G_mean"]), ("_mf", r["K_mf"], r["G_mf"])):
            out["K_L/K_1" + tag] = k[-1] / k[0]
            out["G_1/G_L" + tag] = g[0] / g[-1]
            if depth > SLOPE_FIRST:
                out["K_L/K_10" + tag] = k[-1] / k[SLOPE_FIRST - 1]
                out["K_L/K_(L-10)" + tag] = k[-1] / k[depth - 11]
            if depth >= MIN_SLOPE_DEPTH:
                out["slope" + tag] = loglog_slope(k, SLOPE_FIRST, depth)
            kstar = r["K1_target"]
            out["max_dev_from_K1" + tag] = max(abs(v / kstar - 1) for v in k)
        return out

    def check_claims(self, rows: list[dict], depth: int) -> list[ClaimResult]:
        by = {r["key"]: r for r in rows}
        L = depth

        def pre(key: str, needs_depth: int = 0):
            r = by[key]
            reasons = [no_divergence([f"{key} net {j}" for j in r["nonfinite_nets"]])]
            if r["n"] == 0:
                reasons.append(f"no net of {key} has finite values")
            if depth < needs_depth:
                reasons.append(f"depth {depth} < {needs_depth}")
            return reasons

        def fmt(key, name, ev):
            return f"{name} {ev[name]:.4g} (mean field {ev[name + '_mf']:.4g})"

        def relu(key, test, desc):
            def check():
                ev = self.ratios(by[key], L)
                a, b = ev["K_L/K_1"], ev["G_1/G_L"]
                detail = f"{key}: {fmt(key, 'K_L/K_1', ev)}, {fmt(key, 'G_1/G_L', ev)}; {desc}"
                return test(a) and test(b), detail, ev

            return check

        lo, hi = FLAT_BAND
        out = [
            judge(
                "relu-critical",
                QUOTE_CRIT,
                f"ReLU at C_W = 2, C_b = 0: K_{L}/K_1 and G_1/G_{L} both in [{lo:g}, {hi:g}]",
                pre("relu@2"),
                relu("relu@2", lambda v: lo <= v <= hi, f"needed both in [{lo:g}, {hi:g}]"),
            ),
            judge(
                "relu-below",
                QUOTE_CRIT,
                f"ReLU at C_W = 1.8: K_{L}/K_1 and G_1/G_{L} both < {RELU_SHRINK:g} (vanishing)",
                pre("relu@1.8"),
                relu("relu@1.8", lambda v: v < RELU_SHRINK, f"needed both < {RELU_SHRINK:g}"),
            ),
            judge(
                "relu-above",
                QUOTE_CRIT,
                f"ReLU at C_W = 2.2: K_{L}/K_1 and G_1/G_{L} both > {RELU_GROW:g} (exploding)",
                pre("relu@2.2"),
                relu("relu@2.2", lambda v: v > RELU_GROW, f"needed both > {RELU_GROW:g}"),
            ),
        ]
        for act in ("tanh", "sin"):

            def power(act=act):
                key = f"{act}@1"
                ev = self.ratios(by[key], L)
                s = ev["slope"]
                detail = (
                    f"{key}: log-log slope of K over l = {SLOPE_FIRST}..{L} {s:.3f} (mean field "
                    f"{ev['slope_mf']:.3f}); needed in [{SLOPE_BAND[0]:g}, {SLOPE_BAND[1]:g}]"
                )
                return SLOPE_BAND[0] <= s <= SLOPE_BAND[1], detail, ev

            def ordered(act=act):
                key = f"{act}@0.8"
                ev = self.ratios(by[key], L)
                detail = f"{key}: {fmt(key, 'K_L/K_10', ev)}; needed < {ORDERED_MAX:g}"
                return ev["K_L/K_10"] < ORDERED_MAX, detail, ev

            def chaotic(act=act):
                key = f"{act}@2"
                ev = self.ratios(by[key], L)
                dev = abs(ev["K_L/K_(L-10)"] - 1)
                detail = (
                    f"{key}: |K_{L}/K_{L - 10} - 1| {dev:.4f} (mean field "
                    f"{abs(ev['K_L/K_(L-10)_mf'] - 1):.2g}), needed <= {FIXED_TOL:g}; "
                    f"{fmt(key, 'G_1/G_L', ev)}, needed >= {CHAOS_GRAD:g}"
                )
                return dev <= FIXED_TOL and ev["G_1/G_L"] >= CHAOS_GRAD, detail, ev

            out += [
                judge(
                    f"{act}-power-law",
                    QUOTE_CLASS,
                    f"{act} at C_W = 1 (K*=0 class): K_l decays as a power law, log-log slope "
                    f"over l = {SLOPE_FIRST}..{L} in [{SLOPE_BAND[0]:g}, {SLOPE_BAND[1]:g}]",
                    pre(f"{act}@1", MIN_SLOPE_DEPTH),
                    power,
                ),
                judge(
                    f"{act}-ordered",
                    QUOTE_CRIT,
                    f"{act} at C_W = 0.8: exponential decay, K_{L}/K_10 < {ORDERED_MAX:g}",
                    pre(f"{act}@0.8", SLOPE_FIRST + 1),
                    ordered,
                ),
                judge(
                    f"{act}-chaotic",
                    QUOTE_CRIT,
                    f"{act} at C_W = 2: a finite fixed point (K_{L} within {FIXED_TOL:.0%} of "
                    f"K_{L - 10}) while gradients explode, G_1/G_{L} >= {CHAOS_GRAD:g}",
                    pre(f"{act}@2", SLOPE_FIRST + 1),
                    chaotic,
                ),
            ]
        crit = by["gelu@critical"]

        def gelu_crit():
            ev = self.ratios(crit, L)
            d = ev["max_dev_from_K1"]
            detail = (
                f"GELU at (C_W, C_b) = ({crit['C_W']:.4f}, {crit['C_b']:.4f}) from K* = "
                f"{crit['K1_target']:.4f}: max_l |K_l/K* - 1| = {d:.4f} (mean field "
                f"{ev['max_dev_from_K1_mf']:.4f}); needed <= {GELU_TOL:g}"
            )
            return d <= GELU_TOL, detail, ev

        def gelu_he():
            r = by["gelu@he"]
            ev = self.ratios(r, L)
            below = sum(v < GELU_HE_MAX for v in r["net_K_L_over_K_1"])
            ev["nets_below"] = below
            detail = (
                f"GELU at (2, 0) from K*: {fmt('gelu@he', 'K_L/K_1', ev)} (mean over nets); "
                f"needed < {GELU_HE_MAX:g}; median net {r['net_ratio_median']:.3g}, "
                f"{below} of {r['n']} nets below"
            )
            return ev["K_L/K_1"] < GELU_HE_MAX, detail, ev

        out += [
            judge(
                "gelu-critical",
                QUOTE_CLASS,
                f"GELU at its solved critical point (C_W {crit['C_W']:.3f}, C_b "
                f"{crit['C_b']:.3f}) from K* = {crit['K1_target']:.2f}: K_l within "
                f"{GELU_TOL:.0%} of K* over all {L} layers",
                pre("gelu@critical"),
                gelu_crit,
            ),
            judge(
                "gelu-he",
                QUOTE_CLASS,
                f"GELU at He's (C_W, C_b) = (2, 0), not critical: K_{L} < {GELU_HE_MAX:g}·K_1",
                pre("gelu@he"),
                gelu_he,
            ),
        ]
        return out

    # -- report ------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        depth = summary["config"]["depth"]
        header = [
            "setting",
            "C_W",
            "C_b",
            "K_1 target / measured",
            f"K_{depth}/K_1 (mf)",
            f"G_1/G_{depth} (mf)",
            f"slope l={SLOPE_FIRST}..{depth} (mf)",
            "median net K_L/K_1",
            "nets",
        ]
        rows = []
        for r in summary["rows"]:
            ev = self.ratios(r, depth)
            slope = f"{ev['slope']:.3f} ({ev['slope_mf']:.3f})" if "slope" in ev else "n/a"
            rows.append(
                [
                    r["key"],
                    f"{r['C_W']:.4g}",
                    f"{r['C_b']:.4g}",
                    f"{r['K1_target']:.4g} / {r['K_mean'][0]:.4g}",
                    f"{ev['K_L/K_1']:.3g} ({ev['K_L/K_1_mf']:.3g})",
                    f"{ev['G_1/G_L']:.3g} ({ev['G_1/G_L_mf']:.3g})",
                    slope,
                    "n/a" if r["net_ratio_median"] is None else f"{r['net_ratio_median']:.3g}",
                    str(r["n"]),
                ]
            )
        title = (
            f"Forward K and backward G over {depth} layers, means over "
            f"{summary['config']['nets']} nets of width {summary['config']['width']} "
            "(mf: infinite-width mean field; K_1 equals its target by construction)"
        )
        return [(title, header, rows)]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator

        classes = ("relu", "tanh", "sin", "gelu")
        fig, axes = plt.subplots(2, 4, figsize=(16, 7))
        colors = ("tab:blue", "tab:green", "tab:red")
        for col, act in enumerate(classes):
            rs = [r for r in summary["rows"] if r["activation"] == act]
            for r, c in zip(rs, colors, strict=False):
                ls = np.arange(1, len(r["K_mean"]) + 1)
                for row, (m, q10, q90, mf) in enumerate(
                    (
                        (r["K_mean"], r["K_q10"], r["K_q90"], r["K_mf"]),
                        (r["G_mean"], r["G_q10"], r["G_q90"], r["G_mf"]),
                    )
                ):
                    ax = axes[row, col]
                    label = f"C_W={r['C_W']:.3g}, C_b={r['C_b']:.3g}"
                    ax.semilogy(ls, m, "o", ms=2.5, color=c, label=label)
                    if q10:
                        ax.fill_between(ls, q10, q90, color=c, alpha=0.15, lw=0)
                    ax.semilogy(ls, mf, "-", color=c, lw=1)
            axes[0, col].set_title(act)
            axes[0, col].set_ylabel("forward K_l")
            axes[1, col].set_ylabel("backward G_l")
            for row in (0, 1):
                axes[row, col].set_xlabel("layer l")
                axes[row, col].grid(alpha=0.3)
                # no minor log ticks: they cost most of the drawing time on many decades
                axes[row, col].yaxis.set_minor_locator(NullLocator())
            axes[0, col].legend(fontsize=7)
        fig.suptitle(
            "K_l and G_l vs depth: mean over nets (points), 10-90% of nets (band), mean field "
            "(lines)"
        )
        fig.subplots_adjust(left=0.05, right=0.99, bottom=0.07, top=0.91, wspace=0.28, hspace=0.25)
        png = figure_png(fig, dpi=100, tight=False)
        return [Figure("signal_vs_depth.png", "K_l and G_l vs layer per setting", png)]
