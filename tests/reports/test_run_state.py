"""Specification of how the report shows a run that has not finished.

A run whose process died stays ``running`` in the store (``qa runs`` lists it as incomplete:
its run lock is free, :func:`qa.lock.run_state`). Its report must say so on the first page
(the cases not finished are missing, the cohort phase may not have run, how to finish it),
and its proposed decision is *not approved* with a numbered reason naming
``qa run PROTOCOL --resume RUN``. A run whose lock is held still runs: "run in progress,
results partial". The run is made as the crash-safety tests make one
(tests/qa/test_resume.py): a real run stopped by Ctrl-C after two of its six cases.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest

import qa.runner
from qa.lock import run_lock, run_state
from qa.runner import run_protocol
from qa.store import Store
from reports._decision import decide
from reports.html import render_run_report
from tests.cohort_builders import write_precomputed_cohort

OFFSETS_HU = {f"C{i:02d}": offset for i, offset in
              enumerate([10.0, -20.0, 80.0, 100.0, 35.0, -5.0], start=1)}
N_STORED = 2
READS = frozenset({"url", "run", "runs", "verify", "run_anchor", "audit_events", "cases",
                   "measurements", "verdicts", "errors", "details", "validations"})


class ReadOnly:
    """Lets the report read the store (and its URL, for the run lock) and nothing else."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name not in READS:
            raise AssertionError(f"the report called store.{name}; it may only read")
        return getattr(self._store, name)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> tuple[Store, int, str]:
    """A SQLite file store holding a run stopped (Ctrl-C) after 2 of its 6 cases; the store,
    the run id and the protocol's SHA-256 (what its run lock is keyed by)."""
    folder = tmp_path_factory.mktemp("interrupted")
    protocol = write_precomputed_cohort(folder / "cohort", OFFSETS_HU)
    real = qa.runner.case_results

    def stop_after_two(spec, context, cases, progress=None):
        for i, result in enumerate(real(spec, context, cases, progress)):
            if i == N_STORED:
                raise KeyboardInterrupt
            yield result

    store = Store(f"sqlite:///{folder / 'qa.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(qa.runner, "case_results", stop_after_two)
        with pytest.raises(KeyboardInterrupt):
            run_protocol(protocol, store)
    run_id = int(store.runs()["run_id"].iloc[-1])
    run = store.run(run_id)
    assert run["status"] == "running" and len(store.cases(run_id)) == N_STORED
    yield store, run_id, str(run["protocol_hash"])
    store.close()


def _render(store: Store, run_id: int, path: Path, language: str) -> str:
    out = render_run_report(ReadOnly(store), run_id, path, language=language)
    return out.read_text(encoding="utf-8")


def _text(html: str, element_id: str) -> str:
    """The text of the element with this id (tags dropped, entities decoded, spaces joined)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f"no element with id {element_id!r} in the report"
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


def _page_one(html: str) -> str:
    """The report's first page: its header, up to the end of the decision box."""
    return html[:html.index("</header>")]


def test_an_interrupted_run_is_reported_incomplete_with_how_to_finish_it(interrupted,
                                                                        tmp_path):
    store, run_id, _ = interrupted
    assert run_state(store, store.run(run_id)) == "interrupted"
    html = _render(store, run_id, tmp_path / "en.html", "en")
    page_one = _page_one(html)
    assert 'id="run-state"' in page_one
    notice = _text(html, "run-state")
    assert notice.startswith("Incomplete run: interrupted.")
    assert "The cases it had not finished are missing (2 case(s) stored)" in notice
    assert "its cohort phase (cohort statistics, pass rates, cohort checks) may not have run" \
        in notice
    assert f"`qa run PROTOCOL --resume {run_id}`" in notice
    assert "incomplete (interrupted)" in page_one  # the header's run status
    assert _text(html, "overall-verdict").endswith("(partial: the run has not finished)")

    assert _text(html, "decision-outcome") == "Not approved for clinical use"
    reasons = _text(html, "decision-reasons")
    assert "Blocking: The run is incomplete: it was interrupted" in reasons
    assert f"Finish it with `qa run PROTOCOL --resume {run_id}`" in reasons
    assert "status: running" not in reasons
    assert "Run in progress" not in html
    # the recommendation names this run too
    assert f"`qa run PROTOCOL --resume {run_id}`" in _text(html, "recommendation-list")


def test_the_french_report_of_an_interrupted_run_says_it_in_french(interrupted, tmp_path):
    store, run_id, _ = interrupted
    html = _render(store, run_id, tmp_path / "fr.html", "fr")
    notice = _text(html, "run-state")
    assert notice.startswith("Exécution incomplète : interrompue.")
    assert "Les cas qu'elle n'avait pas terminés manquent (2 cas enregistrés)" in notice
    assert f"`qa run PROTOCOLE --resume {run_id}`" in notice
    assert "incomplète (interrompue)" in _page_one(html)
    assert _text(html, "decision-outcome") == "Utilisation clinique non approuvée"
    reasons = _text(html, "decision-reasons")
    assert "L'exécution est incomplète : elle a été interrompue" in reasons
    assert f"`qa run PROTOCOLE --resume {run_id}`" in _text(html, "recommendation-list")
    for english in ("Incomplete run", "interrupted", "is missing", "Finish it"):
        assert english not in notice + reasons


def test_a_run_whose_lock_is_held_is_reported_in_progress(interrupted, tmp_path):
    store, run_id, protocol_sha256 = interrupted
    with run_lock(store.url, protocol_sha256, timeout_s=0):  # as a live `qa run` holds it
        assert run_state(store, store.run(run_id)) == "running"
        html = _render(store, run_id, tmp_path / "en.html", "en")
        french = _render(store, run_id, tmp_path / "fr.html", "fr")
    notice = _text(html, "run-state")
    assert notice.startswith("Run in progress: results partial.")
    assert "2 case(s) stored so far" in notice
    assert "--resume" not in notice and "interrupted" not in notice
    assert "running (in progress)" in _page_one(html)
    assert _text(html, "decision-outcome") == "Not approved for clinical use"
    assert "The run is still in progress" in _text(html, "decision-reasons")
    assert _text(french, "run-state").startswith("Exécution en cours : résultats partiels.")


def test_a_finished_run_has_no_run_state_notice(tmp_path):
    protocol = write_precomputed_cohort(tmp_path / "cohort", OFFSETS_HU)
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = run_protocol(protocol, store).run_id
        assert run_state(store, store.run(run_id)) == "complete"
        html = _render(store, run_id, tmp_path / "en.html", "en")
    assert 'id="run-state"' not in html
    assert "--resume" not in html and "interrupted" not in _page_one(html)
    assert "partial" not in _text(html, "overall-verdict")


@pytest.mark.parametrize(("state", "code"), [("interrupted", "run_interrupted"),
                                             ("running", "run_in_progress")])
def test_decide_blocks_an_unfinished_run_with_its_own_reason(interrupted, state, code):
    store, run_id, _ = interrupted
    run = store.run(run_id)
    decision = decide(run, store.verdicts(run_id), store.validations(run_id),
                      store.errors(run_id), store.cases(run_id), None, state=state)
    assert decision.outcome == "not_approved"
    blocking = [r for r in decision.reasons if r.blocking]
    (reason,) = [r for r in blocking if r.code == code]
    assert reason.values == {"run": str(run_id), "n_cases": N_STORED}
    assert "run_not_complete" not in {r.code for r in decision.reasons}


@pytest.mark.slow
def test_the_printed_first_page_of_an_interrupted_run_holds_the_notice_and_the_decision(
        interrupted, chromium, poppler, tmp_path):
    # The notice sits above the decision box: both must still be on page 1 of the PDF.
    import subprocess

    from reports.pdf import render_run_pdf

    store, run_id, _ = interrupted
    pdf = render_run_pdf(ReadOnly(store), run_id, tmp_path / "run.pdf")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout
    first = " ".join(text.split("\f")[0].split())
    assert "Incomplete run: interrupted." in first
    assert f"--resume {run_id}" in first
    assert "Not approved for clinical use" in first
