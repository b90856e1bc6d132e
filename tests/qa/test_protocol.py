"""Specification of qa.protocol: the YAML schema and every error a user can make.

The checks used here are small fakes registered in ``checks.registry._REGISTRY`` so the tests
do not depend on the real check families; one test loads the annotated example of
docs/protocol.md with the real registry.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import registry
from checks.base import (
    Check,
    CheckOutput,
    CohortCheck,
    CohortInput,
    Measurement,
    MetricInfo,
    Slot,
)
from qa.errors import ProtocolError
from qa.protocol import CheckSpec, Protocol, load_protocol
from qa.verdicts import Bound, Levels

REPO = Path(__file__).resolve().parents[2]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class FakeOptions:
    threshold_hu: float = 100.0


class FakeHUCheck(Check):
    """Mean absolute difference of two images (enough to exercise the protocol)."""

    name: ClassVar[str] = "fake_hu"
    title: ClassVar[str] = "Fake HU"
    slots: ClassVar[dict[str, Slot]] = {
        "reference": Slot("image"), "evaluated": Slot("image"), "mask": Slot("mask", False),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "mae_hu": MetricInfo("HU", "mean absolute error"),
        "me_hu": MetricInfo("HU", "mean error", "zero"),
    }
    Options = FakeOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        diff = inputs["evaluated"].array - inputs["reference"].array
        return CheckOutput((Measurement("mae_hu", float(np.mean(np.abs(diff))), "HU"),))


class FakeSegCheck(Check):
    """A check with mask slots, to exercise role kinds."""

    name: ClassVar[str] = "fake_seg"
    title: ClassVar[str] = "Fake segmentation"
    slots: ClassVar[dict[str, Slot]] = {"reference": Slot("mask"), "predicted": Slot("mask")}
    metrics: ClassVar[dict[str, MetricInfo]] = {"dice": MetricInfo("1", "Dice", "higher")}
    Options = FakeOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        return CheckOutput(())


def register_fake_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``fake_hu`` and ``fake_seg`` for the duration of a test."""
    monkeypatch.setitem(registry._REGISTRY, "fake_hu", f"{__name__}:FakeHUCheck")
    monkeypatch.setitem(registry._REGISTRY, "fake_seg", f"{__name__}:FakeSegCheck")


VALID = """\
name: MR-to-sCT pelvis — commissioning
kind: commissioning
operator: J. Doe
model:
  name: mr2ct-demo
  version: "1.0"
  adapter: torch
  path: models/mr2ct.pt
  input: mr
  output: sct
cases: data/cases.csv
attributes:
  sex: {values: [F, M]}
  age: {min: 18, max: 100, unit: years}
  scanner: {values: [A, B], required: false}
roles:
  ct: {kind: image, modality: CT}
checks:
  - check: fake_hu
    id: hu_body
    reference: ct
    evaluated: sct
    mask: body
    options: {threshold_hu: 150}
    tolerances:
      mae_hu: {tolerance: {max: 70}, action: {max: 90}}
      "mae_hu[bone]": {tolerance: {max: 200}, action: {max: 250}}
    cohort:
      - {metric: mae_hu, statistic: mean, tolerance: {max: 65}, action: {max: 80}}
      - {metric: mae_hu, statistic: pass_rate, tolerance: {min: 95}, action: {min: 90}}
validation:
  hu_range: [-1100, 4000]
  spacing_mm: {min: 0.3, max: 10}
"""


def write_protocol(folder: Path, text: str, name: str = "protocol.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(folder: Path, text: str) -> tuple[str, list[tuple[str, str]]]:
    with pytest.raises(ProtocolError) as info:
        load_protocol(write_protocol(folder, text))
    return str(info.value), getattr(info.value, "problems", [])


@pytest.fixture(autouse=True)
def _fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    register_fake_checks(monkeypatch)


def test_valid_protocol_exposes_fields_paths_and_hash(tmp_path: Path) -> None:
    path = write_protocol(tmp_path, VALID)
    protocol = load_protocol(path)
    assert isinstance(protocol, Protocol)
    assert protocol.name == "MR-to-sCT pelvis — commissioning"
    assert protocol.path == path.resolve()
    assert protocol.base_dir == tmp_path.resolve()
    assert protocol.text == VALID
    assert protocol.sha256 == hashlib.sha256(VALID.encode("utf-8")).hexdigest()
    assert protocol.case_table_path == tmp_path.resolve() / "data" / "cases.csv"
    assert protocol.model_path == tmp_path.resolve() / "models" / "mr2ct.pt"
    spec = protocol.checks[0]
    assert spec.id == "hu_body"
    assert spec.bindings == {"reference": "ct", "evaluated": "sct", "mask": "body"}
    assert spec.tolerances["mae_hu"] == Levels(Bound(max=70), Bound(max=90))
    assert spec.cohort[1].statistic == "pass_rate"
    assert spec.cohort[1].levels == Levels(Bound(min=95), Bound(min=90))
    assert protocol.validation.hu_range == (-1100.0, 4000.0)
    assert protocol.attributes["age"].numeric and not protocol.attributes["sex"].numeric


def test_role_helpers(tmp_path: Path) -> None:
    protocol = load_protocol(write_protocol(tmp_path, VALID))
    assert protocol.roles_used() == {"ct": "image", "mr": "image", "sct": "image",
                                     "body": "mask"}
    # the model output is produced, not read from the table; the optional mask slot is optional
    assert protocol.case_table_roles() == {"ct": "image", "mr": "image", "body": "mask"}
    assert protocol.required_roles() == {"ct", "mr"}
    assert protocol.ct_roles() == {"ct"}


def test_precomputed_output_is_a_case_table_column(tmp_path: Path) -> None:
    text = VALID.replace("adapter: torch", "adapter: precomputed").replace(
        "  path: models/mr2ct.pt\n", "")
    protocol = load_protocol(write_protocol(tmp_path, text))
    assert "sct" in protocol.case_table_roles()
    assert protocol.required_roles() == {"ct", "mr", "sct"}


def test_declared_role_required_overrides_inference(tmp_path: Path) -> None:
    text = VALID.replace("ct: {kind: image, modality: CT}",
                         "ct: {kind: image, modality: CT, required: false}\n"
                         "  body: {kind: mask, required: true}")
    protocol = load_protocol(write_protocol(tmp_path, text))
    assert protocol.required_roles() == {"mr", "body"}


def test_check_instances_validate_options(tmp_path: Path) -> None:
    protocol = load_protocol(write_protocol(tmp_path, VALID))
    [(spec, check)] = protocol.check_instances()
    assert isinstance(spec, CheckSpec) and isinstance(check, FakeHUCheck)
    assert check.options == FakeOptions(threshold_hu=150.0)


def test_id_defaults_to_check_name(tmp_path: Path) -> None:
    protocol = load_protocol(write_protocol(tmp_path, VALID.replace("    id: hu_body\n", "")))
    assert protocol.checks[0].id == "fake_hu"


def test_malformed_yaml_gives_line_and_column(tmp_path: Path) -> None:
    message, _ = problems_of(tmp_path, "name: x\nkind: [commissioning\nmodel: {}\n")
    assert "malformed YAML at line 3, column" in message
    assert str(tmp_path / "protocol.yaml") in message


def test_key_written_twice_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("      mae_hu: {tolerance: {max: 70}, action: {max: 90}}\n",
                         "      mae_hu: {tolerance: {max: 70}, action: {max: 90}}\n"
                         "      mae_hu: {tolerance: {max: 1}, action: {max: 2}}\n")
    message, _ = problems_of(tmp_path, text)
    assert message.endswith("protocol.yaml: at line 27, column 7: key 'mae_hu' is written twice "
                            "(first on line 26); keep one")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "nope.yaml")
    message, _ = problems_of(tmp_path, "- a\n- b\n")
    assert "must be a YAML mapping" in message


def test_unknown_top_level_key_lists_allowed_keys(tmp_path: Path) -> None:
    message, problems = problems_of(tmp_path, VALID + "colour: blue\n")
    assert problems == [("colour", "unknown key 'colour'; allowed keys: name, kind, "
                         "description, operator, model, cases, data_root, attributes, roles, "
                         "checks, validation, baseline, trend, drift, risk")]
    assert "1 problem in the protocol" in message


def test_unknown_nested_keys_list_allowed_keys(tmp_path: Path) -> None:
    text = VALID.replace("  output: sct", "  output: sct\n  gpu: 1")
    text = text.replace("action: {max: 90}}", "action: {mx: 90}}", 1)
    text = text.replace("unit: years}", "units: years}")
    text = text.replace("statistic: mean,", "statistic: mean, label: bone,")
    _, problems = problems_of(tmp_path, text)
    found = dict(problems)
    assert found["model.gpu"].startswith("unknown key 'gpu'; allowed keys: name, version, "
                                         "adapter, path, entrypoint, command, input, output")
    assert found["checks[0].tolerances.mae_hu.action.mx"] == (
        "unknown key 'mx'; allowed keys: min, max")
    assert found["attributes.age.units"] == (
        "unknown key 'units'; allowed keys: values, min, max, unit, required")
    assert found["checks[0].cohort[0].label"] == (
        "unknown key 'label'; allowed keys: metric, statistic, tolerance, action")


def test_unknown_check_lists_known_checks(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, VALID.replace("check: fake_hu", "check: hu_acuracy"))
    where, what = problems[0]
    assert where == "checks[0].check"
    assert what.startswith("unknown check 'hu_acuracy'; known checks: ")
    assert "fake_hu" in what and "fake_seg" in what and "hu_accuracy" in what


def test_missing_required_slot_and_unknown_slot(tmp_path: Path) -> None:
    text = VALID.replace("    evaluated: sct\n", "    evaluatd: sct\n")
    _, problems = problems_of(tmp_path, text)
    found = dict(problems)
    assert found["checks[0].evaluatd"].startswith(
        "unknown key 'evaluatd'; allowed keys: check, id, options, tolerances, cohort, "
        "pool, reference, evaluated, mask")
    assert found["checks[0].evaluated"].startswith(
        "missing binding for required slot 'evaluated' (kind image) of check fake_hu")


def test_tolerance_metric_must_be_a_metric_of_the_check(tmp_path: Path) -> None:
    text = VALID.replace("      mae_hu: {tolerance", "      mean_hu: {tolerance")
    _, problems = problems_of(tmp_path, text)
    assert problems[0] == ("checks[0].tolerances.mean_hu",
                           "check fake_hu has no metric 'mean_hu'; its metrics: mae_hu, me_hu")
    # the cohort pass_rate of mae_hu has lost its per-case tolerance too
    assert problems[1][0] == "checks[0].cohort[1]" and len(problems) == 2


def test_malformed_metric_key(tmp_path: Path) -> None:
    text = VALID.replace('"mae_hu[bone]"', '"mae_hu[bone"')
    _, problems = problems_of(tmp_path, text)
    assert problems == [('checks[0].tolerances.mae_hu[bone',
                         "write the metric as 'metric' or 'metric[label]', got 'mae_hu[bone'")]


def test_min_above_max_names_the_level(tmp_path: Path) -> None:
    text = VALID.replace("action: {max: 90}}", "action: {min: 95, max: 90}}", 1)
    _, problems = problems_of(tmp_path, text)
    assert problems == [("checks[0].tolerances.mae_hu.action",
                         "min 95 > max 90; within a level min must be <= max")]


def test_tolerance_outside_action_says_which_side(tmp_path: Path) -> None:
    text = VALID.replace("mae_hu: {tolerance: {max: 70}, action: {max: 90}}",
                         "mae_hu: {tolerance: {max: 95}, action: {max: 90}}")
    text = text.replace("tolerance: {min: 95}, action: {min: 90}",
                        "tolerance: {max: 100}, action: {min: 90}")
    _, problems = problems_of(tmp_path, text)
    found = dict(problems)
    assert found["checks[0].tolerances.mae_hu.action"].startswith(
        "tolerance.max (95) must be <= action.max (90): the tolerance band must lie inside")
    assert found["checks[0].cohort[1].action"].startswith(
        "tolerance.min (absent) must be >= action.min (90)")


def test_level_needs_min_or_max(tmp_path: Path) -> None:
    text = VALID.replace("action: {max: 90}}", "action: {}}", 1)
    _, problems = problems_of(tmp_path, text)
    assert problems == [("checks[0].tolerances.mae_hu.action",
                         "a level needs min, max or both (e.g. {max: 90})")]


def test_bounds_must_be_finite_numbers(tmp_path: Path) -> None:
    text = VALID.replace("action: {max: 90}}", "action: {max: .nan}}", 1)
    text = text.replace("{max: 200}", '{max: "200"}')
    _, problems = problems_of(tmp_path, text)
    found = dict(problems)
    assert "finite number" in found["checks[0].tolerances.mae_hu.action.max"]
    assert "valid number (got '200')" in found["checks[0].tolerances.mae_hu[bone].tolerance.max"]


def test_duplicate_check_ids(tmp_path: Path) -> None:
    second = ("  - check: fake_hu\n    reference: ct\n    evaluated: sct\n"
              "  - check: fake_hu\n    reference: ct\n    evaluated: sct\n")
    text = VALID.replace("validation:", second + "validation:")
    _, problems = problems_of(tmp_path, text)
    assert problems == [("checks[2].id", "duplicate check id 'fake_hu', also used by checks[1] "
                         "(it defaults to the check name: add id:); give each check a unique id")]


def test_command_adapter_needs_both_placeholders(tmp_path: Path) -> None:
    text = VALID.replace("adapter: torch", "adapter: command").replace(
        "  path: models/mr2ct.pt\n", '  command: "tool --in {input} --out out.nii"\n')
    _, problems = problems_of(tmp_path, text)
    assert problems == [("model.command", "adapter command needs a command line containing "
                         "both placeholders {input} and {output}, got "
                         "'tool --in {input} --out out.nii'")]


def test_model_input_and_output_rules(tmp_path: Path) -> None:
    text = VALID.replace("  input: mr\n", "").replace("  output: sct\n", "")
    _, problems = problems_of(tmp_path, text)
    found = dict(problems)
    assert found["model.input"].startswith("required for adapter torch: the case-table role")
    assert found["model.output"] == "required key is missing"


def test_adapter_specific_keys(tmp_path: Path) -> None:
    text = VALID.replace("adapter: torch", "adapter: precomputed").replace(
        "  path: models/mr2ct.pt\n", '  entrypoint: "pkg.mod:build"\n  command: "x"\n')
    _, problems = problems_of(tmp_path, text)
    assert dict(problems) == {"model.entrypoint": "only allowed with adapter torch",
                              "model.command": "only allowed with adapter command"}


def test_unquoted_version_is_refused_with_a_hint(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, VALID.replace('version: "1.0"', "version: 1.10"))
    assert problems[0][0] == "model.version"
    assert 'write it in quotes, e.g. version: "1.1"' in problems[0][1]


def test_attribute_with_both_values_and_range(tmp_path: Path) -> None:
    text = VALID.replace("sex: {values: [F, M]}", "sex: {values: [F, M], min: 0}")
    _, problems = problems_of(tmp_path, text)
    assert problems == [("attributes.sex",
                         "give either values (categorical) or min/max (numeric), not both")]


def test_attribute_values_that_yaml_turns_into_booleans(tmp_path: Path) -> None:
    text = VALID.replace("sex: {values: [F, M]}", "smoker: {values: [yes, no]}")
    _, problems = problems_of(tmp_path, text)
    assert problems[0][0] == "attributes.smoker.values"
    assert "write True in quotes" in problems[0][1]


def test_options_are_validated_against_the_check_options(tmp_path: Path) -> None:
    text = VALID.replace("options: {threshold_hu: 150}", "options: {treshold_hu: 150}")
    _, problems = problems_of(tmp_path, text)
    assert problems == [("checks[0].options.treshold_hu",
                         "unknown option; allowed options: threshold_hu")]


def test_role_used_with_two_kinds(tmp_path: Path) -> None:
    second = "  - check: fake_seg\n    reference: body\n    predicted: ct\n"
    text = VALID.replace("validation:", second + "validation:")
    _, problems = problems_of(tmp_path, text)
    assert problems == [("checks[1].predicted", "role 'ct' is used as kind mask here but as "
                         "kind image at roles.ct.kind; a role holds one kind of file")]


def test_role_clashing_with_attribute(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, VALID.replace("mask: body", "mask: sex"))
    assert problems == [("checks[0].mask", "role 'sex' clashes with attribute 'sex'; rename "
                         "one of them")]


def test_pass_rate_needs_a_per_case_tolerance(tmp_path: Path) -> None:
    text = VALID.replace("{metric: mae_hu, statistic: pass_rate",
                         "{metric: me_hu, statistic: pass_rate")
    _, problems = problems_of(tmp_path, text)
    assert problems[0][0] == "checks[0].cohort[1]"
    assert problems[0][1].startswith("pass_rate of 'me_hu' counts cases whose per-case verdict "
                                     "is OK: add tolerances.me_hu")


def test_unknown_statistic_lists_allowed(tmp_path: Path) -> None:
    _, problems = problems_of(tmp_path, VALID.replace("statistic: mean", "statistic: average"))
    assert problems[0][0] == "checks[0].cohort[0].statistic"
    assert "'mean', 'median', 'p95', 'min', 'max' or 'pass_rate'" in problems[0][1]


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    text = (VALID.replace("kind: commissioning", "kind: daily")
            .replace("check: fake_hu", "check: nope")
            .replace("sex: {values: [F, M]}", "sex: {}")
            .replace("hu_range: [-1100, 4000]", "hu_range: [4000, -1100]"))
    message, problems = problems_of(tmp_path, text)
    assert [where for where, _ in problems] == [
        "kind", "attributes.sex", "validation.hu_range", "checks[0].check"]
    assert message.startswith(f"file {(tmp_path / 'protocol.yaml').resolve()}: 4 problems in "
                              "the protocol; fix them and run again:\n  - kind: ")
    assert "must be [low, high] with low < high, got [4000.0, -1100.0]" in message


def test_docs_example_loads_with_the_real_registry(tmp_path: Path) -> None:
    """The annotated example of docs/protocol.md is a valid protocol."""
    pytest.importorskip("checks.hu")
    doc = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    protocol = load_protocol(write_protocol(tmp_path, example))
    assert [spec.check for spec, _ in protocol.check_instances()] == ["hu_accuracy"]


class FakeCohortCheck(CohortCheck):
    """A cohort-level check: options and levels, no slot bindings."""

    name: ClassVar[str] = "fake_cohort"
    title: ClassVar[str] = "Fake cohort"
    metrics: ClassVar[dict[str, MetricInfo]] = {"gap_hu": MetricInfo("HU", "worst-group gap")}
    Options = FakeOptions

    def run_cohort(self, data: CohortInput) -> CheckOutput:
        return CheckOutput(())


def test_a_cohort_check_takes_options_and_levels_but_no_slot_bindings(tmp_path, monkeypatch):
    register_fake_checks(monkeypatch)
    monkeypatch.setitem(registry._REGISTRY, "fake_cohort", f"{__name__}:FakeCohortCheck")
    # append the cohort check to the checks list (before `validation:`)
    head, _, tail = VALID.partition("validation:\n")
    text = head + ("  - check: fake_cohort\n    options: {threshold_hu: 5}\n"
                   "    tolerances:\n      gap_hu: {tolerance: {max: 10}, action: {max: 20}}\n"
                   "validation:\n" + tail)
    protocol = load_protocol(write_protocol(tmp_path, text))
    spec, check = protocol.check_instances()[-1]
    assert isinstance(check, FakeCohortCheck) and spec.bindings == {}
    assert check.options.threshold_hu == 5
    message, _ = problems_of(tmp_path, text.replace("options: {threshold_hu: 5}",
                                                    "options: {threshold_hu: 5}\n    mask: body"))
    assert "unknown key 'mask'" in message


def test_baseline_levels_belong_to_periodic_protocols_and_name_real_metrics(tmp_path,
                                                                           monkeypatch):
    register_fake_checks(monkeypatch)
    periodic = VALID.replace("kind: commissioning", "kind: periodic")
    good = periodic + ("baseline:\n  levels:\n    hu_body:\n"
                       "      mae_hu: {tolerance: {max: 5}, action: {max: 10}}\n")
    protocol = load_protocol(write_protocol(tmp_path, good))
    assert protocol.baseline.levels["hu_body"]["mae_hu"].action.max == 10

    message, _ = problems_of(tmp_path, good.replace("kind: periodic", "kind: commissioning"))
    assert "belongs to a periodic protocol" in message
    message, _ = problems_of(tmp_path, good.replace("    hu_body:\n", "    hu_other:\n"))
    assert "no check with id 'hu_other'" in message
    message, _ = problems_of(tmp_path, good.replace("      mae_hu: {", "      dice: {"))
    assert "has no metric 'dice'" in message
    message, _ = problems_of(tmp_path, periodic.replace("id: hu_body", "id: baseline.x"))
    assert "reserved for the baseline comparison" in message
