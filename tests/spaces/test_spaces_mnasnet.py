"""Tests for the stage-table spaces mnasnet, mnasnet_a1 and efficientnet_v2 (no TensorFlow)."""

from __future__ import annotations

import functools
import json
import random
import subprocess
import sys

import pyglove as pg
import pytest

from kfnas.config.spec import TaskSpec
from kfnas.spaces import SPACES, SearchSpace, get_space
from kfnas.spaces._mobile_space import backbone_options
from kfnas.spaces.base import architecture_json, dna_spec, materialize
from kfnas.spaces.efficientnet_v2 import EFFICIENTNET_V2, EfficientNetV2Architecture
from kfnas.spaces.efficientnet_v2 import stages as efficientnet_v2_stages
from kfnas.spaces.mnasnet import MNASNET, MNASNET_A1, MnasNetArchitecture, MnasNetBlock
from kfnas.spaces.mnasnet import stages as mnasnet_stages

NAMES = ["mnasnet", "mnasnet_a1", "efficientnet_v2"]
EXPECTED_SIZE = {
    # Reference section 1.2: 144**2 * 216**5 and 384 * 576**5.
    "mnasnet": 9749755840167936,
    "mnasnet_a1": 9749755840167936,
    "efficientnet_v2": 24346898290704384,
}
STAGES = {
    "mnasnet": mnasnet_stages,
    "mnasnet_a1": mnasnet_stages,
    "efficientnet_v2": efficientnet_v2_stages,
}
TABLE_KEYS = (
    "block_fn",
    "num_repeats",
    "expand_ratio",
    "kernel_size",
    "se_ratio",
    "filters",
    "strides",
    "activation",
)


@functools.cache
def cached_spec(name: str) -> pg.DNASpec:
    return dna_spec(get_space(name))


def random_dna(name: str, seed: int) -> pg.DNA:
    return pg.random_dna(cached_spec(name), random_generator=random.Random(seed))


def candidates(name: str) -> dict[str, list[str]]:
    """Decision id -> its candidates as PyGlove prints them (``"1"``, ``"'conv'"``), in order."""
    return {
        str(dp.id): [str(v) for v in dp.literal_values] for dp in cached_spec(name).decision_points
    }


@pytest.mark.parametrize("name", NAMES)
def test_size_and_decision_points_match_vertex(name: str) -> None:
    spec = cached_spec(name)
    assert spec.space_size == EXPECTED_SIZE[name]
    assert len(spec.decision_points) == 42


def test_sizes_match_the_closed_form() -> None:
    assert EXPECTED_SIZE["mnasnet"] == (2 * 2 * 3 * 2 * 2 * 3) ** 2 * (3 * 2 * 3 * 2 * 2 * 3) ** 5
    assert (
        EXPECTED_SIZE["efficientnet_v2"]
        == 384 * 576**5
        == (2 * 2 * 4 * 2 * 2 * 3 * 2) * (3 * 2 * 4 * 2 * 2 * 3 * 2) ** 5
    )


def test_decision_ids_and_order_follow_vertex() -> None:
    ids = [str(dp.id) for dp in cached_spec("mnasnet").decision_points]
    fields = ["num_repeats", "block_fn", "expand_ratio", "kernel_size", "se_ratio"]
    fields.append("output_filters")
    assert ids == [f"blocks[{i}].{f}" for i in range(7) for f in fields]
    ids = [str(dp.id) for dp in cached_spec("efficientnet_v2").decision_points]
    fields = ["num_repeats", "block_type", "expand_ratio", "kernel_size", "se_ratio"]
    fields += ["output_filters", "act_fn"]
    assert ids == [f"blocks[{i}].{f}" for i in range(6) for f in fields]


def test_mnasnet_candidates_follow_the_reference_tables() -> None:
    mnasnet = candidates("mnasnet")
    assert mnasnet["blocks[0].num_repeats"] == ["1", "2"]
    assert mnasnet["blocks[3].num_repeats"] == ["4", "3", "5"]
    assert mnasnet["blocks[3].output_filters"] == ["48", "64", "80"]
    assert mnasnet["blocks[6].output_filters"] == ["240", "320", "400"]
    assert mnasnet["blocks[2].block_fn"] == ["'conv'", "'mbconv'"]
    assert mnasnet["blocks[2].expand_ratio"] == ["1", "3", "6"]
    assert mnasnet["blocks[2].kernel_size"] == ["3", "5"]
    assert mnasnet["blocks[2].se_ratio"] == ["0.0", "0.25"]
    a1 = candidates("mnasnet_a1")
    assert a1["blocks[2].output_filters"] == ["30", "40", "50"]
    assert a1["blocks[4].num_repeats"] == ["2", "1", "3"]


def test_efficientnet_v2_candidates_follow_the_reference_table() -> None:
    v2 = candidates("efficientnet_v2")
    filters = [v2[f"blocks[{i}].output_filters"] for i in range(6)]
    assert filters == [
        ["12", "16", "20"],
        ["24", "32", "40"],
        ["36", "48", "60"],
        ["72", "96", "120"],
        ["84", "112", "140"],
        ["144", "192", "240"],
    ]
    assert v2["blocks[5].num_repeats"] == ["8", "7", "9"]
    assert v2["blocks[0].num_repeats"] == ["1", "2"]
    assert v2["blocks[1].block_type"] == ["'mbconv'", "'fused_mbconv'"]
    assert v2["blocks[1].expand_ratio"] == ["1", "2", "4", "6"]
    assert v2["blocks[1].act_fn"] == ["'swish'", "'relu'"]


def test_appendix_suggestion_materializes_to_its_block() -> None:
    # Reference appendix A: a Vertex nas_params_str entry and its serialized block.
    params = random_dna("mnasnet", 0).to_dict(key_type="id", value_type="choice_and_literal")
    params.update(
        {
            "blocks[0].num_repeats": "0/2 (1)",
            "blocks[0].block_fn": "0/2 ('conv')",
            "blocks[0].expand_ratio": "1/3 (3)",
            "blocks[0].kernel_size": "0/2 (3)",
            "blocks[0].se_ratio": "1/2 (0.25)",
            "blocks[0].output_filters": "1/3 (16)",
        }
    )
    block = pg.materialize(MNASNET.hyper(), params).blocks[0]
    assert json.loads(pg.to_json_str(block)) == {
        "_type": "kfnas.spaces.mnasnet.MnasNetBlock",
        "num_repeats": 1,
        "block_fn": "conv",
        "expand_ratio": 3,
        "kernel_size": 3,
        "se_ratio": 0.25,
        "output_filters": 16,
    }


@pytest.mark.parametrize("name", NAMES)
def test_reference_is_materialized_from_a_dna_of_the_space(name: str) -> None:
    space = get_space(name)
    reference = space.reference()
    dna = pg.template(space.hyper()).encode(reference)
    dna.use_spec(cached_spec(name))
    assert pg.eq(materialize(space, dna), reference)
    assert reference.is_deterministic


def test_mnasnet_reference_is_mobilenet_v2() -> None:
    table = [tuple(s[key] for key in TABLE_KEYS[:-1]) for s in mnasnet_stages(MNASNET.reference())]
    assert table == [
        ("mbconv", 1, 1, 3, 0.0, 16, 1),
        ("mbconv", 2, 6, 3, 0.0, 24, 2),
        ("mbconv", 3, 6, 3, 0.0, 32, 2),
        ("mbconv", 4, 6, 3, 0.0, 64, 2),
        ("mbconv", 3, 6, 3, 0.0, 96, 1),
        ("mbconv", 3, 6, 3, 0.0, 160, 2),
        ("mbconv", 1, 6, 3, 0.0, 320, 1),
    ]


def test_mnasnet_a1_reference_is_the_published_a1() -> None:
    blocks = MNASNET_A1.reference().blocks
    assert [b.num_repeats for b in blocks] == [1, 2, 3, 4, 2, 3, 1]
    assert [b.output_filters for b in blocks] == [16, 24, 40, 80, 112, 160, 320]
    assert [b.expand_ratio for b in blocks] == [1, 6, 3, 6, 6, 6, 6]
    assert [b.kernel_size for b in blocks] == [3, 3, 5, 3, 3, 5, 3]
    assert [b.se_ratio for b in blocks] == [0.0, 0.0, 0.25, 0.0, 0.25, 0.25, 0.0]
    assert {b.block_fn for b in blocks} == {"mbconv"}


def test_efficientnet_v2_reference_is_b0() -> None:
    table = [
        tuple(s[key] for key in TABLE_KEYS)
        for s in efficientnet_v2_stages(EFFICIENTNET_V2.reference())
    ]
    assert table == [
        ("fused_mbconv", 1, 1, 3, 0.0, 16, 1, "swish"),
        ("fused_mbconv", 2, 4, 3, 0.0, 32, 2, "swish"),
        ("fused_mbconv", 2, 4, 3, 0.0, 48, 2, "swish"),
        ("mbconv", 3, 4, 3, 0.25, 96, 2, "swish"),
        ("mbconv", 5, 6, 3, 0.25, 112, 1, "swish"),
        ("mbconv", 8, 6, 3, 0.25, 192, 2, "swish"),
    ]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [0, 5])
def test_architecture_json_round_trips(name: str, seed: int) -> None:
    space = get_space(name)
    arch = materialize(space, random_dna(name, seed))
    text = architecture_json(space, random_dna(name, seed))
    restored = pg.from_json_str(text)
    assert pg.eq(restored, arch)
    assert type(restored) is type(arch)
    assert STAGES[name](restored) == STAGES[name](arch)
    assert len(STAGES[name](arch)) == (6 if name == "efficientnet_v2" else 7)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stages_hold_only_candidates(seed: int) -> None:
    arch = materialize(MNASNET, random_dna("mnasnet", seed))
    assert isinstance(arch, MnasNetArchitecture)
    for stage, r, o in zip(mnasnet_stages(arch), MNASNET.repeats, MNASNET.filters, strict=True):
        assert stage["num_repeats"] in ((r, r - 1, r + 1) if r > 1 else (1, 2))
        assert stage["filters"] in (int(0.75 * o), o, int(1.25 * o))
        assert stage["block_fn"] in ("conv", "mbconv") and stage["activation"] is None
    arch = materialize(EFFICIENTNET_V2, random_dna("efficientnet_v2", seed))
    assert isinstance(arch, EfficientNetV2Architecture)
    for stage in efficientnet_v2_stages(arch):
        assert stage["block_fn"] in ("mbconv", "fused_mbconv")
        assert stage["activation"] in ("swish", "relu")


def test_stages_reject_unmaterialized_or_short_architectures() -> None:
    with pytest.raises(ValueError, match="materialize"):
        mnasnet_stages(MNASNET.hyper())
    with pytest.raises(ValueError, match="materialize"):
        efficientnet_v2_stages(EFFICIENTNET_V2.hyper())
    short = MnasNetArchitecture(blocks=[MnasNetBlock(output_filters=16)])
    with pytest.raises(ValueError, match="7 stages, got 1"):
        mnasnet_stages(short)


@pytest.mark.parametrize("name", NAMES)
def test_space_refuses_a_fixed_backbone(name: str) -> None:
    space = get_space(name)
    assert isinstance(space, SearchSpace)
    assert pg.eq(space.hyper(), space.hyper())
    problems = space.task_problems(TaskSpec(options={"backbone": "spinenet"}))
    assert problems == [
        f"task.options.backbone is set but {name} searches the backbone itself: remove "
        "task.options.backbone (it is for spaces that search a decoder, nasfpn)"
    ]
    assert space.task_problems(TaskSpec(options={"endpoints_num_filters": 8})) == []


def test_backbone_options_follow_task_and_space() -> None:
    detection = backbone_options(TaskSpec(kind="detection"), "relu")
    assert detection["endpoints_num_filters"] == 0 and detection["activation"] == "relu"
    classification = backbone_options(TaskSpec(kind="classification"), "swish")
    assert classification["endpoints_num_filters"] == 1280
    tuned = backbone_options(
        TaskSpec(options={"activation": "swish", "norm_momentum": 0.9, "head_num_convs": 1}), "relu"
    )
    assert tuned["activation"] == "swish" and tuned["norm_momentum"] == 0.9
    assert "head_num_convs" not in tuned


def test_registered_names() -> None:
    assert set(NAMES) <= set(SPACES.names())
    assert get_space("mnasnet") is MNASNET
    assert get_space("mnasnet_a1") is MNASNET_A1
    assert get_space("efficientnet_v2") is EFFICIENTNET_V2
    torch_built = ("classification", "detection", "torch_classification")
    assert get_space("mnasnet").tasks == torch_built
    assert get_space("mnasnet_a1").tasks == torch_built
    assert get_space("efficientnet_v2").tasks == ("classification", "detection")


def test_importing_the_spaces_does_not_import_tensorflow() -> None:
    code = (
        "import random, sys; import pyglove as pg\n"
        "import kfnas.spaces.mnasnet as m, kfnas.spaces.efficientnet_v2 as e\n"
        "for space, stages in ((m.MNASNET, m.stages), (e.EFFICIENTNET_V2, e.stages)):\n"
        "    h = space.hyper(); space.reference()\n"
        "    stages(pg.materialize(h, pg.random_dna(pg.dna_spec(h), random.Random(0))))\n"
        "heavy = [n for n in ('tensorflow', 'official', 'keras', 'tf_keras') if n in sys.modules]\n"
        "print(heavy); sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
