"""Specification of the risk-register section of the report (reports._risk_section and
reports/templates/_risk.html.j2), rendered on its own from a hand-made store.

The store holds 30 cases with 3 segmentation ACTION verdicts (upper Clopper–Pearson bound
26.5 %, TG-100 O 10); expected strings are written out by hand from those counts.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest

from qa.risk import RiskTemplateError
from qa.store import Store
from reports._format import Formatter
from reports._risk_section import risk_context
from tests.risk_builders import add_run, cases, mode, write_template

TEMPLATES = Path(__file__).resolve().parents[2] / "reports" / "templates"
XSS = "<script>alert(1)</script>"


def render(risk: dict | None, fmt: Formatter) -> str:
    """The section alone, with the report's jinja2 settings (autoescape, strict undefined)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(
                                 enabled_extensions=("html", "j2"), default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.from_string('{% include "_risk.html.j2" %}').render(t=fmt.t, risk=risk)


class Cells(HTMLParser):
    """Text of each table row with an id (one string per cell) and of each element with an id."""

    VOID = {"br", "img", "meta", "hr", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self.by_id: dict[str, str] = {}
        self._row: str | None = None
        self._stack: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag == "tr" and ident:
            self._row = ident
            self.rows[ident] = []
        if tag in ("td", "th") and self._row:
            self.rows[self._row].append("")
        if tag == "br":
            self.handle_data(" ")
        if tag not in self.VOID:
            self._stack.append((tag, ident))
        if ident:
            self.by_id.setdefault(ident, "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._row and self.rows[self._row]:
            self.rows[self._row][-1] += data
        for _, ident in self._stack:
            if ident:
                self.by_id[ident] += data


def parse(html: str) -> Cells:
    cells = Cells()
    cells.feed(html)
    cells.rows = {k: [" ".join(c.split()) for c in v] for k, v in cells.rows.items()}
    cells.by_id = {k: " ".join(v.split()) for k, v in cells.by_id.items()}
    return cells


@pytest.fixture()
def source(tmp_path):
    template = write_template(tmp_path, [
        mode("seg_error", 8, [{"check": "seg", "metric": "dice"}],
             title={"en": f"Contour error {XSS}", "fr": f"Erreur de contour {XSS}"},
             mitigations=[{"en": "review & edit", "fr": "relecture & correction"}],
             references=["TG-100 Table X"]),
        mode("hallucination", 7, [], title="Hallucination")], name=f"AMDEC {XSS}")
    with Store("sqlite://") as store:
        first = add_run(store, cases(30))
        second = add_run(store, cases(27, 0, 3))
        yield store, first, second, template


def test_the_section_shows_the_scores_and_escapes_template_text(source):
    store, _, run_id, template = source
    html = render(risk_context(store, run_id, Formatter("en"), template=template),
                  Formatter("en"))
    assert html.count('<section id="risk">') == 1
    assert re.search(r"<h2>\s*Risk register\s*</h2>", html)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "review &amp; edit" in html
    page = parse(html)
    seg = page.rows["risk-seg_error"]
    # S 8; O 10 (upper 26.5 % > 5 %); D 3 (every case); RPN 240; high; frequent × critical
    assert seg[0].endswith("Mitigations: review & edit Sources: TG-100 Table X")
    assert seg[1:5] == ["8", "10", "3", "240"]
    assert seg[5].strip() == "high"
    assert "unacceptable" in seg[6] and "frequent × critical" in seg[6]
    assert "3 of 30 evaluated cases at ACTION" in seg[7]
    assert "rate 10 %, upper bound 26.53 % (95.0 % Clopper–Pearson)" in seg[7]
    assert "D: checked on every case" in seg[7]
    # previous run: 0 of 30 → O 10 too: same RPN
    assert "unchanged" in seg[8] and "previous RPN 240" in seg[8]
    hallucination = page.rows["risk-hallucination"]
    assert hallucination[1:5] == ["7", "—", "—", "—"]
    assert hallucination[5].strip() == "not assessed"
    assert "no linked check" in hallucination[7]
    assert page.by_id["risk-counts"].strip() == \
        "1 high priority, 0 medium, 0 low, 1 not assessed."
    assert page.by_id["risk-previous-run"] == str(source[1])


def test_the_legend_cites_the_sources_and_the_unverified_bands_are_flagged(source):
    store, _, run_id, template = source
    html = render(risk_context(store, run_id, Formatter("en"), template=template),
                  Formatter("en"))
    legend = parse(html).by_id["risk-legend"]
    assert "TG-100" in legend and "Huq et al., Med Phys 2016" in legend
    assert "ISO 14971:2019" in legend and "Clopper–Pearson" in legend
    assert "S ≥ 8 whatever the RPN" in legend and "RPN ≥ 125" in legend
    assert "never given a default score" in legend
    assert "not been checked against TG-100 Table II" in parse(html).by_id["risk-unverified"]


def test_the_iso_matrix_places_assessed_modes_in_their_cell(source):
    store, _, run_id, template = source
    html = render(risk_context(store, run_id, Formatter("en"), template=template),
                  Formatter("en"))
    matrix = html[html.index('id="risk-matrix"'):]
    frequent = re.search(r"<tr><th>frequent.*?</tr>", matrix, re.S).group(0)
    cells = re.findall(r"<td>(.*?)</td>", frequent, re.S)
    assert len(cells) == 5
    assert "seg_error" in cells[3] and "unacceptable" in cells[3]  # critical column
    assert "hallucination" not in matrix.split("</table>")[0]      # not assessed: no cell


def test_french_rendering(source):
    store, _, run_id, template = source
    fmt = Formatter("fr")
    html = render(risk_context(store, run_id, fmt, template=template), fmt)
    page = parse(html)
    assert re.search(r"<h2>\s*Analyse des risques \(AMDEC\)\s*</h2>", html)
    seg = page.rows["risk-seg_error"]
    assert seg[0].startswith(f"Erreur de contour {XSS}")  # the parser unescapes the text
    assert seg[5].strip() == "haute"
    assert "inacceptable" in seg[6] and "fréquente × critique" in seg[6]
    assert "3 sur 30 cas évalués au niveau ACTION" in seg[7]
    assert "borne supérieure 26,53 %" in seg[7]                    # decimal comma
    assert "relecture &amp; correction" in html
    headers = re.findall(r"<th>(.*?)</th>", html[html.index('id="risk-register"'):])[:5]
    assert headers == ["Mode de défaillance", "G", "O", "D", "Criticité"]
    assert page.rows["risk-hallucination"][5].strip() == "non évalué"


def test_the_section_uses_the_template_stored_with_the_run(tmp_path):
    with Store("sqlite://") as store:
        run_id = add_run(store, cases(5), finish=False)
        theirs = write_template(tmp_path, [mode("theirs", 3, [{"check": "seg"}])],
                                name="Department AMDEC")
        from qa.risk import RISK_CHECK_ID, TEMPLATE_DETAIL, template_record

        store.add_details(run_id, None, RISK_CHECK_ID, {TEMPLATE_DETAIL:
                                                        template_record(theirs)})
        store.finish_run(run_id, "complete", exit_code=0)
        theirs.unlink()
        html = render(risk_context(store, run_id, Formatter("en")), Formatter("en"))
    page = parse(html)
    assert page.by_id["risk-template-name"] == "Department AMDEC"
    assert list(page.rows) == ["risk-theirs"]


def test_a_malformed_override_raises_and_a_broken_stored_record_is_shown(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("failure_modes: 3\n", encoding="utf-8")
    with Store("sqlite://") as store:
        run_id = add_run(store, cases(2), finish=False)
        with pytest.raises(RiskTemplateError, match="failure_modes"):
            risk_context(store, run_id, Formatter("en"), template=bad)
        store.add_details(run_id, None, "risk_register", {"template": {"source": "x"}})
        context = risk_context(store, run_id, Formatter("en"))
    html = render(context, Formatter("en"))
    assert "The risk register could not be built" in parse(html).by_id["risk-error"]


def test_no_risk_context_renders_nothing():
    assert render(None, Formatter("en")).strip() == ""


def test_qa_report_risk_template_option(tmp_path, capsys):
    from qa.cli import main

    url = f"sqlite:///{tmp_path / 'qa.db'}"
    with Store(url) as store:
        run_id = add_run(store, cases(4, 0, 1))
    theirs = write_template(tmp_path / "dept", [mode("dept_mode", 6, [{"check": "seg"}],
                                                     title="Department failure mode")])
    out = tmp_path / "report.html"
    assert main(["report", str(run_id), "--store", url, "--out", str(out),
                 "--risk-template", str(theirs)]) == 0
    page = parse(out.read_text(encoding="utf-8"))
    assert page.rows["risk-dept_mode"][0].startswith("Department failure mode")
    bad = tmp_path / "bad.yaml"
    bad.write_text("failure_modes:\n  - {id: x, title: t, effect: e, severity: 0}\n",
                   encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(run_id), "--store", url, "--out", str(out),
                 "--risk-template", str(bad)]) == 40
    error = capsys.readouterr().err
    assert str(bad.resolve()) in error and "failure_modes[0].severity" in error


def test_verified_department_scales_print_no_warning(tmp_path):
    from tests.risk_builders import WIDE_SCALES

    template = write_template(tmp_path, [mode("m", 5, [{"check": "seg"}])], scales=WIDE_SCALES)
    with Store("sqlite://") as store:
        run_id = add_run(store, cases(3))
        html = render(risk_context(store, run_id, Formatter("en"), template=template),
                      Formatter("en"))
    assert 'id="risk-unverified"' not in html
    assert "test scales (wide bands)" in html
