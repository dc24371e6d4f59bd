"""Recipe trsp-gates: the claims' logic on hand-made seeds, the untrained removal scores
against direct removal, bad input before any file, and the smoke run on tiny_bert."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.recipes.sparsity.trsp_gates import TrspGates, cosine_loss
from weightlab.sparsity.gates import remove_layers

pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(s, trsp, mag, imp, imp0=0.5):
    return {
        "seed": s,
        "trsp": trsp,
        "gate-magnitude": mag,
        "importance": imp,
        "importance_untrained": imp0,
    }


def test_claims_need_trsp_ahead_in_every_seed():
    both = [_seed(0, 0.9, 0.8, 0.85), _seed(1, 0.91, 0.7, 0.9)]
    a, b = TrspGates.check_claims(both, [])
    assert a.held is True and b.held is True
    one_loses = [_seed(0, 0.9, 0.8, 0.85), _seed(1, 0.89, 0.7, 0.9)]
    a, b = TrspGates.check_claims(one_loses, [])
    assert a.held is True and b.held is False and "-0.0100" in b.detail
    untrained_better = [_seed(0, 0.9, 0.8, 0.85, imp0=0.86)]
    a, b = TrspGates.check_claims(untrained_better, [])
    assert a.held is None and b.held is None and "lowered" in a.detail
    a, _ = TrspGates.check_claims(both, ["trsp seed 1"])
    assert a.held is None and "diverged" in a.detail


def test_cosine_loss_by_hand():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    torch.testing.assert_close(cosine_loss(p, t), torch.tensor([1.0, 0.0]))


def test_removal_cosines_match_direct_removal():
    cfg = make_config("trsp-gates", smoke=True)
    recipe = TrspGates()
    data = recipe.load_data(cfg)
    enc = recipe._encoder(cfg)
    got = recipe.removal_cosines(enc, data.test, [(1, 3), (0,), (4, 5)])
    for s, v in got.items():
        direct = recipe._encoder(cfg)
        remove_layers(direct, [f"encoder.layer.{i}" for i in s])
        assert v == pytest.approx(recipe.heldout_cosine(direct, data.test), abs=1e-6)


def test_bad_input_is_one_line_before_any_file(tmp_path):
    out = tmp_path / "run"
    cfg = make_config("trsp-gates", smoke=True, n_train=10)
    with pytest.raises(ConfigError, match="--n-train 10 is too small"):
        run_recipe("trsp-gates", cfg, out=out)
    cfg = make_config("trsp-gates", smoke=True, remove=6)
    with pytest.raises(ConfigError, match="--remove must lie in 1..5"):
        run_recipe("trsp-gates", cfg, out=out)
    assert not out.exists()


@pytest.mark.slow  # test_conformance runs the same smoke run in the default suite
def test_smoke_run_on_tiny_bert(tmp_path):
    path, summary = run_recipe(
        "trsp-gates", make_config("trsp-gates", smoke=True), out=tmp_path / "run"
    )
    assert [r["arm"] for r in summary["rows"]] == ["trsp", "gate-magnitude", "importance"]
    assert len(summary["untrained_pairs"]) == 15
    for r in summary["per_seed"]:
        assert len(r["trsp_removed"]) == 2 and len(r["gates_stage1"]) == 6
    assert (path / "report.html").exists()
