"""WiSE-FT interpolation and the correction count [#56]: hand-computed cases."""

import pytest
import torch
from torch import nn

from weightlab.adapters.interpolate import correction_count, interpolate, interpolate_state
from weightlab.errors import ConfigError
from weightlab.seeding import seeded_global_cpu_rng


def _lin(w: float, b: float) -> nn.Linear:
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(w)
        m.bias.fill_(b)
    return m


def test_interpolate_hand_computed_and_inputs_untouched():
    a, b = _lin(1.0, 0.0), _lin(3.0, -2.0)
    m = interpolate(a, b, 0.25)
    assert torch.equal(m.weight, torch.full((1, 2), 1.5))
    assert torch.equal(m.bias, torch.tensor([-0.5]))
    assert torch.equal(a.weight, torch.ones(1, 2)) and torch.equal(b.bias, torch.tensor([-2.0]))
    assert m is not a and m is not b
    assert torch.equal(interpolate(a, b, 0.0).weight, a.weight)
    assert torch.equal(interpolate(a, b, 1.0).weight, b.weight)
    # alpha > 1 extrapolates: 1 + 1.5 * (3 - 1) = 4
    assert torch.equal(interpolate(a, b, 1.5).weight, torch.full((1, 2), 4.0))


def test_buffers_float_interpolated_integer_from_nearer_endpoint():
    a, b = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    a.running_mean.fill_(2.0)
    b.running_mean.fill_(4.0)
    a.num_batches_tracked.fill_(3)
    b.num_batches_tracked.fill_(10)
    m = interpolate(a, b, 0.5)
    assert torch.equal(m.running_mean, torch.full((2,), 3.0))
    assert int(m.num_batches_tracked) == 3
    assert int(interpolate(a, b, 0.6).num_batches_tracked) == 10


def test_mismatched_architectures_one_line_error():
    with pytest.raises(ConfigError, match="different architectures") as e:
        interpolate(nn.Linear(2, 3), nn.Linear(2, 4), 0.5)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="only in model_b"):
        interpolate(nn.Linear(2, 3), nn.Sequential(nn.Linear(2, 3)), 0.5)
    with pytest.raises(ConfigError, match="finite"):
        interpolate_state({}, {}, float("nan"))


def test_interpolated_mlp_parameters_are_the_mean():
    with seeded_global_cpu_rng(0):
        a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    m = interpolate(a, b, 0.5)
    for pm, pa, pb in zip(m.parameters(), a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pm, (pa + pb) / 2)


def test_correction_count_hand_computed():
    y = torch.tensor([0, 1, 2, 0, 1])
    pa = torch.tensor([1, 1, 0, 2, 0])  # wrong on 0, 2, 3, 4
    pb = torch.tensor([2, 0, 1, 0, 2])  # wrong on 0, 1, 2, 4
    pm = torch.tensor([0, 1, 1, 1, 1])  # right on 0, 1, 4
    c = correction_count(pa, pb, pm, y, num_classes=3)
    # both wrong: 0, 2, 4; of these the mix is right on 0 and 4
    assert (c.corrected, c.both_wrong) == (2, 3)
    assert c.uniform_expected == pytest.approx(1.0)
    logits = torch.nn.functional.one_hot(pm, 3).float()
    assert correction_count(pa, pb, logits, y, 3) == c
    with pytest.raises(ConfigError, match="pred_mix"):
        correction_count(pa, pb, pm[:3], y, 3)
