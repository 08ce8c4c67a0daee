"""The whole search pipeline under ``kfp.local``, twice, on tiny generated detection data.

A search of 2 rounds x 2 SpineNet proxy trials, run by the search controller with 2 slots (each
trial a subprocess through the local launcher), the best one trained again in the validation
study, then the refinement studies: ``scaling`` (2 points) and ``augmentation`` (2 RandAugment
policies, 2 evaluations each), and the winner trained once more in the final study, with its
scaling and policy, and exported: the DAG the cluster runs, each step a subprocess of this Python.
Round 1 holds a trial whose architecture cannot be built (written before the run, whose controller
adopts the round): it is recorded FAILED while its sibling trains, and its slot gets the next
proposal at once. Its sibling, trial 1, is SIGKILLed right after storing a checkpoint on its first
attempt (a ``sitecustomize`` on the steps' ``PYTHONPATH``, as an OOM kill or a preemption would):
the controller starts it again and it completes on its second attempt, continuing from that
checkpoint. Trial 3 is killed on every attempt: FAILED after ``max_attempts`` (2 here), and the
search still spends its budget and exports a model. (A trial killed twice, each attempt going on
from the last one's checkpoint, is ``tests/faults/test_controller_faults.py``'s case, on a smaller
model.) The second
run over the same store trains nothing, and neither does the CLI's in-process study runner
(``run_study``) resuming the finished proxy study.

The built-in ``spinenet_scaling`` grid makes 512-640 px models, too slow for CI on 2 CPU cores, so
the scaling study here uses a proxy-sized grid of the same class, defined in a user module
(``module:object``, as a team would ship one in its image) and selected with an override; the
augmentation study is the built-in ``randaugment_detection`` (its grid's first points).

Every training costs about a minute of fixed overhead on 2 CPUs (tracing, COCO evaluation,
latency), so this one run per task kind carries the refinement studies too: it trains 8 models
(2 proxy, 1 validation, 2 scaling, 2 augmentation, 1 final) and exports one. The other task kinds
run in ``test_pipeline_task_kinds.py``.
"""

import contextlib
import dataclasses
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from local_pipeline import run_logged

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from browser import INSTALL_HINT, Browser, check_report, find_chromium

from kfnas.cli.local_study import run_study
from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialStatus
from kfnas.stages import init_experiment, propose_trials, select_top
from kfnas.store import open_experiment
from kfnas.tasks import TASKS
from kfnas.training.runner import trial_experiment_spec
from kfnas.views.dashboard import Dashboard

pytestmark = [pytest.mark.slow, pytest.mark.tf]

MODULE = "e2e_refinement_spaces"
SPACES_SOURCE = textwrap.dedent(
    """
    from kfnas.spaces.spinenet_scaling import SpineNetScalingSpace

    TINY_SCALING = SpineNetScalingSpace(
        name="tiny_scaling",
        image_size=(128,),
        endpoints_num_filters=(16,),
        filter_size_scale=(0.25,),
        resample_alpha=(0.25, 0.5),
        block_repeats=(1,),
        head_num_convs=(1,),
        head_num_filters=(16,),
    )
    """
)
TARGET_MS = 5.0  # the latency target of the mnas reward
SPEC = f"""
name: pipeline-e2e
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {{min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            resample_alpha: 0.25, head_num_convs: 1, head_num_filters: 16,
            validation_batch_size: 4}}
studies:
  proxy: {{space: spinenet}}
algorithm: {{name: regularized_evolution, options: {{population_size: 3, tournament_size: 2}}}}
budget: {{train_steps: 2, batch_size: 2, latency_runs: 5}}
measurement: {{min_seconds: 0}}
objectives:
  metric: AP
  reward: mnas
  constraints: [{{measure: latency_ms, target: {TARGET_MS}}}]
seed: 3
"""
OVERRIDES = [
    f'studies.scaling={{"space": "{MODULE}:TINY_SCALING"}}',
    "studies.validation.budget.latency_runs=5",
    "studies.proxy.budget.train_steps=3",
    "studies.proxy.budget.checkpoint_every_steps=1",
    "studies.proxy.budget.max_attempts=2",
]
KILLED = 1  # the proxy trial whose process is SIGKILLed after its first checkpoint, once
ALWAYS_KILLED = 3  # the proxy trial whose process is SIGKILLed on every attempt, before training
# Imported by every Python process of the runs (PYTHONPATH), as an OOM kill or a preemption would
# strike: a trial process of proxy trial KILLED SIGKILLs itself right after storing a checkpoint
# on its first attempt; one of ALWAYS_KILLED as soon as its attempt is recorded, every time.
# Only trial runners write checkpoints or start uploaders.
KILLER_SOURCE = textwrap.dedent(
    f"""
    import os, signal
    from kfnas.store.layout import ExperimentLayout
    from kfnas.training import checkpoints

    _LAYOUT = ExperimentLayout("pipeline-e2e")
    _ONCE = _LAYOUT.trial_checkpoints_dir("proxy", {KILLED})
    _ALWAYS = _LAYOUT.trial_checkpoints_dir("proxy", {ALWAYS_KILLED})
    _write = checkpoints.TrialCheckpoints.write
    _uploader = checkpoints.CheckpointUploader.__init__

    def _write_then_die(self, step, attempt, staged):
        stored = _write(self, step, attempt, staged)
        if self.folder == _ONCE and attempt < 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return stored

    def _die_at_start(self, stored, *args, **kwargs):
        if stored.folder == _ALWAYS:
            os.kill(os.getpid(), signal.SIGKILL)
        _uploader(self, stored, *args, **kwargs)

    checkpoints.TrialCheckpoints.write = _write_then_die
    checkpoints.CheckpointUploader.__init__ = _die_at_start
    """
)
STUDIES = ("proxy", "validation", "scaling", "augmentation", "final")
COUNTS = {"rounds": 2, "trials_per_round": 2, "parallelism": 2, "top_k": 1}
BROKEN = 2  # the round-1 trial whose architecture cannot be built


def _run(arguments, root, name, logs):
    return run_logged(arguments, COUNTS, root, f"the {name}", logs, log_name=f"{name}.log")


def _finished(exp):
    """Every result.json of the experiment with its modification time."""
    return {
        (study, trial_id): os.stat(
            exp.store.uri(exp.layout.trial_result(study, trial_id))
        ).st_mtime_ns
        for study in STUDIES
        for trial_id in exp.records.trial_ids(study)
        if exp.records.read_result(study, trial_id) is not None
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    (root / f"{MODULE}.py").write_text(SPACES_SOURCE)  # for this process and the steps'
    (root / "sitecustomize.py").write_text(KILLER_SOURCE)  # for the steps' processes only
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), path) if p)
    sys.path.insert(0, str(root))
    try:
        yield from _runs(root)
    finally:
        os.environ["PYTHONPATH"] = path
        sys.path.remove(str(root))
        sys.modules.pop(MODULE, None)


def _runs(root):
    files = write_detection_dataset(root / "data", num_train=8, num_validation=4)
    settings = {
        "store_root": str(root / "store"),
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "annotations": files.annotations,
        "full_train_steps": 3,
        "scaling_trials": 2,
        "scaling_train_steps": 2,
        "augmentation_trials": 2,
        "augmentation_train_steps": 4,
        "augmentation_evaluations": 2,
    }
    # Round 1 proposed before the pipeline runs, with one architecture broken on purpose: the
    # pipeline resumes the experiment (same spec, same settings) and the round.
    uri = init_experiment(SPEC, OVERRIDES, rounds=2, trials_per_round=2, **settings)
    assert propose_trials(uri, "proxy", 1) == [1, 2]
    exp = open_experiment(uri)
    broken = dataclasses.replace(
        exp.records.read_spec("proxy", BROKEN), arch_json='{"_type": "no.such.Arch"}'
    )
    exp.store.write_text(exp.layout.trial_spec("proxy", BROKEN), broken.to_json())

    arguments = {
        "spec_yaml": SPEC,
        "model_version": "v1",
        "overrides": OVERRIDES,
        **settings,
        "trials_per_round": 2,
    }
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
    assert tuple(exp.spec.studies) == STUDIES
    assert exp.spec.studies["scaling"].algorithm.name == "grid"
    ids = {s: exp.records.trial_ids(s) for s in STUDIES}
    assert ids == {"proxy": [1, 2, 3, 4], "validation": [1], "scaling": [1, 2],
                   "augmentation": [1, 2], "final": [1]}  # fmt: skip
    for study, trial_ids in ids.items():
        for trial_id in trial_ids:
            assert exp.records.read_result(study, trial_id) is not None, (study, trial_id)
    rounds = [exp.records.read_spec("proxy", i).round for i in ids["proxy"]]
    # Each freed slot gets a proposal: the broken trial frees its slot first.
    assert rounds[:3] == [1, 1, 2] and rounds[3] in (2, 3)
    state = json.loads(exp.store.read_text(exp.layout.study_controller("proxy")))
    assert (state["state"], state["completed"], state["failed"]) == ("finished", 2, 2)
    launch = json.loads(exp.store.read_text(exp.layout.trial_launch("proxy", 4)))
    assert launch["launcher"] == "local" and os.path.exists(launch["log"])


def test_a_killed_trial_resumed_from_its_checkpoint_and_completed(runs):
    killed = runs["exp"].records.read_result("proxy", KILLED)
    assert killed.status is TrialStatus.COMPLETED, killed.error
    # The second attempt started from the checkpoint the first stored just before being killed.
    assert (killed.attempts, killed.start_steps) == (2, (0, 1))


def test_a_trial_killed_on_every_attempt_is_failed_and_the_budget_still_spent(runs):
    exp = runs["exp"]
    killed = exp.records.read_result("proxy", ALWAYS_KILLED)
    assert killed.status is TrialStatus.FAILED
    assert killed.error.startswith("killed 2 times at steps [0, 0], last seen "), killed.error
    assert exp.records.trial_ids("proxy") == [1, 2, 3, 4]  # the budget: 2 rounds x 2 trials


def test_a_failed_trial_frees_its_slot_and_the_search_goes_on(runs):
    exp = runs["exp"]
    failed = exp.records.read_result("proxy", BROKEN)
    assert failed.status is TrialStatus.FAILED and "no.such.Arch" in failed.error
    for trial_id in (1, 4):
        result = exp.records.read_result("proxy", trial_id)
        assert result.status is TrialStatus.COMPLETED, result.error


def test_every_completed_trial_has_its_metrics_reward_logs_and_checkpoint(runs):
    exp = runs["exp"]
    for study in STUDIES:
        for spec, result in exp.records.history(study):
            if result.status is not TrialStatus.COMPLETED:
                continue
            for key in ("AP", "AP50", "latency_ms", "flops", "params"):
                assert key in result.metrics, (study, spec.trial_id, key)
            assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
            files = exp.store.list(exp.layout.trial_dir(study, spec.trial_id))
            assert any(f.startswith("logs/train/events.out.tfevents") for f in files), files
            assert any(f.startswith("model/ckpt") for f in files), files
            if study == "proxy":  # the spec's mnas reward: AP x min(1, target / latency)
                factor = min(1.0, TARGET_MS / result.metrics["latency_ms"])
                assert result.reward == pytest.approx(result.metrics["AP"] * factor)


def test_select_top_ranks_the_completed_trials_by_reward(runs):
    exp = runs["exp"]
    rewards = {s.trial_id: r.reward for s, r in exp.records.history("proxy") if r and r.completed}
    best = sorted(rewards, key=lambda i: (-rewards[i], i))
    assert len(best) == 2
    assert select_top(exp.uri, "proxy", 2) == best[:2]
    assert select_top(exp.uri, "proxy", 10) == best


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
    assert exp.records.read_result("final", 1).completed
    export = json.loads(exp.store.read_text(f"{exp.layout.export_dir('v1')}/export.json"))
    assert (export["study"], export["trial_id"]) == ("final", 1)
    assert exp.store.exists(exp.layout.report_html())


def scaling_point(resample_alpha: float) -> tuple[str, ...]:
    """The task overrides of TINY_SCALING's grid point with ``resample_alpha``."""
    return (
        "task.image_size=128",
        "task.options.endpoints_num_filters=16",
        "task.options.filter_size_scale=0.25",
        f"task.options.resample_alpha={resample_alpha}",
        "task.options.block_repeats=1",
        "task.options.head_num_convs=1",
        "task.options.head_num_filters=16",
    )


def test_refinement_trials_retrain_the_best_of_the_study_before_with_their_choice(runs):
    exp = runs["exp"]
    validated = exp.records.read_spec("validation", 1)
    scaled = [exp.records.read_spec("scaling", i) for i in (1, 2)]
    for trial in scaled:
        assert (trial.source_study, trial.source_trial) == ("validation", 1)
        assert trial.arch_json == validated.arch_json and trial.space == "spinenet"
    assert [t.task_overrides for t in scaled] == [scaling_point(0.25), scaling_point(0.5)]
    stored = json.loads(exp.store.read_text(exp.layout.trial_spec("scaling", 1)))
    assert stored["task_overrides"] == list(scaling_point(0.25))
    best_scaling = max(scaled, key=lambda t: exp.records.read_result("scaling", t.trial_id).reward)
    for trial_id in (1, 2):
        trial = exp.records.read_spec("augmentation", trial_id)
        assert (trial.source_study, trial.source_trial) == ("scaling", best_scaling.trial_id)
        assert trial.task_overrides[:-1] == best_scaling.task_overrides
        policy = trial.task_overrides[-1]
        assert policy.startswith("task.options.augmentation=")
        assert json.loads(policy.partition("=")[2])["randaugment"]["num_layers"] == 1
        result = exp.records.read_result("augmentation", trial_id)
        assert result.metrics["eval_step"] in (2.0, 4.0)  # the best of 2 evaluations


def test_the_scaled_trials_train_under_the_scaled_task(runs):
    exp = runs["exp"]
    validated = exp.records.read_result("validation", 1)
    for trial_id, alpha in ((1, 0.25), (2, 0.5)):
        task = trial_experiment_spec(exp.spec, exp.records.read_spec("scaling", trial_id)).task
        assert task.image_size == 128 and TASKS.get("detection").input_shape(task) == (128, 128, 3)
        assert task.options["resample_alpha"] == alpha and task.options["block_repeats"] == 1
        assert task.options["max_level"] == 5  # the spec's own options stay
        result = exp.records.read_result("scaling", trial_id)
        # A bigger input (and, at alpha 0.5, wider resampling): more work than the validated one.
        assert result.metrics["flops"] > validated.metrics["flops"]
        factor = min(1.0, TARGET_MS / result.metrics["latency_ms"])
        assert result.reward == pytest.approx(result.metrics["AP"] * factor)
    wider = exp.records.read_result("scaling", 2)
    assert wider.metrics["params"] > validated.metrics["params"]


def test_the_final_training_uses_the_winners_architecture_scaling_and_policy(runs):
    exp = runs["exp"]
    final = exp.records.read_spec("final", 1)
    assert final.source_study == "augmentation"
    winner = exp.records.read_spec("augmentation", final.source_trial)
    assert final.task_overrides == winner.task_overrides and final.arch_json == winner.arch_json
    assert trial_experiment_spec(exp.spec, final).task == (
        trial_experiment_spec(exp.spec, winner).task
    )
    handoff = json.loads(exp.store.read_text(exp.layout.handoff_json("v1")))
    assert handoff["input_size"] == [128, 128, 3]  # the scaled image size
    assert handoff["task_overrides"] == list(final.task_overrides)
    card = exp.store.read_text(exp.layout.model_card("v1"))
    assert "task.options.augmentation=" in card


def test_the_report_has_a_section_per_refinement_study(runs):
    exp = runs["exp"]
    markdown = exp.store.read_text(exp.layout.report_markdown())
    assert f"## Study scaling ({MODULE}:TINY_SCALING)" in markdown
    assert "## Study augmentation (randaugment_detection)" in markdown
    assert "options.augmentation=" in markdown and "options.resample_alpha=" in markdown
    html = exp.store.read_text(exp.layout.report_html())
    for study in STUDIES:
        assert f'<section class="study" id="study-{study}"' in html


def test_trial_metrics_are_kfp_metrics_artifacts(runs):
    outputs = [
        json.loads(path.read_text())
        for path in (runs["root"] / "kfp").rglob("run-trial*/executor_output.json")
    ]
    logged = [
        o["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for o in outputs
        if o["parameterValues"]["status"] in ("TRAINED", "COMPLETED")
    ]
    assert logged and all("AP" in m for m in logged)  # trainings train and evaluate only
    measured = [
        json.loads(path.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for path in (runs["root"] / "kfp").rglob("measure-trials*/executor_output.json")
    ]
    assert measured and all(
        {"AP", "latency_ms", "latency_p90_ms", "flops", "reward"} <= set(m) for m in measured
    )
    searches = [
        json.loads(path.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for path in (runs["root"] / "kfp").rglob("search-study*/executor_output.json")
    ]
    proxy = [m for m in searches if m.get("trials_failed") == 2.0]  # one per run
    assert len(proxy) == 2 and all(m["trials_completed"] == 2.0 for m in proxy)
    # The first run's controller trained; the second's found the study done.
    assert sorted(m["slot_utilization"] > 0 for m in proxy) == [False, True]


def test_rerunning_the_pipeline_trains_nothing(runs):
    exp = runs["exp"]
    assert runs["second_uri"] == runs["uri"]
    assert _finished(exp) == runs["finished"]  # no result.json was written again
    assert exp.records.trial_ids("proxy") == [1, 2, 3, 4]
    assert runs["second_s"] < 120  # the steps only read the store


def test_the_local_study_runner_resumes_the_finished_study_and_trains_nothing(runs, monkeypatch):
    exp = runs["exp"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr("kfnas.training.runner.execute_trial", no_training)
    seen = []
    again = run_study(exp.uri, "proxy", top_k=2, progress=lambda r, i, res: seen.append((r, i)))
    assert again.trial_ids == [1, 2, 3, 4]
    rounds = {i: exp.records.read_spec("proxy", i).round for i in again.trial_ids}
    assert seen == [(rounds[i], i) for i in again.trial_ids]  # every trial, finished before
    assert again.results == {i: exp.records.read_result("proxy", i) for i in again.trial_ids}
    assert again.top == select_top(exp.uri, "proxy", 2)
    assert _finished(exp) == runs["finished"]


@pytest.mark.skipif(find_chromium() is None, reason=f"no Chromium: {INSTALL_HINT}")
def test_the_report_and_the_live_view_render_in_a_browser(runs, tmp_path):
    """The finished run's report file and its live view, opened in headless Chromium.

    Screenshots go to ``$KFNAS_SCREENSHOTS`` when set (the README's images come from there).
    """
    exp = runs["exp"]
    shots = Path(os.environ.get("KFNAS_SCREENSHOTS") or tmp_path)
    with Browser() as browser:
        data = check_report(browser, Path(exp.store.uri(exp.layout.report_html())).as_uri(), shots)
        assert [s["name"] for s in data["studies"]] == list(STUDIES)
        assert data["lineage"]["exported"] == "v1"
        assert [s["study"] for s in data["lineage"]["steps"]][-1] == "proxy"
        with Dashboard(exp.uri, port=0) as live:
            live_data = check_report(browser, live.url, shots, "live")
            assert live_data["studies"] == data["studies"]
            assert browser.evaluate("typeof window.sessionStorage") == "object"
