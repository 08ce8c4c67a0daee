"""The same search pipeline under ``kfp.local`` for each other task kind, by parameters only.

``test_pipeline_local.py`` runs the search pipeline for detection (``spinenet``, with the
refinement studies). Here the very same pipeline runs (classification, ``mnasnet``) and
(segmentation, ``nasfpn``) from one base spec, a detection spec, changing only pipeline parameters:
``task_kind``, ``space``, ``num_classes``, the data, ``metric``, the budgets and ``overrides``.
Each run is the smallest the DAG allows: 1 round of 1 proxy trial, its validation by full training,
the final training of the winner and its export (3 trainings of 2-3 steps at batch 2, 5 latency
runs each), on 8 generated training and 4 validation images. The exported SavedModel of each run is
the one the export tests check: its record, and both signatures serving generated images of any
batch and size alike, with the outputs each task kind promises.

The base spec's ``task.options`` are detection's (levels, head sizes): a classification or
segmentation task refuses options it does not know, and they say nothing true about another
task's model, so each run replaces the whole mapping with one ``task.options={...}`` override
(an override's value replaces the key's value; it does not merge), which is what a user switching
the task kind of a spec does. Detection's ``objectives.metric: AP`` is replaced by the ``metric``
parameter, and segmentation's 128 px (NAS-FPN always builds levels 3..7) by a
``task.image_size`` override.
"""

import contextlib
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from local_pipeline import run_logged

from kfnas.data import GENERATORS
from kfnas.export.saved_model import RECORD_FILE, read_export_record
from kfnas.records.trial import TrialStatus
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow, pytest.mark.tf]

#: The base spec of every run: a detection spec (``spinenet_mbconv``, levels 3..5, narrow head).
BASE_SPEC = """
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
measurement: {min_seconds: 0}
objectives:
  metric: AP
  reward: mnas
  constraints: [{measure: latency_ms, target: 5.0}]
seed: 3
"""
NUM_CLASSES = 3
COUNTS = {"rounds": 1, "trials_per_round": 1, "parallelism": 1, "top_k": 1}
STUDIES = ("proxy", "validation", "final")


@dataclasses.dataclass(frozen=True)
class KindRun:
    """One (task kind, space) pair: the pipeline parameters that differ from the base spec.

    Attributes:
        space: The ``space`` parameter.
        metric: The ``metric`` parameter: the task kind's objective.
        image_size: The side of the generated images (``task.image_size``).
        options: The task's ``task.options``, given whole as an override.
        outputs: The output keys the exported model's signatures return.
        logits_shape: The shape of one image's ``logits`` output.
    """

    space: str
    metric: str
    image_size: int
    options: Mapping[str, Any]
    outputs: frozenset[str]
    logits_shape: tuple[int, ...]
    check: Any = None


def check_classification(out: dict[str, np.ndarray], batch: int, _: tuple[int, int]) -> None:
    """Logits and probabilities of every class; the probabilities are the logits' softmax."""
    logits, probs = out["logits"], out["probs"]
    assert logits.shape == probs.shape == (batch, NUM_CLASSES)
    assert logits.dtype == probs.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-4)


def check_segmentation(out: dict[str, np.ndarray], batch: int, original: tuple[int, int]) -> None:
    """Per-pixel logits at the model's size and ``image_info`` saying how the image was resized."""
    logits, info = out["logits"], out["image_info"]
    size = KIND_RUNS["segmentation"].image_size
    # Classes 0 (background) .. NUM_CLASSES, at the model's input size.
    assert logits.shape == (batch, size, size, NUM_CLASSES + 1)
    assert logits.dtype == info.dtype == np.float32
    assert np.all(np.isfinite(logits))
    masks = logits.argmax(axis=-1)
    assert masks.min() >= 0 and masks.max() <= NUM_CLASSES
    assert info.shape == (batch, 4, 2)
    np.testing.assert_array_equal(info[:, 0], [original] * batch)  # the caller's image size
    # Resized keeping the aspect ratio to fit the model input (top left; the rest is padding).
    np.testing.assert_array_equal(info[:, 1], [[size, size]] * batch)
    resized = np.round(np.array(original) * min(size / side for side in original))
    np.testing.assert_allclose(info[:, 2], [resized / np.array(original)] * batch, rtol=1e-6)
    np.testing.assert_array_equal(info[:, 3], 0)


KIND_RUNS: dict[str, KindRun] = {
    "classification": KindRun(
        space="mnasnet",
        metric="top_1_accuracy",
        image_size=64,
        options={"endpoints_num_filters": 16, "validation_batch_size": 2},
        outputs=frozenset({"logits", "probs"}),
        logits_shape=(NUM_CLASSES,),
        check=check_classification,
    ),
    "segmentation": KindRun(
        space="nasfpn",
        metric="mean_iou",
        image_size=128,
        options={
            "backbone": "resnet10",
            "filter_size_scale": 0.25,
            "decoder_num_filters": 16,
            "decoder_num_repeats": 1,
            "head_num_convs": 1,
            "head_num_filters": 16,
            "validation_batch_size": 2,
        },
        outputs=frozenset({"logits", "image_info"}),
        logits_shape=(128, 128, NUM_CLASSES + 1),  # the background is class 0
        check=check_segmentation,
    ),
}


def pipeline_arguments(kind: str, run: KindRun, files: Any, store_root: str) -> dict[str, Any]:
    """The search pipeline's parameters for one pair: the base spec and parameters only."""
    return {
        "spec_yaml": BASE_SPEC,
        "experiment_name": f"pipeline-{kind}",
        "store_root": store_root,
        "task_kind": kind,
        "space": run.space,
        "num_classes": NUM_CLASSES,
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "metric": run.metric,
        "trials_per_round": 1,
        "proxy_train_steps": 2,
        "full_train_steps": 3,
        "full_batch_size": 2,
        "model_version": "v1",
        "overrides": [
            f"task.options={json.dumps(dict(run.options))}",
            f"task.image_size={run.image_size}",
            "studies.validation.budget.latency_runs=5",  # the full trainings' latency runs
        ],
    }


@dataclasses.dataclass(frozen=True)
class Ran:
    """One finished pipeline run."""

    kind: str
    run: KindRun
    uri: str
    wall_s: float
    files: Any
    kfp_root: Any


@pytest.fixture(scope="module", params=sorted(KIND_RUNS))
def ran(request, tmp_path_factory) -> Ran:
    kind, run = request.param, KIND_RUNS[request.param]
    root = tmp_path_factory.mktemp(f"pipeline-{kind}")
    files = GENERATORS.get(kind)(
        root / "data",
        num_train=8,
        num_validation=4,
        image_size=run.image_size,
        num_classes=NUM_CLASSES,
    )
    arguments = pipeline_arguments(kind, run, files, str(root / "store"))
    with contextlib.ExitStack() as stack:
        uri, wall_s = run_logged(arguments, COUNTS, root, f"the {kind}", stack)
    print(f"\n{kind} ({run.space}) pipeline run: {wall_s:.0f} s")
    return Ran(kind, run, uri, wall_s, files, root / "kfp")


def test_only_parameters_changed_the_base_spec(ran):
    spec = open_experiment(ran.uri).spec
    assert (spec.task.kind, spec.task.image_size) == (ran.kind, ran.run.image_size)
    assert spec.task.options == dict(ran.run.options)
    assert spec.objectives.metric == ran.run.metric
    assert {study: spec.study(study).space for study in STUDIES} == dict.fromkeys(
        STUDIES, ran.run.space
    )


def test_every_study_completed_its_trial_with_the_kinds_metric(ran):
    exp = open_experiment(ran.uri)
    assert {s: exp.records.trial_ids(s) for s in STUDIES} == {study: [1] for study in STUDIES}
    for study in STUDIES:
        result = exp.records.read_result(study, 1)
        assert result.status is TrialStatus.COMPLETED, (study, result.error)
        assert 0.0 <= result.metrics[ran.run.metric] <= 1.0
        assert result.reward is not None and np.isfinite(result.reward)
        assert result.metrics["latency_ms"] > 0
    assert exp.records.read_spec("final", 1).budget["train_steps"] == 3


def test_the_reports_are_in_the_store(ran):
    exp = open_experiment(ran.uri)
    for path in (exp.layout.report_html(), exp.layout.report_markdown()):
        assert exp.store.exists(path), path
    assert ran.run.metric in exp.store.read_text(exp.layout.report_markdown())


def test_trial_metrics_are_kfp_metrics_artifacts(ran):
    outputs = [
        json.loads(path.read_text())
        for path in ran.kfp_root.rglob("run-trial*/executor_output.json")
    ]
    logged = [o["artifacts"]["metrics"]["artifacts"][0]["metadata"] for o in outputs]
    assert len(logged) == len(STUDIES) - 1  # validation and final: KFP tasks of their own
    assert all(ran.run.metric in m for m in logged)  # trainings train and evaluate only
    measured = [
        json.loads(path.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for path in ran.kfp_root.rglob("measure-trials*/executor_output.json")
    ]
    assert len(measured) == len(STUDIES) - 1  # each training's measurement step
    assert all(
        {ran.run.metric, "latency_ms", "latency_p90_ms", "reward"} <= set(m) for m in measured
    )
    searches = [
        json.loads(path.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        for path in ran.kfp_root.rglob("search-study*/executor_output.json")
    ]
    proxy = [m for m in searches if "best_reward" in m]  # the studies switched off ran none
    assert len(proxy) == 1 and proxy[0]["trials_completed"] >= 1
    assert 0 < proxy[0]["slot_utilization"] <= 1


def test_the_exported_model_loads_and_serves(ran):
    import tensorflow as tf

    exp = open_experiment(ran.uri)
    record = read_export_record(exp.store.uri(exp.layout.export_dir("v1")))
    assert (record.task_kind, record.study, record.trial_id) == (ran.kind, "final", 1)
    assert set(record.outputs) == ran.run.outputs
    served = tf.saved_model.load(record.saved_model_dir)
    example = next(iter(tf.data.TFRecordDataset(ran.files.validation[0])))
    png = tf.train.Example.FromString(example.numpy()).features.feature["image/encoded"]
    png = png.bytes_list.value[0]
    image = tf.io.decode_png(png, channels=3)[tf.newaxis]
    from_bytes = served.signatures["serving_default"](tf.constant([png]))
    from_tensor = served.signatures["image_tensor"](image)
    for outputs in (from_bytes, from_tensor):
        assert set(outputs) == ran.run.outputs
        logits = outputs["logits"].numpy()
        assert logits.dtype == np.float32 and np.all(np.isfinite(logits))
        assert logits.shape == (1, *ran.run.logits_shape)
    for key in ran.run.outputs:
        np.testing.assert_allclose(from_bytes[key].numpy(), from_tensor[key].numpy(), atol=1e-5)


def _served(ran: Ran) -> tuple[Any, Any]:
    import tensorflow as tf

    exp = open_experiment(ran.uri)
    record = read_export_record(exp.store.uri(exp.layout.export_dir("v1")))
    return record, tf.saved_model.load(record.saved_model_dir)


def _call(ran: Ran, served: Any, signature: str, inputs: Any, original: tuple[int, int]) -> dict:
    """Runs one signature and checks its outputs for the task kind; returns them as numpy."""
    out = {key: value.numpy() for key, value in served.signatures[signature](inputs).items()}
    assert set(out) == ran.run.outputs, sorted(out)
    ran.run.check(out, len(inputs), original)
    return out


def test_the_export_record_describes_the_export(ran):
    exp = open_experiment(ran.uri)
    export_dir = exp.store.uri(exp.layout.export_dir("v1"))
    record, _ = _served(ran)
    result = exp.records.read_result("final", 1)
    assert os.path.isfile(os.path.join(record.saved_model_dir, "saved_model.pb"))
    assert os.path.isfile(os.path.join(export_dir, "params.yaml"))
    assert os.path.isfile(os.path.join(export_dir, RECORD_FILE))
    assert record.signatures == ("serving_default", "image_tensor")
    size = ran.run.image_size
    assert record.input_size == (size, size, 3)
    assert (record.space, record.metrics) == (ran.run.space, result.metrics)
    assert record.checkpoint.endswith("ckpt-3")  # the final training's 3 steps


def test_both_signatures_serve_generated_images_of_any_batch_and_size_alike(ran):
    """Images of another shape are preprocessed once, the same way whichever signature decodes.

    (official's classification module alone crops encoded images twice: ``kfnas.export.serving``.)
    """
    import tensorflow as tf

    _, served = _served(ran)
    example = next(iter(tf.data.TFRecordDataset(ran.files.validation[0])))
    png = tf.train.Example.FromString(example.numpy()).features.feature["image/encoded"]
    png = png.bytes_list.value[0]
    size = ran.run.image_size
    image = tf.io.decode_png(png, channels=3)[tf.newaxis]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    pngs = tf.constant([tf.io.encode_png(p).numpy() for p in pixels])
    for encoded, tensor, original in (
        (tf.constant([png]), image, (size, size)),
        (pngs, tf.constant(pixels), (48, 80)),
    ):
        from_bytes = _call(ran, served, "serving_default", encoded, original)
        from_tensor = _call(ran, served, "image_tensor", tensor, original)
        for key in ran.run.outputs:  # decoding inside the model changes nothing
            np.testing.assert_allclose(from_bytes[key], from_tensor[key], rtol=1e-4, atol=1e-5)
