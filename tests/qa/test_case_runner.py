"""Specification of structure-set inputs in the engine (slot kind ``structures``)."""

from __future__ import annotations

import gc
import weakref
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import registry
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from qa.case_runner import CaseContext, process_case
from qa.dataset import load_cases
from qa.io import write_nifti
from qa.models import load_adapter
from qa.protocol import load_protocol
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import make_ct


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NoOptions:
    pass


class VoxelCountCheck(Check):
    """Counts the voxels of each structure and checks it got the image grid."""

    name: ClassVar[str] = "voxel_count"
    title: ClassVar[str] = "Voxel count"
    slots: ClassVar[dict[str, Slot]] = {
        "image": Slot("image"), "structures": Slot("structures", grid_from="image")}
    metrics: ClassVar[dict[str, MetricInfo]] = {"n_voxels": MetricInfo("voxels", "count")}
    Options = NoOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        assert all(m.shape == inputs["image"].shape for m in inputs["structures"].values())
        return CheckOutput(tuple(Measurement("n_voxels", int(m.array.sum()), "voxels", name)
                                 for name, m in inputs["structures"].items()))


_GROUPED_PROTOCOL = """\
name: structures
kind: commissioning
model: {name: none, version: "0", adapter: precomputed, output: unused}
cases: cases.csv
roles:
  oars: {kind: structures, members: [bladder, rectum]}
checks:
"""


def test_mask_roles_grouped_into_a_structure_set(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "voxel_count", f"{__name__}:VoxelCountCheck")
    ct = make_ct(0)
    bladder = np.zeros(ct.shape, dtype=bool)
    bladder[2:4, 3:6, 3:6] = True  # 18 voxels
    rectum = np.zeros(ct.shape, dtype=bool)
    rectum[5:6, 8:10, 8:12] = True  # 8 voxels
    for case in ("A", "B"):
        (tmp_path / case).mkdir()
        write_nifti(ct, tmp_path / case / "ct.nii.gz")
        write_nifti(ct.with_array(bladder), tmp_path / case / "bladder.nii.gz")
    write_nifti(ct.with_array(rectum), tmp_path / "A" / "rectum.nii.gz")
    (tmp_path / "cases.csv").write_text(
        "case_id,ct,bladder,rectum\nA,A/ct.nii.gz,A/bladder.nii.gz,A/rectum.nii.gz\n"
        "B,B/ct.nii.gz,B/bladder.nii.gz,\n", encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text(
        _GROUPED_PROTOCOL + "  - {check: voxel_count, image: ct, structures: oars}\n",
        encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(tmp_path / "protocol.yaml", store).run_id
        measured = store.measurements(run_id)
        errors = store.errors(run_id)
        store_summary = (store.run(run_id)['summary'], store.cases(run_id))
    assert errors.empty, errors.message.tolist()
    assert len(measured), store_summary
    counts = {(r.case_id, r.label): r.value for r in measured.itertuples()}
    # B has no rectum (blank cell): the structure is absent, not an error
    assert counts == {("A", "bladder"): 18, ("A", "rectum"): 8, ("B", "bladder"): 18}


class HoldNothingCheck(Check):
    """Reads each structure of a group in turn, noting how many masks read before it are
    still alive (0 when the set keeps none)."""

    name: ClassVar[str] = "hold_nothing"
    title: ClassVar[str] = "Hold nothing"
    slots: ClassVar[dict[str, Slot]] = {"structures": Slot("structures")}
    metrics: ClassVar[dict[str, MetricInfo]] = {"alive_before": MetricInfo("masks", "count")}
    Options = NoOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        alive: list[weakref.ref] = []
        rows = []
        for name in inputs["structures"]:
            gc.collect()
            rows.append(Measurement("alive_before", sum(r() is not None for r in alive),
                                    "masks", name))
            alive.append(weakref.ref(inputs["structures"][name].array))
        return CheckOutput(tuple(rows))


def _grouped_case(tmp_path, *, truncated: str | None = None):
    """Case A: CT, bladder and rectum masks grouped as ``oars`` and read by hold_nothing;
    ``truncated``: a member whose file is replaced by garbage."""
    ct = make_ct(0)
    (tmp_path / "A").mkdir()
    write_nifti(ct, tmp_path / "A" / "ct.nii.gz")
    for name, box in (("bladder", np.s_[2:4, 3:6, 3:6]), ("rectum", np.s_[5:6, 8:10, 8:12])):
        mask = np.zeros(ct.shape, dtype=bool)
        mask[box] = True
        write_nifti(ct.with_array(mask), tmp_path / "A" / f"{name}.nii.gz")
    if truncated:
        (tmp_path / "A" / f"{truncated}.nii.gz").write_bytes(b"truncated")
    (tmp_path / "cases.csv").write_text(
        "case_id,ct,bladder,rectum\nA,A/ct.nii.gz,A/bladder.nii.gz,A/rectum.nii.gz\n",
        encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text(
        _GROUPED_PROTOCOL + "  - {check: hold_nothing, structures: oars}\n", encoding="utf-8")
    protocol = load_protocol(tmp_path / "protocol.yaml")
    context = CaseContext(protocol, list(protocol.check_instances()),
                          load_adapter(protocol.model, protocol.base_dir))
    return process_case(context, load_cases(protocol).cases[0])


def test_grouped_members_are_read_when_asked_for_and_not_held(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "hold_nothing", f"{__name__}:HoldNothingCheck")
    result = _grouped_case(tmp_path)
    assert not result.errors
    [record] = result.records
    # when the rectum is read, the bladder's mask is already gone
    assert {m.label: m.value for m in record.measurements} == {"bladder": 0, "rectum": 0}
    rows = {row["role"]: row for row in result.image_metadata}
    assert list(rows) == ["bladder", "rectum"]  # one row per member, in reading order
    assert rows["rectum"]["kind"] == "mask" and rows["rectum"]["max_value"] == 1.0


def test_a_grouped_member_that_does_not_read_names_its_own_role_and_file(tmp_path,
                                                                        monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "hold_nothing", f"{__name__}:HoldNothingCheck")
    result = _grouped_case(tmp_path, truncated="rectum")
    [error] = result.errors  # this check does not go on past it: the case's check fails
    assert (error["role"], error["check_id"]) == ("rectum", "hold_nothing")
    assert error["path"].endswith("A/rectum.nii.gz")
    assert error["message"].startswith("structure 'rectum': ")


def test_a_grouped_member_whose_reader_fails_unexpectedly_still_names_its_own_role(
        tmp_path, monkeypatch):
    import qa._case_loader as loader

    def broken(path, kind, *, case_id=None):
        if str(path).endswith("rectum.nii.gz"):
            raise OSError("disk read error")
        return original(path, kind, case_id=case_id)

    original = loader.load_role
    monkeypatch.setattr(loader, "load_role", broken)
    monkeypatch.setitem(registry._REGISTRY, "hold_nothing", f"{__name__}:HoldNothingCheck")
    [error] = _grouped_case(tmp_path).errors
    assert (error["role"], error["check_id"]) == ("rectum", "hold_nothing")
    assert error["path"].endswith("A/rectum.nii.gz")
    assert error["message"] == ("structure 'rectum': could not be read (OSError: disk read "
                                "error); check or re-export this file")
