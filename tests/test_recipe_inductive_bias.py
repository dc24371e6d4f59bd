"""The inductive-bias recipe: the digits subset and eps rule, a smoke run with resume, the claim
logic (rising bits with a resolution, non-overlapping seed ranges, model misfit -> not
tested), and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.recipes.kernels.inductive_bias import InductiveBias, digits_subset, eps_for
from weightlab.recipes.runner import make_config, run_recipe
from weightlab.runs import read_json

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "inductive-bias"


def test_eps_rule_and_subset():
    y = torch.tensor([0, 1, 0, 1])
    cls = TaskData(
        "t",
        Split(torch.zeros(4, 2), y),
        Split(torch.zeros(4, 2), y),
        Split(torch.zeros(4, 2), y),
        2,
    )
    # one-hot columns each have sample variance 1/3: eps = 0.5 * 1/3
    assert eps_for(cls) == pytest.approx(0.5 / 3)
    reg = TaskData(
        "r",
        Split(torch.zeros(3, 1), torch.zeros(3, 1)),
        Split(torch.zeros(3, 1), torch.zeros(3, 1)),
        Split(torch.zeros(3, 1), torch.tensor([[1.0], [2.0], [3.0]])),
        0,
        "regression",
    )
    assert eps_for(reg) == pytest.approx(0.5)
    big = TaskData(
        "b",
        Split(torch.arange(20.0)[:, None], torch.arange(20) % 2),
        Split(torch.zeros(1, 1), torch.zeros(1).long()),
        Split(torch.zeros(1, 1), torch.zeros(1).long()),
        2,
    )
    sub = digits_subset(big, 5, 0)
    assert len(sub.train) == 5 and len(set(sub.train.x.flatten().tolist())) == 5
    assert torch.equal(sub.train.x, digits_subset(big, 5, 0).train.x)
    with pytest.raises(ConfigError, match="exceeds"):
        digits_subset(big, 50, 0)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ib") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    run_recipe(NAME, make_config(NAME, smoke=True), out=out)
    torch.set_num_threads(before)
    return out


def test_smoke_run_and_resume(smoke, tmp_path):
    s = read_json(smoke / "summary.json")
    assert s["loss_model"] == "lognormal" and "log test losses" in s["loss_model_description"]
    assert {(r["task"], r["space"]) for r in s["rows"]} == {
        ("teacher", "relu"),
        ("digits", "relu"),
        ("digits", "fourier"),
    }
    assert (smoke / "inductive_bias.png").read_bytes().startswith(b"\x89PNG")
    copy = tmp_path / "copy"
    shutil.copytree(smoke, copy)
    (copy / "units" / "seed-01.json").unlink()
    run_recipe(NAME, make_config(NAME, smoke=True), out=copy)
    assert read_json(copy / "timing.json")["computed_units"] == ["seed-01"]
    assert (copy / "summary.json").read_bytes() == (smoke / "summary.json").read_bytes()


def _rows(teacher_bits, relu, fourier, misfit=()):
    rows = []
    for d, bits in teacher_bits.items():
        rows.append(
            {
                "task": "teacher",
                "space": "relu",
                "d": d,
                "bits_mean": sum(bits) / len(bits),
                "bits_std": 0.0,
                "bits_values": bits,
                "inconsistent_seeds": [0] if ("teacher", d) in misfit else [],
            }
        )
    for space, bits in (("relu", relu), ("fourier", fourier)):
        rows.append(
            {
                "task": "digits",
                "space": space,
                "d": 64,
                "bits_mean": sum(bits) / len(bits),
                "bits_std": 0.0,
                "bits_values": bits,
                "inconsistent_seeds": [0] if ("digits", space) in misfit else [],
            }
        )
    return rows


def test_claim_logic():
    good = {4: [0.0, 0.0], 8: [0.5, 0.7], 16: [8.0, 9.0], 32: [18.0, 20.0]}
    c = {x.id: x for x in InductiveBias.check_claims(_rows(good, [2.0, 3.0], [25.0, 30.0]))}
    assert c["a"].verdict == "held" and c["b"].verdict == "held"
    # two dimensions both at ~0 bits: not a rise
    flat = {4: [0.0, 0.0], 8: [1e-9, 1e-9], 16: [8.0, 9.0]}
    assert InductiveBias.check_claims(_rows(flat, [2.0], [25.0]))[0].verdict == "did not hold"
    # overlapping seed ranges
    c = InductiveBias.check_claims(_rows(good, [2.0, 26.0], [25.0, 30.0]))
    assert c[1].verdict == "did not hold"
    # a misfitting loss model on a task the claim reads
    c = InductiveBias.check_claims(
        _rows(good, [2.0, 3.0], [25.0, 30.0], misfit=[("teacher", 16), ("digits", "relu")])
    )
    assert [x.verdict for x in c] == ["not tested", "not tested"]
    assert "binomial" in c[0].detail


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"dims": "4,x"}, "dims"),
        ({"width": 0}, "width"),
        ({"model": "gamma"}, "model"),
        ({"hypotheses": 1}, "hypotheses"),
    ],
)
def test_bad_config_is_one_line(override, match):
    with pytest.raises(ConfigError, match=match) as e:
        make_config(NAME, smoke=True, **override)
    assert "\n" not in str(e.value)
