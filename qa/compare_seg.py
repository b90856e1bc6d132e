"""``qa compare seg REF EVAL``: one-off segmentation agreement of two structure sets.

Each set is an RTSTRUCT (``.dcm``, rasterised on ``--image``), a folder of mask files or a
label map with its JSON label table (see :func:`qa.io.read_structures`). Structures are
matched after name normalisation and ``--alias``; the metrics are those of the
``segmentation`` check (:func:`checks.segmentation.compare_masks`). Prints one row per
structure (or JSON with ``--json``); stores nothing. A structure that cannot be compared (its
mask does not read, is not binary, or lies on another grid) prints ``n/a`` and its problem on
standard error, and the others are compared. Exit 0 when every requested structure was
compared, 30 when some were missing from either set, 40 for unreadable input (a whole set, or
one structure).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from qa.errors import QAInputError
from qa.exitcodes import ExitCode

HELP = "segmentation agreement of two structure sets (RTSTRUCT, mask folder or label map)"

_COLUMNS = (("dice", "Dice", 3), ("hd95_mm", "HD95 mm", 2), ("assd_mm", "ASSD mm", 2),
            ("surface_dice", "SDice", 3), ("apl_mm", "APL mm", 1),
            ("volume_diff_percent", "dV %", 1))


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``qa compare seg``."""
    parser.add_argument("reference", type=Path, help="reference structure set")
    parser.add_argument("evaluated", type=Path, help="evaluated (automatic) structure set")
    parser.add_argument("--structures", nargs="+", default=None, metavar="NAME",
                        help="structures to compare (default: every reference structure)")
    parser.add_argument("--image", type=Path, default=None,
                        help="CT (file or DICOM folder) whose grid RTSTRUCTs are rasterised on")
    parser.add_argument("--alias", action="append", default=[], metavar="NAME=ALT[,ALT]",
                        help="alternative names of a structure, e.g. bladder=Vessie,BLADDER_AI")
    parser.add_argument("--tolerance-mm", type=float, default=2.0,
                        help="surface-Dice and APL tolerance in mm (default 2)")
    parser.add_argument("--method", choices=("exact", "deepmind"), default="exact",
                        help="surface method (default exact)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Compare, print, return the exit code (see the module docstring)."""
    from checks.segmentation import SegmentationCheck
    from qa.io import read_image, read_structures

    image = read_image(args.image) if args.image is not None else None
    reference = read_structures(args.reference, reference=image)
    evaluated = read_structures(args.evaluated, reference=image)
    try:
        options = SegmentationCheck.Options(structures=args.structures,
                                            aliases=_aliases(args.alias),
                                            tolerance_mm=args.tolerance_mm,
                                            method=args.method)
    except ValueError as exc:
        raise QAInputError(f"bad option: {exc}", field="--alias") from None
    try:
        output = SegmentationCheck(options).run({"reference": reference,
                                                 "evaluated": evaluated})
    except ValueError as exc:  # e.g. two structures of one set matching one name
        raise QAInputError(str(exc), path=str(args.evaluated)) from None
    for problem in output.problems:  # one structure each; the others were compared
        print(f"error: {problem}", file=sys.stderr)
    values: dict[str, dict[str, float]] = {}
    for m in output.measurements:
        if m.label:
            values.setdefault(m.label, {})[m.metric] = m.value
    details = output.details
    if args.json:
        summary = {"structures": values, **{key: details[key] for key in (
            "extra_evaluated", "missing_evaluated", "missing_reference", "method",
            "tolerance_mm")}, "not_compared": {
                name: details["structures"][name]["error"] for name in details["not_compared"]}}
        print(json.dumps(_json_ready(summary), indent=2, allow_nan=False))
    else:
        _print_table(values, details)
    if output.problems:
        return int(ExitCode.NOT_STARTED)  # 40: unreadable input, as for a whole set
    incomplete = details["missing_evaluated"] or details["missing_reference"]
    return int(ExitCode.ERRORS if incomplete else ExitCode.OK)


def _aliases(items: list[str]) -> dict[str, list[str]]:
    aliases: dict[str, list[str]] = {}
    for item in items:
        name, sep, alternatives = item.partition("=")
        if not sep or not name.strip() or not alternatives.strip():
            raise QAInputError(f"--alias {item!r} is not NAME=ALT[,ALT...]; write e.g. "
                               "--alias bladder=Vessie", field="--alias")
        aliases.setdefault(name.strip(), []).extend(
            a.strip() for a in alternatives.split(",") if a.strip())
    return aliases


def _json_ready(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def _print_table(values: dict[str, dict[str, float]], details: dict) -> None:
    width = max([len("structure"), *map(len, values)]) + 2
    print("structure".ljust(width) + "".join(f"{title:>10s}" for _k, title, _d in _COLUMNS))
    for name, row in values.items():
        cells = []
        for key, _title, decimals in _COLUMNS:
            value = row.get(key, math.nan)
            cells.append(f"{value:10.{decimals}f}" if math.isfinite(value) else f"{'n/a':>10s}")
        note = ""
        if name in details["not_compared"]:
            note = "  (not compared: see the error above)"
        elif row.get("missing_reference") == 1.0:
            note = "  (absent from the reference set)"
        elif row.get("missing_evaluated") == 1.0:
            note = "  (absent from the evaluated set: scored as empty)"
        elif row.get("empty_reference") == 1.0 or row.get("empty_evaluated") == 1.0:
            note = "  (empty mask)"
        print(name.ljust(width) + "".join(cells) + note)
    print(f"method {details['method']}, tolerance {details['tolerance_mm']:g} mm; "
          "HD95 = larger directed 95th percentile")
    if details["extra_evaluated"]:
        print("evaluated structures not compared: " + ", ".join(details["extra_evaluated"]))
