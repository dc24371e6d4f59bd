"""Agreement with Torch-Pruning (a test extra): the same kept channels and the same
outputs (eval mode, to 1e-6) on a small CNN with BatchNorm and on the benchmark's
residual CNN, with ``MagnitudeImportance(p=1, normalizer=None, group_reduction="first")``
(L1 of the group's first layer; the default reduction ranks other channels)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.models import build
from weightlab.models.convnets import ResidualCNN, SmallCNN
from weightlab.seeding import generator
from weightlab.sparsity.structured import prune_structured

pytestmark = pytest.mark.usefixtures("one_thread")
tp = pytest.importorskip("torch_pruning")


def torch_pruning_prune(model: nn.Module, example: torch.Tensor, ratio: float, ignored):
    """Prune ``model`` in place with Torch-Pruning; return ``{conv name: removed indices}``."""
    importance = tp.importance.MagnitudeImportance(p=1, normalizer=None, group_reduction="first")
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored
    )
    names = {m: n for n, m in model.named_modules()}
    removed = {}
    for group in pruner.step(interactive=True):
        dep, idxs = group[0]
        removed[names[dep.target.module]] = sorted(int(i) for i in idxs)
        group.prune()
    return removed


def _train_norm_stats(model: nn.Module, shape) -> None:
    model.train()
    with torch.no_grad():
        for s in range(3):
            model(torch.randn(*shape, generator=generator(100 + s)) * (s + 1))
    model.eval()


@pytest.mark.parametrize(
    ("make", "ignore_stem", "ratio"),
    [
        (lambda: build(SmallCNN, channels=(16, 32), seed=0), False, 0.5),
        (lambda: build(SmallCNN, channels=(12, 20), seed=1), False, 0.3),
        (lambda: build(ResidualCNN, seed=2), True, 0.5),
    ],
    ids=["small_cnn_0.5", "small_cnn_0.3", "residual_cnn_0.5"],
)
def test_same_kept_channels_and_outputs_as_torch_pruning(make, ignore_stem, ratio):
    model = make()
    _train_norm_stats(model, (4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32, generator=generator(9))
    ours = prune_structured(model, ratio)
    theirs = copy.deepcopy(model)
    ignored = [theirs.classifier] + ([theirs.stem] if ignore_stem else [])
    removed = torch_pruning_prune(theirs, x[:1], ratio, ignored)
    assert set(removed) == set(ours.kept)
    for name, idx in removed.items():
        n = model.get_submodule(name).weight.shape[0]
        assert ours.kept[name].tolist() == sorted(set(range(n)) - set(idx)), name
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.model.eval()(x), theirs(x), atol=1e-6, rtol=0)
    assert sum(p.numel() for p in ours.model.parameters()) == sum(
        p.numel() for p in theirs.parameters()
    )
