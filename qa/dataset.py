"""The case table: one row per case, with role columns (file paths) and attribute columns.

:func:`load_cases` reads the CSV named by the protocol's ``cases:`` key. Problems that affect
single cases (a blank required path, a missing file, a path outside the data folder, an
attribute out of range, a duplicate id) do not stop the run: the affected cases are left
out and each problem is recorded as a :class:`~qa.errors.CaseTableError` naming the case,
the CSV row (1-based, the header is row 1), the column and what to do. Problems that leave
nothing to run (no file, unreadable CSV, no ``case_id`` column, a required column missing)
raise :class:`~qa.errors.CaseTableError`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from qa.errors import CaseTableError, QAInputError
from qa.hashing import sha256_path

if TYPE_CHECKING:  # pragma: no cover
    from qa.protocol import AttributeSpec, Protocol

__all__ = ["Case", "CaseTable", "load_cases", "dataset_hash"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Case:
    """One usable case of the table.

    Attributes
    ----------
    case_id : str
    position : int
        0-based index of the case's data row in the CSV (table order, counting excluded rows).
    paths : dict
        Role -> resolved file or folder path, or None when an optional role is blank.
    attributes : dict
        Every declared attribute -> float (numeric), str (categorical) or None (optional and
        blank, or its column absent).
    """

    case_id: str
    position: int
    paths: dict[str, Path | None]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def row(self) -> int:
        """The case's row number in the CSV, 1-based, the header being row 1."""
        return self.position + 2


@dataclass(frozen=True)
class CaseTable:
    """The loaded case table.

    Attributes
    ----------
    path : Path
        The CSV file.
    frame : pandas.DataFrame
        Every data row as read (strings, whitespace stripped, blank = ``""``), including the
        rows of excluded cases; index = 0-based data-row position.
    cases : list of Case
        The usable cases, in table order.
    problems : list of QAInputError
        One per problem found; the cases concerned are not in ``cases``.
    csv_sha256 : str
        Hex SHA-256 of the CSV bytes as read.
    """

    path: Path
    frame: pd.DataFrame
    cases: list[Case]
    problems: list[QAInputError]
    csv_sha256: str = ""

    @property
    def excluded_case_ids(self) -> set[str]:
        """Non-empty case ids of the rows left out because of a problem."""
        return {p.case_id for p in self.problems if p.case_id}


def load_cases(protocol: Protocol) -> CaseTable:
    """Read and check the case table of a protocol.

    Parameters
    ----------
    protocol : qa.protocol.Protocol

    Returns
    -------
    CaseTable

    Raises
    ------
    CaseTableError
        The file is missing or unreadable, has repeated column names, no ``case_id`` column,
        or lacks a column for a required role or a required attribute.

    Notes
    -----
    All values are read as text; paths are relative to the CSV's folder (absolute paths are
    kept) and, resolved (``..`` and symlinks followed), must lie inside the protocol's data
    folder (``data_root``, default the CSV's folder), else the case is left out. A blank
    cell means absent. Fully blank rows are skipped. Numeric attributes are
    converted to float and must be finite and within ``[min, max]`` (inclusive); categorical
    ones must be one of ``values`` (compared as text, case-sensitive). Row numbers assume one
    line per row (no line breaks inside quoted cells).
    """
    path = Path(protocol.case_table_path)
    raw = _read_bytes(path, protocol)
    frame = _parse(raw, path)
    roles = protocol.case_table_roles()
    required_roles = protocol.required_roles()
    _check_columns(frame, path, roles, required_roles, protocol)
    folder = path.parent
    data_root = getattr(protocol, "data_root", None)
    if data_root is not None and not Path(protocol.data_root_path).is_dir():
        raise CaseTableError(f"data_root {data_root!r} is not a folder (resolved from the "
                             f"protocol's folder: {protocol.data_root_path}); fix data_root or "
                             "remove it to use the case table's folder", path=str(protocol.path),
                             field="data_root")
    ids = frame["case_id"]
    rows_of: dict[str, list[int]] = {}
    for position, case_id in ids.items():
        if case_id:
            rows_of.setdefault(case_id, []).append(position + 2)
    cases: list[Case] = []
    problems: list[QAInputError] = []
    for position, record in frame.iterrows():
        if not any(record.values):
            continue
        row_problems = _row_problems(position, record, rows_of, roles, required_roles,
                                     protocol, path, folder)
        if row_problems:
            problems.extend(row_problems)
            continue
        cases.append(Case(
            case_id=record["case_id"], position=int(position),
            paths={role: (folder / record[role]) if record.get(role) else None for role in roles},
            attributes={name: _convert(record.get(name, ""), spec)
                        for name, spec in protocol.attributes.items()},
        ))
    logger.info("case table %s: %d usable case(s), %d problem(s)", path, len(cases),
                len(problems))
    return CaseTable(path, frame, cases, problems, hashlib.sha256(raw).hexdigest())


def dataset_hash(case_table: CaseTable) -> str:
    """Fingerprint of the data a run used: hex SHA-256.

    Hashes the SHA-256 of the CSV bytes, then for each usable case in table order its id and,
    for each role in sorted order, the role name and the SHA-256 of the referenced file
    (folders: :func:`qa.hashing.sha256_path`) or ``absent``. Deterministic; changing one byte
    of one referenced file changes it.
    """
    digest = hashlib.sha256()
    csv_sha256 = case_table.csv_sha256 or hashlib.sha256(case_table.path.read_bytes()).hexdigest()
    digest.update(b"csv\0" + csv_sha256.encode("ascii") + b"\0")
    for case in case_table.cases:
        digest.update(b"case\0" + case.case_id.encode("utf-8") + b"\0")
        for role in sorted(case.paths):
            target = case.paths[role]
            fingerprint = "absent" if target is None else sha256_path(target)
            digest.update(role.encode("utf-8") + b"\0" + fingerprint.encode("ascii") + b"\0")
    return digest.hexdigest()


def _read_bytes(path: Path, protocol: Protocol) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaseTableError(
            f"case table not found; check the cases: key of the protocol {protocol.path} "
            "(relative paths start from the protocol's folder)", path=str(path), field="cases",
        ) from None
    except OSError as exc:
        raise CaseTableError(f"cannot read the case table ({exc.strerror}); check the file "
                             "and its permissions", path=str(path)) from None


def _parse(raw: bytes, path: Path) -> pd.DataFrame:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaseTableError(f"not UTF-8 text (byte {exc.start}); save the table as CSV UTF-8",
                             path=str(path)) from None
    reader = csv.reader(io.StringIO(text))
    names = [name.strip() for name in next(reader, [])]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise CaseTableError(f"column(s) {', '.join(map(repr, repeated))} appear more than once "
                             "in the header; keep one of each", path=str(path))
    try:
        for fields in reader:
            if len(fields) > len(names):
                raise CaseTableError(
                    f"row {reader.line_num} has {len(fields)} fields but the header has "
                    f"{len(names)}; remove the extra commas or quote cells that contain commas",
                    path=str(path))
    except csv.Error as exc:
        raise CaseTableError(f"cannot parse the CSV near line {reader.line_num} ({exc}); save "
                             "it as a comma-separated table with a header row",
                             path=str(path)) from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            na_filter=False, skip_blank_lines=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CaseTableError(f"cannot parse the CSV ({str(exc).strip()}); save it as a "
                             "comma-separated table with a header row", path=str(path)) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.fillna("").astype(str).reset_index(drop=True)
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return frame


def _check_columns(frame: pd.DataFrame, path: Path, roles: dict[str, str],
                   required_roles: set[str], protocol: Protocol) -> None:
    columns = set(frame.columns)
    found = ", ".join(frame.columns)
    if "case_id" not in columns:
        raise CaseTableError(f"no case_id column (found: {found}); add a case_id column with "
                             "one unique id per case", path=str(path), field="case_id")
    missing = sorted(r for r in required_roles if r in roles and r not in columns)
    if missing:
        raise CaseTableError(f"missing column(s) for required role(s) {', '.join(missing)} "
                             f"(found: {found}); add them with one path per case, relative to "
                             "the table's folder", path=str(path), field=missing[0])
    missing = sorted(a for a, spec in protocol.attributes.items()
                     if spec.required and a not in columns)
    if missing:
        raise CaseTableError(f"missing column(s) for required attribute(s) {', '.join(missing)} "
                             f"(found: {found}); add them, or set required: false under "
                             "attributes in the protocol", path=str(path), field=missing[0])


def _row_problems(position: int, record: pd.Series, rows_of: dict[str, list[int]],
                  roles: dict[str, str], required_roles: set[str], protocol: Protocol,
                  path: Path, folder: Path) -> list[QAInputError]:
    row = position + 2
    case_id = record["case_id"]
    out: list[QAInputError] = []

    def problem(message: str, column: str, role: str | None = None) -> None:
        out.append(CaseTableError(message, case_id=case_id or None, path=str(path),
                                  field=column, role=role))

    if not case_id:
        problem(f"row {row}: case_id is empty; give the case an id or delete the row",
                "case_id")
        return out
    if len(rows_of[case_id]) > 1:
        others = ", ".join(str(r) for r in rows_of[case_id])
        problem(f"row {row}: case_id {case_id!r} appears on rows {others}; all of them are left "
                "out because the case is ambiguous. Give each case a unique id", "case_id")
    for role in roles:
        value = record.get(role, "")
        if not value:
            if role in required_roles:
                problem(f"row {row}, column {role!r}: no path for required role {role!r}; fill "
                        f"it in (relative to {folder}) or remove the case", role, role)
            continue
        target = folder / value
        outside = _outside_data_root(target, protocol, folder)
        if outside:
            problem(f"row {row}, column {role!r}: path {value!r} {outside}; move the file into "
                    "the data folder, or set data_root in the protocol to a folder that holds "
                    "all the case data", role, role)
            continue
        if not target.exists():
            problem(f"row {row}, column {role!r}: file {value!r} does not exist (looked for "
                    f"{target}); fix the path, relative to the table's folder", role, role)
    for name, spec in protocol.attributes.items():
        message = _attribute_problem(record.get(name, ""), name, spec)
        if message:
            problem(f"row {row}, column {name!r}: {message}", name)
    return out


def _outside_data_root(target: Path, protocol: Protocol, folder: Path) -> str | None:
    """Why ``target`` (symlinks resolved) lies outside the protocol's data folder, or None.

    The data folder is ``protocol.data_root_path`` (``data_root``, default the case table's
    folder), so a table cannot make the engine read ``../../etc/passwd`` or a symlink's
    target elsewhere on the machine unless the protocol says so.
    """
    root = Path(getattr(protocol, "data_root_path", folder))
    try:
        return _escape(target.resolve(), root.resolve())
    except (OSError, RuntimeError) as exc:  # symlink loop, unreadable folder
        return f"cannot be resolved or listed ({exc})"


def _escape(resolved: Path, root_resolved: Path) -> str | None:
    if not (resolved == root_resolved or resolved.is_relative_to(root_resolved)):
        return f"resolves to {resolved}, outside the data folder {root_resolved}"
    if resolved.is_dir():  # a series folder: its files may be symlinks too
        for child in resolved.iterdir():
            if child.is_symlink() and not child.resolve().is_relative_to(root_resolved):
                return (f"holds {child.name}, a link to {child.resolve()}, outside the data "
                        f"folder {root_resolved}")
    elif resolved.suffix.lower() == ".mhd":  # its voxels live in the file it names
        data_file = _mhd_data_file(resolved)
        if data_file is not None and not data_file.resolve().is_relative_to(root_resolved):
            return (f"names the data file {data_file.resolve()}, outside the data folder "
                    f"{root_resolved}")
    return None


def _mhd_data_file(header: Path) -> Path | None:
    """The ElementDataFile a MetaImage header names (None: LOCAL, LIST, pattern, unreadable)."""
    try:
        text = header.read_bytes()[:65536].decode("latin-1")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile":
            name = value.strip()
            if not name or name.upper() == "LOCAL" or name.upper().startswith("LIST") \
                    or "%" in name:
                return None
            return header.parent / name
    return None


def _attribute_problem(value: str, name: str, spec: AttributeSpec) -> str | None:
    unit = f" {spec.unit}" if spec.unit else ""
    if not value:
        if spec.required:
            return (f"value missing for required attribute {name!r}; fill it in or set "
                    f"required: false for {name} in the protocol")
        return None
    if not spec.numeric:
        if value not in spec.values:
            return (f"{value!r} is not one of {', '.join(spec.values)}; correct the value or "
                    f"add it to attributes.{name}.values in the protocol")
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        return f"{value!r} is not a finite number; write a number{' in' + unit if unit else ''}"
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        low = "-inf" if spec.min is None else f"{spec.min:g}"
        high = "inf" if spec.max is None else f"{spec.max:g}"
        return (f"{number:g}{unit} is outside the declared range [{low}, {high}]{unit}; correct "
                f"the value or widen attributes.{name} in the protocol")
    return None


def _convert(value: str, spec: AttributeSpec) -> float | str | None:
    if not value:
        return None
    return float(value) if spec.numeric else value
