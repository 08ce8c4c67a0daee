"""Tests for the NAS-FPN search space (kfnas.spaces.nasfpn)."""

from __future__ import annotations

import functools
import math
import os
import random

import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import TaskSpec
from kfnas.spaces import SPACES, SearchSpace, get_space
from kfnas.spaces.base import architecture_json, dna_spec, materialize
from kfnas.spaces.nasfpn import (
    BACKBONES,
    NASFPN,
    PUBLISHED_CELL,
    NasFpnArchitecture,
    NasFpnSpace,
    block_specs,
)


@functools.cache
def cached_spec() -> pg.DNASpec:
    return dna_spec(NASFPN)


def random_arch(seed: int) -> NasFpnArchitecture:
    return materialize(NASFPN, pg.random_dna(cached_spec(), random.Random(seed)))


def test_size_and_decision_points_match_vertex() -> None:
    spec = cached_spec()
    assert spec.space_size == 1931334451200000
    expected = (4 * 2 * 10) * (4 * 2 * 15) * 2**5 * 21 * 28 * 36 * 45 * 55 * 120
    assert spec.space_size == expected
    assert len(spec.decision_points) == 28


def test_decision_ids_and_candidates_match_vertex() -> None:
    points = {str(p.id): p for p in cached_spec().decision_points}
    intermediate = [
        f"intermediate_blocks[{i}].{field}"
        for i in range(2)
        for field in ("level", "combine_fn", "input_offsets[0]", "input_offsets[1]")
    ]
    outputs = [
        f"output_blocks[{j}].{field}"
        for j in range(5)
        for field in ("combine_fn", "input_offsets[0]", "input_offsets[1]")
    ]
    levels = [f"output_block_levels[{k}]" for k in range(5)]
    assert list(points) == intermediate + outputs + levels
    assert points["intermediate_blocks[1].level"].literal_values == [4, 5, 6, 7]
    # PyGlove keeps string candidates as their repr in literal_values.
    assert points["intermediate_blocks[0].combine_fn"].literal_values == ["'sum'", "'attention'"]
    assert points["output_blocks[4].combine_fn"].literal_values == ["'sum'", "'attention'"]
    # Input indices are absolute: 5 inputs, then the nodes before this one.
    assert points["intermediate_blocks[0].input_offsets[0]"].literal_values == list(range(5))
    assert points["intermediate_blocks[1].input_offsets[1]"].literal_values == list(range(6))
    for j in range(5):
        candidates = points[f"output_blocks[{j}].input_offsets[0]"].literal_values
        assert candidates == list(range(7 + j))
    assert points["output_block_levels[3]"].literal_values == [3, 4, 5, 6, 7]


def test_materialized_cells_are_valid_block_specs() -> None:
    for seed in range(20):
        specs = block_specs(random_arch(seed))
        assert [s[3] for s in specs] == [False, False, True, True, True, True, True]
        assert sorted(s[0] for s in specs[2:]) == [3, 4, 5, 6, 7]
        for index, (level, combine_fn, (first, second), _) in enumerate(specs):
            assert first < second < 5 + index  # distinct, sorted, only earlier features
            assert combine_fn in ("sum", "attention")
            assert 3 <= level <= 7
        assert all(s[0] in (4, 5, 6, 7) for s in specs[:2])


def test_reference_is_the_published_cell_inside_the_space() -> None:
    reference = NASFPN.reference()
    assert block_specs(reference) == list(PUBLISHED_CELL)
    dna = NASFPN.encode(PUBLISHED_CELL)
    assert materialize(NASFPN, dna) == reference
    assert dna.parameters(use_literal_values=True)["output_block_levels[3]"] == "4/5 (7)"


def test_a_cell_outside_the_space_is_refused() -> None:
    outside = [(3, "sum", (1, 3), False), *PUBLISHED_CELL[1:]]  # intermediate level 3
    with pytest.raises(ValueError, match="not inside nasfpn"):
        NASFPN.encode(outside)


def test_architecture_json_round_trips() -> None:
    dna = pg.random_dna(cached_spec(), random.Random(4))
    text = architecture_json(NASFPN, dna)
    rebuilt = pg.from_json_str(text)
    assert isinstance(rebuilt, NasFpnArchitecture)
    assert rebuilt == materialize(NASFPN, dna)
    assert block_specs(rebuilt) == block_specs(materialize(NASFPN, dna))
    assert pg.DNA.from_json(pg.DNA.to_json(dna)) == dna


def test_hyper_is_stable_and_registered() -> None:
    assert pg.eq(NASFPN.hyper(), NASFPN.hyper())
    assert get_space("nasfpn") is NASFPN
    assert "nasfpn" in SPACES.names()
    assert isinstance(NASFPN, SearchSpace)
    assert NASFPN.tasks == ("detection", "segmentation")


def test_the_medical_variant_has_the_vertex_size() -> None:
    # Vertex's 3-D medical tunable_unet_nasfpn: levels 1..4, candidates [1, 2, 3, 4].
    medical = NasFpnSpace(
        name="unet_nasfpn", min_level=1, max_level=4, level_candidates=(1, 2, 3, 4)
    )
    size = 48 * 80 * (2**4 * 15 * 21 * 28 * 36) * math.factorial(4)
    assert dna_spec(medical).space_size == size == 468202291200
    with pytest.raises(ValueError, match="not inside unet_nasfpn"):
        medical.reference()  # The published cell has 5 outputs, this variant 4.


def test_task_problems_accept_the_default_backbone() -> None:
    assert NASFPN.task_problems(TaskSpec(image_size=128)) == []
    assert (
        NASFPN.task_problems(TaskSpec(image_size=256, options={"backbone": "mobilenet_v2"})) == []
    )


def test_task_problems_list_the_backbones_it_takes() -> None:
    problems = NASFPN.task_problems(TaskSpec(image_size=128, options={"backbone": "resnet51"}))
    assert problems == [
        "task.options.backbone 'resnet51' is not a backbone nasfpn can sit on (did you mean "
        f"'resnet50'?); use one of {', '.join(BACKBONES)}"
    ]
    assert (
        "spinenet"
        in NASFPN.task_problems(TaskSpec(image_size=128, options={"backbone": "spinenet"}))[0]
    )


def test_task_problems_refuse_a_backbone_whose_levels_miss_the_decoder() -> None:
    # A variant whose cell starts at level 1: the backbones' endpoints start at level 2.
    low = NasFpnSpace(name="low_fpn", min_level=1, max_level=4, level_candidates=(1, 2, 3, 4))
    assert low.task_problems(TaskSpec(image_size=128, options={"backbone": "resnet18"})) == [
        "task.options.backbone 'resnet18' has endpoint levels 2..5, which do not reach the "
        "decoder's min level 1: use one of (none)"
    ]


def test_task_problems_refuse_levels_and_image_sizes_the_cell_cannot_serve() -> None:
    problems = NASFPN.task_problems(TaskSpec(image_size=64, options={"min_level": 2}))
    assert problems == [
        "task.options.min_level 2 is outside the levels 3..7 that the nasfpn decoder outputs: "
        "pick one inside",
        "task.image_size 64 is not a multiple of 128: the nasfpn decoder always builds levels "
        "3..7 (stride 2**7); use e.g. 128",
    ]


@pytest.mark.tf
def test_published_cell_and_backbone_levels_match_tf_models() -> None:
    import tf_keras
    from official.vision.modeling.decoders import nasfpn

    assert [tuple(spec) for spec in nasfpn.NASFPN_BLOCK_SPECS] == list(PUBLISHED_CELL)
    input_specs = tf_keras.layers.InputSpec(shape=[None, 128, 128, 3])
    small = {"decoder_num_filters": 8, "decoder_num_repeats": 1, "filter_size_scale": 0.25}
    for name in ("resnet10", "resnet50", "mobilenet_v2", "mobilenet_v3_small"):
        task = TaskSpec(image_size=128, options={"backbone": name, **small})
        network = NASFPN.build_network(NASFPN.reference(), task, input_specs)
        levels = sorted(int(level) for level in network.backbone.output_specs)
        assert tuple(levels) == BACKBONES[name].levels, name
        assert {k: v.as_list() for k, v in network.decoder.output_specs.items()} == {
            str(level): [None, 128 >> level, 128 >> level, 8] for level in range(3, 8)
        }
