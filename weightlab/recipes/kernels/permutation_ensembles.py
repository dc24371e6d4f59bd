"""Recipe ``permutation-ensembles``: "Exact Learning of Permutations for Nonzero Binary Inputs
with Logarithmic Training Size and Quadratic Ensemble Complexity" (row [#25]).

Task: a fixed random permutation P of length k. Training inputs are the k standard basis
vectors ``e_i`` with targets ``P e_i``; the test inputs are all ``2^k − 1`` nonzero binary
vectors x with targets ``P x``. k ∈ {4, 6, 8, 10}.

Networks: 2-layer ReLU nets without bias in the NTK parametrization,
``f(x) = W₂ relu(W₁ x/√k)/√n``, all entries N(0, 1), width n = 1024
(:func:`weightlab.kernels.empirical.ntk_mlp`, ``b_std = 0``), trained by full-batch GD on
the MSE to convergence: the learning rate is ``η = k²/(2 λ_max)`` with ``λ_max`` the largest
eigenvalue of the analytic NTK of the k basis vectors
(:func:`weightlab.kernels.analytic.fc_kernels`, depth 1), so the slowest mode contracts
by ``1 − λ_min/λ_max`` per step (``k²`` turns the loss's mean over k examples × k outputs
into a sum). Every member's final train MSE is checked (≤ :data:`CONVERGED_MSE`).

Ensembles: the first M of 256 independently initialized members (M ∈ {1, 2, 4, …, 256})
are averaged and rounded. Rounding: top-m — for an input with m ones, the m largest
averaged outputs become 1 and the rest 0 (the issue's rule; the paper body's rounding
could not be pinned here). 0.5-thresholding is reported beside it at the largest M. An
input is exact when the rounded vector equals ``P x``. Also reported: the exact-match rate
of the infinite ensemble, the analytic NTK-GP mean ``Θ(x, X)Θ(X, X)^{-1}Y`` (Lee et al.
2019, Eq. 16), rounded the same way.

Claims (fixed thresholds, the issue's):

- (a) at the largest M (256) the exact-match rate over all ``2^k − 1`` inputs is ≥ 0.99 for
  every k (mean over repeats);
- (b) the smallest M whose ensemble is exact on all inputs in ≥ 4 of 5 repeats (≥ 80% of
  the repeats) is larger at the largest k (10) than at the smallest (4). A k none of whose
  M reaches it is censored above 256.

Data: the registry has no permutation task, so the recipe builds it
(:func:`permutation_task`); ``--data`` accepts only ``teacher_linear`` (declared as the
nearest registered regression kind) and is not read. One unit per repeat
(:func:`weightlab.recipes.units.seed_units`): every k's 256 members trained as one
population (:func:`weightlab.recipes.members.train_members`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.recipes.base import ClaimResult, Figure, Recipe, RecipeConfig, figure_png, opt
from weightlab.recipes.claims import judge
from weightlab.recipes.options import int_list
from weightlab.recipes.stats import mean_std
from weightlab.recipes.units import seed_units
from weightlab.runs.rundir import RunDir
from weightlab.runs.schema import expect_fields, expect_list_of
from weightlab.seeding import derive_seed, generator
from weightlab.train.config import OptimConfig, TrainConfig

QUOTE_EXACT = (
    "an ensemble of such networks independently trained with gradient descent on only the k "
    "standard basis vectors out of 2^k - 1 possible inputs successfully learns any fixed "
    "permutation of length k with arbitrarily high probability"
)
QUOTE_GROWS = (
    "the number of models needed to achieve exact learning with high probability (which we "
    "refer to as ensemble complexity) exhibits a linearithmic dependence on the input size k "
    "for a single test input and a quadratic dependence when considering all test inputs "
    "simultaneously"
)
# Fixed claim thresholds (the issue's), not options.
EXACT_RATE = 0.99  # (a) exact-match rate at the largest M
ALL_EXACT_SHARE = 0.8  # (b) exact on all inputs in >= 4 of 5 repeats
CONVERGED_MSE = 1e-6  # precondition: every member's final train MSE (targets' mean square 1/k)


@dataclass(frozen=True)
class PermutationConfig(RecipeConfig):
    seeds: int = opt(5, "repeats: independent sets of ensemble members (and permutations)", min=1)
    data: str = opt(
        "teacher_linear",
        "not read: the recipe builds the permutation task itself (the registry has none)",
        choices=("teacher_linear",),
    )
    ks: str = opt("4,6,8,10", "permutation lengths k (input and output dimension)")
    width: int = opt(1024, "hidden width n of the 2-layer ReLU nets", min=1, max=1_000_000)
    members: int = opt(256, "ensemble members per (k, repeat); M runs over 1, 2, 4, ...", min=1)
    steps: int = opt(100, "full-batch GD steps (convergence is checked)", min=1, max=1_000_000)
    lr_scale: float = opt(1.0, "GD learning rate in units of k^2 / (2 lambda_max)", gt=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(k > 16 for k in int_list(self.ks, "ks", lo=2)):
            raise ConfigError(f"--ks must be <= 16 (2^k - 1 test inputs); got {self.ks!r}")

    @property
    def k_values(self) -> list[int]:
        return int_list(self.ks, "ks", lo=2)

    @property
    def ensemble_sizes(self) -> list[int]:
        out, m = [], 1
        while m < self.members:
            out.append(m)
            m *= 2
        return [*out, self.members]


def permutation(k: int, repeat: int) -> torch.Tensor:
    """The repeat's fixed permutation of length k: ``perm[i]`` is where input coordinate i goes."""
    return torch.randperm(k, generator=generator(derive_seed("permutation-ensembles", k, repeat)))


def all_inputs(k: int) -> torch.Tensor:
    """All ``2^k − 1`` nonzero binary vectors ``(2^k − 1, k)``, in binary counting order."""
    idx = torch.arange(1, 2**k)
    return ((idx[:, None] >> torch.arange(k)) & 1).to(torch.float32)


def permutation_task(k: int, perm: torch.Tensor) -> TaskData:
    """Train: the k basis vectors with targets ``P e_i``; test: every nonzero binary vector."""
    p = torch.zeros(k, k)
    p[perm, torch.arange(k)] = 1.0  # P e_i = e_{perm[i]}
    x = torch.eye(k)
    xt = all_inputs(k)
    empty = Split(torch.zeros(0, k), torch.zeros(0, k))
    return TaskData(
        f"permutation-{k}", Split(x, x @ p.T), empty, Split(xt, xt @ p.T), 0, "regression"
    )


def top_m_round(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Top-m rounding: per row, the ``m = Σx`` largest entries of ``out`` become 1, the rest 0."""
    m = x.sum(-1).long()
    order = torch.sort(out, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(out.shape[-1]).expand_as(order))
    return (ranks < m[..., None]).to(out.dtype)


def exact_rate(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor, rule: str = "top_m") -> float:
    """Fraction of rows whose rounded ``out`` equals ``y`` exactly."""
    r = top_m_round(out, x) if rule == "top_m" else (out > 0.5).to(out.dtype)
    return float((r == y).all(-1).double().mean())


def analytic_mean(k: int, task: TaskData) -> torch.Tensor:
    """The infinite ensemble's output: the NTK-GP mean Θ(x, X)Θ(X, X)^{-1}Y (Lee et al. 2019)."""
    from weightlab.kernels.analytic import fc_kernels
    from weightlab.kernels.regression import kernel_ridge

    x, y = task.train.x.double(), task.train.y.double()
    xt = task.test.x.double()
    ktr = fc_kernels(x, depth=1, activation="relu").ntk
    kte = fc_kernels(xt, x, depth=1, activation="relu").ntk
    return kernel_ridge(ktr, y, kte)


def learning_rate(k: int, scale: float) -> float:
    """``scale · k²/(2 λ_max)`` for the analytic NTK of the k basis vectors (module docstring)."""
    from weightlab.kernels.analytic import fc_kernels

    lam = float(
        torch.linalg.eigvalsh(fc_kernels(torch.eye(k, dtype=torch.float64), depth=1).ntk)[-1]
    )
    return scale * k * k / (2.0 * lam)


def _check_unit(metrics: dict) -> None:
    expect_fields(metrics, {"seed": int, "members": list}, "metrics")
    num = (int, float)
    expect_list_of(
        metrics["members"],
        {
            "k": int,
            "repeat": int,
            "permutation": list,
            "sizes": list,
            "exact": list,
            "threshold_exact": num,
            "max_train_mse": num,
            "diverged": int,
            "lr": num,
        },
        "members",
    )


class PermutationEnsembles(Recipe):
    name = "permutation-ensembles"
    family = "kernels"
    row = 25
    paper = (
        "Exact Learning of Permutations for Nonzero Binary Inputs with Logarithmic Training "
        "Size and Quadratic Ensemble Complexity (2025)"
    )
    claim = (
        "ensembles of wide 2-layer ReLU nets trained on the k basis vectors learn a permutation "
        "exactly on all 2^k - 1 nonzero binary inputs; the ensemble size needed grows with k"
    )
    Config = PermutationConfig
    tasks = ("teacher_linear",)
    kinds = ("regression",)
    smoke: ClassVar[dict] = {"seeds": 2, "ks": "3,4", "width": 64, "members": 8, "steps": 40}
    broken: ClassVar[dict] = {"lr_scale": 50.0}
    # measured by the conformance test, one thread, 2 cores shared by 5 jobs: 1.6 s CPU
    smoke_seconds = 1.6

    def load_data(self, cfg: PermutationConfig) -> TaskData:
        k = cfg.k_values[-1]
        return permutation_task(k, permutation(k, 0))

    def run(self, cfg: PermutationConfig, rd: RunDir, progress: bool = False) -> dict:
        from weightlab.kernels.empirical import ntk_mlp
        from weightlab.population import MemberSpec
        from weightlab.recipes.members import train_members

        sizes = cfg.ensemble_sizes

        def compute(r: int):
            out = []
            for k in cfg.k_values:
                perm = permutation(k, r)
                task = permutation_task(k, perm)
                lr = learning_rate(k, cfg.lr_scale)
                tcfg = TrainConfig(cfg.steps, k, cfg.steps, OptimConfig("sgd", lr=lr), loss="mse")

                def factory(seed: int, k=k) -> torch.nn.Module:
                    return ntk_mlp([k, cfg.width, k], seed=seed, dtype=torch.float32)

                specs = [
                    MemberSpec(seed=derive_seed(self.name, "member", k, r, i))
                    for i in range(cfg.members)
                ]
                results, finals = train_members(factory, specs, task, tcfg, device=cfg.device)
                outs, train_mse = self._outputs(factory, finals, task)
                mean = torch.cumsum(outs, 0)
                exact = []
                for m in sizes:
                    exact.append(exact_rate(mean[m - 1] / m, task.test.x, task.test.y))
                thr = exact_rate(mean[-1] / cfg.members, task.test.x, task.test.y, "threshold")
                finite = torch.isfinite(train_mse)
                out.append(
                    {
                        "k": k,
                        "repeat": r,
                        "permutation": [int(v) for v in perm],
                        "sizes": sizes,
                        "exact": exact,
                        "threshold_exact": thr,
                        "max_train_mse": float(train_mse[finite].max()) if finite.any() else 1e300,
                        "diverged": int(sum(bool(x.diverged) for x in results) + (~finite).sum()),
                        "lr": lr,
                    }
                )
            return {"seed": r, "members": out}, {}

        records = seed_units(rd, self.name, cfg.seeds, compute, _check_unit, progress)
        reference = {}
        for k in cfg.k_values:
            task = permutation_task(k, permutation(k, 0))
            mu = analytic_mean(k, task).float()
            reference[k] = {
                "top_m": exact_rate(mu, task.test.x, task.test.y),
                "threshold": exact_rate(mu, task.test.x, task.test.y, "threshold"),
            }
        return self.summarize(cfg, records, reference)

    @staticmethod
    def _outputs(factory, finals, task: TaskData, chunk: int = 32):
        """Every member's outputs on the test inputs ``(M, 2^k − 1, k)`` (float64) and its
        final train MSE ``(M,)``, by ``torch.func.functional_call`` over stacked weights."""
        from torch.func import functional_call, vmap

        template = factory(0)
        outs, mses = [], []
        for s in range(0, len(finals), chunk):
            block = finals[s : s + chunk]
            params = {n: torch.stack([f[n] for f in block]) for n in block[0]}

            def f(p, x):
                return functional_call(template, p, (x,))

            with torch.no_grad():
                outs.append(vmap(f, in_dims=(0, None))(params, task.test.x).double())
                tr = vmap(f, in_dims=(0, None))(params, task.train.x).double()
            mses.append((tr - task.train.y.double()).square().mean(dim=(1, 2)))
        return torch.cat(outs), torch.cat(mses)

    # -- summary and claims ---------------------------------------------------------------
    def summarize(self, cfg: PermutationConfig, records: list[dict], reference: dict) -> dict:
        rows = []
        for k in sorted({m["k"] for m in records}):
            ms = sorted((m for m in records if m["k"] == k), key=lambda m: m["repeat"])
            sizes = ms[0]["sizes"]
            per_m = []
            for j, size in enumerate(sizes):
                vals = [m["exact"][j] for m in ms]
                mu, sd = mean_std(vals)
                all_exact = sum(v == 1.0 for v in vals)
                per_m.append(
                    {"M": size, "mean": mu, "std": sd, "values": vals, "all_exact": all_exact}
                )
            need = math.ceil(ALL_EXACT_SHARE * len(ms))
            first = next((p["M"] for p in per_m if p["all_exact"] >= need), None)
            rows.append(
                {
                    "k": k,
                    "inputs": 2**k - 1,
                    "by_m": per_m,
                    "smallest_all_exact_m": first,
                    "repeats_needed": need,
                    "threshold_exact_mean": mean_std([m["threshold_exact"] for m in ms])[0],
                    "max_train_mse": max(m["max_train_mse"] for m in ms),
                    "diverged": sum(m["diverged"] for m in ms),
                    "repeats": len(ms),
                    "infinite_ensemble_top_m": reference[k]["top_m"],
                    "infinite_ensemble_threshold": reference[k]["threshold"],
                    "lr": ms[0]["lr"],
                }
            )
        claims = [c.to_dict() for c in self.check_claims(rows)]
        return {
            "recipe": self.name,
            "paper": self.paper,
            "rows": rows,
            "claims": claims,
            "members": len(records) * cfg.members,
            "diverged_members": [f"k={r['k']}: {r['diverged']}" for r in rows if r["diverged"]],
            "rounding": "top-m (the m largest averaged outputs of an input with m ones become 1)",
            "width": cfg.width,
            "steps": cfg.steps,
        }

    @staticmethod
    def check_claims(rows: list[dict]) -> list[ClaimResult]:
        unconverged = [
            f"k={r['k']} (max final train MSE {r['max_train_mse']:.2g} > {CONVERGED_MSE:g})"
            for r in rows
            if not r["max_train_mse"] <= CONVERGED_MSE
        ]
        conv = "members did not converge: " + ", ".join(unconverged) if unconverged else None
        div = [f"k={r['k']}" for r in rows if r["diverged"]]
        diverged = f"members diverged at {', '.join(div)}" if div else None

        def check_a():
            last = [(r["k"], r["by_m"][-1]) for r in rows]
            ok = all(p["mean"] >= EXACT_RATE for _, p in last)
            detail = (
                f"exact-match rate at M = {last[0][1]['M']}: "
                + ", ".join(f"k={k} {p['mean']:.4f} ± {p['std']:.4f}" for k, p in last)
                + f"; needed >= {EXACT_RATE} for every k"
            )
            return ok, detail, {"at_largest_m": {str(k): p for k, p in last}}

        ks = [r["k"] for r in rows]
        lo, hi = rows[0], rows[-1]
        few = None if len(ks) >= 2 else "the run has fewer than two k"
        censored_lo = (
            f"no ensemble size is exact on all inputs at the smallest k={lo['k']} "
            "(nothing to compare)"
            if lo["smallest_all_exact_m"] is None
            else None
        )

        def check_b():
            a, b = lo["smallest_all_exact_m"], hi["smallest_all_exact_m"]
            ok = b is None or b > a
            shown = "> " + str(hi["by_m"][-1]["M"]) if b is None else str(b)
            detail = (
                "smallest M exact on all inputs in >= "
                f"{lo['repeats_needed']} of {lo['repeats']} repeats: "
                + ", ".join(
                    f"k={r['k']} "
                    + (
                        str(r["smallest_all_exact_m"])
                        if r["smallest_all_exact_m"] is not None
                        else f"> {r['by_m'][-1]['M']}"
                    )
                    for r in rows
                )
                + f"; needed k={hi['k']} ({shown}) > k={lo['k']} ({a})"
            )
            ev = {str(r["k"]): r["smallest_all_exact_m"] for r in rows}
            return ok, detail, {"smallest_all_exact_m": ev}

        return [
            judge(
                "a",
                QUOTE_EXACT,
                f"at the largest ensemble the top-m exact-match rate over all 2^k - 1 inputs is "
                f">= {EXACT_RATE} for every k (mean over repeats)",
                [conv, diverged],
                check_a,
            ),
            judge(
                "b",
                QUOTE_GROWS,
                "the smallest M exact on all inputs in >= 80% of repeats is larger at the "
                "largest k than at the smallest k",
                [few, conv, diverged, censored_lo],
                check_b,
            ),
        ]

    # -- report ---------------------------------------------------------------------------
    def tables(self, summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
        rows = summary["rows"]
        sizes = [p["M"] for p in rows[0]["by_m"]]
        header = ["k", "inputs", *[f"M={m}" for m in sizes]]
        body = [
            [str(r["k"]), str(r["inputs"])]
            + [f"{p['mean']:.3f} ± {p['std']:.3f}" for p in r["by_m"]]
            for r in rows
        ]
        side = [
            [
                str(r["k"]),
                str(r["smallest_all_exact_m"] or f"> {sizes[-1]}"),
                f"{r['threshold_exact_mean']:.3f}",
                f"{r['infinite_ensemble_top_m']:.3f}",
                f"{r['infinite_ensemble_threshold']:.3f}",
                f"{r['max_train_mse']:.2g}",
                f"{r['lr']:.4g}",
            ]
            for r in rows
        ]
        return [
            ("Top-m exact-match rate vs ensemble size M (mean ± std over repeats)", header, body),
            (
                "Per k: smallest all-exact M, 0.5-threshold rate at the largest M, the infinite "
                "ensemble (analytic NTK-GP mean) rounded both ways, convergence",
                [
                    "k",
                    "smallest M all-exact",
                    f"threshold @M={sizes[-1]}",
                    "infinite top-m",
                    "infinite threshold",
                    "max train MSE",
                    "lr",
                ],
                side,
            ),
        ]

    def figures(self, summary: dict) -> list[Figure]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for r in summary["rows"]:
            ms = [p["M"] for p in r["by_m"]]
            ax.errorbar(
                ms,
                [p["mean"] for p in r["by_m"]],
                yerr=[p["std"] for p in r["by_m"]],
                fmt="o-",
                ms=3,
                capsize=2,
                label=f"k={r['k']}",
            )
        ax.axhline(EXACT_RATE, color="k", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size M")
        ax.set_ylabel("exact-match rate (top-m rounding)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        ax.set_title("Permutation learning: ensemble of NTK-param ReLU nets")
        return [
            Figure("exact_vs_ensemble.png", "Exact-match rate vs ensemble size", figure_png(fig))
        ]
