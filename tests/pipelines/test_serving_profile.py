"""A cluster profile's ``serving`` section: parsed strictly, and compiled into the export steps.

The section says how KServe serves the exported model (``kfnas.export.kserve``); the pipelines
pass it, as JSON, to ``export_model`` and ``publish_if_not_worse`` as their ``serving`` argument.
``tests/export/test_kserve.py`` checks the manifest an export writes from it.
"""

import json
import re

import pytest
import yaml

from kfnas.export.kserve import DEFAULT_CPU, DEFAULT_MEMORY, ServingSettings
from kfnas.launch.k8s_manifest import PvcMount
from kfnas.pipelines.compile import compile_pipeline, compile_retraining
from kfnas.pipelines.profiles import (
    ProfileError,
    load_profile,
    parse_profile,
    profile_names,
    serving_argument,
    serving_settings,
)

GOOD = """
name: test
steps:
  trial: {accelerator: {type: nvidia.com/gpu}}
  training: {}
  light: {}
  export: {volumes: {pvcs: [{claim: store, mount_path: /mnt/store}]}}
"""
SERVING = """
serving:
  runtime: kserve-tensorflow-serving
  runtime_version: 2.19.0-gpu
  min_replicas: 0
  max_replicas: 4
  accelerator: {type: nvidia.com/gpu, count: 1}
  resources: {cpu_request: "2", cpu_limit: "4", memory_request: 4Gi, memory_limit: 8Gi}
  node_selector: {pool: serving}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  service_account: kfnas-serving
"""


def test_a_serving_section_parses_into_the_export_steps_settings():
    profile = parse_profile(GOOD + SERVING)
    settings = serving_settings(profile)
    assert settings.resources() == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
    }
    assert (settings.runtime, settings.runtime_version) == (
        "kserve-tensorflow-serving",
        "2.19.0-gpu",
    )
    assert (settings.min_replicas, settings.max_replicas) == (0, 4)
    assert settings.node_selector == {"pool": "serving"}
    assert [t.key for t in settings.tolerations] == ["nvidia.com/gpu"]
    assert settings.service_account == "kfnas-serving"
    assert settings.pvcs == [PvcMount("store", "/mnt/store")]  # the export section's mounts
    assert settings.source == "cluster profile 'test', serving section"
    assert ServingSettings.from_json(serving_argument(profile)) == settings


def test_without_a_serving_section_the_defaults_are_used_and_said():
    settings = serving_settings(parse_profile(GOOD))
    assert settings.resources() == {
        "requests": {"cpu": DEFAULT_CPU, "memory": DEFAULT_MEMORY},
        "limits": {"cpu": DEFAULT_CPU, "memory": DEFAULT_MEMORY},
    }
    assert "has no serving section: kfnas defaults" in settings.source
    assert serving_settings(None) is None and serving_argument(None) == ""


@pytest.mark.parametrize("name", profile_names())
def test_the_built_in_profiles_serve_on_their_latency_target(name):
    profile = load_profile(name)
    assert profile.serving is not None, name
    settings = serving_settings(profile)
    assert settings.problems() == []
    assert settings.runtime == "kserve-tensorflow-serving"
    latency = profile.step("latency")  # served where latency was measured
    assert (settings.accelerator_count > 0) == (latency.accelerator is not None), name
    assert settings.node_selector == latency.node_selector or name == "cpu-only", name
    resources = settings.resources()
    section = profile.serving.resources
    assert resources["requests"] == {"cpu": section.cpu_request, "memory": section.memory_request}
    assert resources["limits"]["memory"] == section.memory_limit


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            'serving: {resources: {cpu_request: "-1"}}',
            "serving.resources.cpu_request '-1' is not a quantity like '4' or '500m'",
        ),
        (
            "serving: {cpu: 2}",
            "unknown key 'serving.cpu'; valid keys of serving: runtime, runtime_version",
        ),
        (
            "serving: {min_replicas: 3, max_replicas: 1}",
            "serving.max_replicas 1 is below serving.min_replicas 3 (or 1): raise max_replicas "
            "to at least 3",
        ),
        ("serving: {min_replicas: -1}", "serving.min_replicas must be >= 0"),
        (
            'serving: {resources: {cpu_request: "2", cpu_limit: "1"}}',
            "serving.resources.cpu_limit '1' is below serving.resources.cpu_request '2': raise "
            "the limit or lower the request",
        ),
        (
            "serving: {accelerator: {type: gpu}}",
            "serving.accelerator.type 'gpu' is not an extended resource name",
        ),
        ("serving: {accelerator: {type: nvidia.com/gpu, count: 0}}", "count must be >= 1"),
        ("serving: {runtime: TF Serving}", "serving.runtime 'TF Serving' is not a valid name"),
        (
            "serving: {tolerations: [{operator: Exists, value: x}]}",
            "serving.tolerations.0: operator Exists takes no value",
        ),
    ],
)
def test_a_bad_serving_section_is_refused_naming_the_key_and_the_fix(section, message):
    with pytest.raises(ProfileError, match=re.escape(message)) as e:
        parse_profile(GOOD + section + "\n", source="my-profile.yaml")
    assert str(e.value).startswith("my-profile.yaml")


def _serving_inputs(path, display_name):
    """The ``serving`` constant of the step named ``display_name`` in a compiled pipeline."""
    spec = next(yaml.safe_load_all(path.read_text()))

    def tasks(dag):
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            yield task
            if "dag" in component:
                yield from tasks(component["dag"])

    (serving,) = [  # the step, not the sub-pipeline of the same display name around it
        t["inputs"]["parameters"]["serving"]
        for t in tasks(spec["root"]["dag"])
        if t["taskInfo"]["name"] == display_name and "serving" in t["inputs"]["parameters"]
    ]
    return serving["runtimeValue"]["constant"]


def test_the_pipelines_pass_the_section_to_their_export_steps(tmp_path):
    profile = load_profile("gke-gpu")
    search = compile_pipeline(profile, 1, 1, 1, 1, tmp_path / "search.yaml")
    assert _serving_inputs(search, "export") == serving_argument(profile)
    retraining = compile_retraining(profile, tmp_path / "retraining.yaml")
    constant = _serving_inputs(retraining, "publish if not worse")
    assert json.loads(constant)["source"] == "cluster profile 'gke-gpu', serving section"
    local = compile_pipeline(None, 1, 1, 1, 1, tmp_path / "local.yaml")
    assert _serving_inputs(local, "export") == ""  # no profile: the stage's defaults
