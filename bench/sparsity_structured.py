"""Structured prune benchmark: weightlab's ``prune_structured`` vs Torch-Pruning on the
residual CNN (stem + 8 basic blocks, 64 channels, BatchNorm, 3x32x32 input), removing
50% of the block-internal channels.

End to end on both sides: ours scores, walks the architecture and builds the smaller
model (the original is left intact); Torch-Pruning builds its dependency graph (a traced
forward pass), configures ``MagnitudeImportance(p=1, normalizer=None,
group_reduction="first")`` with the classifier and stem ignored (the agreement
configuration, tests/test_torch_pruning_parity.py), and prunes. Torch-Pruning prunes in
place, so each of its repetitions gets a deep copy made before the clock starts.
``REPS`` repetitions per round, ``ROUNDS`` rounds alternating which side goes first;
the per-prune time is the round's mean, the reported figure the median over rounds.
Must: ours ≤ 1.5× Torch-Pruning.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from weightlab.models import build
from weightlab.models.convnets import ResidualCNN
from weightlab.sparsity.structured import prune_structured, structured_report

REPS = 50
ROUNDS = 5
RATIO = 0.5
MUST = 1.5


def _tp_prune(tp, model: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    importance = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=importance,
        pruning_ratio=RATIO,
        ignored_layers=[model.classifier, model.stem],
    )
    pruner.step()
    return model


def main() -> None:
    try:
        import torch_pruning as tp
    except ImportError:
        print("skipped: torch_pruning is not installed (pip install -e '.[test]')")
        return
    torch.set_num_threads(1)
    model = build(ResidualCNN, seed=0).eval()
    example = torch.randn(1, 3, 32, 32)

    # agreement first: same parameter count and outputs
    ours = prune_structured(model, RATIO).model.eval()
    theirs = _tp_prune(tp, copy.deepcopy(model), example).eval()
    with torch.no_grad():
        diff = (ours(example) - theirs(example)).abs().max().item()
    rep = structured_report(model, ours, example)
    print(
        f"residual CNN (8 blocks, 64 ch, 3x32x32), {RATIO:.0%} of block-internal channels: "
        f"params {rep['params_before']:,} -> {rep['params_after']:,} "
        f"({rep['params_ratio']:.3f}x), FLOPs {rep['flops_before'] / 1e6:.1f}M -> "
        f"{rep['flops_after'] / 1e6:.1f}M ({rep['flops_ratio']:.3f}x); "
        f"max |ours - TP| output {diff:.1e}"
    )

    def time_ours() -> float:
        t0 = time.perf_counter()
        for _ in range(REPS):
            prune_structured(model, RATIO)
        return (time.perf_counter() - t0) / REPS

    def time_tp() -> float:
        copies = [copy.deepcopy(model) for _ in range(REPS)]
        t0 = time.perf_counter()
        for c in copies:
            _tp_prune(tp, c, example)
        return (time.perf_counter() - t0) / REPS

    time_ours(), time_tp()  # warm-up
    ours_t, tp_t = [], []
    for r in range(ROUNDS):
        if r % 2 == 0:
            ours_t.append(time_ours())
            tp_t.append(time_tp())
        else:
            tp_t.append(time_tp())
            ours_t.append(time_ours())
    mo, mt = statistics.median(ours_t), statistics.median(tp_t)
    ratio = mo / mt
    print(f"{'':28s}{'median ms/prune':>16s}  rounds (ms)")
    print(
        f"{'weightlab prune_structured':28s}{1e3 * mo:16.2f}  {[round(1e3 * t, 2) for t in ours_t]}"
    )
    print(
        f"{'Torch-Pruning (graph+prune)':28s}{1e3 * mt:16.2f}  {[round(1e3 * t, 2) for t in tp_t]}"
    )
    verdict = "PASS" if ratio <= MUST else "FAIL"
    print(f"ratio ours/TP = {ratio:.3f} (must <= {MUST}): {verdict}")
    print(
        f"({REPS} repetitions x {ROUNDS} interleaved rounds, 1 thread, torch {torch.__version__}, "
        f"torch_pruning {tp.__version__})"
    )


if __name__ == "__main__":
    main()
