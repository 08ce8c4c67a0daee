"""PyTorch trials through the same stages as TensorFlow ones: one real trial of each torch kind.

The 3-D segmentation trial (``unet_encoder`` at 16^3 voxels, an eighth of the filters) goes the
whole way: ``init_experiment`` checks the Decathlon data, ``run_trial`` trains it through the torch
framework (curve, checkpoints, TensorBoard logs), the measurement step times it by the protocol,
and ``export_model`` writes TorchScript and ONNX with the handoff and model card. The MnasNet
classification trial trains on the TFRecords the TensorFlow task reads. Resuming from a
checkpoint and early stopping are checked on the trainer directly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from shared_fixtures import data_overrides  # noqa: E402

from kfnas import stages  # noqa: E402
from kfnas.config.spec import parse_spec  # noqa: E402
from kfnas.records.trial import TRAIN_SECONDS, TrialStatus, TrialTraining  # noqa: E402
from kfnas.store import open_experiment  # noqa: E402
from kfnas.training.runner import local_trial  # noqa: E402
from kfnas.validation.checks import resolve  # noqa: E402

SEGMENTATION_3D_SPEC = """
name: torch-medical
task:
  kind: segmentation_3d
  num_classes: 3
  image_size: 16
  options: {filter_size_scale: 0.125, validation_batch_size: 2}
studies:
  proxy: {space: unet_encoder, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 6, batch_size: 2, evaluations: 2, latency_runs: 5}
measurement: {min_seconds: 0}
"""

TORCH_CLASSIFICATION_SPEC = """
name: torch-classification
task: {kind: torch_classification, num_classes: 3, image_size: 32}
studies:
  proxy: {space: mnasnet, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 4, batch_size: 2, latency_runs: 3}
measurement: {min_seconds: 0}
"""


@pytest.fixture(scope="module")
def medical_data(tmp_path_factory):
    from kfnas.data import GENERATORS

    return GENERATORS.get("medical3d")(
        tmp_path_factory.mktemp("medical3d"), num_train=4, num_validation=2, image_size=16
    )


@pytest.fixture(scope="module")
def medical_trial(tmp_path_factory, medical_data):
    """One segmentation_3d trial trained, measured and exported as ``v1`` through the stages."""
    root = tmp_path_factory.mktemp("torch-store")
    uri = stages.init_experiment(
        SEGMENTATION_3D_SPEC, [f"store_root={root}", *data_overrides(medical_data)]
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    return uri, trial_id, result


def test_a_segmentation_3d_trial_trains_measures_and_records_like_any_trial(medical_trial):
    uri, trial_id, result = medical_trial
    assert result.status is TrialStatus.COMPLETED, result.error
    metrics = result.metrics
    assert 0.0 <= metrics["dice"] <= 1.0 and metrics["eval_step"] in (3.0, 6.0)
    assert metrics["params"] > 0 and metrics["flops"] > 0 and metrics["latency_ms"] > 0
    assert result.measurement["protocol"]["runs"] == 5 and "torch" in result.measurement
    assert result.reward is not None
    assert result.runtime == {
        "framework": "pytorch",
        "torch": torch.__version__,
        "device": "cpu",
        "gpus": 0,
    }
    exp = open_experiment(uri)
    curve = exp.records.read_curve("proxy", trial_id)
    assert list(curve.steps) == [3, 6] and [s for s, _ in curve.seconds()] == [3, 6]
    stored = exp.store.list(exp.layout.trial_model_dir("proxy", trial_id))
    assert any(name.startswith("ckpt-6") and name.endswith(".pt") for name in stored)
    logs = exp.store.list(exp.layout.trial_logs_dir("proxy", trial_id))
    assert any("events.out.tfevents" in name for name in logs)


def test_the_export_writes_torchscript_onnx_a_handoff_and_a_model_card(medical_trial):
    uri, trial_id, _ = medical_trial
    folder = Path(stages.export_model(uri, "proxy", trial_id, "v1"))
    record = json.loads((folder / "export.json").read_text())
    assert record["model_format"] == "onnx" and record["errors"] == {}
    module = torch.jit.load(str(folder / "torchscript" / "model.pt"))
    volume = torch.zeros(1, 1, 16, 16, 16)
    assert tuple(module(volume).shape) == (1, 3, 16, 16, 16)
    import onnx

    onnx.checker.check_model(onnx.load(str(folder / "serving" / "model" / "1" / "model.onnx")))
    handoff = json.loads((folder / "handoff.json").read_text())
    assert handoff["model_format"] == "onnx" and handoff["task_kind"] == "segmentation_3d"
    assert handoff["files"]["torchscript"] == "torchscript/model.pt"
    assert handoff["signatures"]["serving_default"]["inputs"]["input"]["shape"] == [
        None,
        1,
        16,
        16,
        16,
    ]
    service = (folder / "serving" / "inferenceservice.yaml").read_text()
    assert "name: onnx" in service and "protocolVersion: v2" in service
    card = (folder / "model_card.md").read_text()
    assert "model.onnx" in card and "torch.jit.load" in card and "/v2/models/" in card


def test_a_pod_with_gpus_the_trial_leaves_idle_is_named_in_its_runtime(monkeypatch):
    from kfnas.torch.runner import device_runtime

    # No GPU here: the count is what a 4-GPU pod's torch.cuda reports.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    runtime = device_runtime(torch.device("cuda", 0))
    assert (runtime["device"], runtime["gpus"]) == ("cuda:0", 4)
    assert runtime["warnings"].startswith("4 GPUs visible but a torch trial trains in one process")
    assert "3 stayed idle; give torch trials 1 accelerator per pod" in runtime["warnings"]


def test_a_resumed_torch_trial_continues_from_its_checkpoint(tmp_path, medical_data):
    from kfnas.torch.runner import execute_trial

    spec = resolve(parse_spec(SEGMENTATION_3D_SPEC, data_overrides(medical_data)))
    trial = local_trial(spec, "proxy", seed=3)
    short = dataclasses.replace(trial, budget={**trial.budget, "train_steps": 2, "evaluations": 1})
    saved = []
    first = execute_trial(
        spec, short, tmp_path, measure=False, on_checkpoint=lambda step, _: saved.append(step)
    )
    assert isinstance(first, TrialTraining) and saved == [2]
    resumed = execute_trial(spec, trial, tmp_path, measure=False)
    assert isinstance(resumed, TrialTraining)
    # 4 more steps than the first call: the second resumed at step 2 rather than step 0.
    assert resumed.metrics["eval_step"] in (3.0, 6.0)
    assert sorted(p.name for p in (tmp_path / "model").glob("ckpt-*.pt"))[-1] == "ckpt-6.pt"


def test_a_torch_trial_stops_when_its_study_rule_says_so(tmp_path, medical_data):
    from kfnas.torch.runner import execute_trial

    spec = resolve(parse_spec(SEGMENTATION_3D_SPEC, data_overrides(medical_data)))
    seen = []

    def rule(step, metrics):
        seen.append((step, metrics[TRAIN_SECONDS]))
        return "below the median"

    result = execute_trial(spec, local_trial(spec, "proxy"), tmp_path, on_evaluation=rule)
    assert result.status is TrialStatus.COMPLETED
    assert result.stopped_early and result.stop_reason == "below the median"
    assert [s for s, _ in seen] == [3] and seen[0][1] > 0
    assert result.metrics["eval_step"] == 3.0


@pytest.mark.tf
def test_a_torch_mnasnet_trial_trains_on_the_classification_tfrecords(
    tmp_path, classification_data
):
    uri = stages.init_experiment(
        TORCH_CLASSIFICATION_SPEC,
        [f"store_root={tmp_path}", *data_overrides(classification_data)],
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    assert result.status is TrialStatus.COMPLETED, result.error
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.metrics["params"] > 0
