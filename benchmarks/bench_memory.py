"""Peak memory of a full per-case QA run on a clinical-size case (issue 9: under 3 GB).

Usage::

    .venv/bin/python benchmarks/bench_memory.py                # each check alone, then all
    .venv/bin/python benchmarks/bench_memory.py --no-per-check # only all checks together
    .venv/bin/python benchmarks/bench_memory.py --runs dvh all --keep /tmp/bench-mem
    .venv/bin/python benchmarks/bench_memory.py --shape 60 256 256   # a quick small case
    .venv/bin/python benchmarks/bench_memory.py --grouped --runs dvh segmentation

The case (deterministic, written into a temporary folder, nothing downloaded):

* CT and synthetic CT: ``Z x Y x X`` int16 NIfTI (default 300 x 512 x 512: voxels of
  1.5 x 0.977 x 0.977 mm; other shapes keep the 450 x 500 x 500 mm field of view), an
  analytic pelvis: elliptic body with a
  fat layer, bladder, rectum with gas, femoral heads; CT noise 15 HU, the sCT with a tissue
  bias and 25 HU noise;
* reference and evaluated doses (float32 NIfTI, Gy) on a 2.5 mm grid covering the same
  field of view: a 60 Gy sigmoid around the PTV plus a broad low-dose bath, the evaluated
  dose shifted 0.8 mm and scaled by 1.01;
* ten structures on the CT grid, one ``.nii.gz`` mask each (body, bladder, rectum,
  prostate, seminal vesicles, femoral heads L/R, CTV, PTV, bowel bag), and an "auto-contoured"
  set with every shape 1.5 mm larger and moved 1 mm. Each set is a folder of masks, or with
  ``--grouped`` one case-table column per mask grouped in the protocol (``members:``), the
  layout of a department that exports each OAR as its own file.

The protocol runs every per-case check that applies to such a case through the real engine
(:func:`qa.runner.run_protocol`, SQLite store in the temporary folder, one worker):
``hu_accuracy`` (CT vs sCT in the body), ``gamma`` (3 %/2 mm and 2 %/2 mm, 10 % cutoff, body
ROI), ``dvh`` (ten structures) and ``segmentation`` (ten structures, exact surfaces).
``noise`` and ``ct_number`` need a phantom series, and ``noise_dose`` / ``subgroup_bias`` are
cohort checks that read the store: they are not per-case patient checks and are left out.

Each run happens in a child process (so this script's own memory does not count); its peak
resident set size is ``ru_maxrss`` from :func:`os.wait4` on that child (Linux: KiB). Linux
carries a process's peak RSS across fork + exec, so the case is generated in a child too and
this process stays small. The child also reports its peak RSS after the imports, before the
run. With ``--trace`` the child also
reports the tracemalloc peak (Python and NumPy allocations; slower). Every check is also run
alone in its own child (``--no-per-check`` skips that), which gives the peak per check.
Measured peaks and where the memory goes: ``docs/performance.md``.
The requirement is checked against 3 GB = 3e9 bytes (2861 MiB).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import erfc

REQUIREMENT_BYTES = 3e9
FIELD_OF_VIEW_MM = (450.0, 500.0, 500.0)  # (z, y, x): 300 slices of 1.5 mm, 512 x 0.977 mm
DOSE_SPACING_MM = 2.5
PRESCRIPTION_GY = 60.0
CHECKS = ("hu_accuracy", "gamma", "dvh", "segmentation")

# ---------------------------------------------------------------------------------------
# Analytic phantom: every shape is a predicate on physical (z, y, x) mm coordinates, so the
# masks (CT grid) and the doses (dose grid) share one geometry. LPS: +x patient left,
# +y posterior, +z superior; the centre of the field of view is (0, 0, 0).


@dataclass(frozen=True)
class Ellipsoid:
    """Points with sum(((p - centre) / semi_axes)^2) <= 1; an infinite semi-axis ignores
    that coordinate (an elliptic cylinder); ``z_range_mm`` optionally truncates along z."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    z_range_mm: tuple[float, float] | None = None

    def grown(self, margin_mm: float, shift_x_mm: float) -> Ellipsoid:
        zc, yc, xc = self.centre_mm
        z_range = None if self.z_range_mm is None else (
            self.z_range_mm[0] - margin_mm, self.z_range_mm[1] + margin_mm)
        return Ellipsoid((zc, yc, xc + shift_x_mm),
                         tuple(a + margin_mm for a in self.semi_axes_mm), z_range)

    def z_extent_mm(self) -> tuple[float, float]:
        if self.z_range_mm is not None:
            return self.z_range_mm
        a = self.semi_axes_mm[0]
        return (self.centre_mm[0] - a, self.centre_mm[0] + a)

    def plane(self, z_mm: float, y_mm: np.ndarray, x_mm: np.ndarray) -> np.ndarray:
        zc, yc, xc = self.centre_mm
        az, ay, ax = self.semi_axes_mm
        lo, hi = self.z_extent_mm()
        if not lo <= z_mm <= hi:
            return np.zeros(np.broadcast_shapes(y_mm.shape, x_mm.shape), bool)
        rz = 0.0 if np.isinf(az) else ((z_mm - zc) / az) ** 2
        return ((y_mm - yc) / ay) ** 2 + ((x_mm - xc) / ax) ** 2 <= 1.0 - rz


INF = float("inf")
BODY = Ellipsoid((0.0, 0.0, 0.0), (INF, 130.0, 190.0))
INNER = Ellipsoid((0.0, 0.0, 0.0), (INF, 115.0, 172.0))  # fat layer = BODY - INNER
GAS = Ellipsoid((0.0, 35.0, 0.0), (INF, 7.0, 7.0), (-60.0, 40.0))
PTV_CENTRE_MM = (-12.0, -2.0, 0.0)
STRUCTURES: dict[str, Ellipsoid] = {
    "body": BODY,
    "bladder": Ellipsoid((30.0, -30.0, 0.0), (35.0, 30.0, 40.0)),
    "rectum": Ellipsoid((0.0, 35.0, 0.0), (INF, 17.0, 17.0), (-70.0, 50.0)),
    "prostate": Ellipsoid((-15.0, -5.0, 0.0), (20.0, 20.0, 20.0)),
    "seminal_vesicles": Ellipsoid((10.0, 15.0, 0.0), (10.0, 8.0, 28.0)),
    "femoral_head_l": Ellipsoid((-20.0, 0.0, 95.0), (24.0, 24.0, 24.0)),
    "femoral_head_r": Ellipsoid((-20.0, 0.0, -95.0), (24.0, 24.0, 24.0)),
    "ctv": Ellipsoid(PTV_CENTRE_MM, (26.0, 26.0, 26.0)),
    "ptv": Ellipsoid(PTV_CENTRE_MM, (33.0, 33.0, 33.0)),
    "bowel_bag": Ellipsoid((110.0, -20.0, 0.0), (70.0, 80.0, 130.0)),
}
#: Soft-tissue HU of each organ drawn into the CT (others stay at the body's 40 HU).
ORGAN_HU = {"bladder": 10.0, "rectum": 40.0, "prostate": 38.0, "femoral_head_l": 400.0,
            "femoral_head_r": 400.0}


def ct_spacing_mm(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """CT voxel size (mm) giving the fixed field of view (1.5 x 0.977 x 0.977 at 300 x 512^2)."""
    return tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM, shape, strict=True))  # type: ignore


def grid_axes_mm(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float]
                 ) -> tuple[tuple[float, float, float], list[np.ndarray]]:
    """Origin (centre of voxel 0) and voxel-centre coordinates of a grid centred on 0."""
    origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(shape, spacing_mm, strict=True))
    axes = [o + s * np.arange(n) for o, s, n in zip(origin, spacing_mm, shape, strict=True)]
    return origin, axes  # type: ignore[return-value]


def make_case(folder: Path, shape: tuple[int, int, int], seed: int) -> None:
    """Write the CT, sCT, doses, both structure sets, the case table and the protocols."""
    from qa.io import write_nifti
    from qa.volume import Volume

    rng = np.random.default_rng(seed)
    spacing = ct_spacing_mm(shape)
    origin, (z_mm, y_mm, x_mm) = grid_axes_mm(shape, spacing)
    yy, xx = y_mm[:, None], x_mm[None, :]
    ct = np.empty(shape, np.int16)
    sct = np.empty(shape, np.int16)
    for k, z in enumerate(z_mm):  # plane by plane keeps the temporaries small
        plane = np.full(shape[1:], -1000.0, np.float32)
        body, inner = BODY.plane(z, yy, xx), INNER.plane(z, yy, xx)
        plane[body] = -100.0
        plane[inner] = 40.0
        for name, hu in ORGAN_HU.items():
            plane[STRUCTURES[name].plane(z, yy, xx)] = hu
        plane[GAS.plane(z, yy, xx)] = -900.0
        noise = rng.standard_normal(shape[1:], dtype=np.float32)
        ct[k] = np.rint(plane + 15.0 * noise)
        error = 5.0 + 25.0 * rng.standard_normal(shape[1:], dtype=np.float32)
        sct[k] = np.rint(np.where(plane > 200, 0.9 * plane, plane) + np.where(body, error, 0))
    write_nifti(Volume(ct, spacing, origin), folder / "ct.nii")
    write_nifti(Volume(sct, spacing, origin), folder / "sct.nii")
    del ct, sct
    for set_name, margin, shift in (("structures_ref", 0.0, 0.0),
                                    ("structures_eval", 1.5, 1.0)):
        (folder / set_name).mkdir()
        for name, shape_def in STRUCTURES.items():
            if margin:
                shape_def = shape_def.grown(margin, shift)
            mask = np.zeros(shape, bool)
            for k, z in enumerate(z_mm):
                mask[k] = shape_def.plane(z, yy, xx)
            if name == "bowel_bag":  # the bowel bag stays inside the body (a cylinder)
                mask &= BODY.plane(0.0, yy, xx)
            write_nifti(Volume(mask, spacing, origin), folder / set_name / f"{name}.nii.gz")
    dose_shape = tuple(int(round(f / DOSE_SPACING_MM)) for f in FIELD_OF_VIEW_MM)
    dose_spacing = (DOSE_SPACING_MM,) * 3
    dose_origin, dose_axes = grid_axes_mm(dose_shape, dose_spacing)
    for name, shift_mm, scale in (("dose_ref", 0.0, 1.0), ("dose_eval", 0.8, 1.01)):
        dose = scale * _dose_gy(dose_axes, shift_mm)
        write_nifti(Volume(dose.astype(np.float32), dose_spacing, dose_origin),
                    folder / f"{name}.nii")
    members = [f"{prefix}_{name}" for prefix in ("ref", "eval") for name in STRUCTURES]
    with open(folder / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["case_id", "ct", "sct", "body", "dose_ref", "dose_eval",
                         "structures_ref", "structures_eval", *members])
        writer.writerow(["BENCH01", "ct.nii", "sct.nii", "structures_ref/body.nii.gz",
                         "dose_ref.nii", "dose_eval.nii", "structures_ref", "structures_eval",
                         *(f"structures_{m.replace('_', '/', 1)}.nii.gz" for m in members)])
    for name in ("all", *CHECKS):
        checks = CHECKS if name == "all" else (name,)
        for suffix, grouped in (("", False), ("_grouped", True)):
            (folder / f"protocol_{name}{suffix}.yaml").write_text(
                protocol_text(checks, grouped=grouped), encoding="utf-8")


def _dose_gy(axes: list[np.ndarray], shift_y_mm: float) -> np.ndarray:
    """60 Gy inside the PTV with a 4 mm sigmoid fall-off, plus a Gaussian bath reaching
    10 % of Rx about 125 mm from the target (a pelvic VMAT-like spread), zero outside the
    body; the evaluated dose moves the whole pattern ``shift_y_mm`` posteriorly."""
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    zc, yc, xc = PTV_CENTRE_MM
    r = np.sqrt((z - zc) ** 2 + (y - yc - shift_y_mm) ** 2 + (x - xc) ** 2)
    dose = PRESCRIPTION_GY * (0.5 * erfc((r - 35.0) / (np.sqrt(2.0) * 4.0))
                              + 0.3 * np.exp(-((r / 120.0) ** 2)))
    body = ((y / BODY.semi_axes_mm[1]) ** 2 + (x / BODY.semi_axes_mm[2]) ** 2) <= 1.0
    return np.where(body, np.minimum(dose, 1.05 * PRESCRIPTION_GY), 0.0)


_CHECK_YAML = {
    "hu_accuracy": """\
  - check: hu_accuracy
    reference: ct
    evaluated: sct
    mask: body
""",
    "gamma": """\
  - check: gamma
    reference: dose_ref
    evaluated: dose_eval
    mask: body
    options: {criteria: ["3%/2mm", "2%/2mm"], lower_cutoff_percent: 10}
""",
    "dvh": f"""\
  - check: dvh
    reference: dose_ref
    evaluated: dose_eval
    structures: structures_ref
    options: {{prescription_gy: {PRESCRIPTION_GY:g}, v_levels_gy: [20, 50, 57]}}
""",
    "segmentation": """\
  - check: segmentation
    image: ct
    reference: structures_ref
    evaluated: structures_eval
    options: {tolerance_mm: 2.0%s}
""",
}


def protocol_text(checks: tuple[str, ...], *, grouped: bool = False) -> str:
    """Protocol YAML running ``checks`` on the benchmark case; ``grouped``: each structure
    set is the group of its mask columns (``ref_bladder`` ...), the names matched by aliases
    (``bladder: [ref_bladder, eval_bladder]``), instead of a folder."""
    roles = "roles:\n  body: {kind: mask}\n"
    aliases = ""
    if grouped:
        for prefix in ("ref", "eval"):
            names = ", ".join(f"{prefix}_{name}" for name in STRUCTURES)
            roles += f"  structures_{prefix}: {{kind: structures, members: [{names}]}}\n"
        aliases = (f", structures: [{', '.join(STRUCTURES)}], aliases: {{"
                   + ", ".join(f"{n}: [ref_{n}, eval_{n}]" for n in STRUCTURES) + "}")
    head = ("name: memory benchmark\nkind: commissioning\ncases: cases.csv\n"
            'model: {name: bench, version: "1", adapter: precomputed, output: sct}\n'
            + roles + "checks:\n")
    return head + "".join(_CHECK_YAML[c] % aliases if c == "segmentation" else _CHECK_YAML[c]
                          for c in checks)


# ---------------------------------------------------------------------------------------
# Child: run one protocol, report what it measured as one JSON line on stdout.


def child(protocol: str, store_url: str, trace: bool) -> None:
    import resource
    import tracemalloc

    from qa.runner import run_protocol
    from qa.store import Store

    rss_imports_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    with Store(store_url) as store:
        outcome = run_protocol(protocol, store, workers=1, progress=False)
        errors = store.errors(outcome.run_id)["message"].tolist()
    report = {"wall_s": time.perf_counter() - t0, "exit_code": int(outcome.exit_code),
              "errors": errors, "rss_after_imports_mib": rss_imports_mib,
              "tracemalloc_peak_mib": (tracemalloc.get_traced_memory()[1] / 2**20
                                       if trace else None)}
    print(json.dumps(report))


@dataclass(frozen=True)
class Measured:
    name: str
    peak_rss_mib: float
    wall_s: float
    report: dict


def run_child(name: str, folder: Path, trace: bool, grouped: bool = False) -> Measured:
    """Run ``protocol_<name>[_grouped].yaml`` in a child process; its peak RSS from
    ``wait4``."""
    name += "_grouped" if grouped else ""
    store = f"sqlite:///{folder / f'store_{name}.db'}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
           str(folder / f"protocol_{name}.yaml"), store] + (["--trace"] if trace else [])
    env = _child_env()
    out_path, err_path = folder / f"child_{name}.out", folder / f"child_{name}.err"
    t0 = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        # wait4 (not Popen.wait) so that the child's own resource usage comes back
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    lines = [line for line in out_path.read_text().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name}: child failed (exit {proc.returncode}):\n"
                           f"{err_path.read_text()[-3000:]}")
    return Measured(name, usage.ru_maxrss / 1024, wall, json.loads(lines[-1]))


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512],
                        metavar=("Z", "Y", "X"), help="CT grid (default 300 512 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-per-check", action="store_true",
                        help="only the run with all checks")
    parser.add_argument("--runs", nargs="+", choices=(*CHECKS, "all"),
                        help="runs to make (default: each check alone, then all)")
    parser.add_argument("--trace", action="store_true",
                        help="also report the tracemalloc peak (slower)")
    parser.add_argument("--keep", type=Path, help="write the case here and keep it")
    parser.add_argument("--grouped", action="store_true",
                        help="structure sets as grouped mask columns (members:), not folders")
    parser.add_argument("--child", nargs=2, metavar=("PROTOCOL", "STORE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, trace=args.trace)
        return
    if args.make:
        args.make.mkdir(parents=True, exist_ok=True)
        make_case(args.make, tuple(args.shape), args.seed)
        return
    shape = tuple(args.shape)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="qa-bench-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        if not (folder / "protocol_all_grouped.yaml").exists():
            # in a child too: Linux carries a process's peak RSS across fork + exec, so this
            # process must stay small for the children's ru_maxrss to be their own
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--make",
                            str(folder), "--shape", *map(str, shape), "--seed",
                            str(args.seed)], check=True, env=_child_env())
        n_vox = int(np.prod(shape))
        print(f"case: CT/sCT {shape} int16 ({n_vox / 1e6:.1f} Mvoxels, "
              f"{2 * n_vox * 2 / 2**20:.0f} MiB in memory), doses on a {DOSE_SPACING_MM} mm "
              f"grid, {len(STRUCTURES)} structures x 2 sets (bool masks on the CT grid: "
              f"{2 * len(STRUCTURES) * n_vox / 2**20:.0f} MiB); written in "
              f"{time.perf_counter() - t0:.0f} s to {folder}")
        names = args.runs or (["all"] if args.no_per_check else [*CHECKS, "all"])
        print(f"{'run':14s}{'peak RSS [MiB]':>16s}{'after imports':>15s}"
              f"{'tracemalloc':>13s}{'wall [s]':>10s}  exit  errors")
        results = []
        for name in names:
            m = run_child(name, folder, args.trace, args.grouped)
            results.append(m)
            r = m.report
            traced = ("" if r["tracemalloc_peak_mib"] is None
                      else f"{r['tracemalloc_peak_mib']:.0f}")
            print(f"{name:14s}{m.peak_rss_mib:16.0f}{r['rss_after_imports_mib']:15.0f}"
                  f"{traced:>13s}{m.wall_s:10.1f}  {r['exit_code']:4d}  {len(r['errors'])}",
                  flush=True)
            for message in r["errors"]:
                print(f"    error: {message}")
        limit_mib = REQUIREMENT_BYTES / 2**20
        for m in results:
            verdict = "meets" if m.peak_rss_mib * 2**20 < REQUIREMENT_BYTES else "FAILS"
            print(f"{m.name}: peak RSS {m.peak_rss_mib:.0f} MiB "
                  f"({m.peak_rss_mib * 2**20 / 1e9:.2f} GB) {verdict} the 3 GB "
                  f"({limit_mib:.0f} MiB) requirement")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
