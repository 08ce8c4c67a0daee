"""Tests for the 3-D medical UNet spaces (kfnas.spaces.unet); no torch, no TensorFlow."""

from __future__ import annotations

import functools
import random
import subprocess
import sys

import pyglove as pg
import pytest

from kfnas.config.spec import TaskSpec
from kfnas.spaces.base import (
    SearchSpace,
    architecture_json,
    declared_options,
    dna_spec,
    load_architecture,
    materialize,
)
from kfnas.spaces.nasfpn import NasFpnArchitecture, block_specs
from kfnas.spaces.options import merge, table_problems
from kfnas.spaces.unet import (
    UNET_BASELINE,
    UNET_ENCODER,
    UNET_NASFPN,
    UNetBaselineArchitecture,
    UNetEncoderArchitecture,
    plain_unet,
    resolved_options,
)

SPACES = {s.name: s for s in (UNET_ENCODER, UNET_NASFPN, UNET_BASELINE)}
NAMES = list(SPACES)
# Reference section 1.10: 216**4 * 2; (4*2*6) * (4*2*10) * 2**4 * 15*21*28*36 * 4!; 1.
EXPECTED = {
    "unet_encoder": (4353564672, 25),
    "unet_nasfpn": (468202291200, 24),
    "unet_baseline": (1, 1),
}


@functools.cache
def cached_spec(name: str) -> pg.DNASpec:
    return dna_spec(SPACES[name])


def random_dna(name: str, seed: int) -> pg.DNA:
    return pg.random_dna(cached_spec(name), random_generator=random.Random(seed))


def task(image_size: int = 32, **options: object) -> TaskSpec:
    return TaskSpec(kind="segmentation_3d", num_classes=3, image_size=image_size, options=options)


@pytest.mark.parametrize("name", NAMES)
def test_size_and_decision_points_match_vertex(name: str) -> None:
    size, points = EXPECTED[name]
    spec = cached_spec(name)
    assert spec.space_size == size
    assert len(spec.decision_points) == points
    assert isinstance(SPACES[name], SearchSpace)
    assert SPACES[name].tasks == ("segmentation_3d",)


def test_size_formulas() -> None:
    assert EXPECTED["unet_encoder"][0] == 216**4 * 2
    expected = (4 * 2 * 6) * (4 * 2 * 10) * 2**4 * 15 * 21 * 28 * 36 * 24
    assert EXPECTED["unet_nasfpn"][0] == expected


def test_encoder_decision_ids_and_candidates() -> None:
    points = {
        str(p.id): [str(v) for v in p.literal_values]
        for p in cached_spec("unet_encoder").decision_points
    }
    fields = ("block_type", "num_filters", "num_repeats", "kernel_size", "id_skip", "se_ratio")
    assert list(points) == [f"blocks[{i}].{f}" for i in range(4) for f in fields] + ["activation"]
    assert points["blocks[0].block_type"] == ["'basic_block'", "'bottleneck_block'"]
    for i, f in enumerate((32, 64, 128, 256)):
        assert points[f"blocks[{i}].num_filters"] == [
            str(int(0.75 * f)),
            str(f),
            str(int(1.25 * f)),
        ]
    assert points["blocks[3].num_repeats"] == ["1", "2", "3"]
    assert points["blocks[2].kernel_size"] == ["3", "5"]
    assert points["blocks[1].id_skip"] == ["False", "True"]
    assert points["blocks[0].se_ratio"] == ["0.0", "0.25", "0.5"]
    assert points["activation"] == ["'relu'", "'swish'"]


def test_nasfpn_decision_ids_and_candidates() -> None:
    points = {str(p.id): p.literal_values for p in cached_spec("unet_nasfpn").decision_points}
    intermediate = [
        f"intermediate_blocks[{i}].{field}"
        for i in range(2)
        for field in ("level", "combine_fn", "input_offsets[0]", "input_offsets[1]")
    ]
    outputs = [
        f"output_blocks[{j}].{field}"
        for j in range(4)
        for field in ("combine_fn", "input_offsets[0]", "input_offsets[1]")
    ]
    levels = [f"output_block_levels[{k}]" for k in range(4)]
    assert list(points) == intermediate + outputs + levels
    assert points["intermediate_blocks[0].level"] == [1, 2, 3, 4]
    assert points["intermediate_blocks[1].combine_fn"] == ["'sum'", "'attention'"]
    assert points["intermediate_blocks[0].input_offsets[0]"] == list(range(4))
    assert points["intermediate_blocks[1].input_offsets[1]"] == list(range(5))
    for j in range(4):
        assert points[f"output_blocks[{j}].input_offsets[0]"] == list(range(6 + j))
    assert points["output_block_levels[2]"] == [1, 2, 3, 4]


def test_random_nasfpn_cells_are_valid() -> None:
    for seed in range(10):
        specs = block_specs(materialize(UNET_NASFPN, random_dna("unet_nasfpn", seed)))
        assert [s[3] for s in specs] == [False, False, True, True, True, True]
        assert sorted(s[0] for s in specs[2:]) == [1, 2, 3, 4]  # a permutation
        for index, (level, combine_fn, (first, second), _) in enumerate(specs):
            assert first < second < 4 + index
            assert combine_fn in ("sum", "attention")
            assert 1 <= level <= 4


@pytest.mark.parametrize("name", NAMES)
def test_random_architectures_round_trip_through_json(name: str) -> None:
    space = SPACES[name]
    classes = {
        "unet_encoder": UNetEncoderArchitecture,
        "unet_nasfpn": NasFpnArchitecture,
        "unet_baseline": UNetBaselineArchitecture,
    }
    for seed in range(3):
        dna = random_dna(name, seed)
        arch = materialize(space, dna)
        assert isinstance(arch, classes[name]) and arch.is_deterministic
        text = architecture_json(space, dna)
        assert pg.eq(load_architecture(space, text), arch)


def test_encoder_reference_is_the_plain_unet_from_a_dna() -> None:
    reference = UNET_ENCODER.reference()
    assert pg.eq(reference, plain_unet())
    dna = UNET_ENCODER.encode(reference)
    assert pg.eq(materialize(UNET_ENCODER, dna), reference)
    assert [b.num_filters for b in reference.blocks] == [32, 64, 128, 256]
    assert {
        (b.block_type, b.num_repeats, b.kernel_size, b.id_skip, b.se_ratio)
        for b in reference.blocks
    } == {("basic_block", 1, 3, False, 0.0)}
    assert reference.activation == "relu"


def test_encode_refuses_a_value_outside_the_space() -> None:
    outside = plain_unet(base_filters=(32, 64, 128, 512))
    with pytest.raises(ValueError, match="not inside unet_encoder"):
        UNET_ENCODER.encode(outside)


def test_other_references() -> None:
    assert UNET_NASFPN.reference() is None
    baseline = UNET_BASELINE.reference()
    assert pg.eq(baseline, UNetBaselineArchitecture(dummy_param=1))
    assert pg.eq(materialize(UNET_BASELINE, pg.DNA(0)), baseline)


@pytest.mark.parametrize("name", NAMES)
def test_task_problems_refuse_sizes_the_levels_do_not_fit(name: str) -> None:
    space = SPACES[name]
    (problem,) = space.task_problems(task(30))
    assert "task.image_size 30 is not divisible by 8" in problem
    assert "use 32" in problem
    (small,) = space.task_problems(task(8))
    assert "task.image_size 8 is too small" in small and "16" in small
    assert space.task_problems(task(16)) == []
    assert space.task_problems(task(96)) == []


def test_task_options_tables() -> None:
    shared = {"filter_size_scale": 1.0, "in_channels": 1}
    for space in (UNET_ENCODER, UNET_BASELINE):
        assert {k: o.default for k, o in declared_options(space).items()} == shared
    nasfpn = {k: o.default for k, o in declared_options(UNET_NASFPN).items()}
    assert nasfpn == {**shared, "decoder_num_filters": 16, "decoder_num_repeats": 2}
    # The three spaces serve one task kind: their shared knobs agree, so merging keeps them.
    merged = merge(declared_options(s) for s in SPACES.values())
    assert {k: o.default for k, o in merged.items()} == nasfpn
    ok = {"filter_size_scale": 0.125, "in_channels": 4, "decoder_num_filters": 8}
    assert table_problems("segmentation_3d", ok, merged) == []
    bad = {"filter_size_scale": 0, "in_channels": 0, "decoder_num_repeats": 1.5}
    assert len(table_problems("segmentation_3d", bad, merged)) == 3


def test_resolved_options() -> None:
    opts = resolved_options(UNET_NASFPN, task(filter_size_scale=0.5, min_level=1))
    assert opts == {
        "filter_size_scale": 0.5,
        "in_channels": 1,
        "decoder_num_filters": 16,
        "decoder_num_repeats": 2,
    }
    assert resolved_options(UNET_ENCODER, task()) == {"filter_size_scale": 1.0, "in_channels": 1}
    with pytest.raises(ValueError, match=r"task\.options\.filter_size_scale must be a number > 0"):
        resolved_options(UNET_ENCODER, task(filter_size_scale=-1.0))


def test_build_network_refuses_a_bad_task_before_importing_torch() -> None:
    arch = UNET_BASELINE.reference()
    with pytest.raises(ValueError, match="not divisible by 8"):
        UNET_BASELINE.build_network(arch, task(30), None)


def test_importing_the_spaces_stays_cheap() -> None:
    code = (
        "import sys, kfnas.spaces.unet as u; u.UNET_ENCODER.hyper(); u.UNET_NASFPN.hyper(); "
        "heavy = [m for m in ('torch', 'tensorflow', 'monai') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
