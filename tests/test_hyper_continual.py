"""weightlab's LSTM (= nn.LSTM, vmap-able), the chunked MLP and RNN hypernetworks, the
output regularizer, HyperClassifier in the loop, HyperPopulation (= separate members), and
parity with hypnettorch 0.0.4 (slow: its import takes seconds)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.hyper.continual import (
    ChunkedMLPHypernet,
    ChunkedRNNHypernet,
    HyperClassifier,
    HyperPopulation,
    hypernet_targets,
    output_regularizer,
)
from weightlab.hyper.lstm import LSTM
from weightlab.models.factory import build
from weightlab.models.mlp import MLP
from weightlab.seeding import generator
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

TARGET = [64, 64, 64, 2]
P = 64 * 64 + 64 + 64 * 64 + 64 + 2 * 64 + 2  # 8,450


def _torch_lstm(batch_first: bool = False) -> nn.LSTM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.LSTM(5, 7, batch_first=batch_first)


def test_lstm_equals_torch_lstm_with_copied_weights():
    ref = _torch_lstm()
    ours = LSTM.from_torch(ref)
    x = torch.randn(6, 3, 5, generator=generator(0))
    h0 = torch.randn(1, 3, 7, generator=generator(1))
    c0 = torch.randn(1, 3, 7, generator=generator(2))
    for state in (None, (h0, c0)):
        a, (ha, ca) = ref(x, state)
        b, (hb, cb) = ours(x, state)
        for u, v in ((a, b), (ha, hb), (ca, cb)):
            assert (u - v).abs().max() < 1e-6
    ref_bf = _torch_lstm(batch_first=True)
    xb = x.transpose(0, 1)
    assert (ref_bf(xb)[0] - LSTM.from_torch(ref_bf)(xb)[0]).abs().max() < 1e-6
    assert (ref(x[:, 0])[0] - ours(x[:, 0])[0]).abs().max() < 1e-6  # unbatched (T, in)
    with pytest.raises(ConfigError, match="one-layer"):
        LSTM.from_torch(nn.LSTM(5, 7, num_layers=2))


def test_lstm_runs_under_vmap_where_nn_lstm_cannot():
    copies = [LSTM.from_torch(nn.LSTM(4, 3)) for _ in range(3)]
    params, _ = stack_module_state(copies)
    x = torch.randn(5, 2, 4, generator=generator(3))

    def one(p):
        return functional_call(copies[0], p, (x,))[0]

    out = vmap(one)(params)
    for i, m in enumerate(copies):
        torch.testing.assert_close(out[i], m(x)[0])
    ref = [nn.LSTM(4, 3) for _ in range(2)]
    rp, _ = stack_module_state(ref)
    with pytest.raises(Exception):  # noqa: B017 - torch's own error: no batching rule
        vmap(lambda p: functional_call(ref[0], p, (x,))[0])(rp)


def test_parameter_counts_match_the_issue():
    mlp = ChunkedMLPHypernet(P)
    rnn = ChunkedRNNHypernet(P)
    assert mlp.num_chunks == rnn.num_chunks == 29
    assert sum(p.numel() for p in mlp.parameters()) == 28_908
    assert sum(p.numel() for p in rnn.parameters()) == 28_444


def test_mlp_hypernet_chunk_is_the_mlp_of_chunk_and_task_embedding():
    h = ChunkedMLPHypernet(700, chunk_size=300, chunk_emb_size=3, cond_emb_size=2, layers=(4,))
    out = h.generate([1, 0])
    assert out.shape == (2, 700) and h.num_chunks == 3
    for row, t in ((0, 1), (1, 0)):
        for k in range(3):
            inp = torch.cat([h.chunk_embs[k], h.cond_embs[t]])
            want = 0.1 * h.layers[1](torch.relu(h.layers[0](inp)))
            n = min(300, 700 - 300 * k)
            torch.testing.assert_close(out[row, 300 * k : 300 * k + n], want[:n])
    torch.testing.assert_close(h(h.cond_embs[1]), out[0])  # unbatched condition


def test_rnn_hypernet_matches_an_nn_lstm_loop_and_chunks_depend_only_on_earlier_ones():
    h = ChunkedRNNHypernet(50, chunk_size=10, chunk_emb_size=3, cond_emb_size=2, hidden=4)
    ref = nn.LSTM(5, 4)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(h.rnn.gates.weight[:, :5])
        ref.weight_hh_l0.copy_(h.rnn.gates.weight[:, 5:])
        ref.bias_ih_l0.copy_(h.rnn.gates.bias)
        ref.bias_hh_l0.zero_()
    e = h.cond_embs[2]
    inp = torch.cat([h.chunk_embs, e.expand(5, 2)], dim=1).unsqueeze(1)  # (K, 1, 5)
    hs = ref(inp)[0][:, 0]
    want = 0.1 * h.head(hs).reshape(-1)
    assert (h.generate([2])[0] - want).abs().max() < 1e-6
    before = h.generate([2]).detach()
    with torch.no_grad():
        h.chunk_embs[2] += 1.0
    after = h.generate([2]).detach()
    changed = (after - before).abs().view(5, 10).amax(dim=1) > 0
    assert changed.tolist() == [False, False, True, True, True]


def test_set_task_trains_only_the_current_embedding_and_bad_ids_are_refused():
    h = ChunkedMLPHypernet(100, chunk_size=30, num_conds=3)
    h.set_task(1)
    assert [e.requires_grad for e in h.cond_embs] == [False, True, False]
    with pytest.raises(ConfigError, match="task 3 has no embedding"):
        h.generate([3])
    with pytest.raises(ConfigError, match="condition has shape"):
        h(torch.zeros(2, 5))


def test_output_regularizer_is_the_mean_over_previous_tasks_of_squared_distances():
    out = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    tgt = torch.tensor([[0.0, 2.0], [1.0, 1.0], [3.0, 1.0]])
    # (1 + 2 + 4) / 3
    assert float(output_regularizer(out, tgt)) == pytest.approx(7 / 3)
    with pytest.raises(ConfigError):
        output_regularizer(out, tgt[:2])


def _toy_tasks(n_tasks: int = 2, n: int = 40, d: int = 6) -> list[TaskData]:
    g = generator(11)
    tasks = []
    for t in range(n_tasks):
        x = torch.randn(n, d, generator=g)
        w = torch.randn(d, generator=g)
        y = (x @ w > 0).long()
        split = Split(x, y)
        tasks.append(TaskData(f"toy{t}", split, split, split, 2))
    return tasks


def _cfg(model_loss, steps: int = 6) -> TrainConfig:
    return TrainConfig(1, 8, steps, OptimConfig("adam", lr=1e-2), loss=model_loss)


def test_hyper_classifier_trains_in_the_loop_with_the_regularizer():
    tasks = _toy_tasks()
    target = build(MLP, [6, 5, 2], seed=0)
    total = sum(p.numel() for p in target.parameters())
    hnet = ChunkedMLPHypernet(total, chunk_size=10, chunk_emb_size=4, cond_emb_size=3, num_conds=2)
    model = HyperClassifier(hnet, target, beta=0.5)
    order = torch.arange(48).remainder(40).view(6, 8)
    model.start_task(0)
    assert model.targets is None
    train(model, tasks[0], _cfg(model.loss), 0, order=order)
    e0 = hnet.cond_embs[0].detach().clone()
    model.start_task(1)
    torch.testing.assert_close(model.targets, hypernet_targets(hnet, [0]))
    x, y = tasks[1].train.x[:8], tasks[1].train.y[:8]
    pred = model(x)
    assert float(model.last_reg.detach()) == 0.0  # h = h* at the start of the task
    model.hnet.layers[0].bias.data += 0.05  # move θ: the regularizer sees it
    pred = model(x)
    reg = output_regularizer(hnet.generate([0]), model.targets)
    torch.testing.assert_close(model.last_reg, reg)
    ce = nn.functional.cross_entropy(pred, y, reduction="none")
    torch.testing.assert_close(model.loss(pred, y), ce + 0.5 * reg)
    train(model, tasks[1], _cfg(model.loss), 1, order=order)
    torch.testing.assert_close(hnet.cond_embs[0].detach(), e0)  # only e_1 trained
    model.eval()
    model(x)
    assert model.last_reg is None
    with pytest.raises(ConfigError, match="generates 7 values"):
        HyperClassifier(ChunkedMLPHypernet(7, chunk_size=3), target)


@pytest.mark.parametrize("kind", ["mlp", "rnn"])
def test_hyper_population_trains_each_member_as_it_would_alone(kind):
    tasks = _toy_tasks()
    target = build(MLP, [6, 5, 2], seed=0)
    total = sum(p.numel() for p in target.parameters())
    cls = ChunkedMLPHypernet if kind == "mlp" else ChunkedRNNHypernet
    kw = dict(chunk_size=10, chunk_emb_size=4, cond_emb_size=3, num_conds=2)
    make = (
        (lambda s: cls(total, layers=(8,), seed=s, **kw))
        if kind == "mlp"
        else (lambda s: cls(total, hidden=5, seed=s, **kw))
    )
    orders = [torch.randperm(40, generator=generator(20 + s))[:32].view(4, 8) for s in range(2)]
    pop = HyperPopulation([make(0), make(1)], target, beta=0.3)
    alone = [HyperClassifier(make(s), target, beta=0.3) for s in range(2)]
    for t in range(2):
        pop.start_task(t)
        x = torch.stack([tasks[t].train.x[o.reshape(-1)] for o in orders], dim=1)
        y = torch.stack([tasks[t].train.y[o.reshape(-1)] for o in orders], dim=1)
        empty = Split(x[:0], y[:0])
        stacked = TaskData("s", Split(x, y), empty, empty, 2)
        seq = torch.arange(32).view(4, 8)
        train(pop, stacked, _cfg(pop.loss, 4), 0, order=seq)
        for s, m in enumerate(alone):
            m.start_task(t)
            train(m, tasks[t], _cfg(m.loss, 4), 0, order=orders[s])
    acc = pop.accuracy(tasks, 1)
    for s, m in enumerate(alone):
        state = pop.member_state(s)
        for name, p in m.hnet.named_parameters():
            torch.testing.assert_close(state[name], p.detach(), rtol=1e-4, atol=1e-5)
        m.eval()
        for j in range(2):
            m.task = j
            want = (m(tasks[j].test.x).argmax(-1) == tasks[j].test.y).double().mean() * 100
            assert float(acc[s, j]) == pytest.approx(float(want))
    with pytest.raises(ConfigError, match="one slice per member"):
        pop(torch.zeros(3, 5, 6))


@pytest.mark.slow
def test_parity_with_hypnettorch_chunked_hmlp_and_regularizer():
    hn = pytest.importorskip("hypnettorch.hnets")
    reg_mod = pytest.importorskip("hypnettorch.utils.hnet_regularizer")
    shapes = [[64, 64], [64], [64, 64], [64], [2, 64], [2]]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = hn.ChunkedHMLP(
            shapes,
            chunk_size=300,
            chunk_emb_size=32,
            cond_in_size=32,
            layers=(64, 64),
            num_cond_embs=5,
            verbose=False,
        )
    assert theirs.num_params == 28_908
    ours = ChunkedMLPHypernet(P, scale=1.0)
    ip = theirs.internal_params
    with torch.no_grad():
        for t in range(5):
            ours.cond_embs[t].copy_(ip[t])
        for i, layer in enumerate(ours.layers):
            layer.weight.copy_(ip[5 + 2 * i])
            layer.bias.copy_(ip[6 + 2 * i])
        ours.chunk_embs.copy_(ip[11])
    want = theirs.forward(cond_id=list(range(5)), ret_format="flattened")
    got = ours.generate(range(5))
    assert (want - got).abs().max() < 1e-6
    # the regularizer: targets before a change, then hypnettorch's calc_fix_target_reg
    task_id = 3
    targets = reg_mod.get_current_targets(task_id, theirs)
    mine = hypernet_targets(ours, range(task_id))
    g = generator(9)
    with torch.no_grad():
        for a, b in zip(
            theirs.unconditional_params[:-1], list(ours.layers.parameters()), strict=True
        ):
            delta = 0.05 * torch.randn(a.shape, generator=g)
            a.add_(delta)
            b.add_(delta)
    ref = reg_mod.calc_fix_target_reg(theirs, task_id, targets=targets)
    val = output_regularizer(ours.generate(range(task_id)), mine)
    assert float(ref) > 0
    assert math.isclose(float(val), float(ref), rel_tol=1e-5)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("num_outputs", "layers"), [(P, (64, 64)), (8700, (64, 64)), (50, ()), (50, (8, 9, 7))]
)
def test_fused_mlp_hypernet_equals_the_autograd_path(num_outputs, layers):
    """ChunkedMLPHypernet.forward (split first layer, scale in the last matmul, padded
    backward) = forward_autograd (concatenation, chunks, cut, scale): outputs and every
    gradient (condition, chunk embeddings, weights) within 1e-6 relative."""
    chunk = 300 if num_outputs > 1000 else 12
    hnet = ChunkedMLPHypernet(num_outputs, chunk_size=chunk, layers=layers, seed=3)
    z = torch.randn(5, 32, generator=generator(4), requires_grad=True)
    w = torch.randn(5, num_outputs, generator=generator(5))
    results = []
    for fwd in (hnet.forward, hnet.forward_autograd):
        hnet.zero_grad()
        z.grad = None
        out = fwd(z)
        (out * w).sum().backward()
        grads = [p.grad for n, p in hnet.named_parameters() if not n.startswith("cond")]
        results.append([out.detach(), z.grad, *grads])
    assert results[0][0].shape == (5, num_outputs)
    for a, b in zip(*results, strict=True):
        assert _rel(a, b) <= 1e-6
    single = hnet(z[1].detach())
    assert single.shape == (num_outputs,)
    torch.testing.assert_close(single, results[1][0][1], rtol=1e-6, atol=1e-7)
    # the output may be modified in place (as the autograd path's), gradients stay right
    hnet.zero_grad()
    out = hnet(z.detach())
    out.mul_(2.0)
    (out * w).sum().backward()
    hnet_w = hnet.layers[-1].weight.grad.clone()
    hnet.zero_grad()
    (2.0 * hnet.forward_autograd(z.detach()) * w).sum().backward()
    assert _rel(hnet_w, hnet.layers[-1].weight.grad) <= 1e-6
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        out = hnet(z)
        (gz,) = torch.autograd.grad(out.square().sum(), z, create_graph=True)
        gz.sum().backward()


def test_hyper_population_fused_call_equals_the_vmapped_autograd_path():
    """HyperPopulation's fused hypernetwork call on the stacked parameters and fused MLP
    targets = vmap(functional_call) of the autograd path: outputs, regularizer and every
    stacked gradient within 1e-6 relative."""
    target = build(MLP, TARGET, seed=0)
    hnets = [ChunkedMLPHypernet(P, num_conds=3, seed=s) for s in range(3)]
    pop = HyperPopulation(hnets, target, beta=0.5)
    pop.start_task(2)
    with torch.no_grad():  # move away from the frozen targets: a nonzero regularizer
        for i, p in enumerate(pop.parameters()):
            p.add_(0.05 * torch.randn(p.shape, generator=generator(30 + i)))
    x = torch.randn(7, 3, 64, generator=generator(8))
    y = torch.randint(0, 2, (7, 3), generator=generator(9))
    template = hnets[0]

    def reference():
        def gen(p):
            z = torch.stack([p[f"cond_embs.{j}"] for j in (2, 0, 1)])
            return functional_call(template, p, (z,))  # under vmap: the autograd path

        out = vmap(gen)(pop._params())
        reg = (out[:, 1:] - pop.targets).square().sum(dim=2).mean(dim=1)

        def one(w, xx):
            return functional_call(target, dict(zip(pop.shapes, _cut(w), strict=True)), (xx,))

        pred = vmap(one, in_dims=(0, 1))(out[:, 0], x).movedim(0, 1)
        return pred, reg

    def _cut(w):
        sizes = [math.prod(s) for s in pop.shapes.values()]
        parts = torch.split(w, sizes)
        return [p.reshape(s) for p, s in zip(parts, pop.shapes.values(), strict=True)]

    results = []
    for fused in (True, False):
        pop.zero_grad()
        pred, reg = (pop(x), pop.last_reg) if fused else reference()
        loss = torch.nn.functional.cross_entropy(pred.flatten(0, 1), y.flatten(0, 1)) + reg.sum()
        loss.backward()
        grads = [p.grad for p in pop.parameters() if p.grad is not None]
        results.append([pred.detach(), reg.detach(), *grads])
    assert len(results[0]) == len(results[1]) == 2 + 8  # 6 layer tensors, chunk embs, e_2
    for a, b in zip(*results, strict=True):
        assert _rel(a, b) <= 1e-6
