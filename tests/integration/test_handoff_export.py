"""The export step's handoff package on a really trained trial, through the stage and component.

One proxy-sized RetinaNet trial (as in ``test_export.py``) is proposed, trained 2 steps and exported
by ``stages.export_model`` once for the module; the tests check the ``handoff.json`` it wrote
against the repository's JSON schema and against the SavedModel itself, the ``latest`` pointer,
and the metadata the KFP component puts on its ``Model`` artifact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jsonschema
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas import stages
from kfnas.data import write_detection_dataset
from kfnas.export.handoff import HANDOFF_FILE, MODEL_CARD_FILE, read_handoff
from kfnas.store import Experiment, open_experiment

pytestmark = pytest.mark.tf

SCHEMA = Path(__file__).parents[2] / "schemas" / "handoff.schema.json"
SPEC = """
name: handoff-export
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 2,
            pre_nms_score_threshold: 0.0, max_num_detections: 10}
studies:
  proxy: {space: spinenet_mbconv, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
"""


@dataclasses.dataclass(frozen=True)
class Exported:
    uri: str
    trial_id: int
    folder: Path
    experiment: Experiment


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The experiment's one proxy trial, trained and exported as ``v1`` by the stage."""
    root = tmp_path_factory.mktemp("handoff")
    files = write_detection_dataset(root / "data", num_train=4, num_validation=2)
    data = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
    uri = stages.init_experiment(SPEC, [f"store_root={root / 'store'}", *data])
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    assert result.completed, result.error
    folder = stages.export_model(uri, "proxy", trial_id, "v1", run_id="run-7", image="reg/kfnas:9")
    return Exported(uri, trial_id, Path(folder), open_experiment(uri))


def test_export_step_writes_a_handoff_that_matches_the_schema(exported):
    written = json.loads((exported.folder / HANDOFF_FILE).read_text())
    jsonschema.validate(written, json.loads(SCHEMA.read_text()))
    handoff = read_handoff(str(exported.folder))
    assert (handoff.model_version, handoff.study) == ("v1", "proxy")
    assert handoff.trial_id == exported.trial_id
    assert (handoff.run_id, handoff.image) == ("run-7", "reg/kfnas:9")
    step = {"study": "proxy", "trial_id": exported.trial_id, "metric": handoff.metrics["AP"]}
    assert handoff.lineage == [step]
    trial = exported.experiment.records.read_spec("proxy", exported.trial_id)
    assert handoff.arch_json == trial.arch_json
    assert (exported.folder / "architecture.json").read_text() == trial.arch_json
    assert handoff.latency_ms > 0 and handoff.flops > 0 and handoff.params > 0
    for relative in handoff.files.values():
        assert (exported.folder / relative).exists(), relative
    assert set(handoff.files) == {
        "saved_model",
        "architecture",
        "export_record",
        "model_card",
        "task_config",
    }
    card = (exported.folder / MODEL_CARD_FILE).read_text()
    assert "A detection model for 3 classes on 64x64x3 images" in card
    assert "`detection_boxes` float32 [?, 10, 4]" in card


def test_handoff_signatures_are_those_of_the_saved_model(exported):
    import tensorflow as tf

    handoff = read_handoff(str(exported.folder))
    loaded = tf.saved_model.load(str(exported.folder / handoff.saved_model))
    assert set(handoff.signatures) == set(loaded.signatures) == {"serving_default", "image_tensor"}
    for name, function in loaded.signatures.items():
        _, inputs = function.structured_input_signature
        outputs = function.structured_outputs
        for recorded, specs in (
            (handoff.signatures[name]["inputs"], inputs),
            (handoff.signatures[name]["outputs"], outputs),
        ):
            assert recorded == {
                key: {"dtype": spec.dtype.name, "shape": spec.shape.as_list()}
                for key, spec in specs.items()
            }


def test_latest_names_the_export_and_the_component_fills_the_model_metadata(exported):
    from kfp import dsl

    from kfnas.components.export_model import export_model

    layout, store = exported.experiment.layout, exported.experiment.store
    assert read_handoff(store.uri(layout.export_latest())).model_version == "v1"
    model = dsl.Model(name="model", uri=str(exported.folder.parent / "kfp-model"), metadata={})
    # The export is finished, so the component's stage call returns at once.
    uri = export_model.python_func(
        experiment_uri=exported.uri,
        study="proxy",
        trial_id=exported.trial_id,
        version="v1",
        model=model,
    )
    assert uri == str(exported.folder)
    handoff = read_handoff(uri).to_dict()
    assert model.metadata == {**handoff, "store_uri": uri, "version": "v1"}
    assert model.metadata["run_id"] == "run-7"  # Recorded by the first export, kept.
    json.dumps(model.metadata, allow_nan=False)  # KFP stores it as a JSON struct.
