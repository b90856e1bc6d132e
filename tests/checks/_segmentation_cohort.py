"""A tiny auto-contouring cohort on disk: CT, reference and automatic mask folders, protocol.

Bladder = ball r 8 mm, rectum = ball r 4.5 mm on a 16 x 32 x 32 grid of 2 x 1 x 1 mm; the
automatic bladder is the reference shifted by ``shift_mm`` along x (case by case).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from qa.io import write_nifti
from qa.volume import Volume
from tests.checks._segmentation_analytic import Sphere

SPACING = (2.0, 1.0, 1.0)
SHAPE = (16, 32, 32)
BLADDER_CENTRE = (15.3, 15.2, 14.8)
RECTUM = Sphere((15.1, 22.4, 16.2), 4.5)


def bladder(shift_mm: float = 0.0) -> np.ndarray:
    cz, cy, cx = BLADDER_CENTRE
    return Sphere((cz, cy, cx + shift_mm), 8.0).mask(SHAPE, SPACING)


def write_segmentation_cohort(folder: Path, shifts_mm: dict[str, float], *,
                              with_image: bool = False) -> Path:
    """Write the cases and a protocol grading Dice[bladder] and HD95; return its path."""
    rows = []
    for case_id, shift in shifts_mm.items():
        for role, dx in (("ref", 0.0), ("auto", shift)):
            sub = folder / case_id / role
            sub.mkdir(parents=True)
            write_nifti(Volume(bladder(dx), SPACING), sub / "Bladder.nii.gz")
            write_nifti(Volume(RECTUM.mask(SHAPE, SPACING), SPACING), sub / "Rectum.nii.gz")
        ct = np.where(bladder(), 10.0, 40.0) + np.where(RECTUM.mask(SHAPE, SPACING), -60, 0)
        write_nifti(Volume(ct.astype(np.float32), SPACING), folder / case_id / "ct.nii.gz")
        rows.append({"case_id": case_id, "ct": f"{case_id}/ct.nii.gz", "ref": f"{case_id}/ref",
                     "auto": f"{case_id}/auto"})
    with open(folder / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "ct", "ref", "auto"])
        writer.writeheader()
        writer.writerows(rows)
    image = "    image: ct\n" if with_image else ""
    ct_role = "  ct: {kind: image, modality: CT}\n" if with_image else ""
    protocol = folder / "protocol.yaml"
    protocol.write_text(f"""\
name: auto-contouring — test
kind: commissioning
model: {{name: vendor-ac, version: "1.0", adapter: precomputed, output: auto}}
cases: cases.csv
roles:
{ct_role}  ref: {{kind: structures}}
  auto: {{kind: structures}}
checks:
  - check: segmentation
{image}    reference: ref
    evaluated: auto
    options: {{structures: [bladder, rectum], tolerance_mm: 2.0}}
    tolerances:
      "dice[bladder]": {{tolerance: {{min: 0.85}}, action: {{min: 0.75}}}}
      "hd95_mm[bladder]": {{tolerance: {{max: 5}}, action: {{max: 8}}}}
      "hd95_mm[rectum]": {{tolerance: {{max: 5}}, action: {{max: 8}}}}
""", encoding="utf-8")
    return protocol
