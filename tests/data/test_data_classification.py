"""Tests for the synthetic classification dataset and the classification data checks.

Covers ``kfnas.data.synthetic_classification`` (seeded bytes, labels, official.vision's decoder
reads it) and ``kfnas.data.classification`` (what it refuses, and what its messages say).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.data import GENERATORS
from kfnas.data.classification import classification_data_problems
from kfnas.data.synthetic import SHAPES, DatasetFiles
from kfnas.data.synthetic_classification import write_classification_dataset
from kfnas.tasks.classification import CLASSIFICATION

pytestmark = pytest.mark.tf

SIZE = 32
NUM_CLASSES = 3
TASK = TaskSpec(kind="classification", num_classes=NUM_CLASSES, image_size=SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    out = tmp_path_factory.mktemp("classification")
    return write_classification_dataset(
        out, num_train=12, num_validation=6, image_size=SIZE, num_classes=NUM_CLASSES, shards=2
    )


def all_bytes(files: DatasetFiles) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in (*files.train, *files.validation)}


def decoded(paths: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every record of ``paths`` decoded by official.vision's classification Decoder."""
    import tensorflow as tf
    from official.vision.dataloaders.classification_input import Decoder

    decoder = Decoder()
    return [
        {k: v.numpy() for k, v in decoder.decode(raw).items()}
        for raw in tf.data.TFRecordDataset(list(paths))
    ]


# -- the writer ---------------------------------------------------------------------------------


def test_registered_as_the_classification_generator(files: DatasetFiles) -> None:
    assert GENERATORS.get("classification") is write_classification_dataset
    assert files.annotations == ""
    assert files.data_spec() == DataSpec(
        train=files.train_pattern, validation=files.validation_pattern
    )
    assert files.class_names == ("square", "circle", "triangle")


def test_same_seed_gives_byte_identical_files(files: DatasetFiles, tmp_path: Path) -> None:
    again = write_classification_dataset(
        tmp_path / "again", num_train=12, num_validation=6, image_size=SIZE, shards=2
    )
    assert all_bytes(again) == all_bytes(files)


def test_another_seed_gives_other_images(files: DatasetFiles, tmp_path: Path) -> None:
    other = write_classification_dataset(
        tmp_path / "other", num_train=12, num_validation=6, image_size=SIZE, shards=2, seed=1
    )
    mine, theirs = all_bytes(files), all_bytes(other)
    assert mine.keys() == theirs.keys()
    assert all(mine[name] != theirs[name] for name in mine)


def test_shards_and_balanced_labels(files: DatasetFiles) -> None:
    assert [Path(p).name for p in files.validation] == [
        "validation-00000-of-00002.tfrecord",
        "validation-00001-of-00002.tfrecord",
    ]
    train, validation = decoded(files.train), decoded(files.validation)
    assert [int(r["image/class/label"]) for r in train] == [i % NUM_CLASSES for i in range(12)]
    assert [int(r["image/class/label"]) for r in validation] == [0, 1, 2, 0, 1, 2]


def test_each_image_is_a_jpeg_showing_its_class_colour(files: DatasetFiles) -> None:
    from PIL import Image

    for record in decoded(files.train):
        data = record["image/encoded"]
        assert data[:3] == b"\xff\xd8\xff"
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        assert pixels.shape == (SIZE, SIZE, 3)
        label = int(record["image/class/label"])
        # At least 45 % of the side squared, less the corners a circle or triangle leaves out.
        for k, shape in enumerate(SHAPES[:NUM_CLASSES]):
            near = (np.abs(pixels - np.array(shape.color)).max(axis=-1) < 40).sum()
            assert (near > 0.08 * SIZE * SIZE) == (k == label), (k, label, near)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 1}, "num_classes must be in 2..6"),
        ({"num_classes": 7}, "num_classes must be in 2..6"),
        ({"num_train": 0}, "at least 1 image per split"),
        ({"image_size": 8}, "at least 16 pixels"),
        ({"shards": 5, "num_validation": 4}, "shards must be in 1..4"),
    ],
)
def test_out_of_range_arguments_are_refused(
    tmp_path: Path, arguments: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        write_classification_dataset(tmp_path, **arguments)


# -- the checks ---------------------------------------------------------------------------------


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_records(path: Path, records: list[dict[str, list]]) -> str:
    """Writes tf.Example records; value types follow the Python values (bytes, float, int)."""
    import tensorflow as tf

    def feature(values: list) -> tf.train.Feature:
        if values and isinstance(values[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if values and isinstance(values[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            features = {key: feature(values) for key, values in record.items()}
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())
    return str(path)


def problems_with(
    tmp_path: Path, files: DatasetFiles, records: list[dict[str, list]], **kwargs: Any
) -> list[str]:
    """The problems of good validation data and ``records`` as the training data."""
    train = write_records(tmp_path / "train.tfrecord", records)
    data = DataSpec(train=train, validation=files.validation_pattern)
    return classification_data_problems(TASK, data, **kwargs)


def test_good_data_has_no_problem(files: DatasetFiles) -> None:
    assert classification_data_problems(TASK, files.data_spec()) == []
    assert CLASSIFICATION.data_problems(TASK, files.data_spec()) == []


def test_png_images_pass_unless_only_jpeg_is_decoded(tmp_path: Path, files: DatasetFiles) -> None:
    records = [{"image/encoded": [png()], "image/class/label": [2]}]
    assert problems_with(tmp_path, files, records) == []
    (problem,) = problems_with(tmp_path, files, records, decode_jpeg_only=True)
    assert "not a JPEG" in problem and "decode_jpeg_only to false" in problem
    jpeg_only = TaskSpec(
        kind="classification", num_classes=3, image_size=SIZE, options={"decode_jpeg_only": True}
    )
    data = DataSpec(train=str(tmp_path / "train.tfrecord"), validation=files.validation_pattern)
    assert len(CLASSIFICATION.data_problems(jpeg_only, data)) == 1


def test_empty_and_unmatched_patterns_are_named(files: DatasetFiles, tmp_path: Path) -> None:
    data = DataSpec(train="", validation=str(tmp_path / "nothing-*.tfrecord"))
    empty, unmatched = classification_data_problems(TASK, data)
    assert empty.startswith("data.train is empty") and "kfnas make-data classification" in empty
    assert "data.validation pattern" in unmatched and "matches no file" in unmatched


def test_unreadable_records_are_named(files: DatasetFiles, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"this is not a TFRecord file at all" * 4)
    data = DataSpec(train=str(garbage), validation=files.validation_pattern)
    (problem,) = classification_data_problems(TASK, data)
    assert problem.startswith(f"{garbage} cannot be read as TFRecords")


def test_labels_outside_the_classes_are_refused(tmp_path: Path, files: DatasetFiles) -> None:
    records = [{"image/encoded": [png()], "image/class/label": [label]} for label in (0, 3, 7, -1)]
    (problem,) = problems_with(tmp_path, files, records)
    assert "label(s) -1, 3, 7 outside 0..2" in problem
    assert "set task.num_classes to at least 8" in problem


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"image/encoded": [png()], "image/object/class/label": [1]},
            "these are detection records",
        ),
        ({"image/class/label": [1]}, "has no 'image/encoded' feature"),
        ({"image/encoded": [png()], "image/class/label": [1, 2]}, "reads exactly one of each"),
        ({"image/encoded": [png()], "image/class/label": [1.0]}, "reads it as int64_list"),
        ({"image/encoded": [png()]}, "has no 'image/class/label' feature"),
        (
            {"image/encoded": [b"not an image"], "image/class/label": [1]},
            "classification parser cannot read the first record",
        ),
    ],
)
def test_records_that_are_not_classification_examples_are_refused(
    tmp_path: Path, files: DatasetFiles, record: dict[str, list], expected: str
) -> None:
    (problem,) = problems_with(tmp_path, files, [record])
    assert problem.startswith(f"{tmp_path / 'train.tfrecord'}: ")
    assert expected in problem


def test_a_non_example_record_is_refused(tmp_path: Path, files: DatasetFiles) -> None:
    import tensorflow as tf

    path = tmp_path / "bytes.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(b"\xff\x00 not a protocol buffer")
    data = DataSpec(train=str(path), validation=files.validation_pattern)
    (problem,) = classification_data_problems(TASK, data)
    assert "record 0 is not a tf.train.Example" in problem
