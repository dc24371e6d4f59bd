"""The quantizer core: level sets, scale estimators, rounding, granularity, the Transform,
and parity with PyTorch's fake-quantize and learnable (LSQ) kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks, merge, transforms_of
from weightlab.core.mask import Mask
from weightlab.errors import ConfigError
from weightlab.quant import (
    Quantizer,
    QuantSpec,
    fake_quant,
    make_levels,
    mse_search_scale,
    quantize,
    quantize_values,
    quantizers,
    remove_quantizers,
)
from weightlab.quant.granularity import group_view, grouped_shape
from weightlab.quant.levels import Uniform
from weightlab.quant.scales import estimate


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (signed zeros included), float32."""
    return torch.equal(
        a.detach().contiguous().view(torch.int32), b.detach().contiguous().view(torch.int32)
    )


# -- parity with torch ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("scale", "zp", "qmin", "qmax", "mode", "bits"),
    [
        (0.0371, 3, 0, 15, "asym", 4),
        (0.013, 128, 0, 255, "asym", 8),
        (0.5, 1, 0, 3, "asym", 2),
        (0.1, 0, -8, 7, "full", 4),
        (0.02, 0, -127, 127, "narrow", 8),
        (0.7, 0, -1, 1, "narrow", 2),
    ],
)
def test_fake_quant_equals_torch_per_tensor_bitwise(scale, zp, qmin, qmax, mode, bits):
    lv = Uniform(bits, mode)
    assert (lv.qmin, lv.qmax) == (qmin, qmax)
    x = (torch.randn(1_000_000, generator=_gen()) * 3).reshape(1, 1, -1)
    x1 = x.clone().requires_grad_()
    s = torch.tensor(scale).reshape(1, 1, 1)
    z = torch.tensor(float(zp)).reshape(1, 1, 1)
    y, _ = fake_quant(x1, lv, s, z)
    x2 = x.clone().requires_grad_()
    ref = torch.fake_quantize_per_tensor_affine(x2, scale, zp, qmin, qmax)
    assert _same_bits(y, ref)
    g = torch.randn(x.shape, generator=_gen(1))
    y.backward(g)
    ref.backward(g)
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.parametrize("mode", ["asym", "full", "narrow"])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_equals_torch_per_channel_bitwise(mode, bits):
    lv = Uniform(bits, mode)
    x = torch.randn(64, 128, generator=_gen(2)) * 2  # 8,192 values
    sc = torch.rand(64, generator=_gen(3)) * 0.3 + 0.01
    if mode == "asym":
        zp = torch.randint(lv.qmin, lv.qmax + 1, (64,), generator=_gen(4), dtype=torch.int32)
    else:
        zp = torch.zeros(64, dtype=torch.int32)
    x1 = x.clone().requires_grad_()
    y, _ = fake_quant(
        x1.reshape(64, 1, 128), lv, sc.reshape(64, 1, 1), zp.float().reshape(64, 1, 1)
    )
    x2 = x.clone().requires_grad_()
    ref = torch.fake_quantize_per_channel_affine(x2, sc, zp, 0, lv.qmin, lv.qmax)
    assert _same_bits(y.reshape(64, 128), ref)
    g = torch.randn(64, 128, generator=_gen(5))
    y.reshape(64, 128).backward(g)
    ref.backward(g)
    assert torch.equal(x1.grad, x2.grad)


def test_quantizer_transform_matches_torch_kernel_and_both_paths_agree():
    torch.manual_seed(0)
    lin = nn.Linear(96, 32)
    w = lin.weight.detach().clone()
    (q,) = quantize(lin, QuantSpec(4, "uniform", "minmax")).values()
    s = q.scale.reshape(-1)
    ref = torch.fake_quantize_per_channel_affine(w, s, torch.zeros(32, dtype=torch.int32), 0, -7, 7)
    assert _same_bits(lin.weight, ref)
    fused = lin.weight.detach().clone()
    q.track = True  # the autograd-function path
    lin.train()
    assert _same_bits(lin.weight, fused)
    with torch.enable_grad():  # the fast path's autograd function
        q.track = False
        w = torch.randn(32, 96, requires_grad=True)
        fast = q(w)
    assert _same_bits(
        fast,
        torch.fake_quantize_per_channel_affine(
            w.detach(), s, torch.zeros(32, dtype=torch.int32), 0, -7, 7
        ),
    )
    assert q.last_q.dtype == torch.int32 and q.last_q.shape == w.shape


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("mode", ["full", "asym"])
def test_lsq_gradients_equal_torch_learnable(per_channel, mode):
    lv = Uniform(4, mode)
    x = torch.randn(16, 200, generator=_gen(6))
    n = 16 if per_channel else 1
    s0 = torch.rand(n, generator=_gen(7)) * 0.2 + 0.1
    z0 = (
        torch.randint(0, 16, (n,), generator=_gen(8)).float() + 0.3
        if mode == "asym"
        else torch.zeros(n)
    )
    gf = 0.37
    g = torch.randn(16, 200, generator=_gen(9))

    x1, s1, z1 = (t.clone().requires_grad_() for t in (x, s0, z0))
    if per_channel:
        ref = torch._fake_quantize_learnable_per_channel_affine(x1, s1, z1, 0, lv.qmin, lv.qmax, gf)
    else:
        ref = torch._fake_quantize_learnable_per_tensor_affine(x1, s1, z1, lv.qmin, lv.qmax, gf)
    ref.backward(g)

    x2, s2, z2 = (t.clone().requires_grad_() for t in (x, s0, z0))
    view = x2.reshape(16, 1, 200) if per_channel else x2.reshape(1, 1, -1)
    zp = torch.clamp(torch.round(z2), lv.qmin, lv.qmax)
    zp = z2 + (zp - z2).detach()  # torch rounds the zero point forward, passes its gradient
    y, _ = fake_quant(
        view,
        lv,
        s2.reshape(-1, 1, 1),
        zp.reshape(-1, 1, 1) if mode == "asym" else None,
        grad_factor=gf,
    )
    y.reshape(16, 200).backward(g)
    assert torch.equal(y.reshape(16, 200), ref)
    assert torch.equal(x1.grad, x2.grad)
    torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-6, atol=1e-6 * s1.grad.abs().max().item())
    if mode == "asym":
        torch.testing.assert_close(
            z2.grad, z1.grad, rtol=1e-6, atol=1e-6 * z1.grad.abs().max().item()
        )


def test_lsq_quantizer_learns_scale_with_grad_factor():
    torch.manual_seed(0)
    lin = nn.Linear(64, 8)
    (q,) = quantize(lin, QuantSpec(3, "uniform_full", "lsq")).values()
    assert isinstance(q.scale, nn.Parameter)
    assert q.grad_factor == pytest.approx(1 / (64 * 3) ** 0.5)
    lin(torch.randn(4, 64)).square().sum().backward()
    assert q.scale.grad is not None and q.scale.grad.abs().sum() > 0


# -- level sets --------------------------------------------------------------------------
def test_level_sets_values():
    assert make_levels("uniform", 3).levels().tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert make_levels("uniform_full", 2).levels().tolist() == [-2, -1, 0, 1]
    assert make_levels("midrise", 2).levels().tolist() == [-0.75, -0.25, 0.25, 0.75]
    shift = make_levels("shift", 3).levels().tolist()
    assert sorted(shift) == [-1, -0.5, -0.25, -0.125, 0.125, 0.25, 0.5, 1]
    assert make_levels("shift_zero", 3).levels().tolist() == [-1, -0.5, -0.25, 0, 0.25, 0.5, 1]
    assert make_levels("binary", 1).levels().tolist() == [-1, 1]
    p = make_levels("power", 3, exponent=0.5).levels()
    assert torch.allclose(
        p, torch.tensor([-1, -4 / 9, -1 / 9, 0, 1 / 9, 4 / 9, 1], dtype=torch.float64)
    )


@pytest.mark.parametrize("name", ["shift", "shift_zero", "binary", "midrise", "power", "uniform"])
def test_nearest_rounding_picks_the_nearest_level(name):
    bits = 1 if name == "binary" else 3
    lv = make_levels(name, bits, exponent=0.6)
    levels = lv.levels().float()
    u = torch.linspace(-1.0, 0.999, 4001).reshape(1, 1, -1)
    xq = quantize_values(u, lv, torch.ones(1, 1, 1))
    dist = (xq.reshape(-1, 1) - levels).abs().min(1).values
    assert dist.max() <= 1e-6  # every output is a level (float32 pow: to rounding)
    if name != "power":  # power rounds in the companded domain, not to the nearest level
        best = levels[(u.reshape(-1, 1) - levels).abs().argmin(1)]
        gap = (u.reshape(-1) - xq.reshape(-1)).abs() - (u.reshape(-1) - best).abs()
        assert gap.max() <= 1e-6


def test_zero_free_level_sets_never_give_zero():
    x = torch.randn(1, 1, 10_000, generator=_gen(10)) * 0.01
    for name, bits in (("shift", 3), ("midrise", 2), ("binary", 1)):
        lv = make_levels(name, bits)
        assert (quantize_values(x, lv, torch.ones(1, 1, 1)) != 0).all()


def test_stochastic_rounding_is_unbiased_and_seeded():
    lv = make_levels("uniform", 4)
    x = torch.full((1, 1, 200_000), 0.3)
    s = torch.ones(1, 1, 1)
    a = quantize_values(x, lv, s, rounding="stochastic", generator=_gen(11))
    b = quantize_values(x, lv, s, rounding="stochastic", generator=_gen(11))
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    assert abs(a.mean().item() - 0.3) < 0.005
    sh = make_levels("shift", 3)  # between levels 0.25 and 0.5: P(0.5) = (0.3−0.25)/0.25
    c = quantize_values(x, sh, s, rounding="stochastic", generator=_gen(12))
    assert abs((c == 0.5).float().mean().item() - 0.2) < 0.005


# -- scales and granularity ----------------------------------------------------------------
def test_granularity_views_and_group_errors():
    assert grouped_shape((32, 96), "tensor") == (1, 1, 3072)
    assert grouped_shape((32, 96), "channel") == (32, 1, 96)
    assert grouped_shape((32, 96), 8) == (32, 12, 8)
    assert grouped_shape((8, 4, 3), 6) == (8, 2, 6)  # conv: in·kernel flattened
    with pytest.raises(ConfigError, match="group size 64 does not divide the input dimension 40"):
        quantize(nn.Linear(40, 8), QuantSpec(4, granularity=64))


def test_minmax_and_percentile_and_asym():
    w = torch.tensor([[-2.0, 0.5, 1.0, 4.0]]).reshape(1, 1, 4)
    s, z = estimate(make_levels("uniform", 4), w, "minmax")
    assert s.item() == pytest.approx(4 / 7) and z is None
    s, z = estimate(make_levels("uniform_asym", 4), w, "minmax")
    assert s.item() == pytest.approx(6 / 15) and z.item() == 5.0
    s, _ = estimate(make_levels("midrise", 2), w, "stats")
    assert s.item() == pytest.approx(2 * 7.5 / 4)
    s, _ = estimate(make_levels("uniform", 4), w, "percentile", percentile=50.0)
    assert s.item() == pytest.approx(torch.quantile(w.abs(), 0.5).item() / 7)


def test_mse_coarse_search_within_1pct_of_exhaustive():
    lv = make_levels("uniform", 4)
    for seed in range(3):
        w = group_view(torch.randn(256, 384, generator=_gen(seed)) ** 3, "channel")
        s1, _ = mse_search_scale(lv, w, search="exhaustive")
        s2, _ = mse_search_scale(lv, w, search="coarse")
        e1 = (quantize_values(w, lv, s1) - w).square().sum()
        e2 = (quantize_values(w, lv, s2) - w).square().sum()
        mm, _ = estimate(lv, w, "minmax")
        e0 = (quantize_values(w, lv, mm) - w).square().sum()
        assert e1 <= e2 <= 1.01 * e1
        assert e1 < e0  # heavy tails: clipping helps


def test_update_step_recomputes_minmax_in_training_only():
    lin = nn.Linear(16, 4)
    (q,) = quantize(lin, QuantSpec(4, update="step")).values()
    before = q.scale.clone()
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_(3.0)
    lin.eval()
    _ = lin.weight
    assert torch.equal(q.scale, before)
    lin.train()
    _ = lin.weight
    assert torch.allclose(q.scale, 3 * before)


# -- composition with masks and adapters ----------------------------------------------------
def test_mask_stays_last_and_estimators_ignore_pruned_entries():
    torch.manual_seed(0)
    lin = nn.Linear(32, 4)
    mask = (torch.rand(4, 32, generator=_gen(13)) > 0.5).float()
    apply_masks(lin, {"weight": mask})
    kept = lin.parametrizations.weight.original.detach().abs()
    (q,) = quantize(lin, QuantSpec(3, "shift", "stats")).values()
    chain = transforms_of(lin, "weight")
    assert isinstance(chain[0], Quantizer) and isinstance(chain[1], Mask)
    w = lin.weight.detach()
    assert torch.equal(w == 0, mask == 0)  # pruned: exactly 0 on a zero-free set
    mean_kept = (kept * mask).sum(1) / mask.sum(1)
    assert torch.allclose(q.scale.reshape(-1), 2 * mean_kept)


def test_remove_merge_and_refusals():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    w0 = model[0].weight.detach().clone()
    qs = quantize(model, QuantSpec(2, "uniform"))
    assert set(qs) == {"0.weight", "2.weight"} and set(quantizers(model)) == set(qs)
    with pytest.raises(ConfigError, match="already quantized"):
        quantize(model, QuantSpec(4))
    fq = model[0].weight.detach().clone()
    remove_quantizers(model)
    assert torch.equal(model[0].weight, w0)
    quantize(model, QuantSpec(2, "uniform"))
    merge(model)
    assert torch.equal(model[0].weight, fq) and not quantizers(model)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_float64_weights_use_the_autograd_path():
    lin = nn.Linear(16, 4).double()
    quantize(lin, QuantSpec(4, "uniform", "minmax"))
    out = lin(torch.randn(3, 16, dtype=torch.float64))
    assert out.dtype == torch.float64
    out.sum().backward()
    assert lin.parametrizations.weight.original.grad.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bits": 0}, "bits must be an integer from 1 to 16"),
        ({"bits": 17}, "bits must be an integer from 1 to 16"),
        ({"bits": 4, "levels": "power", "exponent": 1.5}, r"exponent a must lie in \(0, 1\]"),
        ({"bits": 4, "levels": "power", "exponent": 0.0}, r"exponent a must lie in \(0, 1\]"),
        ({"bits": 1, "levels": "uniform"}, "bits must be an integer from 2"),
        ({"bits": 4, "levels": "nf4"}, "unknown level set"),
        ({"bits": 4, "scale": "max"}, "unknown scale estimator"),
        ({"bits": 4, "granularity": 0}, "group size must be a positive integer"),
        ({"bits": 4, "levels": "shift", "scale": "lsq"}, "LSQ scale needs a uniform level set"),
    ],
)
def test_spec_bad_input_one_line(kwargs, match):
    with pytest.raises(ConfigError, match=match) as e:
        QuantSpec(**kwargs)
    assert "\n" not in str(e.value)


def test_describe_names_all_four_factors():
    assert QuantSpec(3, "power", "mse", granularity=64, exponent=0.5).describe() == (
        "power3(a=0.5) × mse × nearest × group64"
    )
