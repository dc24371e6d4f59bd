"""The shared comma-separated list options (weightlab.recipes.options)."""

import math

import pytest

from weightlab.errors import ConfigError
from weightlab.recipes.options import float_list, int_list


def _err(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_int_list_parses_and_sorts_by_default():
    assert int_list("256,64,1024", "widths") == [64, 256, 1024]
    assert int_list(" 8 , 2", "widths") == [2, 8]
    assert int_list("7", "widths") == [7]


def test_int_list_keeps_order_when_not_sorting():
    assert int_list("5,3,5", "hidden", distinct=False, sort=False) == [5, 3, 5]
    assert int_list("5,3,5", "hidden", distinct=False) == [3, 5, 5]
    assert int_list("4,1", "ranks", sort=False) == [4, 1]


def test_int_list_bad_integer_names_flag_text_and_item():
    msg = _err(int_list, "64,x", "widths")
    assert msg == "--widths must be comma-separated integers; got '64,x' ('x' is not an integer)"
    assert "is not an integer" in _err(int_list, "1.5", "widths")
    assert "'' is not an integer" in _err(int_list, "1,,2", "widths")
    assert "'' is not an integer" in _err(int_list, "", "widths")


def test_int_list_skip_blank():
    assert int_list("1,,2,", "ranks", skip_blank=True) == [1, 2]
    msg = _err(int_list, "", "ranks", skip_blank=True)
    assert msg == "--ranks must be distinct positive integers; got '' (found 0 values)"


def test_int_list_lower_bound():
    msg = _err(int_list, "64,0", "widths")
    assert msg == "--widths must be distinct positive integers; got '64,0' (0 is below 1)"
    msg = _err(int_list, "1,4", "ks", lo=2)
    assert msg == "--ks must be distinct integers >= 2; got '1,4' (1 is below 2)"
    assert int_list("-3,0,2", "offsets", lo=None) == [-3, 0, 2]
    assert "-1 is below 1" in _err(int_list, "-1", "hidden", distinct=False)


def test_int_list_distinct():
    msg = _err(int_list, "2,3,2", "dims")
    assert msg == "--dims must be distinct positive integers; got '2,3,2' (2 repeats)"
    assert int_list("4,4", "teacher-widths", distinct=False, sort=False) == [4, 4]


def test_int_list_strictly_increasing():
    assert int_list("64,256,1024", "widths", increasing=True, sort=False) == [64, 256, 1024]
    msg = _err(int_list, "256,64", "init-widths", increasing=True, sort=False)
    assert msg == (
        "--init-widths must be strictly increasing positive integers; got '256,64' "
        "(64 does not increase on 256)"
    )
    assert "64 does not increase on 64" in _err(int_list, "64,64", "w", increasing=True)


def test_int_list_min_count():
    msg = _err(int_list, "64", "n-values", lo=2, min_count=2)
    assert msg == "--n-values must be at least 2 distinct integers >= 2; got '64' (found 1 value)"
    assert int_list("3,1,2", "s", min_count=3) == [1, 2, 3]
    assert "found 2 values" in _err(int_list, "1,2", "s", min_count=3)


def test_float_list_parses_and_sorts():
    assert float_list("2,0.5,1e-1", "bounds", gt=0) == [0.1, 0.5, 2.0]
    assert float_list("0.75,0.5", "ratios", gt=0, lt=1, sort=False) == [0.75, 0.5]
    assert float_list("0.1,0.1", "b-stds", gt=0, distinct=False, sort=False) == [0.1, 0.1]


def test_float_list_bad_number():
    msg = _err(float_list, "0.5,abc", "ratios")
    assert msg == "--ratios must be comma-separated numbers; got '0.5,abc' ('abc' is not a number)"


def test_float_list_bounds_and_wording():
    msg = _err(float_list, "1,-2", "bounds", gt=0)
    assert (
        msg == "--bounds must be distinct positive finite numbers; got '1,-2' (-2 is out of range)"
    )
    msg = _err(float_list, "0.5,1.5", "ratios", gt=0, lt=1, sort=False)
    assert msg == "--ratios must be distinct numbers in (0, 1); got '0.5,1.5' (1.5 is out of range)"
    assert "0 is out of range" in _err(float_list, "0", "ratios", gt=0, lt=1)
    assert float_list("0,1", "p", ge=0, le=1) == [0.0, 1.0]
    assert "numbers in [0, 1]" in _err(float_list, "2", "p", ge=0, le=1)
    assert "non-negative finite numbers" in _err(float_list, "-1", "x", ge=0)
    assert "finite numbers >= 0.5" in _err(float_list, "0.25", "x", ge=0.5)
    assert "finite numbers < 3" in _err(float_list, "3", "x", lt=3)


def test_float_list_finite():
    assert "inf is not finite" in _err(float_list, "1,inf", "b-stds", gt=0)
    assert "nan is not a number" in _err(float_list, "nan", "b-stds", gt=0)
    assert "nan is not a number" in _err(float_list, "nan", "x", ge=0, le=1)
    vals = float_list("inf,nan", "s", finite=False, distinct=False, sort=False)
    assert math.isinf(vals[0]) and math.isnan(vals[1])


def test_float_list_distinct_and_increasing():
    assert "0.5 repeats" in _err(float_list, "0.5,0.25,0.5", "ratios", gt=0, lt=1)
    assert "0.5 does not increase on 1" in _err(float_list, "1,0.5", "x", increasing=True)
    assert float_list("1,2.5", "x", increasing=True) == [1.0, 2.5]


def test_float_list_rejects_two_lower_bounds():
    with pytest.raises(ValueError):
        float_list("1", "x", gt=0, ge=0)
