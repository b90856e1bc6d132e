"""Specification of the gamma report section: worst cases' gamma maps over their CT, from
stored rows only, in both languages."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from checks.registry import get_check
from qa.io import write_nifti
from qa.runner import run_protocol
from qa.store import Store
from qa.volume import Volume
from reports._format import Formatter
from reports.html import render_run_report
from reports.sections.gamma import WORST_MAPS, section_data

SPACING = (3.0, 2.5, 2.5)
#: case -> (dose scaling of a block of the evaluated dose, rows of the block): C01 passes,
#: C<b>2 fails in a larger block than C03
HOT = {"C01": (1.0, 12), "C<b>2": (1.10, 12), "C03": (1.10, 6)}


def _doses(k: float, rows: int) -> tuple[Volume, Volume]:
    ref = Volume(np.full((6, 24, 24), 50.0), SPACING, (0.0, -30.0, -30.0))
    ev = ref.array.copy()
    ev[2:4, 4:4 + rows, 4:12] *= k
    return ref, ref.with_array(ev)


def _ct() -> Volume:
    # water box in air on a finer CT grid
    arr = np.full((12, 50, 50), -1000.0)
    arr[:, 5:45, 5:45] = 0.0
    return Volume(arr, (1.5, 1.25, 1.25), (0.0, -31.0, -31.0))


def _section(language: str, with_ct: bool) -> dict:
    cls = get_check("gamma")
    rows, maps = [], {}
    for case_id, (k, rows_hot) in HOT.items():
        ref, ev = _doses(k, rows_hot)
        inputs = {"reference": ref, "evaluated": ev, **({"ct": _ct()} if with_ct else {})}
        out = cls().run(inputs)
        rows += [{"case_id": case_id, "check_id": "gamma", "metric": m.metric,
                  "label": m.label, "value": m.value, "unit": m.unit}
                 for m in out.measurements]
        maps[case_id] = out.details["gamma_map_slice"]
    return section_data(pd.DataFrame(rows), {"gamma_map_slice": maps}, Formatter(language))


def test_the_worst_cases_maps_come_first_and_say_how_the_slice_was_chosen():
    section = _section("en", with_ct=True)
    assert [m["case_id"] for m in section["maps"]] == ["C<b>2", "C03"][:WORST_MAPS]
    first = section["maps"][0]
    assert first["uri"].startswith("data:image/png;base64,")
    assert first["with_ct"] and first["criterion"] == "3%/2mm"
    assert first["rule"] == "the slice with the most failing points"
    assert first["z_index"] == 2 and first["z_mm"] == "6.00"


def test_the_search_that_produced_the_values_is_stated_for_every_backend_used():
    settings = {"A": {"backend": "numba", "device": "cpu"},
                "B": {"backend": "torch", "device": "cuda:0"},
                "C": {"backend": "numba", "device": "cpu"}, "D": {}}  # D: stored before
    rows = pd.DataFrame([{"case_id": c, "check_id": "gamma", "metric": "pass_rate_percent",
                          "label": "3%/2mm", "value": 99.0, "unit": "%"} for c in settings])
    section = section_data(rows, {"settings": settings}, Formatter("en"))
    search = dict(section["settings"])["search"]
    assert search.startswith("certified cell-wise branch and bound on the CPU (numba)")
    assert search.endswith("; lattice search and refinement (torch, cuda:0): within 0.002 of "
                           "the certified search in the test at 2 %/2 mm")
    old = section_data(rows, {"settings": {"A": {"pass": "gamma <= 1"}}}, Formatter("fr"))
    assert "search" not in dict(old["settings"])  # runs stored before say nothing


def test_without_a_ct_the_map_is_drawn_alone_and_the_caption_says_so():
    section = _section("fr", with_ct=False)
    assert section["maps"] and not section["maps"][0]["with_ct"]
    assert section["maps"][0]["rule"] == "la coupe qui compte le plus de points non conformes"


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("gamma-run")
    rows = []
    for i, (case_id, (k, rows_hot)) in enumerate(HOT.items()):
        ref, ev = _doses(k, rows_hot)
        sub = folder / f"case{i}"
        sub.mkdir()
        write_nifti(ref, sub / "dose_ct.nii.gz")
        write_nifti(ev, sub / "dose_sct.nii.gz")
        write_nifti(_ct(), sub / "ct.nii.gz")
        rows.append({"case_id": case_id, "ct": f"case{i}/ct.nii.gz",
                     "dose_ct": f"case{i}/dose_ct.nii.gz", "dose_sct": f"case{i}/dose_sct.nii.gz"})
    with open(folder / "cases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case_id", "ct", "dose_ct", "dose_sct"])
        writer.writeheader()
        writer.writerows(rows)
    protocol = folder / "protocol.yaml"
    protocol.write_text("""\
name: sCT dose with CT — test
kind: commissioning
model: {name: vendor-sct, version: "1.0", adapter: precomputed, output: dose_sct}
cases: cases.csv
checks:
  - check: gamma
    reference: dose_ct
    evaluated: dose_sct
    ct: ct
    options: {criteria: ["3%/2mm"]}
""", encoding="utf-8")
    with Store(f"sqlite:///{folder / 'qa.db'}") as store:
        yield store, run_protocol(protocol, store).run_id, folder


@pytest.mark.parametrize(("language", "title", "ct_caption", "search"), [
    ("en", "Gamma map of the worst cases", "Under it: the planning CT",
     "certified cell-wise branch and bound on the CPU (numba)"),
    ("fr", "Carte gamma des cas les plus défavorables", "En dessous : le scanner",
     "séparation et évaluation certifiée par cellule sur le CPU (numba)"),
])
def test_the_run_report_draws_the_worst_maps_over_the_ct_from_the_store(stored_run, language,
                                                                        title, ct_caption,
                                                                        search):
    store, run_id, folder = stored_run
    stored = store.details(run_id, check_id="gamma", name="gamma_map_slice")
    assert all(payload.get("ct_grey") for payload in stored["payload"])
    html = render_run_report(store, run_id, folder / f"r-{language}.html",
                             language=language).read_text("utf-8")
    section = html[html.index('class="gamma"'):]
    assert title in section and ct_caption in section and search in section
    # histogram + one map per worst case
    assert section.count("data:image/png;base64,") == 1 + WORST_MAPS
    assert "C&lt;b&gt;2" in section and "C<b>2" not in section
