"""Specification of the cohort check ``noise_dose`` (CohortInput built directly)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from checks.base import CohortInput
from checks.noise_check import NoiseCheck, NoiseOptions
from checks.noise_dose import NoiseDoseCheck, NoiseDoseOptions
from checks.registry import get_check
from qa.errors import QAInputError
from tests.checks._noise_phantom import NOISE_OPTIONS, fbp_stack, smoothed, volume

DOSES = (1.0, 2.0, 4.0, 8.0, 12.6, 16.0)
TASK = "lc_10hu_5mm"


def synthetic_input(curves, *, repeats=3, jitter=0.02, seed=0, thickness=None):
    """Per-case rows of the noise check from exact power laws with a small lognormal jitter.

    ``curves``: recon -> (sigma_a, sigma_b, dprime_a, dprime_b).
    """
    rng = np.random.default_rng(seed)
    meas, cases = [], []
    for recon, (sa, sb, da, db) in curves.items():
        for dose in DOSES:
            for k in range(repeats):
                case = f"{recon}-{dose:g}-{k}"
                cases.append({"case_id": case, "reconstruction": recon})
                noise = sa * dose**-sb * np.exp(rng.normal(0, jitter))
                dprime = da * dose**db * np.exp(rng.normal(0, jitter))
                st = (thickness or {}).get(case, 5.0)
                for metric, value, label in (("ctdivol_mgy", dose, ""), ("noise_hu", noise, ""),
                                             ("slice_thickness_mm", st, ""),
                                             ("nps_f_av_per_mm", 0.3, ""),
                                             ("d_prime_npwe", dprime, TASK),
                                             ("d_prime_npw", 2 * dprime, TASK)):
                    meas.append({"case_id": case, "check_id": "noise", "check": "noise",
                                 "metric": metric, "label": label, "value": value, "unit": ""})
    return CohortInput(measurements=pd.DataFrame(meas), cases=pd.DataFrame(cases),
                       verdicts=pd.DataFrame())


def rows(out):
    return {(m.metric, m.label): m.value for m in out.measurements}


def test_registered_as_a_cohort_check():
    assert get_check("noise_dose") is NoiseDoseCheck
    assert NoiseDoseCheck.scope == "cohort"


def test_dose_reductions_of_known_power_laws_and_the_texture_warning():
    # DL: σ three times lower (iso-noise: 1 - (1/3)^2 = 88.9 %) but d' only 1.5 times higher
    # (iso-d': 1 - 1/1.5^2 = 55.6 %): the optimistic iso-noise figure must be flagged.
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.5)})
    out = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=500)).run_cohort(data)
    r = rows(out)
    assert r[("noise_b", "FBP")] == pytest.approx(0.5, abs=0.02)
    assert r[("dprime_b", "DL")] == pytest.approx(0.5, abs=0.02)
    iso_d = r[("dose_reduction_iso_dprime_percent", "DL")]
    iso_n = r[("dose_reduction_iso_noise_percent", "DL")]
    assert iso_d == pytest.approx(100 * (1 - 1 / 1.5**2), abs=2.0)
    assert iso_n == pytest.approx(100 * (1 - 1 / 9), abs=1.0)
    assert (r[("dose_reduction_iso_dprime_ci_lower_percent", "DL")] < 100 * (1 - 1 / 2.25)
            < r[("dose_reduction_iso_dprime_ci_upper_percent", "DL")])
    assert r[("texture_shift_warning", "DL")] == 1.0
    assert ("dose_reduction_iso_dprime_percent", "FBP") not in r
    assert "texture changed" in out.details["warnings"][0]
    assert out.details["reference_dose_mgy"] == 16.0
    assert out.details["task"] == TASK


def test_no_warning_when_noise_and_dprime_agree():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "IR": (20.0, 0.5, 1.5, 0.5)})
    r = rows(NoiseDoseCheck(NoiseDoseOptions(reference_dose_mgy=12.6, n_bootstrap=500))
             .run_cohort(data))
    assert r[("dose_reduction_iso_noise_percent", "IR")] == pytest.approx(55.6, abs=2.0)
    assert r[("texture_shift_warning", "IR")] == 0.0


def test_a_flat_dprime_curve_gives_no_reduction_and_says_why():
    # DL d' does not depend on dose: no iso-d' dose exists, a number would be invented
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.0)})
    out = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=300)).run_cohort(data)
    r = rows(out)
    assert np.isnan(r[("dose_reduction_iso_dprime_percent", "DL")])
    assert np.isnan(r[("dose_reduction_iso_noise_percent", "DL")])
    assert "no dose reduction computed: d′ of DL does not change monotonically" in \
        out.details["warnings"][0]
    assert out.details["dose_reductions"]["DL"] == {"not_computed": [["d′", "DL"]]}


def test_results_are_reproducible_with_the_seed():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.5)})
    a = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=200, seed=4)).run_cohort(data)
    b = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=200, seed=4)).run_cohort(data)
    assert a.measurements == b.measurements


def test_a_single_dose_level_is_refused_with_the_levels():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.5)})
    keep = data.measurements["case_id"].str.contains("-4-")
    thin = CohortInput(data.measurements[keep], data.cases, data.verdicts)
    with pytest.raises(QAInputError, match=r"reconstruction 'DL' has 1 dose level\(s\) \(4 mGy\); "
                                           "a noise-dose curve needs at least 3"):
        NoiseDoseCheck().run_cohort(thin)


def test_missing_reconstruction_column_is_explained():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5)})
    no_attr = CohortInput(data.measurements, data.cases[["case_id"]], data.verdicts)
    with pytest.raises(QAInputError, match="the case table has no 'reconstruction' column"):
        NoiseDoseCheck().run_cohort(no_attr)


def test_missing_reference_reconstruction_lists_what_exists():
    data = synthetic_input({"IR": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.5)})
    with pytest.raises(QAInputError, match="reference_reconstruction 'FBP' has no case; the cases "
                                           "have reconstruction = DL, IR"):
        NoiseDoseCheck().run_cohort(data)


def test_mixed_slice_thickness_within_a_reconstruction_is_refused():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5)}, thickness={"FBP-2-1": 2.5})
    with pytest.raises(QAInputError, match=r"'FBP' mixes slice thicknesses \(2.5, 5 mm\)"):
        NoiseDoseCheck().run_cohort(data)


def test_missing_ctdivol_names_the_case():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5)})
    meas = data.measurements
    meas = meas[~((meas.case_id == "FBP-8-0") & (meas.metric == "ctdivol_mgy"))]
    with pytest.raises(QAInputError, match="CTDIvol is missing for case\\(s\\) FBP-8-0: "
                                           "neither the DICOM"):
        NoiseDoseCheck().run_cohort(CohortInput(meas, data.cases, data.verdicts))
    # the case table's ctdivol_mgy attribute fills the gap
    cases = data.cases.assign(ctdivol_mgy=[float(c.split("-")[1]) for c in data.cases.case_id])
    out = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=100)).run_cohort(
        CohortInput(meas, cases, data.verdicts))
    assert rows(out)[("noise_b", "FBP")] == pytest.approx(0.5, abs=0.02)


def test_several_tasks_need_a_choice():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5)})
    extra = data.measurements[data.measurements.metric == "d_prime_npwe"].assign(label="big")
    both = CohortInput(pd.concat([data.measurements, extra]), data.cases, data.verdicts)
    with pytest.raises(QAInputError, match="2 d′ tasks \\(big, lc_10hu_5mm\\); set task"):
        NoiseDoseCheck().run_cohort(both)


@pytest.mark.slow
def test_simulated_fbp_has_b_near_one_half_and_smoothing_is_flagged():
    """End to end on the acquisition simulator: FBP quantum noise gives b ≈ 0.5; a smoothing
    'DL' lowers σ more than it raises d′, so iso-noise overstates the reduction."""
    check = NoiseCheck(NoiseOptions(**NOISE_OPTIONS))
    meas, cases = [], []
    for dose in DOSES:
        for repeat in range(2):
            stack = fbp_stack(dose, 100 + repeat, 2)
            for recon, images in (("FBP", stack), ("DL", smoothed(stack))):
                case = f"{recon}-{dose:g}-{repeat}"
                cases.append({"case_id": case, "reconstruction": recon})
                out = check.run({"image": volume(images, dose)})
                meas += [{"case_id": case, "check_id": "noise", "check": "noise",
                          "metric": m.metric, "label": m.label, "value": m.value,
                          "unit": m.unit} for m in out.measurements]
    data = CohortInput(pd.DataFrame(meas), pd.DataFrame(cases), pd.DataFrame())
    out = NoiseDoseCheck(NoiseDoseOptions(reference_dose_mgy=12.6, n_bootstrap=300)
                         ).run_cohort(data)
    r = rows(out)
    assert r[("noise_b", "FBP")] == pytest.approx(0.5, abs=0.03)
    assert r[("dose_reduction_iso_noise_percent", "DL")] > \
        r[("dose_reduction_iso_dprime_ci_upper_percent", "DL")]
    assert r[("texture_shift_warning", "DL")] == 1.0
