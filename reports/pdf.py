"""PDF of the run report: the HTML report printed by headless Chromium on A4.

The PDF is the same document as the HTML file (same template, same CSS ``@media print``
rules), printed through the DevTools protocol ``Page.printToPDF`` (:mod:`reports._chromium`)
with a footer on every page (report, protocol, run, ``page N / M``) and a document outline
(bookmarks) from the headings. The table of contents gets its page numbers in two passes:
the first print tells on which page each section starts (read from the PDF's named
destinations, which Chromium writes for the table of contents' links), the numbers are written
into the page, and it is printed again (repeated until the numbers are stable, at most
:data:`MAX_PASSES` times).

Determinism: Chromium stamps ``/CreationDate`` and ``/ModDate`` with the wall clock; they are
replaced by the run's own time (same byte length, so the cross-reference table stays valid).
The tagged PDF's structure elements carry Chromium's DOM node numbers as IDs
(``/ID (node00000015)``, referenced by table cells' ``/Headers`` and the ``/IDTree``); those
numbers depend on how many nodes the renderer created before, which varies from one print to
the next (seen: every ID shifted by one in 2 prints out of 16 on a loaded machine). They are
renumbered by rank (1, 2, ...; same width, same order, so the ID tree stays sorted and the
byte length unchanged). The same HTML printed by the same Chromium build with the same fonts
then gives the same bytes; another Chromium version or font set may lay the pages out
differently (the text is the same).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from reports._chromium import (
    Chromium,
    ChromiumError,
    ChromiumNotFoundError,
    file_url,
    find_chromium,
)

__all__ = ["render_run_pdf", "render_run_reports", "render_pdf", "load_in_browser",
           "BrowserLoad", "ChromiumNotFoundError", "ChromiumError", "find_chromium",
           "MAX_PASSES", "section_pages"]

logger = logging.getLogger(__name__)

#: Most print passes to settle the table of contents' page numbers.
MAX_PASSES = 3
_DATE = re.compile(rb"(/(?:CreationDate|ModDate) \(D:)\d{14}[+-]\d\d'\d\d'")
_NODE_ID = re.compile(rb"\(node(\d{8})\)")
_FOOTER = (
    '<div style="font-family: \'DejaVu Sans\', Arial, sans-serif; font-size: 7pt; '
    'color: #333; width: 100%; margin: 0 12mm; display: flex; '
    'justify-content: space-between;"><span>{label}</span>'
    '<span>{page} <span class="pageNumber"></span> / <span class="totalPages"></span></span>'
    '</div>'
)
# Fills the TOC's page cells (<span data-toc-page="id">) from a JSON object id -> page.
_FILL_TOC = """(pages => {
  for (const cell of document.querySelectorAll('[data-toc-page]')) {
    const page = pages[cell.getAttribute('data-toc-page')];
    cell.textContent = page === undefined ? '' : String(page);
  }
  return document.querySelectorAll('[data-toc-page]').length;
})(%s)"""


@dataclass(frozen=True)
class BrowserLoad:
    """What a browser saw loading a page: console messages at level error or warning,
    uncaught exceptions, log entries at level error, the ``innerText`` of the elements asked
    for (None when absent or not displayed) and the document title."""

    console: tuple[str, ...]
    exceptions: tuple[str, ...]
    log_errors: tuple[str, ...]
    texts: dict[str, str | None]
    title: str


def render_run_pdf(store: Any, run_id: int, path: str | Path, *, language: str = "en",
                   risk_template: str | Path | None = None,
                   html_path: str | Path | None = None) -> Path:
    """Write the PDF report of one run and return its path.

    Parameters
    ----------
    store : qa.store.Store
        The results store, read only.
    run_id : int
        The run to report.
    path : path
        Output file, or an existing folder (the file is then ``report-run-<id>.pdf``).
    language : {"en", "fr"}
        Report language.
    risk_template : path, optional
        As for :func:`reports.html.render_run_report`.
    html_path : path, optional
        The run's HTML report already rendered (same run and language); rendered into a
        temporary folder when None.

    Returns
    -------
    pathlib.Path
        The PDF: the HTML report printed on A4 with page numbers, its table of contents
        with page numbers, bookmarks, and the run's own time as creation date.
    """
    from reports.html import Formatter, default_report_path, render_run_report

    fmt = Formatter(language)
    run = store.run(run_id)
    out = Path(path)
    if out.is_dir():
        out = out / Path(default_report_path(run)).with_suffix(".pdf").name
    label = " — ".join((fmt.t("report.title"), str(run.get("protocol_name") or ""),
                        f"{fmt.t('header.run')} {run_id}"))
    when = run.get("finished_at") or run.get("started_at")
    fixed = when if isinstance(when, datetime) else None
    if html_path is not None:
        return render_pdf(html_path, out, footer_label=label, page_word=fmt.t("pdf.page"),
                          fixed_time=fixed)
    with tempfile.TemporaryDirectory(prefix="qa-report-") as folder:
        page = render_run_report(store, run_id, Path(folder) / "report.html",
                                 language=language, risk_template=risk_template)
        return render_pdf(page, out, footer_label=label, page_word=fmt.t("pdf.page"),
                          fixed_time=fixed)


def render_run_reports(store: Any, run_id: int, out: str | Path | None = None, *,
                       language: str = "en", format: Literal["html", "pdf", "both"] = "html",
                       risk_template: str | Path | None = None) -> list[Path]:
    """Write the HTML and/or PDF report of one run; return the paths written (HTML first).

    ``out`` is a file (its suffix is replaced by ``.html`` / ``.pdf`` for ``both``), an
    existing folder, or None for ``report-run-<id>.html`` / ``.pdf`` in the working folder.
    """
    from reports.html import default_report_path, render_run_report

    if format not in ("html", "pdf", "both"):
        raise ValueError(f"report format {format!r} is not one of html, pdf, both")
    name = Path(default_report_path(store.run(run_id)))
    explicit = out is not None and not Path(out).is_dir()  # a file name given
    base = Path(out) if explicit else name if out is None else Path(out) / name
    written: list[Path] = []
    if format in ("html", "both"):
        html_out = base if format == "html" else base.with_suffix(".html")
        written.append(render_run_report(store, run_id, html_out, language=language,
                                         risk_template=risk_template))
    if format in ("pdf", "both"):
        pdf_out = base if format == "pdf" and explicit else base.with_suffix(".pdf")
        written.append(render_run_pdf(store, run_id, pdf_out, language=language,
                                      risk_template=risk_template,
                                      html_path=written[0] if written else None))
    return written


def render_pdf(html_path: str | Path, pdf_path: str | Path, *, footer_label: str,
               page_word: str = "page", fixed_time: datetime | None = None,
               timeout_s: float = 120.0) -> Path:
    """Print the HTML report ``html_path`` to ``pdf_path`` (A4, page numbers, outline).

    Parameters
    ----------
    html_path : path
        A self-contained HTML report (:func:`reports.html.render_run_report`).
    pdf_path : path
        Output file (overwritten).
    footer_label : str
        Text at the left of every page's footer (escaped here).
    page_word : str
        The word before ``N / M`` in the footer (``page``, ``page`` in French too).
    fixed_time : datetime, optional
        Written as the PDF's creation and modification dates (the run's own time) instead of
        the wall clock; aware datetimes are converted to UTC.
    timeout_s : float
        Longest wait for Chromium at each step.

    Returns
    -------
    pathlib.Path
        ``pdf_path``.

    Raises
    ------
    ChromiumNotFoundError
        No Chromium executable (the message says what to install).
    ChromiumError
        Chromium failed or timed out.
    """
    out = Path(pdf_path)
    footer = _FOOTER.format(label=html.escape(footer_label), page=html.escape(page_word))
    options = {
        "printBackground": True, "preferCSSPageSize": True, "displayHeaderFooter": True,
        "headerTemplate": "<span></span>", "footerTemplate": footer,
        "generateDocumentOutline": True, "generateTaggedPDF": True,
    }
    with Chromium(timeout_s=timeout_s) as browser:
        browser.send("Page.enable")
        browser.send("Page.navigate", url=file_url(html_path))
        browser.wait_for("Page.loadEventFired")
        data = _print(browser, options)
        pages: dict[str, int] = {}
        for _ in range(MAX_PASSES):
            found = section_pages(data)
            if found == pages:
                break
            pages = found
            filled = browser.send("Runtime.evaluate", expression=_FILL_TOC % json.dumps(pages),
                                  returnByValue=True)
            if not filled.get("result", {}).get("value"):
                break  # no table of contents on the page: one pass is enough
            data = _print(browser, options)
        else:
            logger.warning("%s: table of contents page numbers did not settle after %d passes",
                           html_path, MAX_PASSES)
    data = _renumber_node_ids(data)
    if fixed_time is not None:
        data = _stamp(data, fixed_time)
    out.write_bytes(data)
    logger.info("PDF written to %s", out)
    return out


def load_in_browser(html_path: str | Path, element_ids: tuple[str, ...] = (), *,
                    timeout_s: float = 60.0) -> BrowserLoad:
    """Open ``html_path`` in headless Chromium and report what a reader's browser shows.

    Collects console messages of level error/warning (``Runtime.consoleAPICalled``), uncaught
    exceptions (``Runtime.exceptionThrown``) and browser log errors (``Log.entryAdded``: a
    blocked or missing resource, a CSP violation), and the visible text of each element id.
    """
    with Chromium(timeout_s=timeout_s) as browser:
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable")
        browser.send("Page.navigate", url=file_url(html_path))
        browser.wait_for("Page.loadEventFired")
        texts: dict[str, str | None] = {}
        for element_id in element_ids:
            expression = (
                "(e => e && e.offsetParent !== null && e.getClientRects().length"
                f" ? e.innerText : null)(document.getElementById({json.dumps(element_id)}))")
            reply = browser.send("Runtime.evaluate", expression=expression, returnByValue=True)
            texts[element_id] = reply.get("result", {}).get("value")
        title = browser.send("Runtime.evaluate", expression="document.title",
                             returnByValue=True).get("result", {}).get("value", "")
        events = list(browser.events)
    console = tuple(
        f"{p.get('type')}: " + " ".join(str(a.get("value", a.get("description", "")))
                                         for a in p.get("args", []))
        for m, p in events if m == "Runtime.consoleAPICalled"
        and p.get("type") in ("error", "warning", "assert"))
    exceptions = tuple(
        str(p.get("exceptionDetails", {}).get("exception", {}).get("description")
            or p.get("exceptionDetails", {}).get("text", ""))
        for m, p in events if m == "Runtime.exceptionThrown")
    log_errors = tuple(
        f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}"
        for m, p in events if m == "Log.entryAdded"
        and p.get("entry", {}).get("level") in ("error", "warning"))
    return BrowserLoad(console, exceptions, log_errors, texts, title)


def section_pages(pdf: bytes) -> dict[str, int]:
    """Named destination → 1-based page number, read from a Chromium (Skia) PDF.

    Skia writes the destinations of internal links as a plain ``/Dests`` dictionary
    (``/name [page_ref /XYZ x y 0]``) and the page tree as uncompressed objects; this reads
    both with regular expressions (no PDF library needed). Names it cannot resolve are left
    out.
    """
    objects = {int(n): body for n, body in
               re.findall(rb"(?m)^(\d+) 0 obj\s*(.*?)\s*endobj", pdf, re.DOTALL)}
    root = re.search(rb"/Root (\d+) 0 R", pdf)
    if root is None or int(root.group(1)) not in objects:
        return {}
    catalog = objects[int(root.group(1))]
    pages_ref = re.search(rb"/Pages (\d+) 0 R", catalog)
    dests_ref = re.search(rb"/Dests (\d+) 0 R", catalog)
    if pages_ref is None or dests_ref is None:
        return {}
    order: dict[int, int] = {}

    def walk(number: int, depth: int = 0) -> None:
        body = objects.get(number, b"")
        kids = re.search(rb"/Kids \[([^\]]*)\]", body)
        if kids is None or depth > 32:
            order[number] = len(order) + 1
            return
        for kid in re.findall(rb"(\d+) 0 R", kids.group(1)):
            walk(int(kid), depth + 1)

    walk(int(pages_ref.group(1)))
    dests = objects.get(int(dests_ref.group(1)), b"")
    found = {}
    for name, page in re.findall(rb"/([^\s/\[\]()<>]+) \[(\d+) 0 R", dests):
        if int(page) in order:
            found[_pdf_name(name)] = order[int(page)]
    return found


def _print(browser: Chromium, options: dict[str, object]) -> bytes:
    reply = browser.send("Page.printToPDF", **options)
    return base64.b64decode(reply["data"])


def _stamp(pdf: bytes, when: datetime) -> bytes:
    """Replace Chromium's creation/modification times by ``when`` (same length)."""
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    stamp = when.strftime("%Y%m%d%H%M%S").encode("ascii") + b"+00'00'"
    return _DATE.sub(lambda m: m.group(1) + stamp, pdf)


def _renumber_node_ids(pdf: bytes) -> bytes:
    """Replace the structure elements' DOM node IDs by their rank (same width and order).

    Only the numbers declared as an element's ``/ID`` are renumbered, wherever they appear as
    a string ``(nodeNNNNNNNN)`` (the element itself, ``/Headers`` of table cells, the
    ``/IDTree``); a rank-preserving map keeps the ID tree's keys sorted, as the PDF name tree
    requires (ISO 32000-1, 7.9.6).
    """
    declared = sorted({int(n) for n in re.findall(rb"/ID \(node(\d{8})\)", pdf)})
    rank = {number: i for i, number in enumerate(declared, start=1)}

    def renumber(match: re.Match[bytes]) -> bytes:
        number = int(match.group(1))
        if number not in rank:
            return match.group(0)
        return b"(node%08d)" % rank[number]

    return _NODE_ID.sub(renumber, pdf)


def _pdf_name(raw: bytes) -> str:
    """A PDF name token decoded (``#xx`` escapes)."""
    return re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  raw).decode("utf-8", "replace")
