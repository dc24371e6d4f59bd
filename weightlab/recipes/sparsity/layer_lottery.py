"""Recipe ``layer-lottery``: Jordao et al. (2023), "When Layers Play the Lottery, all
Tickets Win at Initialization" (row [#22]), a reduced version.

A residual MLP (``40 -> width`` stem, ``blocks`` residual blocks ``h + fc2(relu(fc1(h)))``,
head ``width -> 10``) on MNIST-1D. At initialization each block is scored by SNIP summed
over its weights, ``Σ |w ⊙ ∂L/∂w|`` (Lee et al. 2019, Eq. 3), on one batch of
``score_batch`` training examples, and the ``remove`` lowest-scoring blocks are removed
(:mod:`weightlab.sparsity.layers`): the *layer ticket*, a plain smaller model that
keeps the survivors' initial weights. Arms, every one trained ``epochs`` epochs per seed:

- ``dense``: all blocks;
- ``layer``: the layer ticket (SNIP at init);
- ``random``: as many blocks removed at random (the control), same initial weights;
- ``neuron``: the FLOP-matched structured ticket of the standard structured LTH: the
  trained dense net's block-internal units ranked by the L1 norm of their ``fc1`` row
  (Li et al. 2017), ``remove/blocks`` of every block's units removed (so the blocks'
  FLOPs equal the layer ticket's), rewound to the dense net's θ0, as masks.

Arms of one architecture train as one population (``layer`` + ``random``: ``blocks -
remove`` blocks; ``dense``, then ``neuron``: all blocks, masked). Accuracy is test
accuracy at the early-stopping iteration (minimum validation loss). Time per arm is
reported only: milliseconds per training step of one member, measured once in its own
unit; machine-dependent, it goes to ``timing.json`` and the report's measurements
section (:meth:`Recipe.measurements`), never ``summary.json``, which is deterministic.

Reduced version: width 128 (paper-scale proxies use 256): at width 256 the four arms'
60 epochs × 3 seeds need ~12 TFLOP, more than the 5-minute budget on 2 CPU cores.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.init.schemes import INIT_SCHEMES
from weightlab.models.factory import model_factory
from weightlab.models.resmlp import ResMLP
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate, no_divergence
from weightlab.recipes.members import train_members
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.sparsity.layers import (
    block_scores,
    linear_flops,
    lowest_blocks,
    random_blocks,
    remove_blocks,
    remove_blocks_state,
    unit_masks,
)
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.order import steps_per_epoch

ARMS = ("dense", "layer", "random", "neuron")
QUOTE_EXIST = "we confirm the existence of winning tickets when the pruning process removes layers"
QUOTE_INIT = (
    "we propose to discover these winning tickets at initialization, eliminating the "
    "requirement of heavy computational resources for training the initial "
    "(over-parameterized) dense network"
)
QUOTE_FILTER = (
    "our subnetworks easily win the lottery at initialization while tickets from filter "
    "removal (the standard structured LTH) hardly become winning tickets"
)
# Fixed claim thresholds (methods.md row #22), not options.
MATCH_PTS = 1.0  # (a) layer ticket >= dense - 1 pt
BEAT_RANDOM_PTS = 0.5  # (b) layer ticket >= random removal + 0.5 pt
NEURON_GAP_PTS = 1.0  # (c) neuron ticket < dense - 1 pt
TIMING_STEPS = 20  # timed training steps per arm (after 3 warm-up steps)


@dataclass(frozen=True)
class LayerLotteryConfig(RecipeConfig):
    width: int = opt(128, "residual width and block-internal width (reduced from 256)", min=1)
    blocks: int = opt(8, "residual blocks of the dense net", min=2, max=64)
    remove: int = opt(4, "blocks removed by the layer ticket and the random control", min=1)
    score_batch: int = opt(256, "training examples in the one SNIP scoring batch", min=1)
    init: str = opt("kaiming_uniform", "weight initialization", choices=tuple(INIT_SCHEMES))
    lr: float = opt(1e-3, "Adam learning rate", gt=0, max=10)
    epochs: int = opt(60, "training epochs per network", min=1, max=10000)
    batch_size: int = opt(60, "batch size", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.remove >= self.blocks:
            raise ConfigError(
                f"--remove {self.remove} would remove every one of the {self.blocks} blocks; "
                f"choose --remove in 1..{self.blocks - 1}"
            )


def _member(arm: str, seed: int, res) -> dict:
    best = res.best
    return {
        "arm": arm,
        "seed": seed,
        **res.to_dict(),
        "test_acc": best.test_acc,
        "final_test_acc": res.final.test_acc,
    }


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"members": list}, "the metrics")
    num = (int, float, type(None))
    expect_list_of(
        metrics["members"],
        {"arm": str, "seed": int, "diverged": bool, "early_stop_step": int, "test_acc": num},
        "members",
    )


def _check_scores(metrics: dict) -> None:
    expect_fields(metrics, {"seeds": list}, "the metrics")
    expect_list_of(
        metrics["seeds"], {"seed": int, "scores": list, "layer": list, "random": list}, "seeds"
    )


def _check_timing(metrics: dict) -> None:
    expect_fields(metrics, {"ms_per_step": dict}, "the metrics")


class LayerLottery(Recipe):
    name = "layer-lottery"
    family = "sparsity"
    row = 22
    paper = (
        "Jordao et al. 2023, When Layers Play the Lottery, all Tickets Win at Initialization "
        "(arXiv:2301.10835)"
    )
    claim = (
        "reduced version (width 128, not 256: the 5-minute CPU budget): residual blocks "
        "removed at init by a SNIP block score give a ticket that matches dense and beats "
        "random removal; a FLOP-matched neuron ticket does not"
    )
    Config = LayerLotteryConfig
    # a sweep over these runs side by side and merges their train_members calls
    member_fields = ("lr", "seeds")
    tasks = ("mnist1d", "digits", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    smoke: ClassVar[dict] = {
        "seeds": 2,
        "epochs": 1,
        "width": 32,
        "blocks": 4,
        "remove": 2,
        "score_batch": 64,
    }
    broken: ClassVar[dict] = {"lr": 10.0, "epochs": 1}
    # measured in-process, one thread, MNIST-1D cached (CPU time; the machine was shared)
    smoke_seconds = 2.8

    # -- setup ----------------------------------------------------------------------
    def _setup(self, cfg: LayerLotteryConfig):
        data = self.load_data(cfg)
        if len(data.input_shape) != 1:
            raise ConfigError(
                f"--data {cfg.data} has inputs of shape {data.input_shape}; the residual MLP "
                "needs flat feature vectors (reshape x to (n, features))"
            )
        return data

    def validate(self, cfg: LayerLotteryConfig, data_sizes: dict[str, int]) -> None:
        """The scoring batch and the training batch fit the training split."""
        n = data_sizes["train"]
        if cfg.score_batch > n:
            raise ConfigError(
                f"--score-batch {cfg.score_batch} exceeds the {n} training examples; "
                f"choose at most {n}"
            )
        if cfg.batch_size > n:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} exceeds the {n} training examples; "
                f"choose at most {n}"
            )
        self._setup(cfg)

    def _factory(self, cfg: LayerLotteryConfig, data, blocks: int):
        return model_factory(
            ResMLP, data.input_shape[0], cfg.width, blocks, data.num_classes, init=cfg.init
        )

    # -- run ----------------------------------------------------------------------------
    def run(self, cfg: LayerLotteryConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.population import MemberSpec

        data = self._setup(cfg)
        seeds = list(range(cfg.seeds))
        init_seed = {s: derive_seed("layer-lottery", "init", s) for s in seeds}
        data_seed = {s: derive_seed("layer-lottery", "data", s) for s in seeds}
        big = self._factory(cfg, data, cfg.blocks)
        small = self._factory(cfg, data, cfg.blocks - cfg.remove)
        train_cfg = TrainConfig(cfg.epochs, cfg.batch_size, 0, OptimConfig("adam", lr=cfg.lr))
        bar = progress_bar(4, "layer-lottery", "unit", progress, line_each_update=True)

        def tick(desc: str) -> None:
            if bar is not None:
                bar.set_description(desc)

        # 1. SNIP block scores at init, one batch per seed; random removal as the control
        def compute_scores():
            rows = []
            for s in seeds:
                model = big(init_seed[s])
                g = generator(derive_seed("layer-lottery", "score-batch", s))
                idx = torch.randperm(len(data.train), generator=g)[: cfg.score_batch]
                batch = (data.train.x[idx].cpu(), data.train.y[idx].cpu())
                scores = block_scores(model, batch)
                rnd = random_blocks(
                    cfg.blocks, cfg.remove, generator(derive_seed("layer-lottery", "random", s))
                )
                rows.append(
                    {
                        "seed": s,
                        "scores": scores,
                        "layer": lowest_blocks(scores, cfg.remove),
                        "random": rnd,
                    }
                )
            return {"seeds": rows}, {}

        tick("SNIP block scores")
        scored, _ = rd.unit("scores", compute_scores, check=_check_scores)
        removed = {r["seed"]: {"layer": r["layer"], "random": r["random"]} for r in scored["seeds"]}
        records: list[dict] = []

        # 2. dense (all blocks), one population; its final weights feed the neuron ticket
        def compute_dense():
            specs = [MemberSpec(seed=init_seed[s], data_seed=data_seed[s]) for s in seeds]
            results, finals = train_members(
                big, specs, data, train_cfg, device=cfg.device, progress=progress
            )
            saved = {f"{s}.{k}": finals[i][k] for i, s in enumerate(seeds) for k in finals[i]}
            members = [_member("dense", s, r) for s, r in zip(seeds, results, strict=True)]
            return {"members": members}, saved

        if bar is not None:
            bar.update(1)
        tick("dense")
        dense, dense_finals = rd.unit("dense", compute_dense, check=_check_unit)
        records += dense["members"]

        # 3. layer ticket and random removal: one population of the smaller architecture
        def compute_removed():
            specs, meta = [], []
            for s in seeds:
                init = big(init_seed[s]).state_dict()
                for arm in ("layer", "random"):
                    state = remove_blocks_state(init, removed[s][arm], cfg.blocks)
                    specs.append(
                        MemberSpec(seed=init_seed[s], data_seed=data_seed[s], init_state=state)
                    )
                    meta.append((arm, s))
            results, _ = train_members(
                small, specs, data, train_cfg, device=cfg.device, progress=progress
            )
            members = [_member(a, s, r) for (a, s), r in zip(meta, results, strict=True)]
            return {"members": members}, {}

        if bar is not None:
            bar.update(1)
        tick("layer ticket + random removal")
        rem, _ = rd.unit("removed", compute_removed, check=_check_unit)
        records += rem["members"]

        # 4. FLOP-matched neuron ticket: L1 units of the trained dense net, rewound to θ0
        ratio = cfg.remove / cfg.blocks

        def neuron_masks(s: int) -> dict[str, torch.Tensor]:
            final = {k[len(f"{s}.") :]: v for k, v in dense_finals.items() if k.startswith(f"{s}.")}
            return unit_masks(final, cfg.blocks, ratio)

        def compute_neuron():
            specs = [
                MemberSpec(seed=init_seed[s], data_seed=data_seed[s], masks=neuron_masks(s))
                for s in seeds
            ]
            results, _ = train_members(
                big, specs, data, train_cfg, device=cfg.device, progress=progress
            )
            members = [_member("neuron", s, r) for s, r in zip(seeds, results, strict=True)]
            return {"members": members}, {}

        if bar is not None:
            bar.update(1)
        tick("neuron ticket")
        neu, _ = rd.unit("neuron", compute_neuron, check=_check_unit)
        records += neu["members"]

        # sizes: parameters and forward multiply-accumulates per example, per arm
        dense_model = big(init_seed[0])
        small_model = remove_blocks(dense_model, removed[0]["layer"])
        nmask = neuron_masks(0)
        n_params = sum(p.numel() for p in dense_model.parameters())
        sizes = {
            "dense": (n_params, linear_flops(dense_model)),
            "layer": (sum(p.numel() for p in small_model.parameters()), linear_flops(small_model)),
            "neuron": (
                n_params - sum(int((~m).sum()) for m in nmask.values()),
                linear_flops(dense_model, nmask),
            ),
        }
        sizes["random"] = sizes["layer"]

        # 5. time per arm (reported only): ms per training step of one member
        def compute_timing():
            from weightlab.core.mask import apply_masks

            x, y = data.train.x[: cfg.batch_size], data.train.y[: cfg.batch_size]
            masked = big(init_seed[0])
            apply_masks(masked, nmask)
            models = {"dense": big(init_seed[0]), "layer": small(init_seed[0]), "neuron": masked}
            out = {}
            for arm, m in models.items():
                m = m.to(cfg.device)
                params = [p for p in m.parameters() if p.requires_grad]
                times = []
                for i in range(TIMING_STEPS + 3):
                    t0 = time.perf_counter()
                    loss = torch.nn.functional.cross_entropy(m(x), y)
                    grads = torch.autograd.grad(loss, params)
                    with torch.no_grad():
                        torch._foreach_add_(params, grads, alpha=-cfg.lr)
                    if i >= 3:
                        times.append(time.perf_counter() - t0)
                out[arm] = 1000 * sorted(times)[len(times) // 2]
            out["random"] = out["layer"]
            return {"ms_per_step": out}, {}

        if bar is not None:
            bar.update(1)
        tick("timing")
        timing, _ = rd.unit("timing", compute_timing, check=_check_timing)
        if bar is not None:
            bar.close()
        ms = timing["ms_per_step"]
        self._measurements = [
            (
                f"Time per training step of one member (median of {TIMING_STEPS}; reported only)",
                ["arm", "ms / step"],
                [[arm, f"{ms[arm]:.2f}"] for arm in ARMS if arm in ms],
            )
        ]
        return self.summarize(
            cfg,
            records,
            scored["seeds"],
            sizes,
            chance=100 * majority_rate(data.test.y),
            steps=steps_per_epoch(len(data.train), cfg.batch_size) * cfg.epochs,
        )

    # -- summary and claims ------------------------------------------------------------------
    def summarize(
        self,
        cfg: LayerLotteryConfig,
        records: list[dict],
        scored: list[dict],
        sizes: dict[str, tuple[int, int]],
        chance: float,
        steps: int,
    ) -> dict:
        rows = []
        for arm in ARMS:
            ms = sorted((m for m in records if m["arm"] == arm), key=lambda m: m["seed"])
            kept = [m for m in ms if not m["diverged"]]
            acc = [100 * m["test_acc"] if m["test_acc"] is not None else None for m in kept]
            (am, asd), (em, esd) = mean_std(acc), mean_std([m["early_stop_step"] for m in kept])
            params, flops = sizes.get(arm, (0, 0))
            rows.append(
                {
                    "arm": arm,
                    "test_acc_mean": am,
                    "test_acc_std": asd,
                    "test_acc_values": acc,
                    "seeds": [m["seed"] for m in kept],
                    "early_stop_mean": em,
                    "early_stop_std": esd,
                    "params": params,
                    "flops_per_example": flops,
                    "diverged": [f"{arm} seed {m['seed']}" for m in ms if m["diverged"]],
                    "n": len(kept),
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows, chance)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "blocks": scored,
            "claims": claims,
            "chance_pct": chance,
            "steps": steps,
            "members": len(records),
            "diverged_members": [f"{m['arm']} seed {m['seed']}" for m in records if m["diverged"]],
            "reduced": f"width {cfg.width} instead of 256 (the 5-minute budget on 2 CPU cores)"
            if cfg.width < 256
            else None,
            "accuracy": "test accuracy (%) at the early-stopping iteration (minimum validation loss)",
        }

    @staticmethod
    def check_claims(rows: list[dict], chance: float) -> list[ClaimResult]:
        """Claims on the arm rows (seed means). Each needs a dense baseline that learned and
        no diverged member among the arms it reads."""
        by = {r["arm"]: r for r in rows}
        dense, layer, rnd, neuron = by["dense"], by["layer"], by["random"], by["neuron"]
        learned = baseline_learned(dense["test_acc_mean"], chance=chance)

        def div(*rs):
            return no_divergence([d for r in rs for d in r["diverged"]])

        def check_a():
            gap = layer["test_acc_mean"] - dense["test_acc_mean"]
            detail = (
                f"layer ticket {layer['test_acc_mean']:.2f}% vs dense {dense['test_acc_mean']:.2f}%: "
                f"{gap:+.2f} pts; needed >= -{MATCH_PTS:g}"
            )
            return gap >= -MATCH_PTS, detail, {"gap_pts": gap}

        def check_b():
            gap = layer["test_acc_mean"] - rnd["test_acc_mean"]
            detail = (
                f"layer ticket {layer['test_acc_mean']:.2f}% vs random removal "
                f"{rnd['test_acc_mean']:.2f}%: {gap:+.2f} pts; needed >= +{BEAT_RANDOM_PTS:g}"
            )
            return gap >= BEAT_RANDOM_PTS, detail, {"gap_pts": gap}

        def check_c():
            gap = neuron["test_acc_mean"] - dense["test_acc_mean"]
            detail = (
                f"neuron ticket {neuron['test_acc_mean']:.2f}% vs dense "
                f"{dense['test_acc_mean']:.2f}%: {gap:+.2f} pts; needed < -{NEURON_GAP_PTS:g}"
            )
            return gap < -NEURON_GAP_PTS, detail, {"gap_pts": gap}

        return [
            judge(
                "a",
                QUOTE_EXIST,
                f"the layer ticket (blocks removed at init by SNIP) reaches dense test accuracy "
                f"within {MATCH_PTS:g} pt (seed means)",
                [learned, div(dense, layer)],
                check_a,
            ),
            judge(
                "b",
                QUOTE_INIT,
                f"the SNIP layer ticket beats removing as many random blocks by >= "
                f"{BEAT_RANDOM_PTS:g} pt (seed means)",
                [learned, div(layer, rnd)],
                check_b,
            ),
            judge(
                "c",
                QUOTE_FILTER,
                f"the FLOP-matched neuron ticket (L1 units of trained dense, rewound) is more "
                f"than {NEURON_GAP_PTS:g} pt below dense (seed means)",
                [learned, div(dense, neuron)],
                check_c,
            ),
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        header = [
            "arm",
            "test acc % (mean ± std)",
            "early-stop step",
            "params",
            "forward MACs / example",
            "n",
        ]
        rows = [
            [
                r["arm"],
                _pm(r["test_acc_mean"], r["test_acc_std"]),
                _pm(r["early_stop_mean"], r["early_stop_std"], 0),
                f"{r['params']:,}",
                f"{r['flops_per_example']:,}",
                str(r["n"]) + (f" ({len(r['diverged'])} diverged)" if r["diverged"] else ""),
            ]
            for r in summary["rows"]
        ]
        blocks = [
            [
                str(b["seed"]),
                ", ".join(f"{v:.3g}" for v in b["scores"]),
                ", ".join(map(str, b["layer"])),
                ", ".join(map(str, b["random"])),
            ]
            for b in summary["blocks"]
        ]
        return [
            ("Accuracy and size per arm (over seeds)", header, rows),
            (
                "SNIP block scores at init and the removed blocks",
                ["seed", "block scores Σ|w·∂L/∂w|", "layer ticket removes", "random removes"],
                blocks,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        ax = axes[0]
        for i, r in enumerate(summary["rows"]):
            m = r["test_acc_mean"]
            if m is not None and math.isfinite(m):
                ax.bar(i, m, yerr=r["test_acc_std"] or 0, color=f"C{i}", alpha=0.6, capsize=4)
            vals = [v for v in r["test_acc_values"] if v is not None]
            ax.plot([i] * len(vals), vals, "k.", ms=5)
        ax.set_xticks(range(len(summary["rows"])), [r["arm"] for r in summary["rows"]])
        ax.set_ylabel("test accuracy at early stop (%)")
        accs = [v for r in summary["rows"] for v in r["test_acc_values"] if v is not None]
        if accs:
            ax.set_ylim(max(0, min(accs) - 10), min(100, max(accs) + 5))
        ax.grid(alpha=0.3, axis="y")
        ax = axes[1]
        for b in summary["blocks"]:
            ax.plot(range(len(b["scores"])), b["scores"], "o-", label=f"seed {b['seed']}")
            ax.plot(b["layer"], [b["scores"][i] for i in b["layer"]], "rx", ms=9)
        ax.set_xlabel("block")
        ax.set_ylabel("SNIP block score Σ|w·∂L/∂w| (x: removed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.suptitle("Layer lottery: blocks removed at init vs random, dense, neuron ticket")
        png = figure_png(fig)
        return [Figure("layer_lottery.png", "Accuracy per arm and SNIP block scores", png)]
