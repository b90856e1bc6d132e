"""Small overlay payload for the report: one axial CT slice with both contours.

Pure computation (no plotting): the check stores it in its details so the report can draw
the worst case of each structure without reading images again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["overlay_payload", "OVERLAY_MAX_PIXELS", "OVERLAY_WINDOW_HU"]

#: Largest side of the stored patch, in pixels (the patch is subsampled to fit).
OVERLAY_MAX_PIXELS = 64
#: Soft-tissue display window (lower, upper) in HU, mapped to grey levels 0..255.
OVERLAY_WINDOW_HU = (-160.0, 240.0)
_MARGIN_PIXELS = 8


def overlay_payload(image: np.ndarray, reference: np.ndarray, predicted: np.ndarray,
                    spacing_mm: tuple[float, float, float]) -> dict | None:
    """The axial slice where the masks disagree most, cropped, windowed and subsampled.

    Parameters
    ----------
    image : (Z, Y, X) float ndarray
        CT in HU on the masks' grid.
    reference, predicted : (Z, Y, X) bool ndarray
    spacing_mm : (3,) floats

    Returns
    -------
    dict or None
        ``slice_index``, ``grey`` (rows of 0..255 integers), ``pixel_mm`` (y, x size of a
        stored pixel), ``reference`` / ``predicted``: contour polylines as lists of
        [row, col] in stored-pixel units; ``window_hu``. None when both masks are empty.
    """
    from skimage.measure import find_contours

    union = reference | predicted
    if not union.any():
        return None
    disagreement = np.count_nonzero(reference ^ predicted, axis=(1, 2))
    z = int(np.argmax(disagreement)) if disagreement.any() else int(
        np.argmax(np.count_nonzero(union, axis=(1, 2))))
    rows = np.flatnonzero(union[z].any(axis=1))
    cols = np.flatnonzero(union[z].any(axis=0))
    r0 = max(int(rows[0]) - _MARGIN_PIXELS, 0)
    r1 = min(int(rows[-1]) + _MARGIN_PIXELS + 1, image.shape[1])
    c0 = max(int(cols[0]) - _MARGIN_PIXELS, 0)
    c1 = min(int(cols[-1]) + _MARGIN_PIXELS + 1, image.shape[2])
    step = max(1, int(np.ceil(max(r1 - r0, c1 - c0) / OVERLAY_MAX_PIXELS)))
    patch = image[z, r0:r1:step, c0:c1:step].astype(float)
    lo, hi = OVERLAY_WINDOW_HU
    grey = np.clip((patch - lo) / (hi - lo) * 255.0, 0, 255).round().astype(int)

    def contours(mask: np.ndarray) -> list[list[list[float]]]:
        plane = np.pad(mask[z, r0:r1, c0:c1].astype(float), 1)
        lines = find_contours(plane, 0.5)
        return [np.round((line - 1.0) / step, 2).tolist() for line in lines]

    return {"slice_index": z, "grey": grey.tolist(),
            "pixel_mm": [spacing_mm[1] * step, spacing_mm[2] * step],
            "reference": contours(reference), "predicted": contours(predicted),
            "window_hu": list(OVERLAY_WINDOW_HU)}
