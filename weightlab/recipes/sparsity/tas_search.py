"""Recipe ``tas-search``: Dong & Yang (2019), "Network Pruning via Transformable
Architecture Search" (row [#91]), width only, a reduced version.

The paper searches ResNets on CIFAR and ImageNet (600 search epochs, depth and width);
here an MLP ``40-256-256-10`` on MNIST-1D, width only:

1. **dense** (the unpruned net, also the teacher): one per seed, trained as one population;
2. **search** (:class:`weightlab.sparsity.tas.TASMLP`): candidate widths {25, 50, 75, 100%}
   per hidden layer, 2 sampled per step with Gumbel-softmax weights, channel-wise
   interpolation, cross-entropy plus ``λ_cost · L_cost`` toward 25% of the dense FLOPs
   (TAS Eq. 8, ``λ_cost = 2``, tolerance 5%), τ decayed linearly from 10 to 0.1. Weights and
   architecture parameters take one joint Adam step per batch in the one training loop
   (the paper alternates them on two halves of the training set); the architecture
   parameters have their own learning rate (a :class:`~weightlab.train.ParamGroup`). On
   the default 40-256-256-10 no candidate pair lies within 25% ± 5% of the dense FLOPs
   (the nearest: 192-64 at 26.3%, 64-192 at 21.4%), so ``L_cost`` never reaches its zero
   band and the argmax net ends off target; the uniform net is matched to the searched
   net's FLOPs, not to the target;
3. **distillation**: the searched widths (argmax) and a uniformly pruned net of equal FLOPs
   (one width for both hidden layers, FLOPs within ±2%) are trained from scratch by
   distillation from that seed's dense net (Hinton's soft targets, T = 4, the soft term
   alone: the one loop's loss sees only the targets, here the teacher's logits).

Claim: searched ≥ uniform − 0.5 pt (test accuracy, mean over seeds). Precondition:
dense − uniform ≥ 1 pt, otherwise pruning costs too little here for the comparison to say
anything ("not tested").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.models.factory import build, model_factory
from weightlab.models.mlp import MLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.members import train_members
from weightlab.recipes.stats import mean_std, paired_difference_ci
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.sparsity.distill import distillation_task, kd_loss
from weightlab.sparsity.tas import TASMLP, TASCallback, TASLoss, mlp_flops, uniform_width
from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig
from weightlab.train.loop import train

QUOTE = "The number of the channels/layers is learned by minimizing the loss of the pruned networks"
MARGIN_PTS = 0.5  # searched >= uniform - 0.5 pt
PRUNING_COST_PTS = 1.0  # precondition: dense - uniform >= 1 pt
FLOP_MATCH = 0.02  # the uniform net's FLOPs within ±2% of the searched net's


@dataclass(frozen=True)
class TASConfig(RecipeConfig):
    seeds: int = opt(5, "independent seeds (dense net, search, students)", min=1, max=100)
    hidden: str = opt("256,256", "hidden widths of the unpruned MLP, comma-separated")
    fractions: str = opt("0.25,0.5,0.75,1.0", "candidate width fractions per hidden layer")
    num_sampled: int = opt(2, "candidate widths mixed per layer and step (|I|)", min=1, max=16)
    flop_target: float = opt(0.25, "target FLOPs as a fraction of the dense net's", gt=0, max=1)
    tolerance: float = opt(0.05, "FLOP tolerance t of the cost loss (TAS Eq. 8)", min=0, lt=1)
    cost_weight: float = opt(2.0, "λ_cost, the weight of the FLOP loss", min=0, max=1000)
    dense_epochs: int = opt(30, "epochs of the dense (unpruned) net", min=1, max=10000)
    search_epochs: int = opt(30, "search epochs", min=1, max=10000)
    distill_epochs: int = opt(30, "distillation epochs of each pruned net", min=1, max=10000)
    batch_size: int = opt(100, "batch size everywhere", min=1)
    lr: float = opt(1e-3, "Adam learning rate of the weights", gt=0, max=10)
    arch_lr: float = opt(
        0.1,
        "Adam learning rate of the architecture parameters (the paper: 1e-3 over ~117k steps; "
        "here ~1k steps, so 100x for a similar total)",
        gt=0,
        max=100,
    )
    tau_max: float = opt(10.0, "initial Gumbel-softmax temperature", gt=0)
    tau_min: float = opt(0.1, "final Gumbel-softmax temperature", gt=0)
    temperature: float = opt(4.0, "distillation temperature T", gt=0, max=100)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("hidden", "fractions"):
            text = getattr(self, name)
            try:
                vals = [float(v) for v in text.split(",")]
            except ValueError:
                raise ConfigError(
                    f"--{name} must be comma-separated numbers like "
                    f"{'256,256' if name == 'hidden' else '0.25,0.5,0.75,1.0'}; got {text!r}"
                ) from None
            if name == "hidden" and any(v <= 0 or v != int(v) for v in vals):
                raise ConfigError(f"--hidden widths must be positive integers; got {text!r}")
            if name == "fractions" and any(not 0 < v <= 1 for v in vals):
                raise ConfigError(f"--fractions must lie in (0, 1]; got {text!r}")
        if self.tau_min > self.tau_max:
            raise ConfigError("--tau-min must not exceed --tau-max")

    @property
    def hidden_widths(self) -> list[int]:
        return [int(float(v)) for v in self.hidden.split(",")]

    @property
    def width_fractions(self) -> list[float]:
        return [float(v) for v in self.fractions.split(",")]


def _check_dense(m: dict) -> None:
    expect_fields(m, {"members": list}, "the metrics")
    expect_list_of(
        m["members"],
        {"seed": int, "test_acc": (int, float), "val_acc": (int, float), "diverged": bool},
        "members",
    )


def _check_search(m: dict) -> None:
    expect_fields(
        m,
        {"seed": int, "widths": list, "flops": (int, float), "probs": list, "diverged": bool},
        "the metrics",
    )


def _check_distill(m: dict) -> None:
    expect_fields(m, {"seed": int, "members": list}, "the metrics")
    expect_list_of(
        m["members"],
        {"arm": str, "widths": list, "flops": (int, float), "test_acc": (int, float, type(None))},
        "members",
    )


class TASSearch(Recipe):
    name = "tas-search"
    family = "sparsity"
    row = 91
    paper = (
        "Dong & Yang 2019, Network Pruning via Transformable Architecture Search (arXiv:1905.09717)"
    )
    claim = (
        "reduced version (an MLP, width only): widths searched by TAS (CWI, Gumbel sampling, "
        "FLOP loss), then distilled, do at least as well as uniform pruning at equal FLOPs"
    )
    Config = TASConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "hidden": "32,32",
        "dense_epochs": 2,
        "search_epochs": 2,
        "distill_epochs": 2,
        "batch_size": 250,
    }
    # Adam at lr 10 wrecks every net: the dense baseline stays near chance.
    broken: ClassVar[dict] = {
        "lr": 10.0,
        "dense_epochs": 1,
        "search_epochs": 1,
        "distill_epochs": 1,
    }
    smoke_seconds = 4.8

    def _setup(self, cfg: TASConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; this recipe's MLP "
                "needs flat feature vectors"
            )
        widths = [data.input_shape[0], *cfg.hidden_widths, data.num_classes]
        return data, widths

    def validate(self, cfg: TASConfig, data_sizes: dict[str, int]) -> None:
        """The batch must fit the training split; every hidden layer needs the same
        number of distinct candidate widths."""
        if cfg.batch_size > data_sizes["train"]:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {data_sizes['train']} training "
                "examples; choose a smaller batch"
            )
        _, widths = self._setup(cfg)
        TASMLP(widths, cfg.width_fractions, cfg.num_sampled)

    # -- run ------------------------------------------------------------------------------
    def run(self, cfg: TASConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec, Population

        data, widths = self._setup(cfg)
        seeds = list(range(cfg.seeds))
        dense_factory = model_factory(MLP, widths)
        dense_flops = mlp_flops(widths)
        target = cfg.flop_target * dense_flops
        bar = progress_bar(2 + 2 * cfg.seeds, "tas", "unit", progress, line_each_update=True)

        def dense_unit():
            specs = [
                MemberSpec(
                    seed=derive_seed("tas", "dense", s), data_seed=derive_seed("tas", "d", s)
                )
                for s in seeds
            ]
            tcfg = TrainConfig(cfg.dense_epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
            results, finals = train_members(dense_factory, specs, data, tcfg, device=cfg.device)
            members, tensors = [], {}
            for s, res, fin in zip(seeds, results, finals, strict=True):
                tensors.update({f"{s}.{k}": v for k, v in fin.items()})
                members.append(
                    {
                        "seed": s,
                        "val_acc": float(res.final.val_acc),
                        "test_acc": float(res.final.test_acc),
                        "diverged": bool(res.diverged),
                        "flops": dense_flops,
                    }
                )
            return {"members": members}, tensors

        dm, dt = rd.unit("dense", dense_unit, check=_check_dense)
        if bar is not None:
            bar.update(1)
        records = {"dense": dm["members"], "search": [], "distill": []}
        for s in seeds:

            def search_unit(s=s):
                model = build(
                    TASMLP,
                    widths,
                    cfg.width_fractions,
                    cfg.num_sampled,
                    seed=derive_seed("tas", "search", s),
                    gumbel_seed=derive_seed("tas", "gumbel", s),
                ).to(cfg.device)
                groups = (ParamGroup(("arch.*",), lr_mult=cfg.arch_lr / cfg.lr),)
                tcfg = TrainConfig(
                    cfg.search_epochs,
                    cfg.batch_size,
                    0,
                    OptimConfig("adam", lr=cfg.lr, groups=groups),
                    loss=TASLoss(model, target, cfg.cost_weight, cfg.tolerance),
                )
                model.set_step(1, cfg.tau_max)
                res = train(
                    model,
                    data,
                    tcfg,
                    derive_seed("tas", "search-data", s),
                    seed=derive_seed("tas", "search", s),
                    callbacks=[TASCallback(cfg.tau_max, cfg.tau_min)],
                )
                found = model.argmax_widths()
                probs = torch.softmax(model.arch.logits.detach(), -1)
                return {
                    "seed": s,
                    "widths": found,
                    "flops": mlp_flops(found),
                    "flop_ratio": mlp_flops(found) / dense_flops,
                    "probs": probs.tolist(),
                    "choices": [list(c) for c in model.choices],
                    "diverged": bool(res.diverged),
                    "history": [p.to_dict() for p in res.history],
                }, {"arch_logits": model.arch.logits.detach().cpu()}

            sm, _ = rd.unit(f"search-s{s}", search_unit, check=_check_search)
            records["search"].append(sm)
            if bar is not None:
                bar.update(1)

            def distill_unit(s=s, sm=sm):
                teacher = dense_factory(0).to(cfg.device)
                teacher.load_state_dict(
                    {k[len(f"{s}.") :]: v for k, v in dt.items() if k.startswith(f"{s}.")}
                )
                dtask = distillation_task(data, teacher)
                uw, gap = uniform_width(widths, sm["flops"])
                arms = {
                    "searched": [int(w) for w in sm["widths"]],
                    "uniform": [widths[0], *([uw] * (len(widths) - 2)), widths[-1]],
                }
                factories = {a: model_factory(MLP, w) for a, w in arms.items()}
                members = [(a, MemberSpec(seed=derive_seed("tas", "student", a, s))) for a in arms]
                pop = Population.sweep(
                    factories, members, device=cfg.device, data_seed=derive_seed("tas", "kd", s)
                )
                tcfg = TrainConfig(
                    cfg.distill_epochs,
                    cfg.batch_size,
                    0,
                    OptimConfig("adam", lr=cfg.lr),
                    loss=kd_loss(cfg.temperature),
                )
                results = pop.fit(dtask, tcfg)
                _, acc = pop.evaluate(data.test)
                out = []
                for i, (a, w) in enumerate(arms.items()):
                    bad = results[i].diverged or not math.isfinite(float(acc[i]))
                    out.append(
                        {
                            "arm": a,
                            "widths": w,
                            "flops": mlp_flops(w),
                            "flop_ratio": mlp_flops(w) / dense_flops,
                            "test_acc": None if bad else float(acc[i]),
                            "diverged": bool(results[i].diverged),
                        }
                    )
                return {"seed": s, "members": out, "uniform_flop_gap": gap}, {}

            xm, _ = rd.unit(f"distill-s{s}", distill_unit, check=_check_distill)
            records["distill"].append(xm)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        chance = 100 * majority_rate(data.test.y)
        return self.summarize(cfg, records, chance, dense_flops, widths)

    # -- summary ---------------------------------------------------------------------------
    def summarize(
        self, cfg: TASConfig, records: dict, chance: float, dense_flops: float, widths: list[int]
    ) -> dict:
        dense = {m["seed"]: m for m in records["dense"]}
        per_seed = []
        for x in records["distill"]:
            by = {m["arm"]: m for m in x["members"]}
            s = x["seed"]
            search = next(r for r in records["search"] if r["seed"] == s)
            per_seed.append(
                {
                    "seed": s,
                    "dense": None if dense[s]["diverged"] else 100 * dense[s]["test_acc"],
                    "searched": None
                    if by["searched"]["test_acc"] is None
                    else 100 * by["searched"]["test_acc"],
                    "uniform": None
                    if by["uniform"]["test_acc"] is None
                    else 100 * by["uniform"]["test_acc"],
                    "searched_widths": by["searched"]["widths"],
                    "uniform_widths": by["uniform"]["widths"],
                    "searched_flop_ratio": by["searched"]["flop_ratio"],
                    "uniform_flop_ratio": by["uniform"]["flop_ratio"],
                    "uniform_flop_gap": x["uniform_flop_gap"],
                    "probs": search["probs"],
                    "search_diverged": search["diverged"],
                }
            )
        rows = []
        for arm in ("dense", "searched", "uniform"):
            vals = [p[arm] for p in per_seed if p[arm] is not None]
            m, sd = mean_std(vals)
            rows.append({"arm": arm, "test_acc_mean": m, "test_acc_std": sd, "values": vals})
        claims = [c.to_dict() for c in self.check_claims(per_seed, chance)]
        diverged = [f"dense seed {m['seed']}" for m in records["dense"] if m["diverged"]]
        diverged += [f"search seed {p['seed']}" for p in per_seed if p["search_diverged"]]
        for x in records["distill"]:
            diverged += [f"{m['arm']} seed {x['seed']}" for m in x["members"] if m["diverged"]]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "reduced_version": (
                f"reduced version: MLP {'-'.join(map(str, widths))} on {cfg.data}, width only, "
                f"{cfg.search_epochs} search and {cfg.distill_epochs} distillation epochs, joint "
                "weight/architecture steps, soft-target KD only (the paper: ResNets on CIFAR/"
                "ImageNet, width and depth, 600 search epochs, alternating updates)"
            ),
            "dense_flops": dense_flops,
            "target_flop_ratio": cfg.flop_target,
            "per_seed": per_seed,
            "rows": rows,
            "chance_pct": chance,
            "claims": claims,
            "members": len(records["dense"]) + len(per_seed) * 3,
            "diverged_members": diverged,
        }

    @staticmethod
    def check_claims(per_seed: list[dict], chance: float) -> list[ClaimResult]:
        """Searched ≥ uniform − :data:`MARGIN_PTS` on the seed mean; preconditions: the
        dense net learned, dense − uniform ≥ :data:`PRUNING_COST_PTS`, the uniform net's
        FLOPs within :data:`FLOP_MATCH` of the searched net's, nothing diverged."""
        ok = [p for p in per_seed if None not in (p["dense"], p["searched"], p["uniform"])]
        bad = [f"seed {p['seed']}" for p in per_seed if p not in ok or p["search_diverged"]]
        dm = mean_std([p["dense"] for p in ok])[0] if ok else None
        um = mean_std([p["uniform"] for p in ok])[0] if ok else None
        cost = None
        if ok and dm - um < PRUNING_COST_PTS:
            cost = (
                f"pruning costs too little here: dense {dm:.2f}% - uniform {um:.2f}% = "
                f"{dm - um:.2f} pts < {PRUNING_COST_PTS:g} pt"
            )
        far = [p["seed"] for p in ok if abs(p["uniform_flop_gap"]) > FLOP_MATCH]
        pre = [
            baseline_learned(dm, chance=chance, name="dense") if ok else "no seed finished",
            no_divergence(bad),
            None
            if not far
            else f"uniform FLOPs differ by > {FLOP_MATCH:.0%} from the searched net in seeds {far}",
            cost,
        ]

        def check():
            a = [p["searched"] for p in ok]
            b = [p["uniform"] for p in ok]
            sm, um_ = sum(a) / len(a), sum(b) / len(b)
            diff, lo, hi = paired_difference_ci(a, b)
            held = sm - um_ >= -MARGIN_PTS
            detail = (
                f"searched {sm:.2f}% vs uniform {um_:.2f}% (mean over {len(ok)} seeds): "
                f"difference {sm - um_:+.2f} pts, needed >= -{MARGIN_PTS:g} "
                f"(90% CI of the paired difference [{lo:+.2f}, {hi:+.2f}]); dense {dm:.2f}%"
            )
            return (
                held,
                detail,
                {
                    "searched": a,
                    "uniform": b,
                    "dense_mean": dm,
                    "mean_difference": diff,
                    "ci_low": lo,
                    "ci_high": hi,
                },
            )

        return [
            judge(
                "a",
                QUOTE,
                f"the searched widths, distilled, reach test accuracy >= uniform pruning at equal "
                f"FLOPs - {MARGIN_PTS:g} pt (seed mean)",
                pre,
                check,
            )
        ]

    # -- report ----------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        main = [
            [r["arm"], _pm(r["test_acc_mean"], r["test_acc_std"]), str(len(r["values"]))]
            for r in summary["rows"]
        ]
        seeds = [
            [
                str(p["seed"]),
                "n/a" if p["dense"] is None else f"{p['dense']:.1f}",
                "-".join(map(str, p["searched_widths"])),
                f"{100 * p['searched_flop_ratio']:.1f}%",
                "n/a" if p["searched"] is None else f"{p['searched']:.1f}",
                "-".join(map(str, p["uniform_widths"])),
                f"{100 * p['uniform_flop_ratio']:.1f}%",
                "n/a" if p["uniform"] is None else f"{p['uniform']:.1f}",
            ]
            for p in summary["per_seed"]
        ]
        return [
            (
                f"Test accuracy % (mean ± std over seeds; {summary['reduced_version']})",
                ["arm", "test acc %", "seeds"],
                main,
            ),
            (
                "Per seed: searched and uniform nets (FLOPs relative to dense)",
                [
                    "seed",
                    "dense %",
                    "searched widths",
                    "FLOPs",
                    "searched %",
                    "uniform widths",
                    "FLOPs",
                    "uniform %",
                ],
                seeds,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        colors = {"dense": "gray", "searched": "tab:blue", "uniform": "tab:orange"}
        for i, r in enumerate(summary["rows"]):
            axes[0].bar(i, r["test_acc_mean"] if r["values"] else 0, color=colors[r["arm"]])
            axes[0].errorbar(i, r["test_acc_mean"], r["test_acc_std"], color="k", capsize=4)
            axes[0].plot([i] * len(r["values"]), r["values"], "k.", ms=4)
        axes[0].set_xticks(range(len(summary["rows"])), [r["arm"] for r in summary["rows"]])
        axes[0].set_ylabel("test accuracy (%)")
        lo = min((v for r in summary["rows"] for v in r["values"]), default=0)
        axes[0].set_ylim(max(0, lo - 5), None)
        for p in summary["per_seed"]:
            axes[1].plot(
                100 * p["searched_flop_ratio"], p["searched"] or 0, "o", color=colors["searched"]
            )
            axes[1].plot(
                100 * p["uniform_flop_ratio"], p["uniform"] or 0, "s", color=colors["uniform"]
            )
        axes[1].axvline(100 * summary["target_flop_ratio"], color="gray", ls="--", lw=1)
        axes[1].set_xlabel("FLOPs (% of dense)")
        axes[1].set_ylabel("test accuracy (%)")
        axes[1].legend(
            handles=[
                plt.Line2D([], [], marker="o", ls="", color=colors["searched"], label="searched"),
                plt.Line2D([], [], marker="s", ls="", color=colors["uniform"], label="uniform"),
            ]
        )
        for ax in axes:
            ax.grid(alpha=0.3)
        fig.suptitle("TAS: searched widths vs uniform pruning at equal FLOPs (distilled)")
        png = figure_png(fig)
        return [Figure("tas_accuracy.png", "Accuracy of searched vs uniform nets", png)]
