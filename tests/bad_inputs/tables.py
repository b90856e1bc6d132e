"""Bad case tables and protocols.

Row problems concern case ``BAD`` of a good cohort (their row builders are kept as
``build.rows`` so that several can share one table); table and protocol problems stop the
run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from qa.errors import CaseTableError, ProtocolError
from qa.io import write_nifti
from tests.bad_inputs.cohort import (
    COLUMNS,
    PROTOCOL_TEXT,
    BadInput,
    bad_row,
    good_ct,
    write_cohort,
    write_good_case,
    write_table,
)

# -- case tables ----------------------------------------------------------------------------
RowsBuilder = Callable[[Path, str], list[dict[str, str]]]


def _table(rows: RowsBuilder) -> Callable[[Path], Path]:
    """A builder writing the good cohort plus ``rows(folder, "BAD")``; the rows builder is
    kept as ``build.rows`` so that several bad rows can share one table."""
    def build(folder: Path) -> Path:
        return write_cohort(folder, rows(folder, "BAD"))
    build.rows = rows  # type: ignore[attr-defined]
    return build


def _outside_ct(folder: Path) -> Path:
    """A good CT in a sibling folder of ``folder`` (outside the data folder)."""
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir(parents=True, exist_ok=True)
    write_nifti(good_ct(3), outside / "ct.nii.gz")
    return outside / "ct.nii.gz"


def _escaping(folder: Path, case_id: str) -> list[dict[str, str]]:
    outside = _outside_ct(folder)
    return [bad_row(folder, case_id, "ct", f"../{outside.parent.name}/ct.nii.gz")]


def _absolute_outside(folder: Path, case_id: str) -> list[dict[str, str]]:
    return [bad_row(folder, case_id, "ct", str(_outside_ct(folder).resolve()))]


def _symlink_outside(folder: Path, case_id: str) -> list[dict[str, str]]:
    outside = _outside_ct(folder)
    row = bad_row(folder, case_id, "ct", f"{case_id}/link.nii.gz")
    (folder / case_id / "link.nii.gz").symlink_to(outside)
    return [row]


def _folder_with_link_outside(folder: Path, case_id: str) -> list[dict[str, str]]:
    outside = _outside_ct(folder)
    row = bad_row(folder, case_id, "ct", f"{case_id}/ct_dicom")
    (folder / case_id / "ct_dicom").mkdir()
    (folder / case_id / "ct_dicom" / "slice001.dcm").symlink_to(outside)
    return [row]


def _mhd_naming_data_outside(folder: Path, case_id: str) -> list[dict[str, str]]:
    outside = _outside_ct(folder)
    row = bad_row(folder, case_id, "ct", f"{case_id}/ct.mhd")
    (folder / case_id / "ct.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 10 8 6\nElementType = MET_SHORT\n"
        f"ElementDataFile = ../../{outside.parent.name}/{outside.name}\n", encoding="ascii")
    return [row]


def _bad_path(role: str, value: str) -> RowsBuilder:
    def rows(folder: Path, case_id: str) -> list[dict[str, str]]:
        return [bad_row(folder, case_id, role, value.format(case_id=case_id))]
    return rows


def _attribute(column: str, value: str) -> RowsBuilder:
    def rows(folder: Path, case_id: str) -> list[dict[str, str]]:
        row = write_good_case(folder, case_id, 5)
        row[column] = value
        return [row]
    return rows


def _duplicate_id(folder: Path, case_id: str) -> list[dict[str, str]]:
    return [write_good_case(folder, case_id, 5), write_good_case(folder, case_id, 6)]


def _raw_table(text: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        protocol = write_cohort(folder, [])
        (folder / "cases.csv").write_bytes(text)
        return protocol
    return build


def _without_column(column: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        protocol = write_cohort(folder, [])
        with open(folder / "cases.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        write_table(folder / "cases.csv", rows, tuple(c for c in COLUMNS if c != column))
        return protocol
    return build


TABLE_INPUTS: tuple[BadInput, ...] = (
    BadInput("path-escaping-with-dotdot", "table", _table(_escaping), "ct", "outside the data "
             "folder", CaseTableError),
    BadInput("absolute-path-outside", "table", _table(_absolute_outside), "ct",
             "outside the data folder", CaseTableError),
    BadInput("symlink-leading-outside", "table", _table(_symlink_outside), "ct",
             "outside the data folder", CaseTableError),
    BadInput("series-folder-holding-a-link-outside", "table",
             _table(_folder_with_link_outside), "ct", "outside the data folder",
             CaseTableError),
    BadInput("mhd-naming-data-outside", "table", _table(_mhd_naming_data_outside), "ct",
             "outside the data folder", CaseTableError),
    BadInput("missing-file", "table", _table(_bad_path("sct", "{case_id}/nope.nii.gz")), "sct",
             "does not exist", CaseTableError),
    BadInput("blank-required-path", "table", _table(_bad_path("ct", "")), "ct",
             "no path for required role", CaseTableError),
    BadInput("duplicate-case-id", "table", _table(_duplicate_id), "case_id", "appears on rows",
             CaseTableError),
    BadInput("attribute-nan", "table", _table(_attribute("bmi", "nan")), "bmi",
             "not a finite number", CaseTableError),
    BadInput("attribute-inf", "table", _table(_attribute("bmi", "-inf")), "bmi",
             "not a finite number", CaseTableError),
    BadInput("attribute-not-a-number", "table", _table(_attribute("bmi", "23,5")), "bmi",
             "not a finite number", CaseTableError),
    BadInput("attribute-out-of-range", "table", _table(_attribute("bmi", "700")), "bmi",
             "outside the declared range", CaseTableError),
    BadInput("attribute-unknown-value", "table", _table(_attribute("sex", "X")), "sex",
             "is not one of", CaseTableError),
    BadInput("attribute-blank", "table", _table(_attribute("sex", "")), "sex",
             "value missing", CaseTableError),
    BadInput("table-without-required-role-column", "table", _without_column("sct"), "sct",
             "missing column", CaseTableError, stops_run=True),
    BadInput("table-without-case-id", "table", _without_column("case_id"), "case_id",
             "no case_id column", CaseTableError, stops_run=True),
    BadInput("table-repeated-column", "table",
             _raw_table(b"case_id,ct,ct,sct,body,dose_ref,dose_eval,sex,bmi\n"), None,
             "appear more than once", CaseTableError, stops_run=True),
    BadInput("table-not-utf8", "table",
             _raw_table("case_id,ct,sct,body,dose_ref,dose_eval,sex,bmi\nPatient-é,,,,,,,,\n"
                        .encode("latin-1")), None, "not UTF-8", CaseTableError,
             stops_run=True),
    BadInput("table-row-with-extra-cells", "table",
             _raw_table(b"case_id,ct,sct,body,dose_ref,dose_eval,sex,bmi\nA,a,b,c,d,e,F,23,9\n"),
             None, "fields but the header has", CaseTableError, stops_run=True),
)


# -- protocols ------------------------------------------------------------------------------
def _protocol(edit: Callable[[str], str]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        protocol = write_cohort(folder, [], good=1)
        protocol.write_text(edit(PROTOCOL_TEXT), encoding="utf-8")
        return protocol
    return build


def _replace(old: str, new: str) -> Callable[[Path], Path]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return _protocol(edit)


def _protocol_bytes(folder: Path) -> Path:
    protocol = write_cohort(folder, [], good=1)
    protocol.write_bytes(PROTOCOL_TEXT.replace("corpus", "corpus é").encode("latin-1"))
    return protocol


PROTOCOL_INPUTS: tuple[BadInput, ...] = (
    BadInput("version-as-number", "protocol", _replace('version: "1.0"', "version: 1.10"),
             "model.version", "write it in quotes", ProtocolError),
    BadInput("level-not-a-number", "protocol", _replace("{max: 70}", '{max: "seventy"}'),
             "checks[0].tolerances.mae_hu.tolerance.max", "number", ProtocolError),
    BadInput("checks-not-a-list", "protocol",
             _protocol(lambda t: t.split("checks:")[0] + "checks: hu_accuracy\n"), "checks",
             "list", ProtocolError),
    BadInput("attribute-min-as-text", "protocol", _replace("min: 10", "min: ten"),
             "attributes.bmi.min", "number", ProtocolError),
    BadInput("unknown-top-level-key", "protocol", _protocol(lambda t: t + "colour: blue\n"),
             "colour", "allowed keys", ProtocolError),
    BadInput("unknown-check-option", "protocol",
             _replace("options: {criteria:", "options: {crit: 1, criteria:"),
             "checks[1].options.crit", "crit", ProtocolError),
    BadInput("duplicate-check-id", "protocol", _replace("  - check: gamma\n",
                                                        "  - check: gamma\n    id: hu_accuracy\n"),
             "checks[1].id", "hu_accuracy", ProtocolError),
    BadInput("key-written-twice", "protocol", _replace("kind: commissioning\n",
                                                       "kind: commissioning\nkind: periodic\n"),
             None, "written twice", ProtocolError),
    BadInput("malformed-yaml", "protocol", _protocol(lambda t: t + "  bad: [\n"), None,
             "malformed YAML at line", ProtocolError),
    BadInput("protocol-not-utf8", "protocol", _protocol_bytes, None, "not UTF-8",
             ProtocolError),
    BadInput("unknown-check", "protocol", _replace("check: gamma", "check: gama"),
             "checks[1].check", "gama", ProtocolError),
    BadInput("data-root-not-a-folder", "protocol",
             _replace("cases: cases.csv\n", "cases: cases.csv\ndata_root: nowhere\n"),
             "data_root", "is not a folder", CaseTableError),
    BadInput("cases-not-found", "protocol", _replace("cases: cases.csv", "cases: missing.csv"),
             "cases", "case table not found", CaseTableError),
)
