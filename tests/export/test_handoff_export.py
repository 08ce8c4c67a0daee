"""The export step's handoff package on a really trained trial, through the stage and component.

The session's shared trial (``exported_detection`` in ``tests/shared_fixtures.py``: a proxy-sized
RetinaNet proposed, trained 2 steps and exported by ``stages.export_model``); the tests check the
``handoff.json`` it wrote against the repository's JSON schema and against the SavedModel itself,
the ``latest`` pointer, and the metadata the KFP component puts on its ``Model`` artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import EXPORT_IMAGE, EXPORT_RUN_ID

from kfnas.export.handoff import HANDOFF_FILE, MODEL_CARD_FILE, read_handoff

pytestmark = pytest.mark.tf

SCHEMA = Path(__file__).parents[2] / "schemas" / "handoff.schema.json"


@pytest.fixture(scope="module")
def exported(exported_detection):
    """The shared experiment's one proxy trial, trained and exported as ``v1`` by the stage."""
    return exported_detection


def test_export_step_writes_a_handoff_that_matches_the_schema(exported):
    written = json.loads((exported.folder / HANDOFF_FILE).read_text())
    jsonschema.validate(written, json.loads(SCHEMA.read_text()))
    handoff = read_handoff(str(exported.folder))
    assert (handoff.model_version, handoff.study) == ("v1", "proxy")
    assert handoff.trial_id == exported.trial_id
    assert (handoff.run_id, handoff.image) == (EXPORT_RUN_ID, EXPORT_IMAGE)
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
        "inference_service",
    }
    assert handoff.saved_model == handoff.files["saved_model"] == "serving/model/1"
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
    assert model.metadata["run_id"] == EXPORT_RUN_ID  # Recorded by the first export, kept.
    json.dumps(model.metadata, allow_nan=False)  # KFP stores it as a JSON struct.
