"""Tests for the LiDAR scene format, its checks and the synthetic LiDAR dataset.

Covers ``kfnas.data.lidar`` (``scene_example``, ``parse_scene``, ``lidar_data_problems``) and
``kfnas.data.synthetic_lidar`` (``write_lidar_dataset``).
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import DataSpec, TaskSpec
from kfnas.data import GENERATORS
from kfnas.data.lidar import (
    BOX_FIELDS,
    BOX_KEYS,
    CLASS_KEY,
    NUM_FEATURES_KEY,
    NUM_POINT_FEATURES,
    POINTS_KEY,
    SCENE_ID_KEY,
    lidar_data_problems,
    lidar_data_report,
    parse_scene,
    scene_example,
)
from kfnas.data.synthetic import DatasetFiles
from kfnas.data.synthetic_lidar import (
    _FRONT_FACE_INTENSITY,
    GROUND_Z,
    OBJECT_CLASSES,
    PILLAR_SIZE,
    point_range,
    write_lidar_dataset,
)

pytestmark = pytest.mark.tf

SIZE = 64
RANGE = point_range(SIZE)
TASK = TaskSpec(kind="lidar_detection", num_classes=3, image_size=SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    return write_lidar_dataset(tmp_path_factory.mktemp("lidar"), num_train=4, num_validation=2)


def parsed(paths: tuple[str, ...] | str) -> list[dict[str, np.ndarray]]:
    """Every scene of ``paths``, through ``parse_scene`` in a ``tf.data`` pipeline."""
    import tensorflow as tf

    dataset = tf.data.TFRecordDataset(paths).map(parse_scene)
    return [{k: v.numpy() for k, v in scene.items()} for scene in dataset]


def scene_features(**overrides: Any) -> dict[str, list]:
    """The features of one valid two-object scene, with ``overrides`` (``None`` drops a key)."""
    features: dict[str, list] = {
        SCENE_ID_KEY: [b"s"],
        POINTS_KEY: [1.0, 2.0, -1.0, 0.5, -3.0, 4.0, 0.0, 0.25],
        NUM_FEATURES_KEY: [4],
        **{key: [1.0, 2.0] for key in BOX_KEYS},
        CLASS_KEY: [1, 2],
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


def parsed_records(records: list[bytes]) -> Any:
    """The scenes of serialized ``records``, through ``parse_scene`` in a ``tf.data`` pipeline."""
    import tensorflow as tf

    return iter(tf.data.Dataset.from_tensor_slices(records).map(parse_scene))


def with_train(files: DatasetFiles, train: str) -> DataSpec:
    return DataSpec(train=train, validation=files.validation_pattern)


def all_bytes(files: DatasetFiles) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in (*files.train, *files.validation)}


def in_box(xyz: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    cx, cy, cz, length, width, height, heading = box
    dx, dy = xyz[:, 0] - cx, xyz[:, 1] - cy
    u = dx * math.cos(heading) + dy * math.sin(heading)
    v = -dx * math.sin(heading) + dy * math.cos(heading)
    return (
        (np.abs(u) <= length / 2 + margin)
        & (np.abs(v) <= width / 2 + margin)
        & (np.abs(xyz[:, 2] - cz) <= height / 2 + margin)
    )


# The format: scene_example -> parse_scene.


def test_scene_example_round_trips_through_parse_scene() -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-10, 10, size=(50, 3)), rng.uniform(0, 1, size=50)]
    boxes = np.array([[1.0, -2.0, -0.8, 4.2, 1.8, 1.6, 0.5], [5.0, 3.0, -0.7, 0.7, 0.6, 1.8, -3.0]])
    classes = np.array([1, 2])
    record = scene_example(points, boxes, classes, "scene-7")
    assert record == scene_example(points, boxes, classes, "scene-7")  # deterministic bytes
    for scene in (parse_scene(tf.constant(record)), next(iter(parsed_records([record])))):
        assert scene["scene_id"].numpy() == b"scene-7"
        assert scene["points"].dtype == tf.float32 and scene["points"].shape == (50, 4)
        np.testing.assert_allclose(scene["points"].numpy(), points, rtol=1e-6)
        assert scene["boxes"].dtype == tf.float32 and scene["boxes"].shape == (2, 7)
        np.testing.assert_allclose(scene["boxes"].numpy(), boxes, rtol=1e-6)
        assert scene["classes"].dtype == tf.int32
        assert scene["classes"].numpy().tolist() == [1, 2]
        assert scene["num_features"].numpy() == NUM_POINT_FEATURES


def test_scene_without_objects_parses_to_empty_boxes() -> None:
    record = scene_example(np.zeros((3, 4)), np.zeros((0, 7)), np.zeros(0, np.int64), "empty")
    scene = next(parsed_records([record]))
    assert scene["boxes"].shape == (0, 7)
    assert scene["classes"].shape == (0,)


def test_scene_example_wraps_headings() -> None:
    import tensorflow as tf

    headings = [3 * math.pi / 2, math.pi - 1e-9, math.pi, -math.pi]
    boxes = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, h] for h in headings])
    record = scene_example(np.zeros((1, 4)), boxes, np.ones(4, np.int64), "w")
    stored = parse_scene(tf.constant(record))["boxes"].numpy()[:, 6].astype(np.float64)
    assert stored[0] == pytest.approx(-math.pi / 2, abs=1e-6)
    assert np.all((stored >= -math.pi) & (stored < math.pi))  # float32(pi) would exceed pi
    np.testing.assert_allclose(stored[1:], [math.pi, -math.pi, -math.pi], atol=1e-6)


@pytest.mark.parametrize(
    ("points", "boxes", "classes", "message"),
    [
        (np.zeros((3, 5)), np.zeros((0, 7)), [], "points must be [N, 4]"),
        (np.zeros((3, 4)), np.zeros((1, 6)), [1], "boxes must be [K, 7]"),
        (np.zeros((3, 4)), np.zeros((2, 7)), [1], "classes must be [K] with K = 2"),
        (np.zeros((3, 4)), np.zeros((1, 7)), [0], "class id 0 is below 1"),
        (np.full((3, 4), np.nan), np.zeros((0, 7)), [], "points hold values that are not finite"),
    ],
)
def test_scene_example_refuses_bad_arrays(points, boxes, classes, message) -> None:
    with pytest.raises(ValueError, match=re.escape(f"scene 'x': {message}")):
        scene_example(points, boxes, np.asarray(classes, dtype=np.int64), "x")


def test_parse_scene_with_five_features_fails_with_a_clear_message(tmp_path: Path) -> None:
    import tensorflow as tf

    path = write_records(
        tmp_path / "five.tfrecord",
        [scene_features(**{POINTS_KEY: [0.5] * 10, NUM_FEATURES_KEY: [5]})],
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="drop the extra columns"):
        parsed(path)


# The synthetic dataset.


def test_same_seed_gives_byte_identical_files(files: DatasetFiles, tmp_path: Path) -> None:
    again = write_lidar_dataset(tmp_path / "again", num_train=4, num_validation=2)
    assert all_bytes(again) == all_bytes(files)
    other = write_lidar_dataset(tmp_path / "other", num_train=4, num_validation=2, seed=1)
    assert all_bytes(other) != all_bytes(files)


def test_registered_under_the_task_kind_and_its_short_name() -> None:
    assert GENERATORS.get("lidar_detection") is write_lidar_dataset
    assert GENERATORS.get("lidar") is write_lidar_dataset


def test_files_and_sharding(tmp_path: Path) -> None:
    files = write_lidar_dataset(tmp_path, num_train=4, num_validation=2, shards=2)
    assert [Path(p).name for p in files.train] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert len(files.validation) == 2 and files.annotations == ""
    scenes = parsed(files.train)
    assert [s["scene_id"] for s in scenes] == [f"train-{i:06d}".encode() for i in range(4)]
    with pytest.raises(ValueError, match=r"num_classes must be in 1\.\.3"):
        write_lidar_dataset(tmp_path / "bad", num_classes=4)


def test_scenes_are_in_range_with_objects_of_the_stated_sizes(files: DatasetFiles) -> None:
    assert point_range(SIZE) == pytest.approx((-12.8, -12.8, -3.0, 12.8, 12.8, 3.0))
    lo, hi = np.array(RANGE[:3]), np.array(RANGE[3:])
    for scene in parsed(files.train + files.validation):
        points, boxes, classes = scene["points"], scene["boxes"], scene["classes"]
        assert 1_500 <= len(points) <= 4_000
        assert np.all((points[:, :3] >= lo) & (points[:, :3] <= hi))
        assert np.all((points[:, 3] >= 0) & (points[:, 3] <= 1))
        assert 1 <= len(boxes) <= 6
        assert set(classes.tolist()) <= {1, 2, 3}
        assert np.all((boxes[:, 6] >= -math.pi) & (boxes[:, 6] < math.pi))
        for box, label in zip(boxes, classes, strict=True):
            kind = OBJECT_CLASSES[label - 1]
            cx, cy, cz, length, width, height, heading = box.tolist()
            for value, (low, high) in zip(
                (length, width, height), (kind.length, kind.width, kind.height), strict=True
            ):
                assert low - 1e-5 <= value <= high + 1e-5
            assert cz - height / 2 == pytest.approx(GROUND_Z, abs=1e-5)  # on the ground
            reach = abs(length / 2 * math.cos(heading)) + abs(width / 2 * math.sin(heading))
            assert abs(cx) + reach <= hi[0] and abs(cx) - reach >= lo[0]
            reach_y = abs(length / 2 * math.sin(heading)) + abs(width / 2 * math.cos(heading))
            assert abs(cy) + reach_y <= hi[1]
            inside = in_box(points[:, :3], box, 0.1)
            assert kind.points[0] <= inside.sum() <= kind.points[1], kind.name
            low_i, high_i = kind.intensity
            # The front face is brighter by _FRONT_FACE_INTENSITY (lights, number plates).
            high_i = min(high_i + _FRONT_FACE_INTENSITY, 1.0)
            assert np.all((points[inside, 3] >= low_i - 1e-6) & (points[inside, 3] <= high_i))
        for i in range(len(boxes)):  # no two objects overlap
            for j in range(i):
                assert not in_box(boxes[j : j + 1, :3], boxes[i], 0.0).any()


def test_one_class_dataset_has_only_vehicles(tmp_path: Path) -> None:
    files = write_lidar_dataset(
        tmp_path, num_train=2, num_validation=1, num_classes=1, image_size=32
    )
    scenes = parsed(files.train + files.validation)
    assert all(set(s["classes"].tolist()) == {1} for s in scenes)
    assert all(np.abs(s["points"][:, :2]).max() <= 32 * PILLAR_SIZE / 2 for s in scenes)


# The checks.


def test_good_dataset_has_no_problems(files: DatasetFiles) -> None:
    spec = files.data_spec(with_annotations=False)
    assert lidar_data_problems(TASK, spec, point_range=RANGE) == []
    report = lidar_data_report(TASK, spec, point_range=RANGE)
    assert report.scenes_read == 6 and report.empty_scenes == 0


def test_five_features_per_point(files: DatasetFiles, tmp_path: Path) -> None:
    record = scene_features(**{POINTS_KEY: [0.5] * 10, NUM_FEATURES_KEY: [5]})
    path = write_records(tmp_path / "five.tfrecord", [record])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == [
        f"{path}: record 0 has 5 features per point; kfnas reads x, y, z, intensity: drop the "
        f"extra columns when converting (kfnas convert-kitti does)"
    ]


def test_boxes_outside_the_range(files: DatasetFiles, tmp_path: Path) -> None:
    outside = scene_features(**{"objects/center_x": [1.0, 20.0]})
    path = write_records(tmp_path / "far.tfrecord", [outside, scene_features()])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == [
        f"1 of 4 boxes in {path} lie outside the voxelization range x [-12.8, 12.8], "
        f"y [-12.8, 12.8], z [-3, 3] m (their centres): widen task.options point_range, or drop "
        f"them when converting"
    ]


def test_class_out_of_range(files: DatasetFiles, tmp_path: Path) -> None:
    path = write_records(tmp_path / "cls.tfrecord", [scene_features(**{CLASS_KEY: [0, 4]})])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == [
        f"{path}: object class id(s) 0, 4 outside 1..3 (task.num_classes = 3; classes count "
        f"from 1): fix 'objects/class' or set task.num_classes"
    ]
    problems = lidar_data_problems(
        TaskSpec(kind="lidar_detection", num_classes=2), files.data_spec(), point_range=RANGE
    )
    assert problems and all("object class id(s) 3 outside 1..2" in p for p in problems)


def test_missing_keys_are_named(files: DatasetFiles, tmp_path: Path) -> None:
    record = scene_features(**{"objects/heading": None, NUM_FEATURES_KEY: None})
    path = write_records(tmp_path / "missing.tfrecord", [record])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == [
        f"{path}: record 0 lacks the feature(s) points/num_features, objects/heading of kfnas's "
        f"LiDAR scene format (docs/lidar.md): write them when converting"
    ]


def test_a_scene_without_objects_may_leave_out_the_object_lists(
    files: DatasetFiles, tmp_path: Path
) -> None:
    record = scene_features(**dict.fromkeys((*BOX_KEYS, CLASS_KEY)))
    path = write_records(tmp_path / "noobj.tfrecord", [record])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == []
    (scene,) = parsed(path)
    assert scene["boxes"].shape == (0, len(BOX_FIELDS))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {POINTS_KEY: [0.5] * 6},
            "has 6 values in 'points', not a multiple of points/num_features = 4: write x, y, "
            "z, intensity per point, row after row",
        ),
        (
            {"objects/width": [1.0]},
            "has 2 center_x, 2 center_y, 2 center_z, 2 length, 1 width, 2 height, 2 heading, "
            "2 class: every object needs one value in each objects/ list",
        ),
        (
            {CLASS_KEY: [1.0, 2.0]},
            "stores 'objects/class' as float_list, but kfnas reads it as int64_list",
        ),
    ],
)
def test_malformed_records(files: DatasetFiles, tmp_path: Path, overrides, expected) -> None:
    path = write_records(tmp_path / "bad.tfrecord", [scene_features(**overrides)])
    assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == [
        f"{path}: record 0 {expected}"
    ]


def test_unreadable_and_non_example_records(files: DatasetFiles, tmp_path: Path) -> None:
    import tensorflow as tf

    garbage = tmp_path / "garbage.tfrecord"
    garbage.write_bytes(b"not a tfrecord file at all")
    problems = lidar_data_problems(TASK, with_train(files, str(garbage)), point_range=RANGE)
    assert len(problems) == 1 and problems[0].startswith(f"{garbage} cannot be read as TFRecords")
    not_example = tmp_path / "proto.tfrecord"
    with tf.io.TFRecordWriter(str(not_example)) as writer:
        writer.write(b"\xff\xff\xff")
    problems = lidar_data_problems(TASK, with_train(files, str(not_example)), point_range=RANGE)
    assert len(problems) == 1
    assert problems[0].startswith(f"{not_example}: record 0 is not a tf.train.Example")


def test_empty_scenes_are_counted_with_a_warning_not_a_problem(
    files: DatasetFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    far_points = [30.0, 30.0, 0.0, 0.5] * 3  # all outside the range
    empty = scene_features(**{POINTS_KEY: far_points})
    path = write_records(tmp_path / "empty.tfrecord", [empty, empty, scene_features()])
    with caplog.at_level(logging.WARNING, logger="kfnas.data.lidar"):
        assert lidar_data_problems(TASK, with_train(files, path), point_range=RANGE) == []
    (warning,) = [r for r in caplog.records if r.name == "kfnas.data.lidar"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        "2 of the 5 LiDAR scenes read have no point inside the point range x [-12.8, 12.8]"
    )
    assert "the input pipeline will skip them" in warning.getMessage()
    report = lidar_data_report(TASK, with_train(files, path), point_range=RANGE)
    assert (report.problems, report.scenes_read, report.empty_scenes) == ([], 5, 2)


def test_pattern_that_matches_no_file(files: DatasetFiles, tmp_path: Path) -> None:
    pattern = str(tmp_path / "nowhere" / "*.tfrecord")
    problems = lidar_data_problems(TASK, with_train(files, pattern), point_range=RANGE)
    assert problems == [
        f"data.train pattern {pattern!r} matches no file: check the path, or generate data with "
        f"`kfnas make-data lidar --out DIR`, or convert KITTI with "
        f"`kfnas convert-kitti ROOT --out DIR`"
    ]


def test_the_points_of_vehicles_and_cyclists_tell_which_way_they_face(files: DatasetFiles) -> None:
    """The front part is lower and the front face brighter: the heading is not ambiguous by pi."""
    for scene in parsed(files.train):
        for box, label in zip(scene["boxes"], scene["classes"], strict=True):
            kind = OBJECT_CLASSES[label - 1]
            if kind.front[0] == 0:
                continue
            inside = scene["points"][in_box(scene["points"][:, :3], box, 0.1)]
            d = inside[:, :2] - box[:2]
            along = d[:, 0] * math.cos(box[6]) + d[:, 1] * math.sin(box[6])
            front = along > box[3] / 2 - kind.front[0] * box[3] + 0.1  # beyond the noise
            back = along < 0
            if front.sum() >= 5 and back.sum() >= 5:
                assert inside[front, 2].max() < inside[back, 2].max() - 0.2 * box[5]
