"""Specification of ``qa compare seg``: RTSTRUCT or mask folders in, one row per structure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa.cli import main
from qa.io import write_nifti
from qa.volume import Volume
from tests.checks._segmentation_cohort import RECTUM, SHAPE, SPACING, bladder
from tests.qa.io.dicom_factory import circle_lps, write_rtstruct, write_series

FRAME = "1.2.826.0.1.3680043.10.999.7"


def _folder(path, **masks):
    path.mkdir(parents=True)
    for name, mask in masks.items():
        write_nifti(Volume(mask, SPACING), path / f"{name}.nii.gz")
    return path


def test_mask_folders_give_one_row_per_structure_with_aliases(tmp_path, capsys):
    ref = _folder(tmp_path / "ref", Bladder=bladder(), Rectum=RECTUM.mask(SHAPE, SPACING))
    auto = _folder(tmp_path / "auto", vessie=bladder(1.0), Femur=bladder())
    code = main(["compare", "seg", str(ref), str(auto), "--alias", "bladder=Vessie",
                 "--structures", "bladder", "rectum", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 30  # rectum absent from the evaluated set
    assert 0.85 < out["structures"]["bladder"]["dice"] < 1.0
    assert out["structures"]["rectum"]["dice"] == 0.0
    assert out["structures"]["rectum"]["hd95_mm"] is None  # undefined, not 0
    assert out["missing_evaluated"] == ["rectum"] and out["extra_evaluated"] == ["Femur"]


def test_table_output_flags_missing_structures(tmp_path, capsys):
    ref = _folder(tmp_path / "ref", bladder=bladder())
    auto = _folder(tmp_path / "auto", bladder=bladder())
    assert main(["compare", "seg", str(ref), str(auto)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["structure", "Dice", "HD95"]
    assert out.splitlines()[1].split()[:2] == ["bladder", "1.000"]


def _ct_series(folder, frame):
    stored = np.zeros((6, 40, 40), np.int16)
    write_series(folder, stored, origin_lps=(-20.0, -20.0, 0.0), step_mm=2.0,
                 frame_uid=frame, pixel_spacing=(1.0, 1.0))


@pytest.mark.parametrize("frame_ok", [True, False])
def test_rtstruct_is_rasterised_on_the_image_and_its_frame_checked(tmp_path, capsys,
                                                                    frame_ok):
    _ct_series(tmp_path / "ct", FRAME if frame_ok else "1.2.3.4")
    discs = [("CLOSED_PLANAR", circle_lps(z, (0.0, 0.0), 8.0)) for z in (2.0, 4.0, 6.0)]
    shifted = [("CLOSED_PLANAR", circle_lps(z, (1.0, 0.0), 8.0)) for z in (2.0, 4.0, 6.0)]
    rs_ref = write_rtstruct(tmp_path / "ref.dcm", [{"number": 1, "name": "Bladder",
                                                    "contours": discs}], frame_uid=FRAME)
    rs_auto = write_rtstruct(tmp_path / "auto.dcm", [{"number": 1, "name": "BLADDER",
                                                      "contours": shifted}], frame_uid=FRAME)
    code = main(["compare", "seg", str(rs_ref), str(rs_auto), "--image",
                 str(tmp_path / "ct"), "--json"])
    captured = capsys.readouterr()
    if frame_ok:
        assert code == 0
        assert 0.85 < json.loads(captured.out)["structures"]["Bladder"]["dice"] < 1.0
    else:
        assert code == 40
        assert "not in the same patient coordinates" in captured.err


def test_bad_alias_is_a_usage_error_naming_the_option(tmp_path, capsys):
    ref = _folder(tmp_path / "ref", bladder=bladder())
    assert main(["compare", "seg", str(ref), str(ref), "--alias", "bladder"]) == 40
    assert "--alias 'bladder' is not NAME=ALT[,ALT...]" in capsys.readouterr().err


def test_a_structure_on_another_grid_prints_its_error_and_the_others_are_compared(tmp_path,
                                                                                   capsys):
    ref = _folder(tmp_path / "ref", bladder=bladder(), rectum=RECTUM.mask(SHAPE, SPACING))
    auto = _folder(tmp_path / "auto", bladder=bladder())
    write_nifti(Volume(RECTUM.mask(SHAPE, SPACING), SPACING, origin=(0.0, 0.0, 2.0)),
                auto / "rectum.nii.gz")
    assert main(["compare", "seg", str(ref), str(auto)]) == 40
    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines()[1:3]}
    assert rows["bladder"].split()[1] == "1.000"
    assert rows["rectum"].split()[1] == "n/a" and "not compared" in rows["rectum"]
    assert "input 'evaluated': structure 'rectum': reference and predicted are on " \
           "different grids" in captured.err
    assert main(["compare", "seg", str(ref), str(auto), "--json"]) == 40
    out = json.loads(capsys.readouterr().out)
    assert out["structures"]["rectum"]["dice"] is None
    assert "different grids" in out["not_compared"]["rectum"]
