"""Function-preserving widening (Net2WiderNet, Chen et al. 2016): exactness in float32 at
batch 64 (train and eval mode), hand-built references for the weights and the optimizer
state, masks, plain-weight widening for populations, and the refusals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightlab.core.mask import apply_masks, get_masks
from weightlab.core.snapshots import take_snapshot
from weightlab.errors import ConfigError
from weightlab.growth.widen import index_map, widen, widen_masks, widen_plan, widen_state
from weightlab.models import MLP, build, model_factory
from weightlab.models.ghost_bn import MLPBN
from weightlab.population import MemberSpec, Population
from weightlab.seeding import generator

TOL = 1e-6


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(64, *shape, generator=generator(seed))


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 10),
    )


def _randomize_bn(model: nn.Module, seed: int = 5) -> None:
    g = generator(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def _counts(g: torch.Tensor, n: int) -> list[int]:
    return [int((g == j).sum()) for j in range(n)]


def test_mlp_widen_is_exact_and_matches_hand_built_weights():
    model = build(MLP, [40, 32, 32, 10], seed=0)
    before = copy.deepcopy(model)
    x = _x(40)
    y0 = model(x)
    g = widen(model, "layers.0", 50, seed=1)
    assert torch.equal(g[:32], torch.arange(32)) and len(g) == 50 and int(g.max()) < 32
    assert (model(x) - y0).abs().max() <= TOL
    assert model.widths == [40, 50, 32, 10] and model.layers[0].out_features == 50
    k = _counts(g, 32)
    w0, b0, w1 = before.layers[0].weight, before.layers[0].bias, before.layers[1].weight
    for i in range(50):  # hand-built Net2WiderNet (Chen et al. 2016, Eq. 2)
        assert torch.equal(model.layers[0].weight[i], w0[g[i]])
        assert model.layers[0].bias[i] == b0[g[i]]
        assert torch.equal(model.layers[1].weight[:, i], w1[:, g[i]] / k[g[i]])
    g2 = widen(model, "layers.1", 64, seed=2)
    assert (model(x) - y0).abs().max() <= TOL and model.layers[2].in_features == 64
    assert not torch.equal(g2[32:], g[32:50].repeat(2)[:32])  # another layer, another map


def test_index_map_is_seeded_and_uniform():
    a, b = index_map(10, 5010, seed=3), index_map(10, 5010, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, index_map(10, 5010, seed=4))
    counts = torch.bincount(a[10:], minlength=10).float()
    assert counts.min() > 400 and counts.max() < 600  # 500 expected per source


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mlpbn_widen_is_exact_in_train_and_eval(mode):
    model = build(MLPBN, [40, 32, 24, 10], seed=0)
    _randomize_bn(model)
    getattr(model, mode)()
    x = _x(40)
    ref = copy.deepcopy(model)
    g = widen(model, "layers.0", 45, seed=7)
    widen(model, "layers.1", 30, seed=8)
    ref_y, y = ref(x), model(x)
    assert (y - ref_y).abs().max() <= TOL
    bn, old = model.norms[0], ref.norms[0]
    assert torch.equal(bn.running_var[32:], old.running_var[g[32:]]) or mode == "train"
    assert torch.equal(bn.weight, old.weight[g]) and bn.num_features == 45
    if mode == "train":  # running statistics keep tracking exactly as well
        assert (bn.running_mean - old.running_mean[g]).abs().max() <= TOL


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cnn_with_batchnorm_and_flatten_linear(mode):
    model = _cnn()
    _randomize_bn(model)
    getattr(model, mode)()
    x = _x(1, 8, 8)
    ref = copy.deepcopy(model)
    g0 = widen(model, "0", 13, seed=1)
    g1 = widen(model, "4", 9, seed=2)
    assert (model(x) - ref(x)).abs().max() <= TOL
    assert model[1].num_features == 13 and model[4].in_channels == 13
    lin, old = model[7].weight, ref[7].weight
    assert lin.shape == (10, 9 * 16)
    k = _counts(g1, 6)
    for i in (0, 7, 8):  # channel i feeds inputs 16i..16i+15 of the Linear
        src = int(g1[i])
        assert torch.equal(lin[:, 16 * i : 16 * i + 16], old[:, 16 * src : 16 * src + 16] / k[src])
    conv = model[4].weight[:6, 10]  # rows 0..5: conv 4's old channels, in place
    assert torch.equal(conv, ref[4].weight[:, g0[10]] / _counts(g0, 8)[g0[10]])


def test_conv1d_widen():
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.Tanh(), nn.Conv1d(4, 3, 5)
    )
    model.train()
    x = _x(2, 12)
    ref = copy.deepcopy(model)
    widen(model, "0", 7, seed=0)
    assert (model(x) - ref(x)).abs().max() <= TOL


def test_noise_keeps_the_function_and_breaks_symmetry():
    model = build(MLP, [40, 16, 10], seed=0)
    x = _x(40)
    y0 = model(x)
    old = model.layers[1].weight.detach().clone()
    g = widen(model, "layers.0", 40, seed=3, noise=0.1)
    assert (model(x) - y0).abs().max() <= TOL
    w = model.layers[1].weight.detach()
    k = _counts(g, 16)
    for j in range(16):  # noise sums to zero over each source's copies
        cols = (g == j).nonzero().flatten()
        assert torch.allclose(w[:, cols].sum(1), old[:, j], atol=1e-6)
        if k[j] == 1:
            assert torch.equal(w[:, j], old[:, j])
    copies = [j for j in range(16) if k[j] > 1]
    j = copies[0]
    a, b = (g == j).nonzero().flatten()[:2]
    assert not torch.allclose(w[:, a], w[:, b])
    dev = (w[:, a] - old[:, j] / k[j]).std() / old.std()
    assert 0.02 < dev < 0.3  # std = noise × their std (centred over the copies)
    model(x).square().sum().backward()  # copies' incoming gradients now differ
    grad = model.layers[0].weight.grad
    assert not torch.allclose(grad[a], grad[b])


def test_without_noise_copies_get_equal_gradients():
    model = build(MLP, [40, 16, 10], seed=0)
    g = widen(model, "layers.0", 40, seed=3)
    model(_x(40)).square().sum().backward()
    j = next(j for j in range(16) if (g == j).sum() > 1)
    a, b = (g == j).nonzero().flatten()[:2]
    assert torch.equal(model.layers[0].weight.grad[a], model.layers[0].weight.grad[b])


def _train_steps(model, opt, x, steps=3):
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def _reference(before, opt_before, g, optim, power_names):
    """Hand-built widened MLP [3, 4→6, 2] and optimizer state, loop by loop."""
    n, width = 4, len(g)
    k = _counts(g, n)
    ref = MLP([3, width, 2])
    w0, b0 = before.layers[0].weight.detach(), before.layers[0].bias.detach()
    w1 = before.layers[1].weight.detach()
    ref_opt = optim(ref.parameters())
    with torch.no_grad():
        for i in range(width):
            ref.layers[0].weight[i] = w0[g[i]]
            ref.layers[0].bias[i] = b0[g[i]]
            ref.layers[1].weight[:, i] = w1[:, g[i]] / k[g[i]]
        ref.layers[1].bias.copy_(before.layers[1].bias)
    old = dict(zip(["w0", "b0", "w1", "b1"], before.parameters(), strict=True))
    new = dict(zip(["w0", "b0", "w1", "b1"], ref.parameters(), strict=True))
    for key, p in new.items():
        st = opt_before.state[old[key]]
        out = {}
        for name, v in st.items():
            if not (torch.is_tensor(v) and v.dim() > 0):
                out[name] = v.clone() if torch.is_tensor(v) else v
                continue
            if key in ("w0", "b0"):
                out[name] = torch.stack([v[g[i]] for i in range(width)])
            elif key == "w1":
                power = 2 if name in power_names else 1
                cols = [v[:, g[i]] / k[g[i]] ** power for i in range(width)]
                out[name] = torch.stack(cols, 1)
            else:
                out[name] = v.clone()
        ref_opt.state[p] = out
    return ref, ref_opt


@pytest.mark.parametrize(
    "optim",
    [
        lambda ps: torch.optim.Adam(ps, lr=1e-2),
        lambda ps: torch.optim.SGD(ps, lr=1e-1, momentum=0.9),
    ],
    ids=["adam", "sgd"],
)
def test_optimizer_state_carry_matches_hand_built_reference(optim):
    model = build(MLP, [3, 4, 2], seed=0)
    x = _x(3)
    opt = optim(model.parameters())
    _train_steps(model, opt, x)
    before, opt_before = copy.deepcopy((model, opt))  # one memo: state keyed by before's params
    g = widen(model, "layers.0", 6, seed=11, optimizer=opt)
    assert max(_counts(g, 4)) > 1
    assert all(p in opt.state for p in model.parameters())
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    ref, ref_opt = _reference(before, opt_before, g, optim, {"exp_avg_sq"})
    for a, b in zip(ref.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    _train_steps(model, opt, x, steps=1)
    _train_steps(ref, ref_opt, x, steps=1)
    for a, b in zip(ref.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    if isinstance(opt, torch.optim.Adam):
        assert opt.state[model.layers[0].weight]["step"] == 4


def test_optimizer_state_reset_empties_grown_tensors_only():
    model = build(MLP, [3, 4, 5, 2], seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train_steps(model, opt, _x(3))
    kept = model.layers[2].weight
    state_kept = opt.state[kept]["exp_avg"].clone()
    widen(model, "layers.0", 7, seed=0, optimizer=opt, state="reset")
    assert model.layers[0].weight not in opt.state and model.layers[1].weight not in opt.state
    assert torch.equal(opt.state[kept]["exp_avg"], state_kept)
    assert len(opt.state) == 3  # layers.1.bias and layers.2.* keep their state
    _train_steps(model, opt, _x(3), steps=1)
    assert opt.state[model.layers[0].weight]["step"] == 1


def test_masks_dict_and_attached_mask_transforms_widen_with_the_map():
    model = build(MLP, [20, 12, 6], seed=0)
    g0 = generator(1)
    masks = {
        "layers.0.weight": (torch.rand(12, 20, generator=g0) > 0.5).float(),
        "layers.1.weight": (torch.rand(6, 12, generator=g0) > 0.5).float(),
    }
    apply_masks(model, masks)
    x = _x(20)
    y0 = model(x)
    plain = build(MLP, [20, 12, 6], seed=0)
    expected = widen_masks(masks, plain, "layers.0", 19, seed=4)
    given = dict(masks)
    g = widen(model, "layers.0", 19, seed=4, noise=0.05, masks=given)
    assert (model(x) - y0).abs().max() <= TOL
    attached = get_masks(model)
    for name in masks:
        assert torch.equal(attached[name], expected[name]) and torch.equal(
            given[name], expected[name]
        )
    assert torch.equal(expected["layers.0.weight"], masks["layers.0.weight"][g])
    assert torch.equal(expected["layers.1.weight"], masks["layers.1.weight"][:, g])
    stored = model.layers[1].parametrizations.weight.original
    assert torch.all(stored[expected["layers.1.weight"] == 0] == 0)  # noise stays off pruned


def test_widen_state_equals_widen_and_grows_a_population():
    factory = model_factory(MLP, [40, 16, 10])
    specs = [MemberSpec(seed=s) for s in (3, 4)]
    pop = Population(factory, specs)
    template = factory(0)
    wide = model_factory(MLP, [40, 24, 10])
    grown = [
        MemberSpec(
            seed=s.seed, init_state=widen_state(pop.state(i), template, "layers.0", 24, s.seed)
        )
        for i, s in enumerate(specs)
    ]
    bigger = Population(wide, grown)
    x = _x(40)
    for i, s in enumerate(specs):
        model = pop.member(i)
        assert (bigger.member(i)(x) - model(x)).abs().max() <= TOL
        widen(model, "layers.0", 24, seed=s.seed, noise=0.1)
        noisy = widen_state(pop.state(i), template, "layers.0", 24, s.seed, noise=0.1)
        assert all(torch.equal(v, noisy[k]) for k, v in take_snapshot(model).items())


def test_bad_input_is_one_line_config_error():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + x)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.b(self.a(self.a(x)))

    model = build(MLP, [40, 16, 10], seed=0)
    cases = [
        (lambda: widen(model, "layers.0", 16, 0), "'layers.0' to 16.*pass an integer width > 16"),
        (lambda: widen(model, "layers.0", 8, 0), "width > 16"),
        (lambda: widen(model, "layers.1", 20, 0), "model's output"),
        (lambda: widen(model, "nope", 20, 0), "no layer 'nope'"),
        (lambda: widen(model, "layers.0", 20, 0, noise=-1), "noise must be >= 0"),
        (lambda: widen(model, "layers.0", 20, 0, state="keep"), "'carry' or 'reset'"),
        (lambda: widen(Residual(), "a", 20, 0), "'a'.*residual add"),
        (lambda: widen(Twice(), "a", 20, 0), "called 2 times"),
        (lambda: widen(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "0", 8, 0),
         "LayerNorm"),
    ]  # fmt: skip
    for call, text in cases:
        with pytest.raises(ConfigError, match=text) as info:
            call()
        assert "\n" not in str(info.value)
    assert model.layers[0].weight.shape == (16, 40)  # nothing half-written


def test_widen_plan_lists_the_touched_tensors():
    plan = widen_plan(_cnn(), "0")
    assert [e.name for e in plan.entries] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "4.weight"
    ]  # fmt: skip
    assert widen_plan(_cnn(), "4").entry("7.weight").block == 16


def test_ghost_batchnorm_widen_in_train_mode():
    model = build(MLPBN, [40, 16, 10], seed=0, virtual_batch=16).train()
    _randomize_bn(model)
    ref = copy.deepcopy(model)
    g = widen(model, "layers.0", 21, seed=2, noise=0.01)
    x = _x(40)
    assert (model(x) - ref(x)).abs().max() <= TOL
    assert model.norms[0].num_features == 21
    assert (model.norms[0].running_mean - ref.norms[0].running_mean[g]).abs().max() <= TOL


def test_residual_models_widen_inside_blocks_and_refuse_the_skip_path():
    from weightlab.models.convnets import ResidualCNN
    from weightlab.models.resmlp import ResMLP

    x = _x(40)
    model = build(ResMLP, 40, 16, 2, 10, seed=0)  # forward(x, skip=()) traced at its default
    ref = copy.deepcopy(model)
    widen(model, "blocks.0.fc1", 24, seed=0, noise=0.01)
    assert (model(x) - ref(x)).abs().max() <= TOL
    with pytest.raises(ConfigError, match="'stem'.*residual add"):
        widen(model, "stem", 24, seed=0)
    cnn = ResidualCNN(3, 8, blocks=1).train()
    ref = copy.deepcopy(cnn)
    widen(cnn, "blocks.0.conv1", 12, seed=0)
    xi = _x(3, 8, 8)
    assert (cnn(xi) - ref(xi)).abs().max() <= TOL
    with pytest.raises(ConfigError, match="'blocks.0.conv2'.*residual add"):
        widen(cnn, "blocks.0.conv2", 12, seed=0)


def test_untraceable_forward_is_refused_in_one_line():
    from weightlab.models.cnn1d import CNN1D

    with pytest.raises(ConfigError, match="'features.0': torch.fx cannot trace CNN1D") as info:
        widen(CNN1D(), "features.0", 40, seed=0)
    assert "\n" not in str(info.value)


def test_widen_inside_the_training_loop_keeps_the_loss_and_keeps_training():
    from weightlab.data import load_dataset
    from weightlab.train import LossRecorder, OptimConfig, TrainConfig, train

    data = load_dataset("iris", "cpu")
    cfg = TrainConfig(epochs=4, batch_size=16, optim=OptimConfig(name="adam", lr=1e-2))
    grow_at = 10

    def grow(model, ctx):
        if ctx.step == grow_at:
            widen(model, "layers.0", 24, seed=ctx.seed, noise=0.01, optimizer=ctx.optimizer)

    runs = {}
    for arm, cbs in (("plain", []), ("grown", [grow])):
        rec = LossRecorder()
        model = build(MLP, [4, 12, 3], seed=0)
        train(model, data, cfg, data_seed=1, seed=0, callbacks=[*cbs, rec])
        runs[arm] = (model, rec.losses)
    (plain, a), (grown, b) = runs["plain"], runs["grown"]
    assert grown.layers[0].out_features == 24 and plain.layers[0].out_features == 12
    assert a[:grow_at] == b[:grow_at]
    assert abs(a[grow_at] - b[grow_at]) <= 1e-6  # the first step after growth: same function
    assert a[-1] != b[-1] and b[-1] < b[0]  # then the wider net trains on its own path


def test_amsgrad_max_moment_is_divided_by_k_squared_and_unknown_state_is_refused():
    model = build(MLP, [3, 4, 2], seed=0)
    x = _x(3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
    _train_steps(model, opt, x)
    old = opt.state[model.layers[1].weight]["max_exp_avg_sq"].clone()
    g = widen(model, "layers.0", 7, seed=0, optimizer=opt)
    k = torch.bincount(g, minlength=4).float()
    new = opt.state[model.layers[1].weight]["max_exp_avg_sq"]
    assert torch.allclose(new, old[:, g] / k[g] ** 2)
    rprop = build(MLP, [3, 4, 2], seed=0)
    ropt = torch.optim.Rprop(rprop.parameters())
    _train_steps(rprop, ropt, x, steps=1)
    with pytest.raises(ConfigError, match="optimizer state 'prev'.*state='reset'"):
        widen(rprop, "layers.0", 7, seed=0, optimizer=ropt)
    assert rprop.layers[0].out_features == 4  # refused before anything changed
    widen(rprop, "layers.0", 7, seed=0, optimizer=ropt, state="reset")
    assert rprop.layers[0].weight not in ropt.state


def test_widen_state_with_masks_keeps_noise_off_pruned_weights():
    model = build(MLP, [20, 12, 6], seed=0)
    masks = {"layers.1.weight": (torch.rand(6, 12, generator=generator(2)) > 0.5).float()}
    apply_masks(model, masks)
    state = take_snapshot(model)
    wide = widen_masks(masks, model, "layers.0", 19, seed=1)
    grown = widen_state(state, model, "layers.0", 19, seed=1, noise=0.1, masks=wide)
    assert torch.all(grown["layers.1.weight"][wide["layers.1.weight"] == 0] == 0)
    with pytest.raises(ConfigError, match="pass masks widened by widen_masks"):
        widen_state(state, model, "layers.0", 19, seed=1, noise=0.1, masks=masks)


def test_tied_weights_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[2].weight = model[0].weight
    with pytest.raises(ConfigError, match="'0': 0.weight is shared.*untie"):
        widen(model, "0", 6, seed=0)
    assert model[0].out_features == 4


def test_gradient_clipping_reaches_tensors_grown_inside_the_loop():
    from weightlab.data import load_dataset
    from weightlab.train import OptimConfig, TrainConfig, train

    data = load_dataset("iris", "cpu")
    clip = 1e-4  # SGD with lr 1: every entry moves by at most `clip` per step
    cfg = TrainConfig(
        epochs=1, batch_size=16, optim=OptimConfig(name="sgd", lr=1.0, clip_value=clip)
    )
    seen = {}

    def grow(model, ctx):
        if ctx.step == 2:
            widen(model, "layers.0", 24, seed=0, optimizer=ctx.optimizer)
        if ctx.step in (3, 4):
            seen[ctx.step] = model.layers[0].weight.detach().clone()

    model = build(MLP, [4, 12, 3], seed=0)
    train(model, data, cfg, data_seed=1, seed=0, callbacks=[grow])
    assert (seen[4] - seen[3]).abs().max() <= clip * 1.01  # float32 rounding of the difference
