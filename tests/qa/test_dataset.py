"""Specification of qa.dataset: reading the case table, per-case problems, the dataset hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from qa.dataset import Case, CaseTable, dataset_hash, load_cases
from qa.errors import CaseTableError
from qa.protocol import Protocol, load_protocol
from tests.qa.test_protocol import VALID, register_fake_checks, write_protocol

HEADER = "case_id,ct,mr,body,sex,age,scanner\n"


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    register_fake_checks(monkeypatch)


def make_study(root: Path, rows: list[str], header: str = HEADER,
               protocol_text: str = VALID) -> Protocol:
    """Protocol in ``root``, table in ``root/data`` with image files for c1..c4."""
    data = root / "data"
    (data / "img").mkdir(parents=True, exist_ok=True)
    for case in ("c1", "c2", "c3", "c4"):
        for role in ("ct", "mr"):
            (data / "img" / f"{case}_{role}.nii").write_bytes(f"{case}-{role}".encode())
    (data / "img" / "c1_body").mkdir(exist_ok=True)  # a folder (DICOM-like) role
    (data / "img" / "c1_body" / "slice1.dcm").write_bytes(b"mask-slice")
    (data / "cases.csv").write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    return load_protocol(write_protocol(root, protocol_text))


def row(case: str, sex: str = "F", age: str = "60", scanner: str = "A", body: str = "") -> str:
    return f"{case},img/{case}_ct.nii,img/{case}_mr.nii,{body},{sex},{age},{scanner}"


def test_valid_table(tmp_path: Path) -> None:
    short = "c3,img/c3_ct.nii,img/c3_mr.nii,,M,40"  # trailing cells left out: blank
    protocol = make_study(tmp_path, [row("c1", body="img/c1_body"), row("c2", "M", " 18 ", ""),
                                     short])
    table = load_cases(protocol)
    assert isinstance(table, CaseTable) and table.problems == []
    assert table.path == protocol.case_table_path
    c1, c2, c3 = table.cases
    assert c3.attributes == {"sex": "M", "age": 40.0, "scanner": None}
    data = tmp_path.resolve() / "data"
    assert c1 == Case("c1", 0, {"ct": data / "img/c1_ct.nii", "mr": data / "img/c1_mr.nii",
                                "body": data / "img/c1_body"},
                      {"sex": "F", "age": 60.0, "scanner": "A"})
    assert c2.position == 1 and c2.row == 3
    assert c2.paths["body"] is None  # optional role left blank
    assert c2.attributes == {"sex": "M", "age": 18.0, "scanner": None}
    assert list(table.frame.columns) == HEADER.strip().split(",")
    assert table.csv_sha256 == hashlib.sha256(
        (data / "cases.csv").read_bytes()).hexdigest()


def test_each_problem_excludes_its_case_and_names_row_and_column(tmp_path: Path) -> None:
    rows = [
        row("c1"),                                        # row 2: fine
        row("c2", sex="X"),                               # row 3: category
        row("c3", age="150"),                             # row 4: range
        row("c4", age="abc"),                             # row 5: not a number
        "c5,img/c5_ct.nii,img/c1_mr.nii,,F,60,A",         # row 6: missing file
        ",img/c1_ct.nii,img/c1_mr.nii,,F,60,A",           # row 7: empty id
        "c6,,img/c1_mr.nii,,F,60,A",                      # row 8: required role blank
        "c7,img/c1_ct.nii,img/c1_mr.nii,,,60,A",          # row 9: required attribute blank
        ",,,,,,",                                         # row 10: blank row, skipped
        "c8,img/c1_ct.nii,img/c1_mr.nii,,F,nan,A",        # row 11: non-finite
    ]
    table = load_cases(make_study(tmp_path, rows))
    assert [c.case_id for c in table.cases] == ["c1"]
    found = {(p.case_id, p.field): str(p) for p in table.problems}
    csv = str(tmp_path.resolve() / "data" / "cases.csv")
    assert found[("c2", "sex")] == (f"case 'c2'; file {csv}; field sex: row 3, column 'sex': "
                                    "'X' is not one of F, M; correct the value or add it to "
                                    "attributes.sex.values in the protocol")
    assert "row 4, column 'age': 150 years is outside the declared range [18, 100] years" in (
        found[("c3", "age")])
    assert "row 5, column 'age': 'abc' is not a finite number; write a number in years" in (
        found[("c4", "age")])
    assert "row 6, column 'ct': file 'img/c5_ct.nii' does not exist (looked for " in (
        found[("c5", "ct")])
    assert "row 7: case_id is empty; give the case an id or delete the row" in (
        found[(None, "case_id")])
    assert "row 8, column 'ct': no path for required role 'ct'" in found[("c6", "ct")]
    assert "row 9, column 'sex': value missing for required attribute 'sex'" in (
        found[("c7", "sex")])
    assert "row 11, column 'age': 'nan' is not a finite number" in found[("c8", "age")]
    assert len(table.problems) == 8
    assert table.problems[0].role is None and found and all(
        isinstance(p, CaseTableError) for p in table.problems)
    assert table.excluded_case_ids == {"c2", "c3", "c4", "c5", "c6", "c7", "c8"}
    assert len(table.frame) == 10  # the frame keeps every row as read


def test_duplicate_ids_exclude_every_row_of_that_id(tmp_path: Path) -> None:
    table = load_cases(make_study(tmp_path, [row("c1"), row("c2"), row("c1"), row("c3")]))
    assert [c.case_id for c in table.cases] == ["c2", "c3"]
    assert [str(p).split(": ", 1)[1] for p in table.problems] == [
        f"row {r}: case_id 'c1' appears on rows 2, 4; all of them are left out because the "
        "case is ambiguous. Give each case a unique id" for r in (2, 4)]


def test_missing_required_role_column_raises(tmp_path: Path) -> None:
    header = "case_id,ct,body,sex,age\n"
    with pytest.raises(CaseTableError, match=r"missing column\(s\) for required role\(s\) mr "
                       r"\(found: case_id, ct, body, sex, age\)"):
        load_cases(make_study(tmp_path, ["c1,img/c1_ct.nii,,F,60"], header=header))


def test_optional_columns_may_be_absent_but_required_attributes_may_not(tmp_path: Path) -> None:
    header = "case_id,ct,mr,sex,age\n"
    table = load_cases(make_study(tmp_path, ["c1,img/c1_ct.nii,img/c1_mr.nii,F,60"],
                                  header=header))
    assert table.cases[0].paths["body"] is None
    assert table.cases[0].attributes == {"sex": "F", "age": 60.0, "scanner": None}
    with pytest.raises(CaseTableError, match=r"required attribute\(s\) age"):
        load_cases(make_study(tmp_path, ["c1,img/c1_ct.nii,img/c1_mr.nii,F"],
                              header="case_id,ct,mr,sex\n"))


def test_table_level_failures_raise(tmp_path: Path) -> None:
    protocol = make_study(tmp_path, [row("c1")])
    (tmp_path / "data" / "cases.csv").write_text("id,ct\nc1,x\n", encoding="utf-8")
    with pytest.raises(CaseTableError, match="no case_id column"):
        load_cases(protocol)
    (tmp_path / "data" / "cases.csv").write_text("case_id,ct,ct\nc1,x,y\n", encoding="utf-8")
    with pytest.raises(CaseTableError, match="column\\(s\\) 'ct' appear more than once"):
        load_cases(protocol)
    (tmp_path / "data" / "cases.csv").write_text(HEADER + row("c1") + ",extra\n")
    with pytest.raises(CaseTableError, match="row 2 has 8 fields but the header has 7"):
        load_cases(protocol)
    (tmp_path / "data" / "cases.csv").write_bytes(b"case_id\n\xff\xfe\n")
    with pytest.raises(CaseTableError, match="not UTF-8"):
        load_cases(protocol)
    (tmp_path / "data" / "cases.csv").unlink()
    with pytest.raises(CaseTableError, match="case table not found; check the cases: key") as e:
        load_cases(protocol)
    assert e.value.field == "cases"


def test_utf8_bom_from_spreadsheets_is_accepted(tmp_path: Path) -> None:
    protocol = make_study(tmp_path, [row("c1")])
    path = tmp_path / "data" / "cases.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [c.case_id for c in load_cases(protocol).cases] == ["c1"]


def test_dataset_hash_is_deterministic_and_tracks_image_bytes(tmp_path: Path) -> None:
    protocol = make_study(tmp_path, [row("c1", body="img/c1_body"), row("c2")])
    first = dataset_hash(load_cases(protocol))
    assert first == dataset_hash(load_cases(protocol))
    assert len(first) == 64 and int(first, 16) >= 0
    image = tmp_path / "data" / "img" / "c2_mr.nii"
    content = bytearray(image.read_bytes())
    content[0] ^= 1
    image.write_bytes(bytes(content))
    second = dataset_hash(load_cases(protocol))
    assert second != first
    # a byte inside a folder role counts too
    (tmp_path / "data" / "img" / "c1_body" / "slice1.dcm").write_bytes(b"mask-slicf")
    assert dataset_hash(load_cases(protocol)) not in (first, second)


def test_dataset_hash_depends_on_the_csv_bytes(tmp_path: Path) -> None:
    protocol = make_study(tmp_path, [row("c1")])
    first = dataset_hash(load_cases(protocol))
    path = tmp_path / "data" / "cases.csv"
    path.write_text(path.read_text() + "\n")  # a trailing blank line: same cases, other bytes
    assert dataset_hash(load_cases(protocol)) != first
