"""Recipe ``relative-stitching``: Moschella, Maiorca, Fumero, Norelli, Locatello & Rodolà (2023),
"Relative representations enable zero-shot latent space communication" (row [#1]).

Digits; ``2 × seeds`` MLPs 64-128-32-10 (ReLU, Adam) trained normally as one population;
pair ``p`` is network A = ``2p`` and network B = ``2p + 1``. The latent is the 32-unit
layer's pre-activation output; ``anchors`` fixed training digits (drawn once from
``data_seed``) are the anchors of every network. Default protocol
(:func:`weightlab.probes.relative.zero_shot_stitch`): a linear relative head is trained
(the training loop, Adam) on B's relative representations of the training split and applied,
unchanged, to A's relative representations of the test split (relative stitching);
control: A's latent through B's own head (absolute stitching). Native accuracy: B end to
end. The cross-seed cosine compares A's and B's vectors of the same test digit, in
absolute (latent) and in relative space.

End-to-end arm (``--end-to-end``, on by default; :class:`weightlab.probes.relative.RelativeMLP`,
the paper's variant): encoder 64-128-32, the relative projection against the anchors
encoded by the same encoder at every step, a normalization layer (``--norm``), a linear
head; ``2 × seeds`` models trained end to end; stitching feeds A's relative representation
to B's normalization and head; native is B end to end.

Claims (thresholds fixed below; means over pairs): (a) the cross-seed cosine of matched
test samples is >= 0.5 higher in relative than in absolute space; (b) relative stitching is
within 3 points of native accuracy (at most 3 below), while absolute stitching stays within
15 points of chance. The end-to-end arm has its own verdicts (c) = (a) and (d) = (b)'s
relative part. Preconditions: every network learned (test accuracy >= chance + 10 points),
none diverged; (b) the relative head learned on B's own space.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator

QUOTE_A = (
    "under the same data and modeling choices, the angles between the encodings within "
    "distinct latent spaces do not change"
)
QUOTE_B = (
    "effectively enabling latent space communication: from zero-shot model stitching to "
    "latent space comparison between diverse settings"
)
# Fixed claim thresholds (from the issue), not options.
MIN_COS_GAIN = 0.5  # (a) relative cosine >= absolute cosine + 0.5
MAX_STITCH_DROP_PTS = 3.0  # (b) relative stitching >= native - 3 points
MAX_ABS_FROM_CHANCE_PTS = 15.0  # (b) |absolute stitching - chance| <= 15 points
ENCODER = (128, 32)  # hidden widths up to the latent: 64-128-32-10


@dataclass(frozen=True)
class RelativeStitchingConfig(RecipeConfig):
    seeds: int = opt(
        3, "seed pairs (2 networks each, all trained as one population)", min=1, max=100
    )
    data: str = opt("digits", "task: scikit-learn digits")
    anchors: int = opt(100, "fixed training examples used as anchors", min=2, max=1000)
    epochs: int = opt(40, "Adam epochs of the networks", min=1, max=100000)
    lr: float = opt(1e-3, "Adam learning rate of the networks", gt=0, max=10)
    batch_size: int = opt(64, "batch size", min=1)
    head_epochs: int = opt(30, "Adam epochs of the relative head", min=1, max=100000)
    head_lr: float = opt(1e-2, "Adam learning rate of the relative head", gt=0, max=10)
    end_to_end: bool = opt(True, "also run the end-to-end arm (trained through the projection)")
    norm: str = opt(
        "batchnorm",
        "normalization after the relative projection (end-to-end arm)",
        choices=("batchnorm", "layernorm", "none"),
    )
    data_seed: int = opt(0, "seed of the anchor draw (fixed across pairs)", min=0)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"pairs": list, "nets": list, "seconds": float}, "the metrics")
    expect_list_of(metrics["nets"], {"seed": int, "test_acc": float, "diverged": bool}, "nets")
    expect_list_of(
        metrics["pairs"],
        {
            "pair": int,
            "native": float,
            "relative_stitch": float,
            "cos_absolute": float,
            "cos_relative": float,
        },
        "pairs",
    )


def anchor_indices(n_train: int, k: int, seed: int) -> torch.Tensor:
    """``k`` distinct training indices, a seeded draw fixed across pairs."""
    return torch.randperm(n_train, generator=generator(derive_seed("anchors", seed)))[:k]


class RelativeStitching(Recipe):
    name = "relative-stitching"
    family = "probes"
    row = 1
    paper = (
        "Moschella, Maiorca, Fumero, Norelli, Locatello & Rodolà 2023, Relative representations "
        "enable zero-shot latent space communication (ICLR 2023)"
    )
    claim = (
        "relative representations of two seeds agree (cosine +0.5 over absolute) and a head "
        "fit on one seed's relative space reads the other's within 3 pts of native accuracy, "
        "while absolute stitching stays near chance"
    )
    Config = RelativeStitchingConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"seeds": 1, "epochs": 4, "head_epochs": 4, "anchors": 20}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured CPU time of the conformance smoke run (one thread, first recipe in the
    # process): 3.3 s; wall ~50 s on the shared machine at load ~10, so CPU is stated
    smoke_seconds = 3.3

    def validate(self, cfg: RelativeStitchingConfig, data_sizes: dict[str, int]) -> None:
        """The anchors and a batch fit in the training split."""
        if cfg.anchors > data_sizes["train"] or cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--anchors {cfg.anchors} / --batch-size {cfg.batch_size} exceed the "
                f"{data_sizes['train']} training examples; use fewer"
            )

    def run(self, cfg: RelativeStitchingConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.models import build
        from weightlab.models.factory import model_factory
        from weightlab.models.mlp import MLP
        from weightlab.population import MemberSpec
        from weightlab.probes.relative import (
            RelativeMLP,
            matched_cosine,
            zero_shot_stitch,
        )
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig

        data = self.load_data(cfg)
        if cfg.data != "digits":
            raise ConfigError(f"--data {cfg.data!r}: this recipe runs on digits only")
        d_in, classes = data.train.x[0].numel(), data.num_classes
        anchor_x = data.train.x[anchor_indices(len(data.train), cfg.anchors, cfg.data_seed)]
        chance = 100.0 * majority_rate(data.test.y)
        n = 2 * cfg.seeds
        tcfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
        hcfg = TrainConfig(cfg.head_epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.head_lr))

        def nets_record(res, finals):
            return [
                {
                    "seed": s,
                    "test_acc": 100.0 * float(r.final.test_acc),
                    "diverged": bool(
                        r.diverged or not all(torch.isfinite(t).all() for t in finals[s].values())
                    ),
                }
                for s, r in enumerate(res)
            ]

        def specs(arm):
            return [
                MemberSpec(
                    seed=derive_seed(self.name, arm, "init", i),
                    data_seed=derive_seed(self.name, arm, "order", i),
                )
                for i in range(n)
            ]

        def compute_default():
            t0 = time.perf_counter()
            fac = model_factory(MLP, [d_in, *ENCODER, classes])
            res, finals = train_members(
                fac, specs("default"), data, tcfg, device=cfg.device, progress=progress
            )
            models = []
            for w in finals:
                m = fac(0).to(cfg.device)
                m.load_state_dict(w)
                models.append(m.eval())
            nets = nets_record(res, finals)
            pairs = []
            for p in range(cfg.seeds):
                if nets[2 * p]["diverged"] or nets[2 * p + 1]["diverged"]:
                    nan = float("nan")
                    pairs.append(
                        {
                            "pair": p,
                            "native": nan,
                            "native_a": nan,
                            "absolute_stitch": nan,
                            "relative_native": nan,
                            "relative_stitch": nan,
                            "cos_absolute": nan,
                            "cos_relative": nan,
                            "cos_absolute_unmatched": nan,
                            "cos_relative_unmatched": nan,
                        }
                    )
                    continue
                r = zero_shot_stitch(
                    models[2 * p],
                    models[2 * p + 1],
                    data,
                    anchor_x,
                    hcfg,
                    seed=derive_seed(self.name, "head", p),
                )
                pairs.append({"pair": p, **r.to_dict()})
            return {"pairs": pairs, "nets": nets, "seconds": time.perf_counter() - t0}, {}

        def compute_e2e():
            t0 = time.perf_counter()

            def fac(seed):
                return build(
                    RelativeMLP, [d_in, *ENCODER], anchor_x, [classes], cfg.norm, seed=seed
                )

            res, finals = train_members(
                fac,
                specs("end-to-end"),
                data,
                tcfg,
                device=cfg.device,
                progress=progress,
            )
            models = []
            for w in finals:
                m = fac(0).to(cfg.device)
                m.load_state_dict(w)
                models.append(m.eval())
            nets = nets_record(res, finals)
            x, y = data.test.x, data.test.y
            pairs = []
            with torch.no_grad():
                for p in range(cfg.seeds):
                    a, b = models[2 * p], models[2 * p + 1]
                    ra, rb = a.relative(x), b.relative(x)
                    za, zb = a.encoder(x), b.encoder(x)
                    pairs.append(
                        {
                            "pair": p,
                            "native": 100.0 * float((b(x).argmax(-1) == y).double().mean()),
                            "native_a": 100.0 * float((a(x).argmax(-1) == y).double().mean()),
                            "relative_stitch": 100.0
                            * float((b.classify(ra).argmax(-1) == y).double().mean()),
                            "cos_absolute": matched_cosine(za, zb),
                            "cos_relative": matched_cosine(ra, rb),
                            "cos_absolute_unmatched": matched_cosine(za, zb, shift=1),
                            "cos_relative_unmatched": matched_cosine(ra, rb, shift=1),
                        }
                    )
            return {"pairs": pairs, "nets": nets, "seconds": time.perf_counter() - t0}, {}

        default, _ = rd.unit("default", compute_default, check=_check_unit)
        e2e = rd.unit("end-to-end", compute_e2e, check=_check_unit)[0] if cfg.end_to_end else None
        self._measurements = [
            (
                "Wall time per unit (training and stitching; reported only)",
                ["arm", "seconds"],
                [["default", f"{default['seconds']:.1f}"]]
                + ([["end-to-end", f"{e2e['seconds']:.1f}"]] if e2e else []),
            )
        ]
        return self.summarize(cfg, default, e2e, chance)

    def summarize(self, cfg, default: dict, e2e: dict | None, chance: float) -> dict:
        def ms(vals):
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            mu, sd = mean_std(vals) if vals else (float("nan"), float("nan"))
            return {"mean": mu, "std": sd}

        def arm(u, keys):
            return {
                "per_pair": u["pairs"],
                **{k: ms([p[k] for p in u["pairs"]]) for k in keys},
                "min_net_acc": min(nt["test_acc"] for nt in u["nets"]),
                "net_acc": ms([nt["test_acc"] for nt in u["nets"] if not nt["diverged"]]),
                "diverged": [f"seed {nt['seed']}" for nt in u["nets"] if nt["diverged"]],
            }

        keys = (
            "native",
            "native_a",
            "relative_stitch",
            "cos_absolute",
            "cos_relative",
            "cos_absolute_unmatched",
            "cos_relative_unmatched",
        )
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "chance_pct": chance,
            "default": arm(default, (*keys, "absolute_stitch", "relative_native")),
            "end_to_end": None if e2e is None else arm(e2e, keys),
            "members": len(default["nets"]) + (len(e2e["nets"]) if e2e else 0),
            "diverged_members": [f"default {d}" for d in arm(default, keys)["diverged"]]
            + ([f"end-to-end {d}" for d in arm(e2e, keys)["diverged"]] if e2e else []),
            "setup": {
                "pairs": cfg.seeds,
                "anchors": cfg.anchors,
                "widths": "64-128-32-10",
                "epochs": cfg.epochs,
                "head_epochs": cfg.head_epochs,
                "norm": cfg.norm,
            },
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        """(a)/(c) relative − absolute cosine >= 0.5; (b) relative stitching >= native − 3
        and |absolute stitching − chance| <= 15; (d) end-to-end stitching >= native − 3."""
        chance = summary["chance_pct"]

        def base(a, label):
            return [
                baseline_learned(a["min_net_acc"], chance=chance, name=f"weakest {label} network"),
                no_divergence([f"{label} {d}" for d in a["diverged"]]),
            ]

        def cos_check(a):
            def check():
                rel, ab = a["cos_relative"], a["cos_absolute"]
                gain = _num(rel["mean"]) - _num(ab["mean"])
                return (
                    gain >= MIN_COS_GAIN,
                    f"cross-seed cosine of matched test digits: relative "
                    f"{_pm(rel['mean'], rel['std'], 3)} vs absolute {_pm(ab['mean'], ab['std'], 3)}"
                    f" (+{gain:.3f}); needed >= +{MIN_COS_GAIN:g}",
                    {"gain": gain},
                )

            return check

        def stitch_check(a, absolute: bool):
            def check():
                nat, rel = _num(a["native"]["mean"]), _num(a["relative_stitch"]["mean"])
                drop = nat - rel
                ok = drop <= MAX_STITCH_DROP_PTS
                detail = (
                    f"relative stitching {_pm(rel, a['relative_stitch']['std'], 1)}% vs native "
                    f"{_pm(nat, a['native']['std'], 1)}% (drop {drop:.1f}, allowed "
                    f"{MAX_STITCH_DROP_PTS:g})"
                )
                ev = {"drop": drop}
                if absolute:
                    ab = _num(a["absolute_stitch"]["mean"])
                    off = abs(ab - chance)
                    ok = ok and off <= MAX_ABS_FROM_CHANCE_PTS
                    detail += (
                        f"; absolute stitching {_pm(ab, a['absolute_stitch']['std'], 1)}% vs "
                        f"chance {chance:.1f}% ({off:.1f} pts away, allowed "
                        f"{MAX_ABS_FROM_CHANCE_PTS:g})"
                    )
                    ev["absolute_from_chance"] = off
                return ok, detail, ev

            return check

        d = summary["default"]
        head = baseline_learned(
            d["relative_native"]["mean"], chance=chance, name="relative head on its own space"
        )
        out = [
            judge(
                "a",
                QUOTE_A,
                f"default protocol: the mean cross-seed cosine of matched test samples is >= "
                f"{MIN_COS_GAIN:g} higher in relative than in absolute space",
                base(d, "default"),
                cos_check(d),
            ),
            judge(
                "b",
                QUOTE_B,
                f"default protocol: relative stitching (B's relative head on A's relative space) "
                f"is at most {MAX_STITCH_DROP_PTS:g} points below native accuracy, while absolute "
                f"stitching (A's latent into B's head) stays within {MAX_ABS_FROM_CHANCE_PTS:g} "
                "points of chance",
                [*base(d, "default"), head],
                stitch_check(d, True),
            ),
        ]
        e = summary["end_to_end"]
        if e is not None:
            out += [
                judge(
                    "c",
                    QUOTE_A,
                    f"end-to-end arm ({summary['setup']['norm']} after the projection): the mean "
                    f"cross-seed cosine is >= {MIN_COS_GAIN:g} higher in relative than in "
                    "absolute space",
                    base(e, "end-to-end"),
                    cos_check(e),
                ),
                judge(
                    "d",
                    QUOTE_B,
                    f"end-to-end arm: B's normalization and head on A's relative space is at most "
                    f"{MAX_STITCH_DROP_PTS:g} points below B's native accuracy",
                    base(e, "end-to-end"),
                    stitch_check(e, False),
                ),
            ]
        return out

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]

        def f(x, d=1):
            return _pm(x["mean"], x["std"], d)

        rows = []
        for label, key in (("default", "default"), ("end-to-end", "end_to_end")):
            a = summary[key]
            if a is None:
                continue
            rows.append(
                [
                    label,
                    f(a["native"]),
                    f(a["relative_stitch"]),
                    f(a["relative_native"]) if "relative_native" in a else "—",
                    f(a["absolute_stitch"]) if "absolute_stitch" in a else "—",
                    f(a["cos_absolute"], 3),
                    f(a["cos_relative"], 3),
                    f(a["cos_absolute_unmatched"], 3),
                    f(a["cos_relative_unmatched"], 3),
                ]
            )
        per_pair = [
            [
                str(p["pair"]),
                f"{_num(p['native_a']):.1f}",
                f"{_num(p['native']):.1f}",
                f"{_num(p['relative_stitch']):.1f}",
                f"{_num(p.get('absolute_stitch')):.1f}",
                f"{_num(p['cos_absolute']):.3f}",
                f"{_num(p['cos_relative']):.3f}",
            ]
            for p in summary["default"]["per_pair"]
        ]
        return [
            (
                f"Zero-shot stitching on digits test (mean ± std over {st['pairs']} seed pairs; "
                "mismatched: sample i of A against sample i + 1 of B, the baseline; "
                f"{st['anchors']} anchors; {st['widths']}, {st['epochs']} epochs; chance "
                f"{summary['chance_pct']:.1f}%)",
                [
                    "arm",
                    "native B %",
                    "relative stitch %",
                    "relative head on B %",
                    "absolute stitch %",
                    "cos absolute",
                    "cos relative",
                    "cos absolute, mismatched",
                    "cos relative, mismatched",
                ],
                rows,
            ),
            (
                "Default protocol per pair (A = even seed, B = odd seed)",
                [
                    "pair",
                    "A %",
                    "B %",
                    "relative stitch %",
                    "absolute stitch %",
                    "cos abs",
                    "cos rel",
                ],
                per_pair,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        arms = [(k, summary[k]) for k in ("default", "end_to_end") if summary[k] is not None]
        bars = ("native", "relative_stitch", "absolute_stitch")
        for i, (name, a) in enumerate(arms):
            shown = [j for j, b in enumerate(bars) if b in a]  # the end-to-end arm has no absolute
            xs = [j + 0.35 * i for j in shown]
            ys = [_num(a[bars[j]]["mean"]) for j in shown]
            sd = [_num(a[bars[j]]["std"]) for j in shown]
            ax1.bar(xs, ys, 0.35, yerr=sd, label=name.replace("_", "-"), capsize=2)
            xs = [j + 0.35 * i for j in range(2)]
            ax2.bar(
                xs,
                [a["cos_absolute"]["mean"], a["cos_relative"]["mean"]],
                0.35,
                yerr=[a["cos_absolute"]["std"], a["cos_relative"]["std"]],
                capsize=2,
                label=name.replace("_", "-"),
            )
        ax1.axhline(summary["chance_pct"], color="grey", ls=":", lw=0.8)
        ax1.set_xticks([j + 0.175 for j in range(len(bars))], ["native", "relative", "absolute"])
        ax1.set_ylabel("test accuracy (%)  (dotted: chance)")
        ax1.set_title("zero-shot stitching A → B")
        ax1.legend(fontsize=8)
        ax2.set_xticks([0.175, 1.175], ["absolute", "relative"])
        ax2.set_ylabel("cross-seed cosine, same sample")
        ax2.set_title("latent similarity across seeds")
        ax2.legend(fontsize=8)
        return [
            Figure(
                "relative_stitching.png",
                "Stitching accuracy and cross-seed cosine",
                figure_png(fig),
            )
        ]
