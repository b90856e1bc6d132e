"""Specification of checks.ct_number: insert means against nominal, water, uniformity,
HU-to-density residuals."""

from __future__ import annotations

import numpy as np
import pytest

from checks.ct_number import (
    CTNumberCheck,
    CTNumberOptions,
    density_residuals,
    insert_accuracy,
    uniformity,
)
from checks.registry import get_check
from fixtures.ct_simulator import INSERTS, insert_position_mm
from qa.errors import QAInputError
from qa.volume import Volume
from tests.checks._noise_phantom import fbp_stack, scanner, volume


def test_insert_accuracy_is_mean_minus_nominal_over_tolerance():
    r = insert_accuracy("bone", np.array([940.0, 960.0]), 900.0, 40.0)
    assert (r.measured_hu, r.error_hu, r.tolerance_ratio) == (950.0, 50.0, 1.25)


def test_uniformity_is_the_largest_peripheral_difference():
    r = uniformity(2.0, {"top": 5.0, "left": -4.0, "right": 2.5})
    assert r.differences_hu == {"top": 3.0, "left": -6.0, "right": 0.5}
    assert r.max_abs_difference_hu == 6.0


def test_density_residuals_against_a_tps_curve_and_a_fitted_line():
    curve_hu, curve_rho = [-1000, 0, 1000], [0.0, 1.0, 1.6]
    res = density_residuals([-1000, 500, 0], [0.0, 1.35, 1.0], curve_hu, curve_rho)
    np.testing.assert_allclose(res, [0.0, -0.05, 0.0], atol=1e-12)
    # points exactly on a line: zero residuals
    np.testing.assert_allclose(density_residuals([-100, 0, 100], [0.9, 1.0, 1.1]), 0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="at least 3 inserts with a density"):
        density_residuals([0, 100], [1.0, 1.1])


def test_nan_in_an_insert_roi_is_refused():
    with pytest.raises(ValueError, match="insert 'air': the ROI must hold finite HU values"):
        insert_accuracy("air", np.array([1.0, np.nan]), 0.0, 5.0)


def options(**overrides):
    inserts = {name: {"position_mm": insert_position_mm(name), "nominal_hu": hu,
                      "tolerance_hu": 15.0, "density_g_cm3": rho, "roi_diameter_mm": 15.0}
               for name, (_, hu, rho) in INSERTS.items()}
    return CTNumberOptions(**{"inserts": inserts, **overrides})


def rows(out):
    return {(m.metric, m.label): m.value for m in out.measurements}


def test_noise_free_phantom_gives_nominal_values_exactly():
    truth = np.stack([scanner().truth_hu] * 2)
    out = CTNumberCheck(options()).run({"image": volume(truth, 12.6)})
    r = rows(out)
    assert r[("water_hu", "")] == pytest.approx(0.0, abs=1e-9)
    assert r[("uniformity_max_hu", "")] == pytest.approx(0.0, abs=1e-9)
    for name, (_, hu, _) in INSERTS.items():
        assert r[("insert_hu", name)] == pytest.approx(hu, abs=1e-9)
        assert r[("insert_tolerance_ratio", name)] == pytest.approx(0.0, abs=1e-9)
    assert get_check("ct_number") is CTNumberCheck


def test_fbp_series_is_within_5_hu_on_water_and_uniformity():
    out = CTNumberCheck(options()).run({"image": volume(fbp_stack(12.6, 0), 12.6)})
    r = rows(out)
    assert abs(r[("water_hu", "")]) < 5.0
    assert r[("uniformity_max_hu", "")] < 5.0
    assert abs(r[("insert_error_hu", "acrylic")]) < 8.0
    assert set(k[1] for k in r if k[0] == "density_residual_g_cm3") == set(INSERTS)


def test_a_shifted_scanner_calibration_shows_in_every_insert():
    shifted = np.stack([scanner().truth_hu + 30.0] * 2)
    r = rows(CTNumberCheck(options()).run({"image": volume(shifted, 12.6)}))
    assert r[("water_hu", "")] == pytest.approx(30.0)
    assert r[("insert_error_hu", "acrylic")] == pytest.approx(30.0)
    assert r[("insert_tolerance_ratio", "acrylic")] == pytest.approx(2.0)


def test_insert_roi_outside_the_phantom_is_named():
    opts = options(inserts={"lost": {"position_mm": (0.0, 99.0), "nominal_hu": 0.0,
                                     "tolerance_hu": 5.0}})
    with pytest.raises(QAInputError, match="'lost' .*dx=99 mm.* extends outside the phantom"):
        CTNumberCheck(opts).run({"image": volume(fbp_stack(12.6, 0), 12.6)})


def test_an_empty_image_has_no_phantom():
    empty = Volume(np.full((2, 32, 32), -1000.0), (5.0, 1.0, 1.0))
    with pytest.raises(QAInputError, match="no phantom found"):
        CTNumberCheck(options()).run({"image": empty})
