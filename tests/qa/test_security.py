"""Specification of the security rules: model loading, path confinement, de-identification.

* A model file that needs full unpickling can run arbitrary code: it is refused unless the
  person running QA passes ``--trust-model``; a pickle that would create a folder when loaded
  must not create it without the flag.
* Case-table paths stay inside the data folder unless the protocol's ``data_root`` widens it.
* Identifying DICOM attributes planted in every file of a run reach neither the store nor
  the report.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from qa.cli import build_parser, main
from qa.dataset import load_cases
from qa.errors import ProtocolError
from qa.exitcodes import ExitCode
from qa.io import read_dicom_series, write_nifti
from qa.models import TorchAdapter
from qa.protocol import load_protocol
from qa.runner import run_protocol
from qa.store import Store
from tests.bad_inputs.cohort import good_ct, write_cohort, write_good_case, write_table
from tests.qa.io.dicom_factory import IDENTIFYING, write_rtdose, write_series


class _MakesFolderWhenLoaded:
    """Unpickling this calls ``os.mkdir(path)``: a stand-in for arbitrary code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _identity_model() -> torch.nn.Module:
    conv = torch.nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return torch.nn.Sequential(conv)


# -- models ---------------------------------------------------------------------------------
def test_a_pickle_that_runs_code_is_refused_without_trust_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "model.pt"
    torch.save(_MakesFolderWhenLoaded(marker), weights)
    with pytest.raises(ProtocolError) as info:
        TorchAdapter(weights, name="m", version="1", input_role="mr", output_role="sct")
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message
    assert "arbitrary code" in message and "--trust-model" in message
    assert info.value.field == "model.path" and str(weights) in message


def test_trust_model_is_what_lets_the_pickle_load(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "model.pt"
    torch.save(_MakesFolderWhenLoaded(marker), weights)
    with pytest.raises(ProtocolError, match="not a torch.nn.Module"):
        TorchAdapter(weights, name="m", version="1", input_role="mr", output_role="sct",
                     trust_model=True)
    assert marker.is_dir()  # the flag really did allow arbitrary code


def test_a_whole_module_pickle_runs_only_with_trust_and_the_fingerprint_says_so(tmp_path):
    weights = tmp_path / "model.pt"
    torch.save(_identity_model(), weights)
    common = {"name": "m", "version": "1", "input_role": "mr", "output_role": "sct",
              "device": "cpu"}
    with pytest.raises(ProtocolError, match="--trust-model"):
        TorchAdapter(weights, **common)
    adapter = TorchAdapter(weights, trust_model=True, **common)
    image = good_ct(0)
    np.testing.assert_allclose(adapter.predict(image, case_id="C1").array, image.array)
    assert "--trust-model" in adapter.fingerprint().details["format"]


def test_state_dict_weights_holding_code_are_refused_without_trust(tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights.pt"
    torch.save({"extra": _MakesFolderWhenLoaded(marker)}, weights)
    with pytest.raises(ProtocolError, match="arbitrary code"):
        TorchAdapter(weights, entrypoint="torch.nn:Identity", name="m", version="1",
                     input_role="mr", output_role="sct", device="cpu")
    assert not marker.exists()


def test_torchscript_and_state_dict_need_no_trust(tmp_path):
    script = tmp_path / "model.ts"
    with warnings.catch_warnings():  # torch >= 2.10 flags TorchScript as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_identity_model()).save(str(script))
    state = tmp_path / "weights.pt"
    torch.save(torch.nn.Identity().state_dict(), state)
    common = {"name": "m", "version": "1", "input_role": "mr", "output_role": "sct",
              "device": "cpu"}
    assert TorchAdapter(script, **common).fingerprint().details["format"] == "torchscript"
    assert TorchAdapter(state, entrypoint="torch.nn:Identity",
                        **common).fingerprint().details["format"] == "state_dict"


TORCH_PROTOCOL = """\
name: pickle model
kind: commissioning
model: {name: sct-net, version: "1.0", adapter: torch, path: model.pt, input: ct, output: sct,
        device: cpu}
cases: cases.csv
attributes:
  sex: {values: [F, M]}
checks:
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
"""


def test_qa_run_refuses_a_pickle_model_until_trust_model_is_given(tmp_path, capsys):
    folder = tmp_path / "data"
    protocol = write_cohort(folder, [], good=1, protocol_text=TORCH_PROTOCOL)
    torch.save(_identity_model(), folder / "model.pt")
    store = f"sqlite:///{tmp_path / 'qa.db'}"
    assert main(["run", str(protocol), "--store", store]) == ExitCode.NOT_STARTED
    err = capsys.readouterr().err
    assert "arbitrary code" in err and "--trust-model" in err
    assert main(["run", str(protocol), "--store", store, "--trust-model"]) == ExitCode.OK
    assert build_parser().parse_args(["run", "p.yaml"]).trust_model is False


# -- paths ----------------------------------------------------------------------------------
def test_data_root_is_the_documented_opt_in_for_paths_outside_the_table_folder(tmp_path):
    folder = tmp_path / "tables"
    protocol_path = write_cohort(folder, [], good=1)
    shared = tmp_path / "shared"
    row = write_good_case(shared, "S1", 3)
    write_table(folder / "cases.csv", [{**row, **{r: f"../shared/{row[r]}" for r in
                                                 ("ct", "sct", "body", "dose_ref",
                                                  "dose_eval")}}])
    refused = load_cases(load_protocol(protocol_path))
    assert not refused.cases and {p.field for p in refused.problems} == {
        "ct", "sct", "body", "dose_ref", "dose_eval"}
    text = protocol_path.read_text(encoding="utf-8")
    protocol_path.write_text(text.replace("cases: cases.csv\n",
                                          "cases: cases.csv\ndata_root: ..\n"), encoding="utf-8")
    allowed = load_cases(load_protocol(protocol_path))
    assert [case.case_id for case in allowed.cases] == ["S1"] and not allowed.problems


def test_a_symlink_inside_the_data_folder_is_fine(tmp_path):
    folder = tmp_path / "data"
    protocol_path = write_cohort(folder, [], good=1)
    (folder / "G1" / "ct-link.nii.gz").symlink_to(folder / "G1" / "ct.nii.gz")
    row = write_good_case(folder, "G1", 0)
    write_table(folder / "cases.csv", [{**row, "ct": "G1/ct-link.nii.gz"}])
    table = load_cases(load_protocol(protocol_path))
    assert [case.case_id for case in table.cases] == ["G1"] and not table.problems


# -- de-identification, end to end ----------------------------------------------------------
DICOM_PROTOCOL = """\
name: de-identification end to end
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: sct}
cases: cases.csv
attributes:
  sex: {values: [F, M]}
roles:
  ct: {kind: image, modality: CT}
checks:
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
    tolerances:
      mae_hu: {tolerance: {max: 70}, action: {max: 90}}
  - check: gamma
    reference: dose_ref
    evaluated: dose_eval
    options: {criteria: ["3%/2mm"]}
"""


def _dicom_case(folder: Path, case_id: str, seed: int) -> dict[str, str]:
    """CT and sCT series, RTDOSE pair, NIfTI body mask; every DICOM file carries
    :data:`IDENTIFYING`."""
    rng = np.random.default_rng(seed)
    stored = (1024 + rng.normal(40, 10, (4, 8, 10))).astype(np.int16)
    origin = (-10.0, -8.0, -6.0)
    write_series(folder / case_id / "ct", stored, origin_lps=origin, step_mm=3.0,
                 extra={"KVP": 120.0})
    write_series(folder / case_id / "sct", stored + 5, origin_lps=origin, step_mm=3.0)
    ct = read_dicom_series(folder / case_id / "ct")
    write_nifti(ct.with_array(np.ones(ct.shape, dtype=bool)), folder / case_id / "body.nii.gz")
    dose = (np.arange(4 * 8 * 10).reshape(4, 8, 10) % 50 + 100).astype(np.uint32)
    for name, scale in (("dose_ref", 1.0), ("dose_eval", 1.01)):
        write_rtdose(folder / case_id / f"{name}.dcm", dose, position_lps=origin,
                     offsets=(0.0, 3.0, 6.0, 9.0), scaling=1e-2 * scale,
                     pixel_spacing=(0.8, 0.6))
    return {"case_id": case_id, "ct": f"{case_id}/ct", "sct": f"{case_id}/sct",
            "body": f"{case_id}/body.nii.gz", "dose_ref": f"{case_id}/dose_ref.dcm",
            "dose_eval": f"{case_id}/dose_eval.dcm", "sex": "F"}


@pytest.mark.slow  # a whole run over DICOM cases plus the HTML report: ~5-8 s
def test_identifying_dicom_fields_reach_neither_the_store_nor_the_report(tmp_path):
    from reports.html import render_run_report

    folder = tmp_path / "data"
    folder.mkdir()
    rows = [_dicom_case(folder, f"P{i}", i) for i in (1, 2)]
    write_table(folder / "cases.csv", rows)
    (folder / "protocol.yaml").write_text(DICOM_PROTOCOL, encoding="utf-8")
    database = tmp_path / "qa.db"
    store = Store(f"sqlite:///{database}")
    try:
        outcome = run_protocol(folder / "protocol.yaml", store)
        assert store.errors(outcome.run_id).empty, store.errors(outcome.run_id).message.tolist()
        assert not store.measurements(outcome.run_id).empty
        report = render_run_report(store, outcome.run_id, tmp_path / "report.html").read_text(
            encoding="utf-8")
    finally:
        store.close()
    planted = [v for v in IDENTIFYING.values() if len(v) >= 4]
    assert {"Doe^Jane", "SECRET-ID-123", "19700101"} <= set(planted)
    stored_text = _every_stored_text(database)
    raw = database.read_bytes()
    for value in planted + ["Jane"]:
        assert value not in stored_text, f"{value!r} is in the store"
        assert value.encode("utf-8") not in raw, f"{value!r} is in the database file"
        assert value not in report, f"{value!r} is in the report"
    assert "ACME Medical" in stored_text  # allow-listed metadata did get through


def _every_stored_text(database: Path) -> str:
    """Every cell of every table of the SQLite store, as text."""
    parts = []
    with sqlite3.connect(database) as connection:
        tables = [r[0] for r in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):  # noqa: S608
                parts.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                             for v in row)
    connection.close()
    return "\n".join(parts)
