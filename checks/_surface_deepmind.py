"""Surface elements and distances exactly as DeepMind's ``surface-distance`` computes them.

``method="deepmind"`` of :func:`checks.segmentation.compare_masks`. Surfels sit on the
corners of the voxel grid (half a voxel off the voxel centres): a corner is a surface
point when its 2x2x2 neighbourhood is mixed; its area is the marching-cubes area of that
neighbourhood (tables of the installed surface-distance package); its distance to the other
surface is the Euclidean distance transform (scipy) to the other mask's surface corners.
Reproduces ``surface_distance.compute_surface_distances`` (v0.1, Nikolov et al. 2021,
doi:10.2196/26151) to rounding, vectorised (no Python sort of tuples).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["deepmind_surface_distances"]

_FULL = 0b11111111


def deepmind_surface_distances(
    reference: np.ndarray, predicted: np.ndarray, spacing_mm: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed surfel distances and areas of two boolean masks on one grid.

    Parameters
    ----------
    reference, predicted : (Z, Y, X) bool ndarray
        Same shape; at least one non-empty.
    spacing_mm : (3,) floats
        Voxel size (z, y, x) in mm.

    Returns
    -------
    distances_ref_to_pred_mm, areas_ref_mm2, distances_pred_to_ref_mm, areas_pred_mm2
        1-D arrays, each direction sorted by (distance, area) as the peer does. Distances
        are ``inf`` when the other mask has no surface; arrays are empty for an empty mask.
    """
    union = reference | predicted
    lo, hi = _bounding_box(union)
    # crop, then one zero layer after the box so the 2x2x2 codes cover the far corners
    crop = tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))
    shape = tuple(b - a + 2 for a, b in zip(lo, hi, strict=True))
    spacing = tuple(float(s) for s in spacing_mm)
    tables = _deepmind_tables()
    table = tables.create_table_neighbour_code_to_surface_area(spacing)
    kernel = tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL.astype(np.uint8)
    codes, borders = [], []
    for mask in (reference, predicted):
        padded = np.zeros(shape, np.uint8)
        padded[:-1, :-1, :-1] = mask[crop]
        code = ndimage.correlate(padded, kernel,
                                 mode="constant", cval=0)
        codes.append(code)
        borders.append((code != 0) & (code != _FULL))
    distmaps = []
    for border in borders:
        if border.any():
            distmaps.append(ndimage.distance_transform_edt(~border, sampling=spacing))
        else:
            distmaps.append(None)
    out = []
    for own, other in ((0, 1), (1, 0)):
        border = borders[own]
        areas = table[codes[own][border]]
        if distmaps[other] is None:
            distances = np.full(areas.shape, np.inf)
        else:
            distances = distmaps[other][border]
        order = np.lexsort((areas, distances))
        out += [distances[order], areas[order]]
    return out[0], out[1], out[2], out[3]


def _bounding_box(mask: np.ndarray) -> tuple[list[int], list[int]]:
    lo, hi = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]))
    return lo, hi


def _deepmind_tables():
    """DeepMind's surfel-area tables, from the installed ``surface-distance`` package.

    ``method="deepmind"`` reproduces that package's numbers, so it uses its own marching-cubes
    lookup tables rather than a transcription of them.
    """
    try:
        from surface_distance import lookup_tables
    except ImportError:
        raise ImportError("method='deepmind' reproduces DeepMind's surface-distance package "
                          "and needs it installed: pip install surface-distance (or use the "
                          "default method='exact')") from None
    return lookup_tables
