"""Exporting a trained trial as a TensorFlow SavedModel for serving.

``export_saved_model`` rebuilds a trial's model from its stored ``arch_json`` (through
``kfnas.training.runner.build_trial_model``: the search space builds the backbone, the task kind
wraps it), restores the model weights of the trial's latest checkpoint (the ``model`` entry of the
trainer's ``tf.train.Checkpoint``; the optimizer and step are left unread), and writes one export
folder::

    <export_dir>/serving/model/1/    the SavedModel and its serving signatures
    <export_dir>/architecture.json   the trial's arch_json (``spaces.base.load_architecture``)
    <export_dir>/params.yaml         the tf-models experiment config of the task (model head,
                                     input size, preprocessing, ...; the backbone is the
                                     architecture above)
    <export_dir>/export.json         the ``ExportRecord``, written last: it marks the export done

The SavedModel lies in the numbered version folder ``1/`` of ``serving/model/`` because that folder
is what KServe's TensorFlow runtime serves (TF Serving's model base path must hold numbered
versions): ``kfnas.export.kserve`` writes the ``InferenceService`` whose ``storageUri`` it is. It is
written there, not copied there, so the model ``handoff.json`` describes is the one served; readers
take its path from ``ExportRecord.saved_model_dir`` (exports of earlier releases: ``saved_model/``).

The serving code is tf-models-official's (the task kind's ``serving_export``). Every signature
takes one tensor, ``inputs``, holding a batch of any size:

* ``serving_default``: a 1-D string tensor of encoded images (PNG, JPEG, GIF or BMP bytes); the
  images of one batch must share their size (official's decoder stacks them).
* ``image_tensor``: a uint8 tensor ``[batch, height, width, 3]`` of any height and width.

Both preprocess the images as the task's evaluation did (resize, normalize) and return, per kind
(``num_classes`` is ``task.num_classes``; ``S`` is ``task.image_size``):

* detection (images resized keeping their aspect ratio, padded): ``detection_boxes``
  ``[batch, N, 4]`` (``ymin, xmin, ymax, xmax``, normalized to ``[0, 1]`` of the input image),
  ``detection_scores`` ``[batch, N]``, ``detection_classes`` ``[batch, N]`` (int32, class ids
  ``1..num_classes``), ``num_detections`` ``[batch]`` (int32; the rows after it are padding) and
  official's ``image_info`` ``[batch, 4, 2]`` (original size, resized size, scale and offset, each
  ``[y, x]``), with ``N`` the task's ``max_num_detections``.
* classification (images center-cropped when ``aug_crop`` is on, as evaluation does, then resized
  to ``S x S``): ``logits`` and ``probs`` (their softmax, summing to 1), both float32
  ``[batch, num_classes]``; class ids are ``0..num_classes - 1``.
* segmentation (images resized keeping their aspect ratio, padded to ``S x S``): ``logits``
  float32 ``[batch, S, S, num_classes + 1]``, per-pixel class scores at the model's input size
  (their argmax over the last axis is the mask: 0 the background, ``1..num_classes`` the
  classes), and ``image_info`` as for detection: the caller's image is the top-left
  ``image_info[:, 0] * image_info[:, 2]`` (original size times scale) of the mask, the rest
  padding (masks stay at the model's input size: see ``kfnas.tasks.segmentation``'s
  ``serving_export``).

Point clouds (``lidar_detection``) have one signature, ``serving_default``, whose ``inputs`` are
float32 ``[batch, points, 4]`` (x, y, z, intensity; clouds of one batch padded with NaN rows to
one length) and whose outputs are ``detection_boxes`` ``[batch, N, 7]`` (centre x, y, z, length,
width, height, heading, in metres and radians), ``detection_scores``, ``detection_classes`` and
``num_detections`` (``kfnas.export.serving.lidar_module``).

``ExportRecord.outputs`` lists the output keys the export's signatures return.

To extend to a new task kind: give the task kind a ``serving_export`` naming its
``official.vision.serving`` module class (or a ``kfnas.export.serving`` factory adjusting it) and
any export-time overrides of its task config. Nothing here branches on the task kind.

This module imports TensorFlow only inside its functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kfnas.config.spec import BudgetSpec, ExperimentSpec
from kfnas.records import Record
from kfnas.records.trial import TrialSpec
from kfnas.spaces import declared_options, get_space
from kfnas.tasks import TASKS
from kfnas.tasks.base import DEFAULT_SIGNATURES, ServingExport

#: Subfolder of the export folder that KServe serves (its ``storageUri``): numbered versions only.
SERVING_MODEL_DIR = "serving/model"
#: The SavedModel's version folder in it (TF Serving serves the highest number).
SERVING_VERSION = "1"
#: Subfolder of the export folder holding the SavedModel.
SAVED_MODEL_DIR = f"{SERVING_MODEL_DIR}/{SERVING_VERSION}"
#: File of the export folder holding the trial's architecture JSON.
ARCHITECTURE_FILE = "architecture.json"
#: File of the export folder holding the ``ExportRecord``; written last.
RECORD_FILE = "export.json"


@dataclasses.dataclass(frozen=True)
class ExportRecord(Record):
    """What ``export_saved_model`` wrote.

    ``export.json`` holds it with paths relative to the export folder (``read_export_record``
    resolves them again), so the folder can be uploaded or moved as a whole. A
    ``kfnas.records.Record`` whose version 1 is written without ``schema_version``, as the first
    releases wrote it.

    Attributes:
        saved_model_dir: The SavedModel folder, ``serving/model/1`` (``tf.saved_model.load`` takes
            it).
        architecture_file: The trial's architecture JSON.
        signatures: The serving signature names, ``serving_default`` first.
        outputs: The output keys every signature returns.
        input_size: The model's input without the batch (images: ``(height, width, channels)``;
            point clouds: ``(points, features)``); served images of another size
            are resized to it.
        task_kind: The task kind (one with a ``serving_export``: ``detection``, ...).
        experiment: The experiment name.
        study: The trial's study.
        trial_id: The trial's id.
        space: The trial's search space.
        checkpoint: The checkpoint whose model weights were exported.
        metrics: The trial's metrics as the caller gave them (e.g. ``TrialResult.metrics``).
        model_format: What ``saved_model_dir`` holds, as KServe names it: ``tensorflow`` (a
            SavedModel), ``onnx`` (``model.onnx``, a torch export) or ``torchscript`` (a torch
            export ONNX could not express: nothing KServe serves).
        signature_specs: The signatures as ``handoff.json`` records them, when the export knows
            them (torch exports); empty: read from the SavedModel.
        files: Role -> path relative to the export folder of the export's model files besides
            the SavedModel (torch: ``torchscript``, ``onnx``).
        errors: Formats that could not be written -> why (torch: ``onnx``).
    """

    KIND = "export record"
    # 2: model_format, signature_specs, files and errors (torch exports); defaults fill them.
    SCHEMA_VERSION = 2
    UNVERSIONED_UNTIL = 1

    saved_model_dir: str
    architecture_file: str
    signatures: tuple[str, ...]
    outputs: tuple[str, ...]
    input_size: tuple[int, ...]
    task_kind: str
    experiment: str
    study: str
    trial_id: int
    space: str
    checkpoint: str
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    model_format: str = "tensorflow"
    signature_specs: dict[str, Any] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def export_saved_model(
    spec: ExperimentSpec,
    trial: TrialSpec,
    checkpoint_dir: str,
    export_dir: str,
    *,
    metrics: Mapping[str, float] | None = None,
    check: Callable[[], None] | None = None,
) -> ExportRecord:
    """Exports a trained trial as a SavedModel with serving signatures (see the module docstring).

    Each task kind names an ``ExportModule`` of ``official.vision.serving`` in its
    ``serving_export`` (``kfnas.tasks.base.ServingExport``: ``DetectionModule``,
    ``SegmentationModule``, and for classification ``ClassificationModule`` through
    ``kfnas.export.serving``, which makes its two signatures preprocess alike), which
    ``serving_export`` looks up in ``kfnas.tasks.TASKS``; the export goes through
    ``export_saved_model_lib.export_inference_graph``. The segmentation kind turns official's
    ``rescale_output`` (masks at the caller's size) off: it serves one image per batch only.

    Args:
        spec: The resolved experiment spec (its task decides the model and the export module).
        trial: The trial; its ``space`` and ``arch_json`` rebuild the backbone.
        checkpoint_dir: The trial's ``model/`` folder (its latest checkpoint is used) or one
            checkpoint prefix; any path ``tf.io.gfile`` reads.
        export_dir: The folder to write (local or ``gs://``). It must not hold a finished export
            (``export.json``); what an unfinished one left there is replaced.
        metrics: The trial's metrics, copied into the record.
        check: Called before each write of the export (the SavedModel, ``architecture.json``,
            ``export.json``); a claim's ``check`` (``kfnas.export.package.claim_export``) raises
            ``LeaseLost`` there, so an exporter whose claim was taken over writes nothing more.

    Returns:
        The record of the export, also written to ``<export_dir>/export.json``.

    Raises:
        ValueError: The task kind has no ``serving_export`` (the message lists those that
            have one), or the checkpoint does not hold this trial's model.
        FileNotFoundError: ``checkpoint_dir`` holds no checkpoint.
        FileExistsError: ``export_dir`` already holds a finished export.
    """
    from kfnas.training.runner import trial_experiment_spec

    spec = trial_experiment_spec(spec, trial)  # with the trial's scaling and augmentation
    serving = serving_export(spec.task.kind)
    import tensorflow as tf  # Only the export itself needs TensorFlow.

    checkpoint = _checkpoint_path(tf, checkpoint_dir)
    saved_model_dir = _join(export_dir, SAVED_MODEL_DIR)
    serving_model_dir = _join(export_dir, SERVING_MODEL_DIR)
    if tf.io.gfile.exists(_join(export_dir, RECORD_FILE)):
        raise FileExistsError(
            f"{export_dir} already holds an export; export each model version to a new folder"
        )
    if check is not None:
        check()
    # An export that stopped midway: start it again, leaving no other version for TF Serving.
    if tf.io.gfile.exists(serving_model_dir):
        tf.io.gfile.rmtree(serving_model_dir)

    module, params, input_size = _export_module(spec, trial, serving)
    # Tracing the signatures creates every variable (some layers build on their first call), so
    # the restore below can check that each one of them is in the checkpoint.
    signatures = module.get_inference_signatures(dict(serving.signatures))
    _restore_model_weights(tf, module.model, checkpoint)

    from official.vision.serving import export_saved_model_lib

    if check is not None:
        check()
    with _without_keras_layer_traces():
        export_saved_model_lib.export_inference_graph(
            input_type="image_tensor",  # Unused: the module and function_keys are given.
            batch_size=None,
            input_image_size=list(input_size[:-1]),
            params=params,
            checkpoint_path=None,  # Restored above, after the check.
            export_dir=export_dir,
            export_module=module,
            export_saved_model_subdir=SAVED_MODEL_DIR,
            # Serving never differentiates; tracing the custom gradients of hundreds of layers
            # would triple the export time.
            save_options=tf.saved_model.SaveOptions(experimental_custom_gradients=False),
            function_keys=dict(serving.signatures),
        )
    if check is not None:
        check()
    _write_text(tf, _join(export_dir, ARCHITECTURE_FILE), trial.arch_json)

    names = sorted(signatures, key=lambda n: (n != "serving_default", n))
    first = signatures[names[0]]
    record = ExportRecord(
        saved_model_dir=saved_model_dir,
        architecture_file=_join(export_dir, ARCHITECTURE_FILE),
        signatures=tuple(names),
        outputs=tuple(sorted(first.structured_outputs)),
        input_size=input_size,
        task_kind=spec.task.kind,
        experiment=trial.experiment,
        study=trial.study,
        trial_id=trial.trial_id,
        space=trial.space,
        checkpoint=checkpoint,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
    )
    relative = dataclasses.replace(
        record, saved_model_dir=SAVED_MODEL_DIR, architecture_file=ARCHITECTURE_FILE
    )
    if check is not None:
        check()
    _write_text(tf, _join(export_dir, RECORD_FILE), relative.to_json())
    return record


def read_export_record(export_dir: str) -> ExportRecord:
    """The ``ExportRecord`` of an export folder, its paths resolved under ``export_dir``.

    Raises:
        FileNotFoundError: The folder holds no finished export.
    """
    import tensorflow as tf

    path = _join(export_dir, RECORD_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{export_dir} holds no finished export ({RECORD_FILE} missing)")
    with tf.io.gfile.GFile(path) as f:
        record = ExportRecord.from_json(f.read(), path)
    return dataclasses.replace(
        record,
        saved_model_dir=_join(export_dir, record.saved_model_dir),
        architecture_file=_join(export_dir, record.architecture_file),
    )


def serving_export(task_kind: str) -> ServingExport:
    """How the task kind ``task_kind`` is exported (its ``serving_export`` in ``TASKS``).

    Raises:
        ValueError: There is none; the message lists the task kinds that can be exported.
    """
    serving = TASKS.get(task_kind).serving_export if task_kind in TASKS else None
    if serving is None:
        exportable = [name for name in TASKS.names() if TASKS.get(name).serving_export]
        raise ValueError(
            f"task kind {task_kind!r} cannot be exported yet; exportable kinds: "
            f"{', '.join(exportable)} (give the task kind a serving_export: "
            f"kfnas.tasks.base.ServingExport)"
        )
    return serving


def _export_module(
    spec: ExperimentSpec, trial: TrialSpec, serving: ServingExport
) -> tuple[Any, Any, tuple[int, ...]]:
    """The official export module around the trial's rebuilt model.

    Returns:
        The module, its tf-models experiment config and the model's input shape (no batch).
    """
    from official.core import config_definitions

    from kfnas.training.runner import build_trial_model

    task_kind = TASKS.get(spec.task.kind)
    space_options = declared_options(spec.task.kind, [get_space(trial.space)])
    official_task = task_kind.build_task(
        spec.task, spec.data, BudgetSpec(**trial.budget), space_options
    )
    if serving.config_overrides:
        official_task.task_config.override(dict(serving.config_overrides), is_strict=True)
    model = build_trial_model(spec, trial, official_task)
    params = config_definitions.ExperimentConfig(task=official_task.task_config)
    input_size = tuple(int(d) for d in task_kind.input_shape(spec.task))
    *image_size, channels = input_size
    module_name, factory_name = serving.module.split(":")
    module_factory = getattr(importlib.import_module(module_name), factory_name)
    module = module_factory(
        params=params,
        batch_size=None,  # Any batch size.
        input_image_size=list(image_size),
        # serve() then preprocesses every image itself, whichever signature decoded it ("tflite"
        # skips that, "image_bytes" makes official's classification module skip its crop).
        input_type="image_tensor",
        num_channels=channels,
        model=model,
    )
    return module, params, input_size


def _checkpoint_path(tf: Any, checkpoint_dir: str) -> str:
    path = tf.train.latest_checkpoint(checkpoint_dir) if tf.io.gfile.isdir(checkpoint_dir) else None
    if path is None and tf.io.gfile.exists(f"{checkpoint_dir}.index"):
        path = checkpoint_dir
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint in {checkpoint_dir}: expected the trial's model/ folder (with a "
            f"'checkpoint' file) or a checkpoint prefix such as model/ckpt-100"
        )
    return path


def _restore_model_weights(tf: Any, model: Any, checkpoint: str) -> None:
    """Reads the ``model`` entry of a trainer checkpoint into ``model``; checks every variable."""
    status = tf.train.Checkpoint(model=model).read(checkpoint)
    status.expect_partial()  # The optimizer and step stay unread.
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(
            f"checkpoint {checkpoint} does not hold this trial's model (another architecture or "
            f"task options?): {str(e)[:500]}"
        ) from e


@contextlib.contextmanager
def _without_keras_layer_traces() -> Iterator[None]:
    """Saves Keras layers without their own call traces (as ``save_traces=False`` does).

    Those traces only let ``tf_keras`` revive each layer from the SavedModel; serving uses the
    signatures alone, and tracing every layer would double the export time. The switch is
    tf_keras' internal one; without it the export is only slower.
    """
    try:
        from tf_keras.src.saving.legacy.saved_model import utils
    except ImportError:
        yield
        return
    with utils.keras_option_scope(save_traces=False):
        yield


def _join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}"


def _write_text(tf: Any, path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


__all__ = [
    "ARCHITECTURE_FILE",
    "DEFAULT_SIGNATURES",
    "RECORD_FILE",
    "SAVED_MODEL_DIR",
    "SERVING_MODEL_DIR",
    "SERVING_VERSION",
    "ExportRecord",
    "ServingExport",
    "export_saved_model",
    "read_export_record",
    "serving_export",
]
