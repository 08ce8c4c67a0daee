"""Tests for the detection data checks (kfnas.data.detection)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.data.detection import detection_data_problems
from kfnas.data.synthetic import DatasetFiles, write_detection_dataset

pytestmark = pytest.mark.tf

TASK = TaskSpec(num_classes=3, image_size=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    return write_detection_dataset(tmp_path_factory.mktemp("good"), num_train=6, num_validation=4)


def png(size: int = 8) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def detection_features(source_id: str = "7", **overrides: Any) -> dict[str, list]:
    """The features of one valid one-object detection record, with ``overrides``."""
    features: dict[str, list] = {
        "image/encoded": [png()],
        "image/source_id": [source_id.encode()],
        "image/object/bbox/xmin": [0.1],
        "image/object/bbox/ymin": [0.2],
        "image/object/bbox/xmax": [0.5],
        "image/object/bbox/ymax": [0.6],
        "image/object/class/label": [1],
    }
    features.update(overrides)
    return {k: v for k, v in features.items() if v is not None}


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
            example = tf.train.Example(
                features=tf.train.Features(feature={k: feature(v) for k, v in record.items()})
            )
            writer.write(example.SerializeToString())
    return str(path)


def with_train(files: DatasetFiles, train: str) -> DataSpec:
    return DataSpec(train=train, validation=files.validation_pattern)


def test_good_dataset_has_no_problems(files: DatasetFiles) -> None:
    assert detection_data_problems(TASK, files.data_spec()) == []
    assert detection_data_problems(TASK, files.data_spec(with_annotations=False)) == []


def test_pattern_that_matches_no_file(files: DatasetFiles, tmp_path: Path) -> None:
    pattern = str(tmp_path / "nowhere" / "train-*.tfrecord")
    problems = detection_data_problems(TASK, with_train(files, pattern))
    assert problems == [
        f"data.train pattern {pattern!r} matches no file: check the path, or generate data "
        f"with `kfnas make-data detection --out DIR`"
    ]


def test_empty_pattern(files: DatasetFiles) -> None:
    problems = detection_data_problems(TASK, DataSpec(validation=files.validation_pattern))
    assert len(problems) == 1
    assert problems[0].startswith("data.train is empty")


def test_classification_records_name_the_missing_feature(
    files: DatasetFiles, tmp_path: Path
) -> None:
    path = write_records(
        tmp_path / "cls.tfrecord", [{"image/encoded": [png()], "image/class/label": [3]}]
    )
    problems = detection_data_problems(TASK, with_train(files, path))
    assert problems == [
        f"{path}: record 0 has no 'image/source_id' feature, which official.vision's "
        f"TfExampleDecoder needs"
    ]


def test_records_without_objects_are_not_detection_records(
    files: DatasetFiles, tmp_path: Path
) -> None:
    empty = {key: None for key in detection_features() if key.startswith("image/object/")}
    path = write_records(tmp_path / "noobj.tfrecord", [detection_features(**empty)] * 2)
    problems = detection_data_problems(TASK, with_train(files, path))
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: none of the 2 records read has an object")


def test_class_id_above_num_classes(files: DatasetFiles) -> None:
    problems = detection_data_problems(TaskSpec(num_classes=2), files.data_spec())
    assert problems, "the 3-class dataset must not pass as 2 classes"
    for path in files.train + files.validation:
        assert any(p.startswith(f"{path}: class id(s) 3 outside 1..2") for p in problems)
    assert all(p.endswith("or set task.num_classes") for p in problems)
    assert problems[-1].startswith(f"data.annotations {files.annotations!r} has category id(s) 3")


def test_wrong_value_type_box_count_and_pixel_boxes(files: DatasetFiles, tmp_path: Path) -> None:
    cases = {
        "float_label": detection_features(**{"image/object/class/label": [1.0]}),
        "counts": detection_features(**{"image/object/bbox/xmin": [0.1, 0.2]}),
        "pixels": detection_features(**{"image/object/bbox/xmax": [40.0]}),
    }
    expected = {
        "float_label": "stores 'image/object/class/label' as float_list, but TfExampleDecoder "
        "reads it as int64_list",
        "counts": "has 2 xmin, 1 ymin, 1 xmax, 1 ymax, 1 label: every object needs one of each",
        "pixels": "has box coordinate 40 outside [0, 1]: boxes must be normalized",
    }
    for name, record in cases.items():
        path = write_records(tmp_path / f"{name}.tfrecord", [record])
        problems = detection_data_problems(TASK, with_train(files, path))
        assert len(problems) == 1, problems
        assert problems[0].startswith(f"{path}: record 0 {expected[name]}")


def test_undecodable_image_and_non_tfrecord_file(files: DatasetFiles, tmp_path: Path) -> None:
    bad_image = write_records(
        tmp_path / "img.tfrecord", [detection_features(**{"image/encoded": [b"not an image"]})]
    )
    problems = detection_data_problems(TASK, with_train(files, bad_image))
    assert len(problems) == 1
    assert problems[0].startswith(f"{bad_image}: TfExampleDecoder cannot decode record 0:")

    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"this is not a TFRecord file at all" * 4)
    problems = detection_data_problems(TASK, with_train(files, str(garbage)))
    assert len(problems) == 1
    assert problems[0].startswith(f"{garbage} cannot be read as TFRecords")


def test_validation_source_ids_must_be_integers(files: DatasetFiles, tmp_path: Path) -> None:
    path = write_records(tmp_path / "val.tfrecord", [detection_features("img_1.jpg")] * 3)
    problems = detection_data_problems(TASK, DataSpec(train=files.train_pattern, validation=path))
    assert problems == [
        f"{path}: record 0 has image/source_id 'img_1.jpg', not an integer: COCO evaluation "
        f"uses it as the image id; write integer ids"
    ]


def test_reads_are_bounded(files: DatasetFiles, tmp_path: Path) -> None:
    good, bad = detection_features(), detection_features(**{"image/object/class/label": [9]})
    path = write_records(tmp_path / "late.tfrecord", [good] * 5 + [bad])
    spec = with_train(files, path)
    assert detection_data_problems(TASK, spec, max_records=5) == []
    assert len(detection_data_problems(TASK, spec, max_records=6)) == 1


def test_missing_annotations_file(files: DatasetFiles, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.json")
    spec = DataSpec(files.train_pattern, files.validation_pattern, missing)
    assert detection_data_problems(TASK, spec) == [
        f"data.annotations {missing!r} does not exist: fix the path, or leave data.annotations "
        f"empty to evaluate against the validation records"
    ]


def test_unreadable_or_foreign_annotations(files: DatasetFiles, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    spec = DataSpec(files.train_pattern, files.validation_pattern, str(broken))
    [problem] = detection_data_problems(TASK, spec)
    assert problem.startswith(f"data.annotations {str(broken)!r} is not valid JSON")

    not_coco = tmp_path / "list.json"
    not_coco.write_text("[]")
    spec = DataSpec(files.train_pattern, files.validation_pattern, str(not_coco))
    [problem] = detection_data_problems(TASK, spec)
    assert "is not COCO JSON: it lacks the list(s) images, annotations, categories" in problem

    other = json.loads(Path(files.annotations).read_text())
    other["images"] = [{**image, "id": image["id"] + 1000} for image in other["images"]]
    other["categories"].append({"id": 4, "name": "extra"})
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(other))
    spec = DataSpec(files.train_pattern, files.validation_pattern, str(foreign))
    problems = detection_data_problems(TASK, spec)
    assert len(problems) == 2
    assert "has category id(s) 4 outside 1..3" in problems[0]
    assert (
        "has no image with id 7, 8, 9, 10, the image/source_id of validation records"
        in (problems[1])
    )
