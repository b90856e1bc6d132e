"""Specification of the risk register (qa.risk): bands, bounds, scores, templates, changes.

Expected numbers are worked out by hand from the stored verdicts (k failures in n cases) and
the scales given; the Clopper–Pearson bounds are checked against the closed form for k = 0
(1 − (α/2)^(1/n)) and against statsmodels' independent implementation (method "beta").
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportion_confint

from qa.errors import QAInputError
from qa.risk import (
    RISK_CHECK_ID,
    RiskTemplateError,
    assess_run,
    clopper_pearson_interval,
    clopper_pearson_upper,
    load_template,
    localized,
    occurrence_rank,
    template_record,
)
from qa.runner import run_protocol
from qa.store import Store
from tests.cohort_builders import write_precomputed_cohort
from tests.risk_builders import WIDE_SCALES, add_run, cases, mode, write_template

TG100_UPPER = {1: 0.01, 2: 0.02, 3: 0.05, 4: 0.1, 5: 0.2, 6: 0.5, 7: 1.0, 8: 2.0, 9: 5.0}
SEG = [{"check": "seg", "metric": "dice"}]


@pytest.fixture(scope="module")
def shared_store():
    with Store("sqlite://") as opened:
        yield opened


@pytest.fixture()
def store(shared_store, request):
    """One in-memory store for the module (opening one runs the migrations); each test's
    runs get the test's name as protocol name, so no test sees another's runs as history."""
    return _Named(shared_store, request.node.name)


class _Named:
    """The store, with ``protocol`` defaulting to the test's name in :func:`add_run`."""

    def __init__(self, store, protocol):
        self._store, self.protocol = store, protocol

    def __getattr__(self, name):
        return getattr(self._store, name)


def _row(assessment, mode_id):
    return next(r for r in assessment.rows if r.mode_id == mode_id)


# ----------------------------------------------------------------- Clopper–Pearson bound

@pytest.mark.parametrize("n", [1, 2, 4, 30, 59, 300])
def test_no_failure_upper_bound_is_the_closed_form(n):
    # k = 0: the upper end of the two-sided 95 % interval solves (1 − p)^n = 0.025
    assert clopper_pearson_upper(0, n) == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 30), (3, 30), (1, 10), (5, 30), (2, 3), (1, 1),
                                      (29, 30), (30, 30)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_interval_matches_statsmodels_exact_interval(k, n, level):
    low, high = proportion_confint(k, n, alpha=1 - level, method="beta")
    ours = clopper_pearson_interval(k, n, level)
    assert ours[0] == pytest.approx(0.0 if math.isnan(low) else low, abs=1e-12)
    assert ours[1] == pytest.approx(1.0 if math.isnan(high) else high, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), data=st.data())
def test_upper_bound_covers_the_observed_rate_and_grows_with_failures(n, data):
    k = data.draw(st.integers(0, n))
    upper = clopper_pearson_upper(k, n)
    assert k / n <= upper <= 1.0
    if k < n:
        assert clopper_pearson_upper(k + 1, n) > upper
    assert clopper_pearson_upper(k, n, 0.99) >= upper  # a higher level is wider


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1), st.floats(0, 1))
def test_occurrence_never_falls_when_the_rate_rises(a, b):
    low, high = sorted((a, b))
    assert occurrence_rank(low, TG100_UPPER, 10) <= occurrence_rank(high, TG100_UPPER, 10)


def test_all_failures_gives_an_upper_bound_of_one():
    assert clopper_pearson_upper(7, 7) == 1.0


@pytest.mark.parametrize(("k", "n"), [(-1, 3), (4, 3), (0, 0), (1.5, 3), (True, 3)])
def test_impossible_counts_are_refused(k, n):
    with pytest.raises(ValueError, match="k"):
        clopper_pearson_interval(k, n)


# ------------------------------------------------------------------ TG-100 occurrence bands

@pytest.mark.parametrize(("percent", "rank"), [
    (0.0, 1), (0.01, 1), (0.0101, 2), (0.02, 2), (0.05, 3), (0.051, 4), (0.1, 4), (0.2, 5),
    (0.21, 6), (0.5, 6), (1.0, 7), (1.5, 8), (2.0, 8), (4.99, 9), (5.0, 9), (5.01, 10),
    (100.0, 10)])
def test_occurrence_band_edges_are_inclusive_upper_edges(percent, rank):
    assert occurrence_rank(percent / 100, TG100_UPPER, 10) == rank


def test_packaged_scales_say_which_tables_were_confirmed():
    scales = load_template().scales
    assert scales.occurrence_upper_percent == TG100_UPPER
    assert scales.severity_verified
    # the O and D bands could not be checked against a copy of TG-100 Table II
    assert not scales.occurrence_verified and not scales.detectability_verified
    assert not scales.verified


def test_seventy_two_cases_without_failure_are_needed_to_show_five_percent_or_less():
    scales = load_template().scales
    assert scales.occurrence(clopper_pearson_upper(0, 30)) == 10   # 11.6 % > 5 %
    assert clopper_pearson_upper(0, 71) * 100 == pytest.approx(5.06, abs=0.01)
    assert scales.occurrence(clopper_pearson_upper(0, 71)) == 10
    assert clopper_pearson_upper(0, 72) * 100 == pytest.approx(4.99, abs=0.01)
    assert scales.occurrence(clopper_pearson_upper(0, 72)) == 9


# --------------------------------------------------------------- O, D, RPN and priorities

def test_scores_follow_the_evidence_of_the_linked_check(tmp_path, store):
    template = write_template(tmp_path, [mode("seg_error", 6, SEG)], scales=WIDE_SCALES)
    run_id = add_run(store, cases(27, 0, 3))          # 3 ACTION of 30
    row = assess_run(store, run_id, template=template).rows[0]
    e = row.evidence
    assert (e.n_evaluated, e.n_failures, e.n_not_evaluated) == (30, 3, 0)
    assert row.n_failures == 3
    assert e.observed_rate == pytest.approx(0.1)
    assert e.upper_bound == pytest.approx(0.26529, abs=1e-5)  # statsmodels: 0.265288
    assert row.occurrence == 4                         # 26.5 % in the (20, 30] % band
    assert e.detection_class == "every_case" and row.detectability == 3
    assert row.rpn == 4 * 6 * 3 == 72
    assert row.priority == "medium"                    # 60 <= 72 < 125


def test_severity_eight_is_high_priority_whatever_the_rpn(tmp_path, store):
    template = write_template(tmp_path, [mode("severe", 8, SEG), mode("mild", 4, SEG)],
                              scales=WIDE_SCALES)
    run_id = add_run(store, cases(30))                 # no failure: upper 11.6 %
    assessment = assess_run(store, run_id, template=template)
    severe, mild = _row(assessment, "severe"), _row(assessment, "mild")
    assert severe.occurrence == mild.occurrence == 3   # 11.57 % in (10, 20] %
    assert severe.rpn == 3 * 8 * 3 == 72 and severe.priority == "high"
    assert mild.rpn == 3 * 4 * 3 == 36 and mild.priority == "low"
    assert [r.mode_id for r in assessment.rows] == ["severe", "mild"]
    assert assessment.counts == {"high": 1, "medium": 0, "low": 1, "not_assessed": 0}


def test_rpn_at_the_high_threshold_is_high_priority(tmp_path, store):
    # 5 ACTION of 30: upper 34.7 % → O 5; D set to 5 for these modes; S 5 → RPN 125 (the
    # threshold, inclusive): high; S 4 → RPN 100: medium
    override = {"detection": {"every_case": 5}}
    template = write_template(tmp_path, [mode("s5", 5, SEG, **override),
                                         mode("s4", 4, SEG, **override)], scales=WIDE_SCALES)
    run_id = add_run(store, cases(25, 0, 5))
    assessment = assess_run(store, run_id, template=template)
    assert (_row(assessment, "s5").rpn, _row(assessment, "s5").priority) == (125, "high")
    assert (_row(assessment, "s4").rpn, _row(assessment, "s4").priority) == (100, "medium")


def test_tolerance_is_counted_apart_and_errored_cases_are_not_evaluated(tmp_path, store):
    template = write_template(tmp_path, [mode("seg_error", 6, SEG)], scales=WIDE_SCALES)
    run_id = add_run(store, cases(25, 4, 1), errored=["bad1", "bad2"])
    e = assess_run(store, run_id, template=template).rows[0].evidence
    assert (e.n_total, e.n_evaluated, e.n_failures, e.n_tolerance, e.n_not_evaluated) == \
        (32, 30, 1, 4, 2)
    assert e.detection_class == "some_cases"           # 2 of 32 cases have no verdict


def test_failure_level_tolerance_counts_tolerance_as_failure(tmp_path, store):
    template = write_template(tmp_path, [mode("strict", 6, SEG, failure_level="TOLERANCE")],
                              scales=WIDE_SCALES)
    run_id = add_run(store, cases(25, 4, 1))
    e = assess_run(store, run_id, template=template).rows[0].evidence
    assert (e.n_failures, e.n_tolerance) == (5, 0)


def test_a_check_linked_by_its_name_counts_under_any_id(tmp_path, store):
    template = write_template(tmp_path, [mode("seg_error", 6, [{"check": "segmentation"}])],
                              scales=WIDE_SCALES)
    run_id = add_run(store, cases(9, 0, 1, key="seg_pelvis.dice"),
                     checks={"seg_pelvis": "segmentation"})
    e = assess_run(store, run_id, template=template).rows[0].evidence
    assert (e.n_evaluated, e.n_failures) == (10, 1)


def test_a_label_restricts_the_evidence_to_that_label(tmp_path, store):
    template = write_template(tmp_path, [mode("bone", 4, [{"check": "hu", "metric": "mae_hu",
                                                             "label": "bone"}])])
    run_id = add_run(store, cases(5, key="hu.mae_hu"))  # overall only, no [bone] verdict
    row = assess_run(store, run_id, template=template).rows[0]
    assert row.priority == "not_assessed" and row.evidence.detection_class == "some_cases"


# ------------------------------------------------------------------------- not assessed

def test_a_mode_without_evidence_is_never_scored(tmp_path, store):
    template = write_template(tmp_path, [
        mode("unlinked", 10, []),
        mode("absent_check", 9, [{"check": "gamma"}]),
        mode("seg_error", 6, SEG)], scales=WIDE_SCALES)
    run_id = add_run(store, cases(30))
    assessment = assess_run(store, run_id, template=template)
    for mode_id in ("unlinked", "absent_check"):
        row = _row(assessment, mode_id)
        assert (row.occurrence, row.detectability, row.rpn) == (None, None, None)
        assert row.priority == "not_assessed"          # even with S 9 or 10
        assert row.iso_probability is None and row.iso_region is None
        assert row.evidence.upper_bound is None and row.evidence.n_evaluated == 0
    assert _row(assessment, "absent_check").evidence.detection_class == "not_in_protocol"
    assert [r.mode_id for r in assessment.rows] == ["seg_error", "unlinked", "absent_check"]
    assert assessment.counts["not_assessed"] == 2


# ------------------------------------------------------------------------ ISO 14971 view

def test_iso_view_uses_the_same_bound_and_the_matrix(tmp_path, store):
    template = write_template(tmp_path, [mode("severe", 8, SEG), mode("minor", 4, SEG)])
    run_id = add_run(store, cases(30))
    assessment = assess_run(store, run_id, template=template)
    severe, minor = _row(assessment, "severe"), _row(assessment, "minor")
    # upper bound 11.6 % >= 1e-3: frequent; TG-100 S 8 → critical, S 4 → minor
    assert (severe.iso_probability, severe.iso_severity, severe.iso_region) == \
        ("frequent", "critical", "unacceptable")
    assert (minor.iso_probability, minor.iso_severity, minor.iso_region) == \
        ("frequent", "minor", "alarp")


# ---------------------------------------------------------------- run-level failure modes

def test_run_level_modes_count_the_runs_of_the_protocol(tmp_path, store):
    template = write_template(tmp_path, [mode("model_change", 8, [
        {"check": "baseline", "metric": "model_fingerprint"}], unit="run")],
        scales=WIDE_SCALES)
    fingerprint = {"check_id": "baseline", "metric": "model_fingerprint"}
    first = add_run(store, cases(3), kind="periodic", cohort=[dict(fingerprint, level="OK")])
    add_run(store, cases(3), kind="periodic", cohort=[dict(fingerprint, level="OK")])
    add_run(store, cases(3), kind="periodic", cohort=[dict(fingerprint, level="ACTION")],
            finish=False)                              # still running: not history
    last = add_run(store, cases(3), kind="periodic", cohort=[dict(fingerprint, level="ACTION")])
    row = assess_run(store, last, template=template).rows[0]
    e = row.evidence
    assert (e.n_total, e.n_evaluated, e.n_failures) == (3, 3, 1)
    assert e.detection_class == "run_level" and row.detectability == 6
    assert e.upper_bound == pytest.approx(proportion_confint(1, 3, method="beta")[1])
    assert row.n_failures == 1                         # this run's own fingerprint: ACTION
    at_first = assess_run(store, first, template=template).rows[0]
    assert (at_first.n_failures, at_first.evidence.n_evaluated) == (0, 1)


def test_a_run_counts_only_when_it_stored_a_linked_verdict_except_for_drift(tmp_path, store):
    template = write_template(tmp_path, [
        mode("drift", 6, [{"check": "drift", "metric": "input_drift"}], unit="run"),
        mode("dprime", 7, [{"check": "noise", "metric": "d_prime_npwe"}], unit="run")])
    # both runs declare drift: and the noise check, but grade no d' and find no drift
    for _ in range(2):
        last = add_run(store, cases(3, key="noise.mean_hu"), kind="periodic",
                       extra_yaml="drift: {features: [bmi]}\n")
    assessment = assess_run(store, last, template=template)
    drift, dprime = _row(assessment, "drift"), _row(assessment, "dprime")
    assert (drift.evidence.n_evaluated, drift.evidence.n_failures) == (2, 0)
    assert drift.evidence.detection_class == "run_level"
    assert dprime.priority == "not_assessed" and dprime.evidence.n_not_evaluated == 2


def test_a_metric_that_could_not_be_computed_is_a_failure(tmp_path, store):
    template = write_template(tmp_path, [mode("seg_error", 6, SEG)])
    run_id = add_run(store, cases(4), finish=False)
    store.add_case(run_id, "nan_case", position=9, attributes={})
    store.add_verdicts(run_id, [{"case_id": "nan_case", "check_id": "seg", "metric": "dice",
                                 "level": "ACTION", "value": float("nan")}])
    e = assess_run(store, run_id, template=template).rows[0].evidence
    assert (e.n_evaluated, e.n_failures) == (5, 1)


def test_a_periodic_run_without_baseline_is_not_a_fingerprint_trial(tmp_path, store):
    template = write_template(tmp_path, [mode("model_change", 8, [{"check": "baseline"}],
                                              unit="run")])
    no_baseline = {"check_id": "baseline", "metric": "model_fingerprint", "level": "TOLERANCE",
                   "value": float("nan")}
    run_id = add_run(store, cases(3), kind="periodic", cohort=[no_baseline])
    row = assess_run(store, run_id, template=template).rows[0]
    assert row.priority == "not_assessed" and row.n_failures is None


def test_run_level_mode_of_a_commissioning_run_is_not_assessed(tmp_path, store):
    template = write_template(tmp_path, [mode("model_change", 8, [{"check": "baseline"}],
                                              unit="run")])
    run_id = add_run(store, cases(3))                  # commissioning: no baseline comparison
    row = assess_run(store, run_id, template=template).rows[0]
    assert row.priority == "not_assessed"
    assert row.evidence.detection_class == "not_in_protocol"


def test_errors_link_counts_cases_that_could_not_be_checked(tmp_path, store):
    template = write_template(tmp_path, [mode("qa_not_run", 5, [{"check": "errors"}])],
                              scales=WIDE_SCALES)
    run_id = add_run(store, cases(8), errored=["x1", "x2"])
    e = assess_run(store, run_id, template=template).rows[0].evidence
    assert (e.n_total, e.n_evaluated, e.n_failures) == (10, 10, 2)
    assert e.detection_class == "every_case"


# ----------------------------------------------------------------- change since last run

def test_change_is_measured_against_the_previous_finished_run(tmp_path, store):
    template = write_template(tmp_path, [mode("seg_error", 6, SEG),
                                         mode("gamma_fail", 6, [{"check": "gamma"}])],
                              scales=WIDE_SCALES)
    first = add_run(store, cases(30))
    add_run(store, cases(30), protocol="another protocol")
    second = add_run(store, {**cases(25, 0, 5), "g1": {"gamma.pass_rate": "OK"}},
                     checks={"seg": "seg", "gamma": "gamma"})
    before = assess_run(store, first, template=template)
    after = assess_run(store, second, template=template)
    assert before.previous_run_id is None
    assert {r.change for r in before.rows} == {"no_previous"}
    assert after.previous_run_id == first
    seg = _row(after, "seg_error")
    # O 3 → 5 (upper 11.6 % → 34.7 %); D 3 → 5 (case g1 has no segmentation verdict)
    assert (seg.previous_rpn, seg.rpn) == (3 * 6 * 3, 5 * 6 * 5)
    assert seg.change == "rpn_up"
    assert _row(after, "gamma_fail").change == "new"
    assert _row(assess_run(store, second, template=template), "seg_error") == seg


# ------------------------------------------------------------ templates and their record

def test_the_run_records_the_department_template_and_reports_reuse_it(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "cohort", {"C01": 10.0, "C02": 100.0})
    template = write_template(tmp_path / "cohort" / "risk", [
        mode("hu_error", 5, [{"check": "hu_accuracy", "metric": "mae_hu"}],
             title={"en": "HU error", "fr": "Erreur en UH"})], name="Our AMDEC")
    protocol.write_text(protocol.read_text(encoding="utf-8") + "risk: risk/template.yaml\n",
                        encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(protocol, store).run_id
        stored = store.details(run_id, check_id=RISK_CHECK_ID, name="template")
        assert stored["payload"].iloc[0]["source"] == str(template.resolve())
        template.unlink()                              # the report needs no file any more
        assessment = assess_run(store, run_id)
        assert assessment.template_name == "Our AMDEC"
        assert [r.mode_id for r in assessment.rows] == ["hu_error"]
        row = assessment.rows[0]
        assert (row.evidence.n_evaluated, row.evidence.n_failures) == (2, 1)  # 100 HU: ACTION
        assert localized(row.title, "fr") == "Erreur en UH"
        assert assessment == assess_run(store, run_id)  # deterministic


def test_without_a_protocol_template_the_default_is_the_record():
    record = template_record(None)                   # what the runner stores for risk: None
    assert record["source"] == "default"
    assert record["template_sha256"] == load_template().sha256
    assert record["scales_source"].endswith("tg100.yaml")
    assert record["matrix_source"].endswith("iso14971.yaml")


def test_a_broken_protocol_template_stops_the_run_before_anything_is_stored(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "cohort", {"C01": 10.0})
    protocol.write_text(protocol.read_text(encoding="utf-8") + "risk: missing.yaml\n",
                        encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        with pytest.raises(RiskTemplateError, match="not found") as caught:
            run_protocol(protocol, store)
        assert len(store.runs()) == 0
    assert isinstance(caught.value, QAInputError)
    assert caught.value.path.endswith("missing.yaml")


def test_an_explicit_template_overrides_the_recorded_one(tmp_path, store):
    run_id = add_run(store, cases(5))
    theirs = write_template(tmp_path, [mode("theirs", 3, SEG)])
    assert [r.mode_id for r in assess_run(store, run_id, template=theirs).rows] == ["theirs"]
    assert assess_run(store, run_id).template_source == "default"  # nothing recorded


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"severity": 11}, "failure_modes[0].severity", "severity rank 1-10, got 11"),
    ({"severity": "high"}, "failure_modes[0].severity", "got 'high'"),
    ({"unit": "patient"}, "failure_modes[0].unit", "must be case or run"),
    ({"colour": "red"}, "failure_modes[0].colour", "unknown key 'colour'"),
    ({"title": ""}, "failure_modes[0].title", "must be a text"),
    ({"evidence": [{"metric": "dice"}]}, "failure_modes[0].evidence[0].check", "missing"),
    ({"detection": {"always": 1}}, "failure_modes[0].detection", "detection classes"),
])
def test_a_malformed_template_names_the_file_and_the_key(tmp_path, change, field, message):
    path = write_template(tmp_path, [{**mode("m", 5, SEG), **change}])
    with pytest.raises(RiskTemplateError) as caught:
        load_template(path)
    error = caught.value
    assert error.path == str(path.resolve()) and error.field == field
    assert message in error.message
    assert str(path.resolve()) in str(error) and field in str(error)


def test_a_template_with_bad_yaml_gives_line_and_column(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("failure_modes:\n  - id: a\n    title: [unclosed\n", encoding="utf-8")
    with pytest.raises(RiskTemplateError, match=r"malformed YAML at line \d+, column \d+"):
        load_template(path)


def test_duplicate_mode_ids_are_refused(tmp_path):
    path = write_template(tmp_path, [mode("m", 5, SEG), mode("m", 6, SEG)])
    with pytest.raises(RiskTemplateError, match="duplicate id 'm'") as caught:
        load_template(path)
    assert caught.value.field == "failure_modes[1].id"


def test_bad_scales_name_the_scales_file_and_key(tmp_path):
    scales = {**WIDE_SCALES, "priorities": {"severity_high": 8, "rpn_high": 0,
                                            "rpn_medium": 60}}
    path = write_template(tmp_path, [mode("m", 5, SEG)], scales=scales)
    with pytest.raises(RiskTemplateError) as caught:
        load_template(path)
    assert caught.value.path.endswith("scales.yaml")
    assert caught.value.field == "priorities.rpn_high"


def test_a_per_mode_detection_override_replaces_the_scales_rank(tmp_path, store):
    template = write_template(tmp_path, [mode("m", 5, SEG, detection={"every_case": 1})],
                              scales=WIDE_SCALES)
    row = assess_run(store, add_run(store, cases(30)), template=template).rows[0]
    assert row.detectability == 1 and row.rpn == 3 * 5 * 1


def test_texts_fall_back_to_english_then_to_the_first_language():
    assert localized({"en": "bone", "fr": "os"}, "fr") == "os"
    assert localized({"en": "bone"}, "fr") == "bone"
    assert localized({"de": "Knochen"}, "fr") == "Knochen"
    assert localized("bone", "fr") == "bone"


def test_the_default_template_covers_the_issue_failure_modes():
    template = load_template()
    ids = {m.id for m in template.failure_modes}
    assert {"autocontour_error", "sct_bone_hu_bias", "dlrecon_low_contrast",
            "dlrecon_hallucination", "subgroup_underperformance", "input_drift",
            "silent_model_change", "qa_not_run", "stale_baseline"} <= ids
    for m in template.failure_modes:  # bilingual texts
        assert localized(m.title, "en") != localized(m.title, "fr")
        assert 1 <= m.severity <= 10
    assert replace(template.failure_modes[0]).severity == 8  # TG-100 Table X contouring
