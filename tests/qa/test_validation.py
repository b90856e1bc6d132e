"""Specification of qa.validation (great_expectations). GX takes seconds to import: the suites run
once per module (module-scoped fixtures) and the tests read their reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from qa.dataset import load_cases
from qa.protocol import Protocol
from qa.validation import (
    IMAGE_METADATA_COLUMNS,
    ValidationReport,
    validate_case_table,
    validate_image_metadata,
)
from tests.qa.test_dataset import make_study, row
from tests.qa.test_protocol import VALID, register_fake_checks


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with two studies: ``good`` (valid table) and ``bad`` (one of each fault)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        register_fake_checks(monkeypatch)
        yield tmp_path_factory.mktemp("validation")


@pytest.fixture(scope="module")
def good(study: Path) -> tuple[Protocol, ValidationReport]:
    protocol = make_study(study / "good", [row("c1", body="img/c1_body"), row("c2", "M", "18")])
    return protocol, validate_case_table(load_cases(protocol), protocol)


BAD_ROWS = [
    row("c1"),                                   # row 2: fine
    row("c2"), row("c2"),                        # rows 3, 4: duplicate id
    ",img/c1_ct.nii,img/c1_mr.nii,,F,60,A",      # row 5: blank id
    "c3,,img/c3_mr.nii,,F,60,A",                 # row 6: required role blank
    "c4,img/c4_ct.nii,img/none.nii,,F,60,A",     # row 7: missing file
    "c5,img/c1_ct.nii,img/c1_mr.nii,,X,60,A",    # row 8: sex not in set
    "c6,img/c1_ct.nii,img/c1_mr.nii,,F,150,A",   # row 9: age out of range
    "c7,img/c1_ct.nii,img/c1_mr.nii,,F,old,A",   # row 10: age not a number
    "c8,img/c1_ct.nii,img/c1_mr.nii,,,60,A",     # row 11: required attribute blank
    "c9,img/c1_ct.nii,img/c1_mr.nii,,F,60,Z",    # row 12: optional attribute not in set
]


@pytest.fixture(scope="module")
def bad(study: Path) -> ValidationReport:
    protocol = make_study(study / "bad", BAD_ROWS)
    return validate_case_table(load_cases(protocol), protocol)


def result(report: ValidationReport, kind: str, column: str) -> dict:
    [found] = [r for r in report.results
               if r["expectation_type"] == kind and r["column"] == column]
    return found


def test_valid_table_passes(good: tuple[Protocol, ValidationReport]) -> None:
    _, report = good
    assert report.scope == "case_table"
    assert report.success, report.to_json(indent=1)
    assert report.failed_case_ids() == set()
    stats = report.statistics
    assert stats["evaluated_expectations"] == len(report.results) == 18
    assert stats["successful_expectations"] == 18 and stats["unsuccessful_expectations"] == 0
    columns = {(r["expectation_type"], r["column"]) for r in report.results}
    assert ("expect_column_values_to_be_in_set", "ct__exists") in columns
    assert ("expect_column_values_to_be_between", "age__value") in columns


def test_duplicate_and_blank_ids(bad: ValidationReport) -> None:
    unique = result(bad, "expect_column_values_to_be_unique", "case_id")
    assert not unique["success"] and unique["unexpected_case_ids"] == ["c2"]
    assert [e["row"] for e in unique["unexpected"]] == [3, 4]
    blank = result(bad, "expect_column_values_to_not_be_null", "case_id")
    assert blank["unexpected_count"] == 1 and blank["unexpected"] == [
        {"case_id": None, "value": None, "row": 5}]


def test_roles(bad: ValidationReport) -> None:
    blank = result(bad, "expect_column_values_to_not_be_null", "ct")
    assert blank["unexpected_case_ids"] == ["c3"]
    exists = result(bad, "expect_column_values_to_be_in_set", "mr__exists")
    assert exists["unexpected"] == [{"case_id": "c4", "value": False, "row": 7}]
    assert exists["description"] == "the files of role 'mr' exist"
    # the blank ct of c3 is reported as blank, not also as a missing file
    assert result(bad, "expect_column_values_to_be_in_set", "ct__exists")["success"]


def test_attributes(bad: ValidationReport) -> None:
    sex = result(bad, "expect_column_values_to_be_in_set", "sex")
    assert sex["unexpected"] == [{"case_id": "c5", "value": "X", "row": 8}]
    age = result(bad, "expect_column_values_to_be_between", "age__value")
    assert age["unexpected"] == [{"case_id": "c6", "value": 150.0, "row": 9}]
    assert age["description"] == "age lies in [18, 100] years"
    number = result(bad, "expect_column_values_to_be_in_set", "age__is_number")
    assert number["unexpected_case_ids"] == ["c7"]
    missing = result(bad, "expect_column_values_to_not_be_null", "sex")
    assert missing["unexpected_case_ids"] == ["c8"]
    scanner = result(bad, "expect_column_values_to_be_in_set", "scanner")
    assert scanner["unexpected_case_ids"] == ["c9"]


def test_failed_case_ids_and_statistics(bad: ValidationReport) -> None:
    assert not bad.success
    assert bad.failed_case_ids() == {f"c{i}" for i in range(2, 10)}
    assert bad.statistics["unsuccessful_expectations"] == 9


def test_report_is_strict_json(bad: ValidationReport) -> None:
    text = bad.to_json()
    data = json.loads(text)  # would fail on NaN with parse_constant below
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["scope"] == "case_table" and data["success"] is False
    assert data["raw"]["statistics"]["evaluated_expectations"] == len(data["results"])
    assert {"expectation_type", "column", "success", "unexpected_count", "unexpected",
            "unexpected_case_ids", "description", "error"} <= set(data["results"][0])


def test_unexpected_values_are_capped_at_20(study: Path) -> None:
    rows = [row("c1", sex="X")] * 25  # 25 rows, all duplicates of c1, all with a bad sex
    protocol = make_study(study / "many", rows)
    report = validate_case_table(load_cases(protocol), protocol)
    sex = result(report, "expect_column_values_to_be_in_set", "sex")
    assert sex["unexpected_count"] == 25 and len(sex["unexpected"]) == 20
    assert sex["unexpected_case_ids"] == ["c1"]


def image_rows() -> pd.DataFrame:
    base = {"kind": "image", "shape_z": 40, "shape_y": 64, "shape_x": 64, "spacing_z_mm": 2.5,
            "spacing_y_mm": 1.0, "spacing_x_mm": 1.0, "min_value": -1024.0, "max_value": 3000.0,
            "non_finite_voxels": 0, "grid_matches_reference": None}
    rows = [
        {"case_id": "c1", "role": "ct"},
        {"case_id": "c1", "role": "sct", "grid_matches_reference": True},
        {"case_id": "c1", "role": "mr", "min_value": 0.0, "max_value": 5000.0},  # not CT: fine
        {"case_id": "c1", "role": "body", "kind": "mask", "min_value": 0.0, "max_value": 1.0},
        {"case_id": "c2", "role": "ct", "min_value": -2000.0},
        {"case_id": "c3", "role": "sct", "max_value": 5000.0, "grid_matches_reference": True},
        {"case_id": "c4", "role": "mr", "spacing_z_mm": 12.0, "min_value": 0.0},
        {"case_id": "c5", "role": "sct", "non_finite_voxels": 3},
        {"case_id": "c6", "role": "sct", "grid_matches_reference": False},
    ]
    return pd.DataFrame([{**base, **r} for r in rows], columns=list(IMAGE_METADATA_COLUMNS))


@pytest.fixture(scope="module")
def images(study: Path) -> ValidationReport:
    text = VALID.replace("ct: {kind: image, modality: CT}",
                         "ct: {kind: image, modality: CT}\n  sct: {kind: image, modality: CT}")
    protocol = make_study(study / "images", [row("c1")], protocol_text=text)
    assert protocol.ct_roles() == {"ct", "sct"}
    return validate_image_metadata(image_rows(), protocol)


def test_image_metadata_failures(images: ValidationReport) -> None:
    assert images.scope == "image_metadata" and not images.success
    between = "expect_column_values_to_be_between"
    assert result(images, between, "spacing_z_mm")["unexpected"] == [
        {"case_id": "c4", "value": 12.0, "role": "mr"}]
    assert result(images, between, "spacing_y_mm")["success"]
    assert result(images, between, "min_value")["unexpected_case_ids"] == ["c2"]
    assert result(images, between, "max_value")["unexpected"] == [
        {"case_id": "c3", "value": 5000.0, "role": "sct"}]  # the MR at 5000 is not CT
    assert result(images, between, "non_finite_voxels")["unexpected_case_ids"] == ["c5"]
    grid = result(images, "expect_column_values_to_be_in_set", "grid_matches_reference")
    assert grid["unexpected_case_ids"] == ["c6"] and grid["unexpected_count"] == 1
    assert images.failed_case_ids() == {"c2", "c3", "c4", "c5", "c6"}
    json.loads(images.to_json())


def test_image_metadata_valid_and_optional_expectations(study: Path) -> None:
    text = VALID.replace("validation:\n  hu_range: [-1100, 4000]\n  spacing_mm: {min: 0.3, max: "
                         "10}\n", "")
    protocol = make_study(study / "images_plain", [row("c1")], protocol_text=text)
    frame = image_rows().iloc[:4]
    report = validate_image_metadata(frame, protocol)
    # without validation: only the non-finite and grid expectations apply
    assert report.success and report.statistics["evaluated_expectations"] == 2


def test_image_metadata_missing_columns_is_a_programming_error(study: Path) -> None:
    protocol = make_study(study / "images_cols", [row("c1")])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['grid_matches_reference'\]"):
        validate_image_metadata(image_rows().drop(columns="grid_matches_reference"), protocol)
