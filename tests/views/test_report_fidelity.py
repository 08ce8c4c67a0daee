"""Multi-fidelity (ASHA) and early stopping in the report: the page data and the page itself.

Two small experiments written straight into a local store, without training: ``halving`` searches
with successive halving (rungs of 10, 30 and 90 steps, promotions between them), ``stopping``
with the median early-stopping rule (two trials stopped early).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from browser import INSTALL_HINT, Browser, check_report, find_chromium
from sample_experiment import write_sample

from kfnas.config.spec import (
    BudgetSpec,
    ConstraintSpec,
    EarlyStoppingSpec,
    ExperimentSpec,
    MultiFidelitySpec,
    ObjectiveSpec,
    StudySpec,
)
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.store import Experiment, ExperimentLayout, LocalStore, open_experiment
from kfnas.views.listing import list_trials
from kfnas.views.report import render_experiment
from kfnas.views.rows import trial_row

METRIC = "accuracy"
OBJECTIVES = ObjectiveSpec(
    metric=METRIC, constraints=[ConstraintSpec(measure="latency_ms", target=20.0)]
)
HALVING = ExperimentSpec(
    name="halving",
    studies={
        "proxy": StudySpec(
            space="mnasnet",
            budget=BudgetSpec(train_steps=90),
            multi_fidelity=MultiFidelitySpec(scheduler="asha", min_steps=10, reduction_factor=3),
        )
    },
    objectives=OBJECTIVES,
)
STOPPING = ExperimentSpec(
    name="stopping",
    studies={
        "proxy": StudySpec(
            space="mnasnet",
            budget=BudgetSpec(train_steps=90, evaluations=3),
            early_stopping=EarlyStoppingSpec(rule="median", options={"min_trials": 3}),
        )
    },
    objectives=OBJECTIVES,
)
# Rung 0 (10 steps): trials 1-7 completed, 8 failed, 9 still training. The best three of rung 0
# (4, 6, 2) are promoted to rung 1 (30 steps) as 10, 11 and 12 (12 still training); the best of
# rung 1 (10) to rung 2 (90 steps) as 13.
RUNG0 = {1: 0.30, 2: 0.42, 3: 0.35, 4: 0.50, 5: 0.28, 6: 0.45, 7: 0.33}
PROMOTED = {10: (4, 1, 0.58), 11: (6, 1, 0.55), 12: (2, 1, None), 13: (10, 2, 0.63)}
STOP_REASON = "accuracy 0.2100 below the median 0.4000 of 4 trials at step 30"


def _experiment(root: Path, spec: ExperimentSpec) -> Experiment:
    store = LocalStore(root)
    layout = ExperimentLayout(spec.name)
    store.write_text(layout.experiment_json(), spec.to_json())
    return Experiment(store.uri(layout.experiment_dir()), store, layout, spec)


def _spec(exp: Experiment, trial_id: int, steps: int, rung: int = 0, parent: int | None = None):
    return TrialSpec(
        exp.spec.name,
        "proxy",
        trial_id,
        1,
        "mnasnet",
        "",
        "{}",
        {"train_steps": steps},
        rung=rung,
        promoted_from=parent,
    )


def _completed(trial_id: int, reward: float, **fields) -> TrialResult:
    metrics = {
        METRIC: reward,
        "latency_ms": 10.0 + trial_id,
        "flops": 1e8 + 1e7 * trial_id,
        "params": 1e6 + trial_id,
        **fields.pop("metrics", {}),
    }
    return TrialResult(trial_id, TrialStatus.COMPLETED, metrics, reward, duration_s=5, **fields)


def write_halving(root: Path) -> Experiment:
    """The ``halving`` experiment: see ``RUNG0`` and ``PROMOTED``."""
    exp = _experiment(root, HALVING)
    for trial_id in range(1, 10):
        exp.records.write_spec(_spec(exp, trial_id, 10))
        if trial_id in RUNG0:
            exp.records.write_result("proxy", _completed(trial_id, RUNG0[trial_id]))
        elif trial_id == 8:
            failed = TrialResult(8, TrialStatus.FAILED, error="OOM when allocating tensor")
            exp.records.write_result("proxy", failed)
    for trial_id, (parent, rung, reward) in PROMOTED.items():
        exp.records.write_spec(_spec(exp, trial_id, 10 * 3**rung, rung, parent))
        if reward is not None:
            exp.records.write_result("proxy", _completed(trial_id, reward))
    return exp


def write_stopping(root: Path) -> Experiment:
    """The ``stopping`` experiment: trials 1-4 trained 90 steps, 5 and 6 stopped, 7 failed."""
    exp = _experiment(root, STOPPING)
    for trial_id in range(1, 8):
        exp.records.write_spec(_spec(exp, trial_id, 90))
    for trial_id in range(1, 5):
        exp.records.write_result("proxy", _completed(trial_id, 0.4 + trial_id / 100))
    for trial_id, step in ((5, 30), (6, 60)):
        stopped = _completed(
            trial_id,
            0.21,
            metrics={"eval_step": float(step)},
            stopped_early=True,
            stop_reason=STOP_REASON,
        )
        exp.records.write_result("proxy", stopped)
    exp.records.write_result("proxy", TrialResult(7, TrialStatus.FAILED, error="NaN loss"))
    return exp


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return write_halving(root), write_stopping(root)


def proxy_data(exp: Experiment) -> dict:
    (study,) = render_experiment(open_experiment(exp.uri), with_curves=False).data["studies"]
    return study


def test_a_halving_study_has_its_rung_table(store):
    proxy = proxy_data(store[0])
    assert proxy["early_stopping"] is None
    fidelity = proxy["multi_fidelity"]
    assert {k: v for k, v in fidelity.items() if k != "rungs"} == {
        "scheduler": "asha",
        "min_steps": 10,
        "reduction_factor": 3,
        "max_steps": 90,
        "error": "",
    }
    counts = [
        (r["rung"], r["steps"], r["started"], r["finished"], r["promoted"])
        for r in fidelity["rungs"]
    ]
    assert counts == [(0, 10, 9, 8, 3), (1, 30, 3, 2, 1), (2, 90, 1, 1, 0)]
    assert [r["best"] for r in fidelity["rungs"]] == [0.50, 0.58, 0.63]  # rewards


def test_halving_trials_carry_their_rung_promotion_and_steps(store):
    trials = {t["trial_id"]: t for t in proxy_data(store[0])["trials"]}
    fields = ("rung", "promoted_from", "steps", "stopped_early", "stop_reason")
    assert [trials[9][f] for f in fields] == [0, None, 10, False, ""]  # still training
    assert [trials[8][f] for f in fields] == [0, None, 10, False, ""]  # failed
    assert [trials[13][f] for f in fields] == [2, 10, 90, False, ""]
    for trial_id, (parent, rung, _) in PROMOTED.items():
        assert (trials[trial_id]["promoted_from"], trials[trial_id]["rung"]) == (parent, rung)
        assert trials[trial_id]["steps"] == 10 * 3**rung


def test_a_stopping_study_counts_its_stopped_trials(store):
    proxy = proxy_data(store[1])
    assert proxy["multi_fidelity"] is None
    assert proxy["early_stopping"] == {
        "rule": "median",
        "options": {"min_trials": 3},
        "stopped": 2,
    }
    trials = {t["trial_id"]: t for t in proxy["trials"]}
    assert (trials[5]["stopped_early"], trials[5]["steps"]) == (True, 30)
    assert trials[5]["stop_reason"] == STOP_REASON and trials[6]["steps"] == 60
    assert (trials[1]["stopped_early"], trials[1]["steps"], trials[1]["stop_reason"]) == (
        False,
        90,
        "",
    )
    assert (trials[7]["status"], trials[7]["steps"]) == ("FAILED", 90)


def test_a_study_without_either_has_neither(tmp_path):
    (study, *_) = render_experiment(write_sample(tmp_path, proxy_trials=3), with_curves=False).data[
        "studies"
    ]
    assert study["multi_fidelity"] is None and study["early_stopping"] is None
    assert {(t["rung"], t["promoted_from"], t["stopped_early"]) for t in study["trials"]} == {
        (0, None, False)
    }


def test_a_rung_the_schedule_lacks_is_reported_not_raised(tmp_path):
    exp = write_halving(tmp_path)
    exp.records.write_spec(_spec(exp, 14, 270, rung=3, parent=13))
    fidelity = proxy_data(exp)["multi_fidelity"]
    assert fidelity["rungs"] == [] and "trial 14 is at rung 3" in fidelity["error"]


def test_trial_listings_show_rungs_steps_and_early_stops(store):
    rows = {r.trial_id: r.to_dict() for r in list_trials(store[1].uri, "proxy")}
    assert rows[5]["stopped_early"] and rows[5]["steps"] == 30
    assert rows[1]["steps"] == 90 and rows[1]["rung"] == 0
    # A row of records with none of them set (no budget, rung, promotion or early stop).
    bare = trial_row(1, TrialResult(1, TrialStatus.COMPLETED, {METRIC: 0.5}, 0.5), METRIC)
    unset = {"rung": 0, "promoted_from": None, "steps": 0, "stopped_early": False}
    assert {k: bare.to_dict()[k] for k in unset} == unset and bare.stop_reason == ""
    spec = dataclasses.replace(_spec(store[1], 1, 90), budget={})
    stopped = TrialResult(
        1, TrialStatus.COMPLETED, {METRIC: 0.5}, 0.5, stopped_early=True, stop_reason="x"
    )
    assert trial_row(1, stopped, METRIC, spec).steps == 0  # stopped, no eval_step: unknown


# ---- In a browser --------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason=f"no Chromium: {INSTALL_HINT}")


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def _open(browser: Browser, exp: Experiment, folder: Path) -> dict:
    page = folder / f"{exp.spec.name}.html"
    page.write_text(render_experiment(open_experiment(exp.uri)).html)
    return check_report(browser, page.as_uri())


@needs_chromium
def test_the_halving_section_shows_the_rungs_and_the_promotions(store, browser, tmp_path):
    _open(browser, store[0], tmp_path)
    section = "document.querySelector('#study-proxy .halving')"
    assert browser.evaluate(f"{section}.querySelector('h3').textContent") == "Successive halving"
    cells = browser.evaluate(
        f"[...{section}.querySelectorAll('table.rungs tr[data-rung]')]"
        ".map(r => [...r.cells].map(c => c.textContent))"
    )
    assert cells == [
        ["0", "10", "9", "8", "3", "0.5000"],
        ["1", "30", "3", "2", "1", "0.5800"],
        ["2", "90", "1", "1", "0", "0.6300"],
    ]
    plot = f"{section}.querySelector('.plot-halving')"
    # One point per completed trial, at its steps on a log axis; a segment per promotion whose
    # parent and child both completed (4 -> 10, 6 -> 11, 10 -> 13).
    points = browser.evaluate(f"{plot}.querySelectorAll('.scatterlayer path.point').length")
    assert points == len(RUNG0) + 3
    lines = browser.evaluate(f"{plot}.data[0]")
    assert lines["mode"] == "lines"
    assert lines["x"] == [10, 30, None, 10, 30, None, 30, 90, None]
    assert browser.evaluate(f"{plot}.querySelector('.scatterlayer path.js-line').getAttribute('d')")
    assert browser.evaluate(f"{plot}._fullLayout.xaxis.type") == "log"
    # The trials table has sortable rung, promoted-from and steps columns.
    headers = browser.evaluate(
        "[...document.querySelectorAll('#study-proxy table.trials thead tr:first-child th')]"
        ".map(th => th.dataset.key)"
    )
    assert {"rung", "promoted_from", "steps"} <= set(headers)
    box = browser.center("document.querySelector('#study-proxy thead th[data-key=steps]')")
    browser.click(*box)
    order = browser.evaluate(
        "[...document.querySelectorAll('#study-proxy tbody tr')].map(r => +r.dataset.trial)"
    )
    assert order[0] == 13 and set(order[-9:]) == set(range(1, 10))  # most steps first
    summary = browser.evaluate("document.querySelector('#study-proxy .fidelity').textContent")
    assert summary == "successive halving (asha): rungs of 10, 30, 90 steps, reduction factor 3"
    assert not browser.errors


@needs_chromium
def test_stopped_trials_are_marked_in_the_table_and_hollow_in_the_plot(store, browser, tmp_path):
    data = _open(browser, store[1], tmp_path)
    summary = browser.evaluate("document.querySelector('#study-proxy .fidelity').textContent")
    assert summary == "early stopping: median rule (min_trials 3), 2 trials stopped"
    badge = "document.querySelector('#study-proxy tbody tr[data-trial=\"5\"] .badge.stopped')"
    assert browser.evaluate(f"{badge}.textContent") == "stopped early"
    assert browser.evaluate(f"{badge}.title") == f"stopped early at step 30: {STOP_REASON}"
    assert browser.evaluate("document.querySelectorAll('#study-proxy .badge.stopped').length") == 2
    headers = browser.evaluate(
        "[...document.querySelectorAll('#study-proxy table.trials thead tr:first-child th')]"
        ".map(th => th.dataset.key)"
    )
    assert "steps" in headers and "rung" not in headers
    assert browser.evaluate("document.querySelector('#study-proxy .halving')") is None
    done = [t["trial_id"] for t in data["studies"][0]["trials"] if t["status"] == "COMPLETED"]
    symbols = browser.evaluate(
        "document.querySelector('#study-proxy .plot-by-trial').data[0].marker.symbol"
    )
    hollow = [trial_id for trial_id, s in zip(done, symbols, strict=True) if s == "circle-open"]
    assert hollow == [5, 6]
    assert not browser.errors


@needs_chromium
def test_a_report_without_either_shows_nothing_new(browser, tmp_path):
    exp = write_sample(tmp_path, proxy_trials=4)
    page = tmp_path / "report.html"
    page.write_text(render_experiment(open_experiment(exp.uri)).html)
    check_report(browser, page.as_uri())
    for selector in (".halving", ".fidelity", ".badge", "th[data-key=rung]", "th[data-key=steps]"):
        assert browser.evaluate(f"document.querySelector('{selector}')") is None, selector
    symbols = browser.evaluate("document.querySelector('.plot-by-trial').data[0].marker.symbol")
    assert symbols is None and not browser.errors
