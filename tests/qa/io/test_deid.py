"""De-identification: no identifying DICOM attribute reaches any reader's metadata."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from qa.io import (
    DICOM_METADATA_ALLOWLIST,
    NEVER_COPIED_KEYWORDS,
    dicom_metadata,
    read_dicom_series,
    read_rtdose,
    read_rtstruct,
)
from tests.qa.io.dicom_factory import (
    IDENTIFYING,
    square_lps,
    write_rtdose,
    write_rtstruct,
    write_series,
    write_slice,
)

#: Keys the readers add themselves (not copied from DICOM).
READER_KEYS = {"format", "source_path", "n_slices", "non_finite_voxels", "warnings",
               "grid_frame_offset_convention", "roi_name", "roi_key", "roi_number",
               "roi_interpreted_type", "n_contours", "max_plane_offset_mm"}


def test_allow_list_holds_real_keywords_and_no_names_dates_or_times():
    for keyword in list(DICOM_METADATA_ALLOWLIST) + list(NEVER_COPIED_KEYWORDS):
        assert tag_for_keyword(keyword) is not None, keyword
    for keyword in DICOM_METADATA_ALLOWLIST:
        assert dictionary_VR(keyword) not in {"PN", "DA", "DT", "TM", "AS"}, keyword
    assert not set(DICOM_METADATA_ALLOWLIST) & set(NEVER_COPIED_KEYWORDS)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "OtherPatientIDs", "InstitutionName", "ReferringPhysicianName",
                    "AccessionNumber", "StudyDate", "StudyTime"):
        assert keyword in NEVER_COPIED_KEYWORDS


def test_dicom_metadata_converts_values():
    ds = Dataset()
    ds.KVP = "120"
    ds.PixelSpacing = [0.5, "0.75"]
    ds.ConvolutionKernel = ["Br40", "3"]
    ds.Manufacturer = "  ACME "
    ds.SeriesDescription = ""
    ds.PatientName = "Doe^Jane"
    assert dicom_metadata(ds) == {"kvp": 120.0, "pixel_spacing_mm": [0.5, 0.75],
                                  "convolution_kernel": ["Br40", "3"], "manufacturer": "ACME"}


def _all_metadata(tmp_path) -> list[dict]:
    frame = generate_uid()
    stored = np.zeros((2, 4, 4), np.int16)
    write_series(tmp_path / "ct", stored, origin_lps=(0, 0, 0), step_mm=2.0, frame_uid=frame,
                 extra={"KVP": 120, "CTDIvol": 7.5, "SeriesDescription": "Pelvis 2mm"})
    (tmp_path / "mr").mkdir()
    write_slice(tmp_path / "mr" / "mr.dcm", stored[0], position_lps=(0, 0, 0),
                series_uid=generate_uid(), frame_uid=frame, modality="MR",
                extra={"MagneticFieldStrength": 3.0})
    dose = write_rtdose(tmp_path / "dose.dcm", np.ones((2, 3, 3)), position_lps=(0, 0, 0),
                        offsets=[0.0, 2.0], frame_uid=frame)
    (tmp_path / "ct_small").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct_small" / "ct.dcm")
    pydicom_dose = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    pydicom_dose.DoseUnits = "GY"
    pydicom_dose.save_as(tmp_path / "pydicom_dose.dcm")
    ct = read_dicom_series(tmp_path / "ct")
    structures = write_rtstruct(tmp_path / "rs.dcm", [
        {"number": 1, "name": "Box", "contours": [("CLOSED_PLANAR",
                                                   square_lps(0.0, (1.0, 1.0), 1.0, 1.0))]}],
        frame_uid=frame)
    metadata = [ct.metadata, read_dicom_series(tmp_path / "mr").metadata,
                read_rtdose(dose).metadata, read_dicom_series(tmp_path / "ct_small").metadata,
                read_rtdose(tmp_path / "pydicom_dose.dcm").metadata]
    metadata += [v.metadata for v in read_rtstruct(structures, ct).values()]
    metadata += [v.metadata for v in read_rtstruct(get_testdata_file("rtstruct.dcm"),
                                                   ct.with_array(ct.array,
                                                                 frame_of_reference_uid=None)
                                                   ).values()]
    return metadata


def test_no_identifying_data_in_any_reader_metadata(tmp_path):
    planted = list(IDENTIFYING.values()) + [
        "CompressedSamples", "1CT1", "JFK IMAGING", "ABCD1234",  # CT_small.dcm
        "Lastname", "id11111",                                   # rtdose.dcm
        "Phantom30sep", "19691231", "dmason",                    # rtstruct.dcm
    ]
    allowed_keys = set(DICOM_METADATA_ALLOWLIST.values()) | READER_KEYS
    all_metadata = _all_metadata(tmp_path)
    assert len(all_metadata) == 7
    for metadata in all_metadata:
        assert set(metadata) <= allowed_keys, set(metadata) - allowed_keys
        text = repr(metadata)
        for value in planted:
            assert value not in text, (value, metadata)
        for keyword in NEVER_COPIED_KEYWORDS:
            assert keyword not in text


def _series(tmp_path):
    stored = np.zeros((2, 4, 4), dtype=np.int16)
    write_series(tmp_path / "ct", stored, origin_lps=(0, 0, 0), step_mm=2.0)
    return tmp_path / "ct"


def test_a_case_id_equal_to_a_patient_identifier_is_refused_without_echoing_it(tmp_path):
    import pytest

    from qa.errors import ReaderError
    from qa.io import read_image

    folder = _series(tmp_path)
    for case_id, keyword in (("SECRET-ID-123", "PatientID"), ("  doe jane ", "PatientName"),
                             ("other-id-777", "OtherPatientIDs"), ("ACC-999", "AccessionNumber")):
        with pytest.raises(ReaderError) as caught:
            read_image(folder, case_id=case_id)
        message = str(caught.value)
        assert keyword in message and caught.value.field == "case_id"
        assert "pseudonym" in message and "\n" not in message
        assert "SECRET-ID-123" not in message and "Doe" not in message


def test_a_pseudonymous_case_id_reads_normally(tmp_path):
    from qa.io import read_image

    folder = _series(tmp_path)
    assert read_image(folder, case_id="P001").shape == (2, 4, 4)
    assert read_image(folder).shape == (2, 4, 4)  # no case id: no comparison
