"""Specification of qa.Volume geometry and resampling."""

from __future__ import annotations

import numpy as np
import pytest

from qa.volume import (
    GridMismatchError,
    Volume,
    describe_grid_difference,
    require_same_grid,
    resample_like,
    same_grid,
)


def test_origin_is_the_centre_of_voxel_zero_and_axes_are_zyx():
    vol = Volume(np.zeros((4, 5, 6)), spacing=(3.0, 2.0, 1.0), origin=(-10.0, 20.0, 5.0))
    assert np.allclose(vol.index_to_world([0, 0, 0]), [-10.0, 20.0, 5.0])
    # one step along x (last axis) moves 1 mm along patient x
    assert np.allclose(vol.index_to_world([0, 0, 1]), [-10.0, 20.0, 6.0])
    assert np.allclose(vol.index_to_world([2, 1, 0]), [-4.0, 22.0, 5.0])


def test_world_to_index_inverts_index_to_world_with_oblique_direction():
    angle = np.deg2rad(30)
    # rotate the (y, x) plane: columns are unit vectors of array axes in (z, y, x)
    direction = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    vol = Volume(np.zeros((3, 4, 5)), (2.5, 0.8, 1.2), (1.0, 2.0, 3.0), direction)
    idx = np.array([[0.5, 1.25, 3.0], [2, 3, 4]])
    assert np.allclose(vol.world_to_index(vol.index_to_world(idx)), idx)
    # distances are preserved by an orthonormal direction
    p0, p1 = vol.index_to_world([[0, 0, 0], [0, 0, 1]])
    assert np.linalg.norm(p1 - p0) == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"array": np.zeros((3, 3)), "spacing": (1, 1, 1)}, "must be 3D"),
        ({"array": np.zeros((3, 3, 3)), "spacing": (1, 0, 1)}, "spacing must be finite and > 0"),
        ({"array": np.zeros((3, 3, 3)), "spacing": (1, 1)}, "need 3 values"),
        (
            {"array": np.zeros((3, 3, 3)), "spacing": (1, 1, 1), "direction": np.ones((3, 3))},
            "orthonormal",
        ),
    ],
)
def test_invalid_geometry_is_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Volume(**kwargs)


def test_same_grid_and_the_description_of_differences():
    a = Volume(np.zeros((2, 3, 4)), (1, 1, 1), (0, 0, 0))
    b = Volume(np.ones((2, 3, 4)), (1, 1, 1), (0, 0, 0.0005))
    c = Volume(np.ones((2, 3, 4)), (1, 1, 2), (0, 0, 1))
    assert same_grid(a, b)
    assert not same_grid(a, c)
    assert "spacing" in describe_grid_difference(a, c)
    assert "origin" in describe_grid_difference(a, c)
    with pytest.raises(GridMismatchError, match="ct and sct are on different grids"):
        require_same_grid(a, c, ("ct", "sct"))


@pytest.mark.parametrize("slab_points", [1 << 22, 50], ids=["one-slab", "many-slabs"])
def test_linear_resampling_of_a_linear_ramp_is_exact_in_physical_space(monkeypatch,
                                                                       slab_points):
    monkeypatch.setattr("qa.volume._SLAB_POINTS", slab_points)
    # f(z, y, x) = 2x + 3y - z (mm) sampled on one grid, resampled onto a shifted finer grid
    src = Volume(np.zeros((10, 12, 14)), (2.0, 1.5, 1.0), (5.0, -3.0, 7.0))
    pts = src.index_to_world(np.indices(src.shape).reshape(3, -1).T)
    ramp = (2 * pts[:, 2] + 3 * pts[:, 1] - pts[:, 0]).reshape(src.shape)
    src = src.with_array(ramp)
    dst = Volume(np.zeros((8, 9, 10)), (1.7, 1.1, 0.9), (7.3, -1.2, 8.4))
    out = resample_like(src, dst, method="linear")
    dst_pts = dst.index_to_world(np.indices(dst.shape).reshape(3, -1).T)
    expected = (2 * dst_pts[:, 2] + 3 * dst_pts[:, 1] - dst_pts[:, 0]).reshape(dst.shape)
    assert same_grid(out, dst)
    assert np.allclose(out.array, expected, atol=1e-4)


def test_points_outside_the_moving_grid_get_the_fill_value():
    src = Volume(np.full((4, 4, 4), 7.0), (1, 1, 1), (0, 0, 0))
    dst = Volume(np.zeros((1, 1, 8)), (1, 1, 1), (1, 1, 0))
    out = resample_like(src, dst, fill_value=-1000)
    assert out.array[0, 0, :4].tolist() == [7.0] * 4
    assert out.array[0, 0, 5:].tolist() == [-1000.0] * 3


def test_masks_resample_nearest_as_booleans_and_fraction_as_partial_volume():
    mask = np.zeros((2, 2, 4), dtype=bool)
    mask[:, :, 2:] = True
    src = Volume(mask, (1, 1, 2), (0, 0, 0))
    # destination voxel centres at x = 0, 1, 2, ..., 6 mm
    dst = Volume(np.zeros((2, 2, 7)), (1, 1, 1), (0, 0, 0))
    nearest = resample_like(src, dst, method="nearest")
    assert nearest.array.dtype == bool
    assert nearest.array[0, 0].tolist() == [False, False, False, True, True, True, True]
    fraction = resample_like(src, dst, method="fraction")
    # x = 3 mm lies halfway between a False centre (2 mm) and a True centre (4 mm)
    assert fraction.array[0, 0, 3] == pytest.approx(0.5)
    assert fraction.array[0, 0, 4] == pytest.approx(1.0)
