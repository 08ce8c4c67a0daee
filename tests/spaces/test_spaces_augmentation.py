"""The augmentation-policy refinement spaces and the ``task.options.augmentation`` checks.

Sizes and decisions as in Vertex AI NAS (reference sections 1.8 and 7), points turned into
overrides that ``--set`` parsing reads back and the tasks accept, the published references, and
the spec checks that refuse a space for the wrong task or a bad policy before any trial.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pyglove as pg
import pytest

from kfnas.augment.tables import (
    AUTOAUGMENT_OPS,
    RANDAUGMENT_OPS,
    AutoAugmentConfig,
    RandAugmentConfig,
    augmentation_problems,
    parse_augmentation,
)
from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.spaces import get_space
from kfnas.spaces.augmentation import DETECTION_POLICY_V0, RandAugmentPoint
from kfnas.spaces.base import dna_spec, is_refinement, materialize
from kfnas.tasks import TASKS
from kfnas.validation import validate

SPACES = {
    "randaugment_detection": ("detection", 20, 2, "grid"),
    "randaugment_segmentation": ("segmentation", 20, 2, "grid"),
    "autoaugment_detection": (
        "detection",
        11221389843560426839296709440427401,
        30,
        "regularized_evolution",
    ),
    "autoaugment_segmentation": (
        "segmentation",
        92744299692825115333139423502649,
        30,
        "regularized_evolution",
    ),
}
#: An architecture space for each task kind, to put in the study before the augmentation study.
BASE = {"detection": "spinenet", "segmentation": "nasfpn"}
IMAGE_SIZE = 128  # Divisible by 2**max_level for the default levels 3..7.


def _spec(kind: str, space: str, options: dict | None = None) -> ExperimentSpec:
    studies = {"proxy": {"space": BASE[kind]}, "augmentation": {"space": space}}
    task = {"kind": kind, "image_size": IMAGE_SIZE, "options": options or {}}
    return ExperimentSpec.from_dict({"task": task, "studies": studies})


@pytest.mark.parametrize("name", SPACES)
def test_size_decisions_and_algorithm_are_those_of_vertex(name):
    kind, size, decisions, algorithm = SPACES[name]
    space = get_space(name)
    spec = pg.dna_spec(space.hyper())
    assert spec.space_size == size
    assert len(spec.decision_points) == decisions
    assert space.tasks == (kind,) and space.default_algorithm == algorithm
    assert is_refinement(space) and pg.eq(space.hyper(), space.hyper())


def test_randaugment_candidates_and_autoaugment_decision_ids():
    hyper = get_space("randaugment_detection").hyper()
    assert list(hyper.sym_getattr("num_layers").candidates) == [1, 2]
    assert list(hyper.sym_getattr("magnitude").candidates) == list(range(1, 11))
    ids = [str(p.id) for p in dna_spec(get_space("autoaugment_segmentation")).decision_points]
    assert ids[:3] == ["[0][0][0]", "[0][0][1]", "[0][1][0]"] and ids[-1] == "[2][4][1]"
    assert len(AUTOAUGMENT_OPS["detection"]) == 21 and len(AUTOAUGMENT_OPS["segmentation"]) == 13
    assert all(len(ops) == 10 for ops in RANDAUGMENT_OPS.values())


def test_randaugment_point_becomes_an_override_the_task_reads_back():
    space = get_space("randaugment_detection")
    point = RandAugmentPoint(num_layers=1, magnitude=7)
    (override,) = space.task_overrides(point, None)
    task = _spec("detection", space.name).with_overrides([override]).task
    assert task.options["augmentation"] == {"randaugment": {"num_layers": 1, "magnitude": 7}}
    config = parse_augmentation(task.options["augmentation"], "detection")
    assert config == RandAugmentConfig(1, 7, RANDAUGMENT_OPS["detection"])


@pytest.mark.parametrize("name", SPACES)
def test_random_points_round_trip_through_overrides_and_validate(name):
    kind = SPACES[name][0]
    space = get_space(name)
    spec = _spec(kind, name)
    for seed in range(5):
        point = materialize(space, pg.random_dna(dna_spec(space), random.Random(seed)))
        overrides = space.task_overrides(point, spec.task)
        assert len(overrides) == 1 and overrides[0].startswith("task.options.augmentation=")
        expected = json.loads(overrides[0].partition("=")[2])
        refined = spec.with_overrides(overrides)
        assert refined.task.options["augmentation"] == expected
        validate(refined)
        assert TASKS.get(kind).option_problems(refined.task) == []
        config = parse_augmentation(expected, kind)
        if isinstance(config, AutoAugmentConfig):
            indices, magnitudes, probs = point
            assert [[op.name for op in sub] for sub in config.sub_policies] == [
                [AUTOAUGMENT_OPS[kind][i] for i in sub] for sub in indices
            ]
            assert [[op.magnitude for op in sub] for sub in config.sub_policies] == magnitudes
            assert [[op.prob for op in sub] for sub in config.sub_policies] == probs


def test_references_are_randaugment_n2_m9_and_detection_policy_v0():
    for name in ("randaugment_detection", "randaugment_segmentation"):
        assert pg.eq(get_space(name).reference(), RandAugmentPoint(num_layers=2, magnitude=9))
    space = get_space("autoaugment_detection")
    reference = space.reference()
    dna = pg.template(space.hyper()).encode(reference)
    dna.use_spec(dna_spec(space))
    (override,) = space.task_overrides(materialize(space, dna), None)
    policy = json.loads(override.partition("=")[2])["autoaugment"]
    assert policy == [[list(op) for op in sub] for sub in DETECTION_POLICY_V0]
    # v0 uses TranslateYOnlyBBoxes, which the segmentation table lacks.
    assert get_space("autoaugment_segmentation").reference() is None


def test_base_problems_refuse_refinement_spaces_only():
    space = get_space("autoaugment_detection")
    assert space.base_problems("spinenet") == [] and space.base_problems("mnasnet") == []
    (message,) = space.base_problems("spinenet_scaling")
    assert "builds no network: put an architecture study" in message


def test_an_augmentation_space_for_the_wrong_task_is_refused_before_any_trial():
    with pytest.raises(SpecError) as e:
        validate(_spec("detection", "randaugment_segmentation"))
    assert (
        "studies.augmentation.space 'randaugment_segmentation' serves segmentation, not "
        "task.kind 'detection': pick a space for detection"
    ) in str(e.value)
    with pytest.raises(
        SpecError, match=r"'autoaugment_detection' serves detection, not task\.kind"
    ):
        validate(_spec("segmentation", "autoaugment_detection"))


BAD_POLICIES = [
    (
        "detection",
        {"autoaugment": [[["Rotat", 3, 0.5]]]},
        "task.options.augmentation.autoaugment.0.0: 'Rotat' is not a detection augmentation op "
        "(did you mean 'Rotate'?); use one of",
    ),
    (
        "detection",
        {"autoaugment": [[["CutoutSegmentation", 3, 0.5]]]},
        "'CutoutSegmentation' is not a detection augmentation op",
    ),
    (
        "segmentation",
        {"autoaugment": [[["FlipOnlyBBoxes", 3, 0.5]]]},
        "'FlipOnlyBBoxes' is not a segmentation augmentation op",
    ),
    (
        "detection",
        {"autoaugment": [[["Rotate", 11, 0.5], ["Color", 2, 1.5]]]},
        "autoaugment.0.0: the magnitude must be an integer in 0..10, got 11",
    ),
    (
        "segmentation",
        {"autoaugment": [[["Rotate", 1, 0.5], ["Color", 2, 1.5]]]},
        "autoaugment.0.1: the probability must be a number in [0, 1], got 1.5",
    ),
    (
        "detection",
        {"randaugment": {"num_layers": 0, "magnitude": 12}},
        "randaugment.num_layers must be an integer >= 1",
    ),
    (
        "segmentation",
        {"randaugment": {"num_layers": 2, "magnitude": 12}},
        "randaugment.magnitude must be an integer in 0..10, got 12",
    ),
    (
        "detection",
        {"rand": {"num_layers": 2}},
        "must be a mapping with one key, randaugment or autoaugment, e.g. {randaugment: ",
    ),
    ("detection", {"autoaugment": [["Rotate", 1, 0.5]]}, "must be [op name, magnitude 0..10"),
]


@pytest.mark.parametrize(("kind", "policy", "message"), BAD_POLICIES)
def test_bad_policies_are_refused_with_what_to_write(kind, policy, message):
    problems = augmentation_problems(policy, kind)
    assert any(message in p for p in problems), problems
    with pytest.raises(SpecError) as e:
        validate(_spec(kind, f"randaugment_{kind}", {"augmentation": policy}))
    assert message in str(e.value)
    with pytest.raises(ValueError, match="invalid augmentation policy"):
        parse_augmentation(policy, kind)


def test_a_valid_user_policy_passes_the_task_checks():
    policy = {"autoaugment": [[["TranslateX", 4, 0.6], ["Equalize", 0, 1]], [["Rotate", 10, 0]]]}
    validate(_spec("detection", "randaugment_detection", {"augmentation": policy}))
    config = parse_augmentation(policy, "detection")
    assert [len(sub) for sub in config.sub_policies] == [2, 1]
    assert config.sub_policies[0][1].prob == 1.0


def test_spaces_and_option_checks_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from kfnas.spaces import get_space\n"
        "from kfnas.tasks import TASKS\n"
        "import kfnas.augment\n"
        "for name in ['randaugment_detection', 'autoaugment_segmentation']:\n"
        "    get_space(name).hyper()\n"
        "TASKS.get('detection'); TASKS.get('segmentation')\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
