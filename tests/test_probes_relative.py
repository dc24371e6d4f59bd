"""Relative representations (Moschella et al. 2023, [#1]): the projection's known values,
invariance to rotations and rescalings (MiniLM-style sentence embeddings included), and
zero-shot stitching through an isometry of the latent space."""

import math

import pytest
import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError, DataError
from weightlab.models import build
from weightlab.models.mlp import MLP
from weightlab.probes.matching import apply_unit_permutations
from weightlab.probes.relative import (
    RelativeMLP,
    matched_cosine,
    mlp_head,
    mlp_latent,
    relative_projection,
    zero_shot_stitch,
)
from weightlab.seeding import generator
from weightlab.train import OptimConfig, TrainConfig, train


def _rotation_and_scale(d, seed):
    g = generator(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q, 0.1 + 10 * float(torch.rand((), generator=g))


def test_relative_projection_hand_values():
    z = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    r = relative_projection(z, anchors)
    assert torch.allclose(r[0], torch.tensor([1.0, 0.0, 1 / math.sqrt(2)]))
    assert torch.equal(r[1], torch.zeros(3))  # a zero latent has similarity 0
    with pytest.raises(DataError, match="one dimension"):
        relative_projection(z, torch.ones(3, 5))


def test_invariant_to_rotation_and_rescaling_not_to_anisotropic_scaling():
    g = generator(0)
    z = torch.randn(40, 16, generator=g, dtype=torch.float64)
    a = torch.randn(10, 16, generator=g, dtype=torch.float64)
    q, s = _rotation_and_scale(16, 1)
    r = relative_projection(z, a)
    assert torch.allclose(relative_projection(s * z @ q, s * a @ q), r, atol=1e-12)
    stretch = torch.linspace(0.1, 3.0, 16, dtype=torch.float64)
    assert not torch.allclose(relative_projection(z * stretch, a * stretch), r, atol=1e-3)
    # differentiable
    zz = z.clone().requires_grad_(True)
    relative_projection(zz, a).sum().backward()
    assert zz.grad is not None and torch.isfinite(zz.grad).all()


def _sentence_embeddings(bert, tok, texts):
    ids, mask = tok.encode(texts, 16)
    with torch.no_grad():
        e = bert.embed(ids, mask).double()
    return torch.nn.functional.normalize(e, dim=1)  # MiniLM's sentence embedding


def test_invariance_on_tiny_bert_sentence_embeddings():
    from weightlab.data.sentences import sentences
    from weightlab.models.minilm import tiny_bert, tiny_tokenizer

    texts = sentences(40, 0)
    e = _sentence_embeddings(tiny_bert(0), tiny_tokenizer(texts), texts)
    q, s = _rotation_and_scale(e.shape[1], 2)
    r = relative_projection(e[10:], e[:10])
    assert torch.allclose(relative_projection(s * e[10:] @ q, s * e[:10] @ q), r, atol=1e-10)


@pytest.mark.slow
def test_invariance_on_minilm_sentence_embeddings():
    from weightlab.data.sentences import sentences
    from weightlab.models.minilm import load_minilm

    bert, tok = load_minilm()
    texts = sentences(60, 0)
    e = _sentence_embeddings(bert, tok, texts)
    q, s = _rotation_and_scale(e.shape[1], 3)
    r = relative_projection(e[20:], e[:20])
    assert torch.allclose(relative_projection(s * e[20:] @ q, s * e[:20] @ q), r, atol=1e-10)


def _blobs():
    # 4 Gaussian clusters in 8-d (no file, no scikit-learn): an easy classification task
    g = generator(7)
    centres = 3 * torch.randn(4, 8, generator=g)

    def split(n):
        y = torch.randint(0, 4, (n,), generator=g)
        return Split(centres[y] + torch.randn(n, 8, generator=g), y)

    return TaskData("blobs", split(400), split(100), split(200), 4)


def test_stitching_through_a_latent_permutation_is_exact_and_models_unchanged():
    data = _blobs()
    b = build(MLP, [8, 32, 12, 4], seed=0)
    train(b, data, TrainConfig(5, 50, 0, OptimConfig("adam", lr=1e-2)), 0, seed=0)
    # A = B with its latent units permuted: an isometry of the latent space
    a = apply_unit_permutations(b, {"layers.1": torch.randperm(12, generator=generator(9))})
    before = {k: v.clone() for k, v in b.state_dict().items()}
    res = zero_shot_stitch(
        a,
        b,
        data,
        data.train.x[:20],
        TrainConfig(10, 50, 0, OptimConfig("adam", lr=3e-2)),
        seed=0,
    )
    assert all(torch.equal(b.state_dict()[k], v) for k, v in before.items())
    assert res.native > 80 and abs(res.native_a - res.native) < 1e-9
    assert res.relative_stitch == res.relative_native > 60
    assert abs(res.cos_relative - 1.0) < 1e-6 and res.cos_absolute < 0.9
    assert res.absolute_stitch < res.native - 10
    assert set(res.to_dict()) >= {"relative_stitch", "cos_absolute", "cos_relative_unmatched"}


def test_mlp_latent_and_head_compose_to_the_model_and_bad_layer_named():
    m = build(MLP, [8, 12, 6, 3], seed=1)
    x = torch.randn(5, 8)
    with torch.no_grad():
        full = m(x)
    for k in (0, 1):
        assert torch.allclose(mlp_head(m, mlp_latent(m, x, k), k), full, atol=1e-6)
    with pytest.raises(ConfigError, match="hidden layers: layers.0, layers.1"):
        mlp_latent(m, x, 5)
    assert matched_cosine(full, 2 * full) == pytest.approx(1.0)
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert matched_cosine(u, u, shift=1) == pytest.approx(0.0)


def test_relative_mlp_end_to_end_is_invariant_to_rotating_its_latent():
    anchors = torch.randn(7, 8, generator=generator(3))
    model = RelativeMLP([8, 16, 6], anchors, [5, 3], norm="layernorm")
    x = torch.randn(9, 8, generator=generator(4))
    out = model(x)
    out.sum().backward()
    assert model.encoder.layers[0].weight.grad.abs().sum() > 0  # trained through the projection
    q, s = _rotation_and_scale(6, 5)
    q = q.float()
    with torch.no_grad():
        model.encoder.layers[1].weight.copy_(s * q @ model.encoder.layers[1].weight)
        model.encoder.layers[1].bias.copy_(s * q @ model.encoder.layers[1].bias)
        assert torch.allclose(model(x), out.detach(), atol=1e-5)
    assert isinstance(RelativeMLP([8, 6], anchors, [3]).norm, torch.nn.BatchNorm1d)
    with pytest.raises(ConfigError, match="unknown norm"):
        RelativeMLP([8, 6], anchors, [3], norm="group")
