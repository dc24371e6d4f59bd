"""Self-pretraining by masked denoising (Amos et al. 2023): masks, the masked-position loss,
the denoising task built from the training inputs only, and pretraining through the one loop
and populations."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.init.self_pretrain import (
    denoising_task,
    mask_inputs,
    masked_mse,
    pretrained_init,
    random_masks,
    self_pretrain,
)
from weightlab.models.factory import build, model_factory
from weightlab.models.sequence import SeqCNN, SeqGRU, SeqTransformer, backbone_state
from weightlab.seeding import generator
from weightlab.train import OptimConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(n=32, length=12, seed=0):
    return torch.randn(n, length, generator=torch.Generator().manual_seed(seed))


def _smooth(n=64, length=12, seed=0):
    """Sequences a·sin(ωt + φ): a masked token is predictable from its neighbours."""
    g = torch.Generator().manual_seed(seed)
    a, w, p = torch.rand(3, n, 1, generator=g)
    t = torch.arange(length, dtype=torch.float32)
    return (1 + a) * torch.sin(0.3 * (1 + w) * t + 6 * p)


def test_random_masks_have_exactly_k_tokens_and_are_seeded():
    m = random_masks(500, 12, 3, generator(1))
    assert m.shape == (500, 12) and torch.all(m.sum(1) == 3)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(m, random_masks(500, 12, 3, generator(1)))
    assert not torch.equal(m, random_masks(500, 12, 3, generator(2)))
    # uniform positions: every position masked about 3/12 of the time
    share = m.mean(0)
    assert torch.all((share - 0.25).abs() < 0.07)


def test_mask_inputs_hides_values_and_scores_only_masked_positions():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    inp, tgt = mask_inputs(x, m)
    assert torch.equal(inp[:, 0], torch.tensor([[1.0, 0.0, 3.0, 0.0]]))
    assert torch.equal(inp[:, 1], m)
    assert torch.isnan(tgt[0, 0]) and torch.isnan(tgt[0, 2])
    assert tgt[0, 1] == 2.0 and tgt[0, 3] == 4.0


def test_masked_mse_by_hand_and_its_gradient():
    tgt = torch.tensor([[float("nan"), 2.0, float("nan"), 4.0], [1.0, float("nan"), 0.0, 0.0]])
    pred = torch.tensor([[9.0, 1.0, -9.0, 6.0], [1.5, 7.0, 1.0, -1.0]], requires_grad=True)
    loss = masked_mse(pred, tgt)
    want = torch.tensor([(1 + 4) / 2, (0.25 + 1 + 1) / 3])
    assert torch.allclose(loss, want)
    loss.sum().backward()
    g = pred.grad
    assert torch.isfinite(g).all()
    assert g[0, 0] == 0 and g[0, 2] == 0 and g[1, 1] == 0  # unscored: no gradient
    assert g[0, 1] == pytest.approx(2 * (1 - 2) / 2)
    # a population's (N, B, L) predictions against shared (B, L) targets
    stacked = torch.stack((pred.detach(), pred.detach() + 1))
    out = masked_mse(stacked, tgt)
    assert out.shape == (2, 2) and torch.allclose(out[0], want)


def test_denoising_task_uses_only_train_inputs_and_fresh_masks_per_copy():
    x = _inputs()
    task = denoising_task(x, mask_fraction=0.25, copies=3, mask_seed=5, eval_examples=10)
    assert task.kind == "regression" and task.output_shape == (12,)
    assert task.train.x.shape == (96, 2, 12) and task.train.y.shape == (96, 12)
    masks = task.train.x[:, 1].reshape(3, 32, 12)
    assert torch.all(masks.sum(-1) == 3)
    assert not torch.equal(masks[0], masks[1])  # each copy has its own masks
    # values: the inputs themselves, masked ones zeroed; targets the inputs where masked
    vals = task.train.x[:, 0].reshape(3, 32, 12)
    assert torch.equal(vals, x.expand(3, -1, -1) * (1 - masks))
    tgt = task.train.y.reshape(3, 32, 12)
    assert torch.equal(tgt[masks.bool()], x.expand(3, -1, -1)[masks.bool()])
    # val = test = a fresh masked copy of the first train inputs
    assert task.val is task.test and task.val.x.shape == (10, 2, 12)
    assert torch.equal(task.val.x[:, 0] + x[:10] * task.val.x[:, 1], x[:10])
    # a copy's masks do not depend on how many copies there are
    two = denoising_task(x, mask_fraction=0.25, copies=2, mask_seed=5, eval_examples=10)
    assert torch.equal(two.train.x, task.train.x[:64])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objective": "autoregressive"}, "objective"),
        ({"mask_fraction": 0.0}, "mask_fraction"),
        ({"mask_fraction": 1.0}, "mask_fraction"),
        ({"mask_fraction": -0.5}, "mask_fraction"),
        ({"mask_fraction": 0.01}, "masks 0 of 12"),
        ({"copies": 0}, "copies"),
    ],
)
def test_bad_arguments_are_one_line_config_errors(kwargs, match):
    model = SeqCNN(12, 3, "denoise", d=4, layers=1)
    with pytest.raises(ConfigError, match=match) as e:
        self_pretrain(model, _inputs(), **kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "inputs",
    [torch.zeros(8, 2, 12), torch.zeros(8, 12, dtype=torch.long), [[0.0] * 12], torch.zeros(12)],
)
def test_inputs_of_the_wrong_shape_are_config_errors(inputs):
    with pytest.raises(ConfigError, match="train_inputs") as e:
        self_pretrain(SeqCNN(12, 3, "denoise", d=4, layers=1), inputs)
    assert "\n" not in str(e.value)


def test_a_classifier_or_a_model_of_another_length_is_refused():
    with pytest.raises(ConfigError, match="head='denoise'"):
        self_pretrain(SeqCNN(12, 3, d=4, layers=1), _inputs())
    with pytest.raises(ConfigError, match="length=12"):
        self_pretrain(SeqCNN(10, 3, "denoise", d=4, layers=1), _inputs())


def test_pretraining_learns_to_fill_in_smooth_sequences():
    """Known answer: on smooth sequences a masked token is predictable from its neighbours,
    so the masked MSE falls far below the variance of the masked values."""
    x = _smooth()
    model = build(SeqCNN, 12, 3, "denoise", seed=0, d=16, layers=2, kernel=3)
    res = self_pretrain(
        model,
        x,
        mask_fraction=0.25,
        copies=4,
        epochs=40,
        batch_size=64,
        optim=OptimConfig("adam", lr=1e-2),
    )
    hist = res.results[0].history
    var = float(x.var())
    assert hist[-1].val_loss < 0.1 * var < hist[0].train_loss
    assert set(res.states[0]) == set(backbone_state(model.state_dict()))


def test_population_of_seeds_equals_the_loop_and_initializes_the_classifier():
    x = _smooth(48)
    den = model_factory(SeqGRU, 12, 3, "denoise", d=6)
    kw = dict(copies=2, epochs=2, batch_size=16, seeds=[3, 4], optim=OptimConfig("adam", lr=1e-2))
    pop = self_pretrain(den, x, engine="population", **kw)
    loop = self_pretrain(den, x, engine="loop", **kw)
    assert pop.seeds == [3, 4]
    for a, b, ra, rb in zip(pop.states, loop.states, pop.results, loop.results, strict=True):
        assert a.keys() == b.keys() and all(k.startswith("backbone.") for k in a)
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-5), k
        assert ra.final.val_loss == pytest.approx(rb.final.val_loss, rel=1e-4)
    assert not torch.equal(pop.states[0]["backbone.hh.weight"], pop.states[1]["backbone.hh.weight"])
    clf = model_factory(SeqGRU, 12, 3, d=6)
    init = pretrained_init(clf, 3, pop.states[0])
    assert torch.equal(init["backbone.hh.weight"], pop.states[0]["backbone.hh.weight"])
    assert torch.equal(init["head.weight"], clf(3).state_dict()["head.weight"])


def test_transformer_pretrains_under_a_population():
    den = model_factory(SeqTransformer, 12, 3, "denoise", d=8, heads=2, layers=1)
    res = self_pretrain(den, _smooth(32), copies=1, epochs=1, batch_size=16, seeds=[0, 1])
    assert len(res.states) == 2 and all(r.history for r in res.results)
