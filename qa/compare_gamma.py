"""``qa compare gamma REF EVAL``: one-off gamma comparison of two dose files.

Each dose is a NIfTI / MetaImage / NRRD in Gy or an RTDOSE ``.dcm`` (DoseUnits GY). Prints
one row per criterion (pass rate, points evaluated, below cutoff, outside the evaluated
grid, mean / p95 gamma) or JSON with ``--json``; ``--gamma-map PATH`` writes the gamma map
of the first criterion as NIfTI on the reference grid (NaN where not evaluated). Stores
nothing. Exit 0 when every pass rate is >= ``--tolerance`` (default 95 %, TG-218), 10 when
one is below, 40 for unreadable input or bad options.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qa.errors import QAInputError
from qa.exitcodes import ExitCode

HELP = "3D gamma index of two dose files (NIfTI in Gy or RTDOSE)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``qa compare gamma``."""
    parser.add_argument("reference", type=Path, help="reference dose (e.g. on the CT)")
    parser.add_argument("evaluated", type=Path, help="evaluated dose (e.g. on the sCT)")
    parser.add_argument("--criteria", nargs="+", default=["3%/2mm"], metavar="CRITERION",
                        help="criteria, e.g. 3%%/2mm 2%%/2mm (default 3%%/2mm, TG-218)")
    parser.add_argument("--cutoff", type=float, default=10.0, metavar="PERCENT",
                        help="lower dose cutoff, percent of the normalisation (default 10)")
    parser.add_argument("--local", action="store_true", help="local gamma (default global)")
    parser.add_argument("--normalization-gy", type=float, default=None,
                        help="global normalisation dose (default: reference maximum)")
    parser.add_argument("--max-gamma", type=float, default=2.0)
    parser.add_argument("--cutoff-on-union", action="store_true",
                        help="also evaluate points where only the evaluated dose is above the "
                             "cutoff")
    parser.add_argument("--roi", type=Path, default=None, help="ROI mask file (body, PTV)")
    parser.add_argument("--tolerance", type=float, default=95.0, metavar="PERCENT",
                        help="pass-rate tolerance for the exit code (default 95)")
    parser.add_argument("--gamma-map", type=Path, default=None, metavar="PATH",
                        help="write the first criterion's gamma map (NIfTI)")
    parser.add_argument("--backend", choices=("auto", "numba", "torch"), default="auto",
                        help="search: numba (certified CPU kernel), torch (lattice search, "
                             "CUDA when present); auto: numba on a CPU, torch on a GPU")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Compare, print, return the exit code (see the module docstring)."""
    from checks.gamma import GammaInputError, gamma_indices
    from qa.io import read_dose, read_mask, write_nifti

    # read_dose: RTDOSE or image files, refusing NaN/inf and negative doses as the engine does
    reference = read_dose(args.reference)
    evaluated = read_dose(args.evaluated)
    roi = read_mask(args.roi) if args.roi is not None else None
    try:
        results = gamma_indices(reference, evaluated, args.criteria,
                                lower_cutoff_percent=args.cutoff, local=args.local,
                                normalization_gy=args.normalization_gy,
                                max_gamma=args.max_gamma, roi=roi,
                                cutoff_on_union=args.cutoff_on_union,
                                backend=args.backend)
    except GammaInputError as exc:
        where = {"reference": args.reference, "evaluated": args.evaluated, "roi": args.roi}
        path = where.get(exc.input_name)
        raise QAInputError(str(exc), path=None if path is None else str(path),
                           field=None if path is not None else f"--{exc.input_name}"
                           .replace("_", "-")) from None
    if args.gamma_map is not None:
        write_nifti(reference.with_array(results[0].gamma.astype("float32")), args.gamma_map)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print(f"{'criterion':>10} {'pass %':>8} {'evaluated':>10} {'<cutoff':>9} "
              f"{'off-grid':>9} {'mean':>6} {'p95':>6}")
        for r in results:
            print(f"{r.criterion:>10} {r.pass_rate_percent:8.2f} {r.n_evaluated:10d} "
                  f"{r.n_below_cutoff:9d} {r.n_outside_grid:9d} {r.mean_gamma:6.3f} "
                  f"{r.gamma_p95:6.3f}")
        mode = "local" if results[0].local else "global"
        print(f"{mode}, normalisation {results[0].normalization_gy:.4g} Gy, cutoff "
              f"{results[0].cutoff_gy:.4g} Gy, max gamma {results[0].max_gamma:g}, "
              f"pass: gamma <= 1; search: {results[0].backend} on {results[0].device}")
    below = any(not r.pass_rate_percent >= args.tolerance for r in results)
    return int(ExitCode.TOLERANCE if below else ExitCode.OK)

