"""The Wilson intervals that report.md gives each accuracy."""

from __future__ import annotations

import pytest

from speechgpt.app.compare_report import rate
from speechgpt.eval.intervals import wilson_interval


def test_wilson_interval_matches_the_formula_worked_by_hand() -> None:
    # 23 of 46: centre 0.5, half-width 1.96 / (1 + 1.96^2/46) * sqrt(0.25/46 + 1.96^2/(4 * 46^2)) = 0.13882
    low, high = wilson_interval(0.5, 46)
    assert low == pytest.approx(0.36118, abs=1e-4) and high == pytest.approx(0.63882, abs=1e-4)
    # 0 of 46 is not a zero-width 0%: up to 3.8416 / (46 + 3.8416) = 7.7%
    assert wilson_interval(0.0, 46) == pytest.approx((0.0, 0.07708), abs=1e-4)
    assert wilson_interval(1.0, 46) == pytest.approx((0.92292, 1.0), abs=1e-4)


def test_wilson_interval_narrows_with_more_questions_and_mirrors() -> None:
    small, large = wilson_interval(0.3, 46), wilson_interval(0.3, 460)
    assert small[0] < large[0] < 0.3 < large[1] < small[1]
    low, high = wilson_interval(0.3, 46)
    assert wilson_interval(0.7, 46) == pytest.approx((1 - high, 1 - low))


@pytest.mark.parametrize("rate_value, total", [(0.5, 0), (1.2, 46), (-0.1, 46)])
def test_wilson_interval_refuses_what_is_not_a_rate(rate_value: float, total: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(rate_value, total)


def test_report_cells_show_the_interval_when_the_count_is_known() -> None:
    assert rate(0.2174, 46) == "21.7% (12-36)"
    assert rate(0.5, None) == "50.0%" and rate(None, 46) == "-"


def test_report_rates_print_the_count_not_a_fraction_rounded_twice() -> None:
    from speechgpt.app.compare_report import percent, rate

    assert rate(0.4565, 46) == "45.7% (32-60)"  # 21 of 46, as report.json holds it
    assert rate(round(10 / 46, 4), 46).startswith("21.7% ")
    assert rate(None, 46) == "-" and rate(0.5, None) == "50.0%"
    assert percent(0.4565, 46) == "45.7%" and percent(0.4565) == "45.6%" and percent(None, 46) == "-"
