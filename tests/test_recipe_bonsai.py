"""The bonsai recipe: claim logic on hand-made rows (held, mean or std failing, shortcut
precondition), bad input, and a smoke run's outputs (units, inits share the readout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.init.bonsai import Bonsai
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import load_tensors, read_json

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(erm_vrex, bonsai_vrex, erm_train=85.0, erm_test=15.0):
    def row(init, method, vals, train=80.0):
        m = sum(vals) / len(vals)
        sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        return {
            "init": init,
            "method": method,
            "test_acc_mean": m,
            "test_acc_std": sd,
            "test_acc_values": vals,
            "train_acc_mean": train,
            "diverged": [],
        }

    return [
        row("erm", "erm", [erm_test] * 2 + [erm_test + 1], erm_train),
        row("erm", "vrex", erm_vrex),
        row("bonsai", "erm", [20, 21, 22]),
        row("bonsai", "vrex", bonsai_vrex),
    ]


def test_claim_logic():
    (c,) = Bonsai.check_claims(_rows([30, 40, 50], [45, 46, 47]))
    assert c.held is True
    (c,) = Bonsai.check_claims(_rows([30, 40, 50], [35, 36, 37]))
    assert c.held is False and "mean ≥ (no)" in c.detail
    (c,) = Bonsai.check_claims(_rows([40, 41, 42], [45, 50, 55]))
    assert c.held is False and "std < (no)" in c.detail
    (c,) = Bonsai.check_claims(_rows([30, 40, 50], [45, 46, 47], erm_train=60, erm_test=50))
    assert c.held is None and "shortcut" in c.detail


def test_bad_config():
    with pytest.raises(ConfigError, match="--seeds"):
        make_config("bonsai", seeds=1)
    with pytest.raises(ConfigError, match="--data"):
        make_config("bonsai", data="mnist1d")  # only coloured digits


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bonsai") / "run"
    run_recipe("bonsai", make_config("bonsai", smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_outputs(smoke):
    assert (smoke / "bonsai.png").read_bytes().startswith(b"\x89PNG")
    s = read_json(smoke / "summary.json")
    assert [(r["init"], r["method"]) for r in s["rows"]] == [
        ("erm", "erm"),
        ("erm", "vrex"),
        ("bonsai", "erm"),
        ("bonsai", "vrex"),
    ]
    assert len(s["pretraining"]) == 2 and all(len(p["fidelity"]) == 2 for p in s["pretraining"])
    t = load_tensors(smoke / "units" / "pretrain-seed-00.safetensors")
    assert t["erm.layers.0.weight"].shape == t["bonsai.layers.0.weight"].shape == (16, 128)
    assert not torch.equal(t["erm.layers.0.weight"], t["bonsai.layers.0.weight"])
    assert [c["id"] for c in s["claims"]] == ["bonsai-vrex"]
