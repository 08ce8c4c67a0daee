"""A user's own search space, defined only here, named as ``module:object`` like a built-in one.

The module is written to a temporary folder on ``sys.path`` (in a pipeline, the user's package
installed in the image): the CLI shows and validates it, a spec names it, the pipeline's ``space``
parameter (``init_experiment(..., space=...)``, what the init step runs) selects it, and one real
trial trains a RetinaNet around its backbone. A module that cannot be imported, or an object that
is not a search space, is refused before any trial with a message that says what to change.
"""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.cli import main
from kfnas.config.spec import SpecError
from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialStatus
from kfnas.stages import init_experiment, propose_trials, run_trial
from kfnas.store import open_experiment

MODULE = "my_team_spaces"
SPACE = f"{MODULE}:TINY_BACKBONES"

SPACE_SOURCE = textwrap.dedent(
    '''
    """A team's own space: width and depth of a plain strided-conv backbone, levels 3..5."""

    import dataclasses

    import pyglove as pg

    from kfnas.spaces.base import Network


    @dataclasses.dataclass(frozen=True)
    class TinyBackbones:
        name: str = "tiny_backbones"
        tasks: tuple = ("detection",)

        def hyper(self):
            return pg.Dict(width=pg.oneof([8, 16]), depth=pg.oneof([1, 2]))

        def reference(self):
            return pg.Dict(width=16, depth=1)

        def task_problems(self, task):
            if task.options.get("max_level", 7) > 5:
                return ["this backbone stops at level 5: set task.options.max_level to 5"]
            return []

        def build_network(self, arch, task, input_specs):
            import tf_keras

            inputs = tf_keras.Input(shape=input_specs.shape[1:])
            x, features = inputs, {}
            for level in range(1, 6):
                for repeat in range(arch["depth"]):
                    x = tf_keras.layers.Conv2D(
                        arch["width"], 3, strides=2 if repeat == 0 else 1, padding="same",
                        activation="relu",
                    )(x)
                if level >= 3:
                    features[str(level)] = tf_keras.layers.Conv2D(16, 1)(x)
            backbone = tf_keras.Model(inputs, features)
            backbone.output_specs = {k: v.shape for k, v in features.items()}
            return Network(backbone=backbone)


    TINY_BACKBONES = TinyBackbones()
    NOT_A_SPACE = {"width": [8, 16]}
    '''
)

SPEC = """
name: custom-space
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, head_num_convs: 1, head_num_filters: 16}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: random}
budget: {rounds: 1, trials_per_round: 1, train_steps: 3, batch_size: 2, latency_runs: 5}
measurement: {min_seconds: 0}
objectives: {metric: AP}
"""


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_code")
    (folder / f"{MODULE}.py").write_text(SPACE_SOURCE)
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_detection_dataset(tmp_path_factory.mktemp("data"), num_train=4, num_validation=2)


def _settings(data, root):
    return {
        "store_root": str(root / "store"),
        "train_data": data.train_pattern,
        "validation_data": data.validation_pattern,
        "annotations": data.annotations,
    }


def test_the_cli_shows_and_validates_a_custom_space(user_module, data, tmp_path, capsys):
    assert main(["spaces", "show", SPACE]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"{SPACE}: 4 architectures" in shown
    assert "width 1 8, 16" in shown and "depth 1 1, 2" in shown  # plain columns when piped
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    overrides = [f"studies.proxy.space={SPACE}", f"data.train={data.train_pattern}"]
    overrides.append(f"data.validation={data.validation_pattern}")
    argv = ["validate", str(spec)] + [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 0
    assert SPACE in capsys.readouterr().out


@pytest.mark.tf
def test_the_pipeline_space_parameter_selects_it_and_a_trial_trains(user_module, data, tmp_path):
    uri = init_experiment(SPEC, [], space=SPACE, **_settings(data, tmp_path))
    exp = open_experiment(uri)
    assert exp.spec.study("proxy").space == SPACE
    assert exp.spec.study("validation").space == SPACE  # the retraining studies follow it
    (trial_id,) = propose_trials(uri, "proxy", 1)
    assert exp.records.read_spec("proxy", trial_id).space == SPACE
    result = run_trial(uri, "proxy", trial_id)
    assert result.status is TrialStatus.COMPLETED, result.error
    assert {"AP", "latency_ms", "params"} <= set(result.metrics)


def test_a_module_that_cannot_be_imported_is_refused_before_any_trial(data, tmp_path):
    with pytest.raises(SpecError) as raised:
        init_experiment(SPEC, [], space="no_such_team_module:SPACE", **_settings(data, tmp_path))
    message = str(raised.value)
    assert "cannot import the search space 'no_such_team_module:SPACE'" in message
    assert "installed in the image" in message
    assert not (tmp_path / "store").exists()


def test_an_object_that_is_not_a_space_is_refused_with_what_it_lacks(user_module, data, tmp_path):
    with pytest.raises(SpecError) as raised:
        init_experiment(SPEC, [], space=f"{MODULE}:NOT_A_SPACE", **_settings(data, tmp_path))
    message = str(raised.value)
    assert "is a dict, not a search space" in message
    assert "'hyper()', 'reference()' and 'build_network()'" in message


def test_the_space_refuses_a_task_it_cannot_serve(user_module, data, tmp_path):
    with pytest.raises(SpecError, match=r"this backbone stops at level 5: set task\.options"):
        init_experiment(
            SPEC, ["task.options.max_level=6"], space=SPACE, **_settings(data, tmp_path)
        )
