"""The one number formatter and markdown table renderer (``hf_cxr_mae.tables``), and the rows of
the calibration, operating-point and subgroup tables that report.md and the model card share:
exact strings, as the reports print them."""

from __future__ import annotations

from hf_cxr_mae import tables
from hf_cxr_mae.tables import (
    estimate,
    interval,
    number,
    p_value,
    signed,
    signed_interval,
    table,
)


def test_numbers_and_what_a_missing_one_reads() -> None:
    assert number(None) == "undefined"
    assert number(None, missing="-") == "-"
    assert number(0.8) == "0.800"
    assert number(1.23456, 2) == "1.23"
    assert number(0.5, 4) == "0.5000"
    # Python's rounding of the stored binary value: 0.0005 is a hair above the half, 0.1235 a
    # hair below it, and 0.8125 exactly on it (to even).
    assert number(0.0005) == "0.001"
    assert number(0.1235) == "0.123"
    assert number(0.8125) == "0.812"
    assert number(0.9995) == "1.000"


def test_signed_differences_and_intervals() -> None:
    assert signed(0.0123) == "+0.012"
    assert signed(-0.03) == "-0.030"
    assert signed(0.0) == "+0.000"
    assert signed(None) == "-"
    assert interval([0.51234, 0.6]) == "0.512-0.600"
    assert interval(None) == "-"
    assert interval([], missing="") == ""
    assert signed_interval([-0.0101, 0.05]) == "[-0.010, +0.050]"
    assert signed_interval(None) == "-"


def test_estimates_with_and_without_an_interval() -> None:
    assert estimate(0.7, [0.6, 0.8]) == "0.700 (0.600-0.800)"
    assert estimate(0.7, None) == "0.700"
    assert estimate(None, None) == "undefined"
    assert estimate(None, None, "-") == "-"


def test_p_values() -> None:
    assert p_value(None) == "-"
    assert p_value(1e-12) == "< 0.001"
    assert p_value(0.001) == "0.001"
    assert p_value(0.04449) == "0.044"
    assert p_value(1.0) == "1.000"


def test_table_lines() -> None:
    rows = [["a", "0.800", 3], ["b", "undefined", 0, ""], ["c"]]
    assert table(["finding", "AUROC", "positives"], "lrr", rows) == [
        "| finding | AUROC | positives |",
        "|---|--:|--:|",
        "| a | 0.800 | 3 |",
        "| b | undefined | 0 |  |",
        "| c |",
    ]


def test_calibration_rows() -> None:
    ece = {"a": 0.0312, "b": None, "c": 0.1}
    assert tables.calibration_rows(ece, {"a": 1.23456, "b": 0.8}) == [
        ["a", "0.031", "1.235"],
        ["b", "undefined", "0.800"],
        ["c", "0.100", "-"],
    ]
    assert tables.calibration_rows(ece, None)[0] == ["a", "0.031", "-"]


def test_operating_point_rows() -> None:
    rate = {"value": 0.75, "ci95": [0.5, 0.9]}
    rates = {
        "a": {"threshold": 0.55, "sensitivity": rate, "specificity": {"value": None, "ci95": None},
              "ppv": rate, "npv": rate, "tp": 3, "fp": 1, "tn": 5, "fn": 1},
        "c": None,
    }  # fmt: skip
    rows = tables.operating_point_rows(["a", "b", "c"], {"a": 0.55, "b": 0.3, "c": None}, rates)
    assert rows == [
        ["a", "0.5500", "0.750 (0.500-0.900)", "undefined (-)", "0.750 (0.500-0.900)",
         "0.750 (0.500-0.900)", "3", "1", "5", "1"],
        ["b", "0.3000", "-", "-", "-", "-", "", "", "", ""],
        ["c", "none (one class on validation)", "-", "-", "-", "-", "", "", "", ""],
    ]  # fmt: skip


def test_subgroup_rows() -> None:
    overall = {"count": 10, "mauc": 0.8, "mauc_ci95": [0.7, 0.9]}
    low = {"count": 4, "mauc": 0.6, "mauc_ci95": [0.5, 0.65], "overall_mauc": 0.81,
           "below_overall": True}  # fmt: skip
    high = {"count": 6, "mauc": None, "mauc_ci95": None}
    subgroups = {"overall": overall, "groups": {"sex": {"F": low, "M": high}}}
    assert tables.subgroup_rows(subgroups) == [
        ["overall", "all", "10", "0.800", "0.700-0.900", "0.800", ""],
        ["sex", "F", "4", "0.600", "0.500-0.650", "0.810", "**below**"],
        ["sex", "M", "6", "undefined", "-", "undefined", ""],
    ]
    assert tables.subgroup_rows(subgroups, flag="**below overall**")[1][-1] == "**below overall**"
    assert [r[:2] for r in tables.subgroup_stats(subgroups)] == [
        ("overall", "all"),
        ("sex", "F"),
        ("sex", "M"),
    ]
