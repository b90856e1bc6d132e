"""Medical image I/O: every file enters the engine here and leaves as a :class:`qa.Volume`.

* :func:`read_image` — NIfTI / MetaImage / NRRD (SimpleITK), a DICOM series folder, or an
  RTDOSE ``.dcm``;
* :func:`read_mask` — a mask or label map as a boolean volume;
* :func:`write_nifti` — NIfTI output with exact geometry;
* :func:`read_dicom_series` — CT/MR slices (pydicom), rescaled to float32;
* :func:`read_rtdose` — RT Dose in Gy; :func:`read_dose` — RTDOSE or NIfTI/MHA/NRRD dose,
  refusing NaN/inf and negative values;
* :func:`read_rtstruct` / :func:`normalise_roi_name` — RT Structure Set ROIs rasterised on a
  reference grid;
* :func:`read_structures` — a structure set (RTSTRUCT, folder of masks, label map + JSON).

Readers copy DICOM attributes only through the allow-list in :mod:`qa.io.deid`, and raise
:class:`qa.errors.ReaderError` naming the file and the field for any input a user can fix.
Conventions are described in ``docs/io.md``.
"""

from qa.io.deid import DICOM_METADATA_ALLOWLIST, NEVER_COPIED_KEYWORDS, dicom_metadata
from qa.io.dicom_series import read_dicom_series
from qa.io.images import SUPPORTED_IMAGE_SUFFIXES, read_image, read_mask, write_nifti
from qa.io.rtdose import read_dose, read_rtdose
from qa.io.rtstruct import normalise_roi_name, read_rtstruct
from qa.io.structures import read_structures

__all__ = [
    "read_image", "read_mask", "write_nifti", "read_dicom_series", "read_rtdose", "read_dose",
    "read_rtstruct", "read_structures", "normalise_roi_name", "dicom_metadata",
    "DICOM_METADATA_ALLOWLIST", "NEVER_COPIED_KEYWORDS", "SUPPORTED_IMAGE_SUFFIXES",
]
