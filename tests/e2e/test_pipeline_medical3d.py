"""The search pipeline under ``kfp.local`` for the PyTorch 3-D segmentation search, by parameters.

The same detection base spec as ``test_pipeline_task_kinds.py``; only pipeline parameters make it
a PyTorch search over the UNet encoder: ``task_kind=segmentation_3d``, ``space=unet_encoder``,
``metric=dice``, the generated Decathlon-layout volumes (16^3, 8 training and 4 validation), and
one ``task.options`` override (an eighth of the filters). The smallest DAG: 1 round of 1 proxy
trial, its validation by full training, the final training and the export: every step is the
pipeline's own, the trainings go through the torch framework, the measurement step times each
model by the protocol, and the export writes TorchScript, ONNX, the handoff and the model card.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from local_pipeline import run_logged

pytest.importorskip("torch")

from test_pipeline_task_kinds import BASE_SPEC, COUNTS, STUDIES

from kfnas.data import GENERATORS
from kfnas.records.trial import TrialStatus
from kfnas.store import open_experiment

pytestmark = [pytest.mark.slow]

SIZE, CLASSES = 16, 3


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline-medical3d")
    files = GENERATORS.get("medical3d")(
        root / "data", num_train=8, num_validation=4, image_size=SIZE, num_classes=CLASSES
    )
    arguments = {
        "spec_yaml": BASE_SPEC,
        "experiment_name": "pipeline-medical3d",
        "store_root": str(root / "store"),
        "task_kind": "segmentation_3d",
        "space": "unet_encoder",
        "num_classes": CLASSES,
        "train_data": files.train_pattern,
        "validation_data": files.validation_pattern,
        "metric": "dice",
        "trials_per_round": 1,
        "proxy_train_steps": 2,
        "full_train_steps": 3,
        "full_batch_size": 2,
        "model_version": "v1",
        "overrides": [
            'task.options={"filter_size_scale": 0.125, "validation_batch_size": 2}',
            f"task.image_size={SIZE}",
            "studies.validation.budget.latency_runs=5",
        ],
    }
    with contextlib.ExitStack() as stack:
        uri, wall_s = run_logged(arguments, COUNTS, root, "the segmentation_3d", stack)
    print(f"\nsegmentation_3d (unet_encoder) pipeline run: {wall_s:.0f} s")
    return uri, root


def test_every_study_trained_a_unet_with_dice_and_latency(ran):
    uri, _ = ran
    exp = open_experiment(uri)
    assert (exp.spec.task.kind, exp.spec.objectives.metric) == ("segmentation_3d", "dice")
    for study in STUDIES:
        result = exp.records.read_result(study, 1)
        assert result.status is TrialStatus.COMPLETED, (study, result.error)
        assert 0.0 <= result.metrics["dice"] <= 1.0 and result.metrics["latency_ms"] > 0
        assert result.measurement["protocol"]["batch_sizes"] == [1]
        assert exp.records.read_spec(study, 1).space == "unet_encoder"
    assert exp.records.read_spec("final", 1).budget["train_steps"] == 3


def test_the_export_is_torchscript_and_onnx_with_a_model_card(ran):
    import onnx
    import torch

    uri, _ = ran
    exp = open_experiment(uri)
    folder = exp.store.uri(exp.layout.export_dir("v1"))
    handoff = json.loads(exp.store.read_text(exp.layout.handoff_json("v1")))
    assert (handoff["model_format"], handoff["study"], handoff["trial_id"]) == ("onnx", "final", 1)
    module = torch.jit.load(f"{folder}/torchscript/model.pt")
    logits = module(torch.zeros(2, 1, SIZE, SIZE, SIZE))
    assert tuple(logits.shape) == (2, CLASSES, SIZE, SIZE, SIZE)
    onnx.checker.check_model(onnx.load(f"{folder}/{handoff['saved_model']}/model.onnx"))
    card = exp.store.read_text(exp.layout.model_card("v1"))
    assert "segmentation_3d" in card and "dice" in card and "model.onnx" in card
    assert exp.store.exists(exp.layout.report_html())
