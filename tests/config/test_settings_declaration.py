"""The run settings are declared once (``kfnas.config.settings.ExperimentSettings``).

The signatures KFP reads from source (the ``init_experiment`` component's and the search
pipeline's) are written out; these tests check them, and the compiled pipeline's parameters,
against the declaration: names, types, defaults and descriptions.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from kfnas.components import init_experiment
from kfnas.config.settings import ExperimentSettings, run_parameters
from kfnas.pipelines.compile import compile_pipeline
from kfnas.pipelines.parameters import pipeline_parameters
from kfnas.pipelines.search import parameter_descriptions

KFP_TYPES = {"str": "STRING", "int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE"}
TRIALS_PER_ROUND, TOP_K = 4, 2


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("declared") / "search.yaml"
    compile_pipeline("gke-gpu", 2, TRIALS_PER_ROUND, 2, TOP_K, path)
    return pipeline_parameters(Path(path).read_text())


def test_every_setting_is_a_parameter_of_init_experiment_with_its_type():
    parameters = inspect.signature(init_experiment.python_func).parameters
    declared = {field.name: field.type for field in dataclasses.fields(ExperimentSettings)}
    written = {
        name: parameter.annotation.__name__
        for name, parameter in parameters.items()
        if name not in ("spec_yaml", "overrides")
    }
    assert written == declared


def test_the_compiled_pipeline_shows_each_run_setting_as_declared(compiled: dict):
    assert set(compiled) == set(parameter_descriptions())
    compile_time = {"trials_per_round": TRIALS_PER_ROUND, "rounds": 2}
    for field in run_parameters():
        parameter = compiled[field.name]
        assert parameter.type == KFP_TYPES[field.type], field.name
        assert parameter.default == compile_time.get(field.name, field.default), field.name
        assert parameter.description == field.metadata["help"], field.name


def test_every_declared_setting_has_a_description_and_an_unset_default():
    for field in dataclasses.fields(ExperimentSettings):
        assert field.metadata["help"].strip(), field.name
        assert not field.default, field.name
