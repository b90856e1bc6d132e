"""The cohort check ``noise_dose``: noise and d′ versus CTDIvol per reconstruction, and the
dose reduction of each reconstruction against the reference one.

Input: the per-case measurements of the ``noise`` check (one case = one series at one dose
level; ``ctdivol_mgy``, ``noise_hu``, ``d_prime_<observer>[task]``, ``nps_f_av_per_mm``,
``slice_thickness_mm``) and the case attribute naming the reconstruction. Output, per
reconstruction (label): the fits σ = a·CTDIvol^(−b), d′ = a·CTDIvol^b with bootstrap
intervals, and for each non-reference reconstruction the dose reduction at iso-d′ (the
verdict) and at iso-noise (the optimistic bound), with a texture-shift warning when
iso-noise claims more than the iso-d′ interval allows (AAPM TG-233, doi:10.1002/mp.13763).
"""

from __future__ import annotations

import logging
import math
import zlib
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks._phantom import json_clean
from checks.base import CheckOutput, CohortCheck, CohortInput, Measurement, MetricInfo
from checks.noise import MIN_DOSE_LEVELS, PowerLawFit, dose_reduction, fit_power_law
from qa.errors import QAInputError

__all__ = ["NoiseDoseCheck", "NoiseDoseOptions"]

logger = logging.getLogger(__name__)


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class NoiseDoseOptions:
    """Options of ``noise_dose``.

    ``reference_reconstruction``: value of ``reconstruction_attribute`` for the reference
    (FBP or iterative); ``source_check``: id (or name) of the per-case ``noise`` check;
    ``task``: the d′ task label (may be omitted when the noise check has one task);
    ``observer``: ``npwe`` or ``npw``; ``reference_dose_mgy``: where the reduction is
    evaluated (default: the reference reconstruction's highest CTDIvol); bootstrap
    ``n_bootstrap``, ``seed``, ``confidence``.
    """

    reference_reconstruction: str = "FBP"
    reconstruction_attribute: str = "reconstruction"
    source_check: str = "noise"
    task: str | None = None
    observer: str = Field(default="npwe", pattern="^(npwe|npw)$")
    reference_dose_mgy: float | None = Field(default=None, gt=0)
    n_bootstrap: int = Field(default=2000, ge=100)
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0, lt=1)


class NoiseDoseCheck(CohortCheck):
    """Noise and detectability versus dose, dose reduction at iso-d′ and iso-noise."""

    name: ClassVar[str] = "noise_dose"
    title: ClassVar[str] = "Noise and detectability versus dose; dose reduction"
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "noise_b": MetricInfo("1", "b of σ = a·CTDIvol^(−b) (label: reconstruction)", "higher"),
        "noise_a_hu": MetricInfo("HU", "σ at 1 mGy from the fit (label: reconstruction)"),
        "dprime_b": MetricInfo("1", "b of d′ = a·CTDIvol^b (label: reconstruction)", "higher"),
        "dprime_a": MetricInfo("1", "d′ at 1 mGy from the fit (label: reconstruction)",
                               "higher"),
        "dose_reduction_iso_dprime_percent": MetricInfo(
            "%", "dose reduction at equal d′ vs the reference (verdict)", "higher"),
        "dose_reduction_iso_dprime_ci_lower_percent": MetricInfo(
            "%", "lower confidence bound of the iso-d′ dose reduction", "higher"),
        "dose_reduction_iso_dprime_ci_upper_percent": MetricInfo(
            "%", "upper confidence bound of the iso-d′ dose reduction", "higher"),
        "dose_reduction_iso_noise_percent": MetricInfo(
            "%", "dose reduction at equal σ (optimistic bound, ignores texture)", "higher"),
        "dose_reduction_iso_noise_ci_lower_percent": MetricInfo(
            "%", "lower confidence bound of the iso-noise dose reduction", "higher"),
        "dose_reduction_iso_noise_ci_upper_percent": MetricInfo(
            "%", "upper confidence bound of the iso-noise dose reduction", "higher"),
        "texture_shift_warning": MetricInfo(
            "1", "1 when iso-noise exceeds the iso-d′ upper bound (texture shift)", "lower"),
    }
    Options: ClassVar[type] = NoiseDoseOptions

    def run_cohort(self, data: CohortInput) -> CheckOutput:
        """Fits and dose reductions from the run's ``noise`` measurements.

        Raises :class:`qa.errors.QAInputError` when the reconstruction attribute is missing,
        the reference reconstruction is absent, a reconstruction has fewer than three dose
        levels, a CTDIvol is missing, or the slice thickness differs within a
        reconstruction.
        """
        opts = self.options
        table = self._table(data)
        recons = sorted(table["reconstruction"].unique())
        if opts.reference_reconstruction not in recons:
            raise QAInputError(
                f"reference_reconstruction {opts.reference_reconstruction!r} has no case; the "
                f"cases have {opts.reconstruction_attribute} = {', '.join(recons)}.",
                check=self.name, field="reference_reconstruction")
        noise_fits: dict[str, PowerLawFit] = {}
        dprime_fits: dict[str, PowerLawFit] = {}
        for recon in recons:
            part = table[table["reconstruction"] == recon]
            self._require_consistent(recon, part)
            rng_noise, rng_dprime = _rngs(opts.seed, recon)
            try:
                noise_fits[recon] = fit_power_law(
                    part["ctdivol_mgy"], part["noise_hu"], rng=rng_noise,
                    n_bootstrap=opts.n_bootstrap, confidence=opts.confidence,
                    what=f"noise ({recon})")
                dprime_fits[recon] = fit_power_law(
                    part["ctdivol_mgy"], part["d_prime"], rng=rng_dprime,
                    n_bootstrap=opts.n_bootstrap, confidence=opts.confidence,
                    what=f"d′ ({recon})")
            except ValueError as exc:
                raise QAInputError(f"reconstruction {recon!r}: {exc}", check=self.name) \
                    from exc
        ref = opts.reference_reconstruction
        ref_dose = (opts.reference_dose_mgy if opts.reference_dose_mgy is not None
                    else float(table.loc[table["reconstruction"] == ref, "ctdivol_mgy"].max()))
        rows: list[Measurement] = []
        for recon in recons:
            nf, df = noise_fits[recon], dprime_fits[recon]
            rows += [Measurement("noise_b", -nf.exponent, "1", recon),
                     Measurement("noise_a_hu", nf.a, "HU", recon),
                     Measurement("dprime_b", df.exponent, "1", recon),
                     Measurement("dprime_a", df.a, "1", recon)]
        reductions: dict[str, dict[str, Any]] = {}
        warnings: list[str] = []
        for recon in recons:
            if recon == ref:
                continue
            flat = [(what, name) for name in (ref, recon)
                    for what, fit, sign in (("d′", dprime_fits[name], 1),
                                            ("noise", noise_fits[name], -1))
                    if not (sign * fit.exponent_ci[0] > 0 and sign * fit.exponent_ci[1] > 0)]
            if flat:
                listed = ", ".join(f"{what} of {name}" for what, name in flat)
                warnings.append(
                    f"{recon}: no dose reduction computed: {listed} does not change "
                    "monotonically with CTDIvol (the exponent's interval includes 0 or has "
                    "the wrong sign), so no equal-d′ or equal-noise dose exists.")
                rows += [Measurement(metric, math.nan, "%", recon) for metric in self.metrics
                         if metric.startswith("dose_reduction_")]
                rows.append(Measurement("texture_shift_warning", math.nan, "1", recon))
                reductions[recon] = {"not_computed": [list(pair) for pair in flat]}
                continue
            iso_d = dose_reduction(dprime_fits[ref], dprime_fits[recon], ref_dose,
                                   criterion="iso_dprime")
            iso_n = dose_reduction(noise_fits[ref], noise_fits[recon], ref_dose,
                                   criterion="iso_noise")
            shift = iso_n.reduction_percent > iso_d.ci_percent[1]
            for key, red in (("iso_dprime", iso_d), ("iso_noise", iso_n)):
                rows += [
                    Measurement(f"dose_reduction_{key}_percent", red.reduction_percent, "%",
                                recon),
                    Measurement(f"dose_reduction_{key}_ci_lower_percent", red.ci_percent[0],
                                "%", recon),
                    Measurement(f"dose_reduction_{key}_ci_upper_percent", red.ci_percent[1],
                                "%", recon)]
            rows.append(Measurement("texture_shift_warning", float(shift), "1", recon))
            if shift:
                warnings.append(
                    f"{recon}: iso-noise claims a {iso_n.reduction_percent:.0f} % dose "
                    f"reduction but iso-d′ supports {iso_d.reduction_percent:.0f} % "
                    f"({iso_d.ci_percent[0]:.0f} to {iso_d.ci_percent[1]:.0f} %): the noise "
                    "texture changed (NPS shifted); use the iso-d′ figure.")
            reductions[recon] = {"iso_dprime": _reduction_dict(iso_d),
                                 "iso_noise": _reduction_dict(iso_n),
                                 "texture_shift": bool(shift)}
        for note in warnings:
            logger.warning("noise_dose: %s", note)
        details = json_clean({
            "reference_reconstruction": ref, "reference_dose_mgy": ref_dose,
            "task": self._task_used, "observer": opts.observer,
            "confidence": opts.confidence, "n_bootstrap": opts.n_bootstrap, "seed": opts.seed,
            "points": {recon: table[table["reconstruction"] == recon][
                ["case_id", "ctdivol_mgy", "noise_hu", "d_prime", "nps_f_av_per_mm"]
            ].to_dict(orient="list") for recon in recons},
            "fits": {recon: {"noise": _fit_dict(noise_fits[recon]),
                             "dprime": _fit_dict(dprime_fits[recon])} for recon in recons},
            "dose_reductions": reductions,
            "warnings": warnings,
        })
        return CheckOutput(measurements=tuple(rows), details=details)

    # -- helpers ---------------------------------------------------------------------------

    def _table(self, data: CohortInput) -> pd.DataFrame:
        """One row per case: reconstruction, ctdivol_mgy, noise_hu, d_prime, f_av, slice."""
        opts = self.options
        meas = pd.DataFrame(data.measurements)
        if meas.empty:
            raise QAInputError("no per-case measurement to fit: run the noise check on the "
                               "cases first.", check=self.name)
        meas = meas[(meas["check"] == opts.source_check)
                    | (meas.get("check_id", meas["check"]) == opts.source_check)]
        if meas.empty:
            raise QAInputError(f"no measurement of check {opts.source_check!r} in this run; "
                               "set source_check to the id of the noise check.",
                               check=self.name, field="source_check")
        metric = f"d_prime_{opts.observer}"
        tasks = sorted(meas.loc[meas["metric"] == metric, "label"].unique())
        task = opts.task
        if task is None:
            if len(tasks) != 1:
                raise QAInputError(f"the noise check has {len(tasks)} d′ tasks "
                                   f"({', '.join(tasks) or 'none'}); set task to one of them.",
                                   check=self.name, field="task")
            task = tasks[0]
        elif task not in tasks:
            raise QAInputError(f"task {task!r} has no {metric} measurement; the noise check "
                               f"measured: {', '.join(tasks) or 'none'}.", check=self.name,
                               field="task")
        self._task_used = task
        overall = meas[meas["label"].fillna("") == ""]
        wide = overall.pivot_table(index="case_id", columns="metric", values="value",
                                   aggfunc="first")
        wide["d_prime"] = meas[(meas["metric"] == metric) & (meas["label"] == task)] \
            .set_index("case_id")["value"]
        for column in ("ctdivol_mgy", "noise_hu", "nps_f_av_per_mm", "slice_thickness_mm"):
            if column not in wide:
                wide[column] = math.nan
        cases = pd.DataFrame(data.cases)
        if "ctdivol_mgy" in cases:  # case-table attribute fills what the DICOM lacked
            table_dose = pd.to_numeric(cases.set_index("case_id")["ctdivol_mgy"],
                                       errors="coerce").reindex(wide.index)
            wide["ctdivol_mgy"] = wide["ctdivol_mgy"].astype(float).fillna(table_dose)
        missing = wide.index[~np.isfinite(wide["ctdivol_mgy"].astype(float))].tolist()
        if missing:
            raise QAInputError(f"CTDIvol is missing for case(s) {', '.join(map(str, missing))}"
                               ": neither the DICOM (0018,9345) nor a ctdivol_mgy attribute "
                               "of the case table gives it; add the column.",
                               check=self.name, field="ctdivol_mgy")
        attr = opts.reconstruction_attribute
        if attr not in cases:
            raise QAInputError(f"the case table has no {attr!r} column: declare it as an "
                               "attribute naming each series' reconstruction (e.g. FBP, DL).",
                               check=self.name, field=attr)
        recon = cases.set_index("case_id")[attr]
        wide["reconstruction"] = recon.reindex(wide.index).astype("string")
        blank = wide.index[wide["reconstruction"].isna()].tolist()
        if blank:
            raise QAInputError(f"case(s) {', '.join(map(str, blank))} have no {attr}; fill "
                               "the column.", check=self.name, field=attr)
        wide["reconstruction"] = wide["reconstruction"].astype(str)
        return wide.reset_index()

    def _require_consistent(self, recon: str, part: pd.DataFrame) -> None:
        levels = np.unique(part["ctdivol_mgy"].astype(float))
        if levels.size < MIN_DOSE_LEVELS:
            raise QAInputError(
                f"reconstruction {recon!r} has {levels.size} dose level(s) "
                f"({', '.join(f'{d:g}' for d in levels)} mGy); a noise-dose curve needs at "
                f"least {MIN_DOSE_LEVELS}: scan the phantom at more CTDIvol levels.",
                check=self.name)
        thick = part["slice_thickness_mm"].astype(float)
        thick = np.unique(thick[np.isfinite(thick)].round(3))
        if thick.size > 1:
            raise QAInputError(
                f"reconstruction {recon!r} mixes slice thicknesses "
                f"({', '.join(f'{t:g}' for t in thick)} mm); noise depends on thickness: "
                "compare series of one thickness.", check=self.name)


def _rngs(seed: int, recon: str) -> tuple[np.random.Generator, np.random.Generator]:
    """Two generators that depend on the seed and the reconstruction name only."""
    seq = np.random.SeedSequence([int(seed), zlib.crc32(recon.encode())])
    a, b = seq.spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def _fit_dict(fit: PowerLawFit) -> dict[str, Any]:
    return {"a": fit.a, "exponent": fit.exponent, "a_ci": list(fit.a_ci),
            "exponent_ci": list(fit.exponent_ci), "r_squared": fit.r_squared,
            "n_levels": fit.n_levels, "n_points": fit.n_points}


def _reduction_dict(red) -> dict[str, Any]:
    return {"reduction_percent": red.reduction_percent, "ci_percent": list(red.ci_percent),
            "evaluated_dose_mgy": red.evaluated_dose_mgy, "target_value": red.target_value}
