"""Which tolerance key grades which labelled value: ``metric[label]``, ``metric[*]``, ``metric``.

The rule (qa.verdicts.grade_measurements, docs/protocol.md "Levels per label"): an explicit
``metric[label]`` wins; ``metric[*]`` grades every other label; a bare ``metric`` grades the
overall value, or every other label when the check measured no overall value of it.
"""

from __future__ import annotations

import pytest

from checks.base import Measurement
from qa.protocol import CheckSpec, load_protocol
from qa.verdicts import Bound, Level, Levels, grade_measurements
from tests.qa.test_protocol import VALID, problems_of, register_fake_checks, write_protocol

DICE = Levels(Bound(min=0.85), Bound(min=0.75))
DICE_PROSTATE = Levels(Bound(min=0.75), Bound(min=0.65))
MAE = Levels(Bound(max=70), Bound(max=90))
MAE_TISSUE = Levels(Bound(max=200), Bound(max=250))


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    register_fake_checks(monkeypatch)


def spec(tolerances: dict[str, Levels]) -> CheckSpec:
    return CheckSpec.model_validate({"check": "fake_hu", "id": "seg", "tolerances": tolerances})


def per_structure(**dice: float) -> list[Measurement]:
    return [Measurement("dice", value, "1", name) for name, value in dice.items()]


def graded(verdicts) -> list[tuple[str, str, float, Level]]:
    return [(v.metric, v.label, v.value, v.level) for v in verdicts]


def test_a_bare_key_grades_every_structure_when_the_metric_is_per_structure_only() -> None:
    v = grade_measurements(spec({"dice": DICE}), "c1",
                           per_structure(bladder=0.9, rectum=0.8, prostate=0.7))
    assert graded(v) == [("dice", "bladder", 0.9, Level.OK),
                         ("dice", "rectum", 0.8, Level.TOLERANCE),
                         ("dice", "prostate", 0.7, Level.ACTION)]
    assert v[2].message.startswith("dice[prostate] = 0.7 < action min 0.75")


def test_a_structure_key_overrides_the_bare_key_for_that_structure_only() -> None:
    check = spec({"dice": DICE, "dice[prostate]": DICE_PROSTATE})
    v = grade_measurements(check, "c1", per_structure(bladder=0.9, prostate=0.7))
    assert graded(v) == [("dice", "bladder", 0.9, Level.OK),
                         ("dice", "prostate", 0.7, Level.TOLERANCE)]
    # the same levels whatever the order of the keys in the protocol
    check = spec({"dice[prostate]": DICE_PROSTATE, "dice": DICE})
    v = grade_measurements(check, "c1", per_structure(bladder=0.9, prostate=0.7))
    assert sorted(graded(v)) == [("dice", "bladder", 0.9, Level.OK),
                                 ("dice", "prostate", 0.7, Level.TOLERANCE)]


def test_a_bare_key_grades_only_the_overall_value_when_there_is_one() -> None:
    measurements = [Measurement("mae_hu", 60.0, "HU"), Measurement("mae_hu", 240.0, "HU", "bone")]
    v = grade_measurements(spec({"mae_hu": MAE}), "c1", measurements)
    assert graded(v) == [("mae_hu", "", 60.0, Level.OK)]


def test_the_wildcard_key_grades_every_label_besides_the_overall_value() -> None:
    measurements = [Measurement("mae_hu", 60.0, "HU"), Measurement("mae_hu", 240.0, "HU", "bone"),
                    Measurement("mae_hu", 50.0, "HU", "fat")]
    check = spec({"mae_hu": MAE, "mae_hu[*]": MAE_TISSUE,
                  "mae_hu[fat]": Levels(Bound(max=40), Bound(max=45))})
    v = grade_measurements(check, "c1", measurements)
    assert graded(v) == [("mae_hu", "", 60.0, Level.OK),
                         ("mae_hu", "bone", 240.0, Level.TOLERANCE),
                         ("mae_hu", "fat", 50.0, Level.ACTION)]


def test_with_a_wildcard_key_the_bare_key_never_grades_labels() -> None:
    check = spec({"dice": DICE, "dice[*]": DICE_PROSTATE})
    v = grade_measurements(check, "c1", per_structure(bladder=0.8))
    assert graded(v)[0][:2] == ("dice", "")
    assert graded(v)[0][3] is Level.ACTION  # the overall dice was not measured
    assert graded(v)[1] == ("dice", "bladder", 0.8, Level.OK)


def test_not_applicable_structures_are_not_graded_by_the_default_keys() -> None:
    # a female patient: the prostate is in neither structure set
    measurements = per_structure(bladder=0.9) + [Measurement("missing_evaluated", 0.0, "1",
                                                             "prostate")]
    check = spec({"dice": DICE, "dice[*]": DICE, "missing_evaluated": Levels(Bound(max=0),
                                                                            Bound(max=0))})
    v = grade_measurements(check, "c1", measurements, not_applicable=["prostate"])
    assert [(x.metric, x.label) for x in v] == [("dice", ""), ("dice", "bladder")]
    # nothing measured at all because every structure is not applicable: no verdict
    v = grade_measurements(spec({"dice": DICE}), "c1", [], not_applicable=["prostate"])
    assert v == []


def test_every_label_with_its_own_key_leaves_nothing_to_the_bare_key() -> None:
    check = spec({"dice[bladder]": DICE, "dice": DICE_PROSTATE})
    v = grade_measurements(check, "c1", per_structure(bladder=0.8))
    assert graded(v) == [("dice", "bladder", 0.8, Level.TOLERANCE)]


def test_a_default_key_that_grades_nothing_is_action_not_a_pass() -> None:
    for key in ("dice", "dice[*]"):
        [v] = grade_measurements(spec({key: DICE}), "c1", [])
        assert v.level is Level.ACTION
        assert v.message == f"{key} was not measured for this case, so it cannot pass (ACTION)"


# -- the protocol side: where a wildcard may appear --------------------------------------

def test_protocol_accepts_wildcard_tolerances_and_pass_rate_of_a_defaulted_label(
        tmp_path) -> None:
    text = VALID.replace('"mae_hu[bone]": {tolerance', '"mae_hu[*]": {tolerance').replace(
        "{metric: mae_hu, statistic: pass_rate", "{metric: 'mae_hu[fat]', statistic: pass_rate")
    protocol = load_protocol(write_protocol(tmp_path, text))
    assert "mae_hu[*]" in protocol.checks[0].tolerances


@pytest.mark.parametrize(("old", "new", "where"), [
    ("{metric: mae_hu, statistic: mean", "{metric: 'mae_hu[*]', statistic: mean",
     "checks[0].cohort[0].metric"),
])
def test_a_cohort_statistic_must_name_one_label(tmp_path, old, new, where) -> None:
    _, problems = problems_of(tmp_path, VALID.replace(old, new))
    assert problems[0][0] == where
    assert problems[0][1] == ("'mae_hu[*]' names every label; here name one, e.g. "
                              "'mae_hu[bladder]' ('mae_hu[*]' is only for tolerances)")
