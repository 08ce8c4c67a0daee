"""The ``spinenet_scaling`` refinement space and the fixed ``spinenet49`` space.

Size, decisions and candidates as in Vertex AI NAS (reference section 1.7), the overrides a point
gives, which architecture spaces it scales, and the spec checks that refuse a scaling study before
any trial. A ``tf`` test checks the typed-out SpineNet-49 against tf-models-official.
"""

from __future__ import annotations

import pyglove as pg
import pytest

from kfnas.config.spec import ExperimentSpec, SpecError, TaskSpec
from kfnas.search.controller import HistoryEntry, SpaceExhausted, propose
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import dna_spec, is_refinement, materialize
from kfnas.spaces.spinenet import block_specs
from kfnas.spaces.spinenet49 import SPINENET_49_BLOCK_SPECS
from kfnas.spaces.spinenet_scaling import SPINENET_SCALING, SpineNetScaling, SpineNetScalingSpace
from kfnas.tasks import TASKS
from kfnas.validation import complete_studies, validate

CANDIDATES = {
    "image_size": [512, 640],
    "endpoints_num_filters": [192, 256],
    "filter_size_scale": [0.8, 1.0, 1.2],
    "resample_alpha": [0.75, 1.0, 1.25],
    "block_repeats": [2, 3, 4],
    "head_num_convs": [4, 5],
    "head_num_filters": [192, 256],
}
SCALABLE = {"spinenet", "spinenet_v2", "spinenet49"}


def test_size_decisions_and_candidates_are_those_of_vertex():
    spec = dna_spec(SPINENET_SCALING)
    assert spec.space_size == 432
    assert [str(p.id) for p in spec.decision_points] == list(CANDIDATES)
    hyper = SPINENET_SCALING.hyper()
    assert {field: list(hyper.sym_getattr(field).candidates) for field in CANDIDATES} == CANDIDATES
    assert pg.eq(SPINENET_SCALING.hyper(), hyper)
    assert is_refinement(SPINENET_SCALING) and get_space("spinenet_scaling") is SPINENET_SCALING
    assert SPINENET_SCALING.default_algorithm == "grid"
    assert SPINENET_SCALING.tasks == ("detection",)


def test_no_published_scaling_lies_inside_the_grid():
    # SpineNet-49's resample_alpha 0.5 and block_repeats 1 are not candidates.
    assert SPINENET_SCALING.reference() is None
    assert 0.5 not in CANDIDATES["resample_alpha"] and 1 not in CANDIDATES["block_repeats"]


def test_a_point_becomes_task_overrides_that_the_detection_task_accepts():
    point = SpineNetScaling(
        image_size=640,
        endpoints_num_filters=256,
        filter_size_scale=1.2,
        resample_alpha=1.25,
        block_repeats=3,
        head_num_convs=5,
        head_num_filters=192,
    )
    task = TaskSpec(kind="detection", image_size=64, options={"max_level": 5, "block_repeats": 1})
    overrides = SPINENET_SCALING.task_overrides(point, task)
    assert overrides == [
        "task.image_size=640",
        "task.options.endpoints_num_filters=256",
        "task.options.filter_size_scale=1.2",
        "task.options.resample_alpha=1.25",
        "task.options.block_repeats=3",
        "task.options.head_num_convs=5",
        "task.options.head_num_filters=192",
    ]
    scaled = ExperimentSpec(task=task).with_overrides(overrides).task
    assert scaled.image_size == 640
    assert scaled.options == {
        "max_level": 5,
        "block_repeats": 3,
        "endpoints_num_filters": 256,
        "filter_size_scale": 1.2,
        "resample_alpha": 1.25,
        "head_num_convs": 5,
        "head_num_filters": 192,
    }
    assert TASKS.get("detection").option_problems(scaled) == []


def test_grid_proposes_the_first_points_in_order():
    spec = ExperimentSpec.from_dict(
        {"studies": {"scaling": {"space": "spinenet_scaling", "algorithm": {"name": "grid"}}}}
    ).resolved()
    first, second = propose(spec.studies["scaling"], [], 2, round_index=1)
    overrides = [
        SPINENET_SCALING.task_overrides(materialize(SPINENET_SCALING, dna), None)
        for dna in (first, second)
    ]
    assert overrides[0][:2] == ["task.image_size=512", "task.options.endpoints_num_filters=192"]
    assert overrides[0][-1] == "task.options.head_num_filters=192"
    assert overrides[1][:-1] == overrides[0][:-1]
    assert overrides[1][-1] == "task.options.head_num_filters=256"


@pytest.mark.parametrize("name", sorted(SPACES.names()))
def test_only_tf_models_spinenet_architectures_are_scaled(name):
    problems = SPINENET_SCALING.base_problems(name)
    if name in SCALABLE:
        assert problems == []
    else:
        (message,) = problems
        assert f"space {name!r} builds" in message
        assert "spinenet49" in message and "remove the spinenet_scaling study" in message


def test_spinenet_mbconv_is_refused_with_the_tf_models_reason():
    (message,) = SPINENET_SCALING.base_problems("spinenet_mbconv")
    assert "SpineNetMobile" in message and "resample_alpha" in message
    assert "block_repeats" in message


def test_user_spaces_are_judged_by_what_they_build():
    assert SPINENET_SCALING.base_problems("kfnas.spaces.spinenet:SPINENET_V2") == []
    assert SPINENET_SCALING.base_problems("kfnas.spaces.mnasnet:MNASNET") != []
    assert SPINENET_SCALING.base_problems("no_such_space") == []  # reported with the study


def _spec(studies: dict, latency_target: float | None = 30.0) -> ExperimentSpec:
    task = {"kind": "detection", "image_size": 512}
    constraints = [] if latency_target is None else [{"measure": "latency_ms", "target": 30.0}]
    objectives = {"metric": "AP", "constraints": constraints}
    return ExperimentSpec.from_dict({"task": task, "studies": studies, "objectives": objectives})


def test_validate_refuses_scaling_without_a_latency_target():
    studies = {"proxy": {"space": "spinenet"}, "scaling": {"space": "spinenet_scaling"}}
    with pytest.raises(SpecError, match="a scaling study needs a latency target in its reward"):
        validate(_spec(studies, latency_target=None))


def test_validate_refuses_scaling_a_non_spinenet_architecture():
    spec = _spec({"proxy": {"space": "mnasnet"}, "scaling": {"space": "spinenet_scaling"}})
    with pytest.raises(SpecError) as e:
        validate(spec)
    message = str(e.value)
    assert "studies.scaling.space 'spinenet_scaling': it scales SpineNet backbones" in message
    assert "'mnasnet' builds no SpineNet backbone" in message
    validate(_spec({"proxy": {"space": "spinenet"}, "scaling": {"space": "spinenet_scaling"}}))
    validate(_spec({"proxy": {"space": "spinenet49"}, "scaling": {"space": "spinenet_scaling"}}))


def test_validate_refuses_a_scaling_study_placed_first():
    spec = _spec({"scaling": {"space": "spinenet_scaling"}, "proxy": {"space": "spinenet"}})
    with pytest.raises(SpecError, match="scaling is the first study: put an architecture study"):
        validate(spec)


def test_a_full_grid_needs_a_budget_of_432_trials():
    studies = {
        "proxy": {"space": "spinenet"},
        "scaling": {
            "space": "spinenet_scaling",
            "algorithm": {"name": "grid", "options": {"full": True}},
            "budget": {"rounds": 1, "trials_per_round": 10},
        },
    }
    with pytest.raises(SpecError) as e:
        validate(_spec(studies))
    assert (
        "studies.scaling: the grid of spinenet_scaling has 432 points but the budget allows 10 "
        "trials (1 rounds x 10)"
    ) in str(e.value)
    studies["scaling"]["budget"] = {"rounds": 2, "trials_per_round": 216}
    validate(_spec(studies))


def test_the_scaling_study_defaults_to_grid_after_the_validation_study():
    spec = validate(
        complete_studies(
            _spec({"proxy": {"space": "spinenet"}, "scaling": {"space": "spinenet_scaling"}})
        )
    )
    assert list(spec.studies) == ["proxy", "validation", "scaling", "final"]
    assert spec.study("scaling").algorithm.name == "grid"


def test_task_problems_name_candidate_sizes_the_levels_cannot_divide():
    assert SPINENET_SCALING.task_problems(TaskSpec(kind="detection")) == []
    odd = SpineNetScalingSpace(name="odd_scaling", image_size=(64, 384, 512))
    (message,) = odd.task_problems(TaskSpec(kind="detection", options={"max_level": 7}))
    assert "[64]" in message and "2**max_level = 128" in message
    assert odd.task_problems(TaskSpec(kind="detection", options={"max_level": 6})) == []
    (message,) = SpineNetScalingSpace(name="s96", image_size=(96,)).task_problems(
        TaskSpec(kind="detection", options={"max_level": 5})
    )
    assert "odd_scaling" not in message and "96 is neither a multiple of 2**7 = 128" in message


@pytest.mark.parametrize("name", sorted(SCALABLE))
def test_spinenet_sizes_must_line_up_at_level_7_whatever_max_level(name):
    space = get_space(name)
    for size in (64, 128, 256, 640):
        assert space.task_problems(TaskSpec(image_size=size, options={"max_level": 5})) == []
    (message,) = space.task_problems(TaskSpec(image_size=96, options={"max_level": 5}))
    assert "use a multiple of 128 (e.g. 128) or a power of two" in message


@pytest.mark.parametrize(
    "candidates",
    [
        {"image_size": ()},
        {"block_repeats": (2, 2)},
        {"resample_alpha": (0.0,)},
        {"image_size": (4,)},
    ],
)
def test_bad_candidates_are_refused(candidates):
    with pytest.raises(ValueError, match="candidates"):
        SpineNetScalingSpace(name="bad", **candidates)


def test_spinenet49_is_one_point_the_published_topology():
    space = get_space("spinenet49")
    assert not is_refinement(space)
    assert dna_spec(space).space_size == 1 and not dna_spec(space).decision_points
    assert pg.eq(space.reference(), space.hyper())
    assert block_specs(space.reference()) == list(SPINENET_49_BLOCK_SPECS)
    study = _spec({"proxy": {"space": "spinenet49"}}).resolved().studies["proxy"]
    (dna,) = propose(study, [], 3, round_index=1)
    assert pg.eq(materialize(space, dna), space.reference())
    with pytest.raises(SpaceExhausted):
        propose(study, [HistoryEntry(dna, 1, 0.5)], 1, round_index=2)


@pytest.mark.tf
def test_spinenet49_is_tf_models_default_block_specs():
    from official.vision.modeling.backbones import spinenet

    assert list(SPINENET_49_BLOCK_SPECS) == spinenet.SPINENET_BLOCK_SPECS
