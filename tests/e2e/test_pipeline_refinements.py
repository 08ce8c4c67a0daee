"""The search pipeline with its scaling and augmentation studies, under ``kfp.local``, tiny budget.

One SpineNet proxy trial -> validation -> ``scaling`` (2 points) -> ``augmentation`` (2
RandAugment policies, 2 evaluations each) -> final training of the winner with its scaling and
policy -> export. The built-in ``spinenet_scaling`` grid makes 512-640 px models, too slow for
CI on 2 CPU cores, so the scaling study here uses a proxy-sized grid of the same class, defined
in a user module (``module:object``, as a team would ship one in its image) and selected with an
override; the augmentation study is the built-in ``randaugment_detection`` (its grid's first
points). Everything else is the pipeline's own parameters.
"""

import contextlib
import json
import os
import textwrap
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.data import write_detection_dataset
from kfnas.pipelines.local import run_search_locally
from kfnas.records.trial import TrialStatus
from kfnas.store import open_experiment

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
SPEC = """
name: refinements-e2e
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            resample_alpha: 0.25, head_num_convs: 1, head_num_filters: 16,
            validation_batch_size: 4}
studies:
  proxy: {space: spinenet}
algorithm: {name: random}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
objectives:
  metric: AP
  reward: mnas
  constraints: [{measure: latency_ms, target: 50.0}]
seed: 4
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("refinements")
    (root / f"{MODULE}.py").write_text(SPACES_SOURCE)
    path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), path) if p)
    files = write_detection_dataset(root / "data", num_train=8, num_validation=4)
    arguments = {
        "spec_yaml": SPEC,
        "store_root": str(root / "store"),
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "annotations": files.annotations,
        "trials_per_round": 1,
        "full_train_steps": 2,
        "scaling_trials": 2,
        "scaling_train_steps": 2,
        "augmentation_trials": 2,
        "augmentation_train_steps": 4,
        "augmentation_evaluations": 2,
        "model_version": "v1",
        "overrides": [
            f'studies.scaling={{"space": "{MODULE}:TINY_SCALING"}}',
            "studies.validation.budget.latency_runs=5",
        ],
    }
    counts = {"rounds": 1, "trials_per_round": 1, "parallelism": 2, "top_k": 1}
    log = root / "pipeline.log"
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(log.open("w"))
            start = time.monotonic()
            try:
                uri = run_search_locally(
                    arguments, **counts, pipeline_root=root / "kfp", log_file=out
                )
            except RuntimeError as e:
                out.flush()
                tail = "\n".join(log.read_text().splitlines()[-40:])
                pytest.fail(f"the pipeline failed: {e}\n{tail}")
            print(f"pipeline with scaling and augmentation: {time.monotonic() - start:.0f} s")
    finally:
        os.environ["PYTHONPATH"] = path
    return open_experiment(uri)


def test_the_chain_runs_every_study_in_order(run):
    assert list(run.spec.studies) == ["proxy", "validation", "scaling", "augmentation", "final"]
    ids = {study: run.records.trial_ids(study) for study in run.spec.studies}
    assert ids == {"proxy": [1], "validation": [1], "scaling": [1, 2], "augmentation": [1, 2],
                   "final": [1]}  # fmt: skip
    for study, trial_ids in ids.items():
        for trial_id in trial_ids:
            result = run.records.read_result(study, trial_id)
            assert result.status is TrialStatus.COMPLETED, (study, trial_id, result.error)


def test_refinement_trials_retrain_the_best_of_the_study_before_with_their_choice(run):
    validated = run.records.read_spec("validation", 1)
    scaled = [run.records.read_spec("scaling", i) for i in (1, 2)]
    for trial in scaled:
        assert (trial.source_study, trial.source_trial) == ("validation", 1)
        assert trial.arch_json == validated.arch_json and trial.space == "spinenet"
        assert "task.image_size=128" in trial.task_overrides
    alphas = {o for t in scaled for o in t.task_overrides if "resample_alpha" in o}
    assert alphas == {"task.options.resample_alpha=0.25", "task.options.resample_alpha=0.5"}
    best_scaling = max(scaled, key=lambda t: run.records.read_result("scaling", t.trial_id).reward)
    for trial_id in (1, 2):
        trial = run.records.read_spec("augmentation", trial_id)
        assert (trial.source_study, trial.source_trial) == ("scaling", best_scaling.trial_id)
        assert trial.task_overrides[:-1] == best_scaling.task_overrides
        policy = trial.task_overrides[-1]
        assert policy.startswith("task.options.augmentation=")
        assert json.loads(policy.partition("=")[2])["randaugment"]["num_layers"] == 1
        result = run.records.read_result("augmentation", trial_id)
        assert result.metrics["eval_step"] in (2.0, 4.0)  # the best of 2 evaluations


def test_the_final_training_uses_the_winners_architecture_scaling_and_policy(run):
    final = run.records.read_spec("final", 1)
    assert final.source_study == "augmentation"
    winner = run.records.read_spec("augmentation", final.source_trial)
    assert final.task_overrides == winner.task_overrides and final.arch_json == winner.arch_json
    handoff = json.loads(run.store.read_text(run.layout.handoff_json("v1")))
    assert handoff["input_size"] == [128, 128, 3]  # the scaled image size
    assert handoff["task_overrides"] == list(final.task_overrides)
    card = run.store.read_text(run.layout.model_card("v1"))
    assert "task.options.augmentation=" in card


def test_the_report_has_a_section_per_refinement_study(run):
    markdown = run.store.read_text(run.layout.report_markdown())
    assert "## Study scaling (e2e_refinement_spaces:TINY_SCALING)" in markdown
    assert "## Study augmentation (randaugment_detection)" in markdown
    assert "options.augmentation=" in markdown and "options.resample_alpha=" in markdown
    html = run.store.read_text(run.layout.report_html())
    assert "scaling: choices ranked" in html and "augmentation: AP vs latency" in html
