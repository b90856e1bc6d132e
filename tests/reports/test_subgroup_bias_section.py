"""Specification of the ``subgroup_bias`` report section: built from stored details only,
rendered in English and French with the same keys, findings written as sentences."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pytest
import yaml

import reports
from checks.base import CohortInput
from checks.bias import SubgroupBiasCheck
from reports._format import Formatter
from reports.sections import available_sections
from reports.sections import subgroup_bias as section_module

_ROOT = Path(reports.__file__).parent


def _stored_details() -> dict:
    rng = np.random.default_rng(2)
    n = 30
    ids = [f"P{i:02d}" for i in range(n)]
    bmi = np.r_[rng.uniform(19, 29.5, 23), rng.uniform(30.5, 38, 7)]
    mae = 30 + np.where(bmi >= 30, 18.0, 0.0) + rng.normal(0, 4, n)
    data = CohortInput(
        pd.DataFrame({"case_id": ids, "check_id": "hu_body", "check": "hu_accuracy",
                      "metric": "mae_hu", "label": "", "value": mae, "unit": "HU"}),
        pd.DataFrame({"case_id": ids, "sex": (["F", "M"] * n)[:n], "bmi": bmi}),
        pd.DataFrame({"case_id": ids, "check_id": "hu_body", "metric": "mae_hu", "label": "",
                      "value": mae, "level": np.where(mae > 45, "TOLERANCE", "OK")}))
    options = SubgroupBiasCheck.Options(
        metric="hu_body.mae_hu", by=["bmi", "sex"], trend=["bmi"], n_bootstrap=300,
        bins={"bmi": {"edges": [0, 30, 100], "labels": ["BMI < 30", "BMI >= 30"]}})
    details = SubgroupBiasCheck(options).run_cohort(data).details
    return json.loads(json.dumps(details))  # as the store gives it back


class _FakeStore:
    def __init__(self, payload: dict) -> None:
        self.payload = payload

    def details(self, run_id, check_id=None):
        return pd.DataFrame({"case_id": [None] * len(self.payload), "check_id": check_id,
                             "name": list(self.payload), "payload": list(self.payload.values())})

    def verdicts(self, run_id):
        return pd.DataFrame({"case_id": [None], "check_id": ["bias"],
                             "metric": ["gap_worst_to_overall"], "label": ["bmi"],
                             "tolerance_max": [10.0], "action_max": [20.0]})


def _render(section: dict, fmt: Formatter) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_ROOT / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    section = {**section, "check_id": "bias", "check": "subgroup_bias", "several": False,
               "template": section_module.TEMPLATE}
    return env.get_template(section_module.TEMPLATE).render(t=fmt.t, section=section)


@pytest.fixture(scope="module")
def payload() -> dict:
    return _stored_details()


def test_section_is_discovered():
    assert "subgroup_bias" in available_sections()


@pytest.mark.parametrize("language", ["en", "fr"])
def test_section_renders_forest_plot_tests_and_findings(payload, language):
    fmt = Formatter(language)
    section = section_module.build(_FakeStore(payload), 1, "bias", pd.DataFrame(), fmt)
    html = _render(section, fmt)
    assert len(section["analyses"]) == 2
    assert section["analyses"][0]["plot"].startswith("data:image/png;base64,")
    assert html.count("<tr>") >= 2 + len(section["tests"])
    assert "Holm" in html
    assert len(section["findings"]) >= 2  # the BMI >= 30 group and the trend


def test_english_finding_reads_as_a_sentence_with_ci_n_and_status(payload):
    section = section_module.build(_FakeStore(payload), 1, "bias", pd.DataFrame(),
                                   Formatter("en"))
    obese = next(s for s in section["findings"] if "BMI >= 30" in s)
    assert obese.startswith("hu_body.mae_hu is ") and " HU (CI " in obese
    assert "higher for bmi = BMI >= 30 than overall, n = 7: insufficient data to test " \
           "(fewer than 10 cases)." in obese


def test_catalogs_have_the_same_keys_in_both_languages():
    keys = [set(yaml.safe_load((_ROOT / "locales" / lang / "subgroup_bias.yaml")
                               .read_text(encoding="utf-8"))["bias"]) for lang in ("en", "fr")]
    assert keys[0] == keys[1]


def test_section_without_stored_analysis_says_so():
    fmt = Formatter("en")
    section = section_module.section_data({}, pd.DataFrame(), fmt)
    assert "No subgroup analysis was stored" in _render(section, fmt)
