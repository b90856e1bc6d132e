"""Structure sets: every way a case can hold several named masks, read into one dict.

:func:`read_structures` returns ``{name: boolean Volume}`` from

* an RTSTRUCT file (``.dcm``): ROIs rasterised on ``reference``'s grid
  (:func:`qa.io.read_rtstruct`);
* a folder of mask files (``bladder.nii.gz``, ``rectum.mha`` ...): one structure per file,
  named after the file (suffixes removed);
* a label map (NIfTI / MetaImage / NRRD) with a JSON label table beside it
  (``labels.nii.gz`` + ``labels.json`` holding ``{"1": "bladder", "2": "rectum"}``).

Each mask's metadata carries ``roi_name`` (as written) and ``roi_key``
(:func:`qa.io.normalise_roi_name`) so checks can match names across sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qa.errors import ReaderError
from qa.io.images import SUPPORTED_IMAGE_SUFFIXES, read_image, read_mask
from qa.io.rtstruct import normalise_roi_name, read_rtstruct
from qa.volume import Volume

__all__ = ["read_structures", "read_label_map", "split_label_map", "structure_metadata"]


def read_structures(path: str | Path, *, reference: Volume | None = None) -> dict[str, Volume]:
    """Read a structure set (RTSTRUCT, folder of masks, or label map + JSON table).

    Parameters
    ----------
    path : str or Path
        The RTSTRUCT ``.dcm``, the folder, or the label-map file.
    reference : Volume, optional
        Grid on which RTSTRUCT contours are rasterised (required for RTSTRUCT, ignored
        otherwise).

    Returns
    -------
    dict
        Structure name (as written) -> boolean Volume, in a stable order (RTSTRUCT order,
        file names sorted, label values ascending).

    Raises
    ------
    ReaderError
        Missing path, RTSTRUCT without a reference grid, label map without its JSON table,
        a label table that does not parse, a folder without mask files, two files giving the
        same structure name.
    """
    path = Path(path)
    if not path.exists():
        raise ReaderError("structure set not found; check the path in the case table, "
                          "relative to the table's folder", path=str(path))
    if path.is_dir():
        return _read_folder(path)
    if path.suffix.lower() == ".dcm":
        if reference is None:
            raise ReaderError("an RTSTRUCT needs a reference grid to be rasterised on; bind "
                              "the check's image or dose slot as well", path=str(path))
        return read_rtstruct(path, reference)
    return _read_label_map(path)


def structure_metadata(volume: Volume, name: str) -> Volume:
    """``volume`` with ``roi_name`` / ``roi_key`` metadata set for ``name``."""
    return volume.with_array(volume.array, roi_name=name, roi_key=normalise_roi_name(name))


def _read_folder(folder: Path) -> dict[str, Volume]:
    structures: dict[str, Volume] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and _image_suffix(p))
    if not files:
        raise ReaderError(f"no mask file in this folder (looked for "
                          f"{', '.join(SUPPORTED_IMAGE_SUFFIXES)})", path=str(folder))
    for file in files:
        name = file.name[: -len(_image_suffix(file))]
        if name in structures:
            raise ReaderError(f"two files give structure {name!r}; keep one",
                              path=str(file))
        structures[name] = structure_metadata(read_mask(file), name)
    return structures


def _read_label_map(path: Path) -> dict[str, Volume]:
    suffix = _image_suffix(path)
    if not suffix:
        raise ReaderError(f"not a structure set: expected an RTSTRUCT .dcm, a folder of masks "
                          f"or a label map ({', '.join(SUPPORTED_IMAGE_SUFFIXES)})",
                          path=str(path))
    table_path = path.with_name(path.name[: -len(suffix)] + ".json")
    if not table_path.is_file():
        raise ReaderError(f"a label map needs its label table {table_path.name} beside it, "
                          'e.g. {"1": "bladder", "2": "rectum"}', path=str(path))
    try:
        table = json.loads(table_path.read_text(encoding="utf-8"))
        labels = {int(k): str(v) for k, v in table.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ReaderError(f"label table does not parse ({exc}); write a JSON object mapping "
                          'label values to names, e.g. {"1": "bladder"}',
                          path=str(table_path)) from None
    if len(set(labels.values())) != len(labels):
        raise ReaderError("the label table gives one name to several labels",
                          path=str(table_path))
    return read_label_map(path, labels)


def read_label_map(path: str | Path, labels: dict[int, str]) -> dict[str, Volume]:
    """Read a label-map image and split it with ``labels`` (value -> name), given by the
    protocol (``roles.<role>.labels``) or by the JSON table beside the file."""
    try:
        return split_label_map(read_image(path), labels)
    except ValueError as exc:
        raise ReaderError(str(exc), path=str(path)) from None


def split_label_map(label_map: Volume, labels: dict[int, str]) -> dict[str, Volume]:
    """One boolean mask per listed label of an integer label map (other values: background).

    Parameters
    ----------
    label_map : Volume
        Integer labels (a float array must hold whole numbers, e.g. a model's output).
    labels : dict
        Label value -> structure name.

    Returns
    -------
    dict
        Name -> boolean Volume on the label map's grid, in ascending label order; a label
        absent from the image gives an empty mask (the structure was not found).

    Raises
    ------
    ValueError
        When the map holds non-integer or non-finite values.
    """
    array = np.asarray(label_map.array)
    if array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)):
        raise ValueError("label map holds non-integer values; export it as integer labels")
    return {name: structure_metadata(label_map.with_array(array == label), name)
            for label, name in sorted(labels.items())}


def _image_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return ""
