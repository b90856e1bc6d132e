"""A model (or a vendor export) that writes a label map is the evaluated structure set.

``roles.<role>: {kind: structures, labels: {1: bladder, 2: rectum}}`` declares the label
values; the engine runs the model (torch: (1, C, Z, Y, X) scores, argmax = label) or reads
the label-map image, splits it into one mask per label and the ``segmentation`` check compares
each with the reference structure set. Expected values: :func:`compare_masks` on the masks the
tiny threshold model must produce (CT > 50 HU: bladder, CT < -50 HU: rectum).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from checks.segmentation import compare_masks
from qa.errors import ProtocolError
from qa.io import write_nifti
from qa.protocol import load_protocol
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import Volume
from tests.checks._segmentation_analytic import Sphere
from tests.checks._segmentation_cohort import SHAPE, SPACING, bladder

SHIFTS_MM = {"A01": 0.0, "A02": 2.0}
RECTUM = Sphere((15.1, 26.5, 16.2), 3.0)  # clear of the bladder (a label map cannot overlap)


class ThresholdContours(torch.nn.Module):
    """Scores of background, bladder (CT > 50 HU), rectum (CT < -50 HU): (1, 3, Z, Y, X)."""

    def forward(self, ct: torch.Tensor) -> torch.Tensor:
        bladder_score = (ct > 50.0).float()
        rectum_score = (ct < -50.0).float()
        background = 0.5 * (1.0 - bladder_score - rectum_score)
        return torch.cat([background, bladder_score, rectum_score], dim=1)


def _ct(shift_mm: float) -> np.ndarray:
    ct = np.where(bladder(shift_mm), 100.0, 0.0) - np.where(RECTUM.mask(SHAPE, SPACING), 100, 0)
    return ct.astype(np.float32)


def _cohort(folder: Path, *, label_map_files: bool) -> None:
    rows = []
    for case_id, shift in SHIFTS_MM.items():
        ref = folder / case_id / "ref"
        ref.mkdir(parents=True)
        write_nifti(Volume(bladder(), SPACING), ref / "Bladder.nii.gz")
        write_nifti(Volume(RECTUM.mask(SHAPE, SPACING), SPACING), ref / "Rectum.nii.gz")
        write_nifti(Volume(_ct(shift), SPACING), folder / case_id / "ct.nii.gz")
        row = {"case_id": case_id, "ct": f"{case_id}/ct.nii.gz", "ref": f"{case_id}/ref"}
        if label_map_files:  # a vendor's export: one label image, no JSON table
            labels = (bladder(shift) * 1 + RECTUM.mask(SHAPE, SPACING) * 2).astype(np.uint8)
            write_nifti(Volume(labels, SPACING), folder / case_id / "auto.nii.gz")
            row["auto"] = f"{case_id}/auto.nii.gz"
        rows.append(row)
    with open(folder / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _protocol(folder: Path, model: str, labels: str = "{1: Bladder, 2: rectum}") -> Path:
    path = folder / "protocol.yaml"
    path.write_text(f"""\
name: auto-contouring label map — test
kind: commissioning
model: {model}
cases: cases.csv
roles:
  ct: {{kind: image, modality: CT}}
  ref: {{kind: structures}}
  auto: {{kind: structures, labels: {labels}}}
checks:
  - check: segmentation
    reference: ref
    evaluated: auto
    options: {{structures: [bladder, rectum]}}
    tolerances:
      dice: {{tolerance: {{min: 0.85}}, action: {{min: 0.75}}}}
      "dice[rectum]": {{tolerance: {{min: 0.95}}, action: {{min: 0.9}}}}
""", encoding="utf-8")
    return path


def _run(protocol: Path, tmp_path: Path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        return store.measurements(outcome.run_id), store.verdicts(outcome.run_id)


def _check_results(measured, verdicts) -> None:
    dice = measured[measured.metric == "dice"].set_index(["case_id", "label"]).value
    for case_id, shift in SHIFTS_MM.items():
        expected = compare_masks(Volume(bladder(), SPACING), Volume(bladder(shift), SPACING))
        assert dice[(case_id, "bladder")] == pytest.approx(expected.dice, abs=1e-12)
        assert dice[(case_id, "rectum")] == 1.0
    graded = verdicts[(verdicts.metric == "dice") & (verdicts.statistic == "value")]
    levels = {(v.case_id, v.label): v.level for v in graded.itertuples()}
    # bare `dice` grades the bladder, `dice[rectum]` the rectum
    assert levels == {("A01", "bladder"): "OK", ("A01", "rectum"): "OK",
                      ("A02", "bladder"): "TOLERANCE", ("A02", "rectum"): "OK"}
    assert 0.75 < dice[("A02", "bladder")] < 0.85


def test_a_torch_model_writing_label_scores_is_compared_structure_by_structure(tmp_path):
    _cohort(tmp_path, label_map_files=False)
    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(ThresholdContours()).save(str(tmp_path / "contours.pt"))
    protocol = _protocol(tmp_path, '{name: threshold-ac, version: "1", adapter: torch, '
                                   'path: contours.pt, input: ct, output: auto}')
    measured, verdicts = _run(protocol, tmp_path)
    _check_results(measured, verdicts)


def test_a_precomputed_label_map_needs_no_json_table_when_the_protocol_names_labels(tmp_path):
    _cohort(tmp_path, label_map_files=True)
    protocol = _protocol(tmp_path, '{name: vendor-ac, version: "1", adapter: precomputed, '
                                   'output: auto}')
    measured, verdicts = _run(protocol, tmp_path)
    _check_results(measured, verdicts)


def test_a_model_output_feeding_a_structures_slot_must_declare_its_labels(tmp_path):
    _cohort(tmp_path, label_map_files=False)
    protocol = _protocol(tmp_path, '{name: m, version: "1", adapter: torch, path: m.pt, '
                                   'input: ct, output: auto}')
    text = protocol.read_text().replace("  auto: {kind: structures, labels: {1: Bladder, "
                                        "2: rectum}}\n", "")
    protocol.write_text(text)
    with pytest.raises(ProtocolError) as info:
        load_protocol(protocol)
    problems = dict(info.value.problems)
    assert problems["roles.auto"].startswith("the model output 'auto' fills a structures slot: "
                                             "declare the label map it writes")


@pytest.mark.parametrize(("labels", "message"), [
    ("{1: bladder, 2: bladder}", "labels must map label values to distinct, non-blank"),
    ("{1: bladder, x: rectum}", "labels"),
])
def test_label_tables_are_validated(tmp_path, labels, message):
    _cohort(tmp_path, label_map_files=True)
    protocol = _protocol(tmp_path, '{name: m, version: "1", adapter: precomputed, '
                                   'output: auto}', labels=labels)
    with pytest.raises(ProtocolError) as info:
        load_protocol(protocol)
    assert message in str(info.value)
