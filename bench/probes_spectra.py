"""Weight-spectra benchmark (issue 20, Performance): ESD α + stable rank of every Linear and
Embedding of all-MiniLM-L6-v2 (our ``BertModel``: 37 Linears, 3 Embeddings; 39 fitted,
``token_type_embeddings`` (2 × 384) refused by every side), all sides in the same run,
medians of ``ROUNDS`` interleaved rounds (order rotating) with min–max.

Sides:
- **weightwatcher 0.7.7** ``analyze(min_evals=8, fix_fingers=False, randomize=False,
  mp_fit=False, plot=False)`` (its other settings at their defaults: SciPy's full SVD in
  float64, ``pl_package="ww"``), the weights read from the same model;
- **ours, plain**: ``spectra(model, fingers=None)`` (the settings matched: one CSN fit per
  layer, α + xmin + KS distance, stable rank, σ_max);
- **ours, default**: ``spectra(model)`` (plus the finger guard's second α per layer);
- **floor (eigvalsh)**: float64 eigenvalues of every layer's smaller Gram matrix, stacked
  by shape, ``torch.linalg.eigvalsh``, and the stable rank ``Σλ / max λ`` (no fit);
- **floor (svdvals)**: ``torch.linalg.svdvals`` of the float64 weights stacked by shape.

Must: ours (plain) ≥ 2× faster than weightwatcher. Goal: ours (plain) within 1.5× of the
eigvalsh floor. Threads: ``THREADS`` (1 by default, ``--threads``) for torch and BLAS on
every side (set before numpy/torch load when run as a script).

Run: ``.venv/bin/python bench/probes_spectra.py``; results also go to
``bench/results/probes_spectra.json``.
"""

from __future__ import annotations

import os
import sys

THREADS = 1
if __name__ == "__main__":
    for _a in sys.argv[1:]:
        if _a.startswith("--threads="):
            THREADS = int(_a.split("=", 1)[1])
    for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[_v] = str(THREADS)

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "probes_spectra.json"
ROUNDS = 5
MUST_VS_WW = 2.0
GOAL_VS_FLOOR = 1.5


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [
        m.weight.detach()
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Embedding) and min(m.weight.shape) >= 8
    ]


def _by_shape(ws: list[torch.Tensor]) -> list[torch.Tensor]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for w in ws:
        groups.setdefault(tuple(w.shape), []).append(w)
    return [torch.stack(g).to(torch.float64) for g in groups.values()]


def floor_eigvalsh(ws: list[torch.Tensor]) -> list[float]:
    """Float64 Gram eigenvalues batched by shape, and each layer's stable rank."""
    out = []
    for w in _by_shape(ws):
        g = w.mT @ w if w.shape[1] >= w.shape[2] else w @ w.mT
        ev = torch.linalg.eigvalsh(g)
        out.extend((ev.sum(-1) / ev[:, -1]).tolist())
    return out


def floor_svdvals(ws: list[torch.Tensor]) -> list[float]:
    out = []
    for w in _by_shape(ws):
        s2 = torch.linalg.svdvals(w) ** 2
        out.extend((s2.sum(-1) / s2[:, 0]).tolist())
    return out


def _stats(ts: list[float]) -> dict:
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts), "rounds": ts}


def run(quiet: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import weightwatcher as ww
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    from weightlab.models.minilm import load_minilm
    from weightlab.probes.spectra import spectra

    model = load_minilm().model
    ws = _weights(model)

    def ww_side():
        watcher = ww.WeightWatcher(model=model)
        with contextlib.redirect_stdout(io.StringIO()):
            return watcher.analyze(
                min_evals=8, fix_fingers=False, randomize=False, mp_fit=False, plot=False
            )

    sides = {
        "weightwatcher analyze": ww_side,
        "ours, plain (fingers=None)": lambda: spectra(model, fingers=None, progress=False),
        "ours, default (+ finger guard)": lambda: spectra(model, progress=False),
        "floor: Gram eigvalsh by shape": lambda: floor_eigvalsh(ws),
        "floor: svdvals by shape": lambda: floor_svdvals(ws),
    }
    names = list(sides)
    for fn in sides.values():  # warm-up (imports, LAPACK workspaces), not timed
        fn()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(ROUNDS):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t = time.perf_counter()
            sides[n]()
            times[n].append(time.perf_counter() - t)
    # the answers agree (so the timings compare like with like)
    ref = ww_side()
    ours = spectra(model, fingers=None, progress=False)
    dalpha = max(abs(ours[row.longname].alpha - row.alpha) for row in ref.itertuples())
    stats = {n: _stats(times[n]) for n in names}
    med = {n: stats[n]["median"] for n in names}
    plain, default = names[1], names[2]
    result = {
        "setting": (
            "all-MiniLM-L6-v2, every Linear and Embedding (39 fitted, token_type refused); "
            "weightwatcher 0.7.7 analyze(min_evals=8, fix_fingers=False, randomize=False, "
            f"mp_fit=False, plot=False); {THREADS} thread(s); medians of {ROUNDS} rounds"
        ),
        "times_s": stats,
        "speedup_vs_weightwatcher": med[names[0]] / med[plain],
        "speedup_vs_weightwatcher_default": med[names[0]] / med[default],
        "ratio_to_eigvalsh_floor": med[plain] / med[names[3]],
        "ratio_to_eigvalsh_floor_default": med[default] / med[names[3]],
        "ratio_to_svdvals_floor": med[plain] / med[names[4]],
        "max_abs_alpha_difference": dalpha,
        "layers_fitted": len(ours.fitted),
        "must_2x_weightwatcher": med[names[0]] / med[plain] >= MUST_VS_WW,
        "goal_1p5x_floor": med[plain] / med[names[3]] <= GOAL_VS_FLOOR,
        "load_average": os.getloadavg(),
    }
    if not quiet:
        print(table(result))
    return result


def table(result: dict) -> str:
    lines = [result["setting"], f"load average at the end: {result['load_average']}", ""]
    lines.append(f"{'side':34s} {'median s':>9s} {'min':>8s} {'max':>8s}")
    for n, st in result["times_s"].items():
        lines.append(f"{n:34s} {st['median']:9.3f} {st['min']:8.3f} {st['max']:8.3f}")
    lines += [
        "",
        f"weightwatcher / ours plain:    {result['speedup_vs_weightwatcher']:.2f}x "
        f"(must >= {MUST_VS_WW}x: {'met' if result['must_2x_weightwatcher'] else 'NOT met'})",
        f"weightwatcher / ours default:  {result['speedup_vs_weightwatcher_default']:.2f}x",
        f"ours plain / eigvalsh floor:   {result['ratio_to_eigvalsh_floor']:.2f}x "
        f"(goal <= {GOAL_VS_FLOOR}x: {'met' if result['goal_1p5x_floor'] else 'NOT met'})",
        f"ours default / eigvalsh floor: {result['ratio_to_eigvalsh_floor_default']:.2f}x",
        f"ours plain / svdvals floor:    {result['ratio_to_svdvals_floor']:.2f}x",
        f"max |α ours − α weightwatcher| = {result['max_abs_alpha_difference']:.2e} over "
        f"{result['layers_fitted']} layers",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    res = run(quiet=False)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
