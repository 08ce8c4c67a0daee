"""Model selection's stages on a real store, trials "trained" by writing their results.

``select_models`` drives the search controller once per iteration; here the controller is
replaced by a function that writes each unfinished trial's result as a trained and measured trial
would (a score from its architecture and steps, a latency from its architecture), so the
iterations, the crowding removals, the continuations and the reports are checked in seconds. The
pipeline runs end to end, trials trained, in ``tests/e2e/test_proxy_select_local.py``.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from shared_fixtures import data_overrides

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.stages import StudyStoppedError, init_model_selection, select_models
from kfnas.stages import selection as selection_module
from kfnas.stages.selection import SELECTION
from kfnas.store import open_experiment

SPEC = """
name: pick
task: {kind: classification, num_classes: 3, image_size: 32}
studies:
  proxy: {space: mnasnet, budget: {train_steps: 10}}
budget: {batch_size: 2}
seed: 2
"""


@pytest.fixture
def overrides(tmp_path, classification_data):
    return [f"store_root={tmp_path}", *data_overrides(classification_data)]


def _unit(text: str, salt: str) -> float:
    return int(hashlib.sha256((salt + text).encode()).hexdigest()[:8], 16) / 2**32


def _trainer(calls, fail=()):
    """Stands in for the controller: finishes every trial of the study without a result."""

    def search(exp, study, parallelism, launch_config, run_id):
        calls.append(sorted(s.trial_id for s, r in exp.records.history(study) if r is None))
        metric = exp.spec.objectives.metric
        for spec, result in exp.records.history(study):
            if result is not None:
                continue
            if spec.trial_id in fail:
                exp.records.write_result(
                    study, TrialResult(spec.trial_id, TrialStatus.FAILED, error="out of memory")
                )
                continue
            steps = spec.budget["train_steps"]
            score = _unit(spec.dna_json, "q") * steps / (steps + 20)
            metrics = {metric: score, "latency_ms": 5 + 10 * _unit(spec.dna_json, "l")}
            exp.records.write_result(
                study, TrialResult(spec.trial_id, TrialStatus.COMPLETED, metrics, reward=score)
            )

    return search


def test_iterations_prune_to_the_final_models_trained_to_the_full_budget(
    overrides, monkeypatch, tmp_path
):
    uri = init_model_selection(SPEC, overrides, models=6, final_models=3, remove_per_iteration=2)
    exp = open_experiment(uri)
    assert exp.spec.name == "pick-selection"
    first = [s for s, _ in exp.records.history(SELECTION)]
    assert len(first) == 6 and len({s.dna_json for s in first}) == 6
    full = exp.spec.study(SELECTION).budget.train_steps  # the validation study's: 10 x proxy
    assert full == 100
    plan = json.loads(exp.store.read_text(exp.layout.study_plan(SELECTION)))
    assert [n for n, _ in plan["iterations"]] == [6, 4, 3] and plan["steps"][-1] == full
    assert {s.budget["train_steps"] for s in first} == {plan["steps"][0]}
    calls = []
    monkeypatch.setattr(selection_module, "search_with_config", _trainer(calls, fail={4}))
    report = select_models(uri, 2, {"kind": "local"}, html_path=str(tmp_path / "page.html"))
    assert len(calls) == 3  # one controller run per iteration
    its = report["iterations"]
    assert [it["models"] for it in its] == [6, 4, 3]
    assert its[0]["failed"] == [4] and len(its[0]["removed"]) == 1  # the failure counts
    assert len(its[1]["removed"]) == 1 and its[2]["removed"] == []
    specs = {s.trial_id: s for s, _ in exp.records.history(SELECTION)}
    for it, step in zip(its[1:], plan["steps"][1:], strict=True):
        for trial in it["points"]:
            spec = specs[int(trial)]
            assert spec.budget["train_steps"] == step and spec.promoted_from is not None
    selected = report["selected"]
    assert len(selected) == 3 and all(specs[s["trial_id"]].rung == 2 for s in selected)
    assert {s["model"] for s in selected} <= {s.trial_id for s in first} - {4}
    stored = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/model_selection.json"))
    assert stored["selected"] == selected
    page = (tmp_path / "page.html").read_text()
    assert "Selected models" in page and all(
        f'data-trial="{s["trial_id"]}"' in page for s in selected
    )
    # A rerun trains nothing again: every iteration's trials have results.
    again = select_models(uri, 2, {"kind": "local"})
    assert again["selected"] == selected and all(ids == [] for ids in calls[3:])


def test_too_few_trained_models_stop_with_each_reason(overrides, monkeypatch):
    uri = init_model_selection(SPEC, overrides, models=3, final_models=2, remove_per_iteration=1)
    monkeypatch.setattr(selection_module, "search_with_config", _trainer([], fail={0, 1}))
    with pytest.raises(StudyStoppedError, match="only 1 of 3 models trained: trial 0: out of"):
        select_models(uri, 1, {"kind": "local"})


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ((10, 12, 5), "final models 12 must be fewer than the start models 10"),
        ((10, 1, 5), "final"),
        ((10, 5, 0), "remove"),
    ],
)
def test_a_bad_schedule_is_refused_before_any_trial(overrides, tmp_path, counts, message):
    with pytest.raises(SpecError, match=message):
        init_model_selection(SPEC, overrides, *counts)
    assert not list(tmp_path.rglob("trial.json"))


def test_a_full_budget_too_short_for_the_iterations_is_refused(overrides):
    tiny = SPEC.replace("train_steps: 10", "train_steps: 1")  # full training: 10 steps
    with pytest.raises(SpecError, match=r"studies\.validation\.budget\.train_steps"):
        init_model_selection(tiny, overrides)
