"""HU accuracy of a synthetic CT against the real CT (SynthRAD conventions).

Public API: :func:`hu_metrics` (pure function on :class:`qa.volume.Volume`), its result
records (:class:`HUResult`, :class:`TissueResult`, :class:`BlandAltman`,
:class:`ErrorHistogram`) and the thin :class:`HUAccuracyCheck` used by the engine.

Sign convention: error = sCT - CT (HU); positive means the synthetic CT is too high.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass

from checks import _hu_core as core
from checks.base import Check, CheckOutput, Measurement, MetricInfo, Slot
from qa.errors import QAInputError
from qa.volume import Volume

__all__ = [
    "DEFAULT_TISSUE_THRESHOLDS_HU", "DEFAULT_ERROR_EDGES_HU", "DEFAULT_CLIP_RANGE_HU",
    "TissueResult", "BlandAltman", "ErrorHistogram", "HUResult", "hu_metrics",
    "HUAccuracyCheck",
]

logger = logging.getLogger(__name__)

#: Tissue classes on the reference CT, half-open ``[lower, upper)`` in HU. Fat and soft
#: tissue follow the adipose (-190..-30 HU) and skeletal-muscle (-29..+150 HU) windows of
#: Mitsiopoulos et al. 1998, rounded to -200 / -30 / 150; below -200 HU is air or lung,
#: from 150 HU on is counted as bone (sCT papers use 150-300 HU: no standard exists).
DEFAULT_TISSUE_THRESHOLDS_HU: Mapping[str, tuple[float, float]] = MappingProxyType({
    "air_lung": (-math.inf, -200.0),
    "fat": (-200.0, -30.0),
    "soft_tissue": (-30.0, 150.0),
    "bone": (150.0, math.inf),
})
#: Fixed error-histogram edges, -1000 ... 1000 HU in 10 HU steps (200 bins).
DEFAULT_ERROR_EDGES_HU: tuple[float, ...] = tuple(float(e) for e in range(-1000, 1001, 10))
#: SynthRAD2025 clip range (data range 4095 HU); SynthRAD2023 used (-1024, 3000).
DEFAULT_CLIP_RANGE_HU: tuple[float, float] = (-1024.0, 3071.0)
_LOA_Z = 1.96
_SLOT_OF_INPUT = {"ct": "reference", "sct": "evaluated", "mask": "mask"}


@dataclass(frozen=True)
class TissueResult:
    """Errors over the mask voxels whose REFERENCE CT value is in ``[lower_hu, upper_hu)``.

    ``n_voxels == 0`` gives ``mae_hu = me_hu = NaN`` (not an error).
    """

    name: str
    lower_hu: float
    upper_hu: float
    n_voxels: int
    mae_hu: float
    me_hu: float


@dataclass(frozen=True)
class BlandAltman:
    """Voxelwise Bland-Altman agreement of sCT with CT: bias and 95 % limits (HU)."""

    bias_hu: float
    sd_hu: float
    loa_lower_hu: float
    loa_upper_hu: float


@dataclass(frozen=True)
class ErrorHistogram:
    """Counts of sCT - CT on fixed half-open bins ``[edges[i], edges[i+1])`` (HU).

    ``underflow`` counts errors below ``edges[0]``, ``overflow`` errors ``>= edges[-1]``;
    ``sum(counts) + underflow + overflow`` is the number of evaluated voxels, so the
    histograms of many cases with the same edges can be summed.
    """

    edges_hu: tuple[float, ...]
    counts: tuple[int, ...]
    underflow: int
    overflow: int


@dataclass(frozen=True)
class HUResult:
    """HU accuracy of one sCT/CT pair (all errors sCT - CT, in HU unless named otherwise)."""

    mae_hu: float
    me_hu: float
    rmse_hu: float
    psnr_db: float
    ssim: float
    n_voxels: int
    data_range_hu: float
    clip_range_hu: tuple[float, float]
    tissues: tuple[TissueResult, ...]
    bland_altman: BlandAltman
    error_histogram: ErrorHistogram
    warnings: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; every non-finite float (unbounded threshold, undefined
        metric, infinite PSNR) becomes ``None`` (JSON ``null``)."""
        return core.json_clean(asdict(self))


def hu_metrics(
    ct: Volume,
    sct: Volume,
    mask: Volume | None = None,
    *,
    tissue_thresholds_hu: Mapping[str, Sequence[float | None]] = DEFAULT_TISSUE_THRESHOLDS_HU,
    clip_range_hu: Sequence[float] = DEFAULT_CLIP_RANGE_HU,
    ssim_crop_voxels: int = 3,
    histogram_edges_hu: Sequence[float] = DEFAULT_ERROR_EDGES_HU,
    resample: bool = False,
    workers: int = 1,
) -> HUResult:
    """Voxelwise HU agreement of a synthetic CT with the real CT inside a mask.

    Parameters
    ----------
    ct : Volume
        Reference (real) CT, HU, shape (Z, Y, X).
    sct : Volume
        Synthetic CT, HU. Must be on ``ct``'s grid unless ``resample`` is True.
    mask : Volume, optional
        Boolean-like (bool, or numbers that are only 0/1) body mask on ``ct``'s grid.
        ``None`` evaluates the whole volume.
    tissue_thresholds_hu : mapping name -> (lower_hu, upper_hu)
        Tissue classes on the reference CT, half-open ``[lower, upper)``, in increasing HU
        order and not overlapping (gaps allowed); ``None`` or ``±inf`` is unbounded.
    clip_range_hu : (lower_hu, upper_hu)
        Clip range for PSNR and SSIM; the data range is ``upper - lower`` (default
        SynthRAD2025 (-1024, 3071) -> 4095 HU; SynthRAD2023 used (-1024, 3000) -> 4024).
    ssim_crop_voxels : int
        Voxels dropped at each edge of every axis before averaging the SSIM map (3).
    histogram_edges_hu : sequence of float
        Fixed, strictly increasing edges of the error histogram (HU).
    resample : bool
        If True, ``sct`` is resampled (trilinear) and ``mask`` (nearest) onto ``ct``'s
        grid; mask voxels outside the sCT's extent are excluded with a warning.
    workers : int
        Threads for the slab-wise SSIM (scikit-image/SciPy release the GIL). Default 1;
        the engine parallelises over cases.

    Returns
    -------
    HUResult
        See the record. ``psnr_db`` is ``inf`` when the clipped images are identical;
        ``ssim`` is NaN (with a message in ``warnings``) when the volume is smaller than the
        7-voxel SSIM window, or no mask voxel survives the crop.

    Raises
    ------
    qa.volume.GridMismatchError
        Grids differ and ``resample`` is False.
    ValueError
        Bad option; mask not boolean-like or empty; NaN/inf in ``ct`` or ``sct`` inside the
        mask (the message gives the count).

    Notes
    -----
    With m the mask and e = sCT - CT, over the N = Σm evaluated voxels (float64 sums):

    * MAE = Σ|e|·m / N, ME = Σe·m / N, RMSE = sqrt(Σe²·m / N), no clipping (SynthRAD [1]_).
    * PSNR = 10·log10(R² / MSE_c), R = clip_hi - clip_lo, MSE_c the mean squared error of
      the images clipped to ``clip_range_hu``, over the mask (SynthRAD2023/2025 [1]_ [2]_;
      equal to ``skimage.metrics.peak_signal_noise_ratio`` on the masked clipped voxels).
    * SSIM (Wang et al. [3]_) as in SynthRAD2023's ``ImageMetrics.ssim`` [2]_: clip, set
      outside-mask voxels to clip_lo, shift by -clip_lo, 3-D ``structural_similarity``
      (7-voxel uniform window, data_range R, full map), mean of the map over the mask after
      cropping ``ssim_crop_voxels`` at each edge. SynthRAD2025 ranks on a masked
      multi-scale SSIM instead [1]_; this single-scale SSIM is not that number.
    * Bland-Altman [4]_: bias = ME, SD with ddof = 1, limits bias ± 1.96·SD. Voxel errors
      are spatially correlated, so read the limits as a spread, not as a confidence claim.
    * Tissue classes use the REFERENCE CT value of each voxel.

    References
    ----------
    .. [1] SynthRAD2025 evaluation, ``image_metrics.py``,
           https://github.com/SynthRAD2025/evaluation (dynamic range [-1024, 3071]).
    .. [2] Huijben et al., "Generating synthetic computed tomography for radiotherapy:
           SynthRAD2023 challenge report", Med Image Anal 97:103276 (2024),
           doi:10.1016/j.media.2024.103276; code https://github.com/SynthRAD2023/metrics.
    .. [3] Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error
           visibility to structural similarity", IEEE TIP 13(4):600-612 (2004),
           doi:10.1109/TIP.2003.819861.
    .. [4] Bland & Altman, Lancet 327(8476):307-310 (1986),
           doi:10.1016/S0140-6736(86)90837-8.

    Examples
    --------
    >>> import numpy as np
    >>> from qa.volume import Volume
    >>> ct = Volume(np.zeros((8, 8, 8)), spacing=(2.0, 1.0, 1.0))
    >>> r = hu_metrics(ct, ct.with_array(ct.array + 25.0))
    >>> r.mae_hu, r.me_hu, r.rmse_hu, r.bland_altman.sd_hu
    (25.0, 25.0, 25.0, 0.0)
    """
    tissues = core.normalise_thresholds(tissue_thresholds_hu)
    clip_lo, clip_hi = core.normalise_clip_range(clip_range_hu)
    edges = core.normalise_edges(histogram_edges_hu)
    if isinstance(ssim_crop_voxels, bool) or not isinstance(ssim_crop_voxels, (int, np.integer)) \
            or ssim_crop_voxels < 0:
        raise ValueError(f"ssim_crop_voxels must be an integer >= 0, got {ssim_crop_voxels!r}.")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}.")
    ct_arr, sct_arr, mask_arr, notes = core.aligned_arrays(ct, sct, mask, resample=resample)
    warnings = list(notes)

    stats = core.voxel_statistics(ct_arr, sct_arr, mask_arr, tissues=tissues,
                                  clip_lo=clip_lo, clip_hi=clip_hi, edges=edges)
    bad = [(name, count) for name, count in (("ct", stats.nonfinite_ct),
                                             ("sct", stats.nonfinite_sct)) if count]
    if bad:
        raise core.HUInputError(
            "; ".join(f"{name} has {count} non-finite value(s) (NaN or inf) inside the mask"
                      for name, count in bad)
            + "; expected finite HU wherever metrics are evaluated. Fix the image, or "
            "exclude those voxels from the mask.", bad[0][0])
    n = stats.n
    data_range = clip_hi - clip_lo
    mse_clipped = stats.sum_sq_clipped / n
    if mse_clipped == 0.0:
        psnr = math.inf
        warnings.append("sCT equals CT inside the mask after clipping: PSNR is infinite.")
    else:
        psnr = 10.0 * math.log10(data_range**2 / mse_clipped)
    ssim, ssim_note = core.masked_ssim(ct_arr, sct_arr, mask_arr, clip_lo=clip_lo,
                                       clip_hi=clip_hi, crop_voxels=int(ssim_crop_voxels),
                                       workers=int(workers))
    if ssim_note:
        warnings.append(ssim_note)

    me = stats.sum_err / n
    if n > 1:
        sd = math.sqrt(max(stats.m2_err, 0.0) / (n - 1))
    else:
        sd = math.nan
        warnings.append("only one voxel evaluated: Bland-Altman SD and limits are NaN.")
    tissue_results = tuple(
        TissueResult(
            name=name, lower_hu=lower, upper_hu=upper, n_voxels=int(count),
            mae_hu=float(s_abs / count) if count else math.nan,
            me_hu=float(s_err / count) if count else math.nan,
        )
        for (name, lower, upper), count, s_abs, s_err in zip(
            tissues, stats.tissue_n, stats.tissue_sum_abs, stats.tissue_sum_err, strict=True)
    )
    for note in warnings:
        logger.warning("hu_metrics: %s", note)
    return HUResult(
        mae_hu=stats.sum_abs / n,
        me_hu=me,
        rmse_hu=math.sqrt(stats.sum_sq / n),
        psnr_db=psnr,
        ssim=ssim,
        n_voxels=n,
        data_range_hu=data_range,
        clip_range_hu=(clip_lo, clip_hi),
        tissues=tissue_results,
        bland_altman=BlandAltman(bias_hu=me, sd_hu=sd, loa_lower_hu=me - _LOA_Z * sd,
                                 loa_upper_hu=me + _LOA_Z * sd),
        error_histogram=ErrorHistogram(
            edges_hu=tuple(float(e) for e in edges),
            counts=tuple(int(c) for c in stats.hist_counts),
            underflow=stats.underflow, overflow=stats.overflow,
        ),
        warnings=tuple(warnings),
    )


# -- the check the engine runs ---------------------------------------------------------------

def _default_thresholds() -> dict[str, tuple[float | None, float | None]]:
    return {name: (_bound_or_none(lo), _bound_or_none(hi))
            for name, (lo, hi) in DEFAULT_TISSUE_THRESHOLDS_HU.items()}


@pydantic_dataclass(config=ConfigDict(extra="forbid", frozen=True))
class HUAccuracyOptions:
    """Options of ``hu_accuracy`` as written in the protocol YAML.

    ``tissue_thresholds_hu``: name -> [lower_hu, upper_hu] (half-open, ``null`` =
    unbounded), in increasing order; ``clip_range_hu``: [lower, upper] for PSNR/SSIM;
    ``ssim_crop_voxels``: edge crop before averaging SSIM; ``resample``: resample sCT and
    mask onto the CT grid instead of failing on a grid mismatch.
    """

    tissue_thresholds_hu: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=_default_thresholds)
    clip_range_hu: tuple[float, float] = DEFAULT_CLIP_RANGE_HU
    ssim_crop_voxels: int = Field(default=3, ge=0)
    resample: bool = False

    @field_validator("tissue_thresholds_hu")
    @classmethod
    def _check_thresholds(cls, value: dict) -> dict:
        core.normalise_thresholds(value)
        return value

    @field_validator("clip_range_hu")
    @classmethod
    def _check_clip(cls, value: tuple[float, float]) -> tuple[float, float]:
        return core.normalise_clip_range(value)


class HUAccuracyCheck(Check):
    """Thin check around :func:`hu_metrics`: one case in, measurement rows out."""

    name: ClassVar[str] = "hu_accuracy"
    title: ClassVar[str] = "HU accuracy of synthetic CT"
    slots: ClassVar[dict[str, Slot]] = {
        "reference": Slot("image", True, "the real CT (HU)"),
        "evaluated": Slot("image", True, "the synthetic CT (HU)"),
        "mask": Slot("mask", False, "body mask; whole volume when absent"),
    }
    metrics: ClassVar[dict[str, MetricInfo]] = {
        "mae_hu": MetricInfo("HU", "mean absolute error |sCT - CT| inside the mask"),
        "me_hu": MetricInfo("HU", "mean error sCT - CT inside the mask (bias)", "zero"),
        "rmse_hu": MetricInfo("HU", "root-mean-square error inside the mask"),
        "psnr_db": MetricInfo("dB", "PSNR on values clipped to clip_range_hu", "higher"),
        "ssim": MetricInfo("1", "SynthRAD masked SSIM (clipped, 3-D, 7-voxel window)",
                           "higher"),
        "ba_loa_lower_hu": MetricInfo("HU", "Bland-Altman lower limit: bias - 1.96 SD",
                                      "zero"),
        "ba_loa_upper_hu": MetricInfo("HU", "Bland-Altman upper limit: bias + 1.96 SD",
                                      "zero"),
        "n_voxels": MetricInfo("voxels", "voxels evaluated (inside the mask)", "higher"),
    }
    Options: ClassVar[type] = HUAccuracyOptions

    def run(self, inputs: dict[str, Any]) -> CheckOutput:
        """Measurements for one case from ``{"reference", "evaluated", "mask"?}`` volumes.

        A problem with one input (grid mismatch, NaN, empty or non-binary mask) is raised
        as a ``ValueError`` (``GridMismatchError`` for grids) whose message starts with
        ``input '<slot>':`` so the runner can name the role and file; other problems are
        :class:`qa.errors.QAInputError` with ``check="hu_accuracy"``.
        """
        self.require_inputs(inputs)
        opts = self.options
        try:
            result = hu_metrics(
                inputs["reference"], inputs["evaluated"], inputs.get("mask"),
                tissue_thresholds_hu=opts.tissue_thresholds_hu,
                clip_range_hu=opts.clip_range_hu, ssim_crop_voxels=opts.ssim_crop_voxels,
                resample=opts.resample,
            )
        except ValueError as exc:
            slot = _SLOT_OF_INPUT.get(getattr(exc, "input_name", None))
            if slot is None:
                raise QAInputError(str(exc), check=self.name) from exc
            raise type(exc)(f"input {slot!r}: {exc}") from exc
        overall = {
            "mae_hu": result.mae_hu, "me_hu": result.me_hu, "rmse_hu": result.rmse_hu,
            "psnr_db": result.psnr_db, "ssim": result.ssim,
            "ba_loa_lower_hu": result.bland_altman.loa_lower_hu,
            "ba_loa_upper_hu": result.bland_altman.loa_upper_hu,
            "n_voxels": float(result.n_voxels),
        }
        rows = [Measurement(metric, value, self.metrics[metric].unit)
                for metric, value in overall.items()]
        for tissue in result.tissues:
            rows += [
                Measurement("mae_hu", tissue.mae_hu, "HU", tissue.name),
                Measurement("me_hu", tissue.me_hu, "HU", tissue.name),
                Measurement("n_voxels", float(tissue.n_voxels), "voxels", tissue.name),
            ]
        hist = result.error_histogram
        details = core.json_clean({
            "error_histogram": {"edges_hu": list(hist.edges_hu), "counts": list(hist.counts),
                                "underflow": hist.underflow, "overflow": hist.overflow},
            "tissue_thresholds_hu": {t.name: [t.lower_hu, t.upper_hu] for t in result.tissues},
            "clip_range_hu": list(result.clip_range_hu),
            "data_range_hu": result.data_range_hu,
            "bland_altman": asdict(result.bland_altman),
            "ssim_crop_voxels": opts.ssim_crop_voxels,
            "warnings": list(result.warnings),
        })
        return CheckOutput(measurements=tuple(rows), details=details)


def _bound_or_none(value: float) -> float | None:
    return None if math.isinf(value) else float(value)
