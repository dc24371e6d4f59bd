"""Probes benchmark, CKA section (issue 20, Performance): all pairs of all-MiniLM-L6-v2's 7
hidden states (the embedding output and the 6 encoder layers), 512 sentences
(``weightlab.data.sentences``, seed 0) tokenised to 64 tokens, features as torch-cka forms
them (each example's ``(64, 384)`` output flattened: 24,576 features, padding included),
batches of 32 (16 batches). Everything is measured in the same run: medians of ``ROUNDS``
rounds (min-max), the sides' order alternating between rounds, ``THREADS`` torch threads.

(a) **End to end** (tokenised batches in, the 7 × 7 matrix out), the minibatch HSIC_u
    estimator (Nguyen et al. 2021) on both sides:
    - torch-cka 0.21: ``CKA(m, m, layers, layers).compare(loader)``: two forwards per
      batch (one per "model"), every pair's Grams recomputed;
    - weightlab: ``hidden_state_cka``: ONE forward per batch for all 7 layers, the 7 Grams
      stacked, all pairs from one matrix product;
    - the floor: the 16 forwards alone (no hooks, no CKA).
    Must: weightlab >= 2x faster than torch-cka; the matrices agree (max |diff| reported).
(b) **On the extracted features** (512 × 24,576 per layer, float32, one batch of 512):
    - the plain biased formula: centre, ``K = X Xᵀ`` per layer, all pairs as
      ``⟨K_i, K_j⟩_F / (‖K_i‖_F ‖K_j‖_F)`` (Kornblith et al. 2019) in float32;
    - weightlab's debiased CKA of all pairs (``cka_matrix``, HSIC_u, Grams in float32, HSICs
      in float64, finiteness and rounding-floor checks included).
    Must: debiased <= 3x the plain biased formula. The same two from the 7 Grams already
    formed (the estimators' own cost) are reported beside them.

Run: ``.venv/bin/python bench/probes_cka.py`` (``--quick``: 64 sentences, 2 rounds).
Results go to ``bench/results/probes_cka.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "probes_cka.json"
ROUNDS = 5
THREADS = 1  # the 2 CPU cores are shared; both sides run with the same thread count
SENTENCES, TOKENS, BATCH = 512, 64, 32
LAYERS = ["embeddings", *(f"encoder.layer.{i}" for i in range(6))]


def _setup(n: int):
    from weightlab.data.sentences import sentences
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import load_minilm

    model, tok = load_minilm()
    enc = SentenceEncoder(model).eval()
    ids, mask = tok.encode(sentences(n, seed=0), max_length=TOKENS)
    packed = pack_inputs(ids, mask)
    return enc, packed


def _clear_hooks(model: torch.nn.Module) -> None:
    for m in model.modules():  # torch-cka leaves its forward hooks on the model
        m._forward_hooks.clear()


def _torch_cka(enc, packed) -> torch.Tensor:
    import torch_cka
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(packed), batch_size=BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cka = torch_cka.CKA(
                enc, enc, "a", "b", model1_layers=LAYERS, model2_layers=LAYERS, device="cpu"
            )
            cka.compare(loader)
    finally:
        _clear_hooks(enc)
    return cka.export()["CKA"].double()


def _ours(enc, packed) -> torch.Tensor:
    from weightlab.probes.features import hidden_state_cka

    batches = [(packed[i : i + BATCH],) for i in range(0, len(packed), BATCH)]
    return hidden_state_cka(enc, batches, LAYERS, progress=False).tensor()


def _forwards(enc, packed) -> None:
    with torch.no_grad():
        for i in range(0, len(packed), BATCH):
            enc(packed[i : i + BATCH])


def _plain_biased(feats: list[torch.Tensor]) -> torch.Tensor:
    grams = []
    for x in feats:
        xc = x - x.mean(0, keepdim=True)
        grams.append(xc @ xc.T)
    return _plain_from_grams(torch.stack(grams))


def _plain_from_grams(grams: torch.Tensor) -> torch.Tensor:
    k = grams.reshape(grams.shape[0], -1)  # Grams of centred features are centred
    h = k @ k.T
    d = h.diagonal().sqrt()
    return h / d[:, None] / d[None, :]


def _ours_debiased(feats: dict[str, torch.Tensor]) -> torch.Tensor:
    from weightlab.probes.cka import cka_matrix

    return cka_matrix(feats, estimator="debiased").tensor()


def _ours_from_grams(grams: torch.Tensor) -> torch.Tensor:
    from weightlab.probes.cka import hsic_pairs

    h = hsic_pairs(grams, debiased=True)
    d = h.diagonal().sqrt()
    return h / d[:, None] / d[None, :]


def _time(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def _stat(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "all": xs}


def run(quiet: bool = False, *, quick: bool = False, threads: int = THREADS) -> dict:
    """Measure (a) and (b); returns the table's numbers (seconds) and the checks."""
    import torch_cka  # noqa: F401  (import cost outside the timings)

    from weightlab.probes.cka import linear_gram
    from weightlab.probes.features import hidden_states

    load_before = os.getloadavg()[0]
    torch.set_num_threads(threads)
    n, rounds = (64, 2) if quick else (SENTENCES, ROUNDS)
    enc, packed = _setup(n)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    # (a) end to end
    times: dict[str, list[float]] = {"torch_cka": [], "weightlab": [], "forwards": []}
    ref = ours = None
    _forwards(enc, packed[:BATCH])  # warm-up
    sides = [
        ("torch_cka", lambda: _torch_cka(enc, packed)),
        ("weightlab", lambda: _ours(enc, packed)),
        ("forwards", lambda: _forwards(enc, packed)),
    ]
    for r in range(rounds):
        for name, fn in sides if r % 2 == 0 else sides[::-1]:
            t, out = _time(fn)
            times[name].append(t)
            if name == "torch_cka":
                ref = out
            elif name == "weightlab":
                ours = out
            say(f"round {r} {name}: {t:.2f} s")
    diff = float((ref - ours).abs().max())

    # (b) on the extracted features
    hs = hidden_states(enc, [(packed[i : i + BATCH],) for i in range(0, n, BATCH)], LAYERS)
    feats = dict(hs.features)
    flist = [feats[k] for k in LAYERS]
    grams = torch.stack([linear_gram(x) for x in flist])
    ftimes: dict[str, list[float]] = {
        "plain_biased": [],
        "debiased": [],
        "plain_biased_grams": [],
        "debiased_grams": [],
    }
    fsides = [
        ("plain_biased", lambda: _plain_biased(flist)),
        ("debiased", lambda: _ours_debiased(feats)),
        ("plain_biased_grams", lambda: _plain_from_grams(grams)),
        ("debiased_grams", lambda: _ours_from_grams(grams)),
    ]
    outs = {}
    for r in range(rounds):
        for name, fn in fsides if r % 2 == 0 else fsides[::-1]:
            t, outs[name] = _time(fn)
            ftimes[name].append(t)
        say(
            f"round {r} features: "
            + ", ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in ftimes.items())
        )
    med = {k: statistics.median(v) for k, v in {**times, **ftimes}.items()}
    result = {
        "setup": {
            "sentences": n,
            "tokens": TOKENS,
            "batch": BATCH,
            "layers": LAYERS,
            "features": "flattened (64 x 384 per example, padding included)",
            "threads": threads,
            "rounds": rounds,
            "torch": torch.__version__,
            "load_before": load_before,
        },
        "end_to_end_s": {k: _stat(v) for k, v in times.items()},
        "features_s": {k: _stat(v) for k, v in ftimes.items()},
        "speedup_vs_torch_cka": med["torch_cka"] / med["weightlab"],
        "must_end_to_end_2x": med["torch_cka"] / med["weightlab"] >= 2.0,
        "debiased_over_plain_biased": med["debiased"] / med["plain_biased"],
        "debiased_over_plain_biased_grams": med["debiased_grams"] / med["plain_biased_grams"],
        "must_debiased_3x": med["debiased"] / med["plain_biased"] <= 3.0,
        "max_abs_diff_vs_torch_cka": diff,
        "full_batch_debiased_minus_biased_max": float(
            (outs["debiased"] - outs["plain_biased"].double()).abs().max()
        ),
        "load_after": os.getloadavg()[0],
    }
    return result


def _table(res: dict) -> str:
    def row(name, st, unit=1.0, fmt="{:.2f}"):
        m, lo, hi = (fmt.format(st[k] * unit) for k in ("median", "min", "max"))
        return f"  {name:<44} {m:>10}  ({lo}-{hi})"

    e, f = res["end_to_end_s"], res["features_s"]
    lines = [
        f"CKA bench: MiniLM, {res['setup']['sentences']} sentences x {TOKENS} tokens, 7 hidden "
        f"states, batches of {BATCH}, {res['setup']['threads']} thread(s), "
        f"load {res['setup']['load_before']:.1f}",
        "(a) end to end, s (median (min-max))",
        row("torch-cka compare (2 forwards/batch)", e["torch_cka"]),
        row("weightlab hidden_state_cka (1 forward/batch)", e["weightlab"]),
        row("floor: the forwards alone", e["forwards"]),
        f"  speedup vs torch-cka: {res['speedup_vs_torch_cka']:.2f}x (must >= 2x: "
        f"{'met' if res['must_end_to_end_2x'] else 'NOT met'}); max |diff| "
        f"{res['max_abs_diff_vs_torch_cka']:.2e}",
        f"(b) all 49 pairs on the extracted features (n = {res['setup']['sentences']} in one "
        "batch), ms",
        row("plain biased formula (float32)", f["plain_biased"], 1e3, "{:.1f}"),
        row("weightlab debiased cka_matrix", f["debiased"], 1e3, "{:.1f}"),
        row("  from the 7 Grams: plain biased", f["plain_biased_grams"], 1e3, "{:.1f}"),
        row("  from the 7 Grams: weightlab debiased", f["debiased_grams"], 1e3, "{:.1f}"),
        f"  debiased / plain biased: {res['debiased_over_plain_biased']:.2f}x (must <= 3x: "
        f"{'met' if res['must_debiased_3x'] else 'NOT met'}); from Grams "
        f"{res['debiased_over_plain_biased_grams']:.2f}x",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 sentences, 2 rounds")
    ap.add_argument("--threads", type=int, default=THREADS)
    args = ap.parse_args()
    res = run(quick=args.quick, threads=args.threads)
    print(_table(res))
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
