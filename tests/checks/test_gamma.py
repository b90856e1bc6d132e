"""Gamma index: analytic answers, geometry, bad input (pymedphys cross-check in test_gamma_peer)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from checks.gamma import (
    GammaInputError,
    dose_volume_from_axes,
    gamma_index,
    gamma_indices,
    parse_criterion,
)
from qa.volume import Volume

SPACING = (2.5, 2.5, 2.5)
BACKENDS = ["numba", "torch"]


def _ramp(shape=(12, 10, 10), spacing=SPACING, origin=(0.0, 0.0, 0.0), slope_gy_per_mm=0.5,
          offset_gy=20.0, shift_mm=0.0):
    """Linear ramp along z: D(z) = offset + slope * (z - shift). Trilinear-exact."""
    z = origin[0] + np.arange(shape[0]) * spacing[0]
    arr = offset_gy + slope_gy_per_mm * (z - shift_mm)
    return Volume(np.broadcast_to(arr[:, None, None], shape).copy(), spacing, origin)


def _uniform(value=50.0, shape=(6, 6, 6), spacing=SPACING):
    return Volume(np.full(shape, value), spacing)


# -- analytic answers --------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shifted_linear_ramp_gives_the_closed_form_gamma(backend):
    # D_e(x) = D_r(x - d) on a ramp of slope b: dose difference delta = b d / dD, scaled
    # gradient G = b DTA / dD, and gamma = delta / sqrt(1 + G^2) (minimum of a quadratic).
    slope, shift, dta, dose_pct = 0.5, 1.0, 2.0, 3.0
    ref = _ramp(shape=(12, 3, 3), slope_gy_per_mm=slope)
    ev = _ramp(shape=(12, 3, 3), slope_gy_per_mm=slope, shift_mm=shift)
    dd = dose_pct / 100 * ref.array.max()
    expected = (slope * shift / dd) / math.sqrt(1 + (slope * dta / dd) ** 2)
    r = gamma_index(ref, ev, dose_pct, dta, lower_cutoff_percent=0, backend=backend)
    # interior points, more than max_gamma * DTA from the grid's z ends
    interior = r.gamma[3:-3]
    assert np.nanmax(np.abs(interior - expected)) < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_steep_shifted_ramp_tends_to_shift_over_dta(backend):
    # Steep gradient (G >> 1): gamma -> d / DTA, the pure-shift answer.
    ref = _ramp(shape=(12, 3, 3), slope_gy_per_mm=20.0, offset_gy=20.0)
    ev = _ramp(shape=(12, 3, 3), slope_gy_per_mm=20.0, offset_gy=20.0, shift_mm=0.8)
    r = gamma_index(ref, ev, 1.0, 2.0, lower_cutoff_percent=0, backend=backend)
    dd = 0.01 * ref.array.max()
    g_scaled = 20.0 * 2.0 / dd
    expected = (20.0 * 0.8 / dd) / math.sqrt(1 + g_scaled**2)
    assert abs(expected - 0.8 / 2.0) < 0.02
    assert np.nanmax(np.abs(r.gamma[3:-3] - expected)) < 1e-3


@pytest.mark.parametrize(("k", "dose_pct", "expected", "backend"),
                         [(1.015, 3.0, 0.5, "numba"), (0.98, 2.0, 1.0, "numba"),
                          (1.03, 2.0, 1.5, "numba"), (1.015, 3.0, 0.5, "torch")])
def test_a_uniform_scaling_by_k_gives_abs_k_minus_1_over_dose_criterion(k, dose_pct, expected,
                                                                       backend):
    ref = _uniform(shape=(4, 4, 4))
    r = gamma_index(ref, ref.with_array(ref.array * k), dose_pct, 2.0, backend=backend)
    np.testing.assert_allclose(r.gamma, expected, atol=1e-9)


def test_local_gamma_uses_the_dose_at_each_point():
    # Ramp scaled by 1.02: locally every point differs by 2 % of its own dose, so local
    # 2 %/2 mm gives gamma <= 1 everywhere while global 1 % (of the max) fails near the top.
    ref = _ramp(slope_gy_per_mm=0.2, offset_gy=10.0)
    ev = ref.with_array(ref.array * 1.02)
    local = gamma_index(ref, ev, 2.0, 2.0, local=True, lower_cutoff_percent=0)
    assert local.pass_rate_percent == 100.0
    assert np.nanmax(local.gamma) <= 1.0 + 1e-9
    glob = gamma_index(ref, ev, 1.0, 0.1, lower_cutoff_percent=0)
    assert glob.pass_rate_percent < 100.0


def test_identical_doses_pass_everywhere_with_gamma_zero():
    ref = _ramp()
    r = gamma_index(ref, ref, 1.0, 1.0, lower_cutoff_percent=0)
    assert r.pass_rate_percent == 100.0 and np.nanmax(r.gamma) == 0.0
    assert r.n_evaluated == ref.array.size


def test_several_criteria_in_one_call_equal_single_calls():
    rng = np.random.default_rng(7)
    ref = _ramp(slope_gy_per_mm=0.4)
    ev = ref.with_array(ref.array * 1.01 + rng.normal(0, 0.2, ref.shape))
    both = gamma_indices(ref, ev, ["3%/2mm", "1%/1mm"])
    assert [r.criterion for r in both] == ["3%/2mm", "1%/1mm"]
    single = gamma_index(ref, ev, 1.0, 1.0)
    np.testing.assert_array_equal(both[1].gamma, single.gamma)


def test_numba_and_torch_backends_agree():
    rng = np.random.default_rng(11)
    from scipy import ndimage
    base = ndimage.gaussian_filter(rng.random((6, 10, 10)), 2) * 100
    ref = Volume(base, SPACING)
    ev = ref.with_array(np.clip(base * 1.02 + rng.normal(0, 0.3, base.shape), 0, None))
    a = gamma_index(ref, ev, 2.0, 2.0, backend="numba")
    b = gamma_index(ref, ev, 2.0, 2.0, backend="torch")
    np.testing.assert_allclose(a.gamma, b.gamma, atol=2e-3, equal_nan=True)
    # each result says which search produced it (the report prints it)
    assert (a.backend, a.device, b.backend, b.device) == ("numba", "cpu", "torch", "cpu")
    assert a.to_dict()["backend"] == "numba"



@pytest.mark.parametrize(("local", "dose_pct", "dta_mm"), [(True, 2.0, 2.0), (False, 1.0, 1.0)])
def test_gamma_is_never_above_a_brute_force_minimum_by_more_than_the_certified_tolerance(
        local, dose_pct, dta_mm):
    # Noisy low-dose local gamma is where a local search misses basins. A dense sample of
    # positions around each point can only overestimate the exact minimum, so the numba
    # kernel's value (certified within TOLERANCE_GAMMA of the exact minimum) must not exceed
    # it by more than that tolerance. Sample: every DTA/30 inside the ball gamma * DTA.
    from scipy import ndimage
    from scipy.interpolate import RegularGridInterpolator

    from checks._gamma_cells import TOLERANCE_GAMMA

    rng = np.random.default_rng(5)
    base = ndimage.gaussian_filter(rng.random((10, 12, 12)), 1.5)
    base = (base - base.min()) / (base.max() - base.min()) * 60.0 + 3.0
    ev_arr = np.clip(ndimage.shift(base, (0.3, -0.2, 0.1), order=1, mode="nearest") * 1.01
                     + rng.normal(0.0, 0.3, base.shape), 0.0, None)
    ref, ev = Volume(base, SPACING), Volume(ev_arr, SPACING)
    r = gamma_index(ref, ev, dose_pct, dta_mm, local=local, backend="numba")
    interp = RegularGridInterpolator([np.arange(n) * 2.5 for n in base.shape], ev_arr)
    upper_mm = (np.array(base.shape) - 1) * 2.5
    points = np.argwhere(~np.isnan(r.gamma))
    for p in points[rng.choice(len(points), 6, replace=False)]:
        ours = r.gamma[tuple(p)]
        radius = max(ours, 0.05) * dta_mm
        ax = np.arange(-radius, radius + 1e-9, dta_mm / 30)
        q = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
        q = q[(q**2).sum(1) <= radius**2] + p * 2.5
        q = q[np.all((q >= 0) & (q <= upper_mm), axis=1)]
        dd = dose_pct / 100 * (base[tuple(p)] if local else base.max())
        g2 = ((q - p * 2.5) ** 2).sum(1) / dta_mm**2 + ((interp(q) - base[tuple(p)]) / dd) ** 2
        brute = min(math.sqrt(g2.min()), 2.0)
        assert ours <= brute + TOLERANCE_GAMMA + 1e-9, (tuple(p), ours, brute)


def _sampled_box_minimum(v, lo, hi, p, dr, lam, w, n=11, where=False):
    """min over an n^3 sample of the box of w|q - p|^2 + lam (T(q) - dr)^2, T trilinear
    with corner values v (index 4 z + 2 y + x). An upper bound of the exact minimum (and,
    with ``where``, the sample point that attains it)."""
    g = [np.linspace(lo[k], hi[k], n) for k in range(3)]
    zz, yy, xx = np.meshgrid(*g, indexing="ij")
    ext = np.asarray(hi) - np.asarray(lo)
    tz, ty, tx = ((c - lo[k]) / ext[k] if ext[k] > 0 else 0 * c
                  for k, c in enumerate((zz, yy, xx)))
    c0 = (v[0] + (v[1] - v[0]) * tx) * (1 - ty) + (v[2] + (v[3] - v[2]) * tx) * ty
    c1 = (v[4] + (v[5] - v[4]) * tx) * (1 - ty) + (v[6] + (v[7] - v[6]) * tx) * ty
    dose = c0 * (1 - tz) + c1 * tz
    f = (w[0] * (zz - p[0]) ** 2 + w[1] * (yy - p[1]) ** 2 + w[2] * (xx - p[2]) ** 2
         + lam * (dose - dr) ** 2)
    if where:
        at = np.unravel_index(np.argmin(f), f.shape)
        return float(f.min()), np.array([zz[at], yy[at], xx[at]])
    return float(f.min())


def test_the_tangent_lower_bound_never_exceeds_the_minimum_over_a_box():
    # The kernel drops a box when this bound reaches the best gamma^2 so far: a bound above
    # the true minimum would drop the minimiser. Random trilinear boxes (flat ones too),
    # points inside, on corners and outside, random weights: the bound must stay below
    # a sampled minimum (itself above the exact one).
    from checks._gamma_bounds import _box_tangent_bound

    rng = np.random.default_rng(3)
    for trial in range(600):
        lo = rng.uniform(-2, 2, 3)
        ext = rng.uniform(0.05, 1.0, 3)
        if trial % 7 == 0:
            ext[rng.integers(3)] = 0.0
        hi = lo + ext
        v = rng.normal(0.0, 1.0, 8) * rng.choice([0.1, 1.0, 10.0])
        p = (lo + rng.uniform(0, 1, 3) * ext if trial % 3 == 0
             else np.where(rng.random(3) < 0.5, lo, hi) if trial % 3 == 1
             else lo + rng.uniform(-1.5, 2.5, 3) * np.maximum(ext, 0.1))
        w, lam, dr = rng.uniform(0.2, 3.0, 3), rng.uniform(0.1, 10.0), rng.normal(0.0, 2.0)
        bound = _box_tangent_bound(*v, *lo, *hi, *p, dr, lam, *w)
        sampled = _sampled_box_minimum(v, lo, hi, p, dr, lam, w)
        assert bound <= sampled * (1 + 1e-9) + 1e-12, (trial, bound, sampled)


def _linear_dose_box():
    """A linear dose T(q) = g.q on a large box around p = 0: (g, w, lam, dr, lo, hi, p,
    corner values); f = w|q|^2 + lam (g.q - dr)^2 is then a convex quadratic whose minimum is
    lam dr^2 / (1 + lam sum g_k^2 / w_k)."""
    g, w, lam, dr = np.array([0.3, -0.2, 0.5]), np.array([1.0, 0.5, 2.0]), 4.0, 1.0
    lo, hi, p = np.array([-5.0, -5.0, -5.0]), np.array([5.0, 5.0, 5.0]), np.zeros(3)
    corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for x in (lo[2], hi[2])])
    return g, w, lam, dr, lo, hi, p, corners @ g


def test_the_tangent_lower_bound_is_exact_for_a_linear_dose_with_its_minimiser_inside():
    # T linear (no cross terms): the bound is the linear gamma^2 at p,
    # lam r^2 / (1 + lam sum g_k^2 / w_k), attained inside a large box around p.
    from checks._gamma_bounds import _box_tangent_bound

    g, w, lam, dr, lo, hi, p, v = _linear_dose_box()
    expected = lam * dr**2 / (1 + lam * (g**2 / w).sum())
    assert _box_tangent_bound(*v, *lo, *hi, *p, dr, lam, *w) == pytest.approx(expected,
                                                                             rel=1e-9)

def test_the_second_order_lower_bound_never_exceeds_the_minimum_over_a_box():
    # Expansion at a point o of the box with a lower bound of the Hessian: it must stay below
    # the sampled minimum (itself above the exact one) wherever o is, for curved trilinear
    # boxes (noise-like corner doses) where the Hessian bound is barely positive too.
    from checks._gamma_bounds import _second_order_bound

    rng = np.random.default_rng(11)
    informative = 0
    for trial in range(800):
        lo = rng.uniform(-2, 2, 3)
        ext = rng.uniform(0.05, 1.0, 3)
        if trial % 9 == 0:
            ext[rng.integers(3)] = 0.0
        hi = lo + ext
        v = rng.normal(0.0, 1.0, 8) * rng.choice([0.05, 0.3, 1.0])
        o = lo + np.where(rng.random(3) < 0.2, rng.integers(0, 2, 3), rng.uniform(0, 1, 3)) * ext
        p = lo + rng.uniform(-1.0, 2.0, 3) * np.maximum(ext, 0.1)
        w, lam, dr = rng.uniform(0.5, 3.0, 3), rng.uniform(0.1, 4.0), rng.normal(0.0, 1.0)
        sampled, argmin = _sampled_box_minimum(v, lo, hi, p, dr, lam, w, n=15, where=True)
        if trial % 2:  # next to the minimiser, where the bound is tight and drops boxes
            o = np.clip(argmin + rng.normal(0.0, 0.02, 3) * ext, lo, hi)
        bound = _second_order_bound(*v, *lo, *hi, *o, *p, dr, lam, *w)
        assert bound <= sampled * (1 + 1e-9) + 1e-12, (trial, bound, sampled)
        informative += bound > 0.5 * sampled
    assert informative > 40  # and it is not vacuous (82 of 800 with this seed)


def test_the_second_order_lower_bound_holds_for_equal_cross_terms():
    # T = Dr - M + a (y x + z x + z y): its Hessian [[0, a, a], [a, 0, a], [a, a, 0]] has the
    # eigenvalue 2a (the Gershgorin row sum), twice its largest entry; where T < Dr that
    # direction curves f down, and a Hessian bound from the largest entry alone would put
    # the bound above the minimum (by ~1 at a = 0.2, M = 2, lam = 2).
    from checks._gamma_bounds import _second_order_bound

    lo, hi, p, w = -np.ones(3), np.ones(3), np.zeros(3), np.ones(3)
    corners = np.array([[z, y, x] for z in (-1, 1) for y in (-1, 1) for x in (-1, 1)], float)
    for a in (0.1, 0.2, 0.3):
        for big_m in (0.5, 1.0, 2.0):
            v = -big_m + a * (corners[:, 1] * corners[:, 2] + corners[:, 0] * corners[:, 2]
                              + corners[:, 0] * corners[:, 1])
            for o in (0.1, 0.3, 0.6, 1.0):
                for lam in (0.5, 1.0, 2.0):
                    bound = _second_order_bound(*v, *lo, *hi, o, o, o, *p, 0.0, lam, *w)
                    sampled = _sampled_box_minimum(v, lo, hi, p, 0.0, lam, w, n=41)
                    assert bound <= sampled + 1e-12, (a, big_m, o, lam, bound, sampled)


def test_the_second_order_lower_bound_certifies_a_minimiser_inside_the_box():
    # T linear: f is a convex quadratic; expanded at its minimiser inside the box, the bound
    # is f there, the exact minimum (the kernel then drops the box without splitting it).
    from checks._gamma_bounds import _second_order_bound

    g, w, lam, dr, lo, hi, p, v = _linear_dose_box()
    # minimiser of w|q|^2 + lam (g.q - dr)^2: q = lam dr W^-1 g / (1 + lam g W^-1 g)
    q = lam * dr * (g / w) / (1 + lam * (g**2 / w).sum())
    expected = lam * dr**2 / (1 + lam * (g**2 / w).sum())
    assert _second_order_bound(*v, *lo, *hi, *q, *p, dr, lam, *w) == pytest.approx(expected,
                                                                                  rel=1e-9)


# -- geometry ------------------------------------------------------------------------------

def test_different_spacing_and_origin_of_the_same_linear_dose_gives_gamma_zero():
    # A linear dose is reproduced exactly by trilinear interpolation on any grid.
    ref = _ramp(shape=(10, 8, 8), spacing=(2.5, 2.5, 2.5))
    ev = _ramp(shape=(12, 9, 9), spacing=(3.0, 3.0, 3.0), origin=(-4.0, -3.0, -3.0))
    r = gamma_index(ref, ev, 1.0, 1.0, lower_cutoff_percent=0)
    assert r.n_outside_grid == 0
    assert np.nanmax(r.gamma) < 1e-9


def test_points_outside_the_evaluated_grid_are_counted_not_dropped():
    ref = _ramp(shape=(10, 6, 6))
    ev = _ramp(shape=(6, 6, 6))  # covers z = 0 .. 12.5 mm of the 0 .. 22.5 mm reference
    r = gamma_index(ref, ev, 3.0, 2.0, lower_cutoff_percent=0)
    assert r.n_outside_grid == 4 * 36
    assert r.n_evaluated == 6 * 36
    assert np.isnan(r.gamma[6:]).all() and not np.isnan(r.gamma[:6]).any()
    assert r.n_evaluated + r.n_outside_grid + r.n_below_cutoff + r.n_outside_roi == ref.array.size


def test_cutoff_roi_and_union_counts_are_disjoint_and_documented():
    ref = _uniform(50.0, shape=(4, 6, 6))
    arr = ref.array.copy()
    arr[0] = 2.0  # below 10 % of 50 Gy
    ref = ref.with_array(arr)
    ev_arr = arr.copy()
    ev_arr[0, 0, 0] = 30.0  # hot spot in the evaluated dose where the reference is low
    ev = ref.with_array(ev_arr)
    roi = ref.with_array(np.ones(ref.shape, bool))
    roi.array[3] = False
    r = gamma_index(ref, ev, 3.0, 2.0, roi=roi)
    assert (r.n_outside_roi, r.n_below_cutoff, r.n_evaluated) == (36, 36, 72)
    union = gamma_index(ref, ev, 3.0, 2.0, roi=roi, cutoff_on_union=True)
    assert union.n_below_cutoff == 35 and union.n_evaluated == 73
    assert union.gamma[0, 0, 0] > 1.0  # the hot spot fails; without the union it is unseen


def test_descending_axes_give_the_same_gamma_as_ascending_ones():
    ref = _ramp(shape=(8, 5, 5), slope_gy_per_mm=0.3)
    ev = _ramp(shape=(8, 5, 5), slope_gy_per_mm=0.3, shift_mm=0.5)
    axes = ref.axis_coordinates_mm()
    flipped = dose_volume_from_axes(ev.array[::-1], (axes[0][::-1], axes[1], axes[2]))
    a = gamma_index(ref, ev, 2.0, 2.0)
    b = gamma_index(ref, flipped, 2.0, 2.0)
    np.testing.assert_allclose(a.gamma, b.gamma, atol=1e-12, equal_nan=True)


def test_uneven_axes_are_refused_with_the_axis_named():
    with pytest.raises(GammaInputError, match=r"axis 0 \(z\) is not evenly spaced"):
        dose_volume_from_axes(np.zeros((3, 2, 2)), ([0, 1, 3], [0, 1], [0, 1]))


def test_result_records_serialise_and_histogram_counts_every_point():
    ref = _ramp()
    r = gamma_index(ref, ref.with_array(ref.array * 1.01), 3.0, 2.0)
    d = r.to_dict()
    assert "gamma" not in d and d["criterion"] == "3%/2mm"
    assert sum(r.histogram_counts) == r.n_evaluated
    assert r.histogram_edges[0] == 0.0 and r.histogram_edges[-1] == r.max_gamma


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["3/2", "3%-2mm", "3 %/ 2 cm", "", "x%/2mm"])
def test_a_criterion_that_does_not_parse_is_refused(text):
    with pytest.raises(GammaInputError, match="does not parse; write it as '<dose>%/<distance>mm'"):
        parse_criterion(text)


def test_criterion_parsing_accepts_decimals_and_spaces():
    c = parse_criterion(" 2.5 % / 1.5 mm ")
    assert (c.dose_percent, c.distance_mm, c.label) == (2.5, 1.5, "2.5%/1.5mm")


@pytest.mark.parametrize("max_gamma", [1.0, 0.5, math.inf])
def test_max_gamma_must_exceed_one(max_gamma):
    ref = _uniform()
    with pytest.raises(GammaInputError, match="max_gamma must be a finite number > 1") as err:
        gamma_index(ref, ref, 3, 2, max_gamma=max_gamma)
    assert err.value.input_name == "max_gamma"


def test_nan_and_negative_doses_are_refused_naming_the_input():
    ref = _uniform()
    bad = ref.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(GammaInputError, match="evaluated dose has 1 non-finite value") as err:
        gamma_index(ref, ref.with_array(bad), 3, 2)
    assert err.value.input_name == "evaluated"
    bad[0, 0, 0] = -1.0
    with pytest.raises(GammaInputError, match="reference dose has 1 negative value"):
        gamma_index(ref.with_array(bad), ref, 3, 2)


def test_cgy_doses_are_refused():
    ref = _uniform(50.0)
    with pytest.raises(GammaInputError, match="evaluated dose is probably in cGy"):
        gamma_index(ref, ref.with_array(ref.array * 100), 3, 2)
    cgy = Volume(ref.array, ref.spacing, metadata={"dose_units": "CGY"})
    with pytest.raises(GammaInputError, match="reference dose has DoseUnits 'CGY'"):
        gamma_index(cgy, ref, 3, 2)


def test_non_overlapping_grids_are_refused():
    ref = _uniform()
    far = Volume(ref.array, ref.spacing, origin=(500.0, 0.0, 0.0))
    with pytest.raises(GammaInputError, match="does not overlap the reference points"):
        gamma_index(ref, far, 3, 2)


def test_an_empty_roi_is_refused():
    ref = _uniform()
    with pytest.raises(GammaInputError, match="roi is empty on the reference dose grid"):
        gamma_index(ref, ref, 3, 2, roi=ref.with_array(np.zeros(ref.shape, bool)))
