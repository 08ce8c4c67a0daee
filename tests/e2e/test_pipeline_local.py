"""The whole search pipeline under ``kfp.local``, twice, on tiny generated detection data.

2 rounds x 2 proxy trials (parallelism 2), the best one trained again in the validation study, the
winner trained once more in the final study and exported: the DAG the cluster runs, each step a
subprocess of this Python. Round 1 holds a trial whose architecture cannot be built (written before
the run, which resumes the round): it is recorded FAILED while its sibling trains, and round 2
still proposes. The second run over the same store trains nothing.

Every training costs about a minute of fixed overhead on 2 CPUs (tracing, COCO evaluation,
latency), so the test trains 5 models (3 proxy, 1 validation, 1 final) and exports one.
"""

import contextlib
import dataclasses
import json
import os
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.data import write_detection_dataset
from kfnas.pipelines.local import run_search_locally
from kfnas.records.trial import TrialStatus
from kfnas.stages import init_experiment, propose_trials
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

SPEC = """
name: pipeline-e2e
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 8}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 3, tournament_size: 2}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
objectives:
  metric: AP
  reward: mnas
  constraints: [{measure: latency_ms, target: 5.0}]
seed: 3
"""
COUNTS = {"rounds": 2, "trials_per_round": 2, "parallelism": 2, "top_k": 1}
BROKEN = 2  # the round-1 trial whose architecture cannot be built


def _run(arguments, root, name, logs):
    log = root / f"{name}.log"
    out = logs.enter_context(log.open("w"))  # open until the end: kfp.local threads log late
    start = time.monotonic()
    try:
        uri = run_search_locally(arguments, **COUNTS, pipeline_root=root / "kfp", log_file=out)
    except RuntimeError as e:
        out.flush()
        tail = "\n".join(log.read_text().splitlines()[-40:])
        pytest.fail(f"the pipeline failed: {e}\n{tail}")
    return uri, time.monotonic() - start


def _finished(exp):
    """Every result.json of the experiment with its modification time."""
    return {
        (study, trial_id): os.stat(
            exp.store.uri(exp.layout.trial_result(study, trial_id))
        ).st_mtime_ns
        for study in ("proxy", "validation", "final")
        for trial_id in exp.records.trial_ids(study)
        if exp.records.read_result(study, trial_id) is not None
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    files = write_detection_dataset(root / "data", num_train=8, num_validation=4)
    settings = {
        "store_root": str(root / "store"),
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "annotations": files.annotations,
        "full_train_steps": 3,
    }
    # Round 1 proposed before the pipeline runs, with one architecture broken on purpose: the
    # pipeline resumes the experiment (same spec, same settings) and the round.
    uri = init_experiment(SPEC, [], rounds=2, trials_per_round=2, **settings)
    assert propose_trials(uri, "proxy", 1) == [1, 2]
    exp = open_experiment(uri)
    broken = dataclasses.replace(
        exp.records.read_spec("proxy", BROKEN), arch_json='{"_type": "no.such.Arch"}'
    )
    exp.store.write_text(exp.layout.trial_spec("proxy", BROKEN), broken.to_json())

    arguments = {"spec_yaml": SPEC, "model_version": "v1", **settings, "trials_per_round": 2}
    with contextlib.ExitStack() as logs:
        first_uri, first_s = _run(arguments, root, "first", logs)
        finished = _finished(exp)
        second_uri, second_s = _run(arguments, root, "second", logs)
        print(f"first run {first_s:.0f} s, second run {second_s:.0f} s")
        yield {
            "uri": first_uri,
            "second_uri": second_uri,
            "exp": exp,
            "finished": finished,
            "root": root,
            "second_s": second_s,
        }


def test_every_trial_of_every_study_finished(runs):
    exp = runs["exp"]
    assert runs["uri"] == exp.uri
    ids = {s: exp.records.trial_ids(s) for s in ("proxy", "validation", "final")}
    assert ids == {"proxy": [1, 2, 3, 4], "validation": [1], "final": [1]}
    for study, trial_ids in ids.items():
        for trial_id in trial_ids:
            assert exp.records.read_result(study, trial_id) is not None, (study, trial_id)
    assert [exp.records.read_spec("proxy", i).round for i in ids["proxy"]] == [1, 1, 2, 2]


def test_a_failed_trial_lets_its_round_finish_and_the_next_round_propose(runs):
    exp = runs["exp"]
    failed = exp.records.read_result("proxy", BROKEN)
    assert failed.status is TrialStatus.FAILED and "no.such.Arch" in failed.error
    for trial_id in (1, 3, 4):
        result = exp.records.read_result("proxy", trial_id)
        assert result.status is TrialStatus.COMPLETED, result.error


def test_the_best_proxy_trial_is_validated_then_trained_and_exported(runs):
    exp = runs["exp"]
    proxy = {
        s.trial_id: r for s, r in exp.records.history("proxy") if r is not None and r.completed
    }
    best = min(proxy, key=lambda i: (-proxy[i].reward, i))
    validation = exp.records.read_spec("validation", 1)
    assert (validation.source_study, validation.source_trial) == ("proxy", best)
    assert validation.arch_json == exp.records.read_spec("proxy", best).arch_json
    assert validation.budget["train_steps"] == 3  # the full budget of the run's settings
    final = exp.records.read_spec("final", 1)
    assert (final.source_study, final.source_trial) == ("validation", 1)
    assert exp.records.read_result("final", 1).completed
    export = json.loads(exp.store.read_text(f"{exp.layout.export_dir('v1')}/export.json"))
    assert (export["study"], export["trial_id"]) == ("final", 1)
    assert exp.store.exists(exp.layout.report_html())


def test_trial_metrics_are_kfp_metrics_artifacts(runs):
    outputs = [
        json.loads(path.read_text())
        for path in (runs["root"] / "kfp").rglob("run-trial*/executor_output.json")
    ]
    logged = [
        o["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for o in outputs
        if o["parameterValues"]["status"] == "COMPLETED"
    ]
    assert logged and all({"AP", "latency_ms", "reward"} <= set(m) for m in logged)


def test_rerunning_the_pipeline_trains_nothing(runs):
    exp = runs["exp"]
    assert runs["second_uri"] == runs["uri"]
    assert _finished(exp) == runs["finished"]  # no result.json was written again
    assert exp.records.trial_ids("proxy") == [1, 2, 3, 4]
    assert runs["second_s"] < 120  # the steps only read the store
