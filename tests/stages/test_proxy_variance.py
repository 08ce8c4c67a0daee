"""The proxy-task variance stages on a real store: repeats written, curves measured, bad input.

No training here: the repeats' results and curves are written as their trials write them. The
pipeline runs end to end, trials trained, in ``tests/e2e/test_proxy_variance_local.py``.
"""

from __future__ import annotations

import json

import pyglove as pg
import pytest
from shared_fixtures import data_overrides

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialCurve, TrialResult, TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json
from kfnas.stages import StudyStoppedError, init_variance, variance_report
from kfnas.stages.proxy import MIN_EVALUATIONS, VARIANCE
from kfnas.store import open_experiment

SPEC = """
name: proxy-var
task: {kind: classification, num_classes: 3, image_size: 32}
studies:
  proxy: {space: mnasnet, budget: {train_steps: 40, evaluations: 2}}
budget: {batch_size: 2}
seed: 4
"""


@pytest.fixture
def overrides(tmp_path, classification_data):
    return [f"store_root={tmp_path}", *data_overrides(classification_data)]


def test_the_repeats_train_one_architecture_with_the_proxy_budget(overrides):
    uri = init_variance(SPEC, overrides, repeats=3)
    exp = open_experiment(uri)
    assert exp.spec.name == "proxy-var-variance" and list(exp.spec.studies) == [VARIANCE]
    specs = [spec for spec, _ in exp.records.history(VARIANCE)]
    assert len(specs) == 3 and len({s.arch_json for s in specs}) == 1
    assert len({s.seed for s in specs}) == 3  # only the seed differs
    budget = specs[0].budget
    assert budget["train_steps"] == 40 and budget["evaluations"] == MIN_EVALUATIONS
    # MnasNet's reference architecture is the default: the one known to train.
    space = get_space("mnasnet")
    reference = pg.template(space.hyper()).encode(space.reference())
    assert specs[0].arch_json == architecture_json(space, reference)
    assert init_variance(SPEC, overrides, repeats=3) == uri  # a rerun resumes
    assert len(exp.records.trial_ids(VARIANCE)) == 3
    with pytest.raises(SpecError, match="with a different spec"):
        init_variance(SPEC, overrides, repeats=4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repeats": 1}, "repeats must be at least 2 to measure how scores vary"),
        ({"repeats": 0}, "repeats must be at least 2"),
        ({"architecture": "best"}, "architecture 'best' is not known"),
    ],
)
def test_bad_repeats_and_architectures_are_refused_before_any_trial(
    overrides, tmp_path, kwargs, message
):
    with pytest.raises(SpecError, match=message):
        init_variance(SPEC, overrides, **kwargs)
    assert not list(tmp_path.rglob("trial.json"))


def test_a_spec_without_a_proxy_study_is_refused(overrides):
    text = SPEC.replace("proxy:", "other:")
    with pytest.raises(SpecError, match="no 'proxy' study whose proxy task to measure"):
        init_variance(text, overrides)


def _finish(exp, trial_id, values, status=TrialStatus.COMPLETED):
    metric = exp.spec.objectives.metric
    curve = TrialCurve(trial_id, metric)
    for step, value in values:
        curve = curve.with_point(step, {metric: value})
    exp.records.write_curve(VARIANCE, curve)
    completed = status is TrialStatus.COMPLETED
    exp.records.write_result(
        VARIANCE,
        TrialResult(
            trial_id,
            status,
            {metric: values[-1][1]},
            values[-1][1] if completed else None,
            error="" if completed else "out of memory",
        ),
    )


def test_the_report_measures_the_spread_and_the_smoothness(overrides, tmp_path):
    exp = open_experiment(init_variance(SPEC, overrides, repeats=3))
    first, second, third = exp.records.trial_ids(VARIANCE)
    _finish(exp, first, [(10, 0.1), (20, 0.3), (30, 0.4), (40, 0.5)])
    _finish(exp, second, [(10, 0.2), (20, 0.1), (30, 0.6), (40, 0.7)])  # one dip
    _finish(exp, third, [(10, 0.1)], status=TrialStatus.FAILED)
    written = variance_report(exp.uri, html_path=str(tmp_path / "page.html"))
    assert written["coefficient_of_variation"] == pytest.approx(0.1 / 0.6)
    assert written["failed"] == [f"trial {third}: out of memory"]
    stored = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/variance.json"))
    assert stored["coefficient_of_variation"] == written["coefficient_of_variation"]
    assert stored["smoothness"] > 0  # the dip makes the second curve less smooth
    page = (tmp_path / "page.html").read_text()
    assert page == exp.store.read_text(f"{exp.layout.reports_dir()}/variance.html")
    assert str(first) in page and str(second) in page


def test_fewer_than_two_completed_repeats_are_reported_with_why(overrides):
    exp = open_experiment(init_variance(SPEC, overrides, repeats=2))
    first, second = exp.records.trial_ids(VARIANCE)
    _finish(exp, first, [(10, 0.1), (40, 0.5)])
    _finish(exp, second, [(10, 0.1)], status=TrialStatus.INFEASIBLE)
    with pytest.raises(StudyStoppedError, match=f"got 1: trial {second}: out of memory"):
        variance_report(exp.uri)
