"""fit_power_law: exact power laws (with and without an offset), noise, bad input."""

from __future__ import annotations

import pytest
import torch

from weightlab.errors import ConfigError
from weightlab.kernels.power_law import fit_power_law
from weightlab.seeding import generator


def test_an_exact_power_law_is_recovered():
    x = torch.tensor([10.0, 30.0, 100.0, 300.0, 1000.0], dtype=torch.float64)
    fit = fit_power_law(x, 3.0 * x**-0.75)
    assert fit.exponent == pytest.approx(0.75, abs=1e-12)
    assert fit.slope == pytest.approx(-0.75, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.offset == 0.0 and fit.n_points == 5
    assert fit.exponent_stderr == pytest.approx(0.0, abs=1e-10)
    torch.testing.assert_close(fit.predict(x), 3.0 * x**-0.75)
    rising = fit_power_law([1, 2, 4], [1.0, 4.0, 16.0])  # lists work; exponent -2
    assert rising.exponent == pytest.approx(-2.0)


def test_an_offset_power_law_is_recovered():
    x = torch.logspace(1, 4, 12, dtype=torch.float64)
    loss = 2.0 * x**-1.0 + 0.01
    fit = fit_power_law(x, loss, offset=True)
    assert fit.exponent == pytest.approx(1.0, abs=1e-4)
    assert fit.prefactor == pytest.approx(2.0, rel=1e-3)
    assert fit.offset == pytest.approx(0.01, rel=1e-4)
    assert fit.r2 > 0.999999
    plain = fit_power_law(x, loss)  # without the offset the slope flattens
    assert plain.exponent < 0.8
    zero = fit_power_law(x, 2.0 * x**-0.5, offset=True)  # no offset to find
    assert zero.offset == pytest.approx(0.0, abs=1e-6 * float((2.0 * x**-0.5).min()))
    assert zero.exponent == pytest.approx(0.5, abs=1e-4)


def test_noisy_power_law_exponent_within_its_standard_errors():
    g = generator(0)
    x = torch.logspace(1, 3, 20, dtype=torch.float64)
    noise = torch.exp(0.05 * torch.randn(20, generator=g, dtype=torch.float64))
    fit = fit_power_law(x, 5.0 * x**-0.5 * noise)
    assert abs(fit.exponent - 0.5) < 4 * fit.exponent_stderr
    assert 0 < fit.exponent_stderr < 0.05 and 0.9 < fit.r2 < 1.0


@pytest.mark.parametrize(
    "x, loss, kw, match",
    [
        ([1, 2, 0], [1, 2, 3], {}, "strictly positive x"),
        ([1, 2, 3], [1, -2, 3], {}, "strictly positive loss"),
        ([1, 2], [1, 2], {}, "at least 3 points"),
        ([1, 2, 3], [1, 2, 3], {"offset": True}, "at least 4 points"),
        ([1, 2, 3], [1, 2], {}, "x has 3 points but loss has 2"),
        ([2, 2, 2], [1, 2, 3], {}, "two distinct x"),
    ],
)
def test_bad_input_is_one_line(x, loss, kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        fit_power_law(x, loss, **kw)
    assert "\n" not in str(e.value)
