"""The LiDAR scene TFRecord format of the ``lidar_detection`` task: writing, parsing, checking.

One ``tf.train.Example`` per scene (a point cloud and its labelled 3-D boxes):

* ``scene/id`` (bytes): any string id;
* ``points`` (float list): the scene's points flattened row-major, ``[N * F]``;
  ``points/num_features`` (int64): ``F``, which must be ``NUM_POINT_FEATURES`` = 4 (x, y, z,
  intensity);
* per object, lists of equal length ``K``: ``objects/center_x``, ``objects/center_y``,
  ``objects/center_z``, ``objects/length``, ``objects/width``, ``objects/height``,
  ``objects/heading`` (floats) and ``objects/class`` (int64, ``1..num_classes``; 0 is never used).

Coordinates are metres in the sensor frame, x forward, y left, z up. ``length`` is the box's
extent along its heading, ``width`` across it, ``height`` along z; ``heading`` is the yaw from +x
towards +y in radians, wrapped to ``[-pi, pi)``; ``center_z`` is the box's centre (not its
bottom). Intensity lies in ``[0, 1]``. A box is the row ``[center_x, center_y, center_z, length,
width, height, heading]`` (``BOX_FIELDS``) of a ``[K, 7]`` array.

``scene_example`` writes one record from NumPy arrays, ``parse_scene`` reads one inside a
``tf.data`` pipeline, ``lidar_data_problems`` checks a user's files before any trial starts, and
``write_split`` writes a split's shards (used by ``kfnas.data.synthetic_lidar`` and
``kfnas.data.kitti``). ``docs/lidar.md`` shows how to convert KITTI and Waymo Open data.

To add a per-scene feature: add its key here, write it in ``scene_example``, read it in
``parse_scene`` (optional features need a default, so older files stay readable) and, if it can be
wrong in a way worth a message, check it in ``_record_problems``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kfnas.data._files import first_line, split_files

if TYPE_CHECKING:
    from kfnas.config.spec import DataSpec, TaskSpec

logger = logging.getLogger(__name__)

MAKE_DATA_HINT = (
    "generate data with `kfnas make-data lidar --out DIR`, or convert KITTI with "
    "`kfnas convert-kitti ROOT --out DIR`"
)
SCENE_ID_KEY = "scene/id"
POINTS_KEY = "points"
NUM_FEATURES_KEY = "points/num_features"
#: The features of a point, in column order.
POINT_FEATURES = ("x", "y", "z", "intensity")
NUM_POINT_FEATURES = len(POINT_FEATURES)
#: The columns of a box, in order; ``objects/<field>`` is each one's feature key.
BOX_FIELDS = ("center_x", "center_y", "center_z", "length", "width", "height", "heading")
BOX_KEYS = tuple(f"objects/{field}" for field in BOX_FIELDS)
CLASS_KEY = "objects/class"
#: Every feature of a scene: key -> the value list kind it is stored as.
FEATURE_KINDS = {
    SCENE_ID_KEY: "bytes_list",
    POINTS_KEY: "float_list",
    NUM_FEATURES_KEY: "int64_list",
    **dict.fromkeys(BOX_KEYS, "float_list"),
    CLASS_KEY: "int64_list",
}
_OBJECT_KEYS = (*BOX_KEYS, CLASS_KEY)
#: The largest float32 below pi: headings are stored as float32 inside [-pi, pi).
_FLOAT32_BELOW_PI = float(np.nextafter(np.float32(math.pi), np.float32(0)))
#: A point range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in metres.
PointRange = tuple[float, float, float, float, float, float]


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles in radians wrapped to ``[-pi, pi)``."""
    return np.mod(np.asarray(angle, dtype=np.float64) + math.pi, 2 * math.pi) - math.pi


def in_range(xyz: np.ndarray, point_range: Sequence[float]) -> np.ndarray:
    """Which rows of ``xyz`` (``[..., 3]``, metres) lie inside ``point_range`` (bounds included)."""
    lo = np.asarray(point_range[:3], dtype=np.float64)
    hi = np.asarray(point_range[3:], dtype=np.float64)
    return np.all((xyz >= lo) & (xyz <= hi), axis=-1)


def scene_example(
    points: np.ndarray, boxes: np.ndarray, classes: np.ndarray, scene_id: str
) -> bytes:
    """One scene as a serialized ``tf.train.Example`` (see the module docstring).

    The bytes are deterministic: the same arrays give the same bytes. Headings are wrapped to
    ``[-pi, pi)``; values are stored as float32.

    Args:
        points: ``[N, 4]`` x, y, z (metres, sensor frame) and intensity (``[0, 1]``).
        boxes: ``[K, 7]`` rows ``[center_x, center_y, center_z, length, width, height,
            heading]`` (``BOX_FIELDS``).
        classes: ``[K]`` integer class ids, ``1..num_classes``.
        scene_id: Any string naming the scene.

    Returns:
        The serialized example.

    Raises:
        ValueError: An array has the wrong shape, a value is not finite, or a class id is below 1.
    """
    import tensorflow as tf  # Writing records needs it; importing kfnas.data does not.

    points = np.asarray(points)
    boxes = np.asarray(boxes)
    classes = np.asarray(classes)
    if points.ndim != 2 or points.shape[1] != NUM_POINT_FEATURES:
        raise ValueError(
            f"scene {scene_id!r}: points must be [N, {NUM_POINT_FEATURES}] "
            f"({', '.join(POINT_FEATURES)}), got shape {list(points.shape)}: drop or add columns"
        )
    if boxes.ndim != 2 or boxes.shape[1] != len(BOX_FIELDS):
        if not (boxes.size == 0 and boxes.ndim in (1, 2)):
            raise ValueError(
                f"scene {scene_id!r}: boxes must be [K, {len(BOX_FIELDS)}] "
                f"({', '.join(BOX_FIELDS)}), got shape {list(boxes.shape)}"
            )
        boxes = boxes.reshape(0, len(BOX_FIELDS))
    if classes.ndim != 1 or classes.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"scene {scene_id!r}: classes must be [K] with K = {boxes.shape[0]} (one per box), "
            f"got shape {list(classes.shape)}"
        )
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"scene {scene_id!r}: classes must be integers, got {classes.dtype}")
    if classes.size and classes.min() < 1:
        raise ValueError(
            f"scene {scene_id!r}: class id {int(classes.min())} is below 1 (0 is never used: "
            f"classes count from 1)"
        )
    for name, values in (("points", points), ("boxes", boxes)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"scene {scene_id!r}: {name} hold values that are not finite")
    boxes = boxes.astype(np.float64)
    # Wrapped, then kept inside [-pi, pi) once rounded to float32 (float32(pi) exceeds pi).
    boxes[:, 6] = np.clip(wrap_angle(boxes[:, 6]), -_FLOAT32_BELOW_PI, _FLOAT32_BELOW_PI)

    def floats(values: np.ndarray) -> Any:
        listed = values.astype(np.float32).ravel().tolist()
        return tf.train.Feature(float_list=tf.train.FloatList(value=listed))

    def ints(values: list[int]) -> Any:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    feature = {
        SCENE_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[scene_id.encode()])),
        POINTS_KEY: floats(points),
        NUM_FEATURES_KEY: ints([NUM_POINT_FEATURES]),
        **{key: floats(boxes[:, column]) for column, key in enumerate(BOX_KEYS)},
        CLASS_KEY: ints([int(c) for c in classes]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse_scene(serialized: Any) -> dict[str, Any]:
    """Parses one serialized scene; usable inside ``tf.data.Dataset.map``.

    A scene stored with another number of features per point, a ``points`` list that is not a
    whole number of points, or object lists of unequal lengths fails an assertion whose message
    says what to fix (``lidar_data_problems`` reports the same before a trial starts).

    Args:
        serialized: A scalar string tensor: one record.

    Returns:
        ``{"scene_id": tf.string [], "points": float32 [N, 4], "boxes": float32 [K, 7],
        "classes": int32 [K], "num_features": int64 []}``.
    """
    import tensorflow as tf

    spec = {
        SCENE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        POINTS_KEY: tf.io.VarLenFeature(tf.float32),
        NUM_FEATURES_KEY: tf.io.FixedLenFeature([], tf.int64),
        **{key: tf.io.VarLenFeature(tf.float32) for key in BOX_KEYS},
        CLASS_KEY: tf.io.VarLenFeature(tf.int64),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    dense = {key: tf.sparse.to_dense(parsed[key]) for key in (POINTS_KEY, *_OBJECT_KEYS)}
    num_features = parsed[NUM_FEATURES_KEY]
    num_objects = tf.size(dense[CLASS_KEY])
    checks = [
        tf.debugging.assert_equal(
            num_features,
            tf.constant(NUM_POINT_FEATURES, tf.int64),
            message=(
                f"a LiDAR scene's {NUM_FEATURES_KEY} is not {NUM_POINT_FEATURES}: kfnas reads "
                f"{', '.join(POINT_FEATURES)} per point; drop the extra columns when converting "
                f"(kfnas convert-kitti does)"
            ),
        ),
        tf.debugging.assert_equal(
            tf.math.floormod(tf.size(dense[POINTS_KEY]), NUM_POINT_FEATURES),
            0,
            message=(
                f"a LiDAR scene's {POINTS_KEY!r} list is not a whole number of points of "
                f"{NUM_POINT_FEATURES} values: write x, y, z, intensity per point, row after row"
            ),
        ),
        *(
            tf.debugging.assert_equal(
                tf.size(dense[key]),
                num_objects,
                message=(
                    f"a LiDAR scene's {key!r} and {CLASS_KEY!r} differ in length: every object "
                    f"needs one value in each objects/ list"
                ),
            )
            for key in BOX_KEYS
        ),
    ]
    with tf.control_dependencies([c for c in checks if c is not None]):
        points = tf.reshape(tf.identity(dense[POINTS_KEY]), [-1, NUM_POINT_FEATURES])
        boxes = tf.stack([tf.identity(dense[key]) for key in BOX_KEYS], axis=-1)
        classes = tf.cast(tf.identity(dense[CLASS_KEY]), tf.int32)
    return {
        "scene_id": parsed[SCENE_ID_KEY],
        "points": points,
        "boxes": tf.reshape(boxes, [-1, len(BOX_FIELDS)]),
        "classes": classes,
        "num_features": num_features,
    }


def write_split(
    out_dir: str, split: str, count: int, shards: int, scene: Callable[[int], bytes]
) -> list[str]:
    """Writes ``count`` scenes as ``<split>-0000i-of-0000N.tfrecord`` shards, in order.

    Args:
        out_dir: The folder (local or ``gs://``; must exist).
        split: ``train`` or ``validation``.
        count: Number of scenes.
        shards: Number of files; the scenes are split into contiguous runs.
        scene: Index (``0..count - 1``) -> the serialized scene.

    Returns:
        The paths written, in order.
    """
    import tensorflow as tf

    paths = []
    for shard, indices in enumerate(np.array_split(np.arange(count), shards)):
        path = os.path.join(out_dir, f"{split}-{shard:05d}-of-{shards:05d}.tfrecord")
        paths.append(path)
        with tf.io.TFRecordWriter(path) as writer:
            for index in indices.tolist():
                writer.write(scene(index))
    return paths


@dataclasses.dataclass(frozen=True)
class LidarDataReport:
    """What ``lidar_data_report`` found.

    Attributes:
        problems: One message per problem, naming the file and saying what to fix.
        scenes_read: Number of scenes read (a bounded sample of each split).
        empty_scenes: How many of them have no point inside the point range (the input pipeline
            skips them; not a problem).
    """

    problems: list[str]
    scenes_read: int
    empty_scenes: int


def lidar_data_problems(
    task: TaskSpec,
    data: DataSpec,
    *,
    point_range: PointRange,
    max_records: int = 64,
    max_files: int = 8,
) -> list[str]:
    """What is wrong with the LiDAR data of an experiment, as messages that say what to fix.

    Scenes without a point inside ``point_range`` are no problem: they are counted, and a warning
    says how many the input pipeline will skip.

    Args:
        task: The task; ``num_classes`` bounds the class ids.
        data: The file patterns (``data.annotations`` is not used).
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` of the voxelization, metres.
        max_records: At most this many records are read per split.
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        One message per problem; empty when the data looks right.
    """
    report = lidar_data_report(
        task, data, point_range=point_range, max_records=max_records, max_files=max_files
    )
    if report.empty_scenes:
        logger.warning(
            "%d of the %d LiDAR scenes read have no point inside the point range %s: the input "
            "pipeline will skip them (widen task.options point_range to keep them)",
            report.empty_scenes,
            report.scenes_read,
            _range_text(point_range),
        )
    return report.problems


def lidar_data_report(
    task: TaskSpec,
    data: DataSpec,
    *,
    point_range: PointRange,
    max_records: int = 64,
    max_files: int = 8,
) -> LidarDataReport:
    """The problems of the LiDAR data of an experiment and how many scenes read are empty.

    Checks, in a bounded sample (``max_records`` records of at most ``max_files`` files per
    split): each split matches files; records are ``tf.train.Example`` protos with every feature
    of the format, of the right value kind; 4 features per point and a whole number of points;
    object lists of equal length; class ids in ``1..task.num_classes``; box centres inside
    ``point_range``.

    Args:
        task: The task; ``num_classes`` bounds the class ids.
        data: The file patterns.
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` of the voxelization, metres.
        max_records: At most this many records are read per split.
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        The problems (as ``lidar_data_problems`` returns them) and the scene counts.
    """
    import tensorflow as tf  # Checking data needs it; naming the task does not.

    out, files = split_files(tf, data, "LiDAR scene", MAKE_DATA_HINT, max_records, max_files)
    read = empty = 0
    for _, path, per_file in files:
        found = _file_problems(tf, path, per_file, task.num_classes, point_range)
        out.extend(found.problems)
        read += found.scenes_read
        empty += found.empty_scenes
    return LidarDataReport(out, read, empty)


def _file_problems(
    tf: Any, path: str, limit: int, num_classes: int, point_range: PointRange
) -> LidarDataReport:
    """Problems of the first ``limit`` records of one file, and its scene counts."""
    problems: list[str] = []
    bad_classes: set[int] = set()
    num_read = num_empty = num_boxes = num_outside = 0
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).take(limit)):
            num_read += 1
            try:
                example = tf.train.Example.FromString(raw.numpy())
            except Exception as e:  # The protobuf runtime's DecodeError has no stable import.
                return LidarDataReport(
                    [f"{path}: record {index} is not a tf.train.Example ({e})"], num_read, num_empty
                )
            feature = example.features.feature
            structural = _record_problems(feature)
            if structural:
                return LidarDataReport(
                    [f"{path}: record {index} {structural}"], num_read, num_empty
                )
            points = np.asarray(_values(feature, POINTS_KEY), np.float64)
            points = points.reshape(-1, NUM_POINT_FEATURES)
            num_empty += not in_range(points[:, :3], point_range).any()
            centres = np.asarray([_values(feature, key) for key in BOX_KEYS[:3]], np.float64).T
            num_boxes += len(centres)
            num_outside += int((~in_range(centres, point_range)).sum()) if len(centres) else 0
            bad_classes.update(
                int(c) for c in _values(feature, CLASS_KEY) if not 1 <= c <= num_classes
            )
    except tf.errors.OpError as e:
        return LidarDataReport(
            [f"{path} cannot be read as TFRecords: {first_line(e)}"], num_read, num_empty
        )
    if num_read == 0:
        problems.append(f"{path} holds no records")
    if bad_classes:
        ids = ", ".join(str(c) for c in sorted(bad_classes))
        problems.append(
            f"{path}: object class id(s) {ids} outside 1..{num_classes} (task.num_classes = "
            f"{num_classes}; classes count from 1): fix {CLASS_KEY!r} or set task.num_classes"
        )
    if num_outside:
        problems.append(
            f"{num_outside} of {num_boxes} boxes in {path} lie outside the voxelization range "
            f"{_range_text(point_range)} (their centres): widen task.options point_range, or "
            f"drop them when converting"
        )
    return LidarDataReport(problems, num_read, num_empty)


def _record_problems(feature: Any) -> str:
    """The structural problem of one record, or ``""``."""
    missing = [key for key in (SCENE_ID_KEY, POINTS_KEY, NUM_FEATURES_KEY) if key not in feature]
    present_objects = [key for key in _OBJECT_KEYS if key in feature]
    if present_objects:  # A scene without objects may leave out all objects/ lists.
        missing += [key for key in _OBJECT_KEYS if key not in feature]
    if missing:
        return (
            f"lacks the feature(s) {', '.join(missing)} of kfnas's LiDAR scene format "
            f"(docs/lidar.md): write them when converting"
        )
    for key, kind in FEATURE_KINDS.items():
        actual = feature[key].WhichOneof("kind") if key in feature else kind
        if actual is not None and actual != kind:
            return f"stores {key!r} as {actual}, but kfnas reads it as {kind}"
    num_features = _values(feature, NUM_FEATURES_KEY)
    if len(num_features) != 1:
        return f"has {len(num_features)} values in {NUM_FEATURES_KEY!r}, not one"
    if num_features[0] != NUM_POINT_FEATURES:
        return (
            f"has {num_features[0]} features per point; kfnas reads "
            f"{', '.join(POINT_FEATURES)}: drop the extra columns when converting "
            f"(kfnas convert-kitti does)"
        )
    num_values = len(_values(feature, POINTS_KEY))
    if num_values % NUM_POINT_FEATURES:
        return (
            f"has {num_values} values in {POINTS_KEY!r}, not a multiple of {NUM_FEATURES_KEY} = "
            f"{NUM_POINT_FEATURES}: write {', '.join(POINT_FEATURES)} per point, row after row"
        )
    if len(_values(feature, SCENE_ID_KEY)) != 1:
        return f"has {len(_values(feature, SCENE_ID_KEY))} values in {SCENE_ID_KEY!r}, not one"
    lengths = {key: len(_values(feature, key)) for key in _OBJECT_KEYS}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{n} {key.removeprefix('objects/')}" for key, n in lengths.items())
        return f"has {counts}: every object needs one value in each objects/ list"
    return ""


def _values(feature: Any, key: str) -> list[Any]:
    if key not in feature:
        return []
    kind = feature[key].WhichOneof("kind")
    return list(getattr(feature[key], kind).value) if kind else []


def _range_text(point_range: Sequence[float]) -> str:
    """``x [x_min, x_max], y [..], z [..] m``."""
    return (
        ", ".join(
            f"{axis} [{point_range[i]:g}, {point_range[i + 3]:g}]" for i, axis in enumerate("xyz")
        )
        + " m"
    )


__all__ = [
    "BOX_FIELDS",
    "BOX_KEYS",
    "CLASS_KEY",
    "FEATURE_KINDS",
    "MAKE_DATA_HINT",
    "NUM_FEATURES_KEY",
    "NUM_POINT_FEATURES",
    "POINTS_KEY",
    "POINT_FEATURES",
    "SCENE_ID_KEY",
    "LidarDataReport",
    "PointRange",
    "in_range",
    "lidar_data_problems",
    "lidar_data_report",
    "parse_scene",
    "scene_example",
    "wrap_angle",
    "write_split",
]
