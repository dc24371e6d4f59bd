"""Layer gates and TRSP (weightlab.sparsity.gates): gate algebra by hand, g = 0 is removal
on post-LN BERT and on ReLU MLP hidden layers, the two regularizers, and both stages
through the one training loop."""

from __future__ import annotations

import copy

import pytest
import torch

from weightlab.data import load_dataset
from weightlab.data.sentences import sentences, vocabulary_texts
from weightlab.errors import ConfigError
from weightlab.models import MLP, build
from weightlab.models.minilm import tiny_bert, tiny_tokenizer
from weightlab.sparsity.gates import (
    TRSP,
    Bypass,
    GatedLayer,
    add_gates,
    bert_layer_names,
    gate_group,
    gate_values,
    gated_layers,
    lowest_gates,
    mlp_layer_names,
    remove_layers,
)
from weightlab.train import OptimConfig, TrainConfig, train
from weightlab.train.losses import mse_per_example


def test_gate_algebra_by_hand():
    lin = torch.nn.Linear(3, 3)
    gl = GatedLayer(lin)
    x = torch.randn(4, 3)
    assert float(gl.gate.detach()) == 1.0
    torch.testing.assert_close(gl(x), lin(x))
    with torch.no_grad():
        gl.gate.fill_(0.25)
    torch.testing.assert_close(gl(x), x + 0.25 * (lin(x) - x))
    with torch.no_grad():
        gl.gate.zero_()
    torch.testing.assert_close(gl(x), Bypass()(x))
    gl.penalize = True
    gl.train()
    gl(x)
    want = (lin(x) - x).square().sum(1) / x.square().sum(1)
    torch.testing.assert_close(gl.penalty, want)


def test_zero_gate_removes_a_post_ln_bert_layer():
    m = tiny_bert(0)
    tok = tiny_tokenizer(vocabulary_texts())
    ids, mask = tok.encode(sentences(5, 0), 16)
    ref = m.embed(ids, mask)
    gated = copy.deepcopy(m)
    names = add_gates(gated, bert_layer_names(gated))
    assert names == [f"encoder.layer.{i}" for i in range(6)]
    torch.testing.assert_close(gated.embed(ids, mask), ref)  # g = 1: the original
    with torch.no_grad():
        gated_layers(gated)["encoder.layer.2"].gate.zero_()
    removed = copy.deepcopy(m)
    remove_layers(removed, ["encoder.layer.2"])
    assert isinstance(removed.encoder.layer[2], Bypass)
    torch.testing.assert_close(gated.embed(ids, mask), removed.embed(ids, mask))
    assert not torch.allclose(removed.embed(ids, mask), ref, atol=1e-4)


def test_zero_gate_removes_a_relu_mlp_hidden_layer():
    mlp = build(MLP, [5, 8, 8, 8, 3], seed=0)
    assert mlp_layer_names(mlp) == ["layers.1", "layers.2"]
    x = torch.randn(7, 5)
    gated = copy.deepcopy(mlp)
    add_gates(gated, ["layers.1"])
    with torch.no_grad():
        gated.layers[1].gate.zero_()
    l0, l2, l3 = mlp.layers[0], mlp.layers[2], mlp.layers[3]
    by_hand = l3(torch.relu(l2(torch.relu(l0(x)))))  # the MLP without layers.1
    torch.testing.assert_close(gated(x), by_hand)
    with pytest.raises(ConfigError, match="relu"):
        mlp_layer_names(build(MLP, [5, 8, 8, 3], activation="tanh", seed=0))
    with pytest.raises(ConfigError, match="square hidden"):
        mlp_layer_names(build(MLP, [5, 8, 3], seed=0))


def test_lowest_gates_use_magnitude_and_model_order():
    mlp = build(MLP, [4, 6, 6, 6, 6, 2], seed=0)
    add_gates(mlp, mlp_layer_names(mlp))
    with torch.no_grad():
        for name, v in zip(["layers.1", "layers.2", "layers.3"], [-0.1, 0.5, 0.2], strict=True):
            gated_layers(mlp)[name].gate.fill_(v)
    assert lowest_gates(mlp, 2) == ["layers.1", "layers.3"]
    assert gate_values(mlp)["layers.2"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="cannot remove 3 of 3"):
        lowest_gates(mlp, 3)
    with pytest.raises(ConfigError, match="already gated"):
        add_gates(mlp, ["layers.1"])
    with pytest.raises(ConfigError, match="no layer"):
        add_gates(mlp, ["layers.9"])


def test_trsp_loss_adds_both_penalties_in_training_only():
    mlp = build(MLP, [4, 6, 6, 6, 2], seed=1)
    add_gates(mlp, mlp_layer_names(mlp))
    with torch.no_grad():
        mlp.layers[1].gate.fill_(-0.5)
        mlp.layers[2].gate.fill_(0.75)
    trsp = TRSP(lambda1=0.1, lambda2=2.0, n_remove=1)
    loss = trsp.loss(mlp, mse_per_example)
    x, y = torch.randn(3, 4), torch.randn(3, 2)
    mlp.train()
    base = mse_per_example(mlp(x), y)
    torch.testing.assert_close(loss(mlp(x), y), base + 0.1 * 1.25)  # stage 1
    assert trsp.start_stage2(mlp) == ["layers.1"]
    pred = mlp(x)
    h = torch.relu(mlp.layers[0](x))
    pen = (mlp.layers[1].layer(h) - h).square().sum(1) / h.square().sum(1)
    torch.testing.assert_close(loss(pred, y), base + 0.1 * 1.25 + 2.0 * pen)
    mlp.eval()
    torch.testing.assert_close(loss(mlp(x), y), mse_per_example(mlp(x), y))
    with pytest.raises(ConfigError, match="gated model"):
        TRSP(0.1, 1.0, 1).loss(build(MLP, [2, 2], seed=0), mse_per_example)


def test_trsp_two_stages_in_the_training_loop_then_drop():
    """Stage 1 (L1 on gates) then stage 2 from a step callback, in one train() call; the
    stage-2 targets become near-identity maps, so dropping them without retraining costs
    little, unlike dropping the same layers from the stage-1 model."""
    data = load_dataset("teacher_mlp", n_train=256, n_val=64, n_test=256, seed=0)
    d, k = data.input_shape[0], data.output_shape[0]
    mlp = build(MLP, [d, 32, 32, 32, 32, k], seed=0)
    train(mlp, data, TrainConfig(epochs=6, batch_size=16, optim=OptimConfig(lr=3e-3)), 1)
    names = add_gates(mlp, mlp_layer_names(mlp))
    trsp = TRSP(lambda1=1e-2, lambda2=10.0, n_remove=1, stage1_steps=96)
    optim = OptimConfig("adam", lr=3e-3, groups=(gate_group(10.0),))
    cfg = TrainConfig(epochs=12, batch_size=16, optim=optim, loss=trsp.loss(mlp, mse_per_example))
    stage1 = {}

    def keep_stage1(model, ctx):
        if ctx.step == trsp.stage1_steps:
            stage1["model"] = copy.deepcopy(model)

    train(mlp, data, cfg, data_seed=0, callbacks=[keep_stage1, trsp.callback()])
    targets = list(trsp.targets)
    assert len(targets) == 1 and set(targets) <= set(names)
    assert targets == lowest_gates(stage1["model"], 1)  # chosen at the switch

    def rel_change(model, name):
        h = {}
        layer = model.get_submodule(name).layer
        hook = layer.register_forward_hook(lambda m, i, o: h.update(x=i[0], y=o))
        with torch.no_grad():
            model(data.test.x)
        hook.remove()
        return float((h["y"] - h["x"]).square().sum() / h["x"].square().sum())

    before = [rel_change(stage1["model"], n) for n in targets]
    after = [rel_change(mlp, n) for n in targets]
    assert all(a < 0.5 * b for a, b in zip(after, before, strict=True)), (before, after)

    def test_mse(model):
        with torch.no_grad():
            return float(mse_per_example(model.eval()(data.test.x), data.test.y).mean())

    direct = stage1["model"]
    remove_layers(direct, targets)
    gated_loss = test_mse(mlp)
    assert trsp.finish(mlp) == targets
    assert isinstance(mlp.layers[int(targets[0][-1])], Bypass)
    assert test_mse(mlp) < 0.5 * test_mse(direct)  # measured: 0.338 vs 0.790
    assert test_mse(mlp) < 1.5 * gated_loss  # measured: 0.338 vs 0.259 with the gate
