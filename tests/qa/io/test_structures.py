"""Specification of qa.io.read_structures: three ways to hold a structure set, one result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qa.errors import ReaderError
from qa.io import read_structures, write_nifti
from qa.volume import Volume

GRID = dict(spacing=(2.0, 1.0, 1.0), origin=(-4.0, 3.0, -2.5))


def _labels() -> np.ndarray:
    labels = np.zeros((4, 6, 8), dtype=np.uint8)
    labels[1:3, 1:4, 1:4] = 1  # 18 voxels
    labels[0:2, 2:5, 5:7] = 2  # 12 voxels
    return labels


def test_a_folder_of_masks_gives_one_structure_per_file(tmp_path):
    labels = _labels()
    write_nifti(Volume(labels == 1, **GRID), tmp_path / "Bladder.nii.gz")
    write_nifti(Volume(labels == 2, **GRID), tmp_path / "Rectum Wall.nii")
    (tmp_path / "notes.txt").write_text("not a mask", encoding="utf-8")
    structures = read_structures(tmp_path)
    assert list(structures) == ["Bladder", "Rectum Wall"]
    assert structures["Bladder"].array.sum() == 18
    assert structures["Rectum Wall"].metadata["roi_key"] == "rectum_wall"
    assert structures["Bladder"].origin == GRID["origin"]


def test_a_label_map_needs_its_json_table(tmp_path):
    write_nifti(Volume(_labels(), **GRID), tmp_path / "labels.nii.gz")
    with pytest.raises(ReaderError, match="needs its label table labels.json"):
        read_structures(tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "bladder", "2": "rectum",
                                                      "3": "prostate"}), encoding="utf-8")
    structures = read_structures(tmp_path / "labels.nii.gz")
    assert {k: int(v.array.sum()) for k, v in structures.items()} == {
        "bladder": 18, "rectum": 12, "prostate": 0}
    assert structures["rectum"].array.dtype == bool


def test_bad_structure_sets_are_clear_errors(tmp_path):
    with pytest.raises(ReaderError, match="structure set not found"):
        read_structures(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReaderError, match="no mask file in this folder"):
        read_structures(tmp_path / "empty")
    (tmp_path / "rs.dcm").write_bytes(b"not read before the grid check")
    with pytest.raises(ReaderError, match="needs a reference grid"):
        read_structures(tmp_path / "rs.dcm")
    write_nifti(Volume(_labels(), **GRID), tmp_path / "lm.nii.gz")
    (tmp_path / "lm.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ReaderError, match="label table does not parse"):
        read_structures(tmp_path / "lm.nii.gz")
