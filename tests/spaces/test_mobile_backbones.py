"""The mobile backbones of mnasnet, mnasnet_a1 and efficientnet_v2, built and run for real.

Each space's reference and a random architecture build a ``MobileStageBackbone`` that runs forward
on a 64x64 image with endpoints '2'..'5'; RetinaNet puts official.vision's FPN on it (levels 3..5
and 3..7) but keeps SpineNet's identity decoder; one mnasnet detection trial trains 3 steps on
generated TFRecords and is scored with COCO AP.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import BudgetSpec, TaskSpec, parse_spec
from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import dna_spec, materialize
from kfnas.tasks.detection import DETECTION
from kfnas.training.runner import execute_trial, local_trial
from kfnas.validation import validate

pytestmark = pytest.mark.tf

SIZE = 64
NAMES = ["mnasnet", "mnasnet_a1", "efficientnet_v2"]
#: The stage whose output is each endpoint level (reference sections 1.3 and 1.4).
ENDPOINT_STAGES = {
    "mnasnet": {"2": 1, "3": 2, "4": 4, "5": 6},
    "mnasnet_a1": {"2": 1, "3": 2, "4": 4, "5": 6},
    "efficientnet_v2": {"2": 1, "3": 2, "4": 4, "5": 5},
}
HEAD = {"head_num_convs": 1, "head_num_filters": 8, "fpn_num_filters": 8}


def input_specs(size: int = SIZE):
    import tf_keras

    return tf_keras.layers.InputSpec(shape=[None, size, size, 3])


def architectures(name: str):
    space = get_space(name)
    random_arch = materialize(space, pg.random_dna(dna_spec(space), random.Random(11)))
    return space, [("reference", space.reference()), ("random", random_arch)]


@pytest.mark.parametrize("name", NAMES)
def test_backbone_runs_forward_with_the_expected_endpoints(name: str) -> None:
    space, archs = architectures(name)
    task = TaskSpec(kind="detection", image_size=SIZE)
    for label, arch in archs:
        backbone = space.build_network(arch, task, input_specs()).backbone
        filters = [stage["output_filters"] for stage in pg.to_json(arch)["blocks"]]
        expected = {
            level: [1, SIZE >> int(level), SIZE >> int(level), filters[stage]]
            for level, stage in ENDPOINT_STAGES[name].items()
        }
        outputs = backbone(np.random.default_rng(0).random((1, SIZE, SIZE, 3), "float32"))
        assert {k: v.shape.as_list() for k, v in outputs.items()} == expected, label
        assert all(np.isfinite(v.numpy()).all() for v in outputs.values()), label
        specs = {k: v.as_list() for k, v in backbone.output_specs.items()}
        assert specs == {k: [None, *v[1:]] for k, v in expected.items()}, label


def test_head_conv_widens_the_top_endpoint_and_config_rebuilds() -> None:
    from kfnas.spaces._mobile_backbone import MobileStageBackbone

    space = get_space("efficientnet_v2")
    task = TaskSpec(kind="detection", image_size=SIZE, options={"endpoints_num_filters": 12})
    backbone = space.build_network(space.reference(), task, input_specs()).backbone
    assert backbone.output_specs["5"].as_list() == [None, 2, 2, 12]
    assert backbone.output_specs["4"].as_list() == [None, 4, 4, 112]
    rebuilt = MobileStageBackbone.from_config(backbone.get_config())
    assert rebuilt.count_params() == backbone.count_params()
    # MobileNetV2 without its 1280-wide head conv and classifier: 1.84 M parameters.
    mobilenet_v2 = get_space("mnasnet").build_network(
        get_space("mnasnet").reference(), TaskSpec(image_size=SIZE), input_specs()
    )
    assert 1_800_000 < mobilenet_v2.backbone.count_params() < 1_900_000


def test_every_block_function_builds_from_official_blocks() -> None:
    from kfnas.spaces._mobile_backbone import MobileStageBackbone

    def stage(block_fn, repeats, expand, kernel, se, filters, strides, activation=None):
        return dict(
            block_fn=block_fn,
            num_repeats=repeats,
            expand_ratio=expand,
            kernel_size=kernel,
            se_ratio=se,
            filters=filters,
            strides=strides,
            activation=activation,
        )

    backbone = MobileStageBackbone(
        [
            # Fused, no expansion, same width as the stem: SE, one conv, residual add.
            stage("fused_mbconv", 2, 1, 3, 0.25, 32, 1, "swish"),
            stage("conv", 1, 6, 5, 0.25, 16, 2),
            stage("mbconv", 2, 3, 5, 0.25, 24, 2),
            stage("fused_mbconv", 2, 4, 3, 0.0, 40, 2, "relu"),
        ],
        input_specs=input_specs(32),
        init_stochastic_depth_rate=0.2,
    )
    outputs = backbone(np.ones((2, 32, 32, 3), "float32"), training=True)
    assert {k: v.shape.as_list() for k, v in outputs.items()} == {
        "2": [2, 8, 8, 16],
        "3": [2, 4, 4, 24],
        "4": [2, 2, 2, 40],
    }
    names = {layer.name for layer in backbone.layers}
    assert {"stage0_block0_se", "stage0_block0_add", "stage0_block1_drop"} <= names
    blocks = {layer.name: type(layer).__name__ for layer in backbone.layers}
    assert blocks["stage1_block0"] == "Conv2DBNBlock"
    assert blocks["stage2_block1"] == blocks["stage3_block0"] == "InvertedBottleneckBlock"
    assert backbone.get_layer("stage2_block1").get_config()["use_depthwise"] is True
    assert backbone.get_layer("stage3_block0").get_config()["use_depthwise"] is False
    with pytest.raises(ValueError, match="block_fn 'sep' is not in"):
        MobileStageBackbone([stage("sep", 1, 1, 3, 0.0, 16, 2)])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    return write_detection_dataset(
        tmp_path_factory.mktemp("detection"), num_train=8, num_validation=4
    )


@pytest.mark.parametrize(
    ("name", "size", "levels"),
    [("mnasnet", 64, (3, 5)), ("efficientnet_v2", 128, (3, 7))],
)
def test_retinanet_puts_an_fpn_on_a_mobile_backbone(files, name, size, levels) -> None:
    from official.vision.modeling.decoders import FPN

    options = {**HEAD, "min_level": levels[0], "max_level": levels[1]}
    task = TaskSpec(num_classes=3, image_size=size, options=options)
    official_task = DETECTION.build_task(task, files.data_spec(), BudgetSpec(batch_size=1))
    space = get_space(name)
    model = DETECTION.build_model(
        official_task, space.build_network(space.reference(), task, input_specs(size))
    )
    assert isinstance(model.decoder, FPN)
    outputs = model(np.zeros((1, size, size, 3), "float32"), training=True)
    cls_outputs, box_outputs = outputs["cls_outputs"], outputs["box_outputs"]
    expected = [str(level) for level in range(levels[0], levels[1] + 1)]
    assert sorted(cls_outputs) == sorted(box_outputs) == expected
    for level in expected:
        side = size >> int(level)
        # 9 anchors (3 scales x 3 aspect ratios) x (3 classes + background) or 4 coordinates.
        assert cls_outputs[level].shape.as_list() == [1, side, side, 9 * 4]
        assert box_outputs[level].shape.as_list() == [1, side, side, 9 * 4]


def test_spinenet_keeps_the_identity_decoder(files) -> None:
    options = {**HEAD, "min_level": 3, "max_level": 5, "filter_size_scale": 0.25}
    options["endpoints_num_filters"] = 8
    task = TaskSpec(num_classes=3, image_size=SIZE, options=options)
    official_task = DETECTION.build_task(task, files.data_spec(), BudgetSpec(batch_size=1))
    space = get_space("spinenet_mbconv")
    arch = materialize(space, pg.random_dna(dna_spec(space), random.Random(0)))
    model = DETECTION.build_model(official_task, space.build_network(arch, task, input_specs()))
    assert model.decoder is None  # official.vision's "identity": backbone features go to the head.


TRIAL_SPEC = """
name: mnasnet-trial
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, head_num_convs: 1, head_num_filters: 16,
            fpn_num_filters: 16, validation_batch_size: 2, learning_rate: 0.01, warmup_steps: 2}
studies:
  proxy: {space: mnasnet}
budget: {train_steps: 3, batch_size: 2, latency_runs: 5}
measurement: {min_seconds: 0}
"""


def test_a_mnasnet_detection_trial_completes_with_ap(files, tmp_path) -> None:
    spec = validate(
        parse_spec(
            TRIAL_SPEC,
            [
                f"data.train={files.train_pattern}",
                f"data.validation={files.validation_pattern}",
                f"data.annotations={files.annotations}",
            ],
        )
    )
    trial = local_trial(spec, "proxy", seed=10)  # 13 blocks, conv and mbconv stages.
    result = execute_trial(spec, trial, tmp_path / "work")
    assert result.status is TrialStatus.COMPLETED, result.error
    assert -1.0 <= result.metrics["AP"] <= 1.0
    assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
    assert (tmp_path / "work" / "logs").is_dir()
