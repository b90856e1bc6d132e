"""Specification: large masks build their two surfaces one after the other, same values.

``compare_masks`` builds the two exact surfaces side by side (two threads) only while their
estimated temporaries stay under ``CONCURRENT_SURFACES_MAX_BYTES``; a body-sized pair is
built sequentially so that their temporaries do not add up. The order must not change a
single value.
"""

from __future__ import annotations

import numpy as np

import checks.segmentation as segmentation
from qa.volume import Volume


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + \
        ((x - centre[2]) / radii[2]) ** 2 <= 1


def test_sequential_and_concurrent_surfaces_give_identical_results(monkeypatch):
    shape, spacing = (24, 40, 44), (1.5, 0.977, 0.977)
    reference = Volume(_ellipsoid(shape, (12, 20, 22), (9, 15, 17)), spacing)
    predicted = Volume(_ellipsoid(shape, (12.6, 19.2, 23.1), (8.5, 16, 15.5)), spacing)
    results = {}
    for mode, budget in (("concurrent", 1 << 62), ("sequential", 0)):
        monkeypatch.setattr(segmentation, "CONCURRENT_SURFACES_MAX_BYTES", budget)
        results[mode] = segmentation.compare_masks(reference, predicted, 2.0).to_dict()
    assert results["sequential"] == results["concurrent"]
    assert 0.8 < results["sequential"]["dice"] < 1.0  # a real, imperfect overlap


def test_the_budget_sends_a_body_sized_box_to_sequential_surfaces():
    body_box_voxels = 300 * 276 * 398  # the union box of a body contour on a 512x512x300 CT
    organ_box_voxels = 60 * 90 * 90
    per_pair = 2 * segmentation._SURFACE_BYTES_PER_VOXEL
    assert body_box_voxels * per_pair > segmentation.CONCURRENT_SURFACES_MAX_BYTES
    assert organ_box_voxels * per_pair <= segmentation.CONCURRENT_SURFACES_MAX_BYTES
