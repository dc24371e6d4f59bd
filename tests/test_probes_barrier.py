"""The linear-interpolation loss barrier: a hand-computed case, zero for a convex loss and
for identical models, and zero after aligning a permuted copy."""

import pytest
import torch

from weightlab.data.task import Split
from weightlab.errors import ConfigError, DataError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.probes.barrier import loss_barrier
from weightlab.probes.matching import apply_unit_permutations
from weightlab.seeding import generator


def test_hand_computed_barrier_of_a_sign_flipped_linear_net():
    # f(x) = w2 w1 x with (w1, w2) = (1, 1) and (-1, -1): both compute f = x; along the path
    # w = 1 - 2α, f = (1 - 2α)² x, so on x = y = 1 the MSE is ((1 - 2α)² - 1)², 1 at α = 1/2
    a = build(MLP, [1, 1, 1], seed=0)
    a.activation = "linear"
    with torch.no_grad():
        for layer in a.layers:
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    b = build(MLP, [1, 1, 1], seed=0)
    b.activation = "linear"
    with torch.no_grad():
        for layer in b.layers:
            layer.weight.fill_(-1.0)
            layer.bias.zero_()
    split = Split(torch.ones(1, 1), torch.ones(1, 1))
    res = loss_barrier(a, b, split, alphas=[0, 0.25, 0.5, 0.75, 1])
    expected = [((1 - 2 * al) ** 2 - 1) ** 2 for al in res.alphas]
    assert res.losses == pytest.approx(expected, abs=1e-6)
    assert res.barrier == pytest.approx(1.0, abs=1e-6) and res.alpha_max == 0.5
    assert res.accs is None and res.to_dict()["aligned"] is False


def test_convex_model_and_identical_models_have_zero_barrier():
    g = generator(0)
    x = torch.randn(64, 5, generator=g)
    y = torch.randint(0, 3, (64,), generator=g)
    a, b = build(MLP, [5, 3], seed=0), build(MLP, [5, 3], seed=1)  # logistic regression
    res = loss_barrier(a, b, Split(x, y))
    assert res.barrier == 0.0 and res.alpha_max in (0.0, 1.0)
    assert len(res.accs) == len(res.alphas) == 11
    deep = build(MLP, [5, 8, 3], seed=2)
    same = loss_barrier(deep, deep, Split(x, y))
    assert same.barrier == pytest.approx(0.0, abs=1e-9)


def test_alignment_removes_the_barrier_of_a_permuted_copy_models_unchanged():
    g = generator(1)
    x = torch.randn(256, 6, generator=g)
    y = torch.randint(0, 4, (256,), generator=g)
    a = build(MLP, [6, 24, 24, 4], seed=3)
    with torch.no_grad():
        for layer in a.layers:
            layer.weight.mul_(3.0)  # a sharper function, so a wrong average costs loss
    with torch.no_grad():
        y = a(x).argmax(-1)  # labels the endpoints fit: their loss is low, a bad average's high
    b = apply_unit_permutations(
        a,
        {"layers.0": torch.randperm(24, generator=g), "layers.1": torch.randperm(24, generator=g)},
    )
    before = {k: v.clone() for k, v in b.state_dict().items()}
    raw = loss_barrier(a, b, Split(x, y))
    aligned = loss_barrier(a, b, Split(x, y), align=True)
    assert raw.barrier > 0.05
    assert aligned.barrier == pytest.approx(0.0, abs=1e-5) and aligned.aligned
    assert all(torch.equal(b.state_dict()[k], v) for k, v in before.items())


def test_bad_input_one_line():
    x, y = torch.randn(8, 5), torch.zeros(8, dtype=torch.long)
    a = build(MLP, [5, 8, 3], seed=0)
    with pytest.raises(ConfigError, match="architectures differ") as e:
        loss_barrier(a, build(MLP, [5, 9, 3], seed=0), Split(x, y))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="endpoints"):
        loss_barrier(a, a, Split(x, y), alphas=[0.2, 0.5, 1.0])
    with pytest.raises(DataError, match="non-empty"):
        loss_barrier(a, a, Split(x[:0], y[:0]))
