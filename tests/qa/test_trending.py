"""Specification of control charts in periodic runs: the alarm comes at the shifted month.

Known answers: each case's MAE is |offset| HU (tests/cohort_builders.py), so the cohort mean
MAE of a month is the mean of its offsets; months 1-6 sit near 20 HU, month 7 at 60 HU.
"""

from __future__ import annotations

import pytest

from qa.errors import ProtocolError
from qa.protocol import load_protocol
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort

TREND = """\
trend:
  - {check: hu_accuracy, metric: mae_hu, statistic: mean, charts: [imr, ewma, cusum],
     baseline_points: 5}
"""


def _month(folder, offsets):
    protocol = write_precomputed_cohort(folder, offsets, hu_tolerance=(200, 300),
                                        cohort_mean=(200, 300))
    text = protocol.read_text(encoding="utf-8").replace("kind: commissioning",
                                                        "kind: periodic")
    protocol.write_text(text + TREND, encoding="utf-8")
    return protocol


@pytest.mark.slow
def test_a_shift_in_the_cohort_mean_alarms_at_its_month_and_not_before(tmp_path):
    monthly_mae = [20.0, 21.0, 19.0, 20.5, 19.5, 20.0, 60.0]
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        base = write_precomputed_cohort(tmp_path / "commissioning", {"A": 20.0, "B": 20.0})
        store.set_baseline(run_protocol(base, store).run_id, operator="t", reason="test")
        alarms, details = [], []
        for month, mae in enumerate(monthly_mae, start=1):
            protocol = _month(tmp_path / f"m{month}", {"A": mae - 1.0, "B": mae + 1.0})
            run_id = run_protocol(protocol, store).run_id
            verdicts = store.verdicts(run_id)
            alarms.append(sorted(set(verdicts.loc[verdicts.statistic.str.contains(":"),
                                                  "statistic"])))
            rows = store.details(run_id, check_id="trend")
            details.append(dict(zip(rows.name, rows.payload, strict=True)))

    # months 1-5 set the limits (collecting), month 6 is in control, month 7 alarms
    assert [d["hu_accuracy.mae_hu mean"]["status"] for d in details] == (
        ["collecting"] * 5 + ["charted"] * 2)
    assert alarms[:6] == [[]] * 6
    assert "mean:individuals" in alarms[6] and "mean:cusum" in alarms[6]
    last = details[6]["hu_accuracy.mae_hu mean"]["charts"]["imr"]["individuals"]["points"][-1]
    assert last["value"] == pytest.approx(60.0, abs=1e-3) and last["alarm"]
    # centre = mean of the 5 baseline months; limits from their moving ranges
    assert last["centre"] == pytest.approx(sum(monthly_mae[:5]) / 5, abs=1e-3)
    assert last["upper_limit"] < 60.0


def test_trend_needs_a_periodic_protocol_and_a_declared_cohort_statistic(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 1.0})
    text = protocol.read_text(encoding="utf-8")
    protocol.write_text(text + TREND, encoding="utf-8")
    with pytest.raises(ProtocolError, match="set kind: periodic"):
        load_protocol(protocol)
    protocol.write_text(text.replace("kind: commissioning", "kind: periodic")
                        + TREND.replace("statistic: mean", "statistic: p95"), encoding="utf-8")
    with pytest.raises(ProtocolError, match="declares no cohort statistic p95 of mae_hu"):
        load_protocol(protocol)


def test_an_acquisition_change_since_the_baseline_is_reported_as_input_drift(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        base = write_precomputed_cohort(tmp_path / "commissioning", {"A": 20.0, "B": 20.0,
                                                                     "C": 20.0})
        store.set_baseline(run_protocol(base, store).run_id, operator="t", reason="test")
        results = {}
        for name, bmi in (("same", None), ("moved", ["55", "58", "61"])):
            protocol = _month(tmp_path / name, {"A": 20.0, "B": 20.0, "C": 20.0})
            text = protocol.read_text(encoding="utf-8").replace(TREND, "")
            protocol.write_text(text + "drift:\n  features: [bmi, sex]\n", encoding="utf-8")
            if bmi:  # the same patients, now recorded with other values (a moved input)
                table = protocol.with_name("cases.csv")
                lines = table.read_text(encoding="utf-8").splitlines()
                lines[1:] = [",".join([*row.split(",")[:-1], b])
                             for row, b in zip(lines[1:], bmi, strict=True)]
                table.write_text("\n".join(lines) + "\n", encoding="utf-8")
            run_id = run_protocol(protocol, store).run_id
            verdicts = store.verdicts(run_id)
            results[name] = (verdicts[verdicts.check_id == "drift"],
                             store.validations(run_id).set_index("scope").success)

    same, same_validation = results["same"]
    assert same.empty and bool(same_validation["input_drift"])
    moved, moved_validation = results["moved"]
    assert moved.label.tolist() == ["bmi"] and moved.level.tolist() == ["TOLERANCE"]
    assert "input drift since baseline run 1" in moved.message.iloc[0]
    assert not bool(moved_validation["input_drift"])


def test_image_features_measured_by_the_runner_feed_the_drift_check(tmp_path):
    import numpy as np

    from qa.io import read_image
    from qa.trending import drift_features

    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        protocol = write_precomputed_cohort(tmp_path / "c", {"A": 5.0, "B": 7.0})
        run_id = run_protocol(protocol, store).run_id
        frame = drift_features(store, run_id, ["ct.p50", "ct.p99", "ct.spacing_z_mm", "sex"])
    ct = read_image(tmp_path / "c" / "A" / "ct.nii.gz").array
    row = frame.set_index("case_id").loc["A"]
    assert row["ct.p50"] == np.percentile(ct, 50)
    assert row["ct.p99"] == np.percentile(ct, 99)
    assert row["ct.spacing_z_mm"] == 3.0 and row["sex"] == "M"


def test_drift_features_must_be_attributes_or_image_features(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "c", {"A": 1.0})
    text = protocol.read_text(encoding="utf-8").replace("kind: commissioning",
                                                        "kind: periodic")
    protocol.write_text(text + "drift:\n  features: [ct.p99, sex, ct.colour]\n",
                        encoding="utf-8")
    with pytest.raises(ProtocolError, match="'ct.colour' is neither a declared attribute"):
        load_protocol(protocol)
