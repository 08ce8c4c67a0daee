"""Exporting a trained trial: a real SavedModel served through both of its signatures.

The session's shared trial (``exported_detection`` in ``tests/shared_fixtures.py``: a proxy-sized
RetinaNet, 64 px, levels 3..5, narrow backbone and head, trained 2 steps on generated TFRecords) is
exported by the export stage through ``export_saved_model``, which rebuilds it from its
``arch_json``, restores the checkpoint and writes the SavedModel; here it is loaded back with plain
``tf.saved_model.load`` and run on a generated image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import STALE_FILE

from kfnas.config.spec import ExperimentSpec
from kfnas.data import DatasetFiles
from kfnas.export.saved_model import (
    ARCHITECTURE_FILE,
    RECORD_FILE,
    ExportRecord,
    export_saved_model,
    read_export_record,
)
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.tasks import TASKS

pytestmark = pytest.mark.tf

NUM_CLASSES = 3
MAX_DETECTIONS = 10
DETECTION_KEYS = {"detection_boxes", "detection_scores", "detection_classes", "num_detections"}


@dataclasses.dataclass(frozen=True)
class Exported:
    """A trained trial and its export."""

    spec: ExperimentSpec
    trial: TrialSpec
    result: TrialResult
    checkpoint_dir: str
    export_dir: str
    record: ExportRecord
    files: DatasetFiles


@pytest.fixture(scope="module")
def exported(exported_detection):
    """The shared trained trial and its ``v1`` export, as ``export_saved_model`` sees them."""
    exp, trial_id = exported_detection.experiment, exported_detection.trial_id
    export_dir = str(exported_detection.folder)
    return Exported(
        spec=exp.spec,
        trial=exp.records.read_spec("proxy", trial_id),
        result=exp.records.read_result("proxy", trial_id),
        checkpoint_dir=exp.store.uri(exp.layout.trial_model_dir("proxy", trial_id)),
        export_dir=export_dir,
        record=read_export_record(export_dir),
        files=exported_detection.data,
    )


@pytest.fixture(scope="module")
def served(exported):
    import tensorflow as tf

    return tf.saved_model.load(exported.record.saved_model_dir)


def validation_png(files) -> bytes:
    import tensorflow as tf

    record = next(iter(tf.data.TFRecordDataset(files.validation[0])))
    example = tf.train.Example.FromString(record.numpy())
    return example.features.feature["image/encoded"].bytes_list.value[0]


def check_detections(outputs, batch: int) -> dict[str, np.ndarray]:
    out = {k: v.numpy() for k, v in outputs.items()}
    assert set(out) >= DETECTION_KEYS, sorted(out)
    assert out["detection_boxes"].shape == (batch, MAX_DETECTIONS, 4)
    assert out["detection_scores"].shape == (batch, MAX_DETECTIONS)
    assert out["detection_classes"].shape == (batch, MAX_DETECTIONS)
    assert out["num_detections"].shape == (batch,)
    boxes, scores, classes = (
        out["detection_boxes"],
        out["detection_scores"],
        out["detection_classes"],
    )
    assert np.all((boxes >= 0) & (boxes <= 1)), "boxes are normalized to the input image"
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.all((classes >= 0) & (classes <= NUM_CLASSES))
    for i, n in enumerate(out["num_detections"]):
        # A score threshold of 0 keeps the top detections of the 756 anchors x 3 classes.
        assert 0 < n <= MAX_DETECTIONS
        assert np.all((classes[i, :n] >= 1) & (classes[i, :n] <= NUM_CLASSES))
        assert np.all(boxes[i, :n, 2:] >= boxes[i, :n, :2]), "ymax >= ymin and xmax >= xmin"
        assert np.all(np.diff(scores[i, :n]) <= 1e-6), "sorted by score"
    return out


def test_the_export_folder_holds_the_savedmodel_architecture_and_record(exported):
    record, export_dir = exported.record, exported.export_dir
    # In the numbered version folder TF Serving (KServe's tensorflow runtime) loads, alone there.
    assert record.saved_model_dir == f"{export_dir}/serving/model/1"
    assert os.path.isfile(os.path.join(record.saved_model_dir, "saved_model.pb"))
    assert not os.path.exists(os.path.join(record.saved_model_dir, STALE_FILE))
    assert os.listdir(os.path.join(export_dir, "serving", "model")) == ["1"]
    assert os.path.isfile(os.path.join(export_dir, "params.yaml"))
    assert record.signatures == ("serving_default", "image_tensor")
    assert set(record.outputs) >= DETECTION_KEYS
    assert record.input_size == (64, 64, 3)
    assert (record.task_kind, record.study) == ("detection", "proxy")
    assert record.trial_id == exported.trial.trial_id
    assert (record.experiment, record.space) == ("shared-detection", "spinenet_mbconv")
    assert record.metrics == exported.result.metrics
    assert record.checkpoint == os.path.join(exported.checkpoint_dir, "ckpt-2")
    with open(os.path.join(export_dir, RECORD_FILE)) as f:
        stored = json.load(f)
    assert stored["saved_model_dir"] == "serving/model/1"  # relative: the folder can move


def test_architecture_json_round_trips(exported):
    record = exported.record
    assert record.architecture_file == f"{exported.export_dir}/{ARCHITECTURE_FILE}"
    with open(record.architecture_file) as f:
        arch = pg.from_json_str(f.read())
    assert pg.eq(arch, pg.from_json_str(exported.trial.arch_json))
    assert pg.eq(pg.from_json_str(pg.to_json_str(arch)), arch)


def test_the_exported_weights_are_the_checkpoint(exported):
    import tensorflow as tf

    trained = tf.train.load_checkpoint(exported.checkpoint_dir)
    variables = os.path.join(exported.record.saved_model_dir, "variables", "variables")
    saved = tf.train.load_checkpoint(variables)
    model_keys = {
        k
        for k in trained.get_variable_to_shape_map()
        if k.startswith("model/") and k.endswith("VARIABLE_VALUE") and "OPTIMIZER_SLOT" not in k
    }
    saved_keys = {k for k in saved.get_variable_to_shape_map() if k.endswith("VARIABLE_VALUE")}
    assert len(model_keys) > 100
    assert saved_keys == model_keys  # every model variable, and no optimizer state
    for key in model_keys:
        np.testing.assert_array_equal(saved.get_tensor(key), trained.get_tensor(key), err_msg=key)
    # Trained, not freshly initialized: batch-norm moving means start at exactly zero.
    moving_means = [k for k in model_keys if "moving_mean" in k]
    assert moving_means and all(np.any(saved.get_tensor(k) != 0) for k in moving_means)


def test_both_signatures_detect_on_a_generated_image(exported, served):
    import tensorflow as tf

    assert set(served.signatures) == {"serving_default", "image_tensor"}
    png = validation_png(exported.files)
    from_bytes = check_detections(served.signatures["serving_default"](tf.constant([png])), 1)
    image = tf.io.decode_png(png, channels=3)[tf.newaxis]
    assert image.dtype == tf.uint8 and image.shape == (1, 64, 64, 3)
    from_tensor = check_detections(served.signatures["image_tensor"](image), 1)
    for key in DETECTION_KEYS:  # decoding inside the model changes nothing
        np.testing.assert_allclose(from_bytes[key], from_tensor[key], rtol=1e-5, atol=1e-6)


def test_image_tensor_takes_any_batch_and_size(served):
    import tensorflow as tf

    pixels = np.random.default_rng(0).integers(0, 256, (2, 48, 80, 3), dtype=np.uint8)
    out = check_detections(served.signatures["image_tensor"](tf.constant(pixels)), 2)
    np.testing.assert_array_equal(out["image_info"][:, 0], [[48, 80], [48, 80]])  # original size


def test_an_existing_export_is_not_overwritten(exported):
    e = exported
    with pytest.raises(FileExistsError, match="already holds an export"):
        export_saved_model(e.spec, e.trial, e.checkpoint_dir, e.export_dir)


def test_a_missing_checkpoint_is_named(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        export_saved_model(exported.spec, exported.trial, str(tmp_path), str(tmp_path / "out"))


def test_a_task_kind_without_an_exporter_lists_the_exportable_ones(exported, tmp_path, monkeypatch):
    # As if segmentation had no exporter yet.
    monkeypatch.setattr(type(TASKS.get("segmentation")), "serving_export", None)
    spec = exported.spec
    other = dataclasses.replace(spec, task=dataclasses.replace(spec.task, kind="segmentation"))
    with pytest.raises(ValueError, match=r"'segmentation' cannot be exported.*detection"):
        export_saved_model(other, exported.trial, str(tmp_path), str(tmp_path / "out"))


def test_the_module_imports_without_tensorflow():
    code = (
        "import sys, kfnas.export.saved_model; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'tf_keras', 'keras', 'official'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
