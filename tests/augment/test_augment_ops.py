"""The augmentation ops and policies on generated images, and the task input pipelines using them.

Every op of the detection and segmentation tables runs at magnitudes 0, 5 and 10 on a 64 px image
with one bright two-coloured object on a dark background, its box and its mask. Geometric ops must
move the object's pixels, its mask and its box together (uncovered pixels: grey in the image, 255
in the mask); pixel ops must leave boxes and masks alone; ops inside boxes must change nothing
outside them; the segmentation cutout must write 255 in the mask where it cuts the image. Then
the detection and segmentation training pipelines apply a policy (and only to training data), and
a tiny RetinaNet trains a few steps on augmented batches.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.augment.tables import AUTOAUGMENT_OPS
from kfnas.config.spec import BudgetSpec, TaskSpec

pytestmark = pytest.mark.tf

SIZE = 64
OBJECT = (16, 8, 40, 32)  # Pixel rows y0..y1-1 and columns x0..x1-1 of the object.
BACKGROUND = (30, 40, 20)
OBJECT_COLOUR = (220, 180, 200)
STRIPE_COLOUR = (250, 250, 160)  # The object's left 5 columns: flips and shifts show.
GREY = 128
IGNORE = 255
TOLERANCE = 2.0 / SIZE  # Boxes may differ from the mask's extent by nearest-pixel rounding.

ALL_OPS = sorted(set(AUTOAUGMENT_OPS["detection"]) | set(AUTOAUGMENT_OPS["segmentation"]))


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y0, x0, y1, x1 = OBJECT
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    image[y0:y1, x0:x1] = OBJECT_COLOUR
    image[y0:y1, x0 : x0 + 5] = STRIPE_COLOUR
    mask = np.zeros((SIZE, SIZE, 1), np.uint8)
    mask[y0:y1, x0:x1] = 1
    boxes = np.array([[y0 / SIZE, x0 / SIZE, y1 / SIZE, x1 / SIZE]], np.float32)
    return image, boxes, mask


def _run(name: str, magnitude: int, seed: int, prob: float = 1.0):
    import tensorflow as tf

    from kfnas.augment.ops import apply_op

    tf.random.set_seed(seed)
    image, boxes, mask = _scene()
    out = apply_op(name, tf.constant(image), tf.constant(boxes), tf.constant(mask), magnitude, prob)
    return tuple(t.numpy() for t in out)


def _extent(region: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(region)
    if not len(ys):
        return None
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32) / SIZE


def _op(name: str):
    from kfnas.augment.ops import OPS

    return OPS[name]


def _kind(name: str) -> str:
    op = _op(name)
    if op.per_box:
        return "per_box"
    if op.geometric:
        return "geometric"
    return "segmentation_cutout" if name == "CutoutSegmentation" else "pixel"


def test_the_tables_are_all_implemented():
    from kfnas.augment.ops import OPS

    assert set(ALL_OPS) <= set(OPS)
    assert (
        len(ALL_OPS) == 21
    )  # 20 distinct detection names (CutoutImage twice) + CutoutSegmentation


@pytest.mark.parametrize("name", [n for n in ALL_OPS if _kind(n) == "geometric"])
def test_geometric_ops_move_image_boxes_and_mask_together(name):
    for magnitude in (0, 5, 10):
        for seed in (0, 1, 2):  # Both signs of the shift, shear or angle.
            image, (box,), mask = _run(name, magnitude, seed)
            where = f"{name} m={magnitude} seed={seed}"
            bright = np.all(image > 150, axis=-1)
            # Nearest-pixel warps of the image and of the mask agree exactly.
            np.testing.assert_array_equal(bright, mask[..., 0] == 1, err_msg=where)
            uncovered = np.all(image == GREY, axis=-1)
            np.testing.assert_array_equal(uncovered, mask[..., 0] == IGNORE, err_msg=where)
            extent = _extent(mask[..., 0] == 1)
            if extent is None:  # Moved out of the image: the box has no area left.
                assert box[2] <= box[0] or box[3] <= box[1], where
                continue
            assert np.all(box >= 0) and np.all(box <= 1), where
            np.testing.assert_allclose(box, extent, atol=TOLERANCE, err_msg=where)
            if magnitude == 0:
                np.testing.assert_array_equal(image, _scene()[0], err_msg=where)
                np.testing.assert_allclose(box, _scene()[1][0], atol=1e-6, err_msg=where)


@pytest.mark.parametrize(("name", "axis"), [("TranslateX", 1), ("TranslateY", 0)])
def test_translation_moves_objects_by_the_shift(name, axis):
    # Magnitude 1 shifts by 25 px: one way the object stays whole, the other way it is clipped.
    y0, x0, y1, x1 = OBJECT
    start, end = (x0, x1) if axis == 1 else (y0, y1)
    seen = set()
    for seed in range(8):
        _, (box, *_), mask = _run(name, 1, seed)
        extent = _extent(mask[..., 0] == 1) * SIZE
        low, high = extent[axis], extent[axis + 2]
        shift = 25 if low > start else -25
        seen.add(shift)
        assert (low, high) == (max(0, start + shift), min(SIZE, end + shift))
        np.testing.assert_allclose(box[[axis, axis + 2]] * SIZE, (low, high), atol=1e-4)
    assert seen == {25, -25}


@pytest.mark.parametrize("name", [n for n in ALL_OPS if _kind(n) == "pixel"])
def test_pixel_ops_leave_boxes_and_masks_alone(name):
    original, boxes, mask = _scene()
    changed = False
    for magnitude in (0, 5, 10):
        image, new_boxes, new_mask = _run(name, magnitude, seed=magnitude)
        np.testing.assert_array_equal(new_boxes, boxes)
        np.testing.assert_array_equal(new_mask, mask)
        assert image.shape == original.shape and image.dtype == np.uint8
        changed |= not np.array_equal(image, original)
    assert changed, f"{name} never changed the image"


@pytest.mark.parametrize("name", [n for n in ALL_OPS if _kind(n) == "per_box"])
def test_ops_inside_boxes_change_only_the_boxes(name, monkeypatch):
    from kfnas.augment import ops

    monkeypatch.setattr(ops, "BBOX_PROB_SCALE", 1.0)  # Every box, every time.
    original, boxes, mask = _scene()
    y0, x0, y1, x1 = OBJECT
    outside = np.ones((SIZE, SIZE), bool)
    outside[y0:y1, x0:x1] = False
    changed = False
    for magnitude in (0, 5, 10):
        image, new_boxes, new_mask = _run(name, magnitude, seed=magnitude)
        np.testing.assert_array_equal(new_boxes, boxes)
        np.testing.assert_array_equal(new_mask, mask)
        np.testing.assert_array_equal(image[outside], original[outside])
        changed |= not np.array_equal(image, original)
    assert changed, f"{name} never changed the box's pixels"
    # Probability 0: no box is touched.
    image, _, _ = _run(name, 10, seed=0, prob=0.0)
    np.testing.assert_array_equal(image, original)


def test_segmentation_cutout_writes_the_ignore_label_where_it_cuts():
    original, boxes, mask = _scene()
    image, new_boxes, new_mask = _run("CutoutSegmentation", 0, seed=0)
    np.testing.assert_array_equal(image, original)
    np.testing.assert_array_equal(new_mask, mask)
    for magnitude, seed in [(1, 0), (1, 1), (2, 3), (5, 0), (10, 0)]:
        image, new_boxes, new_mask = _run("CutoutSegmentation", magnitude, seed)
        cut = np.all(image == GREY, axis=-1)
        side = 2 * int(magnitude * 10)
        assert 0 < cut.sum() <= side * side
        np.testing.assert_array_equal(cut, new_mask[..., 0] == IGNORE)
        np.testing.assert_array_equal(new_mask[~cut], mask[~cut])
        np.testing.assert_array_equal(image[~cut], original[~cut])
        np.testing.assert_array_equal(new_boxes, boxes)
    # CutoutImage cuts the image only.
    image, _, new_mask = _run("CutoutImage", 2, seed=0)
    assert np.all(image == GREY, axis=-1).sum() > 0
    np.testing.assert_array_equal(new_mask, mask)


@pytest.mark.parametrize(
    ("kind", "augmentation", "geometric_only"),
    [
        ("detection", {"randaugment": {"num_layers": 2, "magnitude": 3}}, False),
        ("segmentation", {"autoaugment": [[["Rotate", 6, 1.0], ["ShearY", 4, 0.5]]]}, True),
    ],
)
def test_policies_keep_masks_and_boxes_on_the_object_in_graph_mode(
    kind, augmentation, geometric_only
):
    import tensorflow as tf

    from kfnas.augment.policies import policy_from_options

    policy = policy_from_options(augmentation, kind)
    image, boxes, mask = _scene()
    signature = [
        tf.TensorSpec([None, None, 3], tf.uint8),
        tf.TensorSpec([None, 4], tf.float32),
        tf.TensorSpec([None, None, 1], tf.uint8),
    ]
    run = tf.function(lambda i, b, m: policy(i, b, m), input_signature=signature)
    tf.random.set_seed(0)
    for _ in range(6):
        new_image, (box,), new_mask = (t.numpy() for t in run(image, boxes, mask))
        assert new_image.shape == image.shape and set(np.unique(new_mask)) <= {0, 1, IGNORE}
        if geometric_only:  # Pixel ops may brighten the background; warps only move it.
            np.testing.assert_array_equal(np.all(new_image > 150, axis=-1), new_mask[..., 0] == 1)
        extent = _extent(new_mask[..., 0] == 1)
        if extent is None:
            assert box[2] <= box[0] or box[3] <= box[1]
        else:  # Chained warps box the warped box, which encloses the object.
            assert np.all(box[:2] <= extent[:2] + TOLERANCE), (box, extent)
            assert np.all(box[2:] >= extent[2:] - TOLERANCE), (box, extent)


def test_autoaugment_detection_policy_v0_runs_on_boxes():
    import tensorflow as tf

    from kfnas.augment.policies import policy_from_options
    from kfnas.spaces.augmentation import DETECTION_POLICY_V0

    value = {"autoaugment": [[list(op) for op in sub] for sub in DETECTION_POLICY_V0]}
    policy = policy_from_options(value, "detection")
    image, boxes, _ = _scene()
    tf.random.set_seed(3)
    for _ in range(5):
        new_image, new_boxes, new_mask = policy(tf.constant(image), tf.constant(boxes))
        assert new_mask is None and new_image.shape == image.shape
        assert new_boxes.shape == boxes.shape
        assert np.all((new_boxes.numpy() >= 0) & (new_boxes.numpy() <= 1))


# The task input pipelines.

STRONG = {"randaugment": {"num_layers": 2, "magnitude": 10}}
#: An AutoAugment policy whose one op never applies: the pipeline must equal tf-models' own.
IDENTITY = {"autoaugment": [[["Rotate", 10, 0.0]]]}
DETECTION_OPTIONS = {
    "min_level": 3,
    "max_level": 5,
    "filter_size_scale": 0.25,
    "endpoints_num_filters": 16,
    "resample_alpha": 0.25,
    "head_num_convs": 1,
    "head_num_filters": 16,
    "aug_rand_hflip": False,
    "shuffle_buffer_size": 1,  # Records in file order: batches compare across policies.
    "learning_rate": 0.01,
    "warmup_steps": 1,
}
SEGMENTATION_OPTIONS = {"min_level": 3, "max_level": 5, "aug_rand_hflip": False}
BUDGET = BudgetSpec(train_steps=3, batch_size=4)


@pytest.fixture(scope="module")
def detection_files(tmp_path_factory):
    from kfnas.data.synthetic import write_detection_dataset

    return write_detection_dataset(
        tmp_path_factory.mktemp("detection"), num_train=8, num_validation=4
    )


@pytest.fixture(scope="module")
def segmentation_files(tmp_path_factory):
    from kfnas.data.synthetic_segmentation import write_segmentation_dataset

    return write_segmentation_dataset(
        tmp_path_factory.mktemp("segmentation"), num_train=4, num_validation=4
    )


def _batches(kind: str, files, augmentation: dict | None):
    """The first training batch and the first validation batch of the task's pipelines."""
    import tensorflow as tf

    from kfnas.tasks import TASKS

    base = DETECTION_OPTIONS if kind == "detection" else SEGMENTATION_OPTIONS
    options = {**base, **({"augmentation": augmentation} if augmentation else {})}
    task = TaskSpec(kind=kind, num_classes=3, image_size=SIZE, options=options)
    official_task = TASKS.get(kind).build_task(task, files.data_spec(), BUDGET)
    config = official_task.task_config
    tf.random.set_seed(0)
    train = next(iter(official_task.build_inputs(config.train_data)))
    validation = next(iter(official_task.build_inputs(config.validation_data)))
    return official_task, task, train, validation


def _same(a, b) -> bool:
    import tensorflow as tf

    flat_a, flat_b = tf.nest.flatten(a), tf.nest.flatten(b)
    return len(flat_a) == len(flat_b) and all(
        np.array_equal(x.numpy(), y.numpy()) for x, y in zip(flat_a, flat_b, strict=True)
    )


@pytest.mark.parametrize("kind", ["detection", "segmentation"])
def test_the_training_pipeline_applies_the_policy_and_validation_does_not(
    kind, detection_files, segmentation_files
):
    files = detection_files if kind == "detection" else segmentation_files
    _, _, plain_train, plain_validation = _batches(kind, files, None)
    _, _, identity_train, identity_validation = _batches(kind, files, IDENTITY)
    _, _, strong_train, strong_validation = _batches(kind, files, STRONG)
    # The policy's parser is tf-models' own when the policy does nothing ...
    assert _same(identity_train, plain_train)
    # ... and a strong policy changes the training images and their labels ...
    assert not np.array_equal(strong_train[0].numpy(), plain_train[0].numpy())
    labels = "box_targets" if kind == "detection" else "masks"
    assert not _same(strong_train[1][labels], plain_train[1][labels])
    # ... but never the validation data.
    assert _same(strong_validation, plain_validation) and _same(
        identity_validation, plain_validation
    )


def test_a_tiny_retinanet_trains_on_augmented_batches(detection_files):
    import tf_keras

    from kfnas.spaces import get_space
    from kfnas.spaces.base import dna_spec, materialize
    from kfnas.tasks.detection import DETECTION

    official_task, task, _, _ = _batches("detection", detection_files, STRONG)
    space = get_space("spinenet")
    arch = materialize(space, pg.random_dna(dna_spec(space), random.Random(3)))
    input_specs = tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])
    model = DETECTION.build_model(official_task, space.build_network(arch, task, input_specs))
    optimizer = official_task.create_optimizer(DETECTION.optimizer_config(task, BUDGET))
    metrics = official_task.build_metrics(training=True)
    data = iter(official_task.build_inputs(official_task.task_config.train_data))
    for _ in range(BUDGET.train_steps):
        logs = official_task.train_step(next(data), model, optimizer, metrics)
        assert np.isfinite(float(logs["total_loss"]))
    assert int(optimizer.iterations) == BUDGET.train_steps
