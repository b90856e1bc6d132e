"""A case releases each input after the last check that reads it (peak memory of a case),
and its image-metadata rows stay the same."""

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
from tests.cohort_builders import make_ct

_SEEN: dict[str, Any] = {}


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NoOptions:
    pass


class FirstCheck(Check):
    """Reads an image and a mask; remembers the mask's array through a weak reference."""

    name: ClassVar[str] = "first_reader"
    title: ClassVar[str] = "first"
    slots: ClassVar[dict[str, Slot]] = {"image": Slot("image"), "mask": Slot("mask")}
    metrics: ClassVar[dict[str, MetricInfo]] = {"n": MetricInfo("voxels", "count")}
    Options = NoOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        _SEEN["mask"] = weakref.ref(inputs["mask"].array)
        _SEEN["image"] = weakref.ref(inputs["image"].array)
        return CheckOutput((Measurement("n", int(inputs["mask"].array.sum()), "voxels"),))


class SecondCheck(Check):
    """Reads the image only; records which arrays of the first check are still alive."""

    name: ClassVar[str] = "second_reader"
    title: ClassVar[str] = "second"
    slots: ClassVar[dict[str, Slot]] = {"image": Slot("image")}
    metrics: ClassVar[dict[str, MetricInfo]] = {"n": MetricInfo("voxels", "count")}
    Options = NoOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        gc.collect()
        _SEEN["mask_alive"] = _SEEN["mask"]() is not None
        _SEEN["image_alive"] = _SEEN["image"]() is not None
        return CheckOutput((Measurement("n", int(inputs["image"].array.size), "voxels"),))


def test_an_input_is_released_after_its_last_reader_and_keeps_its_metadata_row(
        tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "first_reader", f"{__name__}:FirstCheck")
    monkeypatch.setitem(registry._REGISTRY, "second_reader", f"{__name__}:SecondCheck")
    ct = make_ct(0)
    body = np.zeros(ct.shape, dtype=bool)
    body[1:-1, 2:-2, 2:-2] = True
    write_nifti(ct, tmp_path / "ct.nii.gz")
    write_nifti(ct.with_array(body), tmp_path / "body.nii.gz")
    (tmp_path / "cases.csv").write_text("case_id,ct,body\nA,ct.nii.gz,body.nii.gz\n",
                                        encoding="utf-8")
    (tmp_path / "protocol.yaml").write_text("""\
name: release
kind: commissioning
model: {name: none, version: "0", adapter: precomputed, output: unused}
cases: cases.csv
checks:
  - {check: first_reader, image: ct, mask: body}
  - {check: second_reader, image: ct}
""", encoding="utf-8")
    protocol = load_protocol(tmp_path / "protocol.yaml")
    table = load_cases(protocol)
    context = CaseContext(protocol, list(protocol.check_instances()),
                          load_adapter(protocol.model, protocol.base_dir))
    result = process_case(context, table.cases[0])
    assert not result.errors
    assert _SEEN["image_alive"] is True  # the second check still reads the CT
    assert _SEEN["mask_alive"] is False  # nothing after the first check reads the mask
    rows = {row["role"]: row for row in result.image_metadata}
    assert list(rows) == ["ct", "body"]  # load order, the released mask included
    assert rows["body"]["kind"] == "mask"
    assert (rows["body"]["min_value"], rows["body"]["max_value"]) == (0.0, 1.0)
    assert rows["ct"]["min_value"] == float(ct.array.min())
