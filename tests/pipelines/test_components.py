"""KFP components: one versioned image, the Dockerfile behind it, thin bodies over the stages."""

import dataclasses
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kfnas import stages
from kfnas.components import COMPONENTS
from kfnas.components._image import DEFAULT_REGISTRY, IMAGE, REGISTRY_ENV
from kfnas.config.settings import ExperimentSettings
from kfnas.version import __version__

ROOT = Path(__file__).parents[2]


def test_every_stage_of_the_pipeline_has_a_component():
    assert set(COMPONENTS) == {
        "init_experiment",
        "search_study",
        "run_trial",
        "launch_trial",
        "measure_trials",
        "select_top",
        "propose_retraining",
        "select_winner",
        "report",
        "export_model",
        "init_retraining",
        "publish_if_not_worse",
        "init_variance",
        "variance_report",
        "init_model_selection",
        "select_models",
        "init_proxy_search",
        "search_proxy_tasks",
    }


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_runs_on_the_versioned_image_without_installing_kfp(name):
    container = COMPONENTS[name].component_spec.implementation.container
    assert container.image == IMAGE
    assert IMAGE.endswith(f"/kfnas:{__version__}")
    assert "pip install" not in " ".join(container.command)  # install_kfp_package=False


def test_image_registry_comes_from_the_environment_at_compile_time():
    code = (
        "from kfnas.components import run_trial; "
        "print(run_trial.component_spec.implementation.container.image)"
    )
    env = {**os.environ, REGISTRY_ENV: "registry.example.com/team/"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"registry.example.com/team/kfnas:{__version__}"
    if REGISTRY_ENV not in os.environ:
        assert f"{DEFAULT_REGISTRY}/kfnas:{__version__}" == IMAGE


def _stage_parameters(name):
    """The stage's parameters as the component shows them (``x_path`` -> output artifact ``x``).

    Keyword-only parameters are for callers in this process (a poll interval, a log callback).
    """
    params = inspect.signature(getattr(stages, name)).parameters.values()
    inputs, artifacts = set(), set()
    for p in params:
        if p.kind is p.KEYWORD_ONLY:
            continue
        if p.kind is p.VAR_KEYWORD:  # init_experiment's **settings
            inputs |= {f.name for f in dataclasses.fields(ExperimentSettings)}
        elif p.name.endswith("_path"):
            artifacts.add(p.name.removesuffix("_path"))
        else:
            inputs.add(p.name)
    return inputs, artifacts


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_parameters_are_its_stages(name):
    spec = COMPONENTS[name].component_spec
    inputs, artifacts = _stage_parameters(name)
    assert set(spec.inputs or {}) == inputs
    assert artifacts <= set(spec.outputs or {})


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_component_body_only_delegates_to_its_stage(name):
    source = textwrap.dedent(inspect.getsource(COMPONENTS[name].python_func))
    body = source.split('"""')[2]  # after the docstring
    lines = [line for line in body.splitlines() if line.strip()]
    assert len(lines) <= 10, lines
    assert "from kfnas import stages" in body
    assert f"stages.{name}(" in body


def _dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [line.split(None, 1) for line in lines if line and not line.startswith("#")]


def test_dockerfile_builds_kfnas_on_the_pinned_tensorflow_gpu_image():
    instructions = _dockerfile_instructions()
    base = [arg for op, arg in instructions if op == "FROM"]
    pin = re.search(r"^tensorflow==(\S+)$", (ROOT / "images/constraints.txt").read_text(), re.M)
    assert base == [f"tensorflow/tensorflow:{pin.group(1)}-gpu"]
    copied = {arg.split()[0] for op, arg in instructions if op == "COPY"}
    assert {"src", "components", "pipelines", "pyproject.toml"} <= copied
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install -c images/constraints.txt ." in runs
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    env = " ".join(arg for op, arg in instructions if op == "ENV").split()
    assert "TF_USE_LEGACY_KERAS=1" in env  # tf.keras is tf_keras; Keras 3 is never loaded
