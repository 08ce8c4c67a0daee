"""The experiment spec: strict YAML, dotted overrides, validate() messages, experiment.json."""

import os
from pathlib import Path

import pyglove as pg
import pytest

from kfnas.config.spec import (
    AlgorithmSpec,
    BudgetSpec,
    ConstraintSpec,
    ExperimentSpec,
    SpecError,
    load_spec,
    parse_spec,
)
from kfnas.spaces import SPACES
from kfnas.validation import resolve, validate

EXAMPLE = Path(__file__).parents[2] / "src" / "kfnas" / "demo.yaml"

VALID = """
name: exp-1
task: {kind: detection, num_classes: 2, options: {max_level: 5}}
studies:
  proxy: {space: spinenet_mbconv}
  scale: {space: spinenet, budget: {train_steps: 500}, algorithm: {name: random}, seed: 9}
budget: {rounds: 3, trials_per_round: 4, train_steps: 10, batch_size: 2}
objectives:
  metric: AP
  constraints: [{measure: latency_ms, target: 15}]
"""


@pytest.fixture
def valid(tmp_path):
    return parse_spec(VALID, [f"store_root={tmp_path / 'store'}"])


def test_example_spec_loads_and_validates(tmp_path):
    spec = validate(load_spec(EXAMPLE, [f"store_root={tmp_path}"]))
    assert spec.studies["proxy"].space == "spinenet_mbconv"
    assert spec.objectives.constraints == [ConstraintSpec("latency_ms", 5.0, "hard")]


def test_typed_values_and_defaults(valid):
    assert valid.task.num_classes == 2
    assert valid.task.image_size == 64  # default
    assert valid.objectives.constraints[0].target == 15.0
    assert isinstance(valid.objectives.constraints[0].target, float)
    assert valid.objectives.constraints[0].resolved_exponent == 1.0
    assert ConstraintSpec(form="soft").resolved_exponent == 0.07


def test_resolved_fills_studies_from_experiment_defaults(valid):
    proxy = valid.study("proxy")
    assert proxy.algorithm == AlgorithmSpec()
    assert proxy.budget == BudgetSpec(rounds=3, trials_per_round=4, train_steps=10, batch_size=2)
    assert proxy.seed == 0
    scale = valid.study("scale")
    # A study budget gives only what it changes; the rest comes from the experiment budget.
    assert scale.budget == BudgetSpec(rounds=3, trials_per_round=4, train_steps=500, batch_size=2)
    assert scale.algorithm == AlgorithmSpec(name="random")
    assert scale.seed == 9
    with pytest.raises(
        SpecError, match="no study 'final' in the experiment; studies: proxy, scale"
    ):
        valid.study("final")


def test_experiment_json_round_trip(valid):
    resolved = valid.resolved()
    assert ExperimentSpec.from_json(resolved.to_json()) == resolved


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "studis: {}",
            "unknown key 'studis' (did you mean 'studies'?); valid keys: name, task, data, studies,"
            " algorithm, budget, objectives, measurement, store_root, seed",
        ),
        (
            "studies: {proxy: {space: s, budget: {trails_per_round: 2}}}",
            "unknown key 'studies.proxy.budget.trails_per_round' "
            "(did you mean 'trials_per_round'?);"
            " valid keys of studies.proxy.budget: rounds, trials_per_round, train_steps,"
            " batch_size, max_consecutive_failures",
        ),
        ("task: {num_classes: three}", "task.num_classes must be an integer, got 'three'"),
        ("budget: {rounds: true}", "budget.rounds must be an integer, got True"),
        ("seed: 1.5", "seed must be an integer, got 1.5"),
        ("task: detection", "task must be a mapping, got str"),
        ("objectives: {constraints: {measure: flops}}", "objectives.constraints must be a list"),
        (
            "objectives: {constraints: [{form: medium}]}",
            "objectives.constraints.0.form must be one of hard, soft; got 'medium'",
        ),
        ("- a\n- b", "the spec must be a mapping, got list"),
        ("name: [unclosed", "the spec is not valid YAML"),
    ],
)
def test_bad_yaml_names_the_key(text, message):
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert message in str(info.value)


def test_missing_spec_file():
    with pytest.raises(SpecError, match=r"spec file 'nope\.yaml' does not exist"):
        load_spec("nope.yaml")


def test_dotted_overrides(valid):
    spec = valid.with_overrides(
        [
            "budget.train_steps=50",
            "studies.proxy.algorithm.name=grid",
            "studies.proxy.budget.rounds=7",
            "algorithm.options.population_size=12",
            "objectives.constraints.0.target=30",
            "task.options={min_level: 3, max_level: 4}",
            "name=renamed",
            "task.options.learning_rate=1e-3",
            "objectives.constraints.0.exponent=5E+1",
        ]
    )
    assert spec.task.options["learning_rate"] == 0.001
    assert spec.objectives.constraints[0].exponent == 50.0
    assert parse_spec("seed: 1\ntask: {options: {lr: 2e-4}}").task.options == {"lr": 0.0002}
    assert spec.budget.train_steps == 50
    assert spec.study("proxy").algorithm == AlgorithmSpec("grid")
    assert spec.study("proxy").budget.rounds == 7
    assert spec.study("proxy").budget.train_steps == 50  # still merged from the experiment budget
    assert spec.algorithm.options == {"population_size": 12}
    assert spec.objectives.constraints[0].target == 30.0
    assert spec.task.options == {"min_level": 3, "max_level": 4, "learning_rate": 0.001}
    assert spec.name == "renamed"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.train_steps", "must look like key.path=value"),
        ("budget.trainsteps=3", "unknown key 'budget.trainsteps' (did you mean 'train_steps'?)"),
        ("budget.rounds=many", "budget.rounds must be an integer, got 'many'"),
        ("objectives.constraints.3.target=1", "no item '3' in a list of 1"),
        ("seed.x=1", "cannot go into 0"),
        ("name=[oops", "the value is not valid YAML"),
    ],
)
def test_bad_overrides(valid, override, message):
    with pytest.raises(SpecError) as info:
        valid.with_overrides([override])
    assert message in str(info.value)


def problems_of(spec):
    with pytest.raises(SpecError) as info:
        validate(spec)
    return str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("budget.train_steps=0", "budget.train_steps must be a positive integer, got 0"),
        (
            "budget.trials_per_round=-2",
            "budget.trials_per_round must be a positive integer, got -2",
        ),
        (
            "studies.scale.budget.batch_size=0",
            "studies.scale.budget.batch_size must be a positive integer, got 0",
        ),
        ("objectives.constraints.0.target=0", "objectives.constraints.0.target must be positive"),
        ("objectives.constraints.0.target=-5", "objectives.constraints.0.target must be positive"),
        (
            "objectives.constraints.0.exponent=-1",
            "objectives.constraints.0.exponent must be positive",
        ),
        ("objectives.constraints.0.measure=speed", "measure 'speed' is unknown; use one of"),
        (
            "objectives.reward=mnass",
            "objectives.reward: unknown reward 'mnass' (did you mean 'mnas'?)",
        ),
        ("objectives.reward=metric", "reward is 'metric', which ignores objectives.constraints"),
        (
            "objectives.metric=top_1_accuracy",
            "objectives.metric 'top_1_accuracy' is not a metric the detection task reports: "
            "use one of AP, AP50",
        ),
        (
            "algorithm.name=evolution",
            "studies.proxy.algorithm.name: unknown algorithm 'evolution'",
        ),
        ("studies.scale.space=spinenett", "unknown search space 'spinenett' (did you mean"),
        ("studies.scale.space=", "studies.scale.space is empty"),
        ("task.kind=detect", "task.kind: unknown task 'detect' (did you mean 'detection'?)"),
        ("task.options={head_convs: 2}", "head_convs"),
        ("task.image_size=100", "image_size"),
        ("task.num_classes=0", "task.num_classes must be at least 1"),
        ("name=has space", "name 'has space' must be 1-63 letters"),
        ("studies={}", "studies is empty: add at least one study"),
        ("store_root=gs://", "store_root: gs:// URI 'gs://' has no bucket"),
        ("store_root=s3://bucket/x", "store_root:"),
        (
            "studies.proxy.space=kfnas_no_such_module:SPACE",
            "cannot import the search space 'kfnas_no_such_module:SPACE'",
        ),
        ("studies.proxy.space=os:path", "is a module, not a search space"),
        ("measurement.batch_sizes=[8, 0]", "measurement.batch_sizes.1 must be at least 1, got 0"),
        ("measurement.batch_sizes=[4, 4]", "measurement.batch_sizes [4, 4] lists a size twice"),
        (
            "measurement.min_seconds=-1",
            "measurement.min_seconds must be between 0 (exactly budget.latency_runs calls) and "
            "600 seconds per timed part, got -1",
        ),
        ("measurement.min_seconds=601", "measurement.min_seconds must be between 0"),
        (
            "measurement.tflite=[fp16]",
            "measurement.tflite.0 'fp16' is not a TensorFlow Lite measurement: use float or int8",
        ),
        (
            "objectives.constraints.0.measure=tflite_int8_latency_ms",
            "constrains 'tflite_int8_latency_ms' but measurement.tflite does not ask for the "
            "'int8' TensorFlow Lite measurement: add 'int8' to measurement.tflite",
        ),
        (
            "studies.proxy.early_stopping.rule=medain",
            "studies.proxy.early_stopping: unknown early-stopping rule 'medain' (did you mean "
            "'median'?)",
        ),
        (
            "studies.proxy.early_stopping={rule: median}",
            "studies.proxy.budget.evaluations is 1: set it to at least 2",
        ),
        (
            "studies.proxy.early_stopping={rule: rank, options: {keep_fraction: 1.5}}",
            "studies.proxy.early_stopping.options.keep_fraction",
        ),
        (
            "studies.proxy.early_stopping={options: {min_trials: 2}}",
            "studies.proxy.early_stopping.options is set but no rule is",
        ),
        (
            "studies.proxy.multi_fidelity={scheduler: asha, min_steps: 4}",
            "studies.proxy.budget.train_steps 10 does not fit a halving schedule from "
            "studies.proxy.multi_fidelity.min_steps 4",
        ),
        (
            "studies.proxy.multi_fidelity={scheduler: hyperband, min_steps: 1}",
            "studies.proxy.multi_fidelity.scheduler 'hyperband' is not known: use asha",
        ),
        (
            "studies.proxy.multi_fidelity={scheduler: asha, min_steps: 10}",
            "is not longer than studies.proxy.multi_fidelity.min_steps",
        ),
        (
            "studies.validation={space: spinenet_mbconv, multi_fidelity: "
            "{scheduler: asha, min_steps: 2, reduction_factor: 5}}",
            "studies.validation.multi_fidelity: a study that retrains chosen trials",
        ),
    ],
)
def test_validate_reports_what_to_change(valid, override, message):
    assert message in problems_of(valid.with_overrides([override]))


def test_early_stopping_and_multi_fidelity_are_one_or_the_other(valid):
    spec = valid.with_overrides(
        [
            "budget.evaluations=2",
            "studies.proxy.early_stopping={rule: value, options: {threshold: 0.1}}",
            "studies.proxy.multi_fidelity={scheduler: asha, min_steps: 2, reduction_factor: 5}",
        ]
    )
    assert "use one of them" in problems_of(spec)
    fitting = valid.with_overrides(
        ["studies.proxy.multi_fidelity={scheduler: asha, min_steps: 2, reduction_factor: 5}"]
    )
    assert validate(fitting).studies["proxy"].multi_fidelity.min_steps == 2


def test_validate_space_that_does_not_serve_the_task(valid):
    class SegmentationOnly:
        name = "segmentation_only"
        tasks = ("segmentation",)

        def hyper(self):
            return pg.Dict(x=pg.oneof([1, 2]))

        def reference(self):
            return None

        def task_problems(self, task):
            return []

        def build_network(self, arch, task, input_specs):
            raise AssertionError("not built during validation")

    SPACES.register("segmentation_only", SegmentationOnly())
    try:
        spec = valid.with_overrides(["studies.scale.space=segmentation_only"])
        assert (
            "studies.scale.space 'segmentation_only' serves segmentation, not task.kind "
            "'detection': pick a space for detection or change the task"
        ) in problems_of(spec)
    finally:
        SPACES.unregister("segmentation_only")


def test_validate_reports_every_problem_at_once(valid):
    text = problems_of(valid.with_overrides(["budget.rounds=0", "objectives.reward=x"]))
    assert text.startswith("the experiment spec is not valid:")
    assert "budget.rounds must be a positive integer" in text
    assert "unknown reward 'x'" in text


def test_validate_nsga2_needs_two_objectives(valid):
    spec = valid.with_overrides(["algorithm.name=nsga2", "objectives.constraints=[]"])
    assert "nsga2 needs two or more objectives" in problems_of(spec)
    validate(valid.with_overrides(["algorithm.name=nsga2"]))


def test_validate_store_root_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    spec = parse_spec(VALID, [f"store_root={blocker / 'store'}"])
    assert "store_root:" in problems_of(spec)
    assert str(blocker) in problems_of(spec)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_validate_read_only_store_root(tmp_path):
    tmp_path.chmod(0o500)
    try:
        assert "store_root:" in problems_of(parse_spec(VALID, [f"store_root={tmp_path / 's'}"]))
    finally:
        tmp_path.chmod(0o700)


def test_an_empty_metric_takes_the_task_kinds_default(valid):
    spec = valid.with_overrides(["objectives.metric="])
    assert spec.objectives.metric == ""
    assert resolve(spec).objectives.metric == "AP"
    validate(spec)


@pytest.mark.parametrize(
    ("kind", "space", "serves"),
    [
        ("classification", "nasfpn", "detection, segmentation"),
        ("segmentation", "mnasnet", "classification, detection, torch_classification"),
        ("classification", "spinenet", "detection"),
    ],
)
def test_a_built_in_space_named_for_a_task_it_does_not_serve_is_refused(valid, kind, space, serves):
    spec = valid.with_overrides(
        [
            f"task.kind={kind}",
            "task.options={}",
            "objectives.metric=",
            f"studies.proxy.space={space}",
        ]
    )
    assert (
        f"studies.proxy.space {space!r} serves {serves}, not task.kind {kind!r}: pick a space for "
        f"{kind} or change the task"
    ) in problems_of(spec)
