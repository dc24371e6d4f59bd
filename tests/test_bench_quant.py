"""bench/quant.py at tiny sizes (its sides compute the same values as their baselines) and
the two speed paths it measures: the Quantizer's uniform fast path (bitwise PyTorch's
fused fake-quantize, forward and gradient) and the in-place MSE search (bitwise the
``quantize_values`` formula)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from weightlab.quant import scales
from weightlab.quant.fake import quantize_values
from weightlab.quant.levels import make_levels
from weightlab.quant.quantizer import QuantSpec, quantize, uniform_fake_quant
from weightlab.quant.scales import mse_errors, mse_search_scale, range_scale


def _bench():
    path = Path(__file__).resolve().parents[1] / "bench" / "quant.py"
    spec = importlib.util.spec_from_file_location("bench_quant", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _bench()


def _torch_channels(x, levels, scale, zp):
    a, g, n = x.shape
    z = torch.zeros(a * g, dtype=torch.int32) if zp is None else zp.reshape(-1).to(torch.int32)
    out = torch.fake_quantize_per_channel_affine(
        x.reshape(a * g, n), scale.reshape(-1), z, 0, levels.qmin, levels.qmax
    )
    return out.reshape(a, g, n)


@pytest.mark.parametrize("name", ["uniform", "uniform_full", "uniform_asym"])
@pytest.mark.parametrize("clip", [False, True])  # False: a min-max scale clips nothing
def test_uniform_fast_path_equals_torch_kernel(name, clip):
    levels = make_levels(name, 4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 3, 40, generator=g)
    top = x.abs().amax(-1, keepdim=True)
    scale = top / (2 * levels.qmax if clip else levels.qmax)
    zp = None
    if levels.affine:
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        scale, zp = levels.affine_range(lo, hi / 4 if clip else hi)
    # exact ties at half steps round to even on both sides
    x[0, 0, :6] = scale[0, 0] * torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 6.5])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = uniform_fake_quant(a, levels, scale, zp), _torch_channels(b, levels, scale, zp)
    dy = torch.randn(ya.shape, generator=g)
    ya.backward(dy)
    yb.backward(dy)
    assert torch.equal(ya, yb)
    assert torch.equal(a.grad, b.grad)
    clipped = int((b.grad == 0).sum())
    assert (clipped > 0) == clip  # both branches of the fast path run
    with torch.no_grad():
        assert torch.equal(uniform_fake_quant(x, levels, scale, zp), yb)


def test_quantizer_fast_path_equals_generic_fake_quant():
    g = torch.Generator().manual_seed(2)
    base = nn.Linear(24, 16)
    x = torch.randn(8, 24, generator=g)
    outs, grads = [], []
    for fused in (True, False):
        for scale in ("minmax", "percentile"):  # percentile clips the largest weights
            m = copy.deepcopy(base)
            quantize(m, QuantSpec(3, "uniform", scale, granularity="channel", fused=fused))
            y = m(x)
            y.square().sum().backward()
            outs.append(y.detach())
            grads.append(m.parametrizations.weight.original.grad)
    for i in (0, 1):
        assert torch.equal(outs[i], outs[i + 2])
        assert torch.equal(grads[i], grads[i + 2])


@pytest.mark.parametrize("name", ["uniform", "uniform_full", "uniform_asym", "power"])
@pytest.mark.parametrize("masked", [False, True])
def test_mse_errors_bitwise_the_formula(monkeypatch, name, masked):
    levels = make_levels(name, 3, 0.5 if name == "power" else 1.0)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20, 2, 30, generator=g)
    valid = (torch.rand(w.shape, generator=g) > 0.3).float() if masked else None
    ratios = torch.arange(1, 13, dtype=torch.float32) / 12
    m = scales.absmax(w, valid)
    want = []
    for r in ratios:
        scale, zp = range_scale(levels, r * m)
        err = (quantize_values(w, levels, scale, zp) - w).square()
        want.append((err if valid is None else err * valid).sum(-1, keepdim=True))
    want = torch.stack(want)
    assert torch.equal(mse_errors(levels, w, ratios, valid), want)
    monkeypatch.setattr(scales, "_CHUNK", 2 * w.numel())  # blocks of 2 ratios
    assert torch.equal(mse_errors(levels, w, ratios, valid), want)
    per_group = ratios.reshape(-1, 1, 1, 1).expand(-1, 20, 2, 1).contiguous()
    assert torch.equal(mse_errors(levels, w, per_group, valid), want)


def test_reference_search_is_the_exhaustive_grid(bench):
    g = torch.Generator().manual_seed(4)
    weights = {"a": torch.randn(12, 1, 64, generator=g), "b": torch.randn(5, 1, 33, generator=g)}
    ref = bench.reference_search(weights, 40)
    naive = bench.reference_search(weights, 40, naive=True)
    exhaustive = bench.weightlab_search(weights, 40, "exhaustive")
    coarse = bench.weightlab_search(weights, 40, "coarse")
    levels = make_levels("uniform", 4)
    for k, w in weights.items():
        arg, best = ref[k]
        assert torch.equal(best, naive[k][1])
        # the reference's best error per channel is weightlab's exhaustive minimum
        ours = bench.squared_error(w, exhaustive[k])
        assert torch.allclose(ours, best, rtol=1e-6, atol=0)
        s, _ = mse_search_scale(levels, w, None, 40, "exhaustive")
        assert torch.equal(s, exhaustive[k])
        grid = bench.ratio_grid(40)
        assert torch.equal(grid[arg] * w.abs().amax(-1, keepdim=True) / 7, s)
        assert bool((bench.squared_error(w, coarse[k]) >= best * (1 - 1e-6)).all())


def test_step_sides_agree_with_torch_ao(bench):
    enc = bench.encoder("tiny")
    x, y = bench.make_batch(enc, 4, 8)
    sides = bench.step_sides(enc, x)
    names = bench.quantized_names(enc)
    assert len(names) == 36
    params = {k: dict(m.named_parameters()) for k, m in sides.items()}
    for name in names:
        path, attr = name.rsplit(".", 1)
        wl = getattr(sides["weightlab"].get_submodule(path), attr)
        ao = getattr(sides["torch_ao"].get_submodule(path), attr)
        assert torch.equal(wl, ao)
        assert not torch.equal(wl, params["plain"][name])
    steppers = {k: bench.Stepper(m, x, y) for k, m in sides.items()}
    losses = {k: [s.step()[2] for _ in range(3)] for k, s in steppers.items()}
    assert losses["weightlab"] == losses["torch_ao"]
    assert losses["weightlab"] != losses["plain"]


def test_bench_parts_run_tiny(bench):
    enc = bench.encoder("tiny")
    torch_threads = torch.get_num_threads()
    step = bench.bench_step(enc, 2, 8, 1, say=lambda *a: None)
    assert set(step["median_s"]) == set(bench.STEP_SIDES)
    assert step["max_rel_loss_diff_vs_torch_ao"] == 0.0
    cal = bench.bench_calibration(enc, 1, 20, say=lambda *a: None)
    assert cal["layers"] == 36 and cal["quantize_scales_equal_search"]
    assert cal["naive_reference_equal"]
    # n = 20 searches every ratio: each layer meets the exhaustive minimum
    assert all(abs(r - 1.0) < 1e-5 for r in cal["layer_mse_over_best"].values())
    res = {
        "setup": {
            "model": "tiny",
            "batch": 2,
            "tokens": 8,
            "quantized_weights": 36,
            "spec_step": "x",
            "ratios": 20,
            "rounds": 1,
            "threads": torch_threads,
            "load_before": (0.0, 0.0, 0.0),
            "load_after": (0.0, 0.0, 0.0),
        },
        "step": step,
        "calibration": cal,
    }
    text = bench.table(res)
    assert "QAT step" in text and "MSE calibration" in text and "worst layer" in text


def test_fast_path_under_torch_func_transforms():
    """vmap / grad over a quantized model fall back to PyTorch's kernel (same values)."""
    from torch.func import functional_call, grad, vmap

    g = torch.Generator().manual_seed(5)
    m = nn.Linear(6, 4)
    quantize(m, QuantSpec(4, "uniform", "minmax", granularity="channel"))
    params = {k: v.detach() for k, v in m.named_parameters()}
    x = torch.randn(5, 6, generator=g)

    def loss(p, xi):
        return functional_call(m, p, (xi[None],)).square().sum()

    per_example = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(5):
        m.zero_grad()
        loss(dict(m.named_parameters()), x[i]).backward()
        for k, p in m.named_parameters():
            assert torch.allclose(per_example[k][i], p.grad, atol=1e-6)
