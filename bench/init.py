"""Initializer-registry benchmark (:mod:`weightlab.init.registry`), one CPU thread, three
comparisons; every ratio comes from the same run, every figure is the median of ``ROUNDS``
interleaved rounds (the two sides' order alternates between rounds).

(a) A 1B-parameter-shaped model (``BLOCKS`` blocks of ``Linear(D, 4D)`` and ``Linear(4D,
    D)``, D = 2048: 1.007 B parameters) built on the meta device; one layer is materialized
    (``to_empty``) and initialized with a registry scheme through a selector naming it.
    Compared with the same layer built alone (meta, ``to_empty``, the same scheme): time,
    and peak resident memory above the start (``VmHWM`` reset through
    ``/proc/self/clear_refs``). Must: both <= 1.5x. ``torch.nn.init``'s in-place draw on the
    lone layer is shown for reference.
(b) A data-free scheme on all-MiniLM-L6-v2 (every Linear: 37 weights and their biases):
    ``initialize`` with ``normal``, ``uniform`` and ``orthogonal`` vs the matching
    ``torch.nn.init`` calls (``normal_``, ``uniform_``, ``orthogonal_``, biases ``zeros_``)
    in a plain loop over the same Linears with one generator. Must: each <= 1.5x. Every other
    registered data-free scheme reports its time relative to ``normal``.
(c) LSUV on MiniLM's 36 encoder Linears (``encoder_linears``), a batch of 8 sentences x 16
    tokens. Counted: model forward calls (a pre-hook) vs LSUV's iterations; the largest
    iteration count of a layer. Time vs that many full forward passes of the same batch.
    Musts: <= 1 forward pass per iteration, <= 10 iterations per layer, time <= 1.2x.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from weightlab.core.selectors import Selector
from weightlab.errors import ConfigError
from weightlab.init.registry import get_initializer, initialize, registered_schemes
from weightlab.seeding import generator

ROUNDS = 5
D, BLOCKS = 2048, 30
LAYER = "12.0"  # the materialized layer of (a): block 12's Linear(D, 4D)
MUST_A, MUST_B, MUST_C = 1.5, 1.5, 1.2
MAX_ITER = 10
SENTENCES = [
    "the cat sat on the mat",
    "weights are drawn from an explicit generator",
    "layer sequential unit variance needs a batch of data",
    "a sinusoidal network fits a high frequency signal",
    "pruning at initialization keeps a sparse subnetwork",
    "the learning rate transfers across widths",
    "orthogonal matrices preserve the norm of the signal",
    "noise is all you need",
]


def _rounds(sides: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> dict:
    """Every side's time in each of ``rounds`` interleaved rounds (order alternating)."""
    out: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for k in names:  # warm: lazy imports, first-call allocations
        sides[k]()
    for r in range(rounds):
        for k in names if r % 2 == 0 else names[::-1]:
            out[k].append(sides[k]())
    return out


def _median_rounds(sides: dict[str, Callable[[], float]], rounds: int = ROUNDS) -> dict:
    return {k: statistics.median(v) for k, v in _rounds(sides, rounds).items()}


def _ms(times: list[float]) -> str:
    """``median (min-max)`` in ms."""
    return f"{1e3 * statistics.median(times):.1f} ({1e3 * min(times):.1f}-{1e3 * max(times):.1f})"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- (a) one layer of a 1B-parameter-shaped model on the meta device -----------------------
def _big_model() -> nn.Module:
    with torch.device("meta"):
        return nn.Sequential(
            *[
                nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
                for _ in range(BLOCKS)
            ]
        )


def _lone_layer() -> nn.Module:
    with torch.device("meta"):
        return nn.Linear(D, 4 * D)


def _kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise OSError(field)


def _peak_kb(fn: Callable[[], object]) -> tuple[float, int]:
    """``(seconds, peak RSS above the start in kB)`` of ``fn()`` (VmHWM reset first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _kb("VmRSS")
    t = _timed(fn)
    return t, _kb("VmHWM") - start


def bench_meta(scheme: str = "normal") -> bool:
    big = _big_model()
    n_params = sum(p.numel() for p in big.parameters())

    def in_big():
        blk, idx = LAYER.split(".")
        layer = big[int(blk)][int(idx)].to_empty(device="cpu")
        big[int(blk)][int(idx)] = layer
        initialize(big, scheme, seed=0, selector=Selector(include=(LAYER,)))
        big[int(blk)][int(idx)] = layer.to("meta")  # drop the storage again

    def alone():
        layer = _lone_layer().to_empty(device="cpu")
        initialize(layer, scheme, seed=0)

    def torch_alone():
        layer = _lone_layer().to_empty(device="cpu")
        with torch.no_grad():
            nn.init.normal_(layer.weight, std=0.02, generator=generator(0))
            nn.init.zeros_(layer.bias)

    res: dict[str, list[tuple[float, int]]] = {"big": [], "alone": [], "torch": []}
    sides = {"big": in_big, "alone": alone, "torch": torch_alone}
    for fn in sides.values():  # warm: lazy imports, first-call allocations
        fn()
    for r in range(ROUNDS):
        for k in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            res[k].append(_peak_kb(sides[k]))
    t = {k: statistics.median(x[0] for x in v) for k, v in res.items()}
    m = {k: statistics.median(x[1] for x in v) for k, v in res.items()}
    spread = {k: _ms([x[0] for x in v]) for k, v in res.items()}
    rt, rm = t["big"] / t["alone"], m["big"] / max(m["alone"], 1)
    ok = rt <= MUST_A and rm <= MUST_A
    print(
        f"(a) {n_params / 1e9:.3f} B-parameter model on meta, layer {LAYER} "
        f"Linear({D}, {4 * D}) materialized + initialize({scheme!r})"
    )
    print(f"{'':>22} {'time ms, median (min-max)':>28} {'peak RSS (MB)':>14}")
    for k, label in (
        ("big", "in the 1B model"),
        ("alone", "layer built alone"),
        ("torch", "nn.init alone"),
    ):
        print(f"{label:>22} {spread[k]:>28} {m[k] / 1024:>14.1f}")
    print(
        f"    ratio in-model/alone: time {rt:.2f}x, memory {rm:.2f}x; must <= {MUST_A}: "
        f"{'met' if ok else 'NOT met'}  (registry/nn.init on the lone layer: time "
        f"{t['alone'] / t['torch']:.2f}x, memory {m['alone'] / max(m['torch'], 1):.2f}x, "
        "reported only)"
    )
    return ok


# -- (b) data-free schemes on MiniLM --------------------------------------------------------
def _linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


TORCH_EQUIV: dict[str, Callable[[torch.Tensor, torch.Generator], None]] = {
    "normal": lambda w, g: nn.init.normal_(w, std=0.02, generator=g),
    "uniform": lambda w, g: nn.init.uniform_(w, -0.05, 0.05, generator=g),
    "orthogonal": lambda w, g: nn.init.orthogonal_(w, generator=g),
}


def bench_minilm_schemes(model: nn.Module) -> bool:
    lins = _linears(model)

    def plain(name):
        def run():
            g = generator(0)
            with torch.no_grad():
                for lin in lins:
                    TORCH_EQUIV[name](lin.weight, g)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)

        return run

    print(
        f"(b) MiniLM, {len(lins)} Linears ({sum(m.weight.numel() for m in lins) / 1e6:.1f} M weights)"
    )
    print(
        f"{'scheme':>20} {'initialize ms, median (min-max)':>32} "
        f"{'nn.init ms, median (min-max)':>30} {'ratio':>7}  must"
    )
    ok = True
    normal_t = None
    for name in TORCH_EQUIV:
        runs = _rounds(
            {
                "reg": lambda name=name: _timed(lambda: initialize(model, name, seed=0)),
                "torch": lambda name=name: _timed(plain(name)),
            }
        )
        t = {k: statistics.median(v) for k, v in runs.items()}
        ratio = t["reg"] / t["torch"]
        ok &= ratio <= MUST_B
        normal_t = t["reg"] if name == "normal" else normal_t
        print(
            f"{name:>20} {_ms(runs['reg']):>32} {_ms(runs['torch']):>30} {ratio:>6.2f}x  "
            f"<= {MUST_B}: {'met' if ratio <= MUST_B else 'NOT met'}"
        )
    others = {}
    for name, cls in sorted(registered_schemes().items()):
        if name in TORCH_EQUIV or getattr(cls, "needs", ()):
            continue
        try:
            get_initializer(name)  # MiniLM's activation is GELU (for `critical`)
            others[name] = _median_rounds(
                {
                    "reg": lambda name=name: _timed(
                        lambda: initialize(model, name, seed=0, activation="gelu")
                    )
                }
            )["reg"]
        except ConfigError as e:
            print(f"{name:>20} skipped: {e}")
    for name, t in others.items():
        print(
            f"{name:>20} {1e3 * t:>16.1f} {'':>13} {t / normal_t:>6.2f}x of normal (reported only)"
        )
    return ok


# -- (c) LSUV on MiniLM --------------------------------------------------------------------
def bench_lsuv(model: nn.Module, tokenizer) -> bool:
    from weightlab.init.lsuv import LSUV
    from weightlab.models.minilm import encoder_linears

    ids, mask = tokenizer.encode(SENTENCES, max_length=16)
    data = {"input_ids": ids, "attention_mask": mask}
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    stats: dict[str, int] = {}

    def lsuv():
        calls[0] = 0
        init = LSUV(max_iter=MAX_ITER)

        def go():
            initialize(model, init, seed=0, data=data, selector=encoder_linears())

        t = _timed(go)
        stats.update(
            passes=calls[0],
            iterations=sum(r.iterations for r in init.report),
            max_iter=max(r.iterations for r in init.report),
            layers=len(init.report),
            converged=sum(r.converged for r in init.report),
        )
        return t

    lsuv()  # warm, and the pass count for the forward side
    n_pass = stats["passes"]

    def forwards():
        with torch.no_grad():
            return _timed(lambda: [model(**data) for _ in range(n_pass)])

    runs = _rounds({"lsuv": lsuv, "fwd": forwards})
    t = {k: statistics.median(v) for k, v in runs.items()}
    handle.remove()
    per_iter = stats["passes"] / stats["iterations"]
    ratio = t["lsuv"] / t["fwd"]
    musts = [
        (f"forward passes per iteration {per_iter:.2f}", per_iter <= 1),
        (f"iterations per layer at most {stats['max_iter']}", stats["max_iter"] <= MAX_ITER),
        (f"time {ratio:.2f}x of {n_pass} full forward passes", ratio <= MUST_C),
    ]
    print(
        f"(c) LSUV on MiniLM's {stats['layers']} encoder Linears, batch {tuple(ids.shape)}: "
        f"{stats['passes']} forward calls for {stats['iterations']} iterations, "
        f"{stats['converged']}/{stats['layers']} layers within tol; "
        f"LSUV {_ms(runs['lsuv'])} ms vs {n_pass} forwards {_ms(runs['fwd'])} ms"
    )
    for label, ok in musts:
        print(f"    {label}: {'met' if ok else 'NOT met'}")
    return all(ok for _, ok in musts)


def main() -> None:
    from weightlab.models.minilm import load_minilm

    torch.set_num_threads(1)
    ok_a = bench_meta()
    model, tok = load_minilm()
    ok_b = bench_minilm_schemes(model)
    ok_c = bench_lsuv(model, tok)
    print(
        f"medians of {ROUNDS} interleaved rounds, 1 thread; musts: (a) "
        f"{'met' if ok_a else 'NOT met'}, (b) {'met' if ok_b else 'NOT met'}, "
        f"(c) {'met' if ok_c else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
