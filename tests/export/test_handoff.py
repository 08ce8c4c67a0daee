"""The handoff package: handoff.json against its schema, the model card, versions and ``latest``.

The export folders here hold a tiny real SavedModel (a ``tf.Module`` with kfnas's two serving
signatures, saved once per module) and an ``export.json``, beside trial records written by hand
for a proxy -> validation -> final chain, so every path of ``write_handoff`` and
``read_handoff`` runs in seconds. ``tests/export/test_handoff_export.py`` does the same
through a really trained and exported trial.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from kfnas.export.handoff import (
    HANDOFF_FILE,
    MODEL_CARD_FILE,
    RUN_ID_ENV,
    SCHEMA_VERSION,
    Handoff,
    HandoffError,
    HandoffNotFoundError,
    read_handoff,
)
from kfnas.export.package import write_handoff
from kfnas.export.saved_model import RECORD_FILE, SAVED_MODEL_DIR, ExportRecord
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.stages import init_experiment
from kfnas.store import ExperimentLayout, LocalStore, open_experiment

pytestmark = pytest.mark.tf

SCHEMA = Path(__file__).parents[2] / "schemas" / "handoff.schema.json"
SPEC = """
name: handoff-test
task: {kind: classification, num_classes: 3, image_size: 32}
studies:
  proxy: {space: mnasnet}
"""
ARCH = {
    "_type": "kfnas.spaces.mnasnet.MnasNetArchitecture",
    "blocks": [
        {"_type": "kfnas.spaces.mnasnet.MnasNetBlock", "kernel_size": k, "output_filters": 16 * k}
        for k in (3, 5)
    ],
}
T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A SavedModel with kfnas's signatures: encoded images or a uint8 batch -> logits, probs."""
    import tensorflow as tf

    class Served(tf.Module):
        def _outputs(self, batch):
            logits = tf.zeros([batch, 3])
            return {"logits": logits, "probs": tf.nn.softmax(logits)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def image_bytes(self, inputs):
            return self._outputs(tf.shape(inputs)[0])

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def image_tensor(self, inputs):
            return self._outputs(tf.shape(inputs)[0])

    module, folder = Served(), tmp_path_factory.mktemp("served") / "saved_model"
    signatures = {"serving_default": module.image_bytes, "image_tensor": module.image_tensor}
    tf.saved_model.save(module, str(folder), signatures=signatures)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from kfnas.data import GENERATORS

    files = GENERATORS.get("classification")(
        tmp_path_factory.mktemp("data"), num_train=4, num_validation=2, image_size=32
    )
    return [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]


def _trial(exp, study, trial_id, source=None, *, value=None, status=TrialStatus.COMPLETED):
    records, metric = exp.records, exp.spec.objectives.metric
    records.write_spec(
        TrialSpec(
            experiment=exp.spec.name,
            study=study,
            trial_id=trial_id,
            round=1,
            space="mnasnet",
            dna_json="{}",
            arch_json=json.dumps(ARCH),
            source_study=source[0] if source else "",
            source_trial=source[1] if source else None,
        )
    )
    if status is TrialStatus.COMPLETED:
        metrics = {metric: value, "latency_ms": 2.5, "flops": 3.0e6, "params": 1234.0}
        result = TrialResult(trial_id, status, metrics, reward=value, duration_s=7.0)
    else:
        result = TrialResult(trial_id, status, error="NaN loss at step 3", duration_s=1.0)
    records.write_result(study, result)


@pytest.fixture
def experiment(tmp_path, data, saved_model):
    """An experiment whose final trial 0 (<- validation 1 <- proxy 2) is exported as ``v1``."""
    uri = init_experiment(SPEC, [f"store_root={tmp_path / 'store'}", *data])
    exp = open_experiment(uri)
    for trial_id, value in enumerate((0.5, 0.6, 0.8)):
        _trial(exp, "proxy", trial_id, value=value)
    _trial(exp, "proxy", 3, status=TrialStatus.INFEASIBLE)
    _trial(exp, "validation", 0, ("proxy", 1), value=0.7)
    _trial(exp, "validation", 1, ("proxy", 2), value=0.9)
    _trial(exp, "final", 0, ("validation", 1), value=0.95)
    add_export(exp, "v1", saved_model)
    return exp


def add_export(exp, version, saved_model, study="final", trial_id=0):
    """What ``export_saved_model`` leaves in ``export/<version>``: the SavedModel, export.json."""
    folder = Path(exp.store.root, exp.layout.export_dir(version))
    shutil.copytree(saved_model, folder / SAVED_MODEL_DIR)
    (folder / "architecture.json").write_text(json.dumps(ARCH))
    record = ExportRecord(
        saved_model_dir=SAVED_MODEL_DIR,
        architecture_file="architecture.json",
        signatures=("serving_default", "image_tensor"),
        outputs=("logits", "probs"),
        input_size=(32, 32, 3),
        task_kind="classification",
        experiment=exp.spec.name,
        study=study,
        trial_id=trial_id,
        space="mnasnet",
        checkpoint="ckpt-2",
        metrics={},
    )
    (folder / RECORD_FILE).write_text(json.dumps(record.to_dict()))


def export_folder(exp, version) -> Path:
    return Path(exp.store.root, exp.layout.export_dir(version))


def test_handoff_json_matches_the_schema_kept_in_the_repository(experiment, monkeypatch):
    monkeypatch.setenv(RUN_ID_ENV, "run-42")
    handoff = write_handoff(experiment, "v1", image="registry.example/kfnas:0.1.0", now=T0)
    written = json.loads((export_folder(experiment, "v1") / HANDOFF_FILE).read_text())
    jsonschema.validate(written, json.loads(SCHEMA.read_text()))
    assert written["schema_version"] == SCHEMA_VERSION
    assert Handoff.from_dict(written) == handoff
    assert (handoff.model_version, handoff.created) == ("v1", "2026-01-02T03:04:05+00:00")
    assert (handoff.task_kind, handoff.num_classes, handoff.input_size) == (
        "classification",
        3,
        (32, 32, 3),
    )
    assert handoff.signatures == {
        "serving_default": {
            "inputs": {"inputs": {"dtype": "string", "shape": [None]}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": [None, 3]},
                "probs": {"dtype": "float32", "shape": [None, 3]},
            },
        },
        "image_tensor": {
            "inputs": {"inputs": {"dtype": "uint8", "shape": [None, None, None, 3]}},
            "outputs": {
                "logits": {"dtype": "float32", "shape": [None, 3]},
                "probs": {"dtype": "float32", "shape": [None, 3]},
            },
        },
    }
    metric = experiment.spec.objectives.metric
    assert handoff.metric == metric and handoff.metrics[metric] == 0.95 and handoff.reward == 0.95
    assert (handoff.latency_ms, handoff.flops, handoff.params) == (2.5, 3.0e6, 1234.0)
    assert json.loads(handoff.arch_json) == ARCH and handoff.space == "mnasnet"
    assert handoff.lineage == [
        {"study": "final", "trial_id": 0, "metric": 0.95},
        {"study": "validation", "trial_id": 1, "metric": 0.9},
        {"study": "proxy", "trial_id": 2, "metric": 0.8},
    ]
    assert (handoff.run_id, handoff.image) == ("run-42", "registry.example/kfnas:0.1.0")
    assert handoff.experiment_uri == experiment.uri and handoff.experiment == "handoff-test"
    assert handoff.files == {  # No params.yaml in this hand-made export folder.
        "saved_model": "serving/model/1",
        "architecture": "architecture.json",
        "export_record": RECORD_FILE,
        "model_card": MODEL_CARD_FILE,
        "inference_service": "serving/inferenceservice.yaml",
    }
    assert handoff.saved_model == "serving/model/1"
    assert handoff.data == dataclasses.asdict(experiment.spec.data) and handoff.data["train"]
    assert set(handoff.frameworks) >= {"python", "tensorflow", "tf-models-official", "kfnas"}
    assert all(handoff.frameworks[k] for k in ("python", "tensorflow", "tf-models-official"))
    proxy = next(s for s in handoff.search_history if s["study"] == "proxy")
    assert proxy == {
        "study": "proxy",
        "space": "mnasnet",
        "trials": 4,
        "completed": 3,
        "failed": 1,
        "best_metric": 0.8,
        "best_reward": 0.8,
    }
    assert handoff.kendall_tau == pytest.approx(1.0)  # proxy 0.6 < 0.8 and full 0.7 < 0.9


def test_model_card_covers_task_data_architecture_metrics_history_and_limits(experiment):
    handoff = write_handoff(experiment, "v1", now=T0)
    card = (export_folder(experiment, "v1") / MODEL_CARD_FILE).read_text()
    for heading in (
        "# Model card: handoff-test v1",
        "## Data used",
        "## Architecture",
        "## Metrics on the evaluation data",
        "## Latency, FLOPs and parameters",
        "## How to call it",
        "## Serving on KServe",
        "## Search history in brief",
        "## Known limits",
        "## Provenance",
    ):
        assert heading in card, heading
    assert "classification model for 3 classes on 32x32x3 images" in card
    assert handoff.data["validation"] in card
    assert "lineage final trial 0 <- validation trial 1 <- proxy trial 2" in card
    assert "MnasNetBlock(kernel_size=5, output_filters=80)" in card
    assert "| latency (ms, batch 1, median on the latency device) | 2.50 |" in card
    assert "| FLOPs (M multiply-adds, batch 1) | 3.0 |" in card
    assert "| parameters | 1,234 |" in card
    assert "| proxy | `mnasnet` | 4 | 3 | 1 | 0.8000 | 0.8000 |" in card
    assert "Kendall's tau of proxy vs full-training" in card and "1.000" in card
    assert "`inputs` uint8 [?, ?, ?, 3]" in card
    assert "KFP run id | none recorded" in card


class RecordingStore(LocalStore):
    """A local store that remembers the order of its writes."""

    def __init__(self, root):
        super().__init__(root)
        self.writes: list[str] = []

    def write_bytes(self, path, data, *, if_absent=False):
        self.writes.append(path)
        super().write_bytes(path, data, if_absent=if_absent)

    def write_if_generation(self, path, data, generation):
        self.writes.append(path)
        return super().write_if_generation(path, data, generation)


def test_latest_moves_only_after_the_version_is_written_and_versions_stay(experiment, saved_model):
    store = RecordingStore(experiment.store.root)
    exp = dataclasses.replace(experiment, store=store)
    layout: ExperimentLayout = exp.layout
    assert not store.exists(layout.export_latest())
    write_handoff(exp, "v1", now=T0)
    assert store.writes == [
        layout.inference_service("v1"),
        layout.model_card("v1"),
        layout.handoff_json("v1"),
        layout.export_latest(),
    ]
    assert json.loads(store.read_text(layout.export_latest()))["version"] == "v1"

    add_export(exp, "v2", saved_model)
    store.writes.clear()
    write_handoff(exp, "v2", now=T0 + datetime.timedelta(hours=1))
    assert store.writes[-1] == layout.export_latest()
    assert read_handoff(store.uri(layout.export_latest())).model_version == "v2"
    assert read_handoff(store.uri(layout.exports_dir())).model_version == "v2"
    for version in ("v1", "v2"):  # Earlier versions stay whole.
        folder = export_folder(exp, version)
        assert {p.name for p in folder.iterdir()} >= {"serving", RECORD_FILE, HANDOFF_FILE}
        assert read_handoff(str(folder)).model_version == version
        assert read_handoff(str(folder / HANDOFF_FILE)).model_version == version

    # Running the export step of v1 again (a resumed pipeline) keeps its manifest and never
    # moves latest back to it.
    again = write_handoff(exp, "v1", now=T0 + datetime.timedelta(days=1))
    assert again.created == "2026-01-02T03:04:05+00:00"
    assert read_handoff(store.uri(layout.export_latest())).model_version == "v2"


def test_a_run_stopped_before_moving_latest_is_completed_on_resume(experiment):
    first = write_handoff(experiment, "v1", now=T0)
    pointer = Path(experiment.store.root, experiment.layout.export_latest())
    pointer.unlink()
    assert write_handoff(experiment, "v1", now=T0 + datetime.timedelta(days=1)) == first
    assert json.loads(pointer.read_text())["version"] == "v1"


def test_write_refuses_a_version_without_a_finished_export(experiment):
    with pytest.raises(HandoffNotFoundError, match=r"no finished export \(export.json missing\)"):
        write_handoff(experiment, "v9")


def test_read_refuses_a_uri_with_nothing_exported(experiment, tmp_path):
    write_handoff(experiment, "v1", now=T0)
    missing = experiment.store.uri(experiment.layout.export_dir("v7"))
    with pytest.raises(HandoffNotFoundError) as caught:
        read_handoff(missing)
    message = str(caught.value)
    assert f"no model handoff at {missing}/handoff.json: handoff.json does not exist" in message
    assert "versions in" in message and "v1" in message and "export/latest" in message
    with pytest.raises(HandoffNotFoundError, match="no model exported yet"):
        read_handoff(str(tmp_path / "empty" / "export" / "latest"))


def _rewrite(exp, change):
    path = export_folder(exp, "v1") / HANDOFF_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return str(export_folder(exp, "v1"))


def test_read_refuses_a_newer_schema_version(experiment):
    write_handoff(experiment, "v1", now=T0)
    uri = _rewrite(experiment, lambda d: d.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(HandoffError, match=r"newer than 2 .* written by a newer kfnas; upgrade"):
        read_handoff(uri)


@pytest.mark.parametrize("version", [None, "1", 0, True])
def test_read_refuses_an_unknown_schema_version(experiment, version):
    write_handoff(experiment, "v1", now=T0)
    uri = _rewrite(experiment, lambda d: d.update(schema_version=version))
    with pytest.raises(HandoffError, match=r"no valid schema_version .* not a kfnas handoff"):
        read_handoff(uri)


def test_read_refuses_a_manifest_the_schema_refuses(experiment):
    write_handoff(experiment, "v1", now=T0)
    uri = _rewrite(experiment, lambda d: d["signatures"].pop("serving_default"))
    with pytest.raises(HandoffError, match="does not match the handoff schema: at signatures"):
        read_handoff(uri)
    uri = _rewrite(experiment, lambda d: d.update(surprise=1))
    with pytest.raises(HandoffError, match="does not match the handoff schema"):
        read_handoff(uri)


def test_latest_is_a_reserved_version_name():
    with pytest.raises(ValueError, match="'latest' is reserved"):
        ExperimentLayout("exp").export_dir("latest")
    assert ExperimentLayout("exp").export_latest() == "exp/export/latest"
