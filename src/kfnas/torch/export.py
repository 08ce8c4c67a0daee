"""Exporting a trained torch trial: TorchScript, ONNX where the model allows, and its record.

``export_trial_model`` is the PyTorch framework's exporter (``kfnas.tasks.frameworks``). It
rebuilds the trial's module from its ``arch_json`` with the weights of its newest checkpoint
(``kfnas.torch.measure.restore_trial_module``) and writes one export folder::

    <export_dir>/torchscript/model.pt   the traced TorchScript module (``torch.jit.load`` takes
                                        it; no kfnas or search-space code needed to run it)
    <export_dir>/serving/model/1/model.onnx
                                        the ONNX model (opset ``ONNX_OPSET``, dynamic batch), in
                                        the numbered version folder KServe's ONNX runtime serves
    <export_dir>/architecture.json      the trial's arch_json
    <export_dir>/export.json            the ``ExportRecord``, written last: the export is done

Both take one float32 tensor ``input`` of shape ``(batch, *input_shape)`` (channels first) and
return ``logits``: ``(batch, num_classes)`` for classification, ``(batch, num_classes, S, S, S)``
for 3-D segmentation. The export checks each against the module on a random input before writing
it. A model ONNX cannot express is exported as TorchScript only: the ONNX error is kept in
``ExportRecord.errors`` and the handoff serves nothing (its model card says why). The model card
and ``handoff.json`` come from ``kfnas.export.package.write_handoff``, as for TensorFlow exports.

To extend: another format is one more writer below, its file named in ``ExportRecord.files``.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfnas.config.spec import ExperimentSpec
from kfnas.export.saved_model import (
    ARCHITECTURE_FILE,
    RECORD_FILE,
    SAVED_MODEL_DIR,
    ExportRecord,
)
from kfnas.records.trial import TrialSpec
from kfnas.store import open_store
from kfnas.tasks import TASKS
from kfnas.training.runner import trial_experiment_spec

#: The TorchScript module, relative to the export folder.
TORCHSCRIPT_FILE = "torchscript/model.pt"
#: The ONNX model, relative to the export folder (KServe's ``storageUri`` is its grandparent).
ONNX_FILE = f"{SAVED_MODEL_DIR}/model.onnx"
#: The ONNX opset written.
ONNX_OPSET = 17
#: The largest difference allowed between an exported model's logits and the module's.
TOLERANCE = 1e-3


def export_trial_model(
    spec: ExperimentSpec,
    trial: TrialSpec,
    checkpoint_dir: str,
    export_dir: str,
    *,
    metrics: Mapping[str, float] | None = None,
    check: Callable[[], None] | None = None,
) -> ExportRecord:
    """Exports a trained torch trial (see the module docstring).

    Args:
        spec: The experiment spec (the trial's overrides are applied here).
        trial: The trial.
        checkpoint_dir: The trial's ``model/`` folder (local path or store URI).
        export_dir: The export folder (local path or store URI); must not hold an export.
        metrics: The trial's metrics, kept in the record.
        check: Called before each write; raises once the caller lost its claim on the version.

    Raises:
        FileExistsError: ``export_dir`` already holds an export.
        FileNotFoundError: ``checkpoint_dir`` holds no checkpoint.
        ValueError: The TorchScript module does not reproduce the model's outputs.
    """
    import torch

    from kfnas.torch.measure import restore_trial_module

    spec = trial_experiment_spec(spec, trial)
    shape = tuple(int(d) for d in TASKS.get(spec.task.kind).input_shape(spec.task))
    out = open_store(export_dir)
    if out.exists(RECORD_FILE):
        raise FileExistsError(
            f"{export_dir} already holds an export; export each model version to a new folder"
        )
    with tempfile.TemporaryDirectory(prefix="kfnas-torch-export-") as work:
        open_store(checkpoint_dir).download_dir("", work)
        module = restore_trial_module(spec, trial, work)
        checkpoint = str(max(Path(work).glob("ckpt-*.pt"), key=lambda p: p.stat().st_mtime).name)
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = module(example)
    files, errors = {"torchscript": TORCHSCRIPT_FILE}, {}
    blobs = {TORCHSCRIPT_FILE: _torchscript(module, example, expected)}
    try:
        blobs[ONNX_FILE] = _onnx(module, example, expected)
        files["onnx"] = ONNX_FILE
    except Exception as e:  # the model's ops: recorded, the TorchScript export stands
        errors["onnx"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
    for path, blob in blobs.items():
        if check is not None:
            check()
        out.write_bytes(path, blob)
    out.write_text(ARCHITECTURE_FILE, trial.arch_json)
    tensor = {"dtype": "float32", "shape": [None, *shape]}
    outputs = {"logits": {"dtype": "float32", "shape": [None, *expected.shape[1:]]}}
    record = ExportRecord(
        saved_model_dir=SAVED_MODEL_DIR if "onnx" in files else Path(TORCHSCRIPT_FILE).parent.name,
        architecture_file=ARCHITECTURE_FILE,
        signatures=("serving_default",),
        outputs=("logits",),
        input_size=shape,
        task_kind=spec.task.kind,
        experiment=trial.experiment,
        study=trial.study,
        trial_id=trial.trial_id,
        space=trial.space,
        checkpoint=checkpoint,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        model_format="onnx" if "onnx" in files else "torchscript",
        signature_specs={"serving_default": {"inputs": {"input": tensor}, "outputs": outputs}},
        files=files,
        errors=errors,
    )
    if check is not None:
        check()
    out.write_text(RECORD_FILE, record.to_json())
    return record


def _torchscript(module: Any, example: Any, expected: Any) -> bytes:
    """The traced module, checked to reproduce ``expected`` on ``example``."""
    import torch

    traced = torch.jit.trace(module, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    with torch.no_grad():
        difference = float((reloaded(example) - expected).abs().max())
    if difference > TOLERANCE:
        raise ValueError(
            f"the TorchScript module's outputs differ from the model's by {difference:.3g} "
            f"(> {TOLERANCE}): the model's forward depends on Python control flow that tracing "
            f"cannot record"
        )
    return buffer.getvalue()


def _onnx(module: Any, example: Any, expected: Any) -> bytes:
    """The ONNX model (dynamic batch), checked by ``onnx.checker`` and by shape."""
    import onnx
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buffer,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != expected.ndim:
        raise ValueError(f"the ONNX output has {len(dims)} dimensions, the model's {expected.ndim}")
    return buffer.getvalue()
