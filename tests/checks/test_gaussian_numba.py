"""The compiled Gaussian smoothing returns SciPy's numbers bit for bit.

:func:`checks._gaussian_numba.gaussian_filter_zero` replaces
``scipy.ndimage.gaussian_filter(mode="constant", cval=0)`` in the exact surfaces and the
added path length; any difference, even in the last bit of a float32, would move a
marching-cubes vertex and change a reported distance, so the tests ask for equal bits.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from checks._gaussian_numba import gaussian_filter_zero, gaussian_kernel

SIGMAS = [1.0, 2.0, (0.0, 1.0, 1.0), (0.5, 1.3, 2.2), (2.0, 0.0, 0.7), 0.1, (0.0, 0.0, 0.0)]


def _scipy(volume, sigma, truncate):
    return ndimage.gaussian_filter(volume, sigma, mode="constant", cval=0.0,
                                   truncate=truncate)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        a.view(np.int32), b.view(np.int32))


@pytest.mark.parametrize("sigma", SIGMAS, ids=str)
@pytest.mark.parametrize("truncate", [3.0, 4.0])
def test_random_values_of_every_sign_equal_scipy_bit_for_bit(sigma, truncate):
    rng = np.random.default_rng(7)
    for _ in range(6):
        # sizes from 1 (every tap outside the array) to wider than the kernel
        shape = tuple(int(n) for n in rng.integers(1, 30, 3))
        volume = rng.normal(size=shape).astype(np.float32)
        assert _same_bits(gaussian_filter_zero(volume, sigma, truncate),
                          _scipy(volume, sigma, truncate)), shape


@pytest.mark.parametrize("sigma", SIGMAS, ids=str)
def test_binary_masks_with_empty_rows_and_planes_equal_scipy_bit_for_bit(sigma):
    # the zero rows and planes are skipped: masks with a lot of them, touching the edges
    rng = np.random.default_rng(11)
    for trial in range(8):
        shape = tuple(int(n) for n in rng.integers(3, 40, 3))
        mask = np.zeros(shape, np.float32)
        lo = [int(rng.integers(0, n)) for n in shape]
        hi = [int(rng.integers(low, n + 1)) for low, n in zip(lo, shape, strict=True)]
        mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = 1.0
        if trial % 2:
            mask *= rng.random(shape) > 0.5  # ragged: zero rows inside the busy range
        assert _same_bits(gaussian_filter_zero(mask, sigma, 3.0), _scipy(mask, sigma, 3.0))


def test_a_sphere_box_as_the_surfaces_use_it():
    z, y, x = np.mgrid[:32, :69, :69]
    ball = ((((z - 16) * 2.5) ** 2 + ((y - 34) * 0.98) ** 2 + ((x - 34) * 0.98) ** 2)
            < 900).astype(np.float32)
    for sigma in (1.0, 2.0, (0.0, 1.0, 1.0)):
        assert _same_bits(gaussian_filter_zero(ball, sigma), _scipy(ball, sigma, 3.0))


def test_the_kernel_is_scipys_normalised_gaussian():
    weights = gaussian_kernel(2.0, 3.0)
    assert len(weights) == 13  # radius int(3 * 2 + 0.5) = 6
    assert weights.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_array_equal(weights, weights[::-1])
    x = np.arange(-6, 7)
    np.testing.assert_allclose(weights, np.exp(-x ** 2 / 8.0) / np.exp(-x ** 2 / 8.0).sum(),
                               rtol=1e-14)


def test_input_is_not_modified_and_other_dtypes_are_refused():
    volume = np.ones((4, 5, 6), np.float32)
    gaussian_filter_zero(volume, 1.0)
    assert np.all(volume == 1.0)
    with pytest.raises(ValueError, match="float32"):
        gaussian_filter_zero(np.ones((4, 5, 6)), 1.0)
    with pytest.raises(ValueError, match="3-D"):
        gaussian_filter_zero(np.ones((4, 5), np.float32), 1.0)
