"""Exporting classification and segmentation trials: real SavedModels, both signatures served.

Per task kind, one tiny trial trains 2 steps on generated TFRecords through ``execute_trial`` and
``export_saved_model`` writes its SavedModel, which is loaded back with plain
``tf.saved_model.load`` and run on generated images: classification with ``mnasnet`` at 64 px
(narrow head), segmentation with ``nasfpn`` at 128 px (NAS-FPN always builds levels 3..7) over a
narrow ResNet-10. Detection has its own file, ``test_export.py``.

A model trained 2 steps answers almost the same whatever the image, so the classification
preprocessing of both signatures is checked apart, around a model that returns its input.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import ExperimentSpec, parse_spec
from kfnas.data import GENERATORS, DatasetFiles
from kfnas.export.saved_model import (
    RECORD_FILE,
    ExportRecord,
    export_saved_model,
    read_export_record,
)
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.training.runner import MODEL_DIR, execute_trial, local_trial
from kfnas.validation import validate

pytestmark = pytest.mark.tf

NUM_CLASSES = 3
SPEC = """
name: export-{kind}
task:
  kind: {kind}
  num_classes: {num_classes}
  image_size: {size}
  options: {options}
studies:
  proxy: {{space: {space}}}
budget: {{train_steps: 2, batch_size: 2, latency_runs: 5}}
"""


@dataclasses.dataclass(frozen=True)
class Case:
    """One task kind's export test: its trial's spec and what its signatures must return.

    Attributes:
        space: The search space of the trial.
        size: ``task.image_size``.
        options: ``task.options`` (a narrow, fast model).
        outputs: The output keys of every signature.
        check: ``(outputs as numpy, batch size, original image size) -> None``; asserts the
            shapes, dtypes and value ranges of one call's outputs.
    """

    space: str
    size: int
    options: Mapping[str, Any]
    outputs: frozenset[str]
    check: Callable[[dict[str, np.ndarray], int, tuple[int, int]], None]


def check_classification(out: dict[str, np.ndarray], batch: int, _: tuple[int, int]) -> None:
    logits, probs = out["logits"], out["probs"]
    assert logits.shape == probs.shape == (batch, NUM_CLASSES)
    assert logits.dtype == probs.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-4)


def check_segmentation(out: dict[str, np.ndarray], batch: int, original: tuple[int, int]) -> None:
    logits, info = out["logits"], out["image_info"]
    size = CASES["segmentation"].size
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


CASES: dict[str, Case] = {
    "classification": Case(
        space="mnasnet",
        size=64,
        options={"endpoints_num_filters": 32, "validation_batch_size": 2},
        outputs=frozenset({"logits", "probs"}),
        check=check_classification,
    ),
    "segmentation": Case(
        space="nasfpn",
        size=128,
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
        check=check_segmentation,
    ),
}


@dataclasses.dataclass(frozen=True)
class Exported:
    """A trained trial of one task kind and its export, loaded back."""

    kind: str
    case: Case
    spec: ExperimentSpec
    trial: TrialSpec
    result: TrialResult
    checkpoint_dir: str
    export_dir: str
    record: ExportRecord
    files: DatasetFiles
    served: Any


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> Exported:
    """One trial per task kind, trained 2 steps, exported and loaded once."""
    import tensorflow as tf

    kind, case = request.param, CASES[request.param]
    root = tmp_path_factory.mktemp(f"export-{kind}")
    files = GENERATORS.get(kind)(
        root / "data", num_train=4, num_validation=2, image_size=case.size, num_classes=NUM_CLASSES
    )
    text = SPEC.format(
        kind=kind,
        num_classes=NUM_CLASSES,
        size=case.size,
        options=json.dumps(dict(case.options)),
        space=case.space,
    )
    data = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
    spec = validate(parse_spec(text, data))
    trial = local_trial(spec, "proxy", seed=0)
    result = execute_trial(spec, trial, root / "work")
    assert result.status is TrialStatus.COMPLETED, result.error
    checkpoint_dir = str(root / "work" / MODEL_DIR)
    export_dir = str(root / "export" / "v1")
    record = export_saved_model(spec, trial, checkpoint_dir, export_dir, metrics=result.metrics)
    served = tf.saved_model.load(record.saved_model_dir)
    return Exported(
        kind, case, spec, trial, result, checkpoint_dir, export_dir, record, files, served
    )


def validation_png(files: DatasetFiles) -> bytes:
    import tensorflow as tf

    record = next(iter(tf.data.TFRecordDataset(files.validation[0])))
    example = tf.train.Example.FromString(record.numpy())
    return example.features.feature["image/encoded"].bytes_list.value[0]


def call(exported: Exported, signature: str, inputs: Any, original: tuple[int, int]) -> dict:
    """Runs one signature and checks its outputs for the task kind; returns them as numpy."""
    outputs = exported.served.signatures[signature](inputs)
    out = {key: value.numpy() for key, value in outputs.items()}
    assert set(out) == exported.case.outputs, sorted(out)
    exported.case.check(out, len(inputs), original)
    return out


def test_the_record_describes_the_export(exported):
    record, case = exported.record, exported.case
    assert os.path.isfile(os.path.join(record.saved_model_dir, "saved_model.pb"))
    assert os.path.isfile(os.path.join(exported.export_dir, "params.yaml"))
    assert record.signatures == ("serving_default", "image_tensor")
    assert set(record.outputs) == case.outputs
    assert record.input_size == (case.size, case.size, 3)
    assert (record.task_kind, record.space, record.study) == (exported.kind, case.space, "proxy")
    assert record.metrics == exported.result.metrics
    metric = {"classification": "top_1_accuracy", "segmentation": "mean_iou"}[exported.kind]
    assert 0.0 <= record.metrics[metric] <= 1.0
    assert record.checkpoint == os.path.join(exported.checkpoint_dir, "ckpt-2")
    assert os.path.isfile(os.path.join(exported.export_dir, RECORD_FILE))
    assert read_export_record(exported.export_dir) == record


def test_both_signatures_serve_a_generated_image_alike(exported):
    import tensorflow as tf

    assert set(exported.served.signatures) == {"serving_default", "image_tensor"}
    png = validation_png(exported.files)
    image = tf.io.decode_png(png, channels=3)[tf.newaxis]
    size = exported.case.size
    assert image.dtype == tf.uint8 and image.shape == (1, size, size, 3)
    from_bytes = call(exported, "serving_default", tf.constant([png]), (size, size))
    from_tensor = call(exported, "image_tensor", image, (size, size))
    for key in exported.case.outputs:  # decoding inside the model changes nothing
        np.testing.assert_allclose(from_bytes[key], from_tensor[key], rtol=1e-4, atol=1e-5)


def test_any_batch_and_image_size_is_served_alike_by_both_signatures(exported):
    """Images of another shape are preprocessed once, the same way whichever signature decodes.

    (official's classification module alone crops encoded images twice: ``kfnas.export.serving``.)
    """
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    from_tensor = call(exported, "image_tensor", tf.constant(pixels), (48, 80))
    pngs = tf.constant([tf.io.encode_png(p).numpy() for p in pixels])
    from_bytes = call(exported, "serving_default", pngs, (48, 80))
    for key in exported.case.outputs:
        np.testing.assert_allclose(from_bytes[key], from_tensor[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signature", ["image_bytes", "image_tensor"])
def test_classification_serving_preprocesses_as_evaluation_does(signature):
    """Both signatures crop the task's ``center_crop_fraction`` once, then resize and normalize.

    official's ``ClassificationModule`` built for ``image_tensor`` crops encoded images twice and
    always 7/8 of the side; ``kfnas.export.serving`` adjusts it. The model here returns its input.
    """
    import tensorflow as tf
    import tf_keras
    from official.core import config_definitions
    from official.vision.dataloaders import classification_input

    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.export.serving import classification_module
    from kfnas.tasks.classification import CLASSIFICATION

    size, fraction = 64, 0.5
    task = TaskSpec(
        kind="classification",
        num_classes=NUM_CLASSES,
        image_size=size,
        options={"center_crop_fraction": fraction},
    )
    config = CLASSIFICATION.build_task(task, DataSpec("t", "v"), BudgetSpec()).task_config
    echo = tf_keras.Sequential([tf_keras.Input((size, size, 3)), tf_keras.layers.Flatten()])
    module = classification_module(
        params=config_definitions.ExperimentConfig(task=config),
        batch_size=None,
        input_image_size=[size, size],
        input_type="image_tensor",
        num_channels=3,
        model=echo,
    )
    rows, cols = np.mgrid[0:48, 0:80]
    image = np.stack([rows * 5, cols * 3, (rows + cols) * 2], axis=-1).astype(np.uint8)
    png = tf.io.encode_png(image)
    inputs = {"image_bytes": tf.stack([png]), "image_tensor": tf.constant(image[np.newaxis])}
    served = module.get_inference_signatures({signature: "f"})["f"](inputs[signature])["logits"]

    data = config.validation_data
    parser = classification_input.Parser(
        output_size=[size, size],
        num_classes=NUM_CLASSES,
        decode_jpeg_only=data.decode_jpeg_only,
        aug_crop=data.aug_crop,
        center_crop_fraction=data.center_crop_fraction,
        tf_resize_method=data.tf_resize_method,
    )
    evaluated = parser._parse_eval_image({"image/encoded": png})
    assert data.aug_crop and data.center_crop_fraction == fraction
    np.testing.assert_allclose(
        served.numpy().reshape(size, size, 3), evaluated.numpy(), rtol=1e-5, atol=1e-4
    )
