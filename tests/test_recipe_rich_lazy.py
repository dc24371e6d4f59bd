"""Recipe rich-lazy (methods row [#5]): claim logic, config checks and a tiny run."""

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.init.rich_lazy import W0, RichLazy, RichLazyConfig
from weightlab.recipes.runner import make_config, run_recipe


def _row(arm, rank, w0, not_reached=(), diverged=()):
    return {
        "arm": arm,
        "rank": rank,
        f"{W0}_mean": w0,
        "not_reached": list(not_reached),
        "diverged": list(diverged),
    }


def _rows(random_means, aligned_means):
    ranks = [1, 2, 4, 8, None]
    rows = [_row("random", r, m) for r, m in zip(ranks, random_means, strict=True)]
    rows += [_row("aligned", r, m) for r, m in zip([1, 2], aligned_means, strict=True)]
    return rows


def test_claims_hold_on_a_monotone_fall_and_lower_aligned():
    a, b = RichLazy.check_claims(_rows([0.5, 0.4, 0.3, 0.2, 0.1], [0.3, 0.1]))
    assert a.held is True and a.evidence["run"] == 5
    assert b.held is True


def test_claim_a_needs_four_consecutive_falling_ranks():
    # falls 1->2, rises 2->4, falls 4->8->full: longest run is 3 ranks
    a, _ = RichLazy.check_claims(_rows([0.5, 0.4, 0.45, 0.3, 0.2], [0.3, 0.1]))
    assert a.held is False and a.evidence["run"] == 3
    # a rise at the start only: 2, 4, 8, full fall -> 4 ranks
    a, _ = RichLazy.check_claims(_rows([0.3, 0.4, 0.35, 0.3, 0.2], [0.3, 0.1]))
    assert a.held is True and a.evidence["run"] == 4


def test_claim_b_fails_when_aligned_is_not_lower_at_rank_2():
    _, b = RichLazy.check_claims(_rows([0.5, 0.4, 0.3, 0.2, 0.1], [0.3, 0.4]))
    assert b.held is False


def test_members_that_miss_the_target_make_claims_not_tested():
    rows = _rows([0.5, 0.4, 0.3, 0.2, 0.1], [0.3, 0.1])
    rows[0]["not_reached"] = ["random r=1 seed 0"]
    rows[-1]["diverged"] = ["aligned r=2 seed 1"]
    a, b = RichLazy.check_claims(rows)
    assert a.held is None and "did not reach" in a.detail
    assert b.held is None and "diverged" in b.detail


def test_config_errors_are_one_line():
    for bad in ("1,x", "0,2", "2,2", ""):
        with pytest.raises(ConfigError, match="ranks") as e:
            RichLazyConfig(ranks=bad)
        assert "\n" not in str(e.value)
    cfg = RichLazyConfig(ranks="1,64")
    with pytest.raises(ConfigError, match="not below W0's smaller side"):
        RichLazy().validate(cfg, {"train": 256, "val": 100, "test": 200})


@pytest.mark.slow
def test_tiny_run_records_rank_and_reaches_target(tmp_path):
    cfg = make_config("rich-lazy", smoke=True, seeds=1, steps=300)
    _, summary = run_recipe("rich-lazy", cfg, out=tmp_path / "run")
    rows = {(r["arm"], r["rank"]): r for r in summary["rows"]}
    assert rows[("random", 1)]["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert rows[("aligned", 1)]["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert rows[("random", None)]["effective_rank"] > 4
    assert all(r["n"] == 1 for r in summary["rows"])  # everyone reached the target
    assert summary["target_loss"] == pytest.approx(0.05 * summary["start_loss"])
    assert all(r[f"{W0}_mean"] > 0 for r in summary["rows"])
