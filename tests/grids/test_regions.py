"""Areas: named regions, N/W/S/E boxes, margins, boxes across 0°E, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from hpcds.errors import GridError
from hpcds.grids import NAMED_REGIONS, Area, parse_area


def test_global_and_named_regions():
    assert parse_area("global") is None
    assert parse_area(" Global ") is None
    assert parse_area("alps") == Area(49.0, 4.0, 43.0, 17.0)
    assert parse_area("ALPS") == Area(49.0, 4.0, 43.0, 17.0)
    assert parse_area("himalaya") == Area(37.0, 72.0, 25.0, 98.0)
    assert set(NAMED_REGIONS) == {"alps", "himalaya"}


def test_explicit_box_and_margin():
    assert parse_area("49/4/43/17") == parse_area("alps")
    assert parse_area("alps", margin_deg=2.0) == Area(51.0, 2.0, 41.0, 19.0)
    # margins stop at the poles and at the full circle
    assert parse_area("89/0/-89/10", margin_deg=3.0) == Area(90.0, -3.0, -90.0, 13.0)
    full = parse_area("10/-170/0/170", margin_deg=20.0)
    assert full.full_circle and full.width == 360.0


def test_box_across_zero_longitude():
    box = parse_area("60/350/30/20")
    assert (box.west, box.east, box.width) == (350.0, 380.0, 30.0)
    assert parse_area("60/-10/30/20").width == 30.0
    lat = np.array([45.0, 45.0, 45.0, 45.0, 45.0, 61.0, 30.0])
    lon = np.array([5.0, -5.0, 355.0, 340.0, 21.0, 5.0, 350.0])
    np.testing.assert_array_equal(box.contains(lat, lon),
                                  [True, True, True, False, False, False, True])
    assert box.spec() == "60/350/30/20"


@pytest.mark.parametrize("text, message", [
    ("europe", "alps, himalaya"),
    ("1/2/3", "N/W/S/E"),
    ("a/b/c/d", "N/W/S/E"),
    ("40/0/50/10", "south"),
    ("95/0/50/10", r"\[-90, 90\]"),
    ("10/-200/0/200", "wider than 360"),
    ("10/0/0/400", r"\[-360, 360\]"),
])
def test_bad_areas_name_the_problem(text, message):
    with pytest.raises(GridError, match=message):
        parse_area(text)


def test_negative_margin_is_an_error():
    with pytest.raises(GridError, match="margin"):
        parse_area("alps", margin_deg=-1.0)
