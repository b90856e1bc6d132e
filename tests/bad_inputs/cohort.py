"""The good cohort every bad input is embedded in, and the :class:`BadInput` record.

Good cases (CT, sCT, body mask, a pair of doses, sex and BMI) on a small grid, the protocol
that runs ``hu_accuracy`` and ``gamma`` on them, and :func:`read_as`, which reads a file
with the reader of the role it is given in.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa.errors import QAInputError, ReaderError
from qa.io import read_dose, read_image, read_mask, read_rtstruct, write_nifti
from qa.volume import Volume

SHAPE = (6, 8, 10)
SPACING_MM = (3.0, 2.0, 2.0)
ORIGIN_MM = (-9.0, -8.0, -10.0)
#: Frame of reference of the reference grid RTSTRUCT entries are rasterised on.
REFERENCE_FRAME_UID = "1.2.826.0.1.3680043.8.498.77"
#: Roles of the cohort's case table, in column order, then the attribute columns.
ROLES = ("ct", "sct", "body", "dose_ref", "dose_eval")
COLUMNS = ("case_id", *ROLES, "sex", "bmi")


@dataclass(frozen=True)
class BadInput:
    """One malformed input and what its error must say.

    Attributes
    ----------
    id : str
        Readable test id.
    where : str
        A role of the cohort (``ct``, ``sct``, ``body``, ``dose_ref``), ``rtstruct``,
        ``table`` or ``protocol``.
    build : callable
        ``build(folder) -> Path``: writes the bad input under ``folder`` and returns the
        path to read (file, series folder, or protocol YAML for ``table``/``protocol``).
    field : str or None
        The ``field`` the error must carry (DICOM keyword, header field, CSV column, YAML
        key path); None when the file as a whole is at fault.
    expect : str
        Text the message must contain (the diagnosis).
    error : type
        The exception type expected.
    reader_raises : bool
        False when the file reads but a check must refuse it (an empty mask).
    stops_run : bool
        For ``table`` entries: the problem stops the run (raised) rather than leaving case
        ``BAD`` out.
    """

    id: str
    where: str
    build: Callable[[Path], Path]
    field: str | None
    expect: str
    error: type[QAInputError] = ReaderError
    reader_raises: bool = True
    stops_run: bool = False


# -- good data ------------------------------------------------------------------------------
def good_ct(seed: int) -> Volume:
    """A small CT in HU: air around a soft-tissue block with a bone core."""
    rng = np.random.default_rng(seed)
    ct = np.full(SHAPE, -1000.0, dtype=np.float32)
    ct[1:-1, 1:-1, 1:-1] = 40.0 + rng.normal(0.0, 10.0, (SHAPE[0] - 2, SHAPE[1] - 2,
                                                         SHAPE[2] - 2))
    ct[2:4, 3:5, 4:6] = 700.0
    return Volume(ct, SPACING_MM, ORIGIN_MM)


def good_dose(scale: float = 1.0) -> Volume:
    """A smooth dose in Gy (maximum 2 Gy x scale) on the CT grid."""
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in SHAPE), indexing="ij")
    dose = 2.0 * scale * np.exp(-(z**2 + y**2 + x**2) / 18.0)
    return Volume(dose.astype(np.float32), SPACING_MM, ORIGIN_MM)


def write_good_case(folder: Path, case_id: str, seed: int) -> dict[str, str]:
    """Write one good case under ``folder/case_id``; return its case-table row."""
    case_dir = folder / case_id
    case_dir.mkdir(parents=True, exist_ok=True)
    ct = good_ct(seed)
    body = ct.with_array(ct.array > -500)
    sct = ct.with_array(np.where(body.array, ct.array + 12.0, ct.array))
    for name, volume in (("ct", ct), ("sct", sct), ("body", body), ("dose_ref", good_dose()),
                         ("dose_eval", good_dose(1.01))):
        write_nifti(volume, case_dir / f"{name}.nii.gz")
    row = {role: f"{case_id}/{role}.nii.gz" for role in ROLES}
    row.update(case_id=case_id, sex="MF"[seed % 2], bmi=str(22 + seed))
    return row


PROTOCOL_TEXT = """\
name: bad-input corpus
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}
cases: cases.csv
attributes:
  sex: {values: [F, M]}
  bmi: {min: 10, max: 70, unit: kg/m2}
roles:
  ct: {kind: image, modality: CT}
checks:
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
    tolerances:
      mae_hu: {tolerance: {max: 70}, action: {max: 90}}
  - check: gamma
    reference: dose_ref
    evaluated: dose_eval
    options: {criteria: ["3%/2mm"]}
    tolerances:
      "pass_rate_percent[3%/2mm]": {tolerance: {min: 95}, action: {min: 90}}
"""


def write_cohort(folder: Path, rows: list[dict[str, str]], *, good: int = 2,
                 protocol_text: str = PROTOCOL_TEXT) -> Path:
    """Good cases ``G1`` ... plus ``rows`` (as written) in ``folder``; returns the protocol."""
    folder.mkdir(parents=True, exist_ok=True)
    table = [write_good_case(folder, f"G{i + 1}", i) for i in range(good)]
    write_table(folder / "cases.csv", table + rows)
    protocol = folder / "protocol.yaml"
    protocol.write_text(protocol_text, encoding="utf-8")
    return protocol


def write_table(path: Path, rows: list[dict[str, str]],
                columns: tuple[str, ...] = COLUMNS) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def bad_row(folder: Path, case_id: str, role: str, value: str) -> dict[str, str]:
    """A row whose files are good (written under ``folder/case_id``) except ``role``."""
    row = write_good_case(folder, case_id, 5)
    row[role] = value
    return row


def reference_volume() -> Volume:
    """The grid RTSTRUCT entries are rasterised on (frame :data:`REFERENCE_FRAME_UID`)."""
    return good_ct(0).with_array(good_ct(0).array, frame_of_reference_uid=REFERENCE_FRAME_UID)


def read_as(where: str, path: Path) -> Any:
    """Read ``path`` with the reader of ``where`` (a role or ``rtstruct``)."""
    if where in ("ct", "sct"):
        return read_image(path)
    if where == "body":
        return read_mask(path)
    if where in ("dose_ref", "dose_eval"):
        return read_dose(path)
    if where == "rtstruct":
        return read_rtstruct(path, reference_volume())
    raise ValueError(f"no reader for {where!r}")
