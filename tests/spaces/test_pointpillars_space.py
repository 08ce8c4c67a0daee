"""Tests for the ``pointpillars`` space: its decisions, its reference and the network it builds.

The parameter counts are checked against ``expected_params``, which counts the weights of every
block from its layer shapes as official.vision's ``nn_blocks`` define them (conv kernels, batch
norm, squeeze-excite, projections, expansions), without asking Keras.
"""

from __future__ import annotations

import functools
import os
import random
import re
import subprocess
import sys
from typing import Any

import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import TaskSpec
from kfnas.spaces import SearchSpace, declared_options, get_space
from kfnas.spaces import pointpillars as pp
from kfnas.spaces.base import (
    Network,
    architecture_json,
    dna_spec,
    load_architecture,
    materialize,
)
from kfnas.spaces.nasfpn import TASK_OPTIONS as NASFPN_OPTIONS

#: Vertex reference section 1.9: 18 * 648**5 * 288**3.
EXPECTED_SIZE = 49127537715718523977728
#: Features per pillar point that the lidar task feeds (kfnas.tasks.pillars.POINT_FEATURES).
POINT_FEATURES = 10
#: The small input of the network tests: points [1, 16 pillars, 8 points, 10], a 32x32 BEV grid.
PILLARS, POINTS, GRID = 16, 8, 32


def lidar_task(**options: Any) -> TaskSpec:
    return TaskSpec(kind="lidar_detection", num_classes=2, options=dict(options))


@functools.cache
def cached_spec() -> pg.DNASpec:
    return dna_spec(pp.POINTPILLARS)


def random_arch(seed: int) -> pp.PointPillarsArchitecture:
    dna = pg.random_dna(cached_spec(), random_generator=random.Random(seed))
    return materialize(pp.POINTPILLARS, dna)


# --- the space (no TensorFlow) --------------------------------------------------------------


def test_registered_and_follows_the_protocol() -> None:
    space = get_space("pointpillars")
    assert space is pp.POINTPILLARS
    assert isinstance(space, SearchSpace)
    assert space.tasks == ("lidar_detection",)
    assert pg.eq(space.hyper(), space.hyper())


def test_size_and_decision_points_match_vertex() -> None:
    spec = cached_spec()
    assert EXPECTED_SIZE == 18 * 648**5 * 288**3
    assert spec.space_size == EXPECTED_SIZE
    assert len(spec.decision_points) == 56
    ids = [str(dp.id) for dp in spec.decision_points]
    by_part = {part: [i for i in ids if i.startswith(part + "[")] for part in pp.PARTS}
    assert [len(by_part[p]) for p in pp.PARTS] == [3, 35, 18]
    assert ids[:3] == [
        "featurizer[0].block_repeats",
        "featurizer[0].activation_fn",
        "featurizer[0].output_filters",
    ]


def test_candidates_follow_vertex() -> None:
    candidates = {str(dp.id): list(dp.literal_values) for dp in cached_spec().decision_points}
    assert candidates["featurizer[0].output_filters"] == [48, 64, 80]
    assert candidates["backbone[0].output_filters"] == [48, 64, 80]
    assert candidates["backbone[2].output_filters"] == [96, 128, 160]
    assert candidates["backbone[4].output_filters"] == [192, 256, 320]
    assert candidates["backbone[1].block_fn"] == ["'residual'", "'bottleneck'", "'mbconv'"]
    assert candidates["decoder[0].block_fn"] == [
        "'conv'",
        "'residual'",
        "'bottleneck'",
        "'mbconv'",
    ]
    assert candidates["decoder[2].expand_ratio"] == [1, 3, 6]
    assert candidates["decoder[1].se_ratio"] == [0.0, 0.25]
    assert candidates["backbone[3].kernel_size"] == [3, 5]
    assert candidates["featurizer[0].activation_fn"] == ["'swish'", "'relu'"]
    assert "decoder[0].output_filters" not in candidates  # fixed 128
    arch = random_arch(3)
    assert [b.level for b in arch.backbone] == [1, 2, 2, 3, 3]
    assert [b.level for b in arch.decoder] == [1, 2, 3]
    assert {b.output_filters for b in arch.decoder} == {128}
    assert (arch.featurizer[0].block_fn, arch.featurizer[0].kernel_size) == ("conv", 1)


def test_the_reference_materializes_from_a_dna_of_the_space() -> None:
    space = pp.POINTPILLARS
    reference = space.reference()
    dna = pg.template(space.hyper()).encode(reference)
    dna.use_spec(cached_spec())
    assert pg.eq(materialize(space, dna), reference)
    assert pp.block_specs(reference) == {p: list(b) for p, b in pp.PUBLISHED_BLOCKS.items()}
    assert reference.backbone[1] == pp.PointPillarsBlock("bottleneck", 3, 5, 3, 0.0, "relu", 160, 2)


def test_an_architecture_round_trips_through_its_record() -> None:
    dna = pg.random_dna(cached_spec(), random_generator=random.Random(7))
    text = architecture_json(pp.POINTPILLARS, dna)
    assert pg.eq(load_architecture(pp.POINTPILLARS, text), materialize(pp.POINTPILLARS, dna))


def test_outside_the_space_is_refused() -> None:
    blocks = dict(pp.PUBLISHED_BLOCKS)
    blocks["backbone"] = (("mbconv", 2, 5, 1, 0.0, "relu", 72, 1), *blocks["backbone"][1:])
    with pytest.raises(ValueError, match="not inside pointpillars"):
        pp.POINTPILLARS.encode(blocks)


def test_task_problems() -> None:
    space = pp.POINTPILLARS
    assert space.task_problems(lidar_task()) == []
    assert space.task_problems(lidar_task(decoder_num_filters=64, filter_size_scale=0.5)) == []
    (backbone,) = space.task_problems(lidar_task(backbone="resnet10"))
    assert "remove task.options.backbone" in backbone
    (width,) = space.task_problems(lidar_task(decoder_num_filters=30))
    assert "divisible by 4" in width and "use e.g. 32" in width
    assert "use e.g. 8" in space.task_problems(lidar_task(decoder_num_filters=4))[0]


def test_its_knobs_are_declared_as_nasfpn_declares_them() -> None:
    own = declared_options("lidar_detection", [pp.POINTPILLARS])
    assert set(own) == {"filter_size_scale", "decoder_num_filters"}
    for key, option in own.items():
        theirs = NASFPN_OPTIONS[key]
        assert (option.default, option.expected) == (theirs.default, theirs.expected)
        for value in (0, 0.5, 1, 8, 128, -1, "x", True):
            assert option.check(value) == theirs.check(value)


def test_scale_filters_rounds_to_multiples_of_8() -> None:
    assert [pp.scale_filters(f, 1.0) for f in (48, 64, 80, 320)] == [48, 64, 80, 320]
    assert [pp.scale_filters(f, 0.25) for f in (48, 80, 128, 20)] == [16, 24, 32, 8]
    with pytest.raises(ValueError):
        pp.scale_filters(64, 0)


def test_proposing_imports_no_tensorflow() -> None:
    code = (
        "import sys\n"
        "from kfnas.spaces import get_space\n"
        "from kfnas.spaces.base import dna_spec\n"
        "space = get_space('pointpillars')\n"
        "dna_spec(space); space.reference()\n"
        "heavy = [n for n in ('tensorflow', 'official', 'keras', 'tf_keras') if n in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- parameters from the layer shapes (independent of Keras) --------------------------------


def bn(channels: int) -> int:
    """Batch norm: gamma, beta, moving mean, moving variance."""
    return 4 * channels


def conv(kernel: int, cin: int, cout: int) -> int:
    """A conv kernel without bias."""
    return kernel * kernel * cin * cout


def squeeze_excite(base: int, ratio: float, channels: int) -> int:
    """official.vision's ``SqueezeExcitation``: 1x1 reduce and expand convs, both with bias.

    The reduced width is ``max(1, int(base * ratio))`` (``base``: the block's input width for
    mbconv, its output width for residual and bottleneck blocks).
    """
    if not ratio:
        return 0
    reduced = max(1, int(base * ratio))
    return channels * reduced + reduced + reduced * channels + channels


def block_params(
    block_fn: str, cin: int, cout: int, strides: int, kernel: int, expand: int, se: float
) -> int:
    """One repeat of a block, as official.vision's ``nn_blocks`` (and the ``conv`` block) build."""
    projection = not (cin == cout and strides == 1)
    if block_fn == "conv":
        return conv(kernel, cin, cout) + bn(cout)
    if block_fn == "residual":  # two 3x3 convs; 1x1 projection shortcut
        shortcut = conv(1, cin, cout) + bn(cout) if projection else 0
        body = conv(3, cin, cout) + bn(cout) + conv(3, cout, cout) + bn(cout)
        return shortcut + body + squeeze_excite(cout, se, cout)
    if block_fn == "bottleneck":  # 1x1 -> 3x3 -> 1x1 (4x), inner width cout / 4
        inner = cout // 4
        shortcut = conv(1, cin, 4 * inner) + bn(4 * inner) if projection else 0
        body = (
            conv(1, cin, inner)
            + bn(inner)
            + conv(3, inner, inner)
            + bn(inner)
            + conv(1, inner, 4 * inner)
            + bn(4 * inner)
        )
        return shortcut + body + squeeze_excite(4 * inner, se, 4 * inner)
    if block_fn == "mbconv":  # 1x1 expansion (only when expand > 1), depthwise, SE, projection
        wide = cin * expand
        expansion = conv(1, cin, wide) + bn(wide) if expand > 1 else 0
        depthwise = kernel * kernel * wide + bn(wide)
        project = conv(1, wide, cout) + bn(cout)
        return expansion + depthwise + squeeze_excite(cin, se, wide) + project
    raise AssertionError(block_fn)


def expected_params(
    arch: pp.PointPillarsArchitecture,
    point_features: int = POINT_FEATURES,
    scale: float = 1.0,
    decoder_width: int | None = None,
) -> dict[str, int]:
    """The parameters of featurizer, backbone and decoder of ``arch``, from the layer shapes."""

    def width(filters: int) -> int:
        return max(8, int(filters * scale / 8 + 0.5) * 8)

    counts = {"featurizer": 0, "backbone": 0, "decoder": 0}
    cin = point_features
    for b in arch.featurizer:
        for _ in range(b.block_repeats):
            counts["featurizer"] += conv(1, cin, width(b.output_filters)) + bn(
                width(b.output_filters)
            )
            cin = width(b.output_filters)
    level_width, previous = {}, None
    for b in arch.backbone:
        cout = width(b.output_filters)
        for i in range(b.block_repeats):
            strides = 2 if i == 0 and b.level != previous else 1
            counts["backbone"] += block_params(
                b.block_fn, cin, cout, strides, b.kernel_size, b.expand_ratio, b.se_ratio
            )
            cin = cout
        level_width[b.level], previous = cout, b.level
    for b in arch.decoder:
        cout = decoder_width or b.output_filters
        inputs = [level_width[b.level]] + [cout] * (b.block_repeats - 1)  # pre-hoc
        inputs += [cout] * b.block_repeats  # post-hoc
        for cin in inputs:
            counts["decoder"] += block_params(
                b.block_fn, cin, cout, 1, b.kernel_size, b.expand_ratio, b.se_ratio
            )
    return counts


def test_the_stated_parameter_count_is_the_count_from_the_layer_shapes() -> None:
    counts = expected_params(pp.POINTPILLARS.reference())
    assert counts == {"featurizer": 896, "backbone": 389_680, "decoder": 4_822_016}
    assert sum(counts.values()) == pp.REFERENCE_NUM_PARAMS
    stated = re.search(r"\*\*([\d,]+)\*\* parameters", pp.__doc__ or "")
    assert stated and int(stated.group(1).replace(",", "")) == pp.REFERENCE_NUM_PARAMS


# --- the network (TensorFlow) ---------------------------------------------------------------


def run_network(network: Network, seed: int = 0) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The three parts on points [1, 16, 8, 10] (half the points real) and a 32x32 BEV grid."""
    import tensorflow as tf

    points = tf.random.stateless_normal([1, PILLARS, POINTS, POINT_FEATURES], seed=[seed, 1])
    mask = tf.cast(tf.range(POINTS) < POINTS // 2, tf.float32)[None, None, :]
    mask = tf.tile(mask, [1, PILLARS, 1])
    pillars = network.featurizer(points, mask=mask, training=False)
    bev = tf.random.stateless_normal([1, GRID, GRID, pillars.shape[-1]], seed=[seed, 2])
    levels = network.backbone(bev, training=False)
    decoded = network.decoder(levels, training=False)
    return pillars, levels, decoded


def count(network: Network) -> dict[str, int]:
    return {
        "featurizer": network.featurizer.count_params(),
        "backbone": network.backbone.count_params(),
        "decoder": network.decoder.count_params(),
    }


@pytest.fixture(scope="module")
def reference_network() -> tuple[Network, tuple[Any, dict[str, Any], dict[str, Any]]]:
    network = pp.POINTPILLARS.build_network(pp.POINTPILLARS.reference(), lidar_task(), None)
    return network, run_network(network)


@pytest.mark.tf
def test_the_reference_runs_at_strides_2_4_8(reference_network) -> None:
    import tensorflow as tf

    network, (pillars, levels, decoded) = reference_network
    assert pillars.shape == (1, PILLARS, 64)
    assert {k: tuple(v.shape) for k, v in levels.items()} == {
        "1": (1, 16, 16, 80),
        "2": (1, 8, 8, 128),
        "3": (1, 4, 4, 256),
    }
    assert {k: tuple(v.shape) for k, v in decoded.items()} == {
        "1": (1, 16, 16, 128),
        "2": (1, 8, 8, 128),
        "3": (1, 4, 4, 128),
    }
    assert all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in decoded.values())
    assert {k: tuple(v) for k, v in network.backbone.output_specs.items()} == {
        k: tuple(v.shape) for k, v in levels.items()
    }
    assert {k: tuple(v) for k, v in network.decoder.output_specs.items()} == {
        k: tuple(v.shape) for k, v in decoded.items()
    }


@pytest.mark.tf
def test_the_reference_has_the_stated_parameter_count(reference_network) -> None:
    network, _ = reference_network
    counts = count(network)
    assert counts == expected_params(pp.POINTPILLARS.reference())
    assert sum(counts.values()) == pp.REFERENCE_NUM_PARAMS


@pytest.mark.tf
@pytest.mark.parametrize("training", [False, True])
def test_masked_points_do_not_change_the_featurizer(training: bool) -> None:
    import numpy as np
    import tensorflow as tf

    network = pp.POINTPILLARS.build_network(random_arch(0), lidar_task(), None)
    featurizer = network.featurizer
    points = tf.random.stateless_normal([2, PILLARS, POINTS, POINT_FEATURES], seed=[3, 4])
    real = tf.random.stateless_uniform([2, PILLARS, POINTS], seed=[5, 6]) < 0.6
    mask = tf.cast(real, tf.float32)
    noise = 100.0 * tf.random.stateless_normal(points.shape, seed=[7, 8])
    other = tf.where(real[..., None], points, noise)  # only the padded points change
    first = featurizer(points, mask=mask, training=training)
    second = featurizer(other, mask=mask, training=training)
    np.testing.assert_allclose(first.numpy(), second.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.tf
def test_the_featurizer_takes_the_max_over_real_points_only(reference_network) -> None:
    import numpy as np
    import tensorflow as tf

    featurizer = reference_network[0].featurizer
    points = tf.random.stateless_normal([1, PILLARS, POINTS, POINT_FEATURES], seed=[9, 10])
    mask = np.zeros([1, PILLARS, POINTS], np.float32)
    mask[0, :, :3] = 1.0  # the first 3 points of every pillar are real...
    mask[0, 5, :] = 0.0  # ...except in pillar 5, which has none
    out = featurizer(points, mask=tf.constant(mask), training=False).numpy()
    alone = featurizer(points[:, :, :3], training=False).numpy()  # per point at inference
    keep = np.arange(PILLARS) != 5
    np.testing.assert_allclose(out[0, keep], alone[0, keep], rtol=1e-5, atol=1e-5)
    assert not np.any(out[0, 5])  # a pillar without a real point gives zeros


@pytest.mark.tf
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_architectures_build_and_run(seed: int) -> None:
    import tensorflow as tf

    arch = random_arch(seed)
    network = pp.POINTPILLARS.build_network(arch, lidar_task(), None)
    pillars, _, decoded = run_network(network, seed)
    assert pillars.shape == (1, PILLARS, arch.featurizer[0].output_filters)
    assert [tuple(decoded[str(level)].shape) for level in (1, 2, 3)] == [
        (1, 16, 16, 128),
        (1, 8, 8, 128),
        (1, 4, 4, 128),
    ]
    assert all(bool(tf.reduce_all(tf.math.is_finite(t))) for t in decoded.values())
    assert count(network) == expected_params(arch)


@pytest.mark.tf
def test_filter_size_scale_and_decoder_width_shrink_the_network(reference_network) -> None:
    reference = pp.POINTPILLARS.reference()
    task = lidar_task(filter_size_scale=0.25, decoder_num_filters=32)
    network = pp.POINTPILLARS.build_network(reference, task, None)
    pillars, levels, decoded = run_network(network)
    assert pillars.shape[-1] == 16
    assert [levels[k].shape[-1] for k in ("1", "2", "3")] == [24, 32, 64]
    assert {v.shape[-1] for v in decoded.values()} == {32}
    counts = count(network)
    assert counts == expected_params(reference, scale=0.25, decoder_width=32)
    assert sum(counts.values()) < sum(count(reference_network[0]).values()) / 10


def test_build_network_refuses_a_bad_task() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        pp.POINTPILLARS.build_network(
            pp.POINTPILLARS.reference(), lidar_task(decoder_num_filters=30), None
        )
