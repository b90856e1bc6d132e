"""Specification of ``qa demo``: the main job runs end to end and shows the model's weakness."""

from __future__ import annotations

import pytest

from qa.demo import run_demo
from qa.store import Store


@pytest.mark.slow
def test_demo_generates_runs_stores_and_reports(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        runs = run_demo(tmp_path / "out", store, n_cases=6)
        sct = next(r for r in runs if "HU accuracy" in r.title)
        run_id, exit_code, report = sct.run_id, sct.exit_code, sct.report
        assert all(r.report.is_file() for r in runs)
        cases = store.cases(run_id)
        measured = store.measurements(run_id)
        run = store.run(run_id)

    assert report.is_file() and report.name == f"report-run-{run_id}.html"
    assert (tmp_path / "out" / "cohort" / "cases.csv").is_file()
    assert len(cases) == 6 and cases.status.eq("ok").all()
    assert run["model_adapter"] == "torch" and len(run["model_sha256"]) == 64
    mae = measured[(measured.metric == "mae_hu") & (measured.label == "")].merge(
        cases[["case_id", "bmi"]], on="case_id")
    obese = mae[mae.bmi >= 30].value
    normal = mae[mae.bmi < 30].value
    assert len(obese) >= 1 and len(normal) >= 1
    # the demo model was trained on BMI < 30 only: it is worse on every obese patient
    assert obese.min() > normal.max()
    assert exit_code in (0, 10, 20)
