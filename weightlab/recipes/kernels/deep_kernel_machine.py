"""Recipe ``deep-kernel-machine``: Yang, Robeva, Milsom & Aitchison (2023), "A theory of
representation learning gives a deep generalisation of kernel methods" (ICML), row [#63].

8×8 digits (64 pixel features in [0, 1]); per split, 300 training images drawn without
replacement from the task's train split (seeded), tested on the task's 360 test images;
targets one-hot minus 1/10 (centred), C = 10 regression outputs. 5 splits.

* NNGP regression: the depth-2 ReLU NNGP (stax convention, w_std = √2, b_std = 0;
  :func:`weightlab.kernels.analytic.fc_kernels`) with Gaussian noise σ², σ² chosen per split
  from a fixed grid by the NNGP's marginal likelihood on the training set.
* DKM: :class:`weightlab.kernels.dkm.DeepKernelMachine`, 2 learned Gram layers with the same
  prior and the same σ², ν = ``NU`` for both layers (fixed before any run), fitted by L-BFGS
  (``--rounds`` rounds of ≤ 5 iterations); test points by conditioning on the train Grams.

Claim: the DKM's test MSE (mean over the 5 splits; MSE averaged over test points and the 10
outputs) ≤ the NNGP's. Preconditions: the NNGP baseline learned (test accuracy ≥ 10 pts above
chance) and the DKM objective rose during fitting. Reported: test accuracy (argmax), each
layer's Gram distance from the prior ‖G_ℓ − Γ_ℓ‖_F/‖Γ_ℓ‖_F (non-zero by design), the
objective's trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.errors import ConfigError
from weightlab.kernels.dkm import DeepKernelMachine
from weightlab.kernels.regression import cholesky_factor
from weightlab.progress import progress_bar
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import baseline_learned, judge, majority_rate
from weightlab.recipes.stats import mean_std
from weightlab.recipes.stats import pm as _pm
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields
from weightlab.seeding import derive_seed, generator
from weightlab.threads import intra_op_threads

QUOTE = (
    "we introduce the possibility of using this limit and objective as a flexible, deep "
    "generalisation of kernel methods, that we call deep kernel machines (DKMs)"
)
NU = 1.0  # the DKM's ν for every layer (pre-registered)
W_STD = math.sqrt(2.0)
B_STD = 0.0
NOISE_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # σ² candidates (NNGP marginal likelihood picks one)
DEPTH = 2
INNER = 5  # L-BFGS iterations per round


@dataclass(frozen=True)
class DKMConfig(RecipeConfig):
    seeds: int = opt(5, "number of train/test splits (error bars are over splits)", min=1)
    data: str = opt("digits", "task: 8x8 digits (or another flat-feature classification task)")
    n_train: int = opt(300, "training images per split (drawn from the train split)", min=10)
    n_test: int = opt(360, "test images (the first n of the test split)", min=1)
    rounds: int = opt(60, "L-BFGS rounds (<= 5 iterations each) fitting the DKM", min=1)


def one_hot_centred(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """One-hot targets minus 1/classes (float64)."""
    return torch.nn.functional.one_hot(labels.long(), classes).to(torch.float64) - 1.0 / classes


def nngp_log_marginal(k: torch.Tensor, y: torch.Tensor, noise: float) -> float:
    """Σ_c log N(y_c; 0, K + σ²I) (the GP marginal likelihood summed over outputs)."""
    p, c = y.shape
    lk, _ = cholesky_factor(k + noise * torch.eye(p, dtype=k.dtype))
    z = torch.linalg.solve_triangular(lk, y, upper=False)
    logdet = 2 * torch.log(torch.diagonal(lk)).sum()
    return float(-0.5 * ((z * z).sum() + c * logdet + p * c * math.log(2 * math.pi)))


def _check(m: dict) -> None:
    expect_fields(m, {"members": list}, "split unit")


class DeepKernelMachineRecipe(Recipe):
    name = "deep-kernel-machine"
    family = "kernels"
    row = 63
    paper = (
        "Yang, Robeva, Milsom & Aitchison 2023, A theory of representation learning gives a "
        "deep generalisation of kernel methods (ICML, arXiv:2108.13097)"
    )
    claim = "a 2-layer deep kernel machine's test MSE is at most NNGP regression's (same prior)"
    Config = DKMConfig
    tasks = ("digits", "mnist1d", "iris", "wine", "breast_cancer")
    kinds = ("classification",)
    trains = False
    smoke: ClassVar[dict] = {"seeds": 2, "n_train": 60, "n_test": 80, "rounds": 8}
    smoke_seconds = 1.5

    def validate(self, cfg: DKMConfig, data_sizes: dict[str, int]) -> None:
        if cfg.n_train > data_sizes["train"]:
            raise ConfigError(
                f"--n-train {cfg.n_train} exceeds the task's {data_sizes['train']} training "
                "examples; lower --n-train"
            )
        if cfg.n_test > data_sizes["test"]:
            raise ConfigError(
                f"--n-test {cfg.n_test} exceeds the task's {data_sizes['test']} test examples; "
                "lower --n-test"
            )

    def _split(self, cfg: DKMConfig, data, s: int) -> tuple[dict, dict]:
        from weightlab.kernels.analytic import fc_kernels

        classes = int(data.output_shape[0]) if data.output_shape else int(data.train.y.max()) + 1
        g = generator(derive_seed(self.name, "split", s))
        idx = torch.randperm(len(data.train), generator=g)[: cfg.n_train]
        x = data.train.x[idx].reshape(cfg.n_train, -1).to(torch.float64).cpu()
        labels = data.train.y[idx].cpu()
        y = one_hot_centred(labels, classes)
        xt = data.test.x[: cfg.n_test].reshape(cfg.n_test, -1).to(torch.float64).cpu()
        lt = data.test.y[: cfg.n_test].cpu()
        yt = one_hot_centred(lt, classes)
        kw = {"depth": DEPTH, "w_std": W_STD, "b_std": B_STD, "compute_ntk": False}
        k = fc_kernels(x, **kw).nngp
        ks = fc_kernels(xt, x, **kw).nngp
        lml = [nngp_log_marginal(k, y, n) for n in NOISE_GRID]
        noise = NOISE_GRID[max(range(len(lml)), key=lambda i: lml[i])]
        eye = torch.eye(cfg.n_train, dtype=torch.float64)
        lk, _ = cholesky_factor(k + noise * eye)
        nngp_pred = ks @ torch.cholesky_solve(y, lk)
        dkm = DeepKernelMachine(x, y, depth=DEPTH, nu=NU, noise=noise, w_std=W_STD, b_std=B_STD)
        hist = dkm.fit(steps=cfg.rounds, inner=INNER)
        dkm_pred, _ = dkm.predict(xt)
        loglik, kls = dkm.terms()

        def scores(pred):
            return {
                "test_mse": float(((pred - yt) ** 2).mean()),
                "test_acc": 100.0 * float((pred.argmax(1) == lt).double().mean()),
            }

        record = {
            "split": s,
            "noise": noise,
            "noise_log_marginals": lml,
            "nngp": scores(nngp_pred),
            "dkm": scores(dkm_pred),
            "prior_distance": dkm.prior_distance(),
            "objective": hist,
            # the objective's rise over the last 10% of rounds, relative to its total rise
            "late_rise_fraction": (hist[-1] - hist[-1 - max(1, len(hist) // 10)])
            / max(hist[-1] - hist[0], 1e-300),
            "log_likelihood": float(loglik.detach()),
            "kl": [float(v.detach()) for v in kls],
            "chance": 100.0 * majority_rate(lt),
        }
        return {"members": [record]}, {}

    def run(self, cfg: DKMConfig, rd: RunDir, progress: bool = False) -> dict:
        data = self.load_data(cfg)
        bar = progress_bar(cfg.seeds, self.name, "split", progress, line_each_update=True)
        records = []
        for s in range(cfg.seeds):
            with intra_op_threads(1):  # 300x300 matrices: splitting each op only costs
                m, _ = rd.unit(
                    f"split-{s:02d}", lambda s=s: self._split(cfg, data, s), check=_check
                )
            records.extend(m["members"])
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        return self.summarize(cfg, records)

    def summarize(self, cfg: DKMConfig, records: list[dict]) -> dict:
        rows = {}
        for m in ("nngp", "dkm"):
            mse = mean_std([r[m]["test_mse"] for r in records])
            acc = mean_std([r[m]["test_acc"] for r in records])
            rows[m] = {
                "test_mse_mean": mse[0],
                "test_mse_std": mse[1],
                "test_acc_mean": acc[0],
                "test_acc_std": acc[1],
            }
        dist = [mean_std([r["prior_distance"][i] for r in records]) for i in range(DEPTH)]
        claims = [c.to_dict() for c in self.check_claims(records, rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "members": 2 * len(records),
            "diverged_members": [],
            "setup": {
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "depth": DEPTH,
                "nu": NU,
                "w_std": W_STD,
                "b_std": B_STD,
                "noise_grid": list(NOISE_GRID),
                "rounds": cfg.rounds,
                "inner_iterations": INNER,
            },
            "rows": rows,
            "prior_distance": [{"mean": m, "std": s} for m, s in dist],
            "splits": records,
            "claims": claims,
        }

    @staticmethod
    def check_claims(records: list[dict], rows: dict) -> list[ClaimResult]:
        """Mean DKM test MSE <= mean NNGP test MSE; not tested when the NNGP did not learn
        or the DKM objective did not rise."""
        chance = max(r["chance"] for r in records)
        rose = [r["split"] for r in records if not r["objective"][-1] > r["objective"][0]]
        pre = [
            baseline_learned(rows["nngp"]["test_acc_mean"], chance=chance, name="NNGP"),
            None if not rose else f"the DKM objective did not rise in split(s) {rose}",
        ]

        def check():
            d, n = rows["dkm"], rows["nngp"]
            diff = [r["dkm"]["test_mse"] - r["nngp"]["test_mse"] for r in records]
            ok = d["test_mse_mean"] <= n["test_mse_mean"]
            detail = (
                f"test MSE: DKM {_pm(d['test_mse_mean'], d['test_mse_std'], 5)} vs NNGP "
                f"{_pm(n['test_mse_mean'], n['test_mse_std'], 5)} (needed DKM <= NNGP); DKM "
                f"lower in {sum(x < 0 for x in diff)}/{len(diff)} splits; accuracy "
                f"{d['test_acc_mean']:.1f}% vs {n['test_acc_mean']:.1f}%"
            )
            return ok, detail, {"per_split_difference": diff}

        return [
            judge(
                "dkm-mse",
                QUOTE,
                f"2-layer DKM (ν = {NU:g}) on {len(records)} digits splits: test MSE <= NNGP "
                "regression's with the same prior and noise",
                pre,
                check,
            )
        ]

    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = summary["rows"]
        main = [
            [
                name,
                _pm(rows[m]["test_mse_mean"], rows[m]["test_mse_std"], 5),
                _pm(rows[m]["test_acc_mean"], rows[m]["test_acc_std"], 1),
            ]
            for m, name in (("nngp", "NNGP regression"), ("dkm", "DKM"))
        ]
        per = [
            [
                str(r["split"]),
                f"{r['noise']:g}",
                f"{r['nngp']['test_mse']:.5f}",
                f"{r['dkm']['test_mse']:.5f}",
                ", ".join(f"{v:.3f}" for v in r["prior_distance"]),
                f"{r['objective'][0]:.1f} → {r['objective'][-1]:.1f}",
                f"{100 * r['late_rise_fraction']:.2f}%",
            ]
            for r in summary["splits"]
        ]
        return [
            ("Test MSE and accuracy (mean ± std over splits)", ["model", "MSE", "acc %"], main),
            (
                "Per split (Gram distance ‖G − Γ‖_F/‖Γ‖_F per layer: reported, non-zero by design)",
                [
                    "split",
                    "σ²",
                    "NNGP MSE",
                    "DKM MSE",
                    "Gram distance",
                    "objective",
                    "last-10% rise",
                ],
                per,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sp = summary["splits"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        xs = list(range(len(sp)))
        axes[0].bar([x - 0.2 for x in xs], [r["nngp"]["test_mse"] for r in sp], 0.4, label="NNGP")
        axes[0].bar([x + 0.2 for x in xs], [r["dkm"]["test_mse"] for r in sp], 0.4, label="DKM")
        lo = min(min(r["nngp"]["test_mse"], r["dkm"]["test_mse"]) for r in sp)
        axes[0].set_ylim(0.9 * lo, None)
        axes[0].set_xlabel("split")
        axes[0].set_ylabel("test MSE (one-hot)")
        axes[0].legend(fontsize=8)
        for r in sp:
            axes[1].plot(r["objective"], lw=1, label=f"split {r['split']}")
        axes[1].set_xlabel(f"L-BFGS round (≤ {INNER} iterations)")
        axes[1].set_ylabel("DKM objective (log-lik − Σ ν KL)")
        axes[1].legend(fontsize=7)
        for ax in axes:
            ax.grid(alpha=0.3)
        return [Figure("deep_kernel_machine.png", "DKM vs NNGP; objective", figure_png(fig))]


__all__ = ["DKMConfig", "DeepKernelMachineRecipe", "nngp_log_marginal", "one_hot_centred"]
