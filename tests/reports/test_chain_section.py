"""The report prints the store's chain status and head hash (``reports/_chain.py``)."""

from __future__ import annotations

import re
from html import unescape

import sqlalchemy as sa

import reports._chain
from qa.store import Store
from reports.html import render_run_report
from tests.qa.store_helpers import PRE_CHAIN_RUN_SQL, new_run, upgrade_to
from tests.qa.tampering import tamper_every_way


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
    assert ("cases (exécution 1, cas &#39;&lt;b&gt;p01&lt;/b&gt;&#39;) : contenu modifié depuis "
            "son enregistrement (entrée 2 du registre)") in rows
    assert not re.search(r"<b>p01", rows)


#: Fragments of the English problem and note lines (qa.store._verify.MESSAGES_EN).
ENGLISH = ("content changed", "removed", "not in the ledger", "behind the store",
           "recorded twice", "ledger entr", "ledger:", "does not follow", "its hash",
           "is not in the chain", "seq jumps", "starts at", "(run ", "case '", "the finish",
           "records written", "adopted", "not evidenced")


def _problem_lines(rows: str) -> list[str]:
    """The chain cell's lines after the status (tags dropped, entities decoded)."""
    cell = rows[rows.index("<td>"):rows.index("</td>")]
    return [unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in cell.split("<br>")[1:]]


def test_the_french_report_prints_every_problem_in_french_escaped(tmp_path, monkeypatch):
    monkeypatch.setattr(reports._chain, "MAX_PROBLEMS_SHOWN", 50)  # show them all
    with Store(f"sqlite:///{tmp_path / 'qa.db'}") as store:
        run_id = tamper_every_way(store)
        with store._engine.begin() as connection:  # a table name that is HTML, in the ledger
            connection.exec_driver_sql(
                "UPDATE ledger SET table_name = '<script>x</script>' WHERE seq = 15")
        n_problems = len(store.verify().problems)
        path = render_run_report(store, run_id, tmp_path / "r.html", language="fr")
    rows = _chain_rows(path.read_text(encoding="utf-8"))
    lines = _problem_lines(rows)
    assert len(lines) == n_problems > 15
    for expected in (
            "registre : entrée 1 supprimée (le registre commence à l’entrée 2)",
            "registre : entrées 13 à 14 supprimées (seq passe de 12 à 15)",
            "registre : l’entrée 3 (cases) a été modifiée : son empreinte ne correspond plus à "
            "son contenu",
            "registre : l’entrée 5 (measurements) ne suit pas l’entrée 4 : une entrée a été "
            "supprimée, insérée ou déplacée",
            "errors id 1 (exécution 1, cas 'p03') : enregistré deux fois (entrées 9 et 10 du "
            "registre)",
            "runs id 1 (la clôture : status, finished_at, exit_code, summary) : contenu modifié "
            "depuis son enregistrement (entrée 12 du registre)",
            "cases (exécution 2, cas '<b>p9</b>') : contenu modifié depuis son enregistrement "
            "(entrée 17 du registre)",
            "errors id 3 (exécution 2, cas '<i>p7</i>') : absent du registre (écrit à l’insu de "
            "la base)",
            "runs id 1 : absent du registre (écrit à l’insu de la base)",
            "verdicts id 1 (exécution 1, cas 'p02') : supprimé (enregistré à l’entrée 7 du "
            "registre)",
            "registre : l’entrée 15 (<script>x</script>) a été modifiée : son empreinte ne "
            "correspond plus à son contenu"):
        assert expected in lines
    for line in lines:
        assert not any(fragment in line for fragment in ENGLISH), line
    for raw in ("<b>p9</b>", "<i>p7</i>", "<script>"):  # store values are escaped
        assert raw not in rows
    assert "&lt;script&gt;x&lt;/script&gt;" in rows


def test_the_french_report_prints_the_adoption_note_in_french(tmp_path):
    url = f"sqlite:///{tmp_path / 'qa.db'}"
    upgrade_to(url, "0003")  # a store from before the chain: its rows are adopted into it
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(PRE_CHAIN_RUN_SQL)
    engine.dispose()
    with Store(url) as store:
        [note] = store.verify().notes
        assert note.startswith("2 records written before the hash chain existed")  # qa verify
        path = render_run_report(store, 1, tmp_path / "r.html", language="fr")
    rows = _chain_rows(path.read_text(encoding="utf-8"))
    assert re.search(r"2 enregistrements écrits avant l’existence de la chaîne y ont été "
                     r"intégrés le \d{4}-\d\d-\d\d \d\d:\d\d UTC ; leur intégrité avant cette "
                     r"date n’est pas prouvée", rows)
    assert not any(fragment in rows for fragment in ("records written", "not evidenced"))
