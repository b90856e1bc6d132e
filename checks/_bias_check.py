"""The ``subgroup_bias`` cohort check (private module; import it from :mod:`checks.bias`).

Turns a :class:`checks.base.CohortInput` (per-case measurements, case attributes, per-case
verdicts) into one table per analysis, runs :func:`checks.bias.subgroup_analysis` /
:func:`checks.bias.trend_analysis`, adjusts every p-value of the check as one family, and
returns gradable cohort measurements (label = the grouping) plus report details.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import _bias_groups as grouping
from checks.base import CheckOutput, CohortCheck, CohortInput, Measurement, MetricInfo
from qa.errors import QAInputError

__all__ = ["SubgroupBiasOptions", "SubgroupBiasCheck", "FAILURE_MODE"]

logger = logging.getLogger(__name__)

#: The risk-register failure mode this check provides evidence for.
FAILURE_MODE = "subgroup underperformance"
_METRIC_REF = re.compile(r"^(?P<check>[A-Za-z_][A-Za-z0-9_.-]*?)\.(?P<metric>[A-Za-z_]\w*)"
                         r"(\[(?P<label>[^\[\]]+)\])?$")
_LEVEL_RANK = {"OK": 0, "TOLERANCE": 1, "ACTION": 2}


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class SubgroupBiasOptions:
    """Options of ``subgroup_bias`` as written in the protocol YAML (under ``options:``).

    ``metric``: ``<check id or name>.<metric>[<label>]`` (e.g. ``hu_body.mae_hu``);
    ``by``: attributes, each analysed on its own, or a list for intersections
    (``[sex, [sex, age]]``); ``trend``: numeric attributes tested with Spearman's rho;
    ``bins``: attribute -> ``{edges, labels}`` (``bmi``: WHO classes, ``age``: bands by
    default); ``failure_level``: a case fails at this per-case verdict level or above.
    """

    metric: str
    by: list[str | list[str]] = Field(default_factory=list)
    trend: list[str] = Field(default_factory=list)
    bins: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    min_group_size: int = Field(default=10, ge=2)
    correction: Literal["holm", "bh"] = "holm"
    alpha: float = Field(default=0.05, gt=0, lt=1)
    n_bootstrap: int = Field(default=2000, ge=100)
    confidence_level: float = Field(default=0.95, ge=0.5, lt=1)
    seed: int = 0
    failure_level: Literal["tolerance", "action"] = "tolerance"
    better: Literal["lower", "higher", "zero"] | None = None
    nan_policy: Literal["omit", "raise"] = "omit"

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not _METRIC_REF.match(value):
            raise ValueError(f"must be '<check id>.<metric>' or '<check id>.<metric>[<label>]' "
                             f"(e.g. hu_body.mae_hu), got {value!r}")
        return value

    @field_validator("by")
    @classmethod
    def _by(cls, value: list) -> list:
        for item in value:
            if isinstance(item, list) and (len(item) < 2 or len(set(item)) != len(item)):
                raise ValueError(f"an intersection needs two or more distinct attributes, "
                                 f"got {item}")
        return value

    @field_validator("bins")
    @classmethod
    def _bins(cls, value: dict) -> dict:
        for attribute, spec in value.items():
            grouping.normalise_bins(attribute, spec)
        return value


class SubgroupBiasCheck(CohortCheck):
    """Cohort check: is a per-case metric worse for some group of patients?"""

    name: ClassVar[str] = "subgroup_bias"
    title: ClassVar[str] = "Subgroup bias of a per-case metric"
    slots: ClassVar[dict[str, Any]] = {}  # no image inputs: it reads the run's results
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "gap_worst_to_overall": MetricInfo(
            "metric unit", "worst sufficient group minus overall value (positive = worse)"),
        "gap_worst_to_best": MetricInfo(
            "metric unit", "worst minus best sufficient group (positive = worse)"),
        "p_adjusted": MetricInfo(
            "1", "adjusted p of the between-group test (Mann-Whitney / Kruskal-Wallis)",
            "higher"),
        "p_adjusted_failures": MetricInfo(
            "1", "adjusted p of Fisher's exact test on per-case failure rates", "higher"),
        "p_adjusted_trend": MetricInfo(
            "1", "adjusted p of Spearman's rho along a trend attribute", "higher"),
        "rho_trend": MetricInfo("1", "Spearman's rho of the metric along a trend attribute",
                                "zero"),
        "n_groups_insufficient": MetricInfo(
            "groups", "groups below min_group_size (described, not tested)"),
    }
    Options: ClassVar[type] = SubgroupBiasOptions

    def run_cohort(self, data: CohortInput) -> CheckOutput:
        """Measurements (label = grouping, e.g. ``bmi`` or ``sex × age``) and details."""
        from checks import bias  # checks.bias imports this module at its end

        opts = self.options
        if not opts.by and not opts.trend:
            raise QAInputError("options.by and options.trend are both empty: name at least "
                               "one attribute to compare groups by.", check=self.name,
                               field="options.by")
        table, unit, better, notes = self._case_table(data)
        analyses: list[Any] = []
        for item in opts.by:
            by = [item] if isinstance(item, str) else list(item)
            analyses.append(self._call(bias.subgroup_analysis, table, opts.metric, by,
                                       bins=opts.bins, failed="failed" if "failed" in table
                                       else None, min_group_size=opts.min_group_size,
                                       better=better, correction=opts.correction,
                                       n_bootstrap=opts.n_bootstrap, unit=unit,
                                       confidence_level=opts.confidence_level,
                                       seed=opts.seed, nan_policy=opts.nan_policy))
        for attribute in opts.trend:
            analyses.append(self._call(bias.trend_analysis, table, opts.metric, attribute,
                                       confidence_level=opts.confidence_level,
                                       correction=opts.correction, nan_policy=opts.nan_policy))
        analyses = bias.adjust_across(analyses, opts.correction)
        rows: list[Measurement] = []
        for result in analyses:
            rows += _measurements(result, unit)
        excluded = sorted({c for r in analyses for c in r.excluded})
        details = bias._json_clean({
            "metric": opts.metric, "unit": unit, "better": better,
            "failure_mode": FAILURE_MODE, "failure_level": opts.failure_level,
            "alpha": opts.alpha, "correction": opts.correction,
            "min_group_size": opts.min_group_size, "notes": notes,
            "excluded_cases": excluded,
            "analyses": [r.to_dict() for r in analyses if isinstance(r, bias.SubgroupResult)],
            "trends": [r.to_dict() for r in analyses if isinstance(r, bias.TrendResult)],
            "findings": [f for r in analyses for f in _findings(r, opts.alpha)],
        })
        return CheckOutput(measurements=tuple(rows), details=details)

    # -- helpers -------------------------------------------------------------------------

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except ValueError as exc:
            raise QAInputError(f"{self.options.metric}: {exc}", check=self.name) from exc

    def _case_table(self, data: CohortInput) -> tuple[pd.DataFrame, str, str, list[str]]:
        """One row per case: value, failed (when per-case levels exist), attributes."""
        opts = self.options
        ref = _METRIC_REF.match(opts.metric)
        check_ref, metric, label = ref["check"], ref["metric"], ref["label"] or ""
        measured = pd.DataFrame(data.measurements)
        if measured.empty:
            raise QAInputError(f"metric {opts.metric!r} has no measurements: the run holds no "
                               "per-case measurement at all.", check=self.name,
                               field="options.metric")
        by_id = measured["check_id"] == check_ref
        if not by_id.any():
            by_id = measured["check"] == check_ref
            ids = sorted(set(measured.loc[by_id, "check_id"]))
            if len(ids) > 1:
                raise QAInputError(
                    f"options.metric {opts.metric!r}: check {check_ref!r} runs under several "
                    f"ids ({', '.join(ids)}); name one id, e.g. {ids[0]}.{metric}.",
                    check=self.name, field="options.metric")
        label_of = measured["label"].fillna("").astype(str)
        rows = measured[by_id & (measured["metric"] == metric) & (label_of == label)]
        if rows.empty:
            known = sorted({f"{c}.{m}" for c, m in zip(measured["check_id"], measured["metric"],
                                                      strict=True)})
            raise QAInputError(
                f"metric {opts.metric!r} has no measurements in this run; measured: "
                f"{', '.join(known[:12])}. Check the check id, metric name and label.",
                check=self.name, field="options.metric")
        check_id = rows["check_id"].iloc[0]
        notes: list[str] = []
        rows = _latest_per_case(rows, notes)
        unit = str(rows["unit"].dropna().iloc[0]) if rows["unit"].notna().any() else ""
        table = pd.DataFrame({"case_id": rows["case_id"].astype(str).to_numpy(),
                              opts.metric: pd.to_numeric(rows["value"]).to_numpy(dtype=float)})
        cases = pd.DataFrame(data.cases).copy()
        cases["case_id"] = cases["case_id"].astype(str)
        cases = cases.drop_duplicates("case_id", keep="last")
        table = table.merge(cases, on="case_id", how="left", validate="one_to_one")
        failed = _failed(pd.DataFrame(data.verdicts), check_id, metric, label, table["case_id"],
                         opts.failure_level)
        if failed is None:
            notes.append(f"no per-case levels are declared for {opts.metric}: failure rates "
                         "are not computed.")
        else:
            table["failed"] = failed
        return table, unit, opts.better or _better_of(rows["check"].iloc[0], metric), notes


def _latest_per_case(rows: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Keep one measurement per case: the latest run's when runs are pooled."""
    if not rows["case_id"].duplicated().any():
        return rows
    if "run_id" not in rows.columns:
        dup = sorted(set(rows.loc[rows["case_id"].duplicated(), "case_id"].astype(str)))
        raise QAInputError(f"case(s) {', '.join(dup[:10])} have several measurements of the "
                           "metric in one run; give a label to select one.",
                           check="subgroup_bias", field="options.metric")
    kept = rows.sort_values("run_id", kind="stable").drop_duplicates("case_id", keep="last")
    notes.append(f"{len(rows) - len(kept)} older measurement(s) of re-measured cases were "
                 "replaced by the latest run's.")
    return kept


def _failed(verdicts: pd.DataFrame, check_id: str, metric: str, label: str,
            case_ids: pd.Series, level: str) -> np.ndarray | None:
    if verdicts.empty or "level" not in verdicts.columns:
        return None
    label_of = verdicts["label"].fillna("").astype(str)
    mine = verdicts[(verdicts["check_id"] == check_id) & (verdicts["metric"] == metric)
                    & (label_of == label) & verdicts["case_id"].notna()]
    if mine.empty:
        return None
    if "run_id" in mine.columns:  # pooled runs: the latest run's verdicts of each case
        latest = mine.groupby(mine["case_id"].astype(str))["run_id"].transform("max")
        mine = mine[mine["run_id"] == latest]
    threshold = _LEVEL_RANK[level.upper()]
    worst = mine.assign(rank=mine["level"].astype(str).str.upper().map(_LEVEL_RANK)) \
        .groupby(mine["case_id"].astype(str))["rank"].max()
    # A case without a verdict for a measured metric cannot be graded: count it as failed
    # at ACTION (as the engine does for a non-finite value).
    return (case_ids.map(worst).fillna(2).to_numpy() >= threshold)


def _better_of(check_name: str, metric: str) -> str:
    from checks.registry import get_check

    try:
        return get_check(check_name).metrics[metric].better
    except (KeyError, AttributeError):
        return "lower"


def _measurements(result: Any, unit: str) -> list[Measurement]:
    from checks import bias

    tests = result.tests
    if isinstance(result, bias.TrendResult):
        return [Measurement("p_adjusted_trend", tests["p_adjusted"].iloc[0], "1", result.factor),
                Measurement("rho_trend", result.rho, "1", result.factor)]
    gaps = result.gaps
    omnibus = tests[(tests["outcome"] == "value") & (tests["test"] != "dunn")]
    fisher = tests[tests["outcome"] == "failures"]
    rows = [
        Measurement("gap_worst_to_overall", _num(gaps["gap_worst_to_overall"]), unit,
                    result.factor),
        Measurement("gap_worst_to_best", _num(gaps["gap_worst_to_best"]), unit, result.factor),
        Measurement("p_adjusted", omnibus["p_adjusted"].iloc[0] if len(omnibus) else math.nan,
                    "1", result.factor),
        Measurement("n_groups_insufficient", float((~result.groups["sufficient"]).sum()),
                    "groups", result.factor),
    ]
    if not math.isnan(result.groups["failures"].iloc[0]):
        rows.append(Measurement("p_adjusted_failures", _failure_p(result, fisher), "1",
                                result.factor))
    return rows


def _failure_p(result: Any, fisher: pd.DataFrame) -> float:
    """Fisher's adjusted p; 1 when the tested groups have identical failure rates because
    no case or every case failed (Fisher's p is then exactly 1; the test is not run and not
    counted in the family); NaN when fewer than two groups could be tested."""
    if len(fisher):
        return float(fisher["p_adjusted"].iloc[0])
    tested = result.groups[result.groups["sufficient"]]
    if len(tested) < 2:
        return math.nan
    failures, cases = float(tested["failures"].sum()), float(tested["n"].sum())
    return 1.0 if failures in (0.0, cases) else math.nan


def _findings(result: Any, alpha: float) -> list[dict[str, Any]]:
    """Structured findings; the report turns them into sentences in its language."""
    from checks import bias

    if isinstance(result, bias.TrendResult):
        p_adj = float(result.tests["p_adjusted"].iloc[0])
        return [{"kind": "trend", "factor": result.factor, "rho": result.rho,
                 "ci_low": result.ci_low, "ci_high": result.ci_high, "n": result.n,
                 "n_missing": result.n_missing, "p_adjusted": p_adj,
                 "significant": bool(p_adj < alpha)}]
    tests = result.tests
    omnibus = tests[(tests["outcome"] == "value") & (tests["test"] != "dunn")]
    p_adj = float(omnibus["p_adjusted"].iloc[0]) if len(omnibus) else math.nan
    test = str(omnibus["test"].iloc[0]) if len(omnibus) else ""
    out = []
    worse = {"lower": 1.0, "higher": -1.0}.get(result.better)
    for row in result.groups.itertuples(index=False):
        if worse is None:  # better == "zero": worse = farther from zero than overall
            worse = math.copysign(1.0, result.overall["mean"]) if result.overall["mean"] else 1.0
        worse_ci = sorted((worse * row.diff_ci_low, worse * row.diff_ci_high))
        if not (worse_ci[0] > 0 or row.group == result.gaps["worst_group"]):
            continue
        if not row.sufficient:
            status = "insufficient"
        elif math.isnan(p_adj):
            status = "untested"
        else:
            status = "significant" if p_adj < alpha else "not_significant"
        out.append({"kind": "group", "factor": result.factor, "group": row.group, "n": row.n,
                    "diff": row.diff_to_overall, "ci_low": row.diff_ci_low,
                    "ci_high": row.diff_ci_high, "status": status, "test": test,
                    "p_adjusted": p_adj})
    return out


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)
