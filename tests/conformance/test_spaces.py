"""Every built-in search space against the ``SearchSpace`` contract, for every task it serves.

Per space: ``hyper()`` is stable and proposes only (no TensorFlow); a random architecture
materializes and its JSON rebuilds it; the published reference (where the space has one) lies
inside the space, i.e. it decodes from a DNA of the space; ``task_problems`` accepts the tiny task.
Per (space, task) pair: the network builds, the task wraps it into its official.vision model, and
the model runs forward on a tiny batch (a PyTorch task: the space's torch module runs forward).
A refinement space (``RefinementSpace``: scaling, augmentation) builds no network: instead the
task overrides of random points must read ``task.<key>=<value>`` and apply to the tiny task
cleanly, and it must refine at least one registered network space. A new built-in space, or a new
task a space serves, is covered as soon as it is registered; a new task kind needs one entry in
``TINY_TASKS``.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import BudgetSpec, ExperimentSpec, TaskSpec
from kfnas.data import GENERATORS
from kfnas.search.algorithms import ALGORITHMS
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import (
    Network,
    RefinementSpace,
    SearchSpace,
    dna_spec,
    is_refinement,
    materialize,
)
from kfnas.tasks import TASKS
from kfnas.tasks.frameworks import framework_of

BUILTIN_SPACES = sorted(SPACES.names())
SIZE = 64

#: A proxy-sized task per task kind: 64 px, levels 3..5, narrow networks and heads.
TINY_TASKS: dict[str, TaskSpec] = {
    "detection": TaskSpec(
        kind="detection",
        num_classes=3,
        image_size=SIZE,
        options={
            "min_level": 3,
            "max_level": 5,
            "filter_size_scale": 0.25,
            "endpoints_num_filters": 16,
            "head_num_convs": 1,
            "head_num_filters": 16,
            "fpn_num_filters": 16,
            "decoder_num_filters": 16,
            "decoder_num_repeats": 1,
        },
    ),
    "classification": TaskSpec(
        kind="classification",
        num_classes=3,
        image_size=SIZE,
        options={"endpoints_num_filters": 64},
    ),
    "segmentation": TaskSpec(
        kind="segmentation",
        num_classes=3,
        image_size=SIZE,
        options={
            "min_level": 3,
            "max_level": 5,
            "head_num_filters": 16,
            "fpn_num_filters": 16,
            "decoder_num_filters": 16,
            "decoder_num_repeats": 1,
        },
    ),
    "lidar_detection": TaskSpec(
        kind="lidar_detection",
        num_classes=3,
        image_size=SIZE,  # 64 pillars of 0.4 m: the default +-12.8 m
        options={
            "filter_size_scale": 0.25,
            "decoder_num_filters": 16,
            "head_num_filters": 16,
            "max_points": 512,
            "max_pillars": 256,
            "max_points_per_pillar": 8,
        },
    ),
    "segmentation_3d": TaskSpec(
        kind="segmentation_3d",
        num_classes=3,
        image_size=16,
        options={"filter_size_scale": 0.125, "decoder_num_filters": 4, "decoder_num_repeats": 1},
    ),
    "torch_classification": TaskSpec(kind="torch_classification", num_classes=3, image_size=32),
}
#: Spaces that need larger images: official's NAS-FPN decoder always builds levels 3..7, and
#: below 128 px its levels 6 and 7 are both 1x1 (see kfnas.spaces.nasfpn).
IMAGE_SIZE = {"nasfpn": 128}

PAIRS = [
    (space, task)
    for space in BUILTIN_SPACES
    for task in get_space(space).tasks
    if task in TASKS.names()
]
#: The pairs whose space builds a network (refinement spaces change the task instead), by the
#: framework the task trains in.
NETWORK_PAIRS = [(space, task) for space, task in PAIRS if not is_refinement(get_space(space))]
TORCH_PAIRS = [pair for pair in NETWORK_PAIRS if framework_of(TASKS.get(pair[1])).name == "pytorch"]
TF_PAIRS = [pair for pair in NETWORK_PAIRS if pair not in TORCH_PAIRS]
REFINEMENT_PAIRS = [pair for pair in PAIRS if pair not in NETWORK_PAIRS]


def _random_arch(space: SearchSpace | RefinementSpace, seed: int = 0):
    return materialize(space, pg.random_dna(dna_spec(space), random.Random(seed)))


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_space_follows_the_protocol(name):
    space = get_space(name)
    if is_refinement(space):
        assert isinstance(space, RefinementSpace)
        assert space.default_algorithm in ALGORITHMS.names()
    else:
        assert isinstance(space, SearchSpace)
    assert space.name == name
    assert space.tasks and all(isinstance(t, str) for t in space.tasks)
    assert pg.eq(space.hyper(), space.hyper())
    ids = [str(p.id) for p in dna_spec(space).decision_points]
    assert ids == [str(p.id) for p in dna_spec(space).decision_points] and len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_random_architectures_materialize_and_round_trip_through_json(name):
    space = get_space(name)
    for seed in range(3):
        arch = _random_arch(space, seed)
        text = pg.to_json_str(arch)
        assert pg.eq(pg.from_json_str(text), arch)


@pytest.mark.parametrize("name", BUILTIN_SPACES)
def test_the_reference_lies_inside_the_space(name):
    space = get_space(name)
    reference = space.reference()
    if reference is None:
        pytest.skip(f"{name} documents that its published architecture lies outside it")
    dna = pg.template(space.hyper()).encode(reference)
    dna.use_spec(dna_spec(space))  # raises if a decision has a value the space does not offer
    assert pg.eq(materialize(space, dna), reference)


@pytest.mark.parametrize(("name", "task_kind"), PAIRS)
def test_the_space_accepts_the_tiny_task(name, task_kind):
    assert get_space(name).task_problems(_tiny_task(name, task_kind)) == []
    assert TASKS.get(task_kind).option_problems(_tiny_task(name, task_kind)) == []


def _tiny_task(name: str, task_kind: str) -> TaskSpec:
    if task_kind not in TINY_TASKS:
        pytest.fail(f"add a tiny {task_kind} task to TINY_TASKS (space {name} serves it)")
    return dataclasses.replace(TINY_TASKS[task_kind], image_size=IMAGE_SIZE.get(name, SIZE))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Generated data per task kind, written on first use."""
    written = {}

    def get(task_kind: str):
        if task_kind not in written:
            out = tmp_path_factory.mktemp(task_kind)
            written[task_kind] = GENERATORS.get(task_kind)(out, num_train=2, num_validation=2)
        return written[task_kind]

    return get


@pytest.mark.parametrize(("name", "task_kind"), REFINEMENT_PAIRS)
def test_refinement_overrides_apply_to_the_tiny_task(name, task_kind):
    space = get_space(name)
    task = _tiny_task(name, task_kind)
    spec = ExperimentSpec(task=task)
    for seed in range(3):
        overrides = space.task_overrides(_random_arch(space, seed), task)
        assert overrides and all(isinstance(o, str) for o in overrides)
        for override in overrides:
            key, sep, value = override.partition("=")
            assert sep and key.startswith("task.") and value, override
        refined = spec.with_overrides(overrides).task
        assert refined.kind == task.kind
        assert TASKS.get(task_kind).option_problems(refined) == []


@pytest.mark.parametrize("name", [n for n in BUILTIN_SPACES if is_refinement(get_space(n))])
def test_a_refinement_space_refines_some_network_space(name):
    space = get_space(name)
    problems = {base: space.base_problems(base) for base in BUILTIN_SPACES}
    assert all(
        isinstance(p, list) and all(isinstance(m, str) for m in p) for p in problems.values()
    )
    accepted = [base for base, p in problems.items() if not p]
    assert accepted and not any(is_refinement(get_space(base)) for base in accepted)


@pytest.mark.tf
@pytest.mark.parametrize(("name", "task_kind"), TF_PAIRS)
def test_the_model_builds_and_runs_forward(name, task_kind, datasets):
    import tensorflow as tf
    import tf_keras

    space, kind = get_space(name), TASKS.get(task_kind)
    task = _tiny_task(name, task_kind)
    files = datasets(task_kind)
    official_task = kind.build_task(task, files.data_spec(), BudgetSpec(batch_size=1))
    shape = kind.input_shape(task)
    for arch in (_random_arch(space, seed=1), space.reference()):
        if arch is None:
            continue
        input_specs = tf_keras.layers.InputSpec(shape=[None, *shape])
        network = space.build_network(arch, task, input_specs)
        assert isinstance(network, Network)
        model = kind.build_model(official_task, network)
        outputs = model(tf.zeros([1, *shape]), training=True)
        leaves = tf.nest.flatten(outputs)
        assert leaves and all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in leaves)


@pytest.mark.parametrize(("name", "task_kind"), TORCH_PAIRS)
def test_the_torch_module_builds_and_runs_forward(name, task_kind):
    torch = pytest.importorskip("torch")
    from kfnas.torch.networks import TORCH_NETWORKS

    space, kind = get_space(name), TASKS.get(task_kind)
    task = _tiny_task(name, task_kind)
    shape = kind.input_shape(task)
    for arch in (_random_arch(space, seed=1), space.reference()):
        if arch is None:
            continue
        module = TORCH_NETWORKS.get(name)(arch, task)
        logits = module(torch.zeros((2, *shape)))
        spatial = shape[1:] if task_kind == "segmentation_3d" else ()
        assert tuple(logits.shape) == (2, task.num_classes, *spatial)
        assert bool(torch.isfinite(logits).all())
