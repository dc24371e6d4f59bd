"""neural-tangents side of ``bench/kernels.py`` (run by the ``.nt-env`` interpreter that
``python bench/nt_env.py --python`` prints; jax 0.4.23, neural-tangents 0.6.5, CPU).

Argument: a JSON config (rounds, analytic and empirical shapes) from ``bench/kernels.py``.
Prints one JSON line: median/min/max seconds of (a) the jitted ``stax`` ``kernel_fn``
(NNGP + NTK) and (b) ``nt.empirical_ntk_fn`` with each of its three implementations, every
call warm (compiled) and finished (``block_until_ready``), rounds interleaved.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import neural_tangents as nt
import numpy as np
from neural_tangents import stax

jax.config.update("jax_enable_x64", False)


def _rounds(sides: dict, rounds: int) -> dict:
    for fn in sides.values():
        jax.block_until_ready(fn())
    out = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            jax.block_until_ready(sides[k]())
            out[k].append(time.perf_counter() - t0)
    return {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in out.items()
    }


def analytic(cfg: dict, rounds: int) -> dict:
    w, b = cfg["w_std"], cfg["b_std"]
    layers = []
    for _ in range(cfg["depth"]):
        layers += [stax.Dense(512, W_std=w, b_std=b), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w, b_std=b))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((cfg["n"], cfg["d"]), np.float32))
    kf = jax.jit(kernel_fn, static_argnames="get")
    return _rounds({"kernel_fn": lambda: kf(x, None, get=("nngp", "ntk"))}, rounds)


def empirical(cfg: dict, rounds: int) -> dict:
    widths = cfg["widths"]
    layers = []
    for h in widths[1:-1]:
        layers += [stax.Dense(h), stax.Relu()]
    init_fn, apply_fn, _ = stax.serial(*layers, stax.Dense(widths[-1]))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((cfg["n"], widths[0]), np.float32))
    _, params = init_fn(jax.random.PRNGKey(0), x.shape)
    impls = {
        "structured_derivatives": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
        "ntk_vector_products": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
        "jacobian_contraction": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    }
    sides = {}
    for name, impl in impls.items():
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), implementation=impl))
        sides[name] = lambda fn=fn: fn(x, None, params)
    res = _rounds(sides, max(3, rounds // 3))
    k = {n: np.asarray(s()) for n, s in sides.items()}
    ref = k["jacobian_contraction"]
    for n in k:
        res[n]["rel_diff_vs_jacobian"] = float(np.linalg.norm(k[n] - ref) / np.linalg.norm(ref))
    return res


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out = {
        "jax": jax.__version__,
        "neural_tangents": getattr(nt, "__version__", "?"),
        "analytic": analytic(cfg["analytic"], cfg["rounds"]),
        "empirical": empirical(cfg["empirical"], cfg["rounds"]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
