"""Dense Hebbian memories (weightlab.dynamics.hebbian): exact energy changes and
zero-temperature dynamics against per-spin loops in Python integers and brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from weightlab.dynamics.hebbian import (
    DenseHebbian,
    corrupt,
    overlaps,
    random_patterns,
    supervised_patterns,
)
from weightlab.errors import ConfigError
from weightlab.seeding import generator


# -- references: plain Python integers, one spin at a time --------------------------------
def _int_energy(u: list[list[int]], sigma: list[int], p: int) -> int:
    """``Σ_μ (u_μ · σ)^P`` (``-E`` up to the positive factor ``N (cN)^{-P}``)."""
    return sum(sum(a * b for a, b in zip(row, sigma, strict=True)) ** p for row in u)


def _int_gain(u, sigma, p, i) -> int:
    flipped = list(sigma)
    flipped[i] = -flipped[i]
    return _int_energy(u, flipped, p) - _int_energy(u, sigma, p)


def _naive_sync_history(u, sigma, p, max_sweeps):
    """States after sweeps 0..max_sweeps of the synchronous per-spin loop."""
    out = [list(sigma)]
    for _ in range(max_sweeps):
        cur = out[-1]
        out.append([-x if _int_gain(u, cur, p, i) > 0 else x for i, x in enumerate(cur)])
    return out


def _naive_sync(u, sigma, p, max_sweeps):
    return _naive_sync_history(u, sigma, p, max_sweeps)[-1]


def _naive_async(u, sigma, p, max_sweeps, order):
    sigma = list(sigma)
    for _ in range(max_sweeps):
        moved = False
        for i in order:
            if _int_gain(u, sigma, p, i) > 0:
                sigma[i] = -sigma[i]
                moved = True
        if not moved:
            break
    return sigma


def _ints(t: torch.Tensor) -> list:
    return t.to(torch.int64).tolist()


def _patterns(kind: str, k: int, n: int, seed: int):
    g = generator(seed)
    if kind == "binary":
        return random_patterns(k, n, g), 1.0
    if kind == "diluted":
        return random_patterns(k, n, g, dilution=0.4), 1.0
    sp = supervised_patterns(random_patterns(k, n, g), 5, 0.3, g)
    return sp.values, sp.scale


KINDS = ("binary", "diluted", "supervised")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", [2, 3, 4, 5])
def test_gains_equal_the_integer_energy_difference_of_every_single_flip(kind, p):
    u, scale = _patterns(kind, 6, 11, 10 * p + len(kind))
    sigma = corrupt(torch.ones(5, 11), 0.5, generator(p))
    net = DenseHebbian(u, p, scale)
    got = net.gains(sigma)
    uu, ss = _ints(u), _ints(sigma)
    want = [[_int_gain(uu, row, p, i) for i in range(11)] for row in ss]
    assert got.tolist() == [[float(v) for v in r] for r in want]  # bit-exact integers


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", [2, 4])
def test_delta_energy_matches_brute_force_energies_on_all_states_of_a_tiny_net(kind, p):
    """N = 8: every one of the 256 states, every spin, against E = -N Σ m^P."""
    n = 8
    u, scale = _patterns(kind, 3, n, 7 + p)
    xi_bar = u / scale
    states = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=n)), dtype=torch.float64)
    net = DenseHebbian(u, p, scale)

    def energy(s):
        return -n * ((s @ xi_bar.T / n) ** p).sum(-1)

    e = energy(states)
    assert torch.allclose(net.energy(states), e, rtol=0, atol=1e-12)
    flipped = states.unsqueeze(1).repeat(1, n, 1)
    flipped[:, torch.arange(n), torch.arange(n)] *= -1
    brute = energy(flipped.reshape(-1, n)).reshape(-1, n) - e[:, None]
    assert torch.allclose(net.delta_energy(states), brute, rtol=0, atol=1e-12)
    # fixed points of the synchronous dynamics are single-flip local minima
    fixed = (net.sync_step(states) == states).all(-1)
    assert fixed.any()
    assert (brute[fixed] >= -1e-12).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", [2, 3, 4])
def test_synchronous_dynamics_equal_a_per_spin_loop(kind, p):
    k, n = (12, 16) if p == 2 else (30, 12)
    u, scale = _patterns(kind, k, n, 100 + p)
    starts = corrupt(torch.where(u[:6] == 0, 1.0, u[:6]), 0.3, generator(p))
    starts = torch.cat([starts, corrupt(torch.ones(4, n), 0.5, generator(p + 1))])
    net = DenseHebbian(u, p, scale)
    hist = [_naive_sync_history(_ints(u), row, p, 30) for row in _ints(starts)]
    for max_sweeps in (1, 2, 7, 30):
        res = net.run_sync(starts, max_sweeps)
        assert _ints(res.sigma) == [h[max_sweeps] for h in hist], max_sweeps


def test_synchronous_two_cycles_end_on_the_parity_of_max_sweeps():
    """A ferromagnet (one all-ones pattern) started antiferromagnetically flips every spin
    every sweep: the state after ``max_sweeps`` alternates with its parity."""
    net = DenseHebbian(torch.ones(1, 4), 2)
    start = torch.tensor([[1.0, -1.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]])
    for t in (1, 2, 3, 6, 9):
        res = net.run_sync(start, t)
        want = [_naive_sync([[1] * 4], row, 2, t) for row in _ints(start)]
        assert _ints(res.sigma) == want
        assert _ints(res.sigma[0]) == ([-1, 1, -1, 1] if t % 2 else [1, -1, 1, -1])
        if t > 1:  # the second trial's fixed point shows at its second sweep
            assert res.converged.tolist() == [False, True]
            assert res.sweeps.tolist() == [t, 1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("p", [2, 4])
def test_asynchronous_dynamics_equal_a_per_spin_loop(kind, p):
    k, n = (10, 14) if p == 2 else (30, 14)
    u, scale = _patterns(kind, k, n, 200 + p)
    starts = corrupt(torch.ones(6, n), 0.5, generator(3))
    order = torch.randperm(n, generator=generator(4))
    net = DenseHebbian(u, p, scale)
    for max_sweeps in (1, 3, 20):
        res = net.run_async(starts, max_sweeps, order)
        want = [_naive_async(_ints(u), r, p, max_sweeps, order.tolist()) for r in _ints(starts)]
        assert _ints(res.sigma) == want
    # a stopped trial is a fixed point: no spin lowers the energy
    res = net.run_async(starts, 50, order)
    assert res.converged.all()
    assert (net.gains(res.sigma) <= 0).all()


def test_per_trial_patterns_equal_each_trial_alone():
    g = generator(5)
    u = torch.stack([random_patterns(3, 20, g, dilution=d) for d in (0.1, 0.5, 0.8)])
    starts = corrupt(torch.ones(3, 20), 0.5, g)
    batched = DenseHebbian(u, 2)
    for run in ("run_sync", "run_async"):
        out = getattr(batched, run)(starts, 10).sigma
        for b in range(3):
            alone = getattr(DenseHebbian(u[b], 2), run)(starts[b : b + 1], 10).sigma
            assert torch.equal(out[b : b + 1], alone), run


def test_pairwise_rule_is_the_zero_diagonal_hopfield_rule():
    g = generator(6)
    xi = random_patterns(7, 30, g)
    sigma = corrupt(torch.ones(8, 30), 0.5, g)
    j = xi.T @ xi
    j.fill_diagonal_(0)
    hop = torch.where(sigma * (sigma @ j) < 0, -sigma, sigma)
    assert torch.equal(DenseHebbian(xi, 2).sync_step(sigma), hop)


def test_patterns_are_seeded_and_have_the_asked_statistics():
    a = random_patterns(50, 400, generator(1), dilution=0.3)
    b = random_patterns(50, 400, generator(1), dilution=0.3)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert abs(float((a == 0).double().mean()) - 0.3) < 0.01
    dense = random_patterns(50, 400, generator(2))
    assert set(dense.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(dense.mean())) < 0.01
    # supervised: one example agrees with its archetype with probability (1 + r) / 2
    xi = random_patterns(40, 500, generator(3))
    one = supervised_patterns(xi, 1, 0.6, generator(4))
    assert one.scale == 1.0 and set(one.values.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((one.values == xi).double().mean()) - 0.8) < 0.01
    many = supervised_patterns(xi, 64, 0.4, generator(5))
    # the mean of M examples is r ξ in expectation, spread (1 - r^2)/M per entry
    assert abs(float((many.mean * xi).mean()) - 0.4) < 0.01
    assert abs(float((many.mean * xi).var()) - (1 - 0.16) / 64) < 0.002
    clean = supervised_patterns(xi, 8, 1.0, generator(6))
    assert clean.scale == 1.0 and torch.equal(clean.values, xi)  # gcd 8 divided out


def test_overlaps_and_corrupted_starts():
    xi = random_patterns(4, 100, generator(7))
    start = corrupt(xi, 0.1, generator(8))
    assert ((start != xi).sum(1) == 10).all()
    m = overlaps(xi, start)
    assert torch.allclose(m.diagonal(), torch.full((4,), 0.8, dtype=torch.float64))
    assert torch.allclose(DenseHebbian(xi, 3).overlaps(start), m)


def test_bad_input_is_one_line_config_error():
    g = generator(0)
    xi = random_patterns(3, 5, g)
    cases = [
        (lambda: DenseHebbian(xi, 1), "P must be an integer >= 2"),
        (lambda: random_patterns(0, 5, g), "K .* >= 1"),
        (lambda: random_patterns(3, 0, g), "N .* >= 1"),
        (lambda: random_patterns(3, 5, g, dilution=1.0), r"dilution d must lie in \[0, 1\)"),
        (lambda: random_patterns(3, 5, g, dilution=-0.1), r"dilution d must lie in \[0, 1\)"),
        (lambda: supervised_patterns(xi, 0, 0.5, g), "M .* >= 1"),
        (lambda: supervised_patterns(xi, 2, 0.0, g), r"quality r must lie in \(0, 1\]"),
        (lambda: supervised_patterns(xi, 2, 1.5, g), r"quality r must lie in \(0, 1\]"),
        (lambda: DenseHebbian(xi * 0.5, 2), "integer-valued"),
    ]
    for fn, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            fn()
        assert "\n" not in str(e.value)


def test_energies_beyond_float64_exactness_raise_instead_of_rounding():
    u = torch.full((2, 1000), 1000.0)
    net = DenseHebbian(u, 4)
    assert net.static_bound > 2.0**53
    with pytest.raises(ConfigError, match="2\\^53"):
        net.gains(torch.ones(1, 1000))
    assert math.isfinite(
        float(DenseHebbian(torch.ones(2, 1000), 4).gains(torch.ones(1, 1000))[0, 0])
    )


def test_hebbian_task_cues_are_patterns_with_flipped_spins():
    from weightlab.data import load_dataset

    d = load_dataset("hebbian", n=50, k=5, dilution=0.2, flip=0.1, n_train=40, n_test=30)
    xi = d.info["patterns"]
    assert d.num_classes == 5 and abs(float((xi == 0).float().mean()) - 0.2) < 0.1
    for split in (d.train, d.test):
        clean = torch.where(xi[split.y] < 0, -1.0, 1.0)
        assert ((split.x != clean).sum(1) == 5).all()


@pytest.mark.parametrize(("order", "k", "n"), [(2, 100, 1000), (3, 12, 300), (4, 40, 60)])
def test_float32_gains_are_the_exact_integers_where_the_bound_allows(order, k, n):
    g = generator(7)
    xi = random_patterns(k, n, g, dilution=0.2)
    net = DenseHebbian(xi, order)
    assert (net.work_dtype == torch.float32) == (net.work_bound < 2.0**24)
    sigma = torch.where(torch.rand(16, n, generator=g) < 0.5, -1.0, 1.0).double()
    s = sigma @ xi.double().T  # (B, K)
    flipped = s[:, :, None] - 2 * xi.double()[None] * sigma[:, None, :]  # (B, K, N)
    want = (flipped**order - s[:, :, None] ** order).sum(1)
    got = net.gains(sigma)
    assert got.dtype == torch.float64 and torch.equal(got, want)
