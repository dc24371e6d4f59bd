"""The training-dynamics family's bad input (issue 23): one line, exit code 2, nothing written."""

from __future__ import annotations

import pytest

BAD_INPUT = [
    pytest.param(["advani-saxe", "--noise", "-1"], ["--noise"], id="noise-negative"),
    pytest.param(["dynamical-decoupling", "--noise", "-0.5"], ["--noise"], id="dd-noise"),
    pytest.param(["xor-grokking", "--flip", "0.6"], ["--flip"], id="flip-rate"),
    pytest.param(["dense-hebbian", "--flip", "1.5"], ["--flip"], id="hebbian-flip"),
    pytest.param(["hebbian-multitasking", "--dilutions", "0.1,1.0"], ["dilution"], id="dilution-1"),
    pytest.param(["dense-hebbian", "--sup-qualities", "0,0.5"], ["qualities"], id="quality-0"),
    pytest.param(["dense-hebbian", "--sup-qualities", "0.5,1.5"], ["1.5"], id="quality-above-1"),
    pytest.param(["dense-hebbian", "--order", "1"], ["order P", ">= 2"], id="hebbian-P-1"),
    pytest.param(["hebbian-multitasking", "--n", "0"], ["--n"], id="hebbian-N-0"),
    pytest.param(["hebbian-multitasking", "--k", "0"], ["--k"], id="hebbian-K-0"),
    pytest.param(["dense-hebbian", "--sup-examples", "0,4"], ["examples"], id="hebbian-M-0"),
    pytest.param(["locality", "--s", "0"], ["--s"], id="dsd-s-0"),
    pytest.param(["locality", "--shapes", "0x8"], ["0x8"], id="dsd-k-0"),
    pytest.param(["resnet-shortcuts", "--phase-steps", "300,600"], ["phase"], id="phases"),
    pytest.param(["universality-lens", "--eta", "0"], ["--eta"], id="sgld-eta-0"),
    pytest.param(["advani-saxe", "--dims", "50,20"], ["--dims", "increas"], id="dims-sweep"),
    pytest.param(["grokking-stages", "--fractions", "0.5,0.4"], ["fractions"], id="fractions"),
    pytest.param(["pretraining-advantage", "--sigma", "-1"], ["--sigma"], id="latent-noise"),
    pytest.param(["random-teachers", "--eps", "1.5"], ["--eps"], id="eps-above-1"),
]


@pytest.mark.parametrize("args,needles", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args, needles):
    rc, _, err = cli("run", *args, "--out", tmp_path / "run")
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightlab: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert list(tmp_path.iterdir()) == [], "a failed command must leave no run directory"
