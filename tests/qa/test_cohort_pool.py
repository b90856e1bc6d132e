"""Specification of pooled cohort checks: the commissioning cohort plus the cases since."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import registry
from checks.base import CheckOutput, CohortCheck, CohortInput, Measurement, MetricInfo
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class NoOptions:
    pass


class CaseCount(CohortCheck):
    """Counts the distinct cases and the mean MAE it is given."""

    name: ClassVar[str] = "case_count"
    title: ClassVar[str] = "Case count"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "n_cases": MetricInfo("cases", "distinct cases"),
        "mean_mae_hu": MetricInfo("HU", "mean MAE of the latest result per case")}
    Options = NoOptions

    def run_cohort(self, data: CohortInput) -> CheckOutput:
        mae = data.measurements[(data.measurements.metric == "mae_hu")
                                & (data.measurements.label == "")]
        if "run_id" in mae:
            mae = mae.sort_values("run_id").drop_duplicates("case_id", keep="last")
        return CheckOutput((Measurement("n_cases", mae.case_id.nunique(), "cases"),
                            Measurement("mean_mae_hu", mae.value.mean(), "HU")))


def _with_count(protocol, pool: str):
    text = protocol.read_text(encoding="utf-8")
    protocol.write_text(text + f"  - check: case_count\n    pool: {pool}\n", encoding="utf-8")
    return protocol


def test_since_baseline_pools_the_commissioning_cohort_and_later_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._REGISTRY, "case_count", f"{__name__}:CaseCount")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        base = _with_count(write_precomputed_cohort(tmp_path / "c0", {"A": 10.0, "B": 20.0}),
                           "run")
        store.set_baseline(run_protocol(base, store).run_id, operator="t", reason="test")
        # a later run: B again (re-measured at 40 HU) and a new case C
        month = _with_count(write_precomputed_cohort(tmp_path / "m1", {"B": 40.0, "C": 60.0}),
                            "since_baseline")
        pooled_run = run_protocol(month, store).run_id
        alone = _with_count(write_precomputed_cohort(tmp_path / "m2", {"B": 40.0, "C": 60.0}),
                            "run")
        alone_run = run_protocol(alone, store).run_id
        pooled = store.measurements(pooled_run, check_id="case_count").set_index("metric")
        single = store.measurements(alone_run, check_id="case_count").set_index("metric")

    # A from commissioning, B's latest value (40), C: (10 + 40 + 60) / 3
    assert pooled.loc["n_cases", "value"] == 3
    assert pooled.loc["mean_mae_hu", "value"] == pytest.approx(110 / 3, abs=1e-4)
    assert single.loc["n_cases", "value"] == 2
