"""De-identification: the one allow-list of DICOM attributes our readers may copy.

Every reader in :mod:`qa.io` builds ``Volume.metadata`` from DICOM through
:func:`dicom_metadata`, which copies **only** the attributes listed in
:data:`DICOM_METADATA_ALLOWLIST`, renamed to snake_case keys with their unit in the name.
Anything else (patient name and identifiers, birth date, sex, age, institution, physicians,
operators, station, accession number, and every date and time) is never copied, whatever
the file holds. Patient attributes used for subgroup analysis (sex, age, BMI ...) come from
the case table, where the department decides what to share, never from the DICOM header.

UIDs are kept where linking needs them (``SeriesInstanceUID`` to pick a series,
``FrameOfReferenceUID`` to check that structures, doses and images share a patient
coordinate system). They are pseudonymous, and some vendors build them from the
acquisition date and time (pydicom's ``CT_small.dcm``: ``...20040119072730...``): treat them
as identifying and do not publish them outside the department.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["DICOM_METADATA_ALLOWLIST", "NEVER_COPIED_KEYWORDS", "IDENTITY_KEYWORDS",
           "dicom_metadata", "identity_match"]

#: DICOM keyword -> metadata key (unit in the name). The only attributes copied from DICOM.
DICOM_METADATA_ALLOWLIST: Mapping[str, str] = MappingProxyType({
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model_name",
    "SoftwareVersions": "software_versions",
    "SeriesDescription": "series_description",
    "SeriesInstanceUID": "series_instance_uid",
    "FrameOfReferenceUID": "frame_of_reference_uid",
    # CT acquisition and reconstruction
    "KVP": "kvp",
    "XRayTubeCurrent": "tube_current_ma",
    "Exposure": "exposure_mas",
    "ExposureTime": "exposure_time_ms",
    "CTDIvol": "ctdivol_mgy",
    "ConvolutionKernel": "convolution_kernel",
    "ReconstructionDiameter": "reconstruction_diameter_mm",
    "SliceThickness": "slice_thickness_mm",
    "SpacingBetweenSlices": "spacing_between_slices_mm",
    "PixelSpacing": "pixel_spacing_mm",
    "RescaleType": "rescale_type",
    # MR
    "MagneticFieldStrength": "field_strength_t",
    "RepetitionTime": "repetition_time_ms",
    "EchoTime": "echo_time_ms",
    # RT dose
    "DoseUnits": "dose_units",
    "DoseType": "dose_type",
    "DoseSummationType": "dose_summation_type",
})

#: Attributes that must never reach ``Volume.metadata`` (checked by the tests). Dates and
#: times of any kind are excluded too, as is every attribute with a PN (person name) VR.
NEVER_COPIED_KEYWORDS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientWeight", "PatientSize", "PatientAddress", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "IssuerOfPatientID", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord", "StationName",
    "AccessionNumber", "StudyID", "StudyDescription", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "InstanceCreationDate", "StructureSetDate", "StudyTime",
    "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
    "StructureSetTime", "AcquisitionDateTime", "DeviceSerialNumber",
)


def dicom_metadata(dataset: Any) -> dict[str, Any]:
    """Copy the allow-listed attributes of a pydicom dataset into a plain dict.

    Parameters
    ----------
    dataset : pydicom.Dataset
        A dataset (or any object with ``get(keyword)``).

    Returns
    -------
    dict
        ``{metadata_key: value}`` for each allow-listed attribute present and non-empty.
        Numbers (DS, IS, FD ...) become ``float``; multi-valued numbers a list of floats;
        strings are stripped ``str``; multi-valued strings a list of ``str``.
    """
    out: dict[str, Any] = {}
    for keyword, key in DICOM_METADATA_ALLOWLIST.items():
        value = _plain(dataset.get(keyword))
        if value is not None:
            out[key] = value
    return out


#: Attributes a case id must not equal: the store and the report print case ids, so the case
#: table must hold pseudonyms (issue 8). Compared in memory only, never copied or logged.
IDENTITY_KEYWORDS = ("PatientID", "PatientName", "OtherPatientIDs", "AccessionNumber")


def _normalised(text: str) -> str:
    return " ".join(text.replace("^", " ").replace("=", " ").split()).casefold()


def identity_match(dataset: Any, case_id: str) -> str | None:
    """The keyword of an identifying attribute whose value equals ``case_id``, else None.

    Comparison ignores case, surrounding and repeated blanks, and the ``^`` / ``=`` separators
    of person names (``DOE^JOHN`` equals ``doe john``). Only the keyword is returned: the value
    itself never leaves this function. An empty ``case_id`` matches nothing.
    """
    wanted = _normalised(str(case_id))
    if not wanted:
        return None
    for keyword in IDENTITY_KEYWORDS:
        value = dataset.get(keyword)
        if value is None:
            continue
        values = (value if isinstance(value, (list, tuple))
                  or type(value).__name__ == "MultiValue" else [value])
        if any(_normalised(str(v)) == wanted for v in values if v is not None):
            return keyword
    return None


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a DICOM value (``None`` when empty)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [_plain(v) for v in value]
        items = [v for v in items if v is not None]
        return items or None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    return text or None
