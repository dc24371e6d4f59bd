"""DenseShift's training pieces (weightlab.quant.shift): sign-scale decomposition and the
low-variance head init."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weightlab.core import apply_masks, merge
from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.quant.levels import PowersOfTwo, make_levels
from weightlab.quant.quantizer import QuantSpec, quantizers, remove_quantizers
from weightlab.quant.shift import (
    LowVariance,
    Magnitudes,
    SignScale,
    low_variance_head,
    sign_scale,
)
from weightlab.train import OptimConfig, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def spec(bits=3, levels="shift", **kw) -> QuantSpec:
    kw.setdefault("scale", "minmax")
    kw.setdefault("granularity", "channel")
    return QuantSpec(bits=bits, levels=levels, **kw)


def tiny_mlp(seed=0) -> nn.Module:
    return build(MLP, (6, 16, 16, 3), seed=seed)


def on_levels(w: torch.Tensor, scale: torch.Tensor, levels: torch.Tensor) -> bool:
    u = (w / scale.reshape(-1, 1)).detach().double()
    return bool(torch.isclose(u.unsqueeze(-1), levels, rtol=0, atol=1e-6).any(-1).all())


# -- the magnitude table ----------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_magnitude_positions_match_the_core_table(bits):
    u = torch.cat([torch.linspace(0, 1.3, 4001, dtype=torch.float64), torch.tensor([0.75, 0.375])])
    # with a zero: the core table's t, shifted so the zero level is index 0
    mz, tz = Magnitudes(bits, zero=True), PowersOfTwo(bits, zero=True)
    assert torch.allclose(mz.position(u), tz.encode(u) - mz.n, atol=1e-12)
    # zero-free: equal from the smallest magnitude up; below it, the same rounded level
    mf, tf = Magnitudes(bits, zero=False), PowersOfTwo(bits, zero=False)
    s0 = 2.0 ** (-(mf.n - 1))
    big = u >= s0
    assert torch.allclose(mf.position(u[big]), tf.encode(u[big]) - mf.n, atol=1e-12)
    ours = torch.round(mf.position(u)).clamp(0, mf.size - 1) + mf.n
    core = torch.round(tf.encode(u)).clamp(tf.qmin, tf.qmax)
    assert torch.equal(ours, core)


def test_magnitude_values_and_level_counts():
    m3 = Magnitudes(3, zero=False)
    assert m3.size == 8 // 2
    assert m3.value(torch.arange(4.0)).tolist() == [0.125, 0.25, 0.5, 1.0]
    z3 = Magnitudes(3, zero=True)
    assert z3.value(torch.arange(4.0)).tolist() == [0.0, 0.25, 0.5, 1.0]
    assert make_levels("shift", 3).n_levels == 8 and make_levels("shift_zero", 3).n_levels == 7


# -- the decomposition --------------------------------------------------------------------
@pytest.mark.parametrize("levels", ["shift", "shift_zero"])
@pytest.mark.parametrize("bits", [2, 3])
def test_forward_lies_on_the_level_set(levels, bits):
    model = tiny_mlp()
    qs = sign_scale(model, spec(bits, levels))
    lv = make_levels(levels, bits).levels()
    for name, q in qs.items():
        w = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert on_levels(w, q.scale, lv)
        if levels == "shift":
            assert (w != 0).all()


def test_zero_free_never_zero_even_at_zero_latents():
    model = tiny_mlp()
    qs = sign_scale(model, spec(3, "shift"))
    lin = model.layers[0]
    with torch.no_grad():
        lin.parametrizations.weight.original[:2] = 0.0
        qs["layers.0.weight"].magnitude[:2] = 0.0
        qs["layers.0.weight"].magnitude[2, :3] = 0.0
    w = lin.weight
    assert (w != 0).all()
    assert (w[:2] > 0).all()  # sign(0) = +1
    # the same latents on shift_zero give exact zeros
    mz = tiny_mlp()
    qz = sign_scale(mz, spec(3, "shift_zero"))
    with torch.no_grad():
        qz["layers.0.weight"].magnitude[2, :3] = 0.0
    assert (mz.layers[0].weight[2, :3] == 0).all()


def test_gradients_reach_both_latents_straight_through():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    holder = nn.Sequential(lin)
    q = sign_scale(holder, spec(3, "shift", update="once"))["0.weight"]
    w_s = lin.parametrizations.weight.original
    with torch.no_grad():
        q.magnitude[0, 0] = 2 * float(q.scale[0])  # above the top level: clipped
        q.magnitude[1, 1] *= -1  # a negative magnitude latent acts as |M|
    c = torch.randn(4, 5, dtype=torch.float64).float()
    w = lin.weight
    (w * c).sum().backward()
    scale = q.scale.reshape(-1, 1)
    mag = w.detach().abs()
    assert torch.allclose(w_s.grad, c * mag)  # ∂Ŵ/∂W_s = s·m
    expected = c * torch.sign(w_s.detach()) * torch.sign(q.magnitude.detach())
    expected[0, 0] = 0.0  # clipped STE above the range
    assert torch.allclose(q.magnitude.grad, expected)
    assert (mag <= scale + 1e-7).all()


def test_identity_ste_passes_above_the_range():
    lin = nn.Linear(5, 4)
    q = sign_scale(nn.Sequential(lin), spec(3, "shift", ste="identity", update="once"))["0.weight"]
    with torch.no_grad():
        q.magnitude[0, 0] = 3 * float(q.scale[0])
    lin.weight.sum().backward()
    assert q.magnitude.grad[0, 0] == torch.sign(lin.parametrizations.weight.original[0, 0])


def test_keep_gates_both_latents():
    lin = nn.Linear(5, 4)
    q = sign_scale(nn.Sequential(lin), spec(3, "shift"))["0.weight"]
    keep = torch.ones(4, 5)
    keep[1] = 0
    q.keep = keep
    lin.weight.sum().backward()
    assert (lin.parametrizations.weight.original.grad[1] == 0).all()
    assert (q.magnitude.grad[1] == 0).all()
    assert (lin.parametrizations.weight.original.grad[0] != 0).all()


def small_task(n=120, d=6, k=3, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :k]).argmax(1)
    s = Split(x, y)
    return TaskData("toy", s, Split(x[:30], y[:30]), Split(x[:30], y[:30]), k)


def test_training_through_the_loop_moves_both_latents_and_tracks_levels():
    model = tiny_mlp()
    qs = sign_scale(model, spec(3, "shift", update="step"), seed=1)
    for q in qs.values():
        q.track = True
    before = {n: (q.magnitude.detach().clone(), q.scale.clone()) for n, q in qs.items()}
    signs0 = model.layers[1].parametrizations.weight.original.detach().clone()
    cfg = TrainConfig(epochs=5, batch_size=20, optim=OptimConfig("adam", lr=1e-2))
    res = train(model, small_task(), cfg, 0, seed=0)
    assert not res.diverged
    lv = make_levels("shift", 3).levels()
    for name, q in qs.items():
        assert not torch.equal(q.magnitude.detach(), before[name][0])
        stored = model.get_submodule(name.rsplit(".", 1)[0]).parametrizations.weight.original
        assert q.last_q is not None and q.last_q.dtype == torch.int32
        # the tracked index decodes to the effective weight
        model.train()
        w = model.get_submodule(name.rsplit(".", 1)[0]).weight
        assert torch.allclose(lv[q.last_q.long()].float() * q.scale.reshape(-1, 1), w)
        assert torch.equal(q.last_q, q.level_indices(stored))
        assert on_levels(w, q.scale, lv)
        assert (q.last_t - q.last_q).abs().max() <= 0.5 + 1e-6
        signed = torch.where(stored >= 0, 1.0, -1.0) * q.magnitude.detach().abs()
        core_t = make_levels("shift", 3).encode(signed / q.scale.reshape(-1, 1))
        assert torch.allclose(q.last_t, core_t, atol=1e-5)
    flips = torch.sign(model.layers[1].parametrizations.weight.original) != torch.sign(signs0)
    assert flips.any()  # signs are trained, not frozen
    assert set(quantizers(model)) == set(qs)
    assert all(isinstance(q, SignScale) for q in quantizers(model).values())


def test_merge_bakes_the_quantized_weights():
    model = tiny_mlp()
    sign_scale(model, spec(3, "shift"))
    x = torch.randn(7, 6)
    model.eval()
    y = model(x)
    merged = merge(model)
    assert torch.equal(merged(x), y)
    fresh = tiny_mlp()
    fresh.load_state_dict(merged.state_dict())
    assert torch.equal(fresh(x), y)
    other = tiny_mlp()
    sign_scale(other, spec(3, "shift"))
    plain = remove_quantizers(other)
    assert not quantizers(plain)
    assert torch.equal(plain.layers[0].weight, tiny_mlp().layers[0].weight)  # the sign latent


def test_masks_stay_after_the_decomposition():
    model = tiny_mlp()
    mask = (torch.arange(16 * 6).reshape(16, 6) % 3 != 0).float()
    apply_masks(model, {"layers.0.weight": mask})
    q = sign_scale(model, spec(3, "shift"))["layers.0.weight"]
    w = model.layers[0].weight
    assert (w[mask == 0] == 0).all() and (w[mask == 1] != 0).all()
    chain = list(model.layers[0].parametrizations.weight)
    assert chain[0] is q  # quantizer first, mask after


def test_stochastic_rounding_repeats_and_stays_on_levels():
    outs = []
    for _ in range(2):
        model = tiny_mlp()
        q = sign_scale(model, spec(3, "shift", rounding="stochastic"), seed=5)["layers.0.weight"]
        model.train()
        w = model.layers[0].weight
        assert on_levels(w, q.scale, make_levels("shift", 3).levels()) and (w != 0).all()
        outs.append(w.detach())
    assert torch.equal(outs[0], outs[1])


def test_bad_specs_are_one_line_errors():
    with pytest.raises(ConfigError, match="shift level set"):
        sign_scale(tiny_mlp(), QuantSpec(bits=3, levels="uniform"))
    with pytest.raises(ConfigError, match="(?i)lsq"):
        sign_scale(tiny_mlp(), QuantSpec(bits=3, levels="shift", scale="lsq"))
    model = tiny_mlp()
    sign_scale(model, spec())
    with pytest.raises(ConfigError, match="already quantized"):
        sign_scale(model, spec())


# -- low-variance init ----------------------------------------------------------------------
def test_low_variance_head_std_bias_and_determinism():
    model = build(MLP, (40, 512, 512, 400), seed=0)
    body = model.layers[0].weight.detach().clone()
    low_variance_head(model, "layers.2", seed=3)
    w = model.layers[2].weight.detach()
    assert abs(float(w.std()) / (0.01 / math.sqrt(512)) - 1) < 0.02
    assert abs(float(w.mean())) < 3 * 0.01 / math.sqrt(512) / math.sqrt(w.numel()) * 3
    assert (model.layers[2].bias == 0).all()
    assert torch.equal(model.layers[0].weight, body)  # only the head changes
    again = build(MLP, (40, 512, 512, 400), seed=7)
    low_variance_head(again, "layers.2", seed=3)
    assert torch.equal(again.layers[2].weight, w)
    wide = build(MLP, (40, 512, 512, 400), seed=0)
    low_variance_head(wide, "layers.2", seed=3, gain=0.1)
    assert torch.allclose(wide.layers[2].weight, 10 * w, rtol=1e-5)


def test_low_variance_logits_are_small():
    model = build(MLP, (40, 64, 64, 10), seed=0)
    x = torch.randn(256, 40)
    ref = model(x).detach().std()
    low_variance_head(model, "layers.2", seed=0)
    assert float(model(x).detach().std()) < 0.05 * float(ref)


def test_low_variance_bad_input():
    with pytest.raises(ConfigError, match="positive"):
        LowVariance(0.0)
    with pytest.raises(ConfigError, match="no module"):
        low_variance_head(tiny_mlp(), "layers.9", seed=0)
    with pytest.raises(ConfigError, match="not a Linear"):
        low_variance_head(tiny_mlp(), "layers", seed=0)
