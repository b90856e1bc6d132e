"""Specification of the ``segmentation`` check: structure matching, flags, engine run.

Expected numbers: identical masks (Dice 1), an absent prediction (Dice 0, distances NaN),
and spheres whose exact Dice is the closed-form lens volume (tests/checks/_segmentation_analytic).
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from pydantic import ValidationError

from checks.registry import get_check
from checks.segmentation import SegmentationCheck, compare_masks
from qa.errors import QAInputError, ReaderError
from qa.io.structures import structure_metadata
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import GridMismatchError, Volume
from tests.checks._segmentation_analytic import Sphere
from tests.checks._segmentation_cohort import bladder, write_segmentation_cohort

SPACING = (2.0, 1.0, 1.0)
SHAPE = (16, 32, 32)


def _ball(centre_mm, radius_mm) -> np.ndarray:
    return Sphere(centre_mm, radius_mm).mask(SHAPE, SPACING)


def _set(**masks) -> dict[str, Volume]:
    return {name: structure_metadata(Volume(mask, SPACING), name)
            for name, mask in masks.items()}


BLADDER = _ball((15.3, 15.2, 14.8), 8.0)
RECTUM = _ball((15.1, 22.4, 16.2), 4.5)


def _rows(output, metric):
    return {m.label: m.value for m in output.measurements if m.metric == metric}


def test_registered_under_its_protocol_name():
    assert get_check("segmentation") is SegmentationCheck
    assert SegmentationCheck.slots["reference"].kind == "structures"
    assert SegmentationCheck.slots["evaluated"].grid_from == "image"


def test_names_match_after_normalisation_and_aliases():
    check = SegmentationCheck(SegmentationCheck.Options(
        structures=["bladder", "rectum"], aliases={"bladder": ["Vessie"]}))
    output = check.run({"reference": _set(Bladder=BLADDER, **{"RECTUM ": RECTUM}),
                        "evaluated": _set(vessie=BLADDER, rectum=RECTUM)})
    assert _rows(output, "dice") == {"bladder": 1.0, "rectum": 1.0}
    assert _rows(output, "missing_evaluated") == {"bladder": 0.0, "rectum": 0.0}
    assert output.details["structures"]["bladder"]["evaluated_name"] == "vessie"
    json.dumps(output.details, allow_nan=False)  # storable as it is


def test_missing_and_extra_structures_are_reported_never_scored_perfect():
    check = SegmentationCheck(SegmentationCheck.Options(
        structures=["bladder", "rectum", "prostate"]))
    output = check.run({"reference": _set(bladder=BLADDER, rectum=RECTUM),
                        "evaluated": _set(bladder=BLADDER, femur_l=RECTUM)})
    assert _rows(output, "missing_evaluated") == {"bladder": 0.0, "rectum": 1.0,
                                                  "prostate": 1.0}
    assert _rows(output, "missing_reference") == {"bladder": 0.0, "rectum": 0.0,
                                                  "prostate": 1.0}
    dice = _rows(output, "dice")
    assert dice == {"bladder": 1.0, "rectum": 0.0}  # prostate: nothing to score against
    assert math.isnan(_rows(output, "hd95_mm")["rectum"])
    assert _rows(output, "empty_evaluated")["rectum"] == 1.0
    assert _rows(output, "n_extra_evaluated") == {"": 1.0}
    assert output.details["extra_evaluated"] == ["femur_l"]
    assert output.details["missing_evaluated"] == ["rectum", "prostate"]
    # prostate is in neither set (e.g. a female patient): not applicable, no verdict
    assert output.details["not_applicable"] == ["prostate"]


def test_default_structures_are_those_of_the_reference():
    output = SegmentationCheck().run({"reference": _set(bladder=BLADDER),
                                      "evaluated": _set(bladder=np.roll(BLADDER, 1, 2))})
    expected = compare_masks(Volume(BLADDER, SPACING), Volume(np.roll(BLADDER, 1, 2), SPACING))
    assert _rows(output, "dice") == {"bladder": expected.dice}
    assert _rows(output, "hd95_mm")["bladder"] == pytest.approx(expected.hd95_mm)


def test_zero_voxel_reference_structure_is_flagged():
    output = SegmentationCheck().run({"reference": _set(bladder=np.zeros(SHAPE, bool)),
                                      "evaluated": _set(bladder=BLADDER)})
    assert _rows(output, "empty_reference") == {"bladder": 1.0}
    assert _rows(output, "dice") == {"bladder": 0.0}


def _not_compared(output, name: str) -> None:
    """``name`` has NaN metrics and status error; nothing about it reads as measured."""
    for metric in ("dice", "hd95_mm", "assd_mm", "surface_dice", "apl_mm", "empty_evaluated"):
        assert math.isnan(_rows(output, metric)[name]), metric
    assert output.details["structures"][name]["status"] == "error"
    assert output.details["not_compared"] == [name]
    json.dumps(output.details, allow_nan=False)


def test_structure_on_another_grid_is_not_compared_and_the_others_are():
    moved = Volume(BLADDER, SPACING, origin=(0.0, 0.0, 3.0))
    output = SegmentationCheck().run({"reference": _set(bladder=BLADDER, rectum=RECTUM),
                                      "evaluated": {**_set(rectum=RECTUM), "bladder": moved}})
    assert _rows(output, "dice")["rectum"] == 1.0
    _not_compared(output, "bladder")
    [problem] = output.problems
    assert isinstance(problem, QAInputError) and problem.check == "segmentation"
    assert re.match(r"input 'evaluated': structure 'bladder': reference and predicted are on "
                    r"different grids.*\(not compared on this case; the other structures are\)$",
                    problem.message, re.DOTALL)
    assert issubclass(GridMismatchError, ValueError)  # what compare_masks raised


def test_non_binary_structure_is_a_located_problem_of_its_input():
    labels = {"bladder": Volume(BLADDER.astype(np.uint8) * 3, SPACING)}
    output = SegmentationCheck().run({"reference": _set(bladder=BLADDER, rectum=RECTUM),
                                      "evaluated": {**_set(rectum=RECTUM), **labels}})
    _not_compared(output, "bladder")
    assert _rows(output, "dice")["rectum"] == 1.0
    [problem] = output.problems
    assert problem.message.startswith("input 'evaluated': structure 'bladder': predicted mask "
                                      "is not binary: it holds values 0, 3")
    output = SegmentationCheck().run({"reference": labels, "evaluated": _set(bladder=BLADDER)})
    assert output.problems[0].message.startswith("input 'reference': structure 'bladder': "
                                                 "reference mask is not binary")


class _Unreadable(dict):
    """A structure set whose ``bad`` mask fails to read, as a lazy set's file may."""

    def __getitem__(self, name):
        if name == "bad":
            raise ReaderError("structure 'bad' could not be read (OSError: truncated); check "
                              "or re-export this file", path="auto/bad.nii.gz", role="auto")
        return super().__getitem__(name)


def test_a_mask_that_does_not_read_keeps_its_file_and_role():
    evaluated = _Unreadable(_set(bladder=BLADDER), bad=None)
    output = SegmentationCheck().run({"reference": _set(bladder=BLADDER, bad=RECTUM),
                                      "evaluated": evaluated})
    assert _rows(output, "dice")["bladder"] == 1.0
    _not_compared(output, "bad")
    [problem] = output.problems
    assert isinstance(problem, ReaderError)
    assert (problem.path, problem.role) == ("auto/bad.nii.gz", "auto")
    assert problem.message.startswith("structure 'bad' could not be read")


def test_an_unreadable_evaluated_mask_absent_from_the_reference_is_not_called_not_applicable():
    output = SegmentationCheck(SegmentationCheck.Options(structures=["bladder", "bad"])).run(
        {"reference": _set(bladder=BLADDER), "evaluated": _Unreadable(bad=None)})
    assert output.details["not_applicable"] == []  # it may hold voxels: cannot tell
    assert [p.path for p in output.problems] == ["auto/bad.nii.gz"]


def test_two_evaluated_structures_matching_one_name_are_refused():
    check = SegmentationCheck(SegmentationCheck.Options(aliases={"bladder": ["vessie"]}))
    with pytest.raises(QAInputError, match=r"structures 'Vessie', 'bladder' all match "
                                           r"'bladder'; rename one"):
        check.run({"reference": _set(bladder=BLADDER),
                   "evaluated": _set(Vessie=BLADDER, bladder=BLADDER)})


def test_options_are_validated_with_the_offending_key():
    with pytest.raises(ValidationError, match="tolerance_distance"):
        SegmentationCheck.Options(tolerance_distance=2)
    with pytest.raises(ValidationError, match="method"):
        SegmentationCheck.Options(method="medpy")
    with pytest.raises(ValidationError, match=r"alias 'vessie' is given to both 'bladder' "
                                              r"and 'prostate'"):
        SegmentationCheck.Options(aliases={"bladder": ["Vessie"], "prostate": ["vessie"]})


def test_engine_runs_the_check_on_mask_folders_and_grades_per_structure(tmp_path):
    # predicted bladder shifted by 0 and 2 mm (Dice about 0.81: tolerance level)
    protocol = write_segmentation_cohort(tmp_path, {"A01": 0.0, "A02": 2.0})
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        measured = store.measurements(outcome.run_id)
        verdicts = store.verdicts(outcome.run_id)
    dice = measured[(measured.metric == "dice") & (measured.label == "bladder")]
    expected = compare_masks(Volume(bladder(), SPACING), Volume(bladder(2.0), SPACING)).dice
    assert dice.value.tolist() == pytest.approx([1.0, expected])
    graded = verdicts[(verdicts.metric == "dice") & (verdicts.statistic == "value")]
    assert graded.set_index("case_id").level.to_dict() == {"A01": "OK", "A02": "TOLERANCE"}
    hd95 = verdicts[verdicts.metric == "hd95_mm"]
    assert set(hd95.label) == {"bladder", "rectum"} and set(hd95.level) == {"OK"}


def test_one_unreadable_mask_fails_its_structure_not_its_case(tmp_path):
    protocol = write_segmentation_cohort(tmp_path, {"A01": 0.0, "A02": 2.0})
    (tmp_path / "A02" / "auto" / "Rectum.nii.gz").write_bytes(b"truncated")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        measured = store.measurements(outcome.run_id)
        errors = store.errors(outcome.run_id)
        cases = store.cases(outcome.run_id)
    dice = measured[measured.metric == "dice"].set_index(["case_id", "label"]).value
    assert dice[("A01", "rectum")] == 1.0 and dice[("A02", "bladder")] < 1.0  # still scored
    assert math.isnan(dice[("A02", "rectum")])  # reported, as not measured
    [error] = errors.itertuples()
    assert (error.case_id, error.check_id, error.role) == ("A02", "segmentation", "auto")
    assert str(error.path).endswith("Rectum.nii.gz")
    assert error.message.startswith("structure 'Rectum': SimpleITK cannot read this nifti")
    assert error.message.endswith("(not compared on this case; the other structures are)")
    assert cases.set_index("case_id").status.to_dict() == {"A01": "ok", "A02": "error"}
