"""Scoring benchmark: SNIP, GraSP and SynFlow on MiniLM's 36 attention and FFN linears
(``weightlab.models.minilm.encoder_linears``; the pooler is excluded, it gets no gradient
under mean pooling), against a straightforward per-layer loop.

Loss: cross-entropy of a seeded linear head (384 -> 4) on the mean-pooled output, on
templated sentences joined to fill the sequence (issue setting: batch 32 x 64 tokens).
GraSP runs with eager attention on both sides (its double backward fails under CPU SDPA).

- per pass: weightlab's ``snip_scores`` / ``grasp_scores`` / ``SynFlowScorer`` (one
  call scores all 36 weights) vs the per-layer loop: one forward, then one
  ``autograd.grad`` per weight (GraSP: per weight, its gradient then its Hessian-gradient
  product). The SynFlow loop keeps a float64 copy of the model between calls and
  rewrites ``|θ|`` into it on every call; ``SynFlowScorer`` does the same with its
  workspace. Also shown, not judged: a plain single-pass torch floor (one
  ``autograd.grad`` over all 36 weights), and one-shot ``synflow_scores``, which
  allocates the float64 state afresh on every call. Must: weightlab <= 1.1x the loop.
- timed apart: global allocation of the SNIP scores at 10% density (weightlab's
  ``allocate`` vs a plain ``torch.cat`` + ``kthvalue`` threshold), and SynFlow's iterative
  rounds (``synflow_prune`` vs a plain loop: score the masked |θ| model, keep the top
  ``density^(k/R)`` globally). Must: <= 1.0x.

Each comparison: medians of ``ROUNDS`` interleaved rounds (the order alternates).
``SCORING_ONLY`` (environment, comma-separated label prefixes such as ``synflow 1``) runs
only the matching comparisons. ``SCORING_SCALE`` (environment) picks the size: ``issue`` (default, the issue's),
``issue-10`` (the issue's batch, SynFlow 10 rounds instead of 100), ``quick``
(batch 2 x 32 tokens, SynFlow 5 rounds at 16 tokens) or ``check`` (batch 2 x 16, 2 rounds
at 8 tokens). The issue's size needs well over an hour on the shared 2-core CPU, almost
all of it in the per-layer loop (36 backward passes per score, GraSP's doubly so).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from torch import nn

from weightlab.data.sentences import sentences
from weightlab.models.bert import mean_pool
from weightlab.models.minilm import encoder_linears, load_minilm
from weightlab.seeding import generator
from weightlab.sparsity.saliency import (
    SynFlowScorer,
    allocate,
    grasp_scores,
    snip_scores,
    synflow_prune,
    synflow_scores,
)

ROUNDS = 5
DENSITY = 0.1
MUST_PASS = 1.1
MUST_APART = 1.0
SCALES = {
    "issue": {"batch": 32, "tokens": 64, "synflow_rounds": 100, "synflow_tokens": 64},
    "issue-10": {"batch": 32, "tokens": 64, "synflow_rounds": 10, "synflow_tokens": 64},
    "quick": {"batch": 2, "tokens": 32, "synflow_rounds": 5, "synflow_tokens": 16},
    "check": {"batch": 2, "tokens": 16, "synflow_rounds": 2, "synflow_tokens": 8},
}


def _texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts, each several templated sentences joined (long enough for 64 tokens)."""
    parts = sentences(6 * n, seed)
    return [" ".join(parts[6 * i : 6 * i + 6]) for i in range(n)]


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _interleaved(a, b, rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    """Each side's time in every round; the order alternates between rounds."""
    ta, tb = [], []
    for r in range(rounds):
        if r % 2:
            tb.append(_timed(b))
            ta.append(_timed(a))
        else:
            ta.append(_timed(a))
            tb.append(_timed(b))
    return ta, tb


def _spread(times: list[float]) -> str:
    return f"{min(times):.3f}-{max(times):.3f}"


def main() -> None:
    scale = os.environ.get("SCORING_SCALE", "issue")
    cfg = SCALES[scale]
    model, tok = load_minilm()
    sel = encoder_linears()
    picked = sel(model)
    names = list(picked)
    weights = [model.get_parameter(n) for n in names]
    ids, mask = tok.encode(_texts(cfg["batch"]), cfg["tokens"])
    head = nn.Linear(model.config.hidden_size, 4)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator(0)) * 0.05)
        head.bias.zero_()
    y = torch.arange(cfg["batch"]) % 4
    batch = (ids, mask, y)

    def loss(m, b):
        return nn.functional.cross_entropy(head(m.embed(b[0], b[1])), b[2])

    print(
        f"MiniLM, {len(names)} linears, batch {cfg['batch']} x {cfg['tokens']} tokens "
        f"(scale {scale!r}), {torch.get_num_threads()} threads, medians of {ROUNDS} rounds"
    )

    # -- references: a straightforward per-layer loop ------------------------------------
    def loop_snip():
        out = loss(model, batch)
        return {
            n: (w * torch.autograd.grad(out, [w], retain_graph=True)[0]).abs().detach()
            for n, w in zip(names, weights, strict=True)
        }

    def floor_snip():
        out = loss(model, batch)
        grads = torch.autograd.grad(out, weights)
        return {n: (w * g).abs() for n, w, g in zip(names, weights, grads, strict=True)}

    def loop_grasp():
        out = loss(model, batch)
        scores = {}
        for n, w in zip(names, weights, strict=True):
            (g,) = torch.autograd.grad(out, [w], create_graph=True, retain_graph=True)
            (hg,) = torch.autograd.grad((g * g.detach()).sum(), [w], retain_graph=True)
            scores[n] = (w * hg).detach()
        return scores

    def floor_grasp():
        out = loss(model, batch)
        grads = torch.autograd.grad(out, weights, create_graph=True)
        z = sum((g * g.detach()).sum() for g in grads)
        hgs = torch.autograd.grad(z, weights)
        return {n: (w * h).detach() for n, w, h in zip(names, weights, hgs, strict=True)}

    syn_x = torch.zeros(1, cfg["synflow_tokens"], model.config.hidden_size)

    def fwd(m, h):
        return mean_pool(m.encoder(h, None), None)

    abs_model = None

    def loop_synflow_scores(masks=None):
        nonlocal abs_model
        import copy

        if abs_model is None:
            abs_model = copy.deepcopy(model).double().eval()
        with torch.no_grad():
            for (_, p), (_, q) in zip(
                model.named_parameters(), abs_model.named_parameters(), strict=True
            ):
                q.copy_(p.abs())
            if masks is not None:
                for n in names:
                    abs_model.get_parameter(n).mul_(masks[n])
        ws = [abs_model.get_parameter(n) for n in names]
        r = fwd(abs_model, torch.ones_like(syn_x, dtype=torch.float64)).sum()
        grads = torch.autograd.grad(r, ws)
        return {n: (w * g).abs().detach() for n, w, g in zip(names, ws, grads, strict=True)}

    rows = []

    only = [w.strip().lower() for w in os.environ.get("SCORING_ONLY", "").split(",") if w.strip()]

    def compare(label, ours, ref, must, floor=None):
        if only and not any(label.lower().startswith(w) for w in only):
            return
        ours(), ref()  # warm-up
        runs_ours, runs_ref = _interleaved(ours, ref)
        t_ours, t_ref = statistics.median(runs_ours), statistics.median(runs_ref)
        t_floor = statistics.median(_timed(floor) for _ in range(ROUNDS)) if floor else None
        ratio = t_ours / t_ref
        ok = None if must is None else ratio <= must
        rows.append((label, t_ours, t_ref, t_floor, ratio, must, ok))
        fl = f", floor {t_floor:.3f} s ({t_ours / t_floor:.2f}x)" if t_floor else ""
        verdict = (
            "reported only" if must is None else f"must <= {must}: " + ("met" if ok else "NOT met")
        )
        print(
            f"{label:<26} weightlab {t_ours:8.3f} s ({_spread(runs_ours)})  "
            f"loop {t_ref:8.3f} s ({_spread(runs_ref)})  "
            f"ratio {ratio:.3f} ({verdict}){fl}",
            flush=True,
        )

    model.set_attention("sdpa")
    compare(
        "SNIP pass",
        lambda: snip_scores(model, batch, loss=loss, selector=sel),
        loop_snip,
        MUST_PASS,
        floor_snip,
    )
    model.set_attention("eager")
    compare(
        "GraSP pass (eager)",
        lambda: grasp_scores(model, batch, loss=loss, selector=sel),
        loop_grasp,
        MUST_PASS,
        floor_grasp,
    )
    model.set_attention("sdpa")
    scorer = SynFlowScorer(model, syn_x, forward=fwd, selector=sel)
    compare("SynFlow pass", scorer, loop_synflow_scores, MUST_PASS)
    compare(
        "SynFlow pass, one-shot",
        lambda: synflow_scores(model, syn_x, forward=fwd, selector=sel),
        loop_synflow_scores,
        None,
    )
    snip = snip_scores(model, batch, loss=loss, selector=sel)

    def ref_global(scores=snip, density=DENSITY, prev=None):
        flat = torch.cat([s.flatten() for s in scores.values()])
        total = flat.numel()
        keep = int(density * total + 0.5)
        if prev is not None:
            flat = torch.where(torch.cat([m.flatten() for m in prev.values()]), flat, -1.0)
        thr = torch.kthvalue(flat, total - keep + 1).values
        return {n: s >= thr for n, s in scores.items()}

    compare(
        "global allocation 10%",
        lambda: allocate(snip, DENSITY, "global"),
        ref_global,
        MUST_APART,
    )
    rounds = cfg["synflow_rounds"]

    def ref_synflow_prune():
        masks = None
        for k in range(1, rounds + 1):
            scores = loop_synflow_scores(masks)
            masks = ref_global(scores, DENSITY ** (k / rounds), masks)
        return masks

    compare(
        f"SynFlow {rounds} rounds",
        lambda: synflow_prune(model, syn_x, DENSITY, rounds, forward=fwd, selector=sel),
        ref_synflow_prune,
        MUST_APART,
    )
    print("\n| comparison | weightlab (s) | per-layer loop (s) | floor (s) | ratio | must |")
    print("|---|---|---|---|---|---|")
    for label, a, b, f, ratio, must, ok in rows:
        fl = f"{f:.3f}" if f else "-"
        verdict = "reported only" if must is None else f"<= {must} {'met' if ok else 'NOT met'}"
        print(f"| {label} | {a:.3f} | {b:.3f} | {fl} | {ratio:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
