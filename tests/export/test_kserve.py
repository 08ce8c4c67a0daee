"""The KServe handoff: each export's ``serving/inferenceservice.yaml``, served as TF Serving would.

The session's shared trial (``exported_detection`` in ``tests/shared_fixtures.py``: a proxy-sized
RetinaNet trained 2 steps and exported as ``v1`` by the export stage, without a cluster profile)
wrote its manifest with kfnas's default resources. The tests check it against the fields KServe
v1beta1 requires, then do what KServe and TF Serving do with it: take ``storageUri``, list its
numbered version folders, load the highest, and answer a REST request built as the model card
says (the signature the manifest names, an image of the validation data base64-encoded). Another
export of the same trial, on a copy of the store, goes through the stage with the ``serving``
argument a pipeline compiled with the ``gke-gpu`` profile passes, so the profile's serving
section reaches the manifest. No model is trained here.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from shared_fixtures import copy_experiment

from kfnas.export.handoff import HANDOFF_FILE, MODEL_CARD_FILE, read_handoff
from kfnas.export.kserve import (
    ANNOTATION_INPUTS,
    ANNOTATION_SIGNATURE,
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    INFERENCE_SERVICE_FILE,
    MAX_NAME_LENGTH,
    ServingSettings,
    inference_service,
    is_service_name,
    service_name,
    storage_uri,
)
from kfnas.launch.k8s_manifest import PvcMount

pytestmark = pytest.mark.tf

#: A DNS-1123 label as KServe wants an InferenceService name: it must start with a letter.
DNS_1123_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DEFAULTS = {
    "requests": {"cpu": DEFAULT_CPU, "memory": DEFAULT_MEMORY},
    "limits": {"cpu": DEFAULT_CPU, "memory": DEFAULT_MEMORY},
}
MAX_DETECTIONS = 10


def load_manifest(folder: Path) -> dict:
    return yaml.safe_load((folder / INFERENCE_SERVICE_FILE).read_text())


def check_kserve_fields(doc: dict) -> dict:
    """What KServe v1beta1 requires of an InferenceService for the tensorflow model format."""
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert doc["kind"] == "InferenceService"
    name = doc["metadata"]["name"]
    assert DNS_1123_LABEL.match(name) and len(name) <= MAX_NAME_LENGTH, name
    assert all(isinstance(v, str) for v in doc["metadata"]["annotations"].values())
    predictor = doc["spec"]["predictor"]
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert isinstance(model["storageUri"], str) and model["storageUri"]
    assert set(model["resources"]) == {"requests", "limits"}
    for quantities in model["resources"].values():  # Kubernetes quantities are strings
        assert all(isinstance(q, str) for q in quantities.values()), quantities
    return model


def tf_serving_load(base_path: str):
    """What TF Serving does with ``--model_base_path``: load the highest numbered version."""
    import tensorflow as tf

    versions = [p for p in Path(base_path).iterdir() if p.is_dir() and p.name.isdigit()]
    assert versions, f"{base_path} holds no numbered version folder"
    return tf.saved_model.load(str(max(versions, key=lambda p: int(p.name))))


def tf_serving_predict(loaded, body: dict) -> dict:
    """A REST ``:predict`` in the row format: ``{"b64": ...}`` is binary, one row per instance."""
    import tensorflow as tf

    function = loaded.signatures[body.get("signature_name", "serving_default")]
    ((key, spec),) = function.structured_input_signature[1].items()
    rows = [
        base64.b64decode(i["b64"]) if isinstance(i, dict) and set(i) == {"b64"} else i
        for i in body["instances"]
    ]
    outputs = {k: v.numpy() for k, v in function(**{key: tf.constant(rows, spec.dtype)}).items()}
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(len(rows))]}


def validation_png(files) -> bytes:
    import tensorflow as tf

    record = next(iter(tf.data.TFRecordDataset(files.validation[0])))
    example = tf.train.Example.FromString(record.numpy())
    return example.features.feature["image/encoded"].bytes_list.value[0]


def card_request(card: str) -> dict:
    """The example request body the model card shows (its JSON block)."""
    return json.loads(card.split("```json\n", 1)[1].split("\n```", 1)[0])


def test_each_export_writes_an_inference_service_kserve_accepts(exported_detection):
    folder, exp = exported_detection.folder, exported_detection.experiment
    doc = load_manifest(folder)
    model = check_kserve_fields(doc)
    handoff = read_handoff(str(folder))
    assert handoff.files["inference_service"] == INFERENCE_SERVICE_FILE
    assert doc["metadata"]["name"] == "shared-detection"  # one name for every version
    # The store URI of the folder holding the numbered version of the handoff's SavedModel.
    assert model["storageUri"] == exp.store.uri(f"{exp.layout.export_dir('v1')}/serving/model")
    assert Path(model["storageUri"], "1") == folder / handoff.saved_model
    assert model["resources"] == DEFAULTS  # exported without a profile: kfnas's defaults
    annotations = doc["metadata"]["annotations"]
    assert annotations[ANNOTATION_SIGNATURE] == "serving_default"
    assert annotations[ANNOTATION_INPUTS] == "encoded-images"
    outputs = handoff.signatures["serving_default"]["outputs"]
    assert annotations["kfnas.io/outputs"].split(",") == list(outputs)
    assert annotations["kfnas.io/model-version"] == "v1"
    assert annotations["kfnas.io/handoff"] == str(folder / HANDOFF_FILE)

    text = (folder / INFERENCE_SERVICE_FILE).read_text()
    assert "kfnas defaults (1 CPU, 2Gi memory" in text
    assert "WARNING: storageUri" in text and "KServe cannot download" in text  # a local store
    card = (folder / MODEL_CARD_FILE).read_text()
    assert f"kubectl apply -n <namespace> -f {folder / INFERENCE_SERVICE_FILE}" in card
    assert "/v1/models/shared-detection:predict" in card
    assert card_request(card)["signature_name"] == "serving_default"
    assert "**Warning:** storageUri" in card and "gs://, s3:// or pvc://" in card


def test_tf_serving_serves_the_named_signature_from_the_storage_uri(exported_detection):
    folder = exported_detection.folder
    doc = load_manifest(folder)
    loaded = tf_serving_load(doc["spec"]["predictor"]["model"]["storageUri"])
    signature = doc["metadata"]["annotations"][ANNOTATION_SIGNATURE]
    assert signature in loaded.signatures

    body = card_request((folder / MODEL_CARD_FILE).read_text())  # the request the card shows
    assert body["signature_name"] == signature
    png = base64.b64encode(validation_png(exported_detection.data)).decode()
    body["instances"] = [{"b64": png}, {"b64": png}]
    (one, two) = tf_serving_predict(loaded, json.loads(json.dumps(body)))["predictions"]

    outputs = read_handoff(str(folder)).signatures[signature]["outputs"]
    assert set(one) == set(outputs)
    for key, recorded in outputs.items():  # the recorded shapes, without the batch axis
        assert list(one[key].shape) == [d for d in recorded["shape"][1:]], key
    assert one["detection_boxes"].shape == (MAX_DETECTIONS, 4)
    assert 0 < one["num_detections"] <= MAX_DETECTIONS
    np.testing.assert_allclose(one["detection_scores"], two["detection_scores"], rtol=1e-5)


def test_a_profile_serving_section_reaches_the_manifest(exported_detection, tmp_path):
    """The stage with the ``serving`` argument a pipeline compiled with ``gke-gpu`` passes."""
    from kfnas import stages
    from kfnas.pipelines.profiles import load_profile, serving_argument

    copy = copy_experiment(exported_detection, tmp_path)
    exp = copy.experiment
    v1 = Path(exp.store.uri(exp.layout.export_dir("v1")))
    v2 = Path(exp.store.uri(exp.layout.export_dir("v2")))
    shutil.copytree(v1, v2)  # A finished export of v2 whose handoff is still to be written.
    for name in (HANDOFF_FILE, MODEL_CARD_FILE, INFERENCE_SERVICE_FILE, "export_claim.json"):
        (v2 / name).unlink(missing_ok=True)

    profile = load_profile("gke-gpu")
    uri = stages.export_model(
        copy.uri, "proxy", copy.trial_id, "v2", serving=serving_argument(profile)
    )
    assert uri == str(v2)
    doc = load_manifest(v2)
    model = check_kserve_fields(doc)
    section = profile.serving
    assert model["resources"] == {
        "requests": {
            "cpu": section.resources.cpu_request,
            "memory": section.resources.memory_request,
        },
        "limits": {
            "cpu": section.resources.cpu_limit,
            "memory": section.resources.memory_limit,
            section.accelerator.type: str(section.accelerator.count),
        },
    }
    assert model["runtime"] == section.runtime
    assert model["storageUri"] == exp.store.uri(f"{exp.layout.export_dir('v2')}/serving/model")
    predictor = doc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        section.min_replicas,
        section.max_replicas,
    )
    assert predictor["nodeSelector"] == section.node_selector
    assert predictor["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert doc["metadata"]["annotations"]["kfnas.io/model-version"] == "v2"
    text = (v2 / INFERENCE_SERVICE_FILE).read_text()
    assert "Resources: from cluster profile 'gke-gpu', serving section." in text
    assert read_handoff(str(v2)).files["inference_service"] == INFERENCE_SERVICE_FILE


def test_bad_serving_settings_fail_the_export_step_before_it_exports(exported_detection, tmp_path):
    from kfnas import stages

    copy = copy_experiment(exported_detection, tmp_path)
    with pytest.raises(ValueError, match=r"unknown key 'serving\.gpu'"):
        stages.export_model(copy.uri, "proxy", copy.trial_id, "v3", serving='{"gpu": 1}')
    with pytest.raises(ValueError, match=r"serving\.cpu_request '-1' is negative"):
        stages.export_model(copy.uri, "proxy", copy.trial_id, "v3", serving='{"cpu_request": "-1"}')
    assert not Path(copy.experiment.store.uri(copy.experiment.layout.export_dir("v3"))).exists()


def test_an_unnumbered_saved_model_is_flagged(exported_detection):
    """An export of an earlier release (``saved_model/``) still gets a manifest, with a warning."""
    handoff = read_handoff(str(exported_detection.folder))
    old = dataclasses.replace(handoff, saved_model="saved_model")
    service = inference_service(old, "gs://b/nas/exp/export/v1/saved_model")
    assert service.storage_uri == "gs://b/nas/exp/export/v1/saved_model"
    (warning,) = service.warnings
    assert "not in a numbered folder" in warning and "<storageUri>/1/" in warning


@pytest.mark.parametrize(
    ("experiment", "name"),
    [
        ("shared-detection", "shared-detection"),
        ("My_Experiment", "my-experiment"),
        ("2024_run", "kfnas-2024-run"),
        ("_a__b_", "a-b"),
        ("---", "kfnas"),
    ],
)
def test_service_names_are_dns_1123_labels(experiment, name):
    assert service_name(experiment) == name
    assert is_service_name(name) and DNS_1123_LABEL.match(name)


def test_long_experiment_names_are_cut_and_kept_apart():
    first, second = service_name("a" * 80 + "_1"), service_name("a" * 80 + "_2")
    assert first != second
    for name in (first, second):
        assert len(name) == MAX_NAME_LENGTH and DNS_1123_LABEL.match(name)


@pytest.mark.parametrize(
    ("uri", "pvcs", "expected"),
    [
        ("gs://b/nas/e/export/v1/serving/model", [], "gs://b/nas/e/export/v1/serving/model"),
        ("s3://b/e/export/v1/serving/model", [], "s3://b/e/export/v1/serving/model"),
        (
            "/mnt/kfnas/store/e/export/v1/serving/model",
            [PvcMount("kfnas-data", "/mnt/kfnas")],
            "pvc://kfnas-data/store/e/export/v1/serving/model",
        ),
        (
            "/mnt/kfnas/store/e/export/v1/serving/model",
            [PvcMount("other", "/data"), PvcMount("kfnas-data", "/mnt/kfnas/", "team-a")],
            "pvc://kfnas-data/team-a/store/e/export/v1/serving/model",
        ),
        ("/tmp/store/e/export/v1/serving/model", [PvcMount("kfnas-data", "/mnt/kfnas")], None),
    ],
)
def test_the_storage_uri_is_one_kserve_downloads(uri, pvcs, expected):
    assert storage_uri(uri, pvcs) == (expected or uri)


def test_settings_round_trip_and_fill_unset_resources():
    settings = ServingSettings(cpu_request="2", memory_limit="8Gi")
    assert ServingSettings.from_json(settings.to_json()) == settings
    assert settings.resources() == {  # an unset request is its limit, and the reverse
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    problems = ServingSettings(cpu_request="2", cpu_limit="1", max_replicas=0).problems()
    assert any("serving.cpu_limit '1' is below serving.cpu_request '2'" in p for p in problems)
    assert any("serving.max_replicas 0 is below serving.min_replicas 1" in p for p in problems)
