"""Specification: a structure set reads each mask when a check asks for it, never before.

:func:`qa.io.read_structures` returns a read-only mapping. Its names, order, arrays and
metadata are those of reading every mask at once, but ``len``, iteration and ``in`` read no
mask, ``set[name]`` reads one and keeps no reference to it (so a check walking the set holds
one mask at a time), and a member that cannot be read fails the check of that case only,
with a message naming the structure and the file.
"""

from __future__ import annotations

import gc
import json
import weakref

import numpy as np
import pytest

from checks import registry
from qa.errors import ReaderError
from qa.io import read_rtstruct, read_structures, write_nifti
from qa.io import rtstruct as rtstruct_module
from qa.io import structures as structures_module
from qa.io.structures import StructureSet, split_label_map
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import Volume
from tests.cohort_builders import make_ct
from tests.qa.io.dicom_factory import square_lps, write_rtstruct
from tests.qa.test_case_runner import VoxelCountCheck

GRID = dict(spacing=(2.0, 1.0, 1.0), origin=(-4.0, 3.0, -2.5))


def _labels() -> np.ndarray:
    labels = np.zeros((4, 6, 8), dtype=np.uint8)
    labels[1:3, 1:4, 1:4] = 1  # 18 voxels
    labels[0:2, 2:5, 5:7] = 2  # 12 voxels
    return labels


@pytest.fixture
def counted_reads(monkeypatch):
    """The mask files read so far (names), through qa.io.structures.read_mask."""
    reads: list[str] = []
    real = structures_module.read_mask

    def read_mask(path):
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(structures_module, "read_mask", read_mask)
    return reads


def test_a_folder_is_listed_without_reading_a_mask(tmp_path, counted_reads):
    labels = _labels()
    write_nifti(Volume(labels == 1, **GRID), tmp_path / "Bladder.nii.gz")
    write_nifti(Volume(labels == 2, **GRID), tmp_path / "Rectum.nii.gz")
    structures = read_structures(tmp_path)
    assert isinstance(structures, StructureSet)
    assert len(structures) == 2 and list(structures) == ["Bladder", "Rectum"]
    assert "Rectum" in structures and "Prostate" not in structures
    assert structures.get("Prostate") is None
    assert counted_reads == []
    rectum = structures["Rectum"]
    assert counted_reads == ["Rectum.nii.gz"]
    assert int(rectum.array.sum()) == 12 and rectum.metadata["roi_key"] == "rectum"
    # nothing is cached: asking again reads again, and the set keeps no reference
    structures["Rectum"]
    assert counted_reads == ["Rectum.nii.gz", "Rectum.nii.gz"]
    alive = weakref.ref(rectum.array)
    del rectum
    gc.collect()
    assert alive() is None
    with pytest.raises(KeyError):
        structures["Prostate"]
    with pytest.raises(TypeError):
        structures["Bladder"] = None  # read-only


def test_a_label_map_gives_the_masks_of_an_eager_split(tmp_path):
    labels = _labels()
    # a model's float output holding whole numbers is kept as small integers: same masks
    for stored in (labels, labels.astype(np.float32), labels.astype(np.float64) * 100):
        lookup = {1: "bladder", 2: "rectum", 3: "prostate"} if stored.max() < 100 else {
            100: "bladder", 200: "rectum", 300: "prostate"}
        structures = split_label_map(Volume(stored, **GRID), lookup)
        assert list(structures) == ["bladder", "rectum", "prostate"]
        for value, name in lookup.items():
            mask = structures[name]
            assert mask.array.dtype == bool and mask.metadata["roi_name"] == name
            np.testing.assert_array_equal(mask.array, stored == value)
            assert mask.origin == GRID["origin"] and mask.spacing == GRID["spacing"]
    with_inf = labels.astype(np.float32)
    with_inf[0, 0, 0] = np.inf  # kept as floats: inf is no label
    assert int(split_label_map(Volume(with_inf, **GRID), {1: "b"})["b"].array.sum()) == 18
    write_nifti(Volume(labels, **GRID), tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"2": "rectum"}), encoding="utf-8")
    assert int(read_structures(tmp_path / "labels.nii.gz")["rectum"].array.sum()) == 12


def test_an_rtstruct_rasterises_each_roi_on_access_as_a_full_read_does(tmp_path, monkeypatch):
    frame = "1.2.826.0.1.3680043.10.999.7"
    reference = Volume(np.zeros((5, 80, 60), np.int16), (3.0, 0.5, 1.0), (0.0, -19.75, -29.5),
                       None, {"frame_of_reference_uid": frame})
    path = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 1, "name": "Box", "contours": [
            ("CLOSED_PLANAR", square_lps(z, (0, 0), 10, 10)) for z in (3.0, 6.0, 12.0)]},
        {"number": 2, "name": "Small", "contours": [
            ("CLOSED_PLANAR", square_lps(z, (2, 1), 4, 3)) for z in (6.0, 9.0)]},
    ], frame_uid=frame)
    eager = read_rtstruct(path, reference)
    rasterised: list[int] = []
    real = rtstruct_module._rasterise
    monkeypatch.setattr(rtstruct_module, "_rasterise",
                        lambda planes, *a: rasterised.append(len(planes)) or real(planes, *a))
    lazy = read_structures(path, reference=reference)
    assert list(lazy) == list(eager) == ["Box", "Small"] and rasterised == []
    for name in lazy:
        mask = lazy[name]
        np.testing.assert_array_equal(mask.array, eager[name].array)
        assert mask.metadata == eager[name].metadata
    assert rasterised == [3, 2]  # one ROI per access: Box (3 planes), then Small (2)
    other = reference.with_array(reference.array, frame_of_reference_uid="1.2.3")
    with pytest.raises(ReaderError, match="frame of reference"):
        read_structures(path, reference=other)  # refused when read, as before


def test_a_member_that_does_not_read_names_the_structure_and_its_file(tmp_path):
    write_nifti(Volume(_labels() == 1, **GRID), tmp_path / "Bladder.nii.gz")
    (tmp_path / "Rectum.nii.gz").write_bytes(b"\x1f\x8b not a gzip stream")
    structures = read_structures(tmp_path)
    assert int(structures["Bladder"].array.sum()) == 18
    with pytest.raises(ReaderError) as info:
        structures["Rectum"]
    assert "structure 'Rectum'" in info.value.message
    assert info.value.path.endswith("Rectum.nii.gz")


def test_a_bad_member_fails_its_case_only(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "voxel_count",
                        "tests.qa.test_case_runner:VoxelCountCheck")
    assert VoxelCountCheck.name == "voxel_count"
    ct = make_ct(0)
    bladder = np.zeros(ct.shape, dtype=bool)
    bladder[2:4, 3:6, 3:6] = True  # 18 voxels
    for case in ("A", "B"):
        (tmp_path / case / "oars").mkdir(parents=True)
        write_nifti(ct, tmp_path / case / "ct.nii.gz")
        write_nifti(ct.with_array(bladder), tmp_path / case / "oars" / "bladder.nii.gz")
    (tmp_path / "B" / "oars" / "rectum.nii.gz").write_bytes(b"truncated")
    (tmp_path / "cases.csv").write_text(
        "case_id,ct,oars\nA,A/ct.nii.gz,A/oars\nB,B/ct.nii.gz,B/oars\n", encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text("""\
name: lazy structures
kind: commissioning
model: {name: none, version: "0", adapter: precomputed, output: unused}
cases: cases.csv
roles:
  oars: {kind: structures}
checks:
  - check: voxel_count
    image: ct
    structures: oars
""", encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(tmp_path / "protocol.yaml", store).run_id
        measured = store.measurements(run_id)
        errors = store.errors(run_id)
    assert {(r.case_id, r.label): r.value for r in measured.itertuples()} == {
        ("A", "bladder"): 18}
    assert len(errors) == 1, errors.message.tolist()
    error = errors.iloc[0]
    assert error.case_id == "B" and error.role == "oars"
    assert "structure 'rectum'" in error.message
    assert str(error.path).endswith("rectum.nii.gz")
