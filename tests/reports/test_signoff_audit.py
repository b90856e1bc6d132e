"""The sign-off block lists the decisions recorded on the run (``qa approve`` ...), escaped."""

from __future__ import annotations

import datetime as dt

from qa.store import Store
from reports.html import render_run_report
from tests.qa.store_helpers import new_run


def _signoff(html: str) -> str:
    start = html.index('<section id="signoff"')
    return html[start:html.index("</section>", start)]


def test_an_approval_is_shown_with_who_when_and_why_escaped(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = new_run(store)
        store.add_case(run_id, "p01", position=0, attributes={})
        store.finish_run(run_id, "complete", exit_code=0)
        store.approve_run(run_id, operator="<b>dr who</b>",
                          reason="reviewed on 2026-03-02 <script>alert(1)</script>",
                          at=dt.datetime(2026, 3, 2, 10, 30, tzinfo=dt.timezone.utc))
        english = _signoff(render_run_report(store, run_id, tmp_path / "en.html")
                           .read_text(encoding="utf-8"))
        french = _signoff(render_run_report(store, run_id, tmp_path / "fr.html",
                                            language="fr").read_text(encoding="utf-8"))
    assert "run approved" in english and "2026-03-02" in english
    assert "&lt;b&gt;dr who&lt;/b&gt;" in english
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in english and "<script>" not in english
    assert "exécution approuvée" in french and "Pourquoi" in french


def test_a_run_without_recorded_decisions_says_how_to_record_one(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = new_run(store)
        store.finish_run(run_id, "complete", exit_code=0)
        html = _signoff(render_run_report(store, run_id, tmp_path / "r.html")
                        .read_text(encoding="utf-8"))
    assert "None recorded yet" in html and "qa approve" in html
