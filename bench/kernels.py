"""Kernels benchmark (issue 18, "Performance"): weightlab's analytic and empirical NTKs
against plain-torch baselines and neural-tangents, on the same machine in one run.

(a) Analytic NNGP + NTK, 3-layer ReLU MLP (``stax`` convention, W_std = √2, b_std = 0.1),
    1000 × 100 float32 inputs: :func:`weightlab.kernels.analytic.fc_kernels` vs a plain-torch
    closed-form arc-cosine recursion written here (the baseline) vs ``stax``'s jitted
    ``kernel_fn`` (neural-tangents 0.6.5, warm). Must: no slower than neural-tangents.
    Goal: within 1.2× of the plain-torch recursion.
(b) Empirical NTK of the MLP 200-512-512-1 (weightlab ``MLP``, ReLU, float32) on 200 points:
    :func:`weightlab.kernels.empirical.empirical_ntk` (``method="auto"`` picks the structured
    formula; float32 result) vs the plain-torch structured formula written here vs
    ``torch.func`` ``vmap(jacrev)`` + ``J Jᵀ``, and neural-tangents' three implementations
    (``empirical_ntk_fn``: structured derivatives, NTK-vector products, Jacobian
    contraction; jitted, warm) on the same shapes. Must: ≤ 0.018 s. Goal: within 2× of the
    plain-torch structured formula.
(c) Memory: the empirical NTK of all-MiniLM-L6-v2 (mean-pooled sentence embedding times a
    seeded unit vector: one output) on 64 templated sentences (16 tokens, attention masks),
    ``method="jacobian"`` in chunks (word embedding from per-position gradients), run in a
    child process: peak resident memory (``VmHWM``) in all and above the start (model
    loaded). Must: peak < 4 GiB.

Two threads (the issue's 2 cores); every time is the median of ``ROUNDS`` interleaved
rounds (order alternating), after a warm call, with the min-max spread. neural-tangents runs
in its own environment (``python bench/nt_env.py --python`` prints its interpreter) through
``bench/kernels_nt.py``; without it those rows read "not measured".

    .venv/bin/python bench/kernels.py            # writes bench/results/kernels.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call, jacrev, vmap

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "kernels.json"
ROUNDS = 15
THREADS = 2
N_AN, D_AN, DEPTH, W_STD, B_STD = 1000, 100, 3, math.sqrt(2.0), 0.1
WIDTHS_EMP, N_EMP = [200, 512, 512, 1], 200
MUST_EMP_S, GOAL_EMP_X, GOAL_AN_X = 0.018, 2.0, 1.2
MINILM_SENTENCES, MUST_MEM_GIB = 64, 4.0


def _rounds(sides: dict[str, Callable[[], object]], rounds: int = ROUNDS) -> dict[str, list]:
    """Each side's seconds in ``rounds`` interleaved rounds (order alternating), after one
    warm call per side."""
    for fn in sides.values():
        fn()
    out: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            sides[k]()
            out[k].append(time.perf_counter() - t0)
    return out


def _stats(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def _fmt(s: dict | None) -> str:
    if s is None:
        return "not measured"
    return f"{1e3 * s['median']:.2f} ms ({1e3 * s['min']:.2f}-{1e3 * s['max']:.2f})"


# -- (a) analytic ----------------------------------------------------------------------------
def plain_arccos(x: torch.Tensor, depth: int, w_std: float, b_std: float):
    """The baseline: NNGP and NTK of ``depth`` Dense+ReLU blocks and a Dense(1) readout in
    ``stax``'s NTK parametrization, closed-form arc-cosine (Cho & Saul 2009) recursion."""
    w2, b2 = w_std**2, b_std**2
    k = x @ x.T / x.shape[1] * w2 + b2
    theta = k.clone()
    for _ in range(depth):
        d = k.diagonal().sqrt()
        norm = torch.outer(d, d)
        c = (k / norm).clamp(-1.0, 1.0)
        ang = torch.arccos(c)
        k1 = norm * (torch.sin(ang) + (math.pi - ang) * c) / (2 * math.pi)
        dot = (math.pi - ang) / (2 * math.pi)
        k = k1 * w2 + b2
        theta = theta * dot * w2 + k
    return k, theta


def bench_analytic() -> dict:
    from weightlab.kernels.analytic import fc_kernels

    x = torch.randn(N_AN, D_AN, generator=torch.Generator().manual_seed(0))
    kw = {"depth": DEPTH, "w_std": W_STD, "b_std": B_STD, "dtype": torch.float32}
    ours = fc_kernels(x, **kw)
    base = plain_arccos(x, DEPTH, W_STD, B_STD)
    ref = fc_kernels(x.double(), depth=DEPTH, w_std=W_STD, b_std=B_STD)
    err = {
        "weightlab_f32_vs_f64": float((ours.ntk.double() - ref.ntk).norm() / ref.ntk.norm()),
        "plain_f32_vs_f64": float((base[1].double() - ref.ntk).norm() / ref.ntk.norm()),
        "plain_nngp_f32_vs_f64": float((base[0].double() - ref.nngp).norm() / ref.nngp.norm()),
    }
    t = _rounds(
        {
            "weightlab": lambda: fc_kernels(x, **kw),
            "plain_torch": lambda: plain_arccos(x, DEPTH, W_STD, B_STD),
        }
    )
    return {"times": {k: _stats(v) for k, v in t.items()}, "rel_err": err}


# -- (b) empirical ---------------------------------------------------------------------------
def plain_structured(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The baseline: the structured formula by hand for a ReLU MLP with one output:
    ``Σ_l (δ_l δ_lᵀ) ⊙ (h_{l-1} h_{l-1}ᵀ + 1)`` with the backprop signals written out."""
    ws = [lin.weight for lin in model.layers]
    bs = [lin.bias for lin in model.layers]
    with torch.no_grad():
        hs, pre = [x], []
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = torch.addmm(b, hs[-1], w.T)
            pre.append(z)
            if i < len(ws) - 1:
                hs.append(torch.relu(z))
        delta = torch.ones(x.shape[0], 1, dtype=x.dtype)
        k = torch.zeros(x.shape[0], x.shape[0], dtype=x.dtype)
        for i in range(len(ws) - 1, -1, -1):
            dd = delta @ delta.T
            k += dd * (hs[i] @ hs[i].T + 1.0)
            if i:
                delta = (delta @ ws[i]) * (pre[i - 1] > 0)
    return k


def jacrev_ntk(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``torch.func``: ``vmap(jacrev)`` per example, then ``J Jᵀ``."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0),)).reshape(())

    j = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    big = torch.cat([v.reshape(x.shape[0], -1) for v in j.values()], 1)
    return big @ big.T


def bench_empirical() -> dict:
    from weightlab.kernels.empirical import empirical_ntk
    from weightlab.models import build
    from weightlab.models.mlp import MLP

    model = build(MLP, WIDTHS_EMP, seed=0)
    x = torch.randn(N_EMP, WIDTHS_EMP[0], generator=torch.Generator().manual_seed(1))
    ours = empirical_ntk(model, x, dtype=torch.float32)
    ref = empirical_ntk(model.double(), x.double(), method="jacobian")
    model.float()
    err = {
        "weightlab_vs_jacobian_f64": float((ours.double() - ref).norm() / ref.norm()),
        "plain_vs_jacobian_f64": float(
            (plain_structured(model, x).double() - ref).norm() / ref.norm()
        ),
        "jacrev_vs_jacobian_f64": float((jacrev_ntk(model, x).double() - ref).norm() / ref.norm()),
    }
    t = _rounds(
        {
            "weightlab": lambda: empirical_ntk(model, x, dtype=torch.float32),
            "weightlab_f64_result": lambda: empirical_ntk(model, x),
            "plain_structured": lambda: plain_structured(model, x),
        }
    )
    tj = _rounds({"torch_func_jacrev": lambda: jacrev_ntk(model, x)}, rounds=5)
    times = {k: _stats(v) for k, v in {**t, **tj}.items()}
    return {"times": times, "rel_err": err}


# -- (c) MiniLM memory (child process) -------------------------------------------------------
def _kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise OSError(field)


def minilm_child() -> dict:
    from weightlab.data.sentences import sentences
    from weightlab.kernels.empirical import ProjectedOutput, empirical_ntk
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import load_minilm

    bert, tok = load_minilm()
    ids, mask = tok.encode(sentences(MINILM_SENTENCES, seed=0), max_length=16)
    x = pack_inputs(ids, mask)
    v = torch.randn(bert.config.hidden_size, generator=torch.Generator().manual_seed(0))
    model = ProjectedOutput(SentenceEncoder(bert), v / v.norm())
    with torch.no_grad():
        model(x[:2])
    n_params = sum(p.numel() for p in model.parameters())
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _kb("VmRSS")
    t0 = time.perf_counter()
    k = empirical_ntk(model, x, chunk=16, max_bytes=512 << 20)
    secs = time.perf_counter() - t0
    peak = _kb("VmHWM")
    eig = torch.linalg.eigvalsh(k)
    return {
        "sentences": MINILM_SENTENCES,
        "tokens": int(mask.sum()),
        "parameters": n_params,
        "seconds": secs,
        "start_rss_gib": start / 2**20,
        "peak_rss_gib": peak / 2**20,
        "peak_above_start_gib": (peak - start) / 2**20,
        "dense_jacobian_gib": MINILM_SENTENCES * n_params * 4 / 2**30,
        "symmetric_err": float((k - k.T).abs().max() / k.abs().max()),
        "min_eig_over_max": float(eig[0] / eig[-1]),
    }


def bench_minilm() -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--minilm-child"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(THREADS)},
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- neural-tangents -------------------------------------------------------------------------
def nt_python() -> str | None:
    tool = ROOT / "bench" / "nt_env.py"
    if not tool.is_file():
        return None
    r = subprocess.run([sys.executable, str(tool), "--python"], capture_output=True, text=True)
    path = r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else ""
    return path or None


def bench_nt(python: str | None) -> dict | None:
    if python is None:
        return None
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}",
        "JAX_PLATFORMS": "cpu",
    }
    cfg = {
        "rounds": ROUNDS,
        "analytic": {"n": N_AN, "d": D_AN, "depth": DEPTH, "w_std": W_STD, "b_std": B_STD},
        "empirical": {"widths": WIDTHS_EMP, "n": N_EMP},
    }
    out = subprocess.run(
        [python, str(ROOT / "bench" / "kernels_nt.py"), json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        print(f"neural-tangents run failed: {tail}")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "NOT met")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minilm-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--skip-minilm", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(THREADS)
    if a.minilm_child:
        print(json.dumps(minilm_child()))
        return
    nt = bench_nt(nt_python())
    an = bench_analytic()
    emp = bench_empirical()
    mem = None if a.skip_minilm else bench_minilm()

    at = an["times"]
    nt_an = nt["analytic"]["kernel_fn"] if nt else None
    print("(a) analytic NNGP+NTK, depth 3 ReLU, 1000x100 float32 (median (min-max))")
    print(f"    weightlab fc_kernels     {_fmt(at['weightlab'])}")
    print(f"    plain-torch arc-cosine   {_fmt(at['plain_torch'])}")
    print(f"    neural-tangents (jit)    {_fmt(nt_an)}")
    x_plain = at["weightlab"]["median"] / at["plain_torch"]["median"]
    x_nt = at["weightlab"]["median"] / nt_an["median"] if nt_an else None
    print(f"    rel. err vs float64: {an['rel_err']}")
    must_a = None if x_nt is None else x_nt <= 1.0
    goal_a = x_plain <= GOAL_AN_X
    print(
        f"    weightlab / neural-tangents = {x_nt if x_nt is None else round(x_nt, 3)}: "
        f"must (<= 1) {_verdict(must_a)}"
    )
    print(f"    weightlab / plain-torch = {x_plain:.3f}: goal (<= {GOAL_AN_X}) {_verdict(goal_a)}")

    et = emp["times"]
    print("(b) empirical NTK, MLP 200-512-512-1, 200 points, float32")
    for k in ("weightlab", "weightlab_f64_result", "plain_structured", "torch_func_jacrev"):
        print(f"    {k:<26} {_fmt(et[k])}")
    nt_emp = nt["empirical"] if nt else {}
    for k in ("structured_derivatives", "ntk_vector_products", "jacobian_contraction"):
        print(f"    neural-tangents {k:<24} {_fmt(nt_emp.get(k))}")
    print(f"    rel. err vs float64 Jacobian: {emp['rel_err']}")
    must_b = et["weightlab"]["median"] <= MUST_EMP_S
    x_emp = et["weightlab"]["median"] / et["plain_structured"]["median"]
    print(
        f"    weightlab {et['weightlab']['median']:.4f} s: must (<= {MUST_EMP_S} s) "
        f"{_verdict(must_b)}"
    )
    print(
        f"    weightlab / plain structured = {x_emp:.2f}: goal (<= {GOAL_EMP_X}) "
        f"{_verdict(x_emp <= GOAL_EMP_X)}"
    )

    must_c = None
    if mem is not None:
        must_c = mem["peak_rss_gib"] < MUST_MEM_GIB
        print("(c) MiniLM empirical NTK, 64 sentences, 1 output, chunked")
        print(f"    {mem}")
        print(
            f"    peak RSS {mem['peak_rss_gib']:.2f} GiB (above start "
            f"{mem['peak_above_start_gib']:.2f} GiB): must (< {MUST_MEM_GIB} GiB) "
            f"{_verdict(must_c)}"
        )
    out = {
        "threads": THREADS,
        "rounds": ROUNDS,
        "torch": torch.__version__,
        "analytic": an,
        "empirical": emp,
        "minilm_memory": mem,
        "neural_tangents": nt,
        "verdicts": {
            "analytic_must_vs_nt": must_a,
            "analytic_goal_vs_plain": goal_a,
            "empirical_must_0.018s": must_b,
            "empirical_goal_2x_plain": x_emp <= GOAL_EMP_X,
            "minilm_memory_must_4gib": must_c,
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
