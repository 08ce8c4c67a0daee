"""Tests for the synthetic segmentation dataset and the segmentation data checks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.data import GENERATORS
from kfnas.data.segmentation import segmentation_data_problems
from kfnas.data.synthetic import SHAPES, DatasetFiles
from kfnas.data.synthetic_segmentation import MASK_KEY, write_segmentation_dataset

pytestmark = pytest.mark.tf

SIZE = 64
NUM_CLASSES = 3
TASK = TaskSpec(kind="segmentation", num_classes=NUM_CLASSES, image_size=SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    out = tmp_path_factory.mktemp("segmentation")
    return write_segmentation_dataset(
        out, num_train=12, num_validation=6, image_size=SIZE, num_classes=NUM_CLASSES, shards=2
    )


def all_bytes(files: DatasetFiles) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in (*files.train, *files.validation)}


def decoded(paths: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, mask) of every record, through official.vision's segmentation Decoder."""
    import tensorflow as tf
    from official.vision.dataloaders.segmentation_input import Decoder

    out = []
    for raw in tf.data.TFRecordDataset(list(paths)):
        data = Decoder().decode(raw)
        assert int(data["image/height"]) == int(data["image/width"]) == SIZE
        image = tf.io.decode_image(data["image/encoded"], channels=3).numpy()
        mask = tf.io.decode_image(data[MASK_KEY]).numpy()
        out.append((image, mask))
    return out


def write_records(path: Path, features: list[dict[str, object]]) -> str:
    """Writes ``tf.train.Example`` records of the given bytes/int features to ``path``."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for feature in features:
            proto = {
                key: tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
                if isinstance(value, bytes)
                else tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
                for key, value in feature.items()
            }
            example = tf.train.Example(features=tf.train.Features(feature=proto))
            writer.write(example.SerializeToString())
    return str(path)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def record(mask: np.ndarray, size: int = 8) -> dict[str, object]:
    image = np.full((size, size, 3), 128, dtype=np.uint8)
    return {
        "image/encoded": png(image),
        MASK_KEY: png(mask),
        "image/height": size,
        "image/width": size,
    }


def test_same_seed_gives_byte_identical_files(files: DatasetFiles, tmp_path: Path) -> None:
    again = write_segmentation_dataset(
        tmp_path / "again", num_train=12, num_validation=6, num_classes=NUM_CLASSES, shards=2
    )
    assert all_bytes(again) == all_bytes(files)
    other = write_segmentation_dataset(
        tmp_path / "other",
        num_train=12,
        num_validation=6,
        num_classes=NUM_CLASSES,
        shards=2,
        seed=1,
    )
    assert all_bytes(other).keys() == all_bytes(files).keys()
    assert all_bytes(other) != all_bytes(files)


def test_masks_label_every_shape_pixel_with_its_class(files: DatasetFiles) -> None:
    records = decoded(files.train) + decoded(files.validation)
    assert len(records) == 18
    seen: set[int] = set()
    for image, mask in records:
        assert mask.shape == (SIZE, SIZE, 1) and mask.dtype == np.uint8
        values = set(np.unique(mask).tolist())
        assert 0 in values and values - {0}, "background and at least one shape"
        assert values <= set(range(NUM_CLASSES + 1))
        seen |= values
        for label in values - {0}:
            colour = np.array(SHAPES[label - 1].color, dtype=np.uint8)
            assert np.all(image[mask[..., 0] == label] == colour)
        background = image[mask[..., 0] == 0]
        for shape in SHAPES:
            assert not np.any(np.all(background == np.array(shape.color, np.uint8), axis=-1))
    assert seen == set(range(NUM_CLASSES + 1))


def test_dataset_files_and_generator_registry(files: DatasetFiles) -> None:
    assert GENERATORS.get("segmentation") is write_segmentation_dataset
    assert [Path(p).name for p in files.train] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert files.annotations == ""
    assert files.class_names == ("square", "circle", "triangle")
    spec = files.data_spec()
    assert (spec.train, spec.validation, spec.annotations) == (
        files.train_pattern,
        files.validation_pattern,
        "",
    )


def test_make_data_segmentation_through_the_cli(tmp_path: Path) -> None:
    from kfnas.cli import main

    out = tmp_path / "cli"
    assert main(["make-data", "segmentation", "--out", str(out), "--train", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "train-00000-of-00001.tfrecord",
        "validation-00000-of-00001.tfrecord",
    ]


def test_generated_data_passes_the_checks(files: DatasetFiles) -> None:
    assert segmentation_data_problems(TASK, files.data_spec()) == []


def test_checks_refuse_mask_values_above_num_classes(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:2, :2], mask[4:, 4:], mask[0, 7] = 3, 7, 255  # 255 is the ignore label: accepted
    path = write_records(tmp_path / "bad.tfrecord", [record(mask)])
    problems = segmentation_data_problems(TASK, DataSpec(train=path, validation=path))
    message = (
        f"{path}: mask value(s) 7 exceed task.num_classes = 3: mask pixels must be class ids "
        "0..3 (0 the background) or 255 (ignored); set task.num_classes to at least 7 or fix "
        "the masks"
    )
    assert problems == [message, message]
    wider = TaskSpec(kind="segmentation", num_classes=7, image_size=SIZE)
    assert segmentation_data_problems(wider, DataSpec(train=path, validation=path)) == []


def test_checks_refuse_records_the_parser_cannot_use(tmp_path: Path) -> None:
    rgb_mask = write_records(tmp_path / "rgb.tfrecord", [record(np.zeros((8, 8, 3), np.uint8))])
    no_mask = {k: v for k, v in record(np.zeros((8, 8), np.uint8)).items() if k != MASK_KEY}
    missing = write_records(tmp_path / "missing.tfrecord", [no_mask])
    wrong_size = {**record(np.zeros((8, 8), np.uint8)), "image/height": 16}
    sized = write_records(tmp_path / "sized.tfrecord", [wrong_size])
    assert segmentation_data_problems(TASK, DataSpec(train=rgb_mask, validation=missing)) == [
        f"{rgb_mask}: record 0 has a mask with 3 channels: store the class ids as a "
        "single-channel (grayscale) PNG",
        f"{missing}: record 0 has no '{MASK_KEY}' feature, which official.vision's "
        "segmentation parser needs",
    ]
    problems = segmentation_data_problems(TASK, DataSpec(train=sized, validation=sized))
    assert problems[0] == (
        f"{sized}: record 0 has an image of shape [8, 8, 3] but image/height x image/width = "
        "16 x 8: store the image's own size and 3 (RGB) channels"
    )
    assert "the mask must be as large as its image" in problems[1]


def test_checks_refuse_missing_files(tmp_path: Path) -> None:
    nothing = str(tmp_path / "none-*.tfrecord")
    assert segmentation_data_problems(TASK, DataSpec(train="", validation=nothing)) == [
        "data.train is empty: give a file pattern of segmentation TFRecords, or generate data "
        "with `kfnas make-data segmentation --out DIR`",
        f"data.validation pattern {nothing!r} matches no file: check the path, or generate data "
        "with `kfnas make-data segmentation --out DIR`",
    ]
