"""Small on-disk cohorts with known answers, for runner, CLI and report tests.

Each case's synthetic CT is its CT plus a constant offset inside the body, so the MAE of
``hu_accuracy`` over the body mask is exactly ``abs(offset)`` HU: independent of any model.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from qa.io import write_nifti
from qa.volume import Volume

SHAPE = (10, 14, 16)
SPACING_MM = (3.0, 2.0, 2.0)
ORIGIN_MM = (-12.0, -14.0, -16.0)


def make_ct(seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    ct = np.full(SHAPE, -1000.0, dtype=np.float32)
    ct[1:-1, 2:-2, 2:-2] = 40.0 + rng.normal(0.0, 15.0, (SHAPE[0] - 2, SHAPE[1] - 4,
                                                           SHAPE[2] - 4))
    ct[3:7, 5:9, 5:9] = 700.0  # a bone block
    return Volume(ct, SPACING_MM, ORIGIN_MM)


def body_of(ct: Volume) -> Volume:
    return ct.with_array(ct.array > -500)


def write_precomputed_cohort(folder: Path, offsets_hu: dict[str, float],
                             *, hu_tolerance=(70, 90), cohort_mean=(65, 80),
                             extra_rows: list[dict[str, str]] | None = None) -> Path:
    """Write cases (ct, sct = ct + offset in the body, body) and a protocol; return the
    protocol path. ``extra_rows`` are appended to the case table as written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (case_id, offset) in enumerate(offsets_hu.items()):
        case_dir = folder / case_id
        case_dir.mkdir(exist_ok=True)
        ct = make_ct(i)
        body = body_of(ct)
        sct = ct.with_array(np.where(body.array, ct.array + offset, ct.array))
        write_nifti(ct, case_dir / "ct.nii.gz")
        write_nifti(sct, case_dir / "sct.nii.gz")
        write_nifti(body, case_dir / "body.nii.gz")
        rows.append({"case_id": case_id, "ct": f"{case_id}/ct.nii.gz",
                     "sct": f"{case_id}/sct.nii.gz", "body": f"{case_id}/body.nii.gz",
                     "sex": "MF"[i % 2], "bmi": str(20 + 3 * i)})
    rows.extend(extra_rows or [])
    with open(folder / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "ct", "sct", "body", "sex",
                                                    "bmi"])
        writer.writeheader()
        writer.writerows(rows)
    tol, act = hu_tolerance
    mean_tol, mean_act = cohort_mean
    protocol = folder / "protocol.yaml"
    protocol.write_text(f"""\
name: sCT HU accuracy — test
kind: commissioning
model: {{name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}}
cases: cases.csv
attributes:
  sex: {{values: [F, M]}}
  bmi: {{min: 10, max: 70, unit: kg/m2}}
checks:
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
    tolerances:
      mae_hu: {{tolerance: {{max: {tol}}}, action: {{max: {act}}}}}
    cohort:
      - metric: mae_hu
        statistic: mean
        tolerance: {{max: {mean_tol}}}
        action: {{max: {mean_act}}}
""", encoding="utf-8")
    return protocol
