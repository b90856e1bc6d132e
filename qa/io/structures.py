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

The set is a read-only :class:`StructureSet` mapping whose masks are produced when asked
for, not when the set is read: names, order and every array and metadata value are those of
reading all masks at once, but a check that walks the set structure by structure holds one
mask at a time (ten boolean masks on a 512x512x300 CT grid are 750 MiB). A label map is kept
once, as its integer array, and ``labels == value`` is computed on access; mask files are
read on access; an RTSTRUCT is parsed once and its ROIs rasterised on access. No mask is
cached, so asking twice reads twice. What can be checked without the masks (paths, the label
table, the RTSTRUCT's ROI table, its frames of reference) is checked by
:func:`read_structures` itself; a member that fails later raises
:class:`~qa.errors.ReaderError` naming the structure and the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from qa.errors import QAInputError, ReaderError
from qa.io.images import SUPPORTED_IMAGE_SUFFIXES, read_image, read_mask
from qa.io.rtstruct import normalise_roi_name, rtstruct_rasteriser
from qa.volume import Volume

__all__ = ["StructureSet", "read_structures", "read_label_map", "split_label_map",
           "structure_metadata"]


class StructureSet(Mapping[str, Volume]):
    """Read-only mapping structure name -> boolean Volume, each mask produced on access.

    Parameters
    ----------
    names : sequence of str
        The structure names, in the set's order.
    load : callable
        ``load(name)`` returns the mask of ``name`` (a new Volume each call).
    sources : mapping of str to str
        Name -> the file its mask comes from (for error messages).
    role : str, optional
        The case-table role holding the set (for error records); the engine sets it.

    ``len``, iteration, ``in`` and ``keys`` never read a mask; ``set[name]``, ``items``,
    ``values`` and ``get`` read (or compute) it each time and keep no reference to it.
    """

    def __init__(self, names: Sequence[str], load: Callable[[str], Volume], *,
                 sources: Mapping[str, str], role: str | None = None) -> None:
        self._names = tuple(names)
        self._known = frozenset(self._names)
        self._load = load
        self._sources = dict(sources)
        self.role = role

    def __getitem__(self, name: str) -> Volume:
        if not isinstance(name, str) or name not in self._known:
            raise KeyError(name)
        source = self._sources.get(name)
        try:
            return self._load(name)
        except QAInputError as exc:
            raise ReaderError(f"structure {name!r}: {exc.message}", path=exc.path or source,
                              field=exc.field, role=exc.role or self.role) from exc
        except (OSError, ValueError, RuntimeError) as exc:  # SimpleITK raises RuntimeError
            detail = " ".join(str(exc).split())  # one line in the error table
            raise ReaderError(f"structure {name!r} could not be read "
                              f"({type(exc).__name__}: {detail}); check or re-export this file",
                              path=source, role=self.role) from exc

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"StructureSet({list(self._names)!r})"


def read_structures(path: str | Path, *, reference: Volume | None = None) -> StructureSet:
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
    StructureSet
        Structure name (as written) -> boolean Volume, in a stable order (RTSTRUCT order,
        file names sorted, label values ascending); each mask is read on access (module
        docstring).

    Raises
    ------
    ReaderError
        Missing path, RTSTRUCT without a reference grid, label map without its JSON table,
        a label table that does not parse, a folder without mask files, two files giving the
        same structure name, an RTSTRUCT refused by :func:`qa.io.read_rtstruct` (not an
        RTSTRUCT, truncated, two ROIs of one name, another frame of reference). Later, on
        access: a mask file that does not read, naming the structure.
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
        return _read_rtstruct_lazily(path, reference)
    return _read_label_map(path)


def structure_metadata(volume: Volume, name: str) -> Volume:
    """``volume`` with ``roi_name`` / ``roi_key`` metadata set for ``name``."""
    return volume.with_array(volume.array, roi_name=name, roi_key=normalise_roi_name(name))


def _read_folder(folder: Path) -> StructureSet:
    files_of: dict[str, Path] = {}
    files = sorted(p for p in folder.iterdir() if p.is_file() and _image_suffix(p))
    if not files:
        raise ReaderError(f"no mask file in this folder (looked for "
                          f"{', '.join(SUPPORTED_IMAGE_SUFFIXES)})", path=str(folder))
    for file in files:
        name = file.name[: -len(_image_suffix(file))]
        if name in files_of:
            raise ReaderError(f"two files give structure {name!r}; keep one",
                              path=str(file))
        files_of[name] = file

    def load(name: str) -> Volume:
        return structure_metadata(read_mask(files_of[name]), name)

    return StructureSet(list(files_of), load,
                        sources={name: str(file) for name, file in files_of.items()})


def _read_rtstruct_lazily(path: Path, reference: Volume) -> StructureSet:
    """The ROIs :func:`read_rtstruct` would rasterise, each rasterised on access (the file is
    parsed and every refusal raised now; its contours are kept, not its masks)."""
    names, rasterise = rtstruct_rasteriser(path, reference)
    return StructureSet(names, rasterise, sources=dict.fromkeys(names, str(path)))


def _read_label_map(path: Path) -> StructureSet:
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


def read_label_map(path: str | Path, labels: dict[int, str]) -> StructureSet:
    """Read a label-map image and split it with ``labels`` (value -> name), given by the
    protocol (``roles.<role>.labels``) or by the JSON table beside the file."""
    try:
        return split_label_map(read_image(path), labels, source=str(path))
    except ValueError as exc:
        raise ReaderError(str(exc), path=str(path)) from None


def split_label_map(label_map: Volume, labels: dict[int, str], *,
                    source: str | None = None) -> StructureSet:
    """One boolean mask per listed label of an integer label map (other values: background).

    Parameters
    ----------
    label_map : Volume
        Integer labels (a float array must hold whole numbers, e.g. a model's output).
    labels : dict
        Label value -> structure name.
    source : str, optional
        The file the map was read from (named in errors).

    Returns
    -------
    StructureSet
        Name -> boolean Volume on the label map's grid, in ascending label order; a label
        absent from the image gives an empty mask (the structure was not found). The set
        keeps the map once (a float map of whole numbers as the smallest integer type that
        holds it: the same ``==`` results) and computes ``map == label`` on access.

    Raises
    ------
    ValueError
        When the map holds non-integer or non-finite values.
    """
    array = np.asarray(label_map.array)
    if array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)):
        raise ValueError("label map holds non-integer values; export it as integer labels")
    array = _as_integers(array)
    grid = label_map.with_array(array)
    label_of = {name: label for label, name in sorted(labels.items())}

    def load(name: str) -> Volume:
        return structure_metadata(grid.with_array(array == label_of[name]), name)

    return StructureSet(list(label_of), load,
                        sources=dict.fromkeys(label_of, source) if source else {})


def _as_integers(array: np.ndarray) -> np.ndarray:
    """A float array of whole numbers as the smallest signed integer type holding its
    range (``array == label`` unchanged for every label); other arrays (integers, or
    floats holding inf) as they are."""
    if array.dtype.kind != "f" or array.size == 0:
        return array
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        return array
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype)
    return array


def _image_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_IMAGE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return ""
