"""The xor-grokking recipe [#45]: the two-logit readout is the logistic loss, the init, the
two loop calls equal one 1,000-step-style run, a smoke run's outputs, bad input, and the
claim logic on hand-made rows."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from weightlab.errors import ConfigError
from weightlab.recipes.dynamics.xor_grokking import XorGrokking, XorGrokkingConfig, bayes_accuracy
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import load_tensors, read_json

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"seeds": 2, "n_train": 40, "n_test": 200, "d": 400, "width": 20}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("xor") / "run"
    run_recipe("xor-grokking", make_config("xor-grokking", smoke=True), out=out)
    return out


def test_two_logit_readout_is_the_logistic_loss():
    cfg = XorGrokkingConfig(**SMALL)
    st = XorGrokking().init_state(cfg, 0)
    w = torch.randn(20, 400, dtype=torch.float64)
    x = torch.randn(7, 400, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    a = st["layers.1.weight"].double()
    logits = torch.relu(x @ w.T) @ a.T
    f = logits[:, 1] - logits[:, 0]
    # f = sum_j a_j relu(w_j x) with a_j = +-1/sqrt(m)
    aj = torch.full((20,), 1 / math.sqrt(20), dtype=torch.float64)
    aj[10:] *= -1
    torch.testing.assert_close(f, torch.relu(x @ w.T) @ aj)
    yt = 2.0 * y.double() - 1
    ce = F.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(ce, F.softplus(-yt * f))
    assert torch.equal(logits.argmax(-1), (f > 0).long())


def test_init_state_scale_and_readout():
    cfg = XorGrokkingConfig(**SMALL, init_scale=1e-3)
    st = XorGrokking().init_state(cfg, 3)
    assert st["layers.0.weight"].std().item() == pytest.approx(1e-3, rel=0.05)
    assert torch.equal(st["layers.0.bias"], torch.zeros(20))
    col = st["layers.1.weight"]
    assert torch.allclose(col.abs(), torch.full((2, 20), 0.5 / math.sqrt(20)))
    assert (col[1] > 0).sum() == 10 and torch.equal(col[0], -col[1])
    # seeds differ, a seed repeats
    assert torch.equal(st["layers.0.weight"], XorGrokking().init_state(cfg, 3)["layers.0.weight"])
    assert not torch.equal(
        st["layers.0.weight"], XorGrokking().init_state(cfg, 4)["layers.0.weight"]
    )


def test_bayes_rule_on_clusters_far_apart():
    from weightlab.data import load_dataset

    data = load_dataset("xor", n_train=10, n_val=1, n_test=400, d=50, mu=30.0, flip=0.1)
    assert bayes_accuracy(data) == 1.0
    near = load_dataset("xor", n_train=10, n_val=1, n_test=2000, d=50, mu=0.01, flip=0.1)
    assert 0.4 < bayes_accuracy(near) < 0.6


def test_bad_input_is_one_line():
    for bad in ({"flip": 0.5}, {"flip": -0.1}, {"mu_sq": 0.0}, {"init_scale": 0.0}):
        with pytest.raises(ConfigError, match="^--") as e:
            XorGrokkingConfig(**bad)
        assert "\n" not in str(e.value)
    r = XorGrokking()
    with pytest.raises(ConfigError, match="--dense-steps"):
        r.validate(XorGrokkingConfig(steps=50, dense_steps=100), {"train": 200})
    with pytest.raises(ConfigError, match="multiple"):
        r.validate(XorGrokkingConfig(steps=1000, dense_steps=100, late_every=7), {"train": 200})


def test_smoke_run_outputs_and_frozen_readout(smoke):
    s = read_json(smoke / "summary.json")
    assert [c["id"] for c in s["claims"]] == ["a", "b"]
    steps = s["steps"]
    assert steps == [*range(0, 11), 20, 30]
    assert len(s["curves"]["test_acc_mean"]) == len(steps)
    assert len(s["per_seed"]) == 2
    cfg = make_config("xor-grokking", smoke=True)
    late = load_tensors(smoke / "units" / "steps-late.safetensors")
    for k in range(2):
        init = XorGrokking().init_state(cfg, k)
        assert torch.equal(late[f"seed{k}.layers.1.weight"], init["layers.1.weight"])
        assert torch.equal(late[f"seed{k}.layers.0.bias"], init["layers.0.bias"])
        assert not torch.equal(late[f"seed{k}.layers.0.weight"], init["layers.0.weight"])
    assert (smoke / "accuracy_vs_step.png").exists() or any(smoke.rglob("*.png"))


def test_two_calls_equal_one_run(smoke):
    """The dense phase then the late phase give the same weights as one run of all steps."""
    from weightlab.data import load_dataset
    from weightlab.models.factory import model_factory
    from weightlab.models.mlp import MLP
    from weightlab.population import MemberSpec, Population
    from weightlab.seeding import derive_seed
    from weightlab.train.config import OptimConfig, ParamGroup, TrainConfig

    cfg = make_config("xor-grokking", smoke=True)
    r = XorGrokking()
    data = load_dataset("xor", **r.task_params(cfg))
    specs = [
        MemberSpec(seed=derive_seed(r.name, "member", k), init_state=r.init_state(cfg, k))
        for k in range(cfg.seeds)
    ]
    optim = OptimConfig("sgd", lr=cfg.lr, groups=(ParamGroup(("layers.1.*", "*.bias"), 0.0),))
    pop = Population(model_factory(MLP, [cfg.d, cfg.width, 2]), specs)
    pop.fit(data, TrainConfig(cfg.steps, cfg.n_train, cfg.steps, optim))
    late = load_tensors(smoke / "units" / "steps-late.safetensors")
    for k in range(cfg.seeds):
        torch.testing.assert_close(
            pop.state(k)["layers.0.weight"], late[f"seed{k}.layers.0.weight"], rtol=1e-4, atol=1e-6
        )


def _seed(**kw) -> dict:
    base = {
        "seed": 0,
        "diverged": False,
        "step1_train": 1.0,
        "step1_test": 0.5,
        "final_train": 1.0,
        "final_test": 0.99,
        "final_flipped_fit": 1.0,
        "first_step_test_90": 3,
    }
    return {**base, **kw}


def test_claim_logic():
    check = XorGrokking.check_claims
    verdicts = [c.held for c in check([_seed(), _seed(seed=1)], 1.0, 20)]
    assert verdicts == [True, True]
    # one seed at 97% train after step 1, one seed's test too high; a flipped label unfit
    got = check([_seed(step1_train=0.97), _seed(seed=1, final_flipped_fit=0.95)], 1.0, 20)
    assert [c.held for c in got] == [False, False]
    got = check([_seed(step1_test=0.7), _seed(seed=1, final_test=0.94)], 1.0, 20)
    assert [c.held for c in got] == [False, False]
    # no flipped labels: (b) not tested; a diverged seed: both not tested
    assert check([_seed()], 1.0, 0)[1].held is None
    assert [c.held for c in check([_seed(diverged=True)], 1.0, 20)] == [None, None]
