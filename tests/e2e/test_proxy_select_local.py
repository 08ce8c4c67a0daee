"""``kfnas proxy select`` then ``kfnas proxy search`` under ``kfp.local``, on one selection.

The smallest real runs. Selection: 6 MnasNet architectures at 32 px, batch 2, trained to a sixth
of a 10-step full budget; the crowding rule removes one; the 5 left (the fewest a rank correlation
takes) continue from their checkpoints to the full 10 steps; every trial is measured by the local
measurement worker. Proxy-task search over those 5 reference models: two candidates (4 and 8
steps, 2 evaluations each), a target median score of 0 so each candidate meets a target at its
first evaluation where all 5 models have a score; the second's trials carry the first's training
time as their limit, and the cheaper one in training time is the answer. Checks the trials, the
stored curves with their training seconds, the reports in the store and the KFP outputs, and what
is printed.
"""

import json
import os

import pytest
from shared_fixtures import data_overrides

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.cli import main
from kfnas.records.trial import TRAIN_SECONDS
from kfnas.stages.proxy_search import CANDIDATE
from kfnas.stages.selection import SELECTION
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SPEC = """
name: select-e2e
task:
  kind: classification
  num_classes: 3
  image_size: 32
  options: {endpoints_num_filters: 16}
studies:
  proxy: {space: mnasnet}
budget: {train_steps: 1, batch_size: 2, latency_runs: 3}
measurement: {min_seconds: 0}
"""


@pytest.fixture(scope="module")
def selected(tmp_path_factory, classification_data):
    """The selection run: its folder, its CLI arguments, exit status and printout."""
    root = tmp_path_factory.mktemp("proxy")
    spec = root / "spec.yaml"
    spec.write_text(SPEC)
    sets = [f"--set=store_root={root / 'store'}"]
    sets += [f"--set={o}" for o in data_overrides(classification_data)]
    out = root / "out"
    argv = ["proxy", "select", str(spec), "--models", "6", "--final", "5", "--remove", "1"]
    return root, spec, sets, main([*argv, "--out", str(out), *sets])


def test_kfnas_proxy_select_keeps_the_spread_out_models_trained_fully(selected, capsys):
    root, _, _, status = selected
    out = root / "out"
    assert status == 0, (out / "kfp.log").read_text()[-3000:]
    exp = open_experiment(f"{root / 'store'}/select-e2e-selection")
    history = exp.records.history(SELECTION)
    assert all(r is not None and r.completed for _, r in history)
    first = [s for s, _ in history if s.rung == 0]
    last = [s for s, _ in history if s.rung == 1]
    assert len(first) == 6 and len(last) == 5
    assert {s.budget["train_steps"] for s in first} == {2}  # a sixth of 10, rounded up
    for spec_ in last:
        assert spec_.budget["train_steps"] == 10 and spec_.promoted_from in {
            s.trial_id for s in first
        }
        result = exp.records.read_result(SELECTION, spec_.trial_id)
        assert result.start_steps == (2,) and "latency_ms" in result.metrics
    report = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/model_selection.json"))
    assert sorted(s["trial_id"] for s in report["selected"]) == sorted(s.trial_id for s in last)
    assert len(report["iterations"][0]["removed"]) == 1
    assert any("Selected models" in p.read_text() for p in (out / "kfp").rglob("html*"))


def test_kfnas_proxy_search_finds_the_cheapest_candidate_that_met_its_target(selected, capsys):
    root, spec, sets, status = selected
    assert status == 0
    capsys.readouterr()
    out = root / "search-out"
    grid = "{studies.proxy.budget.train_steps: [4, 8]}"
    argv = ["proxy", "search", str(spec), "--grid", grid, "--evaluations", "2"]
    argv += ["--target-accuracy", "0", "--latency-correlation", "-1"]
    status = main([*argv, "--out", str(out), *sets])
    printed = capsys.readouterr().out
    assert status == 0, printed + (out / "kfp.log").read_text()[-3000:]

    exp = open_experiment(f"{root / 'store'}/select-e2e-proxy-search")
    report = json.loads(exp.store.read_text(f"{exp.layout.reports_dir()}/proxy_search.json"))
    first, second = report["candidates"]
    assert [first["name"], second["name"]] == ["c1", "c2"]
    # All 5 models have a score at step 2, the first where their median (>= 0) is read; the
    # correlation is checked first and may have met its target there too.
    for candidate, first_step in ((first, 2), (second, 4)):
        assert candidate["state"] in ("met_correlation", "met_accuracy"), candidate
        assert candidate["stop_step"] == candidate["final_steps"] == first_step
        assert candidate["stats"][0]["pairs"] == 5 and candidate["final_seconds"] > 0
        assert candidate["scores_step"] == first_step and len(candidate["scores"]) == 5
    # Training time decides (both met at their first evaluation): the cheaper one, its steps.
    best = min((first, second), key=lambda c: c["final_seconds"])
    assert report["best"] == best["name"]
    assert report["best_overrides"] == [f"studies.proxy.budget.train_steps={best['stop_step']}"]
    # The second candidate's trials stop at the first one's training time.
    assert second["time_limit_s"] == pytest.approx(first["final_seconds"])

    selection = open_experiment(f"{root / 'store'}/select-e2e-selection")
    references = {r["selection_trial"] for r in report["references"]}
    dnas = sorted(selection.records.read_spec(SELECTION, t).dna_json for t in references)
    for candidate, steps in ((first, 4), (second, 8)):
        cexp = open_experiment(candidate["experiment"])
        history = cexp.records.history(CANDIDATE)
        assert sorted(s.dna_json for s, _ in history) == dnas
        assert {s.budget["train_steps"] for s, _ in history} == {steps}
        for spec_, result in history:
            assert result is not None and result.completed, result
            curve = cexp.records.read_curve(CANDIDATE, spec_.trial_id)
            seconds = [s for _, s in curve.seconds()]
            assert len(seconds) == len(curve.steps) and seconds == sorted(seconds)
            assert all(TRAIN_SECONDS in m for m in curve.metrics) and seconds[0] > 0
            if result.stopped_early:  # at its first evaluation, for the target or the time
                assert curve.steps[-1] == steps // 2
                assert "met its target" in result.stop_reason or "time limit" in result.stop_reason
            else:
                assert curve.steps[-1] == steps
    assert "Candidate proxy tasks" in printed and report["best_overrides"][0] in printed
    assert any("Correlation over training" in p.read_text() for p in (out / "kfp").rglob("html*"))
