"""The proxy-task search page: the answer, every candidate, their correlation drawn in a browser."""

from __future__ import annotations

import pytest
from browser import Browser, find_chromium

from kfnas.views.proxy_search import proxy_search_page


def _stat(step, tau, seconds, pairs=5):
    return {
        "step": step,
        "pairs": pairs,
        "correlation": tau,
        "p_value": None if tau is None else 0.1,
        "median_value": 0.5,
        "median_seconds": seconds,
    }


def _candidate(name, state, stats, steps=None, seconds=None, error=""):
    return {
        "name": name,
        "settings": {"task.image_size": 32 if name == "small" else 64},
        "state": state,
        "stop_step": None if steps is None else 20,
        "final_steps": steps,
        "final_seconds": seconds,
        "latency_correlation": 0.8,
        "time_limit_s": 10800.0,
        "trials": 5,
        "stopped_early": 5,
        "failed": 0,
        "error": error,
        "stats": stats,
        "scores_step": None if steps is None else 20,
        "scores": []
        if steps is None
        else [{"model": m, "proxy": m / 20, "full": m / 10} for m in range(5)],
    }


REPORT = {
    "metric": "top_1_accuracy",
    "targets": {"correlation": 0.65},
    "references": [
        {"model": m, "selection_trial": 30 + m, "score": m / 10, "latency_ms": 5.0}
        for m in range(5)
    ],
    "candidates": [
        _candidate(
            "small", "met_correlation", [_stat(10, 0.4, 5.0), _stat(20, 0.8, 10.0)], 16.7, 8.3
        ),
        _candidate(
            "large",
            "slower_than_best",
            [_stat(10, None, 9.0, pairs=3)],
            error="study stopped: 5 trials failed in a row",
        ),
    ],
    "best": "small",
    "best_overrides": ["task.image_size=32", "studies.proxy.budget.train_steps=17"],
}


def test_the_page_gives_the_answer_as_overrides_and_every_candidate():
    page = proxy_search_page(REPORT, title="pick: proxy-task search")
    assert '<tr data-candidate="small" class="best">' in page
    assert '<tr data-candidate="large">' in page and "slower than the best" in page
    assert "--set task.image_size=32\n--set studies.proxy.budget.train_steps=17" in page
    assert "(study stopped: 5 trials failed in a row)" in page
    assert "<td>17</td><td>8.3</td>" in page and 'src="http' not in page
    none = proxy_search_page({**REPORT, "best": None, "best_overrides": []}, title="x")
    assert "No candidate met a target" in none


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium")
def test_the_correlation_of_each_candidate_is_drawn_in_a_browser(tmp_path):
    path = tmp_path / "proxy.html"
    path.write_text(proxy_search_page(REPORT, title="pick"))
    with Browser() as browser:
        assert browser.open(path.as_uri()) == "1"
        traces = browser.evaluate(
            "document.getElementById('proxy-correlation').data.map((t) => [t.name, t.x, t.y])"
        )
        # Per candidate: tau against seconds, then against steps; a step without tau is left out.
        assert traces == [
            ["small", [5.0, 10.0], [0.4, 0.8]],
            ["small", [10, 20], [0.4, 0.8]],
            ["large", [], []],
            ["large", [], []],
        ]
        scores = browser.evaluate(
            "document.getElementById('proxy-scores').data.map((t) => [t.name, t.x, t.y])"
        )
        assert scores == [
            ["small (step 20)", [0, 0.1, 0.2, 0.3, 0.4], [0, 0.05, 0.1, 0.15, 0.2]],
        ]
        assert not browser.errors
    empty = tmp_path / "empty.html"
    empty.write_text(
        proxy_search_page({**REPORT, "candidates": [REPORT["candidates"][1]]}, title="x")
    )
    with Browser() as browser:
        assert browser.open(empty.as_uri()) == "1"
        assert "No candidate had enough models" in browser.evaluate("document.body.textContent")
