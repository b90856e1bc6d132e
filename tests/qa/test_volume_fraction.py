"""``resample_like(method="fraction")`` interpolates only the mask's bounding box; no value
may change: it must equal trilinear interpolation of the whole 0/1 mask as float32."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from qa.volume import Volume, resample_like


def _mask(kind: str, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    if kind == "ball":
        centre = [rng.integers(0, n) for n in shape]
        zz, yy, xx = np.indices(shape)
        radius = rng.uniform(1.0, 8.0)
        return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2
    mask = np.zeros(shape, bool)
    if kind == "touching_the_edges":
        mask[: rng.integers(1, shape[0]), :, rng.integers(0, shape[2]):] = True
    elif kind == "sparse":
        mask = rng.random(shape) < 0.01
    return mask  # "empty"


@pytest.mark.parametrize("kind", ["ball", "touching_the_edges", "sparse", "empty"])
@pytest.mark.parametrize("seed", range(4))
def test_fraction_equals_linear_interpolation_of_the_whole_mask(kind, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 30, 3))
    direction = Rotation.from_rotvec(rng.normal(0.0, 0.3, 3)).as_matrix() if seed % 2 else None
    moving = Volume(_mask(kind, shape, rng), rng.uniform(0.5, 3.0, 3), rng.uniform(-10, 10, 3),
                    direction)
    reference = Volume(np.zeros(tuple(int(n) for n in rng.integers(5, 30, 3))),
                       rng.uniform(0.5, 3.0, 3), rng.uniform(-15.0, 5.0, 3))
    fraction = resample_like(moving, reference, method="fraction").array
    linear = resample_like(moving.with_array(moving.array.astype(np.float32)), reference,
                           method="linear").array
    assert fraction.dtype == linear.dtype == np.float32
    assert np.array_equal(fraction, linear)
