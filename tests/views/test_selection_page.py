"""The model-selection page: its tables, and its plot of every iteration drawn in a browser."""

from __future__ import annotations

import pytest
from browser import Browser, find_chromium

from kfnas.views.selection import selection_page

REPORT = {
    "metric": "top_1_accuracy",
    "iterations": [
        {
            "iteration": 1,
            "step": 4,
            "models": 3,
            "points": {"0": [0.2, 5.0], "1": [0.3, 6.0], "2": [0.25, 5.5]},
            "failed": [],
            "removed": [2],
            "kept": [0, 1],
        },
        {
            "iteration": 2,
            "step": 10,
            "models": 2,
            "points": {"3": [0.4, 5.0], "4": [0.5, 6.0]},
            "failed": [],
            "removed": [],
            "kept": [3, 4],
        },
    ],
    "selected": [
        {"trial_id": 3, "model": 0, "top_1_accuracy": 0.4, "latency_ms": 5.0},
        {"trial_id": 4, "model": 1, "top_1_accuracy": 0.5, "latency_ms": 6.0},
    ],
}


def test_the_page_lists_the_selected_models_and_every_iteration():
    page = selection_page(REPORT, title="pick: model selection")
    assert page.count('<tr data-trial="') == 2 and "<td>1</td><td>3</td><td>4</td>" in page
    assert 'src="http' not in page


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium")
def test_the_plot_draws_kept_and_removed_models_in_a_browser(tmp_path):
    path = tmp_path / "selection.html"
    path.write_text(selection_page(REPORT, title="pick"))
    with Browser() as browser:
        assert browser.open(path.as_uri()) == "1"
        names = browser.evaluate(
            "document.getElementById('selection-points').data.map((t) => t.name)"
        )
        assert names == [
            "iteration 1 (step 4)",
            "iteration 1 (step 4): removed",
            "iteration 2 (step 10)",
        ]
        assert not browser.errors
    empty = tmp_path / "empty.html"
    empty.write_text(selection_page({"metric": "m", "iterations": [], "selected": []}, title="x"))
    with Browser() as browser:
        assert browser.open(empty.as_uri()) == "1"
        assert "No iteration finished." in browser.evaluate("document.body.textContent")
