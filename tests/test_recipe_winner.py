"""Recipe ``winner``: its PSNR and spectral-energy measures on known answers, the claim
logic on hand-made rows, and config errors (the smoke and broken runs are in
tests/test_conformance.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.recipes.init.winner import (
    WinnerConfig,
    WinnerRecipe,
    binned_power,
    energy_recovered,
    psnr_db,
)
from weightlab.recipes.runner import make_config


def _band_signal(n=256, lo=64, hi=127):
    g = torch.Generator().manual_seed(0)
    spec = torch.fft.rfft(torch.randn(n, generator=g, dtype=torch.float64))
    k = torch.arange(len(spec))
    spec[(k < lo) | (k > hi)] = 0
    return torch.fft.irfft(spec, n=n)


def test_psnr_known_answers():
    y = torch.tensor([0.0, 1.0, -1.0, 0.5])
    pred = y + torch.tensor([0.1, -0.1, 0.1, -0.1])
    # (max - min)^2 = 4, MSE = 0.01 -> 10 log10(400)
    assert psnr_db(pred, y) == pytest.approx(10 * math.log10(400))
    assert psnr_db(y, y) == math.inf
    assert math.isnan(psnr_db(torch.full((4,), float("nan")), y))


def test_energy_recovered_known_answers():
    y = _band_signal()
    assert energy_recovered(y, y, 64, 127) == pytest.approx(1.0)
    assert energy_recovered(torch.zeros_like(y), y, 64, 127) == pytest.approx(0.0)
    assert energy_recovered(y / 2, y, 64, 127) == pytest.approx(0.75)
    # content outside the band does not count
    t = torch.arange(256, dtype=torch.float64)
    off = torch.cos(2 * math.pi * 10 * t / 256)
    assert energy_recovered(off, y, 64, 127) == pytest.approx(0.0, abs=1e-12)
    p = binned_power(y, 4)
    assert len(p) == 4 and p[0] == pytest.approx(0.0, abs=1e-20) and p[2] > 0


def _rows(std_energy, std_psnr, win_psnr, diverged=()):
    def row(arm, e, p):
        return {
            "arm": arm,
            "energy_mean": e,
            "energy_std": 0.0,
            "energy_values": [e] * 3,
            "psnr_mean": p,
            "n": 3,
            "excluded": [x for x in diverged if x.startswith(arm)],
        }

    return [row("standard", std_energy, std_psnr), row("winner", 0.99, win_psnr)]


def test_claims_held_did_not_hold_and_not_tested():
    held = WinnerRecipe.check_claims(_rows(0.01, 16.0, 40.0), best_energy=0.99)
    assert [c.held for c in held] == [True, True]
    failed = WinnerRecipe.check_claims(_rows(0.6, 16.0, 22.0), best_energy=0.99)
    assert [c.held for c in failed] == [False, False]
    assert "gain +6.00 dB" in failed[1].detail
    # no member fits: (a) is not tested; (b), a comparison at the same budget, fails
    short = WinnerRecipe.check_claims(_rows(0.01, 16.0, 17.0), best_energy=0.2)
    assert [c.held for c in short] == [None, False]
    assert "no member fits the signal" in short[0].detail
    assert "gain +1.00 dB" in short[1].detail
    div = WinnerRecipe.check_claims(
        _rows(0.01, 16.0, 40.0, diverged=("winner seed 1",)), best_energy=0.99
    )
    assert [c.held for c in div] == [None, None] and "diverged" in div[1].detail


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="Nyquist"):
        WinnerConfig(n=256, f_lo=64, f_hi=128)
    with pytest.raises(ConfigError, match="f_lo <= f_hi"):
        WinnerConfig(n=4096, f_lo=300, f_hi=200)
    with pytest.raises(ConfigError, match="--lr"):
        WinnerConfig(lr=0)
    cfg = make_config("winner")
    assert (cfg.n, cfg.f_lo, cfg.f_hi, cfg.width, cfg.seeds) == (4096, 1024, 2047, 128, 3)
    assert np.isclose(cfg.lr, 1e-4)
