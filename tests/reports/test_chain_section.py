"""The report prints the store's chain status and head hash (``reports/_chain.py``)."""

from __future__ import annotations

import re

from qa.store import Store
from reports.html import render_run_report
from tests.qa.store_helpers import new_run


def _run_with_a_case(store: Store, case_id: str) -> int:
    run_id = new_run(store)
    store.add_case(run_id, case_id, position=0, attributes={})
    store.finish_run(run_id, "complete", exit_code=0)
    return run_id


def _chain_rows(html: str) -> str:
    start = html.index('<tr id="chain">')
    return html[start:html.index("</table>", start)]


def test_the_report_shows_an_intact_chain_and_its_head_hash(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = _run_with_a_case(store, "p01")
        anchor = store.run_anchor(run_id)
        assert anchor is not None and anchor["hash"] == store.verify().head_hash
        path = render_run_report(store, run_id, tmp_path / "r.html")
    rows = _chain_rows(path.read_text(encoding="utf-8"))
    assert f"this run was chained in ledger entry {anchor['seq']}" in rows
    assert f'<code class="hash">{anchor["hash"]}</code>' in rows and "level-ok" in rows


def test_later_runs_do_not_change_the_report_of_an_earlier_run(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        first = _run_with_a_case(store, "p01")
        before = render_run_report(store, first, tmp_path / "a.html").read_bytes()
        _run_with_a_case(store, "p02")
        assert store.verify().head_hash != store.run_anchor(first)["hash"]
        after = render_run_report(store, first, tmp_path / "b.html").read_bytes()
    assert before == after


def test_an_unfinished_run_has_no_anchor_and_says_so(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = new_run(store)
        assert store.run_anchor(run_id) is None
        path = render_run_report(store, run_id, tmp_path / "r.html")
    rows = _chain_rows(path.read_text(encoding="utf-8"))
    assert "this run is not (yet) chained" in rows and '<code class="hash">' not in rows


def test_a_broken_chain_is_shown_with_its_problems_escaped(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = _run_with_a_case(store, "<b>p01</b>")
        with store._engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER cases_no_update")
            connection.exec_driver_sql("UPDATE cases SET position = 5")
        path = render_run_report(store, run_id, tmp_path / "r.html", language="fr")
    rows = _chain_rows(path.read_text(encoding="utf-8"))
    assert "ROMPUE au rendu de ce rapport : 1 problème(s)" in rows and "level-action" in rows
    assert "cases (run 1, case &#39;&lt;b&gt;p01&lt;/b&gt;&#39;): content changed" in rows
    assert not re.search(r"<b>p01", rows)
