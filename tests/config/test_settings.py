"""Run settings (the pipeline's named parameters) and the retraining studies a spec gets."""

import dataclasses

import pytest

from kfnas.config.settings import ExperimentSettings, setting
from kfnas.config.spec import SpecError, parse_spec
from kfnas.config.studies import FULL_TRAINING_STEPS_FACTOR
from kfnas.validation import complete_studies, experiment_spec

SPEC = """
name: settings-test
task: {kind: detection, options: {max_level: 5}}
data: {train: /data/train-*.tfrecord, validation: /data/val-*.tfrecord}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 4, tournament_size: 2}}
budget: {trials_per_round: 3, train_steps: 20, batch_size: 4}
objectives:
  metric: AP
  constraints: [{measure: flops, target: 1.0e9}]
"""


def test_unset_settings_keep_the_spec():
    assert experiment_spec(SPEC) == experiment_spec(SPEC, settings=ExperimentSettings())


def test_settings_become_overrides_and_the_users_overrides_win():
    settings = ExperimentSettings(
        experiment_name="other",
        train_data="*.tfrecord",  # a YAML alias if it were not quoted
        proxy_train_steps=7,
        trials_per_round=2,
        full_train_steps=70,
        metric="AP50",
    )
    spec = experiment_spec(SPEC, ["studies.proxy.budget.batch_size=3"], settings)
    proxy, validation = spec.study("proxy").budget, spec.study("validation").budget
    assert (spec.name, spec.data.train, spec.objectives.metric) == ("other", "*.tfrecord", "AP50")
    assert (proxy.train_steps, proxy.trials_per_round, proxy.batch_size) == (7, 2, 3)
    assert (validation.train_steps, validation.batch_size) == (70, 4)
    spec = experiment_spec(SPEC, ["studies.proxy.budget.train_steps=9"], settings)
    assert spec.study("proxy").budget.train_steps == 9


def test_missing_retraining_studies_are_added_with_the_full_budget():
    spec = experiment_spec(SPEC)
    assert list(spec.studies) == ["proxy", "validation", "final"]
    validation, final = spec.study("validation"), spec.study("final")
    assert validation.space == final.space == "spinenet_mbconv"
    assert validation.budget.train_steps == 20 * FULL_TRAINING_STEPS_FACTOR
    assert validation.budget.batch_size == 4
    assert final.budget == validation.budget
    assert complete_studies(spec) == spec


def test_a_validation_study_with_only_a_budget_takes_the_proxy_space():
    spec = experiment_spec(SPEC, ["studies.validation.budget.train_steps=50"])
    assert spec.study("validation").space == "spinenet_mbconv"
    assert spec.study("final").budget.train_steps == 50


def test_a_full_batch_size_alone_keeps_the_full_steps():
    spec = experiment_spec(SPEC, settings=ExperimentSettings(full_batch_size=2))
    budget = spec.study("validation").budget
    assert (budget.train_steps, budget.batch_size) == (20 * FULL_TRAINING_STEPS_FACTOR, 2)


def test_another_algorithm_drops_the_specs_options():
    same = experiment_spec(SPEC, settings=ExperimentSettings(algorithm="regularized_evolution"))
    assert same.study("proxy").algorithm.options == {"population_size": 4, "tournament_size": 2}
    other = experiment_spec(SPEC, settings=ExperimentSettings(algorithm="random"))
    assert (other.study("proxy").algorithm.name, other.study("proxy").algorithm.options) == (
        "random",
        {},
    )


def test_a_latency_target_sets_or_adds_the_latency_constraint():
    added = experiment_spec(SPEC, settings=ExperimentSettings(latency_target_ms=12.5))
    measures = [(c.measure, c.target, c.form) for c in added.objectives.constraints]
    assert measures == [("flops", 1.0e9, "hard"), ("latency_ms", 12.5, "hard")]
    text = SPEC.replace("{measure: flops, target: 1.0e9}", "{measure: latency_ms, target: 3.0}")
    changed = experiment_spec(text, settings=ExperimentSettings(latency_target_ms=8))
    assert [(c.measure, c.target) for c in changed.objectives.constraints] == [("latency_ms", 8.0)]


def test_unknown_or_mistyped_settings_are_errors():
    with pytest.raises(SpecError, match=r"unknown key 'settings.colour'.*valid keys of settings"):
        ExperimentSettings.from_kwargs({"colour": "red"})
    with pytest.raises(SpecError, match=r"settings.rounds must be an integer"):
        ExperimentSettings.from_kwargs({"rounds": "two"})
    with pytest.raises(SpecError, match=r"target must be positive"):
        experiment_spec(SPEC, settings=ExperimentSettings(latency_target_ms=-1.0))


def test_demo_names_the_built_in_spec():
    assert experiment_spec("demo").name == experiment_spec("").name == "demo"
    assert experiment_spec("demo").study("validation").space == "spinenet_mbconv"


def test_a_spec_without_proxy_study_is_left_as_it_is():
    spec = parse_spec(SPEC.replace("proxy:", "search:"))
    assert complete_studies(spec) == spec


def test_refinement_studies_sit_between_validation_and_final_with_the_full_budget():
    settings = ExperimentSettings(
        scaling_trials=4,
        scaling_train_steps=30,
        augmentation_trials=5,
        full_train_steps=50,
        latency_target_ms=30.0,  # scaling needs a latency target
    )
    spec = experiment_spec(SPEC, ["studies.proxy.space=spinenet"], settings)
    assert list(spec.studies) == ["proxy", "validation", "scaling", "augmentation", "final"]
    scaling, augmentation = spec.study("scaling"), spec.study("augmentation")
    assert (scaling.space, scaling.algorithm.name) == ("spinenet_scaling", "grid")
    assert (augmentation.space, augmentation.algorithm.name) == ("randaugment_detection", "grid")
    assert (scaling.budget.rounds, scaling.budget.trials_per_round) == (1, 4)
    assert (scaling.budget.train_steps, scaling.budget.evaluations) == (30, 1)
    # Augmentation trials train the full budget and report the best of 3 evaluations.
    assert (augmentation.budget.trials_per_round, augmentation.budget.train_steps) == (5, 50)
    assert augmentation.budget.evaluations == 3
    assert spec.study("final").budget.train_steps == 50


def test_refinement_studies_are_off_by_default_and_a_spec_may_define_them():
    assert "scaling" not in experiment_spec(SPEC).studies
    text = SPEC.replace(
        "  proxy: {space: spinenet_mbconv}",
        "  proxy: {space: spinenet}\n  augmentation: {space: autoaugment_detection}",
    )
    spec = experiment_spec(text)
    assert list(spec.studies) == ["proxy", "validation", "augmentation", "final"]
    augmentation = spec.study("augmentation")
    assert augmentation.algorithm.name == "regularized_evolution"  # the space's default
    assert augmentation.budget == spec.study("validation").budget.__class__(
        **{**vars(spec.study("validation").budget), "rounds": 1, "evaluations": 3}
    )
    spec = experiment_spec(text, settings=ExperimentSettings(augmentation_trials=2))
    assert spec.study("augmentation").budget.trials_per_round == 2


def test_scaling_a_network_that_is_not_a_spinenet_is_refused_before_any_trial():
    with pytest.raises(SpecError, match="spinenet_scaling"):
        experiment_spec(SPEC, ["studies.proxy.space=mnasnet"], ExperimentSettings(scaling_trials=2))


def test_scaling_without_a_latency_target_is_refused_before_any_trial():
    with pytest.raises(SpecError) as e:
        experiment_spec(
            SPEC, ["studies.proxy.space=spinenet"], ExperimentSettings(scaling_trials=2)
        )
    assert "a scaling study needs a latency target in its reward" in str(e.value)
    assert "set the pipeline's latency_target_ms" in str(e.value)


def test_a_new_setting_is_one_declaration():
    # A throwaway setting: its field is the whole declaration of the settings record's side.
    @dataclasses.dataclass(frozen=True)
    class MoreSettings(ExperimentSettings):
        weight_decay: float = setting(0.0, "L2 weight decay.", key="task.options.weight_decay")

    spec = parse_spec(SPEC)
    more = MoreSettings.from_kwargs({"weight_decay": 0.5, "metric": "AP50"})
    assert more.overrides(spec) == ['objectives.metric="AP50"', "task.options.weight_decay=0.5"]
    assert MoreSettings().overrides(spec) == []
    with pytest.raises(SpecError, match="weight_decay"):
        ExperimentSettings.from_kwargs({"weight_decay": 0.5})  # unknown until declared
