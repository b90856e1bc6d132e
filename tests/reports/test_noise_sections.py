"""The noise, noise_dose and ct_number report sections render stored details only."""

from __future__ import annotations

import pytest

from checks.noise_dose import NoiseDoseCheck, NoiseDoseOptions
from reports._format import Formatter
from reports.sections import ct_number, noise, noise_dose
from tests.checks.test_noise_dose import synthetic_input


@pytest.mark.parametrize("language", ["en", "fr"])
def test_noise_dose_section_shows_the_reduction_table_plots_and_warning(language):
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.5)})
    out = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=200)).run_cohort(data)
    section = noise_dose.section_data(out.details, Formatter(language))
    assert not section["empty"]
    assert [row["reconstruction"] for row in section["reductions"]] == ["DL"]
    row = section["reductions"][0]
    expected = out.details["dose_reductions"]["DL"]["iso_dprime"]["reduction_percent"]
    number = f"{expected:.1f}" if language == "en" else f"{expected:.1f}".replace(".", ",")
    assert row["iso_dprime"].startswith(number)
    assert section["noise_plot"].startswith("data:image/png;base64,")
    assert section["dprime_plot"].startswith("data:image/png;base64,")
    assert section["warnings"] and section["warnings"][0].startswith("DL")
    assert {r["reconstruction"] for r in section["fits"]} == {"DL", "FBP"}


def test_noise_dose_section_explains_a_reduction_that_was_not_computed():
    data = synthetic_input({"FBP": (30.0, 0.5, 1.0, 0.5), "DL": (10.0, 0.5, 1.5, 0.0)})
    out = NoiseDoseCheck(NoiseDoseOptions(n_bootstrap=200)).run_cohort(data)
    section = noise_dose.section_data(out.details, Formatter("fr"))
    assert section["reductions"] == []
    assert section["warnings"][0].startswith("DL : aucune réduction de dose calculée : d′ (DL)")


def test_noise_dose_section_without_results_says_so():
    assert noise_dose.section_data({}, Formatter("en")) == {"empty": True}


def test_noise_section_plots_nps_and_ttf_grouped_by_reconstruction():
    f = [0.0, 0.1, 0.2, 0.3]
    curves = {
        "a": {"nps": {"frequency_per_mm": f, "nps_hu2_mm2": [None, 4.0, 6.0, 3.0]},
              "ttf": {"acrylic": {"frequency_per_mm": f, "ttf": [1.0, 0.8, 0.5, 0.2]}}},
        "b": {"nps": {"frequency_per_mm": f, "nps_hu2_mm2": [None, 6.0, 2.0, 0.5]},
              "ttf": {"acrylic": {"frequency_per_mm": f, "ttf": [1.0, 0.7, 0.4, 0.1]}}},
    }
    section = noise.section_data(curves, {"a": "FBP", "b": "DL"}, {"a": 12.6, "b": 12.6},
                                 Formatter("en"))
    assert section["groups"] == [{"reconstruction": "DL", "n": 1},
                                 {"reconstruction": "FBP", "n": 1}]
    assert section["nps_plot"].startswith("data:image/png")
    assert section["ttf_plot"].startswith("data:image/png")


def test_ct_number_section_summarises_inserts_against_nominal():
    case = [{"name": "acrylic", "measured_hu": 125.0, "sd_hu": 3.0, "nominal_hu": 120.0,
             "error_hu": 5.0, "tolerance_hu": 10.0, "density_g_cm3": 1.18,
             "density_residual_g_cm3": 0.01}]
    other = [{**case[0], "measured_hu": 135.0, "error_hu": 15.0}]
    section = ct_number.section_data([case, other], [1.0, -1.0], Formatter("en"))
    row = section["rows"][0]
    assert (row["mean"], row["error"], row["worst_error"], row["within"], row["n"]) == \
        ("130.0", "10.0", "15.0", 1, 2)
    assert section["water_mean"] == "0.0 HU"


def test_catalogs_have_the_same_keys_in_both_languages():
    from pathlib import Path

    import yaml

    from reports._format import _flatten
    root = Path(noise.__file__).parents[1] / "locales"
    for name in ("noise", "noise_dose", "ct_number"):
        keys = [set(_flatten(yaml.safe_load((root / lang / f"{name}.yaml").read_text(
            encoding="utf-8")))) for lang in ("en", "fr")]
        assert keys[0] == keys[1], name
