"""The report page in headless Chromium: every section drawn, the table sorts, the tooltips show.

On the sample experiment (real records and event files, no training); the end-to-end pipeline
test opens the report and the live view of a real finished run the same way
(``tests/e2e/test_pipeline_local.py``).
"""

from __future__ import annotations

import pytest
from browser import INSTALL_HINT, Browser, check_report, find_chromium
from sample_experiment import write_sample

from kfnas.store import open_experiment
from kfnas.views.report import render_experiment

pytestmark = pytest.mark.skipif(find_chromium() is None, reason=f"no Chromium: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def test_the_report_draws_every_section_sorts_and_shows_tooltips(tmp_path, browser):
    exp = write_sample(tmp_path)
    page = tmp_path / "report.html"
    page.write_text(render_experiment(open_experiment(exp.uri)).html)
    data = check_report(browser, page.as_uri())
    assert [s["name"] for s in data["studies"]] == ["proxy", "validation", "final"]
    # A row click shows that trial's curves; a trial without logs says why.
    browser.evaluate("document.querySelector('#study-final tbody tr').click()")
    note = browser.evaluate("document.querySelector('#study-final .plot-curves').textContent")
    assert "no training logs under" in note
    tau = browser.evaluate("document.querySelector('#pairs .main-svg') !== null")
    assert tau and not browser.errors


def test_an_experiment_without_finished_trials_shows_empty_states(tmp_path, browser):
    exp = write_sample(tmp_path, proxy_trials=4)
    for study in ("validation", "final", "proxy"):
        for trial_id in exp.records.trial_ids(study):
            path = tmp_path / exp.layout.trial_result(study, trial_id)
            path.unlink(missing_ok=True)
    page = tmp_path / "report.html"
    page.write_text(render_experiment(open_experiment(exp.uri)).html)
    assert browser.open(page.as_uri()) == "1"
    notes = browser.evaluate("[...document.querySelectorAll('.empty')].map(e => e.textContent)")
    assert notes.count("No finished trial yet: plots appear as trials end.") == 3
    assert not browser.errors
