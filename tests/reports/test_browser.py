"""The HTML report opened in a real browser (headless Chromium over the DevTools protocol),
as the committee would open it: it loads without any console message, uncaught exception or
browser log error (no missing or blocked resource), and shows the decision and the risk
register."""

from __future__ import annotations

import pytest

from reports.pdf import load_in_browser

pytestmark = pytest.mark.slow  # starts Chromium (about 2 s per page)


@pytest.mark.parametrize("language", ["en", "fr"])
def test_report_loads_cleanly_and_shows_the_decision_and_risk_table(dicom_run, chromium,
                                                                    language):
    html = dicom_run.html_en if language == "en" else dicom_run.html_fr
    seen = load_in_browser(html, ("decision-outcome", "decision-reasons", "risk-register",
                                  "toc"))
    assert seen.console == () and seen.exceptions == () and seen.log_errors == ()
    outcome = {"en": "Not approved for clinical use", "fr": "Utilisation clinique non approuvée"}
    assert seen.texts["decision-outcome"] == outcome[language]
    reason = {"en": "1 case(s) at ACTION on hu_accuracy · mae_hu",
              "fr": "1 cas au seuil d'action sur hu_accuracy · mae_hu"}
    assert reason[language] in seen.texts["decision-reasons"]
    register = seen.texts["risk-register"]  # None if absent or not displayed
    assert register is not None
    assert {"en": "RPN", "fr": "Criticité"}[language] in register
    assert "PSEUDO-01" not in seen.texts["toc"]
    assert seen.title.endswith(f" {dicom_run.run_id}")  # "… — Run 1" / "… — Exécution 1"


def test_the_browser_check_catches_a_broken_page(chromium, tmp_path):
    # the detector itself: a page with a script error, a console error and a missing image
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body><p id='a'>A</p>"
                    "<p id='hidden' style='display:none'>H</p><img src='missing.png'>"
                    "<script>console.error('boom'); undefinedFunction();</script></body></html>",
                    encoding="utf-8")
    seen = load_in_browser(page, ("a", "hidden", "absent"))
    assert seen.console == ("error: boom",)
    assert len(seen.exceptions) == 1 and "undefinedFunction" in seen.exceptions[0]
    assert any("missing.png" in entry for entry in seen.log_errors)
    assert seen.texts == {"a": "A", "hidden": None, "absent": None}
