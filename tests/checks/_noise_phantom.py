"""Simulated phantom series shared by the noise, ct_number and noise_dose tests (cached)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from fixtures.ct_simulator import (
    INSERT_DIAMETER_MM,
    INSERTS,
    NOISE_ROIS_MM,
    Acquisition,
    Scanner,
    insert_position_mm,
)
from qa.volume import Volume

ACQ = Acquisition()
SLICE_MM = 5.0
INSERT_OPTIONS = {name: {"position_mm": insert_position_mm(name),
                         "diameter_mm": INSERT_DIAMETER_MM} for name in INSERTS}
TASKS = {"lc_10hu_5mm": {"contrast_hu": 10.0, "diameter_mm": 5.0, "ttf_insert": "acrylic"}}
NOISE_OPTIONS = {"noise_rois": NOISE_ROIS_MM, "roi_size_mm": 30.0, "inserts": INSERT_OPTIONS,
                 "tasks": TASKS}


@lru_cache(maxsize=1)
def scanner() -> Scanner:
    return Scanner(ACQ)


@lru_cache(maxsize=64)
def fbp_stack(ctdivol_mgy: float, seed: int, n_slices: int = 3) -> np.ndarray:
    stack = scanner().series_hu(ctdivol_mgy, n_slices, np.random.default_rng(seed))
    stack.setflags(write=False)
    return stack


def smoothed(stack: np.ndarray, sigma_px: float = 1.2) -> np.ndarray:
    """A crude 'DL' stand-in: in-plane Gaussian smoothing (lower σ, NPS moved low)."""
    return ndimage.gaussian_filter(stack, sigma=(0, sigma_px, sigma_px))


def volume(stack: np.ndarray, ctdivol_mgy: float | None) -> Volume:
    meta = {} if ctdivol_mgy is None else {"ctdivol_mgy": float(ctdivol_mgy)}
    return Volume(np.asarray(stack, dtype=np.float32), (SLICE_MM, ACQ.pixel_mm, ACQ.pixel_mm),
                  metadata=meta)
