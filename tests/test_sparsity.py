"""Sparsity: scores, exact allocation (layer-wise, global, uniform, ERK), random masks,
pruning rates, and iterative magnitude pruning with rewinding."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from weightlab.core import take_snapshot
from weightlab.data import Split, TaskData, load_dataset
from weightlab.errors import ConfigError
from weightlab.models import MLP, build, model_factory
from weightlab.seeding import generator
from weightlab.sparsity import (
    IMPConfig,
    density_schedule,
    erk_densities,
    global_masks,
    imp_step,
    iterative_magnitude_pruning,
    keep_counts,
    layer_rates,
    layerwise_masks,
    magnitude_scores,
    mask_counts,
    random_masks,
    random_scores,
    round_half_up,
    uniform_densities,
    weights_of,
)
from weightlab.sparsity.allocation import global_removals
from weightlab.train import OptimConfig, TrainConfig, train

LENET_1D = {  # MLP 40-300-100-10 (LeNet-300-100 on MNIST-1D)
    "layers.0.weight": torch.Size([300, 40]),
    "layers.1.weight": torch.Size([100, 300]),
    "layers.2.weight": torch.Size([10, 100]),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _weights(seed: int = 0, shapes=None) -> dict[str, torch.Tensor]:
    g = generator(seed)
    shapes = shapes or {"a": torch.Size([6, 5]), "b": torch.Size([4, 6])}
    return {n: torch.randn(s, generator=g) for n, s in shapes.items()}


# --- scores and allocation -----------------------------------------------------------


def test_magnitude_layerwise_keeps_the_largest():
    w = _weights()
    keep = {"a": 7, "b": 3}
    masks = layerwise_masks(magnitude_scores(w), keep)
    for n, m in masks.items():
        assert m.dtype == torch.bool and m.shape == w[n].shape
        assert int(m.sum()) == keep[n]
        top = torch.topk(w[n].abs().flatten(), keep[n]).indices
        assert set(torch.nonzero(m.flatten()).flatten().tolist()) == set(top.tolist())


def test_layerwise_masks_nested_and_ties_by_index():
    w = _weights()
    scores = magnitude_scores(w)
    prev = layerwise_masks(scores, {"a": 20, "b": 10})
    # a previous mask that removed the single largest weight: it must stay pruned
    big = int(w["a"].abs().flatten().argmax())
    prev["a"].view(-1)[big] = False
    masks = layerwise_masks(scores, {"a": 5, "b": 10}, prev)
    assert not masks["a"].view(-1)[big]
    assert torch.all(masks["a"] <= prev["a"]) and torch.equal(masks["b"], prev["b"])
    assert int(masks["a"].sum()) == 5
    equal = {"t": torch.ones(2, 5)}
    tied = layerwise_masks(equal, {"t": 4})["t"].flatten()
    assert tied.tolist() == [True] * 4 + [False] * 6
    with pytest.raises(ConfigError, match="alive"):
        layerwise_masks(scores, {"a": 30, "b": 1}, prev)


def test_global_masks_one_threshold_vs_layerwise():
    g = generator(1)
    w = {"big": torch.randn(10, 10, generator=g) * 10, "small": torch.randn(10, 10, generator=g)}
    scores = magnitude_scores(w)
    glob = global_masks(scores, 100)
    assert sum(mask_counts(glob).values()) == 100
    kept = torch.cat([scores[n][glob[n]] for n in w])
    dropped = torch.cat([scores[n][~glob[n]] for n in w])
    assert kept.min() >= dropped.max()  # a single threshold across layers
    assert mask_counts(glob)["big"] > 80  # the large-scale layer keeps most
    lw = layerwise_masks(scores, {"big": 50, "small": 50})
    assert mask_counts(lw) == {"big": 50, "small": 50}
    nested = global_masks(scores, 30, glob)
    assert sum(mask_counts(nested).values()) == 30
    assert all(torch.all(nested[n] <= glob[n]) for n in w)
    with pytest.raises(ConfigError, match="alive"):
        global_masks(scores, 101, glob)


def test_random_scores_are_seeded():
    shapes = {"a": torch.Size([3, 4]), "b": torch.Size([5])}
    s1, s2 = random_scores(shapes, generator(4)), random_scores(shapes, generator(4))
    assert all(torch.equal(s1[n], s2[n]) for n in shapes)
    assert not torch.equal(s1["a"], random_scores(shapes, generator(5))["a"])
    assert all(s1[n].shape == shapes[n] for n in shapes)


def test_weights_of_reads_effective_weights():
    from weightlab.core import apply_masks

    model = build(MLP, [5, 4, 3], seed=0)
    w = weights_of(model)
    assert list(w) == ["layers.0.weight", "layers.1.weight"]
    masks = layerwise_masks(magnitude_scores(w), {"layers.0.weight": 3, "layers.1.weight": 2})
    apply_masks(model, masks)
    after = weights_of(model)
    for n, m in masks.items():
        assert torch.equal(after[n], w[n] * m)
    after["layers.0.weight"].add_(1)  # a detached copy
    assert torch.equal(
        weights_of(model)["layers.0.weight"], w["layers.0.weight"] * masks["layers.0.weight"]
    )


# --- densities and counts ------------------------------------------------------------


def test_keep_counts_round_half_up_and_uniform():
    shapes = {"a": torch.Size([10]), "b": torch.Size([2, 5]), "c": torch.Size([4])}
    assert keep_counts(shapes, {"a": 0.25, "b": 0.15, "c": 0.125}) == {"a": 3, "b": 2, "c": 1}
    assert keep_counts(shapes, uniform_densities(shapes, 1.0)) == {"a": 10, "b": 10, "c": 4}
    assert round_half_up(0.1, 5) == 1 and round_half_up(0.1, 4) == 0
    with pytest.raises(ConfigError, match="density"):
        uniform_densities(shapes, 0.0)
    with pytest.raises(ConfigError, match="density"):
        keep_counts(shapes, {"a": 1.5, "b": 0.1, "c": 0.1})


@pytest.mark.parametrize("target", [0.05, 0.1, 0.3, 0.6])
def test_erk_hits_target_and_favours_small_layers(target):
    shapes = dict(LENET_1D)
    shapes["conv"] = torch.Size([16, 8, 3])
    d = erk_densities(shapes, target)
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    assert sum(d[n] * sizes[n] for n in shapes) / total == pytest.approx(target, rel=1e-12)
    counts = keep_counts(shapes, d)
    assert abs(sum(counts.values()) - target * total) <= len(shapes) / 2
    assert all(0 < v <= 1 for v in d.values())
    # ERK: density ∝ sum(dims) / prod(dims) for the layers that are not clamped
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    free = [n for n in shapes if d[n] < 1]
    ratios = [d[n] / raw[n] for n in free]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-12)
    by_raw = sorted(shapes, key=raw.get)
    assert [d[n] for n in by_raw] == sorted(d[n] for n in by_raw)
    assert d["layers.2.weight"] > d["layers.0.weight"] > d["layers.1.weight"]


def test_erk_clamps_dense_layers():
    d = erk_densities(LENET_1D, 0.5)
    assert d["layers.2.weight"] == 1.0  # the 10x100 output layer would exceed 1
    total = sum(math.prod(s) for s in LENET_1D.values())
    assert sum(d[n] * math.prod(s) for n, s in LENET_1D.items()) == pytest.approx(0.5 * total)
    assert erk_densities(LENET_1D, 1.0) == {n: 1.0 for n in LENET_1D}


# --- random masks --------------------------------------------------------------------


def test_random_masks_exact_counts_and_seeded():
    shapes = dict(LENET_1D)
    dens = erk_densities(shapes, 0.2)
    m1 = random_masks(shapes, dens, generator=generator(7))
    m2 = random_masks(shapes, dens, generator=generator(7))
    m3 = random_masks(shapes, dens, generator=generator(8))
    assert mask_counts(m1) == keep_counts(shapes, dens)
    assert all(torch.equal(m1[n], m2[n]) for n in shapes)
    assert not torch.equal(m1["layers.0.weight"], m3["layers.0.weight"])
    assert mask_counts(m3) == mask_counts(m1)
    keep = {"layers.0.weight": 0, "layers.1.weight": 30000, "layers.2.weight": 17}
    assert mask_counts(random_masks(shapes, keep=keep, generator=generator(0))) == keep


def test_random_masks_errors():
    shapes = {"a": torch.Size([3, 3])}
    with pytest.raises(ConfigError, match="exactly one"):
        random_masks(shapes, generator=generator(0))
    with pytest.raises(ConfigError, match="exactly one"):
        random_masks(shapes, {"a": 0.5}, {"a": 3}, generator=generator(0))
    with pytest.raises(ConfigError, match="cannot keep"):
        random_masks(shapes, keep={"a": 10}, generator=generator(0))
    with pytest.raises(ConfigError, match="Generator"):
        random_masks(shapes, keep={"a": 1}, generator=0)


# --- pruning rates -------------------------------------------------------------------


def test_layer_rates_overrides():
    names = list(LENET_1D)
    assert layer_rates(names, 0.2, {"last": 0.1}) == {
        "layers.0.weight": 0.2,
        "layers.1.weight": 0.2,
        "layers.2.weight": 0.1,
    }
    r = layer_rates(names, 0.2, {"first": 0.3, "layers.1": 0.0, "*.2.weight": 0.05})
    assert r == {"layers.0.weight": 0.3, "layers.1.weight": 0.0, "layers.2.weight": 0.05}
    assert layer_rates(names, 0.5, {"layers.*": 0.4, "last": 0.1})["layers.2.weight"] == 0.1
    with pytest.raises(ConfigError, match="matches no layer"):
        layer_rates(names, 0.2, {"classifier": 0.1})


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_bad_rates_raise(bad):
    with pytest.raises(ConfigError, match=r"pruning rate must be in \(0, 1\)"):
        layer_rates(["a"], bad)
    with pytest.raises(ConfigError, match=r"pruning rate must be in \(0, 1\)"):
        IMPConfig(rate=bad)
    with pytest.raises(ConfigError, match="override"):
        layer_rates(["a"], 0.2, {"a": 1.0})


def test_imp_config_validation():
    with pytest.raises(ConfigError, match="target density"):
        IMPConfig(target_density=0.0)
    with pytest.raises(ConfigError, match="target density"):
        IMPConfig(target_density=1.0)
    for bad in ("best", -1, True, 2.5):
        with pytest.raises(ConfigError, match="rewind"):
            IMPConfig(rewind=bad)
    with pytest.raises(ConfigError, match="scope"):
        IMPConfig(scope="per-neuron")
    with pytest.raises(ConfigError, match="max_rounds"):
        IMPConfig(max_rounds=0)
    with pytest.raises(ConfigError, match="override"):
        IMPConfig(rate_overrides={"last": 1.0})
    assert IMPConfig(rewind="100").rewind == 100
    assert IMPConfig().rewind_step == 0 and IMPConfig(rewind=7).rewind_step == 7
    assert IMPConfig().rate_overrides == {"last": 0.1}


# --- imp_step and the density schedule -----------------------------------------------


def test_imp_step_layerwise_nested_and_counts():
    w = _weights(2, LENET_1D)
    rates = layer_rates(list(w), 0.2, {"last": 0.1})
    prev = None
    alive = {n: math.prod(s) for n, s in LENET_1D.items()}
    for _ in range(3):
        masks = imp_step(w, prev, rates)
        for n in w:
            alive[n] -= int(Fraction(str(rates[n])) * alive[n] + Fraction(1, 2))
            assert int(masks[n].sum()) == alive[n]
            if prev is not None:
                assert torch.all(masks[n] <= prev[n])
            # pruned ones are the smallest among the previously alive
            was = prev[n] if prev is not None else torch.ones_like(masks[n])
            gone = was & ~masks[n]
            assert w[n].abs()[gone].max() <= w[n].abs()[masks[n]].min()
        prev = masks
    assert alive == {"layers.0.weight": 6144, "layers.1.weight": 15360, "layers.2.weight": 729}


def test_imp_step_global():
    w = _weights(3, LENET_1D)
    w["layers.1.weight"] *= 0.1  # small weights: global pruning hits this layer hardest
    rates = {n: 0.2 for n in w}
    m = imp_step(w, None, rates, scope="global")
    assert sum(mask_counts(m).values()) == 43000 - 8600
    assert mask_counts(m)["layers.1.weight"] < 0.8 * 30000
    m2 = imp_step(w, m, {**rates, "layers.2.weight": 0.0}, scope="global")
    assert torch.equal(m2["layers.2.weight"], m["layers.2.weight"])  # rate 0: not in the pool
    pool_alive = sum(mask_counts(m).values()) - mask_counts(m)["layers.2.weight"]
    assert sum(mask_counts(m2).values()) - mask_counts(m2)["layers.2.weight"] == pool_alive - int(
        Fraction(1, 5) * pool_alive + Fraction(1, 2)
    )
    assert all(torch.all(m2[n] <= m[n]) for n in w)
    with pytest.raises(ConfigError, match="scope"):
        imp_step(w, None, rates, scope="local")
    with pytest.raises(ConfigError, match="no pruning rate"):
        imp_step(w, None, {"layers.0.weight": 0.2})


@pytest.mark.parametrize(
    "alive, rates",
    [
        ([12000, 30000, 1000], [0.2, 0.2, 0.1]),  # LeNet-300-100 on MNIST-1D, last at half rate
        ([5, 7, 9], [0.3, 0.5, 0.1]),  # every layer rounds half up
        ([40, 3000, 10], [0.25, 0.0, 0.9]),  # a rate-0 layer stays out of the pool
    ],
)
def test_global_removals_equal_the_layerwise_total(alive, rates):
    """Global pruning with per-layer rate overrides removes, in total, exactly what
    layer-wise pruning with the same rates removes (rates weighted by alive counts), not
    ``mean(rates) · alive`` (the unweighted average)."""
    names = [f"l{i}.weight" for i in range(len(alive))]
    shapes = {n: torch.Size([a]) for n, a in zip(names, alive, strict=True)}
    rate = dict(zip(names, rates, strict=True))
    w = _weights(4, shapes)
    layerwise = imp_step(w, None, rate, scope="layerwise")
    removed_layerwise = sum(alive) - sum(mask_counts(layerwise).values())
    assert global_removals(dict(zip(names, alive, strict=True)), rate) == removed_layerwise
    pool = [n for n in names if rate[n] > 0]
    kept = global_masks(
        {n: w[n].abs() for n in pool},
        sum(shapes[n].numel() for n in pool)
        - global_removals({n: shapes[n].numel() for n in pool}, rate),
    )
    removed_global = sum(shapes[n].numel() for n in pool) - sum(mask_counts(kept).values())
    assert removed_global == removed_layerwise
    if alive[0] == 12000:  # the unweighted mean would remove 7167, not 8500
        unweighted = round_half_up(Fraction(1, 2) / 3, sum(alive))
        assert (unweighted, removed_layerwise) == (7167, 8500)
    with pytest.raises(ConfigError, match="no pruning rate"):
        global_removals({"x": 3}, {})


def test_density_schedule_lenet_40_300_100_10():
    schedule = density_schedule(LENET_1D, IMPConfig(rate=0.2, rate_overrides={"last": 0.1}))
    # independent integer bookkeeping with round-half-up
    alive = [12000, 30000, 1000]
    rates = [Fraction(1, 5), Fraction(1, 5), Fraction(1, 10)]
    expected = [1.0]
    while expected[-1] > 0.05:
        alive = [a - int(r * a + Fraction(1, 2)) for a, r in zip(alive, rates, strict=True)]
        expected.append(sum(alive) / 43000)
    assert schedule == expected
    assert schedule[1] == 34500 / 43000
    assert schedule[-1] <= 0.05 < schedule[-2]
    assert len(schedule) == 15
    assert all(a > b for a, b in zip(schedule, schedule[1:], strict=False))
    short = density_schedule(LENET_1D, IMPConfig(max_rounds=3))
    assert short == schedule[:4]
    glob = density_schedule(LENET_1D, IMPConfig(scope="global", rate_overrides={}))
    assert glob[:4] == [1.0, 0.8, 0.64, 0.512]


# --- the sequential IMP reference ----------------------------------------------------


@pytest.fixture(scope="module")
def small_digits() -> TaskData:
    d = load_dataset("digits")

    def cut(s: Split, n: int) -> Split:
        return Split(s.x[:n], s.y[:n])

    return TaskData("digits-small", cut(d.train, 256), cut(d.val, 90), cut(d.test, 90), 10)


def _recording_train(log: list):
    def train_fn(model, data, cfg, data_seed, **kw):
        log.append(("start", take_snapshot(model, buffers=False), data_seed))
        result = train(model, data, cfg, data_seed, **kw)
        log.append(("end", weights_of(model), data_seed))
        return result

    return train_fn


@pytest.mark.parametrize("rewind", ["init", 4])
def test_iterative_magnitude_pruning_short_run(small_digits, rewind):
    factory = model_factory(MLP, [64, 32, 16, 10])
    cfg = TrainConfig(epochs=4, batch_size=32, optim=OptimConfig(lr=2e-2))
    imp_cfg = IMPConfig(rate=0.5, rate_overrides={"last": 0.25}, target_density=0.2, rewind=rewind)
    log: list = []
    rounds = iterative_magnitude_pruning(
        factory, small_digits, cfg, imp_cfg, seed=3, train_fn=_recording_train(log)
    )
    shapes = {n: w.shape for n, w in weights_of(factory(3)).items()}
    schedule = density_schedule(shapes, imp_cfg)
    assert len(schedule) == 4  # 1.0, then 3 rounds down to <= 0.2
    assert [r.round for r in rounds] == [0, 1, 2, 3]
    assert [r.density for r in rounds] == pytest.approx(schedule, abs=0)
    assert all(torch.all(r.masks[n]) for n in shapes for r in rounds[:1])
    assert len(log) == 2 * len(rounds) and all(entry[2] == 3 for entry in log)
    theta0 = take_snapshot(factory(3), buffers=False)
    theta_rewind = theta0 if rewind == "init" else rounds[0].result.snapshots[rewind]
    rates = layer_rates(list(shapes), 0.5, {"last": 0.25})
    for i in range(1, len(rounds)):
        prev, cur = rounds[i - 1].masks, rounds[i].masks
        # the masks are IMP's step on the previous round's trained weights
        expected = imp_step(log[2 * (i - 1) + 1][1], prev, rates)
        start, end = log[2 * i][1], log[2 * i + 1][1]
        for n in shapes:
            assert torch.all(cur[n] <= prev[n])
            assert torch.equal(cur[n], expected[n])
            assert torch.equal(start[n][cur[n]], theta_rewind[n][cur[n]])  # rewound survivors
            assert torch.all(start[n][~cur[n]] == 0) and torch.all(end[n][~cur[n]] == 0)
        assert rounds[i].result.final.test_acc > 0.5  # it trained (10 classes, chance 0.1)
    assert torch.equal(log[0][1]["layers.0.weight"], theta0["layers.0.weight"])


def test_imp_rewind_beyond_training_raises(small_digits):
    with pytest.raises(ConfigError, match="rewind step"):
        iterative_magnitude_pruning(
            model_factory(MLP, [64, 8, 10]),
            small_digits,
            TrainConfig(epochs=1, batch_size=32),
            IMPConfig(rewind=1000),
            seed=0,
        )


def test_top_k_equals_a_stable_descending_sort_cut_at_k():
    from weightlab.sparsity.allocation import top_k

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 40, (1,), generator=g))
        v = torch.randint(0, 4, (n,), generator=g).double()  # many ties
        if trial % 3 == 0:
            v[torch.rand(n, generator=g) < 0.3] = -float("inf")
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        want = torch.zeros(n, dtype=torch.bool)
        want[torch.argsort(-v, stable=True)[:k]] = True
        assert torch.equal(top_k(v, k), want), (v, k)


def test_sampled_selection_is_exact_on_large_inputs_ties_and_adversarial_layouts():
    """Above SAMPLED_SELECTION_MIN values the k-th largest is bracketed from a strided
    sample; the masks must still equal a stable descending sort cut at k: for continuous
    values, heavy ties, a layout built so the strided sample misses the top (the fallback
    decides), several tensors at once, and with previous masks (the -inf sentinel path,
    including live -inf scores, which take the exact gather path)."""
    from weightlab.sparsity.allocation import _SAMPLE, SAMPLED_SELECTION_MIN, top_k, top_k_many

    g = torch.Generator().manual_seed(3)
    n = SAMPLED_SELECTION_MIN + 12_345
    stride = n // _SAMPLE
    continuous = torch.randn(n, generator=g)
    tied = torch.randint(0, 5, (n,), generator=g).float()
    hidden = torch.zeros(n)  # every large value sits between the sampled positions
    hidden[torch.arange(n) % stride != 0] = torch.rand(n - n // stride - 1, generator=g) + 1
    hidden = hidden[:n]
    for values in (continuous, tied, hidden):
        for k in (1, 77, n // 10, n // 2, n - 3):
            parts = list(torch.split(values, [n // 3, n - n // 3]))
            want = torch.zeros(n, dtype=torch.bool)
            want[torch.argsort(-values, stable=True)[:k]] = True
            assert torch.equal(top_k(values, k), want)
            assert torch.equal(torch.cat(top_k_many(parts, k)), want)
    scores = {"a": continuous[: n // 2].clone(), "b": tied[n // 2 :].clone()}
    prev = {name: torch.rand(s.shape, generator=g) < 0.6 for name, s in scores.items()}
    scores["a"][:50] = -float("inf")  # live -inf scores next to the dead
    for k in (10, 1000, int(sum(int(m.sum()) for m in prev.values())) - 5):
        got = global_masks(scores, k, prev)
        pool = torch.cat([torch.where(prev[n], scores[n], torch.nan) for n in scores])
        alive = ~torch.isnan(pool)
        order = torch.argsort(-pool[alive], stable=True)[:k]
        want = torch.zeros(n, dtype=torch.bool)
        want[torch.nonzero(alive).reshape(-1)[order]] = True
        assert torch.equal(torch.cat([got[n].reshape(-1) for n in scores]), want), k
        assert all(torch.all(got[n] <= prev[n]) for n in scores)
    with pytest.raises(ConfigError, match="contain NaN"):
        global_masks({"a": torch.tensor([1.0, float("nan")])}, 1)
    lw = layerwise_masks({"t": tied}, {"t": n // 4})["t"]
    want = torch.zeros(n, dtype=torch.bool)
    want[torch.argsort(-tied, stable=True)[: n // 4]] = True
    assert torch.equal(lw, want)


def test_global_masks_fast_path_equals_the_masked_path_and_a_stable_sort():
    from weightlab.sparsity import global_masks

    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        shapes = [tuple(int(v) for v in torch.randint(1, 6, (2,), generator=g)) for _ in range(3)]
        scores = {
            f"l{i}": torch.randint(0, 3, s, generator=g).float() for i, s in enumerate(shapes)
        }
        if trial % 3 == 0:
            scores["l1"] = scores["l1"].double()  # mixed dtypes rank as one pool
        n = sum(v.numel() for v in scores.values())
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        alive = {name: torch.ones_like(v, dtype=torch.bool) for name, v in scores.items()}
        pool = torch.cat([v.reshape(-1).double() for v in scores.values()])
        want = torch.zeros(n, dtype=torch.bool)
        want[torch.argsort(-pool, stable=True)[:k]] = True
        for masks in (global_masks(scores, k), global_masks(scores, k, alive)):
            assert torch.equal(torch.cat([masks[m].reshape(-1) for m in scores]), want)
