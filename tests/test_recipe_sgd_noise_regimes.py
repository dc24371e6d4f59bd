"""Recipe sgd-noise-regimes (methods row [#54]): loss, measurements, T_c, claim logic,
config checks and a tiny run."""

import math

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.population import MemberSpec, Population
from weightlab.recipes.init.sgd_noise_regimes import (
    TC_PTS,
    SGDNoiseConfig,
    SGDNoiseRegimes,
    hinge_loss,
)
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.train.config import OptimConfig, TrainConfig
from weightlab.train.loop import train

TEMPS = [0.01, 0.02, 0.04, 0.08, 0.16]


def test_hinge_loss_hand_computed_and_member_shapes():
    pred = torch.tensor([[2.0], [0.5], [-1.0], [0.2]])
    target = torch.tensor([1, 1, 0, 0])
    # y = +1, +1, -1, -1: max(0, 1 - y F) = 0, 0.5, 0, 1.2
    torch.testing.assert_close(hinge_loss(pred, target), torch.tensor([0.0, 0.5, 0.0, 1.2]))
    assert hinge_loss(torch.zeros(3, 4, 1), target).shape == (3, 4)
    assert hinge_loss(torch.zeros(3, 4, 1), target.expand(3, 4)).shape == (3, 4)


def _task(n=64, d=40, seed=0):
    from weightlab.data.task import Split, TaskData

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] > 0).long()
    return TaskData("toy", Split(x, y), Split(x[:16], y[:16]), Split(x[:32], y[:32]), 2)


def test_measure_is_zero_change_at_init_and_matches_a_hand_sum():
    data = _task()
    factory = SGDNoiseRegimes.factory(8, 10.0)
    model = factory(3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    m = SGDNoiseRegimes.measure(factory, 3, state, data)
    assert m["rel_change"] == 0.0
    assert m["train_err"] == 1.0  # F = 0 everywhere: every margin y F = 0 counts as an error
    state["model.layers.0.weight"] = state["model.layers.0.weight"] + 0.5
    num = 0.5**2 * state["model.layers.0.weight"].numel()
    den = sum(
        float(v.double().square().sum()) for k, v in state.items() if k.startswith("initial.")
    )
    m = SGDNoiseRegimes.measure(factory, 3, state, data)
    assert m["rel_change"] == pytest.approx(math.sqrt(num / den), rel=1e-6)


def test_population_with_per_member_lr_equals_the_loop():
    """T enters as a per-member learning rate; each member trains as the loop would."""
    data = _task()
    factory = SGDNoiseRegimes.factory(8, 10.0)
    lrs = [0.01, 0.1]
    cfg = TrainConfig(3, 16, 0, OptimConfig("sgd", lr=1.0), loss=hinge_loss)
    specs = [MemberSpec(seed=1, data_seed=5, optim=OptimConfig("sgd", lr=lr)) for lr in lrs]
    res = Population(factory, specs, dtype=torch.float64).fit(data, cfg)
    for lr, r in zip(lrs, res, strict=True):
        one = TrainConfig(3, 16, 0, OptimConfig("sgd", lr=lr), loss=hinge_loss)
        ref = train(factory(1).double(), data, one, 5, seed=1, dtype=torch.float64)
        assert r.history[-1].train_loss == pytest.approx(ref.history[-1].train_loss, rel=1e-9)


def _rows(errs: dict, not_fitted=(), diverged=()):
    """errs: {(regime, size): [mean test error per T in TEMPS]}."""
    rows = []
    for (g, size), vals in errs.items():
        for t, e in zip(TEMPS, vals, strict=True):
            name = f"{g} P={size} T={t:g} seed 0"
            rows.append(
                {
                    "regime": g,
                    "size": size,
                    "temp": t,
                    "test_err_mean": e,
                    "not_fitted": [name] if name in not_fitted else [],
                    "diverged": [name] if name in diverged else [],
                }
            )
    return rows


def test_critical_temperature_censoring_and_slope_known_answer():
    base = 30.0
    errs = {
        ("lazy", 100): [base, base + 0.5, base + TC_PTS, base + 3, base + 4],  # T_c = 0.04
        ("lazy", 400): [base, base, base - 1, base - TC_PTS - 0.1, base],  # T_c = 0.08
        ("lazy", 1600): [base, base, base, base, base + 1.9],  # censored
    }
    (tc,) = SGDNoiseRegimes.critical_temperatures(_rows(errs))
    got = [(p["size"], p["t_c"], p["censored"]) for p in tc["sizes"]]
    assert got == [(100, 0.04, False), (400, 0.08, False), (1600, None, True)]
    # T_c doubles when P quadruples: slope log 2 / log 4 = 0.5 over the 2 uncensored sizes
    assert tc["loglog_slope"] == pytest.approx(0.5) and tc["slope_points"] == 2


def _sign_rows(rich, lazy, sizes=(256, 1024, 4000)):
    errs = {}
    for s in sizes:
        errs[("rich", s)] = rich
        errs[("lazy", s)] = lazy
    return errs


def test_claim_a_needs_opposite_signs_at_each_size():
    up, down, flat = [30, 31, 32, 33, 34], [30, 29, 28, 27, 26], [30, 31, 30, 29, 30]
    rows = _rows(_sign_rows(down, up))
    claims = {c.id: c for c in SGDNoiseRegimes.check_claims(rows, [])}
    assert all(claims[f"a-P{s}"].held is True for s in (256, 1024, 4000))
    rows = _rows(_sign_rows(up, up))
    assert SGDNoiseRegimes.check_claims(rows, [])[0].held is False
    rows = _rows(_sign_rows(flat, up))  # a zero change has no direction
    assert SGDNoiseRegimes.check_claims(rows, [])[0].held is False


def test_unfitted_or_diverged_members_make_only_their_cells_not_tested():
    up, down = [30, 31, 32, 33, 34], [30, 29, 28, 27, 26]
    rows = _rows(
        _sign_rows(down, up),
        not_fitted=("lazy P=4000 T=0.01 seed 0",),
        diverged=("rich P=1024 T=0.16 seed 0",),
    )
    tcs = SGDNoiseRegimes.critical_temperatures(rows)
    c = {x.id: x for x in SGDNoiseRegimes.check_claims(rows, tcs)}
    assert c["a-P256"].held is True
    assert c["a-P1024"].held is None and "diverged" in c["a-P1024"].detail
    assert c["a-P4000"].held is None and "zero training error" in c["a-P4000"].detail
    assert c["b-lazy"].held is None and c["b-rich"].held is None


def test_claim_b_rise_and_censoring_rules():
    b = 30.0

    def tc_at(i):  # a cell whose first T moving >= 2 pts is TEMPS[i] (None: censored)
        return [b if (i is None or j < i) else b + 3 for j in range(5)]

    def verdict(idx):
        errs = {("lazy", s): tc_at(i) for s, i in zip((256, 1024, 4000), idx, strict=True)}
        errs.update({("rich", s): tc_at(1) for s in (256, 1024, 4000)})
        rows = _rows(errs)
        c = {
            x.id: x
            for x in SGDNoiseRegimes.check_claims(rows, SGDNoiseRegimes.critical_temperatures(rows))
        }
        return c["b-lazy"].held

    assert verdict((1, 2, 3)) is True
    assert verdict((1, 2, None)) is True  # censored at the largest P: above every T_c
    assert verdict((1, None, None)) is False  # a censored smaller P cannot show a rise
    assert verdict((1, 1, 3)) is False  # not strict
    assert verdict((3, 2, 1)) is False  # falls


def test_config_errors_are_one_line():
    bad = [
        {"sizes": "256,5000", "epochs_per_size": "1,1"},
        {"sizes": "256,1024", "epochs_per_size": "1,2,3"},
        {"temps_lazy": "0.1,x"},
        {"temps_rich": "0.001"},
        {"temps_lazy": "0.1,0.1,0.2"},
        {"alpha_rich": 20.0},
        {"alpha_lazy": 0.0},
    ]
    for kw in bad:
        with pytest.raises(ConfigError) as e:
            SGDNoiseConfig(**kw)
        assert "\n" not in str(e.value)
    recipe = SGDNoiseRegimes()
    with pytest.raises(ConfigError, match="exceeds the smallest size"):
        recipe.validate(SGDNoiseConfig(batch_size=512), {})
    with pytest.raises(ConfigError, match="--data must be mnist1d_binary"):
        recipe.validate(SGDNoiseConfig(data="mnist1d"), {})


@pytest.mark.slow
def test_tiny_run_sets_lr_from_temperature_and_records_every_member(tmp_path):
    cfg = make_config("sgd-noise-regimes", smoke=True)
    _, summary = run_recipe("sgd-noise-regimes", cfg, out=tmp_path / "run")
    assert summary["members"] == 2 * 2 * 2
    for r in summary["rows"]:
        alpha = cfg.alpha_lazy if r["regime"] == "lazy" else cfg.alpha_rich
        assert r["lr"] == pytest.approx(r["temp"] * cfg.batch_size / alpha**2)
        assert r["rel_change_mean"] > 0
    assert {c["id"] for c in summary["claims"]} == {"a-P32", "a-P64", "b-rich", "b-lazy"}


def test_claim_b_reads_only_the_temperatures_up_to_t_c():
    """A member that did not fit above T_c cannot change T_c, so it does not block claim b;
    one at or below T_c does, and so does any member of a censored P."""
    b = 30.0

    def cell(i):
        return [b if j < i else b + 3 for j in range(5)]

    errs = {("lazy", s): cell(i) for s, i in zip((256, 1024, 4000), (1, 2, 3), strict=True)}
    errs.update({("rich", s): cell(1) for s in (256, 1024, 4000)})

    def b_lazy(not_fitted):
        rows = _rows(errs, not_fitted=not_fitted)
        tcs = SGDNoiseRegimes.critical_temperatures(rows)
        return {c.id: c for c in SGDNoiseRegimes.check_claims(rows, tcs)}["b-lazy"]

    above = b_lazy((f"lazy P=4000 T={TEMPS[4]:g} seed 0",))  # T_c at P=4000 is TEMPS[3]
    assert above.held is True
    at = b_lazy((f"lazy P=4000 T={TEMPS[3]:g} seed 0",))
    assert at.held is None and "zero training error" in at.detail
