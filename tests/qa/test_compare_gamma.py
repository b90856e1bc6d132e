"""``qa compare gamma``: a one-off comparison of two dose files, printed, map written."""

from __future__ import annotations

import json

import numpy as np

from qa.cli import main
from qa.io import read_image, write_nifti
from qa.volume import Volume


def _doses(tmp_path, k):
    ref = Volume(np.full((5, 6, 6), 50.0, dtype=np.float32), (3.0, 2.5, 2.5))
    write_nifti(ref, tmp_path / "ref.nii.gz")
    write_nifti(ref.with_array(ref.array * k), tmp_path / "eval.nii.gz")
    return tmp_path / "ref.nii.gz", tmp_path / "eval.nii.gz"


def test_prints_each_criterion_and_writes_the_gamma_map(tmp_path, capsys):
    ref, ev = _doses(tmp_path, 1.015)  # gamma 0.5 at 3 %, 0.75 at 2 %
    code = main(["compare", "gamma", str(ref), str(ev), "--criteria", "3%/2mm", "2%/2mm",
                 "--gamma-map", str(tmp_path / "g.nii.gz"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["criterion"] for r in out] == ["3%/2mm", "2%/2mm"]
    assert [round(r["mean_gamma"], 6) for r in out] == [0.5, 0.75]
    assert {(r["backend"], r["device"]) for r in out} == {("numba", "cpu")}
    assert np.allclose(read_image(tmp_path / "g.nii.gz").array, 0.5, atol=1e-6)


def test_a_failing_pass_rate_exits_10_and_a_bad_criterion_exits_40(tmp_path, capsys):
    ref, ev = _doses(tmp_path, 1.05)
    assert main(["compare", "gamma", str(ref), str(ev)]) == 10
    out = capsys.readouterr().out
    assert "3%/2mm" in out and out.rstrip().endswith("search: numba on cpu")
    assert main(["compare", "gamma", str(ref), str(ev), "--backend", "torch"]) == 10
    assert capsys.readouterr().out.rstrip().endswith("search: torch on cpu")
    assert main(["compare", "gamma", str(ref), str(ev), "--criteria", "3/2"]) == 40
    assert "criterion '3/2' does not parse" in capsys.readouterr().err


def test_a_negative_dose_is_refused_with_the_file_named(tmp_path, capsys):
    ref, _ = _doses(tmp_path, 1.0)
    bad = Volume(np.full((5, 6, 6), 50.0, dtype=np.float32), (3.0, 2.5, 2.5))
    bad.array[2, 3, 3] = -1.0
    write_nifti(bad, tmp_path / "negative.nii.gz")
    assert main(["compare", "gamma", str(ref), str(tmp_path / "negative.nii.gz")]) == 40
    err = capsys.readouterr().err
    assert "negative.nii.gz" in err and "negative" in err.lower()
    assert "Traceback" not in err
