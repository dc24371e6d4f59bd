"""Data scores (weightlab.probes.data_scores): EL2N and GraNd against hand formulas, the
three GraNd paths agreeing (vmap, MLP closed form, per-example loop), scores of seeds
trained as one population equal to the same seeds trained alone, static pruning by score,
the model left untouched, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from weightlab.data.task import TaskData, make_split
from weightlab.errors import ConfigError
from weightlab.models import CNN1D, MLP, build, model_factory
from weightlab.probes.data_scores import (
    DataScores,
    early_scores,
    el2n,
    el2n_scores,
    grand,
    grand_scores,
    prune_by_score,
)
from weightlab.train import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


@pytest.fixture(scope="module")
def data() -> TaskData:
    """10 features, 4 classes from a random linear teacher; 120 / 20 / 20 examples."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((10, 4))
    splits = []
    for n in (120, 20, 20):
        x = rng.standard_normal((n, 10))
        splits.append(make_split(x, (x @ w).argmax(1)))
    return TaskData("toy", *splits, num_classes=4)


def _xy(n=12, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64), torch.randint(0, k, (n,), generator=g)


def test_el2n_is_the_softmax_error_norm():
    x, y = _xy()
    lin = nn.Linear(6, 3).double()
    with torch.no_grad():
        p = torch.softmax(x @ lin.weight.T + lin.bias, 1)
    want = [float(torch.linalg.norm(p[i] - torch.eye(3, dtype=F64)[y[i]])) for i in range(12)]
    torch.testing.assert_close(el2n(lin, x, y).double(), torch.tensor(want, dtype=F64))
    # a perfectly confident right answer scores 0; a confident wrong one sqrt(2)
    sharp = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        sharp.weight.copy_(100 * torch.eye(2))
    got = el2n(sharp, torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    torch.testing.assert_close(got, torch.tensor([0.0, 2**0.5]), atol=1e-6, rtol=0)
    # averaged over networks: the mean of each network's scores
    other = nn.Linear(6, 3).double()
    torch.testing.assert_close(
        el2n_scores([lin, other], x, y), (el2n(lin, x, y) + el2n(other, x, y)) / 2
    )


def test_grand_of_a_linear_softmax_layer_is_el2n_times_input_norm():
    """For logits Wx + b: ∇_W ℓ = (p − y) xᵀ and ∇_b ℓ = p − y, so GraNd = EL2N · √(‖x‖² + 1)."""
    x, y = _xy(seed=1)
    lin = nn.Linear(6, 3).double()
    want = el2n(lin, x, y).double() * (x.pow(2).sum(1) + 1).sqrt()
    for method in ("vmap", "closed_form", "loop"):
        torch.testing.assert_close(grand(lin, x, y, method).double(), want, rtol=1e-5, atol=1e-6)
    nobias = nn.Linear(6, 3, bias=False).double()
    want = el2n(nobias, x, y).double() * x.norm(dim=1)
    torch.testing.assert_close(grand(nobias, x, y, "closed_form").double(), want, rtol=1e-5, atol=0)


def test_grand_paths_agree_on_mlp_and_cnn():
    x, y = _xy(n=20, d=40, k=10, seed=2)
    mlp = build(MLP, [40, 32, 16, 10], seed=3).double()
    ref = grand(mlp, x, y, "loop")
    assert (ref > 0).all()
    torch.testing.assert_close(grand(mlp, x, y, "vmap"), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grand(mlp, x, y, "closed_form"), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grand(mlp, x, y), ref, rtol=1e-5, atol=1e-7)  # auto
    cnn = build(CNN1D, seed=4).double()
    torch.testing.assert_close(grand(cnn, x, y), grand(cnn, x, y, "vmap"))  # auto falls back
    torch.testing.assert_close(
        grand(cnn, x, y, "vmap"), grand(cnn, x, y, "loop"), rtol=1e-5, atol=1e-7
    )
    two = [mlp, build(MLP, [40, 32, 16, 10], seed=5).double()]
    torch.testing.assert_close(
        grand_scores(two, x, y, "closed_form"),
        (grand(two[0], x, y, "loop") + grand(two[1], x, y, "loop")) / 2,
        rtol=1e-5,
        atol=1e-7,
    )


def test_scores_leave_the_model_untouched():
    x, y = _xy(n=8, d=40, k=10, seed=3)
    model = nn.Sequential(nn.Linear(40, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 10))
    model.double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = el2n(model, x, y)
    for method in ("vmap", "closed_form", "loop"):
        grand(model, x, y, method)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(el2n(model, x, y), a)  # eval mode: dropout off, deterministic


def test_closed_form_refuses_what_it_cannot_compute():
    x, y = _xy(n=4, d=40, k=10)
    with pytest.raises(ConfigError, match="nn.Linear.*method='vmap'"):
        grand(build(CNN1D, seed=0).double(), x, y, "closed_form")

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(40, 40)
            self.b = nn.Linear(40, 10)

        def forward(self, x):
            return self.b(torch.relu(self.a(torch.relu(self.a(x)))))

    with pytest.raises(ConfigError, match="applied once"):
        grand(Twice().double(), x, y, "closed_form")
    twice = Twice().double()
    torch.testing.assert_close(grand(twice, x, y), grand(twice, x, y, "loop"), rtol=1e-5, atol=1e-7)


def test_prune_by_score_hand_cases():
    s = torch.tensor([0.1, 0.5, 0.3, 0.9, 0.3, 0.0])
    assert prune_by_score(s, 0.5, "hardest").tolist() == [1, 2, 3]  # tie 0.3: lower index
    assert prune_by_score(s, 3, "hardest").tolist() == [1, 2, 3]
    assert prune_by_score(s, 0.5, "easiest").tolist() == [0, 2, 5]
    assert prune_by_score(s, 1.0, "easiest").tolist() == list(range(6))
    r = prune_by_score(s, 4, "random", seed=3)
    assert r.tolist() == sorted(set(r.tolist())) and len(r) == 4
    assert torch.equal(r, prune_by_score(s, 4, "random", seed=3))
    assert not all(torch.equal(r, prune_by_score(s, 4, "random", seed=k)) for k in range(4, 10))
    for keep, mode, kw, msg in [
        (0.0, "hardest", {}, "keep"),
        (7, "hardest", {}, "between 1 and 6"),
        (0.5, "middle", {}, "unknown pruning mode"),
        (0.5, "random", {}, "needs a seed"),
        (True, "hardest", {}, "fraction"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            prune_by_score(s, keep, mode, **kw)
    with pytest.raises(ConfigError, match="NaN"):
        prune_by_score(torch.tensor([0.1, float("nan")]), 1, "hardest")


def test_early_scores_population_equals_seeds_trained_alone(data):
    fac = model_factory(MLP, [10, 24, 4])
    cfg = TrainConfig(5, 20, 0, OptimConfig("adam", lr=1e-2))
    pop = early_scores(fac, data, cfg, [0, 1, 2], epoch=2, score="el2n", data_seed=9)
    loop = early_scores(
        fac, data, cfg, [0, 1, 2], epoch=2, score="el2n", data_seed=9, engine="loop"
    )
    assert isinstance(pop, DataScores) and pop.step == 12 and pop.epoch == 2.0
    assert pop.per_model.shape == (3, 120)
    torch.testing.assert_close(pop.per_model, loop.per_model, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pop.scores, pop.per_model.mean(0))
    # training lowers the scores below those at initialization
    init = early_scores(fac, data, cfg, [0, 1, 2], epoch=0)
    assert init.step == 0 and float(pop.scores.mean()) < float(init.scores.mean())
    torch.testing.assert_close(init.per_model[1], el2n(fac(1), data.train.x, data.train.y))
    g = early_scores(fac, data, cfg, [0, 1], epoch=0.5, score="grand", method="closed_form")
    assert g.step == 3 and g.method == "closed_form"
    d = g.to_dict()
    assert d["kind"] == "grand" and d["n"] == 120 and -1 <= d["seed_rank_correlation"] <= 1


def test_bad_input_is_one_line(data):
    x, y = _xy()
    lin = nn.Linear(6, 3).double()
    cases = [
        (lambda: el2n(lin, x, y.double()), "integer class labels"),
        (lambda: el2n(lin, x, y + 5), "outside the model's 3 classes"),
        (lambda: el2n(lin, x[:3], y), "matching"),
        (lambda: grand(lin, x, y, "magic"), "unknown GraNd method"),
        (lambda: el2n_scores([], x, y), "non-empty list"),
        (
            lambda: early_scores(model_factory(MLP, [10, 4]), data, TrainConfig(1, 10), [0, 0]),
            "distinct",
        ),
        (
            lambda: early_scores(
                model_factory(MLP, [10, 4]), data, TrainConfig(1, 10), [0], score="forgetting"
            ),
            "unknown score",
        ),
        (
            lambda: early_scores(
                model_factory(MLP, [10, 4]), data, TrainConfig(1, 10), [0], epoch=-1
            ),
            "epoch",
        ),
    ]
    for fn, msg in cases:
        with pytest.raises(ConfigError, match=msg) as e:
            fn()
        assert "\n" not in str(e.value)
