"""Refuse an image whose header claims more voxels than the file can hold, before allocating.

A corrupt or hostile NIfTI / MetaImage / NRRD header can claim 100000³ voxels; SimpleITK
would try to allocate the whole buffer (petabytes) before it notices that the file is too
short. :func:`check_declared_size` reads the header only (SimpleITK's
``ImageFileReader.ReadImageInformation``) and refuses the file when

* the header claims more than :data:`MAX_VOXELS` voxels (components included), or
* the voxel payload the header claims cannot fit in the bytes on disk: for uncompressed
  data the payload must not exceed the file size; for deflate (gzip / zlib) compressed data
  it must not exceed :data:`DEFLATE_MAX_RATIO` × the compressed size — 1032:1 is the largest
  ratio deflate can reach (RFC 1951: a 258-byte match coded in as little as 2 bits), so no
  genuine file exceeds it. For encodings where no such bound holds (bzip2 or text NRRD,
  detached NRRD data) only the voxel cap applies.

A gzip-compressed NIfTI must also hold its whole payload: ITK 5's NIfTI reader silently
fills the missing part of a truncated ``.nii.gz`` (found by the bad-input corpus), whereas
the MetaImage and NRRD readers report it. The gzip trailer's ISIZE (uncompressed size mod
2³², RFC 1952) is compared with ``vox_offset`` + payload; only when they differ (a
truncated file, or a legitimate multi-member gzip) is the file stream-decompressed once
to count its bytes, so a sound file costs a few header bytes, not a second decompression.

Private module: used by :func:`qa.io.read_image`.
"""

from __future__ import annotations

import re
from pathlib import Path

import SimpleITK as sitk  # noqa: N813 (the library's own documented alias)

from qa.errors import ReaderError

#: Largest number of voxels (× components) an image may declare: 2³¹, i.e. 8 GiB of float32.
MAX_VOXELS = 2**31
#: Largest compression ratio of deflate (RFC 1951), used for .nii.gz and zlib MetaImage.
DEFLATE_MAX_RATIO = 1032
#: Smallest NIfTI header (NIfTI-1: 348 bytes); the voxel data start after it.
_NIFTI_MIN_HEADER_BYTES = 348

_BYTES_PER_COMPONENT = {
    sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2,
    sitk.sitkUInt32: 4, sitk.sitkInt32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8,
    sitk.sitkFloat32: 4, sitk.sitkFloat64: 8,
}


def check_declared_size(path: Path, fmt: str, *, shown_path: Path | None = None) -> None:
    """Raise :class:`ReaderError` when ``path``'s header claims an impossible size.

    Parameters
    ----------
    path : Path
        The file SimpleITK will read (a ``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``).
    fmt : str
        ``"nifti"``, ``"metaimage"`` or ``"nrrd"``, for messages.
    shown_path : Path, optional
        The path named in errors (when ``path`` is a temporary link); default ``path``.

    Raises
    ------
    ReaderError
        The header cannot be read, claims more than :data:`MAX_VOXELS` voxels, or claims a
        payload larger than the file can hold (``field`` names the header's size field).
    """
    shown = str(shown_path or path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ReaderError(
            f"SimpleITK cannot read this {fmt} file "
            f"({lines[-1] if lines else type(exc).__name__}); it is truncated, corrupt or "
            f"incomplete (an .mhd needs its data file beside it): export it again",
            path=shown) from exc
    size = tuple(int(n) for n in reader.GetSize())
    components = max(1, int(reader.GetNumberOfComponents()))
    voxels = components
    for n in size:
        voxels *= n
    field = _size_field(fmt)
    if voxels > MAX_VOXELS:
        raise ReaderError(
            f"the header claims {' x '.join(map(str, size))} voxels"
            f"{f' x {components} components' if components > 1 else ''} ({voxels:.3g}), more "
            f"than the {MAX_VOXELS:.3g} this reader accepts: the header is corrupt (export the "
            f"file again) or the image too large (crop or resample it before QA)",
            path=shown, field=field)
    payload_bytes = voxels * _BYTES_PER_COMPONENT.get(reader.GetPixelID(), 1)
    available = _payload_bound_bytes(path, fmt)
    if available is not None and payload_bytes > available:
        raise ReaderError(
            f"the header claims {' x '.join(map(str, size))} voxels ({payload_bytes} bytes of "
            f"data) but the file can hold at most {available} bytes: the header is corrupt or "
            f"the file truncated; export it again", path=shown, field=field)
    if fmt == "nifti" and path.name.lower().endswith(".gz"):
        vox_offset = _nifti_vox_offset(path)
        if vox_offset is None or _gzip_isize(path) != (vox_offset + payload_bytes) % 2**32:
            _check_gzip_complete(path, payload_bytes + (vox_offset or _NIFTI_MIN_HEADER_BYTES),
                                 shown)


def _nifti_vox_offset(path: Path) -> int | None:
    """``vox_offset`` of a gzip-compressed NIfTI-1/2 header, or None when unreadable."""
    import gzip
    import struct
    import zlib

    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(540)
    except (EOFError, OSError, zlib.error):
        return None
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            offset = struct.unpack(endian + "f", header[108:112])[0]
            return int(offset) if offset == offset and 348 <= offset < 2**31 else None
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            offset = struct.unpack(endian + "q", header[168:176])[0]
            return int(offset) if 540 <= offset < 2**62 else None
    return None


def _gzip_isize(path: Path) -> int | None:
    """The ISIZE field of the last gzip member (last 4 bytes, little-endian)."""
    import struct

    with path.open("rb") as handle:
        handle.seek(0, 2)
        if handle.tell() < 18:  # smaller than an empty gzip member
            return None
        handle.seek(-4, 2)
        return struct.unpack("<I", handle.read(4))[0]


def _check_gzip_complete(path: Path, needed_bytes: int, shown: str) -> None:
    """Stream-decompress ``path`` until ``needed_bytes`` are seen; refuse a short stream."""
    import gzip
    import zlib

    seen = 0
    try:
        with gzip.open(path, "rb") as handle:
            while seen < needed_bytes:
                chunk = handle.read(min(1 << 20, needed_bytes - seen))
                if not chunk:
                    break
                seen += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise ReaderError(
            f"the gzip stream is truncated or corrupt ({exc}) after {seen} bytes of the "
            f"{needed_bytes} the header announces: copy or export the file again",
            path=shown) from exc
    if seen < needed_bytes:
        raise ReaderError(
            f"the file holds {seen} bytes once decompressed, less than the {needed_bytes} its "
            f"header announces: it is truncated; copy or export it again", path=shown)


def _size_field(fmt: str) -> str:
    return {"nifti": "dim", "metaimage": "DimSize", "nrrd": "sizes"}.get(fmt, "size")


def _payload_bound_bytes(path: Path, fmt: str) -> int | None:
    """Most bytes of voxel data the file(s) can hold, or None when no bound is known."""
    name = path.name.lower()
    size = path.stat().st_size
    if fmt == "nifti":
        if name.endswith(".gz"):
            return size * DEFLATE_MAX_RATIO
        return max(0, size - _NIFTI_MIN_HEADER_BYTES)
    header = _text_header(path)
    if fmt == "metaimage":
        compressed = re.search(r"^\s*CompressedData\s*=\s*true\s*$", header, re.I | re.M)
        data_file = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", header, re.M)
        if data_file is None:
            return None
        target = data_file.group(1)
        if target.upper() != "LOCAL":
            if target.upper().startswith("LIST") or "%" in target:
                return None
            data_path = path.parent / target
            if not data_path.is_file():
                return None  # SimpleITK reports the missing data file itself
            size = data_path.stat().st_size
        return size * DEFLATE_MAX_RATIO if compressed else size
    if fmt == "nrrd":
        if re.search(r"^\s*data ?file\s*:", header, re.I | re.M):
            return None
        encoding = re.search(r"^\s*encoding\s*:\s*(\S+)", header, re.I | re.M)
        kind = encoding.group(1).lower() if encoding else ""
        if kind == "raw":
            return size
        if kind in ("gzip", "gz"):
            return size * DEFLATE_MAX_RATIO
    return None


def _text_header(path: Path) -> str:
    """The text header of a MetaImage / NRRD file (up to the first blank line or 64 kB)."""
    with path.open("rb") as handle:
        head = handle.read(65536)
    end = head.find(b"\n\n")
    return head[: end if end >= 0 else len(head)].decode("latin-1")
