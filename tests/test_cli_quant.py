"""``weightlab quant pack`` / ``weightlab quant inspect`` and their one-line errors (exit 2),
through ``weightlab.cli.main``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightlab.cli import main
from weightlab.quant.export import META_KEY, load_packed
from weightlab.quant.quantizer import Quantizer, QuantSpec


@pytest.fixture
def weights(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "layers.0.weight": torch.randn(64, 40, generator=g) * 0.2,
        "layers.0.bias": torch.randn(64, generator=g),
        "layers.1.weight": torch.randn(10, 64, generator=g) * 0.2,
        "layers.1.bias": torch.randn(10, generator=g),
        "steps": torch.tensor([3]),
    }
    path = tmp_path / "weights.safetensors"
    save_file(state, path)
    return path, state


def _one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightlab: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _fake_quant(spec: QuantSpec, w: torch.Tensor) -> torch.Tensor:
    q = Quantizer(spec, w).eval()
    with torch.no_grad():
        return q(w)


@pytest.mark.parametrize(
    "flags, spec",
    [
        (["--bits", "8"], QuantSpec(8)),
        (["--bits", "4", "--granularity", "8"], QuantSpec(4, granularity=8)),
        (
            ["--bits", "3", "--levels", "power", "--scale", "mse", "--exponent", "0.5"],
            QuantSpec(3, "power", "mse", exponent=0.5),
        ),
        (
            ["--bits", "3", "--levels", "shift", "--granularity", "tensor"],
            QuantSpec(3, "shift", granularity="tensor"),
        ),
    ],
)
def test_pack_then_inspect(tmp_path, capsys, weights, flags, spec):
    src, state = weights
    out = tmp_path / "packed.safetensors"
    assert main(["quant", "pack", str(src), str(out), *flags]) == 0
    printed = capsys.readouterr().out
    assert spec.describe() in printed and "FP32" in printed and f"wrote {out}" in printed
    loaded = load_packed(out)
    assert set(loaded) == set(state)
    for name in ("layers.0.weight", "layers.1.weight"):
        assert torch.equal(loaded[name], _fake_quant(spec, state[name]))
    for name in ("layers.0.bias", "layers.1.bias", "steps"):
        assert torch.equal(loaded[name], state[name])  # 1-D and integer tensors as they were
    assert main(["quant", "inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "loads (5 tensors, 2 quantized, all decoded)" in printed
    assert spec.describe() in printed


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--bits", "0"], "--bits must be from 1 to 16, got 0"),
        (["--bits", "17"], "--bits must be from 1 to 16, got 17"),
        (
            ["--bits", "4", "--granularity", "16"],
            "group size 16 does not divide the input dimension 40",
        ),
        (
            ["--bits", "3", "--levels", "power", "--exponent", "1.5"],
            "exponent a must lie in (0, 1]",
        ),
        (["--bits", "3", "--levels", "power", "--exponent", "0"], "exponent a must lie in (0, 1]"),
        (["--bits", "3", "--exponent", "0.5"], "--exponent applies to --levels power only"),
        (["--bits", "3", "--granularity", "rows"], "--granularity must be 'tensor', 'channel'"),
        (["--bits", "3", "--levels", "nf4"], "invalid choice: 'nf4'"),
        (["--bits", "1"], "bits must be an integer from 2 to 16"),
    ],
)
def test_bad_pack_flags_are_one_line_errors(tmp_path, capsys, weights, flags, needle):
    src, _ = weights
    out = tmp_path / "packed.safetensors"
    rc = main(["quant", "pack", str(src), str(out), *flags])
    _one_line_error(capsys, rc, needle)
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_missing_input_and_same_output(tmp_path, capsys, weights):
    src, _ = weights
    rc = main(
        ["quant", "pack", str(tmp_path / "nope.safetensors"), str(tmp_path / "o"), "--bits", "4"]
    )
    _one_line_error(capsys, rc, "does not exist")
    rc = main(["quant", "pack", str(src), str(src), "--bits", "4"])
    _one_line_error(capsys, rc, "OUT must differ from IN")
    rc = main(["quant"])
    _one_line_error(capsys, rc, "pack,inspect")


def test_a_packed_file_whose_scales_are_missing(tmp_path, capsys, weights):
    src, _ = weights
    out = tmp_path / "packed.safetensors"
    assert main(["quant", "pack", str(src), str(out), "--bits", "4"]) == 0
    capsys.readouterr()
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(out)
    del tensors["scale:layers.1.weight"]
    bad = tmp_path / "noscale.safetensors"
    save_file(tensors, bad, metadata=meta)
    rc = main(["quant", "inspect", str(bad)])
    _one_line_error(capsys, rc, str(bad), "missing the scales of 'layers.1.weight'")
    # a corrupt header and a plain (unpacked) file
    broken = tmp_path / "broken.safetensors"
    save_file(load_file(out), broken, metadata={META_KEY: json.dumps({"format": "x"})})
    _one_line_error(capsys, main(["quant", "inspect", str(broken)]), "not 'weightlab-quant-pack'")
    _one_line_error(capsys, main(["quant", "inspect", str(src)]), "not a weightlab packed file")
