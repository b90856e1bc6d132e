"""The compiled kernels of the segmentation metrics agree with plain, independent computations.

* point-to-mesh distances: closed-form distances to one triangle (face, edge and vertex
  regions) and brute force over every triangle of a sphere mesh (points inside, outside, far);
* contour segments: the consecutive point pairs of :func:`skimage.measure.find_contours`;
* segments within a tolerance: brute force over every segment of the slice;
* curvature and normals: :func:`numpy.gradient` + :func:`scipy.ndimage.map_coordinates`;
* the crossed-cell mask leaves :func:`skimage.measure.marching_cubes` unchanged, and the
  compiled mesh areas equal ``verts[faces]`` + :func:`numpy.cross` + :func:`numpy.bincount`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import find_contours, marching_cubes

from checks._contour_numba import marching_squares_segments, segments_within
from checks._mesh_numba import curvature_and_normals, mesh_areas, mixed_cell_mask
from checks._surface_numba import _point_triangle_d2, point_mesh_distances


def _brute_force_distances(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Min over all triangles: plane distance when the projection falls inside the
    triangle (barycentric test), else the nearest of the three edges (clamped projection)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    out = np.empty(len(points))
    for i, p in enumerate(points):
        d_plane = np.einsum("ij,ij->i", p - a, normal)
        q = p - d_plane[:, None] * normal
        inside = np.ones(len(a), bool)
        for u, v in ((a, b), (b, c), (c, a)):
            inside &= np.einsum("ij,ij->i", np.cross(v - u, q - u), normal) >= 0
        edges = []
        for u, v in ((a, b), (b, c), (c, a)):
            t = np.clip(np.einsum("ij,ij->i", p - u, v - u)
                        / np.einsum("ij,ij->i", v - u, v - u), 0, 1)
            edges.append(np.linalg.norm(p - (u + t[:, None] * (v - u)), axis=1))
        out[i] = np.min(np.where(inside, np.abs(d_plane), np.minimum.reduce(edges)))
    return out


def test_distances_to_one_triangle_in_each_region():
    tri = np.array([[[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])
    points = np.array([[1.0, 1.0, 2.0],     # above the face: plane distance
                       [2.0, -1.5, 0.0],    # beside edge a-b: 1.5
                       [-1.0, -1.0, 1.0],   # beyond vertex a: sqrt 3
                       [4.0, 3.0, 0.0]])    # beyond the hypotenuse: 12/5
    expected = [2.0, 1.5, np.sqrt(3.0), 12.0 / 5.0]
    assert point_mesh_distances(points, tri) == pytest.approx(expected, abs=1e-12)


def test_distances_to_a_sphere_mesh_match_brute_force_near_and_far():
    grid = np.indices((24, 24, 24)).astype(float)
    field = 9.3 - np.sqrt(((grid - 11.6) ** 2).sum(axis=0))
    verts, faces, _, _ = marching_cubes(field, 0.0, spacing=(1.5, 1.0, 0.8))
    triangles = verts[faces]
    rng = np.random.default_rng(7)
    points = np.concatenate([rng.uniform(-5, 30, (120, 3)),           # around and inside
                             verts[::40] + rng.normal(0, 0.3, (len(verts[::40]), 3)),
                             rng.uniform(80, 120, (10, 3))])  # far away
    got = point_mesh_distances(points, triangles)
    assert got == pytest.approx(_brute_force_distances(points, triangles), abs=1e-9)


def test_contour_segments_are_those_find_contours_assembles():
    rng = np.random.default_rng(3)
    stack = ndimage.gaussian_filter(rng.random((3, 20, 24)), (0, 1.5, 1.5))
    stack[1] = np.round(stack[1] * 4) / 4  # plateaus exactly at the level: degenerate cases
    level = float(np.median(stack))
    z, start, end = marching_squares_segments(stack, level)
    for k in range(stack.shape[0]):
        mine = {tuple(np.round(np.r_[s, e], 12)) for s, e in zip(start[z == k], end[z == k],
                                                                 strict=True)
                if not np.array_equal(s, e)}
        theirs = set()
        for line in find_contours(stack[k], level):
            for s, e in zip(line[:-1], line[1:], strict=True):
                theirs.add(tuple(np.round(np.r_[s, e], 12)))
        assert mine == theirs


def test_segments_within_tolerance_match_brute_force():
    rng = np.random.default_rng(11)
    seg_z = rng.integers(0, 3, 400)
    starts = rng.uniform(0, 30, (400, 2))
    ends = starts + rng.normal(0, 1.0, (400, 2))
    points = np.column_stack([rng.integers(0, 4, 500), rng.uniform(-2, 32, (500, 2))])
    got = segments_within(points, seg_z, starts, ends, 1.2)
    expected = np.zeros(len(points), bool)
    for i, (z, y, x) in enumerate(points):
        same = seg_z == z
        a, b = starts[same], ends[same]
        t = np.clip(np.einsum("ij,ij->i", [y, x] - a, b - a)
                    / np.einsum("ij,ij->i", b - a, b - a), 0, 1)
        d = np.linalg.norm([y, x] - (a + t[:, None] * (b - a)), axis=1)
        expected[i] = bool(np.any(d <= 1.2))
    assert np.array_equal(got, expected) and 50 < expected.sum() < 450


def test_curvature_and_normals_match_the_numpy_formulation():
    rng = np.random.default_rng(5)
    field = ndimage.gaussian_filter(rng.random((14, 16, 18)), 2.0)
    spacing = (2.5, 0.98, 0.9)
    coords = rng.uniform(0, 1, (300, 3)) * (np.array(field.shape) - 1)
    grad = np.gradient(field, *spacing)
    norm = np.sqrt(sum(g * g for g in grad)) + 1e-12
    normal = [-g / norm for g in grad]
    div = sum(np.gradient(normal[i], spacing[i], axis=i) for i in range(3))
    expected_h = 0.5 * ndimage.map_coordinates(div, coords.T, order=1, mode="nearest")
    expected_n = np.stack([ndimage.map_coordinates(n, coords.T, order=1, mode="nearest")
                           for n in normal], axis=1)
    expected_n /= np.linalg.norm(expected_n, axis=1, keepdims=True) + 1e-12
    mean_curv, normals = curvature_and_normals(field, coords, spacing)
    assert mean_curv == pytest.approx(expected_h, rel=1e-9, abs=1e-12)
    assert normals == pytest.approx(expected_n, abs=1e-12)


def test_grid_search_equals_the_minimum_over_every_triangle_with_slivers_and_needles():
    """The pruning (cells, bounding spheres, planes) never drops the nearest triangle, also
    for triangles whose plane is ill-defined: needles, slivers and a collinear one."""
    rng = np.random.default_rng(19)
    a = rng.uniform(0, 20, (300, 3))
    tri = np.stack([a, a + rng.normal(0, 1.5, (300, 3)), a + rng.normal(0, 1.5, (300, 3))],
                   axis=1)
    tri[:40, 2] = tri[:40, 0] + (tri[:40, 1] - tri[:40, 0]) * rng.uniform(0, 1, (40, 1)) \
        + rng.normal(0, 1e-7, (40, 3))        # slivers: third corner nearly on an edge
    tri[40:60, 1] = tri[40:60, 0] + rng.normal(0, 1e-6, (20, 3))   # needles
    tri[60, 2] = 0.5 * (tri[60, 0] + tri[60, 1])                    # collinear
    points = rng.uniform(-3, 23, (400, 3))
    brute = np.array([math.sqrt(min(_point_triangle_d2(*p, tri, t) for t in range(len(tri))))
                      for p in points])
    assert np.array_equal(point_mesh_distances(points, tri), brute)


def test_crossed_cell_mask_leaves_marching_cubes_unchanged():
    rng = np.random.default_rng(23)
    field = ndimage.gaussian_filter((rng.random((18, 20, 22)) > 0.6).astype(np.float32), 1.0)
    verts, faces, _, _ = marching_cubes(field, 0.3, allow_degenerate=True)
    verts_m, faces_m, _, _ = marching_cubes(field, 0.3, allow_degenerate=True,
                                            mask=mixed_cell_mask(field, 0.3))
    assert len(faces) > 100
    assert np.array_equal(verts, verts_m) and np.array_equal(faces, faces_m)


def test_mesh_areas_equal_the_numpy_formulation():
    grid = np.indices((16, 16, 16)).astype(float)
    field = 6.3 - np.sqrt(((grid - 7.4) ** 2).sum(axis=0))
    verts, faces, _, _ = marching_cubes(field, 0.0, spacing=(2.5, 0.98, 0.9),
                                        allow_degenerate=True)
    verts = verts.astype(np.float64)
    faces = np.vstack([faces, [[0, 0, 1]]])  # one degenerate triangle: dropped
    tri = verts[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = areas > 0
    point_areas = np.bincount(faces[keep].ravel(), weights=np.repeat(areas[keep] / 3.0, 3),
                              minlength=len(verts))
    got_tri, got_points, got_areas = mesh_areas(verts, faces.astype(np.int64))
    assert np.array_equal(got_tri, tri[keep])
    assert np.array_equal(got_points, verts[point_areas > 0])
    assert got_areas == pytest.approx(point_areas[point_areas > 0], rel=1e-12)


def test_planes_touched_equals_numpy_for_word_and_byte_layouts():
    from checks._mask_numba import planes_touched

    rng = np.random.default_rng(9)
    # (8, 16): planes of whole 64-bit words; (7, 9): bytes; a strided view; empty masks
    for shape in [(5, 8, 16), (6, 7, 9), (4, 16, 24), (3, 8, 8)]:
        for density in (0.0, 0.002, 0.3):
            a = rng.random(shape) < density
            b = rng.random(shape) < density / 2
            expected = a.any(axis=(1, 2)) | b.any(axis=(1, 2))
            np.testing.assert_array_equal(planes_touched(a, b), expected)
            np.testing.assert_array_equal(planes_touched(a[:, :, ::2], b[:, :, ::2]),
                                          a[:, :, ::2].any(axis=(1, 2))
                                          | b[:, :, ::2].any(axis=(1, 2)))
    lone = np.zeros((4, 8, 8), bool)
    lone[2, 7, 7] = True  # the last bit of a plane's last word
    np.testing.assert_array_equal(planes_touched(lone, np.zeros_like(lone)),
                                  [False, False, True, False])
