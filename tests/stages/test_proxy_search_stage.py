"""The proxy-task search's plan on a real store: everything checked before any training.

The reference models come from a real model selection (``init_model_selection`` and
``select_models``) whose trials are "trained" by the stand-in of ``test_model_selection_stage``
(results written as trained and measured trials would write them). The candidates train end to
end in ``tests/e2e/test_proxy_select_local.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_fixtures import data_overrides
from test_model_selection_stage import SPEC, _trainer

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.stages import init_model_selection, init_proxy_search, select_models
from kfnas.stages import selection as selection_module
from kfnas.stages.proxy_search import CANDIDATE, PLAN
from kfnas.store import open_experiment

GRID = "{task.image_size: [32, 48], studies.proxy.budget.train_steps: [4]}"


@pytest.fixture
def overrides(tmp_path, classification_data):
    return [f"store_root={tmp_path}", *data_overrides(classification_data)]


def _select(overrides, monkeypatch, final):
    uri = init_model_selection(SPEC, overrides, final + 1, final, 1)
    monkeypatch.setattr(selection_module, "search_with_config", _trainer([]))
    return uri, select_models(uri, 2, {"kind": "local"})


def test_the_plan_holds_the_references_and_a_spec_per_candidate(overrides, monkeypatch):
    _, selection = _select(overrides, monkeypatch, 5)
    uri = init_proxy_search(SPEC, GRID, overrides, evaluations=2, target_correlation=0.7)
    exp = open_experiment(uri)
    assert exp.spec.name == "pick-proxy-search"
    plan = json.loads(exp.store.read_text(f"{exp.layout.experiment_dir()}/{PLAN}"))
    metric = selection["metric"]
    scores = [m["score"] for m in plan["references"]]
    assert scores == [s[metric] for s in selection["selected"]]
    assert [c["name"] for c in plan["candidates"]] == ["c1", "c2"]
    for name, size in (("c1", 32), ("c2", 48)):
        spec = ExperimentSpec.from_json(plan["specs"][name])
        study = spec.study(CANDIDATE)
        assert spec.name == f"pick-proxy-{name}" and spec.task.image_size == size
        assert study.budget.train_steps == 4 and study.budget.evaluations == 2
        assert study.budget.trials_per_round == 5 and study.space == "mnasnet"
        assert study.early_stopping.rule == "proxy_target"
        assert study.early_stopping.options["reference"] == scores
        assert study.early_stopping.options["correlation"] == 0.7
        assert study.early_stopping.options["seconds"] == 3 * 3600
    # Idempotent; another grid under the same name is refused.
    assert init_proxy_search(SPEC, GRID, overrides, evaluations=2, target_correlation=0.7) == uri
    with pytest.raises(SpecError, match="holds another proxy-task search"):
        init_proxy_search(SPEC, "{task.image_size: [32]}", overrides, evaluations=2)


def test_without_a_finished_model_selection_it_says_to_run_one(overrides):
    with pytest.raises(
        SpecError, match=r"no model selection at .*pick-selection.*kfnas proxy select"
    ):
        init_proxy_search(SPEC, GRID, overrides)
    init_model_selection(SPEC, overrides, 6, 5, 1)
    with pytest.raises(SpecError, match=r"has not finished .*model_selection\.json"):
        init_proxy_search(SPEC, GRID, overrides)


def test_fewer_reference_models_than_the_correlation_needs_are_refused(overrides, monkeypatch):
    _select(overrides, monkeypatch, 4)
    with pytest.raises(
        SpecError,
        match="has 4 reference models with a full-training score; the rank correlation needs at "
        "least 5: run `kfnas proxy select` with --final 5 or more",
    ):
        init_proxy_search(SPEC, GRID, overrides)


@pytest.mark.parametrize(
    ("grid", "kwargs", "message"),
    [
        ("{}", {}, "the proxy grid has no candidates"),
        ("", {}, "the proxy grid has no candidates"),
        ("{task.image_sise: [32]}", {}, "proxy candidate 'c1': .*image_sise"),
        (
            "[{name: short, studies.proxy.budget.train_steps: 3}]",
            {},
            "proxy candidate 'short': it trains 3 steps, fewer than its 5 evaluations",
        ),
        ("{studies.proxy.space: [efficientnet_v2]}", {}, "the grid may not change the space"),
        ("{data.train: [/nowhere/train-*]}", {}, "(?s)proxy candidate 'c1': .*nowhere"),
        (GRID, {"target_correlation": 1.5}, "target correlation must be between -1 and 1"),
        (GRID, {"time_limit_hours": 0}, "the time limit must be positive hours"),
        (GRID, {"evaluations": 1}, "evaluations must be at least 2"),
    ],
)
def test_bad_grids_and_targets_are_refused_before_any_training(
    overrides, monkeypatch, grid, kwargs, message
):
    _select(overrides, monkeypatch, 5)
    with pytest.raises(SpecError, match=message):
        init_proxy_search(SPEC, grid, overrides, **kwargs)
    store = Path(overrides[0].removeprefix("store_root="))
    assert not any("proxy-" in p.name for p in store.iterdir())  # nothing written
