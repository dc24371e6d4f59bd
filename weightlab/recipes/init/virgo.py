"""Recipe ``virgo``: Li et al. (2023), "On the Initialization of Graph Neural Networks"
(ICML; row [#20]).

An 8-layer plain-torch GCN (:class:`weightlab.models.gcn.GCN`, widths 32-h-...-h-4) on
the ``sbm`` task (a stochastic-block-model graph with Gaussian node features,
:mod:`weightlab.data.graphs`), initialized with Xavier (Glorot normal) or Virgo
(:mod:`weightlab.init.virgo`), then trained full-batch with Adam on the labelled nodes;
5 seeds. Per seed and init: the variance of every layer's pre-activation ``Z_ℓ`` over all
nodes and of ``∂L/∂Z_ℓ`` at init (:func:`weightlab.models.gcn.layer_variances`), summed
up as the mean ``|log|`` of the layer-to-layer ratios (0 = perfectly kept), and test
accuracy at the early-stopping evaluation (minimum validation loss).

Each seed is one unit: both inits train as one population (``init_state``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.init import initialize
from weightlab.models.gcn import GCN, layer_variances, mean_abs_log_ratio
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import num as _num
from weightlab.recipes.stats import pm as _pm
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed
from weightlab.train.config import OptimConfig, TrainConfig

ARMS = ("xavier", "virgo")
SCHEMES = {"xavier": "glorot", "virgo": "virgo"}
QUOTE_VARIANCE = (
    "Virgo can lead to superior model performance and more stable variance at initialization"
)
QUOTE_ACC = QUOTE_VARIANCE
ACC_MARGIN_PTS = 1.0  # (b) Virgo >= Xavier - 1 pt (proposal)


@dataclass(frozen=True)
class VirgoConfig(RecipeConfig):
    data: str = opt("sbm", "task: a graph task whose info holds adjacency and features")
    seeds: int = opt(5, "number of independent seeds (error bars are over seeds)", min=1, max=1000)
    depth: int = opt(8, "graph convolutions in the GCN", min=2, max=64)
    hidden: int = opt(32, "hidden width of the GCN", min=1, max=4096)
    lr: float = opt(0.01, "Adam learning rate (full-batch)", gt=0, max=10)
    weight_decay: float = opt(0.0, "L2 weight decay", min=0)
    epochs: int = opt(300, "full-batch steps (one epoch is one step)", min=1, max=100000)
    eval_every: int = opt(20, "steps between evaluations", min=1)
    n_nodes: int = opt(
        400, "nodes of the SBM graph (4 blocks; 80 train, 120 val, rest test)", min=8, max=20000
    )
    signal: float = opt(1.0, "norm of the class mean in the SBM node features", min=0)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "the metrics")
    expect_list_of(
        metrics["members"],
        {
            "arm": str,
            "seed": int,
            "fwd_var": list,
            "bwd_var": list,
            "fwd_score": (int, float),
            "bwd_score": (int, float),
            "diverged": bool,
            "test_acc": (int, float, type(None)),
            "history": list,
        },
        "members",
    )


class VirgoRecipe(Recipe):
    name = "virgo"
    family = "init"
    row = 20
    paper = "Li et al. 2023, On the Initialization of Graph Neural Networks (ICML)"
    claim = (
        "Virgo keeps forward and backward variance across GCN layers better than Xavier, "
        "at no cost in accuracy"
    )
    Config = VirgoConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("sbm",)
    task_fields = ("n_nodes", "signal")
    smoke: ClassVar[dict] = {"seeds": 2, "epochs": 4, "eval_every": 2, "n_nodes": 300}
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    smoke_seconds = 1.7  # CPU, measured warm in-process (2 cores shared by ~8 jobs)

    def _graph(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        adj, feats = data.info.get("adjacency"), data.info.get("features")
        if not isinstance(adj, torch.Tensor) or not isinstance(feats, torch.Tensor):
            raise ConfigError(
                f"--data {data.name} carries no graph (info adjacency/features); use --data sbm"
            )
        return adj, feats

    def validate(self, cfg: VirgoConfig, data_sizes: dict[str, int]) -> None:
        """The graph task carries its adjacency and features."""
        self._graph(self.load_data(cfg))

    def run(self, cfg: VirgoConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        data = self.load_data(cfg)
        adj, feats = self._graph(data)
        widths = [feats.shape[1]] + [cfg.hidden] * (cfg.depth - 1) + [data.num_classes]

        def make(arm: str, seed: int) -> GCN:
            model = GCN(adj, feats, widths)
            initialize(model, SCHEMES[arm], seed=seed, graph=adj, data=feats)
            return model

        train_cfg = TrainConfig(
            cfg.epochs,
            len(data.train),
            cfg.eval_every,
            OptimConfig("adam", lr=cfg.lr, weight_decay=cfg.weight_decay),
        )

        def compute(s: int):
            specs, out = [], []
            for arm in ARMS:
                seed = derive_seed(self.name, "init", s)  # same seed, different scheme
                model = make(arm, seed)
                fwd, bwd = layer_variances(model, data.train.x, data.train.y)
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state = {k: v for k, v in state.items() if k.startswith("layers.")}
                specs.append(MemberSpec(seed=seed, init_state=state))
                out.append({"arm": arm, "seed": s, "fwd_var": fwd, "bwd_var": bwd})
            results, _ = train_members(
                lambda seed: make("xavier", seed),
                specs,
                data,
                train_cfg,
                engine="population",
                device=cfg.device,
                data_seed=derive_seed(self.name, "data", s),
                progress=progress,
            )
            for rec, res in zip(out, results, strict=True):
                rec.update(
                    fwd_score=mean_abs_log_ratio(rec["fwd_var"]),
                    bwd_score=mean_abs_log_ratio(rec["bwd_var"]),
                    **res.to_dict(),
                    test_acc=res.best.test_acc,
                )
            return {"seed": s, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        return self.summarize(cfg, records, chance=100 * majority_rate(data.test.y))

    # -- summary and claims -------------------------------------------------------------
    def summarize(self, cfg: VirgoConfig, records: list[dict], chance: float) -> dict:
        """Per init: mean ± std over seeds of the variance scores and of test accuracy,
        the per-layer variances (means over seeds), and the claims."""
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            n_layers = len(ms[0]["fwd_var"])
            rows.append(
                {
                    "arm": arm,
                    "fwd_score_mean": mean_std([m["fwd_score"] for m in ms])[0],
                    "fwd_score_std": mean_std([m["fwd_score"] for m in ms])[1],
                    "bwd_score_mean": mean_std([m["bwd_score"] for m in ms])[0],
                    "bwd_score_std": mean_std([m["bwd_score"] for m in ms])[1],
                    "fwd_var_by_layer": [
                        mean_std([m["fwd_var"][i] for m in ms])[0] for i in range(n_layers)
                    ],
                    "bwd_var_by_layer": [
                        mean_std([m["bwd_var"][i] for m in ms])[0] for i in range(n_layers)
                    ],
                    "test_acc_mean": mean_std(acc)[0],
                    "test_acc_std": mean_std(acc)[1],
                    "test_acc_values": acc,
                    "diverged": len(ms) - len(kept),
                    "excluded": [f"{arm} seed {m['seed']}" for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": [c.to_dict() for c in self.check_claims(rows, chance)],
            "chance_pct": chance,
            "members": len(records),
            "diverged_members": [n for r in rows for n in r["excluded"]],
            "accuracy": "test accuracy (%) at the early-stopping evaluation (minimum validation loss)",
            "variance_score": "mean over consecutive layers of |log(Var_{l+1} / Var_l)| at init",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """(a) Virgo's mean |log| variance ratio is below Xavier's, forward and backward;
        (b) Virgo's mean test accuracy >= Xavier's - 1 pt. Both need the Xavier GCN to
        have learned and no diverged member."""
        by = {r["arm"]: r for r in rows}
        x, v = by["xavier"], by["virgo"]
        pre = [
            baseline_learned(x["test_acc_mean"], chance=chance, name="Xavier GCN"),
            no_divergence(x["excluded"] + v["excluded"]),
        ]

        def check_a():
            ok = (
                v["fwd_score_mean"] < x["fwd_score_mean"]
                and v["bwd_score_mean"] < x["bwd_score_mean"]
            )
            detail = (
                f"mean |log| layer-to-layer variance ratio, forward: Virgo "
                f"{v['fwd_score_mean']:.3f} vs Xavier {x['fwd_score_mean']:.3f}; backward: "
                f"Virgo {v['bwd_score_mean']:.3f} vs Xavier {x['bwd_score_mean']:.3f}; "
                "needed Virgo below Xavier in both"
            )
            ev = {k: {a: by[a][k] for a in ARMS} for k in ("fwd_score_mean", "bwd_score_mean")}
            return ok, detail, ev

        def check_b():
            diff = v["test_acc_mean"] - x["test_acc_mean"]
            detail = (
                f"test accuracy Virgo {v['test_acc_mean']:.2f}% vs Xavier "
                f"{x['test_acc_mean']:.2f}% ({diff:+.2f} pts); needed >= -{ACC_MARGIN_PTS:g}"
            )
            return diff >= -ACC_MARGIN_PTS, detail, {"diff_pts": diff}

        return [
            judge(
                "a",
                QUOTE_VARIANCE,
                "Virgo's mean |log| of layer-to-layer forward and backward variance ratios "
                "at init is below Xavier's (means over seeds)",
                pre,
                check_a,
            ),
            judge(
                "b",
                QUOTE_ACC,
                f"Virgo's mean test accuracy is >= Xavier's - {ACC_MARGIN_PTS:g} pt (proposal)",
                pre,
                check_b,
            ),
        ]

    # -- report ------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = ["init", "fwd |log| ratio", "bwd |log| ratio", "test acc %", "n"]
        rows = [
            [
                r["arm"],
                _pm(r["fwd_score_mean"], r["fwd_score_std"], 3),
                _pm(r["bwd_score_mean"], r["bwd_score_std"], 3),
                _pm(r["test_acc_mean"], r["test_acc_std"], 2),
                str(r["n"]) + (f" ({r['diverged']} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        by = {r["arm"]: r for r in summary["rows"]}
        layers = [
            [
                str(i + 1),
                *(f"{by[a]['fwd_var_by_layer'][i]:.3g}" for a in ARMS),
                *(f"{by[a]['bwd_var_by_layer'][i]:.3g}" for a in ARMS),
            ]
            for i in range(len(by["xavier"]["fwd_var_by_layer"]))
        ]
        return [
            ("Variance scores at init and accuracy (mean ± std over seeds)", header, rows),
            (
                "Per-layer variance at init (means over seeds)",
                ["layer", "fwd Xavier", "fwd Virgo", "bwd Xavier", "bwd Virgo"],
                layers,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        colors = {"xavier": "tab:gray", "virgo": "tab:blue"}
        for r in summary["rows"]:
            ls = range(1, len(r["fwd_var_by_layer"]) + 1)
            axes[0].plot(ls, r["fwd_var_by_layer"], "o-", color=colors[r["arm"]], label=r["arm"])
            axes[1].plot(ls, r["bwd_var_by_layer"], "o-", color=colors[r["arm"]], label=r["arm"])
        for ax, t in zip(axes[:2], ("forward Var Z_l", "backward Var dL/dZ_l"), strict=True):
            ax.set_yscale("log")
            ax.set_xlabel("layer")
            ax.set_title(t)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        rows = summary["rows"]
        axes[2].bar(
            [r["arm"] for r in rows],
            [_num(r["test_acc_mean"]) for r in rows],
            yerr=[_num(r["test_acc_std"]) for r in rows],
            color=[colors[r["arm"]] for r in rows],
            capsize=4,
        )
        axes[2].axhline(summary["chance_pct"], color="k", lw=0.8, ls="--", label="chance")
        axes[2].set_ylabel("test accuracy at early stop (%)")
        axes[2].legend(fontsize=8)
        fig.suptitle("GCN variance at init and accuracy: Xavier vs Virgo")
        png = figure_png(fig)
        return [Figure("virgo.png", "Per-layer variance at init and accuracy", png)]
