"""The engine's ``gamma`` check: rows, details, options, and a full run with known answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from checks.base import Measurement
from checks.registry import get_check
from qa.errors import QAInputError
from qa.exitcodes import ExitCode
from qa.io import write_nifti
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import Volume
from reports.html import render_run_report

SPACING = (3.0, 2.5, 2.5)


def _dose(value=50.0, shape=(6, 8, 8)):
    return Volume(np.full(shape, value), SPACING, (0.0, -10.0, -10.0))


def test_the_check_is_registered_with_dose_slots_and_tg218_defaults():
    cls = get_check("gamma")
    assert {n: s.kind for n, s in cls.slots.items()} == {
        "reference": "dose", "evaluated": "dose", "mask": "mask", "ct": "image"}
    opts = cls.Options()
    assert opts.criteria == ("3%/2mm", "2%/2mm")
    assert (opts.lower_cutoff_percent, opts.local, opts.max_gamma) == (10.0, False, 2.0)


def test_run_gives_pass_rates_labelled_by_criterion_and_json_details():
    cls = get_check("gamma")
    ref = _dose()
    # uniform x 1.015: gamma = 0.015 / 0.03 = 0.5 at 3 %, 0.75 at 2 %
    out = cls().run({"reference": ref, "evaluated": ref.with_array(ref.array * 1.015)})
    rows = {(m.metric, m.label): m for m in out.measurements}
    assert rows["pass_rate_percent", "3%/2mm"] == Measurement("pass_rate_percent", 100.0, "%",
                                                              "3%/2mm")
    assert rows["mean_gamma", "3%/2mm"].value == pytest.approx(0.5, abs=1e-9)
    assert rows["mean_gamma", "2%/2mm"].value == pytest.approx(0.75, abs=1e-9)
    assert rows["n_evaluated", ""].value == ref.array.size
    json.dumps(out.details)
    hist = out.details["gamma_histograms"]["3%/2mm"]
    assert sum(hist["counts"]) == ref.array.size
    assert out.details["settings"]["pass"] == "gamma <= 1"
    assert (out.details["settings"]["backend"], out.details["settings"]["device"]) == (
        "numba", "cpu")  # auto on a machine without CUDA: the certified kernel
    assert len(out.details["gamma_map_slice"]["gamma"]) == ref.shape[1]
    assert "ct_grey" not in out.details["gamma_map_slice"]  # no CT bound


def test_the_map_slice_holds_the_most_failing_slice_and_the_ct_sampled_in_physical_space():
    cls = get_check("gamma")
    ref = _dose(shape=(6, 100, 90))
    ev_arr = ref.array.copy()
    ev_arr[4, 10:20, 10:30] *= 1.10  # slice 4 fails (gamma 3.3 at 3 %), the rest passes
    # CT on its own finer grid, a quarter-voxel off: HU = 10 x its patient y coordinate (mm)
    ct_spacing, ct_origin = (1.5, 1.25, 1.25), (-1.0, -11.0, -11.0)
    zz, yy, xx = np.meshgrid(*[o + s * np.arange(n) for o, s, n in
                               zip(ct_origin, ct_spacing, (14, 210, 190), strict=True)],
                             indexing="ij")
    ct = Volume(10.0 * yy, ct_spacing, ct_origin)
    out = cls().run({"reference": ref, "evaluated": ref.with_array(ev_arr), "ct": ct})
    stored = out.details["gamma_map_slice"]
    assert (stored["z_index"], stored["slice_rule"], stored["z_mm"]) == (4, "most_failing", 12.0)
    assert stored["step"] == 2 and stored["pixel_mm"] == [5.0, 5.0]  # 100 x 90 -> 50 x 45
    gamma = np.array(stored["gamma"], dtype=float)
    assert gamma.shape == (50, 45) and gamma[7, 10] > 1.0 and gamma[40, 40] == 0.0
    grey = np.array(stored["ct_grey"])
    assert grey.shape == gamma.shape and stored["orientation_lps"] is True
    # pixel row r sits at y = -10 + 5 r mm: HU = 10 y, windowed over -400..600 HU
    y_mm = -10.0 + 5.0 * np.arange(50)
    expected = np.clip((10.0 * y_mm + 400.0) / 1000.0 * 255.0, 0, 255).round()
    np.testing.assert_array_equal(grey[:, 7], expected)
    json.dumps(out.details)


def test_the_protocol_may_pin_the_search_backend():
    cls = get_check("gamma")
    ref = _dose()
    ev = ref.with_array(ref.array * 1.015)
    pinned = cls(cls.Options(backend="torch")).run({"reference": ref, "evaluated": ev})
    assert pinned.details["settings"]["backend"] == "torch"
    rows = {(m.metric, m.label): m.value for m in pinned.measurements}
    assert rows["mean_gamma", "3%/2mm"] == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(ValueError, match="backend"):
        cls.Options(backend="gpu")


def test_bad_options_and_inputs_name_the_field():
    cls = get_check("gamma")
    with pytest.raises(ValueError, match="does not parse"):
        cls.Options(criteria=("3 percent",))
    with pytest.raises(ValueError, match="max_gamma"):
        cls.Options(max_gamma=1.0)
    ref = _dose()
    with pytest.raises(ValueError, match="input 'evaluated': evaluated dose has 1 negative"):
        bad = ref.array.copy()
        bad[0, 0, 0] = -1
        cls().run({"reference": ref, "evaluated": ref.with_array(bad)})
    with pytest.raises(ValueError, match="input 'mask': roi is empty"):
        cls().run({"reference": ref, "evaluated": ref,
                   "mask": ref.with_array(np.zeros(ref.shape, bool))})
    with pytest.raises(QAInputError, match="input 'evaluated'"):
        cls().run({"reference": ref})


def test_a_protocol_run_grades_pass_rates_against_tg218_levels(tmp_path):
    scales = {"C01": 1.01, "C02": 1.04}  # gamma 0.33 everywhere (pass) / 1.33 (fail)
    rows = []
    for case_id, k in scales.items():
        (tmp_path / case_id).mkdir()
        ref = _dose()
        write_nifti(ref, tmp_path / case_id / "dose_ct.nii.gz")
        write_nifti(ref.with_array(ref.array * k), tmp_path / case_id / "dose_sct.nii.gz")
        rows.append({"case_id": case_id, "dose_ct": f"{case_id}/dose_ct.nii.gz",
                     "dose_sct": f"{case_id}/dose_sct.nii.gz"})
    with open(tmp_path / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "dose_ct", "dose_sct"])
        writer.writeheader()
        writer.writerows(rows)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text("""\
name: sCT dose — test
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: dose_sct}
cases: cases.csv
checks:
  - check: gamma
    reference: dose_ct
    evaluated: dose_sct
    options: {criteria: ["3%/2mm"]}
    tolerances:
      "pass_rate_percent[3%/2mm]": {tolerance: {min: 95}, action: {min: 90}}
""", encoding="utf-8")
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        outcome = run_protocol(protocol, store)
        measured = store.measurements(outcome.run_id)
        rates = measured[measured.metric == "pass_rate_percent"].set_index("case_id")["value"]
        assert rates.to_dict() == {"C01": 100.0, "C02": 0.0}
        verdicts = store.verdicts(outcome.run_id).set_index("case_id")["level"]
        assert verdicts.to_dict() == {"C01": "OK", "C02": "ACTION"}
        for language, title, worst in (("en", "Dose agreement: 3D gamma index",
                                        "Gamma map of the worst cases"),
                                       ("fr", "Concordance de dose : indice gamma 3D",
                                        "Carte gamma des cas les plus défavorables")):
            html = render_run_report(store, outcome.run_id, tmp_path / f"r-{language}.html",
                                     language=language)
            page = Path(html).read_text(encoding="utf-8")
            assert title in page and worst in page and "C02" in page
    assert outcome.exit_code == ExitCode.ACTION
