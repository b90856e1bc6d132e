"""Cross-checks of checks.noise against an independent implementation.

Peer: micro-CT Image Quality Toolbox (PyPI ``micro-ct-image-quality-toolbox`` 0.2.1, module
``microct_iq_toolbox``, MIT, F. Wiegmann), which implements the TG-233 TTF and NPW d′. (pylinac
was the first choice, but its 3.49 release pins pydicom < 3, which this project cannot take.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from checks.noise import detectability_index, ttf_from_disc
from tests.checks.test_noise import blurred_disc

peer = pytest.importorskip(
    "microct_iq_toolbox",
    reason="peer for the TTF / d′ cross-checks: pip install micro-ct-image-quality-toolbox")


def test_npw_dprime_is_the_peers_times_sqrt_2pi_on_identical_curves():
    """The peer integrates ∫W²T²·f df without the polar Jacobian 2π, so its d′ is ours /
    √(2π). Ours matches the analytic white-noise answer (test_noise.py), so the factor is the
    peer's omission, not ours: for NPS N₀, T = 1 the correct d′² is C²πR²/N₀ (Parseval)."""
    from microct_iq_toolbox.d_prime_calculator import get_d_prime_npw

    f = np.linspace(0.0, 1.0, 201)
    nps = 50.0 * f * np.exp(-f / 0.3)
    ttf = np.exp(-(f / 0.5) ** 2)
    for diameter, contrast in ((5.0, 10.0), (10.0, -95.0), (2.0, 120.0)):
        theirs = get_d_prime_npw(f, ttf, f, nps, disc_diameters_mm=[diameter],
                                 contrast_hu=abs(contrast))["d_prime"][0]
        ours = detectability_index(f, nps, f, ttf, contrast_hu=contrast,
                                   diameter_mm=diameter, observer="npw").d_prime
        assert ours == pytest.approx(math.sqrt(2 * math.pi) * theirs, rel=1e-3)


def test_ttf_f50_agrees_with_the_peer_and_is_closer_to_the_analytic_value():
    from microct_iq_toolbox import api

    pixel, blur = 0.5, 0.6
    c1, c2 = (30.0, 30.0), (30.0, 70.0)  # the peer needs two inserts
    image = (blurred_disc(10.0, blur, pixel, 200, c1)
             + blurred_disc(10.0, blur, pixel, 200, c2, contrast=-100.0))
    ours = ttf_from_disc(image, pixel, c1, 10.0, refine_center=False).f50_per_mm
    theirs = api.ttf(image[None], [[60, 60], [60, 140]], 30, pixel, materials=["a", "b"],
                     cnr_threshold=-1).summary["ttf50_a"]
    analytic = math.sqrt(math.log(2) / (2 * math.pi**2 * blur**2))  # Gaussian MTF = 0.5
    assert theirs == pytest.approx(ours, rel=0.05)
    # measured on 2026-11-27: ours 0.3119, peer 0.3009, analytic 0.3123 cycles/mm
    assert abs(ours - analytic) < abs(theirs - analytic)
    assert ours == pytest.approx(analytic, rel=0.01)
