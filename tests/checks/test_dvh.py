"""DVH metrics and differences: analytic doses, partial volume, SynthRAD high-dose MAE."""

from __future__ import annotations

import numpy as np
import pytest

from checks.dvh import (
    DVHInputError,
    cumulative_dvh,
    dvh_differences,
    dvh_metrics,
    high_dose_mae,
    structure_weights,
)
from checks.registry import get_check
from qa.volume import Volume

SPACING = (2.0, 2.0, 2.0)  # 8 mm3 voxels = 0.008 cc


def _ramp_dose(shape=(100, 1, 1)):
    """Dose 1, 2, ..., 100 Gy along z: one voxel per Gy."""
    return Volume(np.arange(1.0, shape[0] + 1).reshape(shape), SPACING)


def _all(vol):
    return vol.with_array(np.ones(vol.shape, bool))


def test_dx_on_a_ramp_are_the_voxel_doses_counted_from_the_hottest():
    dose = _ramp_dose()
    m = dvh_metrics(dose, np.ones(dose.shape), "ptv")
    # hottest 2 % = voxels 100, 99 -> D2 = 99; 50 % -> 51; 95 % -> 6; 98 % -> 3
    assert m.d_gy == {"d98": 3.0, "d95": 6.0, "d50": 51.0, "d2": 99.0}
    assert m.dmean_gy == pytest.approx(50.5)
    assert m.dmax_gy == 100.0
    # 0.03 cc = 3.75 voxels of 0.008 cc: the 4th hottest voxel
    assert m.d0_03cc_gy == 97.0
    assert m.volume_cc == pytest.approx(0.8)


def test_vx_and_the_cumulative_dvh_agree_with_counting():
    dose = _ramp_dose()
    m = dvh_metrics(dose, np.ones(dose.shape), "ptv", v_levels_gy=(20.0, 95.5))
    assert m.v_percent == {"v20gy": 81.0, "v95.5gy": 5.0}
    levels, volume = cumulative_dvh(dose.array, np.ones(dose.shape), 0.008, bin_width_gy=10.0)
    assert volume[0] == 100.0 and volume[-1] == 0.0
    assert volume[levels.tolist().index(50.0)] == 51.0  # doses 50..100


def test_uniform_scaling_gives_proportional_differences_in_percent_of_rx():
    dose = _ramp_dose()
    (d,) = dvh_differences(dose, dose.with_array(dose.array * 1.02), {"ptv": _all(dose)},
                           prescription_gy=50.0)
    assert d.diff_gy["d50"] == pytest.approx(0.02 * 51.0)
    assert d.diff_percent_rx["dmean"] == pytest.approx(100 * 0.02 * 50.5 / 50.0)


def test_a_mask_on_another_grid_is_weighted_by_the_fraction_of_each_voxel():
    dose = Volume(np.ones((4, 4, 4)), (2.0, 2.0, 2.0))
    fine = np.zeros((8, 8, 8), bool)
    fine[:, :, :4] = True  # left half of the volume at 1 mm
    mask = Volume(fine, (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    w = structure_weights(mask, dose)
    assert w.sum() == pytest.approx(32.0, abs=2.0)  # half the 64 voxels
    assert set(np.round(np.unique(w), 3)) <= {0.0, 0.5, 1.0}


def test_high_dose_mae_is_synthrad_mean_abs_over_voxels_above_90_percent_rx():
    dose = _ramp_dose()
    ev = dose.with_array(dose.array + 1.0)
    mae, n = high_dose_mae(dose, ev, prescription_gy=100.0)
    assert n == 11 and mae == pytest.approx(1.0)  # doses 90..100; 1 Gy / 100 Gy


def test_bad_input_names_the_structure_or_option():
    dose = _ramp_dose()
    with pytest.raises(DVHInputError, match="structure 'rectum' is empty on the dose grid"):
        structure_weights(dose.with_array(np.zeros(dose.shape, bool)), dose, "rectum")
    with pytest.raises(DVHInputError, match="prescription_gy must be > 0 Gy"):
        high_dose_mae(dose, dose, prescription_gy=0)
    with pytest.raises(DVHInputError, match="evaluated dose has negative values"):
        high_dose_mae(dose, dose.with_array(-dose.array), prescription_gy=60)


def test_the_check_gives_rows_per_structure_and_curves():
    cls = get_check("dvh")
    dose = _ramp_dose()
    out = cls(cls.Options(prescription_gy=50.0, v_levels_gy=(20.0,))).run(
        {"reference": dose, "evaluated": dose.with_array(dose.array * 1.06),
         "structures": {"ptv": _all(dose)}})
    rows = {(m.metric, m.label): m.value for m in out.measurements}
    assert rows["d50_diff_gy", "ptv"] == pytest.approx(0.06 * 51)
    assert rows["v_diff_percent", "ptv@20gy"] == pytest.approx(1.0)  # 19 Gy x 1.06 >= 20
    # voxels >= 45 Gy (56 of them) differ by 6 % of their dose: mean 0.06 x 72.5 / 50
    assert rows["dose_mae_percent_rx", ""] == pytest.approx(100 * 0.06 * 72.5 / 50)
    curve = out.details["dvh_curves"]["ptv"]
    assert curve["reference_percent"][0] == 100.0
    assert len(curve["dose_gy"]) == len(curve["evaluated_percent"])
    with pytest.raises(ValueError, match="prescription_gy"):
        cls.Options()


def test_a_structure_that_cannot_be_evaluated_gets_nan_rows_and_a_problem_the_others_values():
    cls = get_check("dvh")
    dose = _ramp_dose()
    empty = dose.with_array(np.zeros(dose.shape, bool))
    labels = dose.with_array(np.full(dose.shape, 2, np.uint8))
    out = cls(cls.Options(prescription_gy=50.0, v_levels_gy=(20.0,))).run(
        {"reference": dose, "evaluated": dose, "structures": {
            "ptv": _all(dose), "rectum": empty, "body": labels}})
    rows = {(m.metric, m.label): m.value for m in out.measurements}
    assert rows["dmean_diff_gy", "ptv"] == 0.0
    for name in ("rectum", "body"):
        assert np.isnan(rows["dmean_diff_gy", name])
        assert np.isnan(rows["d0_03cc_diff_percent_rx", name])
        assert np.isnan(rows["v_diff_percent", f"{name}@20gy"])
    assert {label for (_m, label) in rows} == {"", "ptv", "rectum", "body", "ptv@20gy",
                                               "rectum@20gy", "body@20gy"}
    assert out.details["not_evaluated"] == ["rectum", "body"]
    assert set(out.details["dvh_curves"]) == {"ptv"}
    assert [(p.check, p.field) for p in out.problems] == [("dvh", "rectum"), ("dvh", "body")]
    assert out.problems[0].message == (
        "input 'structures': structure 'rectum' is empty on the dose grid (no voxel inside); "
        "check the contour and that the dose grid covers it. (not evaluated on this case; the "
        "other structures are)")
    assert "structure 'body' is not a boolean mask" in out.problems[1].message


_GROUPED_PROTOCOL = """\
name: sCT dose DVH — test
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: dose_sct}
cases: cases.csv
roles:
  structures: {kind: structures, members: [ptv, rectum]}
checks:
  - check: dvh
    reference: dose_ct
    evaluated: dose_sct
    structures: structures
    options: {prescription_gy: 60}
    tolerances:
      "dmean_diff_percent_rx[ptv]": {tolerance: {min: -2, max: 2}, action: {min: -3, max: 3}}
"""


def _grouped_cohort(folder, cases):
    """Dose ramp 6..60 Gy along z, PTV and rectum masks as separate files (grouped in the
    protocol); ``cases``: case id -> (evaluated dose factor, rectum mask or None)."""
    from qa.io import write_nifti

    dose = Volume(np.broadcast_to(np.arange(1.0, 11.0)[:, None, None] * 6, (10, 6, 6)).copy(),
                  SPACING)
    ptv = np.zeros(dose.shape, bool)
    ptv[4:9, 1:5, 1:5] = True
    lines = ["case_id,dose_ct,dose_sct,ptv,rectum"]
    for case_id, (k, rectum) in cases.items():
        if rectum is None:
            rectum = np.zeros(dose.shape, bool)
            rectum[0:3, 2:4, 2:4] = True
        (folder / case_id).mkdir()
        write_nifti(dose, folder / case_id / "dose_ct.nii.gz")
        write_nifti(dose.with_array(dose.array * k), folder / case_id / "dose_sct.nii.gz")
        write_nifti(dose.with_array(ptv), folder / case_id / "ptv.nii.gz")
        write_nifti(dose.with_array(rectum), folder / case_id / "rectum.nii.gz")
        lines.append(f"{case_id},{case_id}/dose_ct.nii.gz,{case_id}/dose_sct.nii.gz,"
                     f"{case_id}/ptv.nii.gz,{case_id}/rectum.nii.gz")
    (folder / "cases.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "protocol.yaml").write_text(_GROUPED_PROTOCOL, encoding="utf-8")
    return folder / "protocol.yaml"


def test_a_protocol_run_with_grouped_mask_roles_stores_rows_and_renders_both_languages(
        tmp_path):
    from pathlib import Path

    from qa.runner import run_protocol
    from qa.store import Store
    from reports.html import render_run_report

    protocol = _grouped_cohort(tmp_path, {"A": (1.0, None), "B": (1.03, None)})
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        assert store.errors(outcome.run_id).empty
        m = store.measurements(outcome.run_id)
        dmean = m[(m.metric == "dmean_diff_percent_rx") & (m.label == "ptv")]
        # ptv doses 30..54 Gy, mean 42 Gy; x 1.03 -> +1.26 Gy = 2.1 % of 60 Gy
        assert dmean.set_index("case_id")["value"].to_dict() == pytest.approx(
            {"A": 0.0, "B": 2.1})
        levels = store.verdicts(outcome.run_id).set_index("case_id")["level"].to_dict()
        assert levels == {"A": "OK", "B": "TOLERANCE"}
        for language, title in (("en", "Dose agreement: DVH differences"),
                                ("fr", "Concordance de dose : écarts")):
            html = render_run_report(store, outcome.run_id, tmp_path / f"{language}.html",
                                     language=language)
            page = Path(html).read_text(encoding="utf-8")
            assert title in page and "data:image/png" in page


def test_an_empty_or_unreadable_member_mask_is_an_error_of_its_file_and_the_ptv_is_graded(
        tmp_path):
    from qa.runner import run_protocol
    from qa.store import Store
    from reports.html import render_run_report

    empty = np.zeros((10, 6, 6), bool)
    protocol = _grouped_cohort(tmp_path, {"A": (1.0, None), "B": (1.03, empty),
                                          "C": (1.0, None)})
    (tmp_path / "C" / "rectum.nii.gz").write_bytes(b"not a NIfTI file")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        m = store.measurements(outcome.run_id)
        errors = store.errors(outcome.run_id).set_index("case_id")
        cases = store.cases(outcome.run_id).set_index("case_id").status.to_dict()
        levels = store.verdicts(outcome.run_id).set_index("case_id")["level"].to_dict()
        page = render_run_report(store, outcome.run_id, tmp_path / "r.html").read_text(
            encoding="utf-8")
    dmean = m[m.metric == "dmean_diff_percent_rx"].set_index(["case_id", "label"]).value
    assert dmean[("B", "ptv")] == pytest.approx(2.1) and np.isnan(dmean[("B", "rectum")])
    assert dmean[("C", "ptv")] == 0.0 and np.isnan(dmean[("C", "rectum")])
    assert levels == {"A": "OK", "B": "TOLERANCE", "C": "OK"}
    assert cases == {"A": "ok", "B": "error", "C": "error"}
    for case_id in ("B", "C"):
        error = errors.loc[case_id]
        assert (error.check_id, error.role) == ("dvh", "rectum")
        assert str(error.path).endswith(f"{case_id}/rectum.nii.gz")
    assert errors.loc["B"].field == "rectum"
    assert "structure 'rectum' is empty on the dose grid" in errors.loc["B"].message
    assert errors.loc["C"].message.startswith("structure 'rectum': ")
    assert "structure &#39;rectum&#39; is empty on the dose grid" in page  # in the error table
    table = page[page.index('class="dvh-diff"'):]
    assert "Not evaluated (input error)" in table
    assert '<td>rectum</td><td class="num">1</td><td class="num">2</td>' in table
