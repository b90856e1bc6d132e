"""Specification of structure-set inputs in the engine (slot kind ``structures``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import registry
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from qa.io import write_nifti
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
    (tmp_path / "protocol.yaml").write_text("""\
name: structures
kind: commissioning
model: {name: none, version: "0", adapter: precomputed, output: unused}
cases: cases.csv
roles:
  oars: {kind: structures, members: [bladder, rectum]}
checks:
  - check: voxel_count
    image: ct
    structures: oars
""", encoding="utf-8")
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
