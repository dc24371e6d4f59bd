"""Recipe ``wise-ft``: Lin, Tan, Zhang et al. (2023), "Spurious Feature Diversification
Improves Out-of-distribution Generalization" (row [#56]), on WiSE-FT (Wortsman et al. 2022).

Multi-colour digits, built here: scikit-learn's 8×8 digits (10 classes), each image tinted
by one of ``colours`` palette colours (a fixed RGB triple in [0.2, 1]³ drawn from the data
seed) into 3 colour channels, 192 features. The colour is a spurious feature: in the
fine-tuning split it equals the label with probability ``correlation`` (else uniform); in
the pretraining split and in the OOD validation and test splits it is uniform, independent of
the label (the correlation broken). ``weightlab.data.coloured_digits`` is not reused: it is
binary (digit ≥ 5) with two colour channels and label noise, and has no uncorrelated
pretraining split.

An MLP (192-hidden-10) is pretrained on its split, then fine-tuned from those weights on the
correlated split (Adam, both through the training loop; all seeds as one population). For
α ∈ {0, 0.1, …, 1}, θ_α = (1 − α)θ_pre + αθ_ft (:func:`weightlab.adapters.interpolate`);
each seed's α is chosen on the OOD validation split (highest accuracy, ties to the smaller α)
and read on the OOD test split. The correction count [#56] counts OOD test examples that
both endpoints get wrong and θ_α gets right, beside the count a uniform guess over the 10
classes gets right on them (a tenth of them).

Claims (thresholds fixed below): (a) OOD test accuracy at the chosen α exceeds both endpoints'
by ≥ 1 point (seed means); (b) the correction count exceeds the uniform-guess count (seed
means). Preconditions: the pretrained model learned (OOD test accuracy above chance); the
fine-tuned model uses the colour (its accuracy on correlated held-out data exceeds its OOD
accuracy); nothing diverged; (a) the chosen α is interior in every seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator, preserved_global_rngs

QUOTE_A = (
    "WiSE-FT successfully corrects many cases where each individual model makes incorrect "
    "predictions, which contributes significantly to its OOD effectiveness"
)
QUOTE_B = QUOTE_A
# Fixed claim thresholds (from the issue), not options.
MIN_GAIN_PTS = 1.0  # (a) chosen alpha beats both endpoints by >= 1 accuracy point
ALPHAS = tuple(i / 10 for i in range(11))
CHANNELS = 3
MIN_TEST = 100  # OOD test digits at least


@dataclass(frozen=True)
class MultiColourDigits:
    pretrain: Split  # colours uniform
    finetune: Split  # colour = label with probability `correlation`
    val_ood: Split  # colours uniform (correlation broken)
    test_ood: Split
    val_id: Split  # the validation digits with the fine-tuning correlation
    palette: torch.Tensor


def multi_colour_digits(
    seed: int, n_pretrain: int, n_finetune: int, n_val: int, correlation: float, colours: int
) -> MultiColourDigits:
    """The task of the module docstring; every draw from ``generator(derive_seed(...))``."""
    with preserved_global_rngs():
        from sklearn.datasets import load_digits

        d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.as_tensor(d.target, dtype=torch.int64)
    n = len(y)
    used = n_pretrain + n_finetune + n_val
    if used + MIN_TEST > n:
        raise ConfigError(
            f"--n-pretrain + --n-finetune + --n-val = {used} leaves fewer than {MIN_TEST} of the "
            f"{n} digits for the OOD test split; use smaller splits"
        )
    if colours < 10:
        raise ConfigError(f"--colours {colours}: need >= 10 so each class has its own colour")
    g = generator(derive_seed("multi-colour-digits", seed))
    perm = torch.randperm(n, generator=g)
    palette = 0.2 + 0.8 * torch.rand(colours, CHANNELS, generator=g)

    def colour(idx: torch.Tensor, p: float) -> Split:
        lab = y[idx]
        rnd = torch.randint(0, colours, (len(idx),), generator=g)
        c = torch.where(torch.rand(len(idx), generator=g) < p, lab, rnd)
        return Split((x[idx][:, None, :] * palette[c][:, :, None]).flatten(1), lab)

    a, b = n_pretrain, n_pretrain + n_finetune
    val = perm[b : b + n_val]
    return MultiColourDigits(
        colour(perm[:a], 0.0),
        colour(perm[a:b], correlation),
        colour(val, 0.0),
        colour(perm[b + n_val :], 0.0),
        colour(val, correlation),
        palette,
    )


@dataclass(frozen=True)
class WiseFTConfig(RecipeConfig):
    data: str = opt("digits", "task: multi-colour digits built from scikit-learn digits")
    hidden: int = opt(128, "hidden width of the MLP", min=1, max=8192)
    n_pretrain: int = opt(300, "pretraining digits (colours uncorrelated)", min=10)
    n_finetune: int = opt(900, "fine-tuning digits (colour correlated with the label)", min=10)
    n_val: int = opt(300, "OOD validation digits (the rest is the OOD test split)", min=10)
    correlation: float = opt(0.9, "P(colour = label) in the fine-tuning split", min=0, max=1)
    colours: int = opt(10, "palette size", min=10, max=1000)
    pretrain_epochs: int = opt(30, "Adam epochs of pretraining", min=1, max=100000)
    finetune_epochs: int = opt(30, "Adam epochs of fine-tuning", min=1, max=100000)
    lr: float = opt(1e-3, "Adam learning rate (both phases)", gt=0, max=10)
    batch_size: int = opt(64, "batch size", min=1)
    data_seed: int = opt(0, "seed of the split, palette and colours (fixed across seeds)", min=0)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "seed": int,
            "test_acc": list,
            "val_acc": list,
            "id_acc_ft": float,
            "alpha": float,
            "corrections": dict,
            "diverged": bool,
        },
        "members",
    )


def _acc(model: torch.nn.Module, s: Split) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        pred = model(s.x).argmax(-1)
    return 100.0 * float((pred == s.y).float().mean()), pred


class WiseFT(Recipe):
    name = "wise-ft"
    family = "adapters"
    row = 56
    paper = (
        "Lin et al. 2023, Spurious Feature Diversification Improves Out-of-distribution "
        "Generalization (arXiv:2309.17230); WiSE-FT, Wortsman et al. 2022"
    )
    claim = (
        "weight interpolation between a pretrained and a fine-tuned MLP beats both endpoints "
        "OOD by >= 1 pt and corrects more both-wrong examples than a uniform guess"
    )
    Config = WiseFTConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("digits",)
    kinds = ("classification",)
    smoke: ClassVar[dict] = {"hidden": 32, "pretrain_epochs": 3, "finetune_epochs": 3}
    broken: ClassVar[dict] = {"lr": 10.0, "pretrain_epochs": 1, "finetune_epochs": 1}
    # measured in-process (run_recipe with the smoke config, one thread): 2.4 s CPU, 2.6 s wall
    smoke_seconds = 2.6

    def validate(self, cfg: WiseFTConfig, data_sizes: dict[str, int]) -> None:
        """The splits fit in the 1,797 digits and each phase holds a batch."""
        if cfg.batch_size > min(cfg.n_pretrain, cfg.n_finetune):
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the pretraining or fine-tuning split; "
                "use a smaller batch"
            )
        multi_colour_digits(
            cfg.data_seed, cfg.n_pretrain, cfg.n_finetune, cfg.n_val, cfg.correlation, cfg.colours
        )

    def run(self, cfg: WiseFTConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.adapters.interpolate import correction_count, interpolate_state
        from weightlab.models import build
        from weightlab.models.factory import model_factory
        from weightlab.models.mlp import MLP
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members
        from weightlab.train.config import OptimConfig, TrainConfig

        if cfg.data != "digits":
            raise ConfigError(f"--data {cfg.data!r}: this recipe builds multi-colour digits only")
        mcd = multi_colour_digits(
            cfg.data_seed, cfg.n_pretrain, cfg.n_finetune, cfg.n_val, cfg.correlation, cfg.colours
        )
        widths = [mcd.pretrain.x.shape[1], cfg.hidden, 10]
        pre_task = TaskData("multi_colour_digits", mcd.pretrain, mcd.val_ood, mcd.test_ood, 10)
        ft_task = TaskData("multi_colour_digits", mcd.finetune, mcd.val_ood, mcd.test_ood, 10)
        chance = 100.0 * float(torch.bincount(mcd.test_ood.y).max()) / len(mcd.test_ood)

        def compute():
            fac = model_factory(MLP, widths)
            seeds = [derive_seed(self.name, "init", s) for s in range(cfg.seeds)]
            optim = OptimConfig("adam", lr=cfg.lr)
            pre_cfg = TrainConfig(cfg.pretrain_epochs, cfg.batch_size, 0, optim)
            ft_cfg = TrainConfig(cfg.finetune_epochs, cfg.batch_size, 0, optim)
            specs = [
                MemberSpec(seed=sd, data_seed=derive_seed(self.name, "pre", s))
                for s, sd in enumerate(seeds)
            ]
            pre_res, pre_w = train_members(fac, specs, pre_task, pre_cfg, progress=progress)
            specs = [
                MemberSpec(seed=sd, data_seed=derive_seed(self.name, "ft", s), init_state=pre_w[s])
                for s, sd in enumerate(seeds)
            ]
            ft_res, ft_w = train_members(fac, specs, ft_task, ft_cfg, progress=progress)
            out = []
            model = build(MLP, widths, seed=0)
            for s in range(cfg.seeds):
                test_acc, val_acc, preds = [], [], []
                for a in ALPHAS:
                    model.load_state_dict(interpolate_state(pre_w[s], ft_w[s], a))
                    ta, pred = _acc(model, mcd.test_ood)
                    test_acc.append(ta)
                    preds.append(pred)
                    val_acc.append(_acc(model, mcd.val_ood)[0])
                k = max(range(len(ALPHAS)), key=lambda i: (val_acc[i], -i))
                model.load_state_dict(ft_w[s])
                cc = correction_count(preds[0], preds[-1], preds[k], mcd.test_ood.y, 10)
                finite = all(math.isfinite(v) for v in test_acc) and all(
                    torch.isfinite(t).all() for t in ft_w[s].values()
                )
                out.append(
                    {
                        "seed": s,
                        "test_acc": test_acc,
                        "val_acc": val_acc,
                        "id_acc_ft": _acc(model, mcd.val_id)[0],
                        "alpha": ALPHAS[k],
                        "corrections": cc.as_dict(),
                        "diverged": bool(not finite or pre_res[s].diverged or ft_res[s].diverged),
                    }
                )
            return {"members": out}, {}

        metrics, _ = rd.unit("population", compute, check=_check_unit)
        return self.summarize(cfg, metrics["members"], chance)

    def summarize(self, cfg: WiseFTConfig, records: list[dict], chance: float) -> dict:
        def ms(vals):
            mu, sd = mean_std(vals)
            return {"mean": mu, "std": sd}

        curve = [
            {
                "alpha": a,
                "test": ms([r["test_acc"][i] for r in records]),
                "val": ms([r["val_acc"][i] for r in records]),
            }
            for i, a in enumerate(ALPHAS)
        ]
        chosen = [r["test_acc"][ALPHAS.index(r["alpha"])] for r in records]
        summary = {
            "recipe": self.name,
            "paper": self.paper,
            "curve": curve,
            "per_seed": [
                {
                    "seed": r["seed"],
                    "alpha": r["alpha"],
                    "pre": r["test_acc"][0],
                    "ft": r["test_acc"][-1],
                    "chosen": r["test_acc"][ALPHAS.index(r["alpha"])],
                    "id_acc_ft": r["id_acc_ft"],
                    **r["corrections"],
                }
                for r in records
            ],
            "pre": ms([r["test_acc"][0] for r in records]),
            "ft": ms([r["test_acc"][-1] for r in records]),
            "chosen": ms(chosen),
            "id_acc_ft": ms([r["id_acc_ft"] for r in records]),
            "corrected": ms([r["corrections"]["corrected"] for r in records]),
            "both_wrong": ms([r["corrections"]["both_wrong"] for r in records]),
            "uniform_expected": ms([r["corrections"]["uniform_expected"] for r in records]),
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [f"seed {r['seed']}" for r in records if r["diverged"]],
            "setup": {
                "correlation": cfg.correlation,
                "colours": cfg.colours,
                "n_pretrain": cfg.n_pretrain,
                "n_finetune": cfg.n_finetune,
                "n_val": cfg.n_val,
                "pretrain_epochs": cfg.pretrain_epochs,
                "finetune_epochs": cfg.finetune_epochs,
                "hidden": cfg.hidden,
            },
            "accuracy": "OOD accuracy (%), colours independent of the label",
        }
        summary["claims"] = [c.to_dict() for c in self.check_claims(summary)]
        return summary

    @staticmethod
    def check_claims(summary: dict) -> list[ClaimResult]:
        """(a) mean OOD test accuracy at the chosen α minus each endpoint's mean >= 1 pt;
        (b) mean correction count > mean uniform-guess count."""
        pre, ft, ch = summary["pre"]["mean"], summary["ft"]["mean"], summary["chosen"]["mean"]
        learned = baseline_learned(pre, chance=summary["chance_pct"], name="pretrained")
        ood = summary["ft"]["mean"]
        uses_colour = (
            None
            if summary["id_acc_ft"]["mean"] > ood
            else f"the fine-tuned model does not use the colour (correlated held-out accuracy "
            f"{summary['id_acc_ft']['mean']:.1f}% is not above its OOD {ood:.1f}%)"
        )
        diverged = no_divergence(summary["diverged_members"])
        edge = [p["seed"] for p in summary["per_seed"] if p["alpha"] in (0.0, 1.0)]
        interior = (
            None
            if not edge
            else f"the OOD validation split chose an endpoint alpha for seed(s) {edge}"
        )
        alphas = [p["alpha"] for p in summary["per_seed"]]

        def check_a():
            g_pre, g_ft = ch - pre, ch - ft
            detail = (
                f"OOD test accuracy at the chosen alpha ({alphas}) "
                f"{_pm(ch, summary['chosen']['std'], 1)}% vs pretrained "
                f"{_pm(pre, summary['pre']['std'], 1)}% (+{g_pre:.1f}) and fine-tuned "
                f"{_pm(ft, summary['ft']['std'], 1)}% (+{g_ft:.1f}); needed >= "
                f"{MIN_GAIN_PTS:g} pt over both"
            )
            ok = g_pre >= MIN_GAIN_PTS and g_ft >= MIN_GAIN_PTS
            return ok, detail, {"gain_over_pretrained": g_pre, "gain_over_finetuned": g_ft}

        def check_b():
            c, u = summary["corrected"]["mean"], summary["uniform_expected"]["mean"]
            detail = (
                f"of {summary['both_wrong']['mean']:.1f} OOD test examples both endpoints get "
                f"wrong (seed mean), the interpolation corrects {_pm(c, summary['corrected']['std'], 1)}"
                f"; a uniform guess over 10 classes would get {u:.1f} right"
            )
            return c > u, detail, {"corrected": c, "uniform_expected": u}

        base = [learned, uses_colour, diverged]
        return [
            judge(
                "a",
                QUOTE_A,
                f"OOD test accuracy at the interior alpha chosen on OOD validation exceeds both "
                f"endpoints' by >= {MIN_GAIN_PTS:g} point (seed means)",
                [*base, interior],
                check_a,
            ),
            judge(
                "b",
                QUOTE_B,
                "at the chosen alpha, the correction count (both endpoints wrong, interpolation "
                "right) exceeds the uniform-guess count (seed means)",
                base,
                check_b,
            ),
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        st = summary["setup"]
        curve = [
            [
                f"{c['alpha']:.1f}",
                _pm(c["val"]["mean"], c["val"]["std"], 1),
                _pm(c["test"]["mean"], c["test"]["std"], 1),
            ]
            for c in summary["curve"]
        ]
        seeds = [
            [
                str(p["seed"]),
                f"{p['alpha']:.1f}",
                f"{p['pre']:.1f}",
                f"{p['ft']:.1f}",
                f"{p['chosen']:.1f}",
                f"{p['id_acc_ft']:.1f}",
                str(p["both_wrong"]),
                str(p["corrected"]),
                f"{p['uniform_expected']:.1f}",
            ]
            for p in summary["per_seed"]
        ]
        return [
            (
                f"OOD accuracy % along θ_α = (1−α)θ_pre + αθ_ft (mean ± std over seeds; "
                f"correlation {st['correlation']:g}, {st['n_pretrain']} pretraining / "
                f"{st['n_finetune']} fine-tuning digits, {st['pretrain_epochs']} + "
                f"{st['finetune_epochs']} epochs)",
                ["alpha", "OOD val", "OOD test"],
                curve,
            ),
            (
                "Per seed: chosen alpha, OOD test accuracy %, correlated held-out accuracy of "
                "the fine-tuned model, correction count on the OOD test split",
                [
                    "seed",
                    "alpha",
                    "pretrained",
                    "fine-tuned",
                    "chosen",
                    "fine-tuned, correlated",
                    "both wrong",
                    "corrected",
                    "uniform guess",
                ],
                seeds,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        xs = [c["alpha"] for c in summary["curve"]]
        for key, color in (("test", "C0"), ("val", "C1")):
            ys = [_num(c[key]["mean"]) for c in summary["curve"]]
            sd = [_num(c[key]["std"]) for c in summary["curve"]]
            ax.errorbar(xs, ys, yerr=sd, fmt="o-", ms=3, capsize=2, color=color, label=f"OOD {key}")
        for p in summary["per_seed"]:
            ax.axvline(p["alpha"], color="grey", lw=0.6, ls=":")
        ax.set_xlabel("alpha (0 = pretrained, 1 = fine-tuned)")
        ax.set_ylabel("OOD accuracy (%)  (dotted: chosen alpha per seed)")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title("WiSE-FT on multi-colour digits")
        return [Figure("wise_ft.png", "OOD accuracy along the interpolation path", figure_png(fig))]
