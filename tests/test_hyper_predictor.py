"""Weight predictors (weightlab.hyper.predictor): parameter counts, the low-rank decoder and
the chunk tiling against hand-written references, predicted state dicts, the c_max bound,
seeding without the global RNG, and meta-training."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from weightlab.data import load_dataset
from weightlab.errors import ConfigError
from weightlab.hyper.predictor import (
    ChunkPredictor,
    LowRankPredictor,
    layer_descriptors,
    meta_train,
    predict_weights,
)
from weightlab.models.mlp import MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_issue():
    # 5·64+64 + 64·64+64 + 64·2048+2048 + 32·256+256
    assert n_params(LowRankPredictor(rank=32, c_max=256)) == 146_112
    # 5·128+128 + 128·128+128 + 128·1024+1024
    assert n_params(ChunkPredictor(chunk=32)) == 149_376


def test_layer_descriptors_by_hand():
    d = layer_descriptors([40, 96, 96, 10])
    expect = [
        [1, 0, 0, math.log(40) / 5, math.log(96) / 5],
        [0, 1, 0, math.log(96) / 5, math.log(96) / 5],
        [0, 0, 1, math.log(96) / 5, math.log(10) / 5],
    ]
    assert torch.equal(d, torch.tensor(expect, dtype=torch.float64))
    assert layer_descriptors([3, 2]).tolist() == [[1, 0, 0, math.log(3) / 5, math.log(2) / 5]]


def test_low_rank_decoder_matches_a_hand_written_reference():
    r, c = 4, 16
    p = LowRankPredictor(rank=r, c_max=c, hidden=8, seed=3).double()
    lin = [m for m in p.encoder if isinstance(m, torch.nn.Linear)]
    d = layer_descriptors([5, 12, 7])
    out = p(d, [(12, 5), (7, 12)])
    for i, (o, n) in enumerate([(12, 5), (7, 12)]):
        h = d[i]
        h = torch.relu(h @ lin[0].weight.T + lin[0].bias)
        h = torch.relu(h @ lin[1].weight.T + lin[1].bias)
        h = (h @ lin[2].weight.T + lin[2].bias).reshape(2 * r, r)
        y = torch.relu(h) @ p.expand.weight.T + p.expand.bias  # (2r, c_max)
        flat = y.flatten()  # row-major: read as (2c_max, r), no transpose
        a = torch.stack([flat[j * r : (j + 1) * r] for j in range(c)])
        b = torch.stack([flat[(c + j) * r : (c + j + 1) * r] for j in range(c)])
        ref = a[:o] @ b[:n].T / math.sqrt(n)
        torch.testing.assert_close(out[i], ref, rtol=1e-12, atol=1e-12)
        assert torch.linalg.matrix_rank(out[i]) <= r


def test_low_rank_weights_share_rows_across_widths():
    """A narrower layer's weight is the top-left corner of a wider one's, rescaled by √in
    (the same A, B rows): the decoder's one set of factors serves every width."""
    p = LowRankPredictor(rank=8, c_max=64, hidden=16, seed=0).double()
    d = torch.tensor([[0, 1, 0, 0.5, 0.5]], dtype=torch.float64)
    (small,) = p(d, [(10, 20)])
    (big,) = p(d, [(30, 40)])
    torch.testing.assert_close(small * math.sqrt(20), big[:10, :20] * math.sqrt(40))


def test_chunk_predictor_tiles_crops_and_scales():
    c = 4
    p = ChunkPredictor(chunk=c, hidden=8, seed=1).double()
    d = layer_descriptors([10, 6])
    (w,) = p(d, [(6, 10)])
    assert w.shape == (6, 10)
    block = p.net(d)[0].reshape(c, c) / math.sqrt(10)
    for i in range(6):
        for j in range(10):
            assert w[i, j] == block[i % c, j % c]


def test_predict_weights_is_an_mlp_state_dict():
    p = LowRankPredictor(seed=0)
    widths = [40, 96, 96, 10]
    st = predict_weights(p, widths)
    ref = MLP(widths).state_dict()
    assert list(st) == list(ref)
    assert all(st[k].shape == ref[k].shape for k in ref)
    assert all(torch.count_nonzero(st[f"layers.{i}.bias"]) == 0 for i in range(3))
    # gradients reach the predictor
    st["layers.1.weight"].sum().backward()
    assert p.expand.weight.grad is not None and p.expand.weight.grad.abs().sum() > 0
    # loads into the MLP, and the loaded net computes the predicted function
    net = MLP(widths)
    net.load_state_dict({k: v.detach() for k, v in st.items()})
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    h = F.relu(x @ st["layers.0.weight"].T)
    h = F.relu(h @ st["layers.1.weight"].T)
    torch.testing.assert_close(net(x), (h @ st["layers.2.weight"].T).detach())


def test_a_width_above_c_max_is_one_line_config_error():
    p = LowRankPredictor(c_max=256)
    with pytest.raises(ConfigError, match=r"width 300 .* above the predictor's c_max = 256") as e:
        predict_weights(p, [40, 300, 300, 10])
    assert "\n" not in str(e.value)
    predict_weights(p, [40, 256, 256, 10])  # the bound itself is fine
    assert predict_weights(ChunkPredictor(), [40, 300, 300, 10])["layers.1.weight"].shape == (
        300,
        300,
    )
    with pytest.raises(ConfigError, match="rank"):
        LowRankPredictor(rank=0)


def test_seeded_without_the_global_rng():
    state = torch.get_rng_state()
    a, b = LowRankPredictor(seed=5), LowRankPredictor(seed=5)
    c = ChunkPredictor(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.expand.weight, LowRankPredictor(seed=6).expand.weight)
    # PyTorch's default Linear bound U(±1/√fan_in)
    bound = 1 / math.sqrt(c.net[2].in_features)
    assert c.net[2].weight.abs().max() <= bound and c.net[2].weight.abs().max() > 0.9 * bound


@pytest.fixture(scope="module")
def mnist1d(weightlab_cache):
    return load_dataset("mnist1d")


def test_meta_training_lowers_the_predicted_nets_loss_and_is_deterministic(mnist1d):
    def run(steps):
        p = LowRankPredictor(rank=8, c_max=64, hidden=32, seed=0)
        return meta_train(p, mnist1d, [16, 32], steps=steps, lr=3e-3, seed=1)

    losses = run(120)
    assert len(losses) == 120
    assert run(10) == losses[:10]  # the same seeded stream of widths and batches
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 0.1, (first, last)  # measured 2.28 -> 2.07


def test_meta_train_rejects_bad_input(mnist1d):
    p = LowRankPredictor(c_max=64)
    with pytest.raises(ConfigError, match="c_max"):
        meta_train(p, mnist1d, [128], steps=1)
    with pytest.raises(ConfigError, match="batch_size"):
        meta_train(p, mnist1d, [32], steps=1, batch_size=10**6)
    with pytest.raises(ConfigError, match="classification"):
        meta_train(p, load_dataset("teacher_linear"), [32], steps=1)
