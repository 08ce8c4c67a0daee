"""Converts KITTI 3-D object detection data into kfnas's LiDAR scene format (``kfnas.data.lidar``).

``convert_kitti`` reads KITTI's object layout (``velodyne/``, ``label_2/``, ``calib/``, as in the
``data_object_velodyne``, ``data_object_label_2`` and ``data_object_calib`` downloads; the folder
itself or its ``training/`` folder) and writes ``train-*`` and ``validation-*`` shards of scenes:

* ``velodyne/<id>.bin``: float32 rows of x, y, z, reflectance (16 bytes a point) in the velodyne
  frame (x forward, y left, z up: kfnas's frame); the reflectance, in ``[0, 1]``, is the intensity;
* ``label_2/<id>.txt``: one object a line: type, truncated, occluded, alpha, the 2-D box (4
  values), dimensions ``h w l``, location ``x y z`` (the bottom centre of the box in rectified
  camera coordinates, y pointing down) and ``rotation_y`` (yaw around the camera's y axis);
* ``calib/<id>.txt``: ``R0_rect`` (3x3) and ``Tr_velo_to_cam`` (3x4) among others.

A box goes into the velodyne frame as follows: its centre is the bottom centre raised by ``h / 2``
(``y - h / 2``: camera y points down), then taken through ``inverse(R0_rect)`` and the inverse of
``Tr_velo_to_cam`` extended to 4x4. Its heading is the direction of its length axis, ``(cos ry, 0,
-sin ry)`` in camera coordinates, taken through the same rotations and measured from +x towards +y:
with KITTI's nominal axes (camera z = velodyne x, camera x = -velodyne y) that is
``-rotation_y - pi/2``, and the small rotations of the real calibrations are accounted for.
``length = l``, ``width = w``, ``height = h``. ``DontCare`` objects and types not in ``classes`` are
left out (KITTI's ``Van``, ``Truck``, ``Person_sitting``, ``Tram``, ``Misc`` by default).

Frames are split into train and validation at random (seeded, so the split is deterministic) by
``validation_share``; each split is written in frame id order. ``point_range`` optionally drops
the points and the boxes (by centre) outside it.

To read another layout (KITTI tracking, a raw drive): write its frames as
``kfnas.data.lidar.scene_example`` records (see ``docs/lidar.md``); ``Calibration`` and
``label_boxes`` convert KITTI labels for any of them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from kfnas.data.lidar import NUM_POINT_FEATURES, in_range, scene_example, wrap_angle, write_split
from kfnas.data.synthetic import DatasetFiles

#: KITTI object types kept by default, and their kfnas class ids (the synthetic data's classes).
KITTI_CLASSES: Mapping[str, int] = MappingProxyType({"Car": 1, "Pedestrian": 2, "Cyclist": 3})
FOLDERS = ("velodyne", "label_2", "calib")
_POINT_BYTES = 4 * NUM_POINT_FEATURES  # float32 x, y, z, reflectance
_LABEL_FIELDS = 15
#: Accepted names of the calibration entries (object layout first, raw-data names after).
_R0_KEYS = ("R0_rect", "R_rect")
_TR_KEYS = ("Tr_velo_to_cam", "Tr_velo_cam")


class KittiError(ValueError):
    """KITTI data that cannot be converted; the message names the file and says what to fix."""


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The transform of one KITTI frame between velodyne and rectified camera coordinates.

    Attributes:
        r0_rect: ``[3, 3]`` rectifying rotation of the reference camera.
        tr_velo_to_cam: ``[3, 4]`` velodyne -> reference camera (rotation and translation).
    """

    r0_rect: np.ndarray
    tr_velo_to_cam: np.ndarray

    @property
    def _rect_to_velo(self) -> np.ndarray:
        """``[4, 4]``: homogeneous rectified camera -> velodyne."""
        tr = np.eye(4)
        tr[:3, :] = self.tr_velo_to_cam
        r0 = np.eye(4)
        r0[:3, :3] = self.r0_rect
        return np.linalg.inv(tr) @ np.linalg.inv(r0)

    def points_to_velo(self, xyz: np.ndarray) -> np.ndarray:
        """Points ``[N, 3]`` in rectified camera coordinates -> velodyne coordinates."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return (np.c_[xyz, np.ones(len(xyz))] @ self._rect_to_velo.T)[:, :3]

    def directions_to_velo(self, directions: np.ndarray) -> np.ndarray:
        """Directions ``[N, 3]`` in rectified camera coordinates -> velodyne coordinates."""
        d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
        return (np.c_[d, np.zeros(len(d))] @ self._rect_to_velo.T)[:, :3]


@dataclasses.dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label file (the fields kfnas uses).

    Attributes:
        type: The object type (``Car``, ``Pedestrian``, ``DontCare``, ...).
        dimensions: ``(h, w, l)`` in metres.
        location: ``(x, y, z)``: the bottom centre in rectified camera coordinates, metres.
        rotation_y: Yaw around the camera's y axis, radians.
    """

    type: str
    dimensions: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float


def read_calibration(text: str, name: str) -> Calibration:
    """Parses a KITTI ``calib/<id>.txt``.

    Args:
        text: The file's text.
        name: The file's path, for messages.

    Raises:
        KittiError: ``R0_rect`` or ``Tr_velo_to_cam`` is missing or not a matrix.
    """
    entries: dict[str, list[float]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            entries[key.strip()] = [float(v) for v in values.split()]
        except ValueError as e:
            raise KittiError(f"{name} line {number}: {key.strip()} is not numbers ({e})") from e

    def matrix(keys: Sequence[str], shape: tuple[int, int]) -> np.ndarray:
        key = next((k for k in keys if k in entries), None)
        if key is None:
            raise KittiError(
                f"{name} has no {keys[0]} line: a KITTI calibration file needs {_R0_KEYS[0]} "
                f"(3x3) and {_TR_KEYS[0]} (3x4); use the files of KITTI's data_object_calib"
            )
        values = entries[key]
        if len(values) != shape[0] * shape[1]:
            raise KittiError(
                f"{name}: {key} has {len(values)} values, not {shape[0] * shape[1]} (a "
                f"{shape[0]}x{shape[1]} matrix, row after row)"
            )
        return np.asarray(values, dtype=np.float64).reshape(shape)

    return Calibration(matrix(_R0_KEYS, (3, 3)), matrix(_TR_KEYS, (3, 4)))


def read_labels(text: str, name: str) -> list[KittiObject]:
    """Parses a KITTI ``label_2/<id>.txt`` (every object, ``DontCare`` included).

    Args:
        text: The file's text.
        name: The file's path, for messages.

    Raises:
        KittiError: A line has too few fields or a field that is not a number.
    """
    objects = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < _LABEL_FIELDS:
            raise KittiError(
                f"{name} line {number} has {len(fields)} fields, not {_LABEL_FIELDS} (type, "
                f"truncated, occluded, alpha, 2-D box x4, h w l, x y z, rotation_y)"
            )
        try:
            h, w, length, x, y, z, ry = (float(v) for v in fields[8:15])
        except ValueError as e:
            raise KittiError(f"{name} line {number}: {e}") from e
        objects.append(KittiObject(fields[0], (h, w, length), (x, y, z), ry))
    return objects


def label_boxes(
    objects: Sequence[KittiObject], calibration: Calibration, classes: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes ``[K, 7]`` (velodyne frame) and class ids ``[K]`` of the objects in ``classes``.

    See the module docstring for the conversion; objects of other types are left out.
    """
    kept = [o for o in objects if o.type in classes]
    if not kept:
        return np.zeros((0, 7)), np.zeros((0,), dtype=np.int64)
    h, w, length = (np.array([o.dimensions[i] for o in kept]) for i in range(3))
    bottom = np.array([o.location for o in kept], dtype=np.float64)
    centre = bottom - np.c_[np.zeros_like(h), h / 2, np.zeros_like(h)]  # camera y points down
    ry = np.array([o.rotation_y for o in kept])
    forward = np.c_[np.cos(ry), np.zeros_like(ry), -np.sin(ry)]  # the length axis, camera frame
    direction = calibration.directions_to_velo(forward)
    heading = wrap_angle(np.arctan2(direction[:, 1], direction[:, 0]))
    boxes = np.c_[calibration.points_to_velo(centre), length, w, h, heading]
    return boxes, np.array([classes[o.type] for o in kept], dtype=np.int64)


def read_points(data: bytes, name: str) -> np.ndarray:
    """The points ``[N, 4]`` of a KITTI ``velodyne/<id>.bin`` (reflectance clipped to [0, 1]).

    Raises:
        KittiError: The size is not a whole number of 16-byte points.
    """
    if len(data) % _POINT_BYTES:
        raise KittiError(_size_message(name, len(data)))
    points = np.frombuffer(data, dtype="<f4").reshape(-1, NUM_POINT_FEATURES).astype(np.float64)
    points[:, 3] = np.clip(points[:, 3], 0.0, 1.0)
    return points


def _size_message(name: str, size: int) -> str:
    return (
        f"{name} has {size} bytes, not a multiple of {_POINT_BYTES}: wrong number of features per "
        f"point (KITTI velodyne scans are float32 x, y, z, reflectance); convert other point "
        f"formats with kfnas.data.lidar.scene_example (docs/lidar.md)"
    )


def _frame_folder(tf: Any, root: str) -> str:
    """``root`` or its ``training/`` folder, whichever holds the KITTI folders."""
    for folder in (root, os.path.join(root, "training")):
        if all(tf.io.gfile.isdir(os.path.join(folder, name)) for name in FOLDERS):
            return folder
    missing = [name for name in FOLDERS if not tf.io.gfile.isdir(os.path.join(root, name))]
    raise KittiError(
        f"{root} is not a KITTI object folder: it lacks {', '.join(f'{m}/' for m in missing)} "
        f"(it, or its training/ folder, must hold velodyne/, label_2/ and calib/, as KITTI's "
        f"data_object_velodyne, data_object_label_2 and data_object_calib downloads unpack)"
    )


def _frame_ids(tf: Any, folder: str) -> list[str]:
    """The frame ids of ``folder``, checked: each has its label and calibration, whole points."""
    scans = sorted(tf.io.gfile.glob(os.path.join(folder, "velodyne", "*.bin")))
    if not scans:
        raise KittiError(f"{os.path.join(folder, 'velodyne')} holds no .bin scans")
    ids = []
    for scan in scans:
        frame = os.path.basename(scan).removesuffix(".bin")
        for sub in ("label_2", "calib"):
            path = os.path.join(folder, sub, f"{frame}.txt")
            if not tf.io.gfile.exists(path):
                raise KittiError(
                    f"frame {frame} has {scan} but no {path}: every scan needs its label and "
                    f"calibration file (remove the scan, or add the missing file)"
                )
        size = tf.io.gfile.stat(scan).length
        if size % _POINT_BYTES:
            raise KittiError(_size_message(scan, size))
        ids.append(frame)
    return ids


def _read_text(tf: Any, path: str) -> str:
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def kitti_scene(
    tf: Any,
    folder: str,
    frame: str,
    classes: Mapping[str, int],
    point_range: Sequence[float] | None,
) -> bytes:
    """The serialized scene of one KITTI frame of ``folder`` (see ``convert_kitti``)."""
    scan = os.path.join(folder, "velodyne", f"{frame}.bin")
    with tf.io.gfile.GFile(scan, "rb") as f:
        points = read_points(f.read(), scan)
    label = os.path.join(folder, "label_2", f"{frame}.txt")
    calib = os.path.join(folder, "calib", f"{frame}.txt")
    boxes, ids = label_boxes(
        read_labels(_read_text(tf, label), label),
        read_calibration(_read_text(tf, calib), calib),
        classes,
    )
    if point_range is not None:
        points = points[in_range(points[:, :3], point_range)]
        keep = in_range(boxes[:, :3], point_range)
        boxes, ids = boxes[keep], ids[keep]
    return scene_example(points, boxes, ids, frame)


def convert_kitti(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    classes: Mapping[str, int] = KITTI_CLASSES,
    validation_share: float = 0.2,
    seed: int = 0,
    point_range: Sequence[float] | None = None,
    shards: int = 1,
) -> DatasetFiles:
    """Converts KITTI object data (see the module docstring) into LiDAR scene TFRecords.

    Args:
        root: The KITTI folder holding ``velodyne/``, ``label_2/`` and ``calib/``, or holding
            ``training/`` with them (local or ``gs://``).
        out_dir: Folder to write into (created if missing; files replaced).
        classes: KITTI object type -> kfnas class id (from 1); other types are left out.
        validation_share: Share of the frames written to the validation split, in ``(0, 1)``
            (at least one frame in each split).
        seed: Seed of the train/validation split; the same arguments give the same files.
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)``, metres: drops the points and
            boxes (by centre) outside it; ``None`` keeps all.
        shards: Number of TFRecord files per split.

    Returns:
        The paths written (``annotations`` empty; ``image_size`` 0: there is no generated grid;
        ``num_classes`` the largest class id).

    Raises:
        KittiError: A folder or a frame's file is missing or malformed (the message names it).
        ValueError: An argument is out of range.
    """
    import tensorflow as tf  # Converting data needs it; importing kfnas.data does not.

    if not 0 < validation_share < 1:
        raise ValueError(f"validation_share must lie in (0, 1), got {validation_share}")
    if not classes or any(int(c) < 1 for c in classes.values()):
        raise ValueError(f"classes must map KITTI types to class ids from 1, got {dict(classes)}")
    if point_range is not None and len(point_range) != 6:
        raise ValueError(
            f"point_range must be (x_min, y_min, z_min, x_max, y_max, z_max), got {point_range}"
        )
    folder = _frame_folder(tf, os.fspath(root))
    frames = _frame_ids(tf, folder)
    if len(frames) < 2:
        raise KittiError(
            f"{folder} holds {len(frames)} frame: need at least 2 (one per split) to convert"
        )
    num_validation = min(len(frames) - 1, max(1, round(len(frames) * validation_share)))
    order = np.random.default_rng(seed).permutation(len(frames))
    split_frames = {
        "validation": sorted(frames[i] for i in order[:num_validation]),
        "train": sorted(frames[i] for i in order[num_validation:]),
    }
    if not 1 <= shards <= min(len(f) for f in split_frames.values()):
        raise ValueError(
            f"shards must be in 1..{min(len(f) for f in split_frames.values())} (frames in the "
            f"smaller split), got {shards}"
        )
    out = os.fspath(out_dir)
    tf.io.gfile.makedirs(out)
    paths = {}
    for split, names in split_frames.items():

        def scene(index: int, names: list[str] = names) -> bytes:
            return kitti_scene(tf, folder, names[index], classes, point_range)

        paths[split] = write_split(out, split, len(names), shards, scene)
    return DatasetFiles(
        out_dir=out,
        train=tuple(paths["train"]),
        validation=tuple(paths["validation"]),
        annotations="",
        num_classes=max(int(c) for c in classes.values()),
        image_size=0,
        # KITTI's type names by class id, unless several types share an id.
        names=tuple(sorted(classes, key=lambda name: classes[name]))
        if len(set(classes.values())) == len(classes)
        else (),
    )


__all__ = [
    "FOLDERS",
    "KITTI_CLASSES",
    "Calibration",
    "KittiError",
    "KittiObject",
    "convert_kitti",
    "kitti_scene",
    "label_boxes",
    "read_calibration",
    "read_labels",
    "read_points",
]
