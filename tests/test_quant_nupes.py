"""NUPES exponent search (weightlab.quant.nupes): the fast sorted-prefix-sum search equals
the core quantizer's arithmetic, hand-computed small cases, the data-free and data-driven
attachments, and the one-line errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from weightlab.core.transforms import merge
from weightlab.errors import ConfigError
from weightlab.quant.fake import quantize_values
from weightlab.quant.granularity import group_view
from weightlab.quant.levels import make_levels
from weightlab.quant.nupes import (
    DEFAULT_GRID,
    calibrated_power_quantize,
    layer_grams,
    output_errors,
    power_quantize,
    power_weights,
    search_exponent,
)
from weightlab.quant.quantizer import quantizers
from weightlab.quant.scales import estimate
from weightlab.seeding import generator

pytestmark = pytest.mark.usefixtures("one_thread")


def _weight(shape=(24, 64), seed=0):
    g = generator(seed)
    w = torch.randn(shape, generator=g) * 0.05
    w[2] *= 6  # one channel with a wider range
    w[5, 3] = 0.4  # an outlier
    return w


def _core_mse(w, bits, a, granularity="channel", valid=None, scale="mse"):
    """The core's path: the power level set, the core's estimator, quantize_values."""
    lv = make_levels("power", bits, a)
    wv = group_view(w, granularity)
    vv = None if valid is None else group_view(valid.to(w.dtype), granularity)
    s, _ = estimate(lv, wv, scale, vv)
    err = (quantize_values(wv, lv, s) - wv).double().square()
    if vv is not None:
        err = err * vv
        return float(err.sum() / vv.sum())
    return float(err.mean())


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("granularity", ["channel", "tensor", 16])
def test_search_errors_equal_the_core_quantizer(bits, granularity):
    w = _weight()
    a, errors = search_exponent(w, bits, granularity)
    ref = torch.tensor(
        [_core_mse(w, bits, x, granularity) for x in DEFAULT_GRID], dtype=torch.float64
    )
    assert errors.shape == (len(DEFAULT_GRID),) and errors.dtype == torch.float64
    assert torch.allclose(errors, ref, rtol=1e-5, atol=0)
    assert a == DEFAULT_GRID[int(errors.argmin())]


def test_minmax_scale_and_masked_entries_equal_the_core():
    w = _weight(seed=1)
    valid = (torch.rand(w.shape, generator=generator(3)) > 0.3).float()
    w_masked = w * valid  # a pruned weight stores zeros; they must not count
    for scale in ("minmax", "mse"):
        _, errors = search_exponent(w_masked, 3, "channel", scale=scale, valid=valid)
        ref = torch.tensor(
            [_core_mse(w_masked, 3, x, "channel", valid, scale) for x in DEFAULT_GRID],
            dtype=torch.float64,
        )
        assert torch.allclose(errors, ref, rtol=1e-5, atol=0)


def test_hand_computed_two_and_three_bit_errors():
    # 2 bits (qmax = 1), min-max scale c = 1: x rounds to c when x^a >= 1/2.
    w = torch.tensor([[0.3, 0.6, 1.0]], dtype=torch.float64)
    _, e = search_exponent(w, 2, "channel", grid=(0.5, 1.0), scale="minmax")
    # a = 0.5: 0.3 and 0.6 both round up (0.3^0.5 = 0.548): (0.7² + 0.4²)/3
    # a = 1:   0.3 -> 0, 0.6 -> 1: (0.3² + 0.4²)/3
    assert e.tolist() == pytest.approx([(0.49 + 0.16) / 3, (0.09 + 0.16) / 3], rel=1e-12)
    # 3 bits (qmax = 3), a = 1/2: levels (k/3)² = 0, 1/9, 4/9, 1
    w = torch.tensor([[0.1, 0.5, 0.9, 1.0]], dtype=torch.float64)
    a, e = search_exponent(w, 3, "channel", grid=(0.5,), scale="minmax")
    want = ((0.1 - 1 / 9) ** 2 + (0.5 - 4 / 9) ** 2 + (0.9 - 1) ** 2) / 4
    assert a == 0.5 and float(e[0]) == pytest.approx(want, rel=1e-12)


def test_bell_shaped_weights_prefer_a_below_one_uniform_weights_do_not():
    g = generator(7)
    u = torch.rand(64, 256, generator=g)
    laplace = -torch.sign(u - 0.5) * torch.log1p(-2 * (u - 0.5).abs())  # inverse CDF
    flat = torch.rand(64, 256, generator=g) * 2 - 1
    a_bell, e_bell = search_exponent(laplace, 3)
    a_flat, e_flat = search_exponent(flat, 3)
    assert a_bell < 1.0 and e_bell.min() < e_bell[-1]  # the search beats uniform (a = 1)
    assert a_flat >= 0.9 and a_flat > a_bell


def test_a_equal_one_is_the_uniform_grid():
    w = _weight(seed=4)
    _, errors = search_exponent(w, 4, grid=(1.0,))
    lv = make_levels("uniform", 4)
    wv = group_view(w, "channel")
    s, _ = estimate(lv, wv, "mse")
    uniform = float((quantize_values(wv, lv, s) - wv).double().square().mean())
    assert float(errors[0]) == pytest.approx(uniform, rel=1e-5)


def test_power_weights_are_the_core_quantizers_weights():
    w = _weight(seed=5)
    cands, errors = power_weights(w, 3)
    for i, a in enumerate(DEFAULT_GRID):
        lv = make_levels("power", 3, a)
        wv = group_view(w, "channel")
        s, _ = estimate(lv, wv, "mse")
        core = quantize_values(wv, lv, s).reshape(w.shape)
        assert torch.allclose(cands[i], core, atol=1e-6), a
        assert float((cands[i] - w).double().square().mean()) == pytest.approx(
            float(errors[i]), rel=1e-5
        )


def test_output_errors_are_the_output_reconstruction_error():
    w = _weight(seed=6)
    x = torch.randn(50, 64, generator=generator(8), dtype=torch.float64)
    cands, _ = power_weights(w, 3, grid=(0.5, 0.8, 1.0))
    got = output_errors(w.double(), cands.double(), x.T @ x)
    want = [float((x @ (c.double() - w.double()).T).square().sum()) for c in cands]
    assert got.tolist() == pytest.approx(want, rel=1e-9)


def _mlp(seed=0):
    from weightlab.seeding import preserved_global_rngs

    with preserved_global_rngs():
        torch.manual_seed(seed)  # PyTorch's default init, global RNG restored after
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def test_layer_grams_and_row_mask():
    model = _mlp()
    x = torch.randn(40, 8, generator=generator(1))
    grams, rows = layer_grams(model, x, ["0.weight", "2.weight"], batch=16)
    h = torch.relu(model[0](x)).double()
    assert rows == 40
    assert torch.allclose(grams["0.weight"], x.double().T @ x.double(), atol=1e-8)
    assert torch.allclose(grams["2.weight"], h.T @ h, atol=1e-8)
    # token inputs (B, L, in): padded rows left out
    lin = nn.Sequential(nn.Linear(8, 3))
    xt = torch.randn(5, 4, 8, generator=generator(2))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]])
    grams, rows = layer_grams(lin, xt, ["0.weight"], row_mask=mask, batch=2)
    kept = xt[mask.bool()].double()
    assert rows == int(mask.sum()) and torch.allclose(grams["0.weight"], kept.T @ kept, atol=1e-8)


def test_power_quantize_attaches_the_searched_exponents():
    model = _mlp(1)
    ref = copy.deepcopy(model)
    qs, searches = power_quantize(model, 3)
    assert set(qs) == set(searches) == {"0.weight", "2.weight"}
    for name, q in qs.items():
        assert q.spec.levels == "power" and q.spec.scale == "mse"
        assert q.spec.granularity == "channel" and q.spec.exponent == searches[name].exponent
        assert searches[name].criterion == "weight"
    merged = merge(copy.deepcopy(model))
    for name, s in searches.items():
        mod = name.split(".")[0]
        diff = (merged[int(mod)].weight - ref[int(mod)].weight).detach()
        assert float(diff.double().square().mean()) == pytest.approx(min(s.errors), rel=1e-5)


def test_data_driven_needs_calibration_data():
    for x in (None, torch.zeros(0, 8)):
        with pytest.raises(ConfigError) as e:
            calibrated_power_quantize(_mlp(), 3, x)
        msg = str(e.value)
        assert msg.startswith("data-driven NUPES needs calibration data; ") and "\n" not in msg
    assert quantizers(_mlp()) == {}


def test_data_driven_minimizes_the_output_error():
    model = _mlp(2)
    x = torch.randn(256, 8, generator=generator(9)) * torch.linspace(0.2, 3.0, 8)
    free = copy.deepcopy(model)
    _, s_free = power_quantize(free, 3)
    qs, s_data = calibrated_power_quantize(model, 3, x)
    grams, rows = layer_grams(_mlp(2), x, ["0.weight", "2.weight"])
    for name in qs:
        w = dict(_mlp(2).named_parameters())[name].detach()
        cands, _ = power_weights(w, 3)
        out = output_errors(w, cands, grams[name]) / rows
        assert list(s_data[name].errors) == pytest.approx(out.tolist(), rel=1e-9)
        assert (
            s_data[name].criterion == "output" and qs[name].spec.exponent == s_data[name].exponent
        )
        i_free = DEFAULT_GRID.index(s_free[name].exponent)
        assert min(s_data[name].errors) <= s_data[name].errors[i_free]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"grid": (0.0, 0.5)}, "exponent"),
        ({"grid": (0.5, 1.5)}, "exponent"),
        ({"grid": ()}, "grid is empty"),
        ({"bits": 1}, "bits"),
        ({"bits": 17}, "bits"),
        ({"granularity": 7}, "does not divide"),
        ({"scale": "percentile"}, "scale"),
    ],
)
def test_bad_input_is_one_line(kwargs, fragment):
    args = {"bits": 3, "granularity": "channel", "grid": DEFAULT_GRID, "scale": "mse", **kwargs}
    with pytest.raises(ConfigError) as e:
        search_exponent(_weight(), **args)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_default_grid():
    assert DEFAULT_GRID[0] == 0.3 and DEFAULT_GRID[-1] == 1.0 and len(DEFAULT_GRID) == 15
    assert all(
        math.isclose(b - a, 0.05) for a, b in zip(DEFAULT_GRID[:-1], DEFAULT_GRID[1:], strict=True)
    )
