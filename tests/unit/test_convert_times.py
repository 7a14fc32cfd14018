"""Per-file time units: values decoded with the file's units, encoded with the template's."""

from __future__ import annotations

import cftime
import numpy as np
import pytest

from vcube.scan import convert_times


def test_decadal_units_to_the_template_units() -> None:
    # CMIP-style: each decade counts from its own start (noleap: 365 days a year).
    got = convert_times(
        np.array([15.5, 45.0]), "days since 1860-01-01", "noleap", "days since 1850-01-01", "noleap"
    )
    np.testing.assert_array_equal(got, [3650 + 15.5, 3650 + 45.0])
    assert got.dtype == np.float64


def test_decoded_dates_are_unchanged() -> None:
    values = np.array([[0.0, 31.0], [59.0, 365.0]])
    got = convert_times(
        values, "days since 2001-01-01", "standard", "hours since 1990-01-01", "standard"
    )
    assert got.shape == values.shape
    before = cftime.num2date(values, "days since 2001-01-01", calendar="standard")
    after = cftime.num2date(got, "hours since 1990-01-01", calendar="standard")
    assert (before == after).all()


def test_between_calendars_field_by_field() -> None:
    # 2001-03-01 is day 59 in both; Feb 29 2000 does not exist in noleap.
    got = convert_times(
        np.array([59.0]), "days since 2001-01-01", "standard", "days since 2001-01-01", "noleap"
    )
    np.testing.assert_array_equal(got, [59.0])
    with pytest.raises(ValueError, match="invalid day"):
        convert_times(
            np.array([59.0]), "days since 2000-01-01", "standard", "days since 2000-01-01", "noleap"
        )


def test_integers_must_land_on_whole_units() -> None:
    got = convert_times(
        np.array([0, 1], np.int64),
        "days since 2000-01-02",
        "noleap",
        "days since 2000-01-01",
        "noleap",
    )
    assert got.dtype == np.int64 and got.tolist() == [1, 2]
    with pytest.raises(ValueError, match="whole numbers"):
        convert_times(
            np.array([1], np.int32),
            "hours since 2000-01-01",
            "noleap",
            "days since 2000-01-01",
            "noleap",
        )


def test_nan_stays_nan() -> None:
    got = convert_times(
        np.array([np.nan, 1.0]),
        "days since 2000-01-02",
        "noleap",
        "days since 2000-01-01",
        "noleap",
    )
    assert np.isnan(got[0]) and got[1] == 2.0
