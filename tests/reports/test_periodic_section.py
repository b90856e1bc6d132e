"""The Periodic QA section of the HTML report, from a real store of monthly periodic runs.

Known answers (tests/cohort_builders.py): each case's MAE is |offset| HU, so the cohort mean
MAE of a month is the mean of its offsets; months 1-7 sit near 20 HU and month 8 at 60 HU,
which alarms on the control charts. Month 8 also runs a new model version (fingerprint
ACTION) and records other BMI values (input drift).
"""

from __future__ import annotations

import re

import pytest

from qa.runner import run_protocol
from qa.store import Store
from reports.html import Formatter, render_run_report
from reports.periodic import periodic_section
from tests.cohort_builders import write_precomputed_cohort

TREND = """\
trend:
  - {check: hu_accuracy, metric: mae_hu, statistic: mean, charts: [imr, ewma, cusum],
     baseline_points: 5}
drift:
  features: [bmi]
"""
MONTHLY_MAE = [20.0, 21.0, 19.0, 20.5, 19.5, 20.0, 20.5, 60.0]


def _month(folder, offsets, *, last=False):
    protocol = write_precomputed_cohort(folder, offsets, hu_tolerance=(200, 300),
                                        cohort_mean=(200, 300))
    text = protocol.read_text(encoding="utf-8").replace("kind: commissioning",
                                                        "kind: periodic")
    if last:  # a new model version, and the same patients recorded with other BMIs
        text = text.replace('version: "1.0"', 'version: "1.1"')
        table = protocol.with_name("cases.csv")
        lines = table.read_text(encoding="utf-8").splitlines()
        lines[1:] = [",".join([*row.split(",")[:-1], b])
                     for row, b in zip(lines[1:], ["55", "61"], strict=True)]
        table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    protocol.write_text(text + TREND, encoding="utf-8")
    return protocol


@pytest.fixture(scope="module")
def periodic_store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("periodic")
    store = Store(f"sqlite:///{tmp_path / 'qa.db'}")
    base = write_precomputed_cohort(tmp_path / "commissioning", {"A": 20.0, "B": 20.0})
    commissioning = run_protocol(base, store).run_id
    store.set_baseline(commissioning, operator="t", reason="commissioned <ok>")
    run_ids = []
    for month, mae in enumerate(MONTHLY_MAE, start=1):
        protocol = _month(tmp_path / f"m{month}", {"A": mae - 1.0, "B": mae + 1.0},
                          last=month == len(MONTHLY_MAE))
        run_ids.append(run_protocol(protocol, store).run_id)
    yield store, commissioning, run_ids
    store.close()


@pytest.mark.slow
def test_the_last_month_shows_its_alarm_the_new_model_and_the_drift(periodic_store,
                                                                    tmp_path):
    store, commissioning, run_ids = periodic_store
    html = render_run_report(store, run_ids[-1], tmp_path / "r.html").read_text("utf-8")

    section = html[html.index('<section id="periodic">'):]
    section = section[:section.index("</section>")]
    assert "<h2>Periodic QA</h2>" in section
    assert html.index('id="verdicts"') < html.index('id="periodic"') < html.index('id="cases"')
    # the model change is an ACTION shown first, with the re-commissioning instruction
    assert "model changed — re-commission" in section
    assert re.search(r'class="fingerprint action"', section)
    # the baseline used and the comparison
    assert f'id="periodic-baseline-run">{commissioning}<' in section
    assert "commissioned &lt;ok&gt;" in section
    # (each case 40 ± 1 HU worse than at commissioning; the largest difference first)
    first_row = section[section.index("<tbody>"):].split("</tr>")[0]
    assert ">20.0 HU<" in first_row and ">61.0 HU<" in first_row and ">41.0 HU<" in first_row
    assert "n/a" not in first_row
    # one control-chart image of the aggregate, with the alarm of this month
    assert section.count('<img src="data:image/png;base64,') == 1
    assert "Alarm at this run" in section
    # the input drift of the BMI
    assert "<td>bmi</td>" in section


@pytest.mark.slow
def test_an_early_month_is_collecting_and_french_is_translated(periodic_store, tmp_path):
    store, commissioning, run_ids = periodic_store
    section = periodic_section(store, run_ids[2], Formatter("en"))
    assert section["charts"] == []
    assert section["pending"] == [{"name": "hu_accuracy.mae_hu mean",
                                   "note": "collecting (3 of 6 runs)"}]
    assert section["fingerprint"]["level"]["code"] == "TOLERANCE"  # no SHA-256 to verify
    assert section["drift"] == []

    html = render_run_report(store, run_ids[-1], tmp_path / "r.html",
                             language="fr").read_text("utf-8")
    assert "<h2>Contrôle qualité périodique</h2>" in html
    assert "modèle modifié — nouvelle mise en service" in html
    assert "Référence (baseline)" in html and "41,0 UH" in html
    assert "Dérive des données d'entrée" in html or "Dérive des données d&#39;entrée" in html

    # a commissioning run has no periodic section
    assert periodic_section(store, commissioning, Formatter("en")) is None
    html = render_run_report(store, commissioning, tmp_path / "c.html").read_text("utf-8")
    assert 'id="periodic"' not in html
