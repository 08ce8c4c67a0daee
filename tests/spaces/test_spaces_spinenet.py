"""Tests for the SpineNet family of search spaces (kfnas.spaces.spinenet)."""

from __future__ import annotations

import functools
import itertools
import math
import random
import subprocess
import sys

import pyglove as pg
import pytest

from kfnas.spaces import SPACES, SearchSpace, get_space
from kfnas.spaces.base import architecture_json, dna_spec, materialize
from kfnas.spaces.spinenet import (
    NUM_STEM_BLOCKS,
    SPINENET,
    SPINENET_MBCONV,
    SPINENET_V2,
    SpineNetArchitecture,
    SpineNetSpace,
    block_specs,
    tf_module_name,
    to_tf_block_specs,
)

SPACES_UNDER_TEST = [SPINENET, SPINENET_V2, SPINENET_MBCONV]
IDS = [space.name for space in SPACES_UNDER_TEST]

EXPECTED = {
    # name: (space_size, decision points, intermediate blocks)
    "spinenet": (484177669814682145331078879615385600000, 75, 11),
    "spinenet_v2": (764783588047793273280921600000, 70, 10),
    "spinenet_mbconv": (7387964932475008321091901849600000, 75, 11),
}


@functools.cache
def cached_spec(name: str) -> pg.DNASpec:
    # Building a DNA spec takes ~0.4 s; every test reads the same three.
    return dna_spec(get_space(name))


def random_dna(space: SpineNetSpace, seed: int) -> pg.DNA:
    return pg.random_dna(cached_spec(space.name), random_generator=random.Random(seed))


def random_arch(space: SpineNetSpace, seed: int) -> SpineNetArchitecture:
    return materialize(space, random_dna(space, seed))


@pytest.mark.parametrize("space", SPACES_UNDER_TEST, ids=IDS)
def test_space_size_and_decision_points_match_vertex(space: SpineNetSpace) -> None:
    spec = cached_spec(space.name)
    size, num_decisions, _ = EXPECTED[space.name]
    assert spec.space_size == size
    assert len(spec.decision_points) == num_decisions


def test_spinenet_size_matches_closed_form() -> None:
    # 11! * 4^11 * 2^11 * (1 * 3 * 6^9) * 2^5 * prod C(13 + j, 2) * 5!  (reference section 1.6)
    outputs = math.prod(math.comb(13 + j, 2) for j in range(5))
    closed = math.factorial(11) * 4**11 * 2**11 * 3 * 6**9 * 2**5 * outputs * math.factorial(5)
    assert cached_spec("spinenet").space_size == closed


def test_decision_ids_follow_vertex_naming() -> None:
    ids = {str(dp.id) for dp in cached_spec("spinenet").decision_points}
    for expected in (
        "intermediate_block_levels[10]",
        "intermediate_blocks[7].level_offset",
        "intermediate_blocks[7].block_fn",
        "intermediate_blocks[1].input_offsets[0]",
        "output_blocks[4].input_offsets[1]",
        "output_block_levels[3]",
    ):
        assert expected in ids
    assert not any("output_blocks" in i and "level_offset" in i for i in ids)


@pytest.mark.parametrize("space", SPACES_UNDER_TEST, ids=IDS)
def test_hyper_is_stable(space: SpineNetSpace) -> None:
    assert pg.eq(space.hyper(), space.hyper())
    assert isinstance(space, SearchSpace)


@pytest.mark.parametrize("space", SPACES_UNDER_TEST, ids=IDS)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_dna_gives_valid_block_specs(space: SpineNetSpace, seed: int) -> None:
    arch = random_arch(space, seed)
    assert isinstance(arch, SpineNetArchitecture)
    specs = block_specs(arch)
    num_intermediate = EXPECTED[space.name][2]
    assert len(specs) == num_intermediate + 5
    intermediate, outputs = specs[:num_intermediate], specs[num_intermediate:]

    base_levels = list(arch.intermediate_block_levels)
    assert sorted(base_levels) == sorted(space.intermediate_levels)
    for i, (level, block_fn, inputs, is_output) in enumerate(intermediate):
        assert not is_output
        assert 1 <= level <= 7
        assert level - base_levels[i] in space.level_offsets
        assert block_fn in space.block_fns
        window = range(max(0, NUM_STEM_BLOCKS + i - 4), NUM_STEM_BLOCKS + i)
        assert inputs[0] < inputs[1]
        assert inputs[0] in window and inputs[1] in window
    assert sorted(level for level, _, _, _ in outputs) == [3, 4, 5, 6, 7]
    for j, (_, block_fn, inputs, is_output) in enumerate(outputs):
        assert is_output
        assert block_fn in space.block_fns
        assert 0 <= inputs[0] < inputs[1] < NUM_STEM_BLOCKS + num_intermediate + j


def test_first_blocks_have_the_fixed_or_narrow_inputs() -> None:
    for seed in range(5):
        specs = block_specs(random_arch(SPINENET, seed))
        assert specs[0][2] == (0, 1)
        assert set(specs[1][2]) <= {0, 1, 2}


@pytest.mark.parametrize("space", SPACES_UNDER_TEST, ids=IDS)
def test_architecture_json_round_trips(space: SpineNetSpace) -> None:
    arch = random_arch(space, 3)
    restored = pg.from_json_str(pg.to_json_str(arch))
    assert pg.eq(restored, arch)
    assert block_specs(restored) == block_specs(arch)

    restored = pg.from_json_str(architecture_json(space, random_dna(space, 3)))
    assert block_specs(restored) == block_specs(arch)


def test_block_specs_rejects_unmaterialized_architecture() -> None:
    with pytest.raises(ValueError, match="materialize"):
        block_specs(SPINENET.hyper())


def test_space_rejects_unknown_block_fn() -> None:
    with pytest.raises(ValueError, match="unknown block_fns"):
        SpineNetSpace("bad", ((3, 2),), (0,), ("conv",))


def test_tf_module_follows_block_fns() -> None:
    assert tf_module_name(random_arch(SPINENET, 0)).endswith("backbones.spinenet")
    assert tf_module_name(random_arch(SPINENET_MBCONV, 0)).endswith("backbones.spinenet_mobile")


def test_importing_spinenet_does_not_import_tensorflow() -> None:
    # Import, propose and materialize, as the controller does; none of it may load TensorFlow.
    code = (
        "import random, sys; import pyglove as pg; import kfnas.spaces.spinenet as s; "
        "h = s.SPINENET_MBCONV.hyper(); "
        "s.block_specs(pg.materialize(h, pg.random_dna(pg.dna_spec(h), random.Random(0)))); "
        "heavy = [m for m in ('tensorflow', 'official', 'keras', 'tf_keras') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_registered_names() -> None:
    assert {"spinenet", "spinenet_v2", "spinenet_mbconv"} <= set(SPACES.names())
    assert get_space("spinenet_mbconv").tasks == ("detection",)
    assert get_space("spinenet") is SPINENET
    assert get_space("spinenet_v2") is SPINENET_V2


@pytest.mark.tf
@pytest.mark.parametrize("space", SPACES_UNDER_TEST, ids=IDS)
def test_to_tf_block_specs_match_block_specs(space: SpineNetSpace) -> None:
    arch = random_arch(space, 5)
    tf_specs = to_tf_block_specs(arch)
    module = pytest.importorskip(tf_module_name(arch))
    assert all(isinstance(spec, module.BlockSpec) for spec in tf_specs)
    fields = [(s.level, s.block_fn, tuple(s.input_offsets), s.is_output) for s in tf_specs]
    assert fields == block_specs(arch)
    # A fresh list per call: SpineNetMobile mutates levels in place.
    assert not any(a is b for a, b in itertools.product(tf_specs, to_tf_block_specs(arch)))
