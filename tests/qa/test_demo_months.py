"""Specification of ``qa demo --months``: a baseline, then monthly constancy runs."""

from __future__ import annotations

import pytest

from qa.demo import run_demo
from qa.errors import QAInputError
from qa.store import Store


@pytest.mark.slow
def test_three_quiet_months_compare_with_the_commissioning_baseline(tmp_path, monkeypatch):
    import fixtures.demo_parts as parts

    monkeypatch.setattr(parts, "parts", lambda: [])  # only the periodic simulation
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        runs = run_demo(tmp_path / "out", store, n_cases=2, months=3)
        baselines = store.baselines()
        periodic = store.runs()
        monthly = periodic[periodic.protocol_kind == "periodic"]
        first = store.verdicts(int(monthly.run_id.iloc[0]))

    assert len(baselines) == 1 and baselines.reason.iloc[0].startswith("demo")
    assert len(monthly) == 3
    # before the model swap (month 8) nothing moves: same model, constancy set complete
    assert monthly.exit_code.tolist() == [0, 0, 0]
    fingerprint = first[first.metric == "model_fingerprint"].iloc[0]
    assert fingerprint.level == "OK"
    assert runs[-1].report.is_file()


def test_fewer_than_three_months_cannot_be_charted(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        with pytest.raises(QAInputError, match="at least 3 months"):
            run_demo(tmp_path / "out", store, n_cases=2, months=2)
