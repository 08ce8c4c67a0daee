"""A seeded synthetic LiDAR detection dataset: boxes of points on a ground plane, with clutter.

``write_lidar_dataset`` writes ``train-0000i-of-0000N.tfrecord`` and
``validation-0000i-of-0000N.tfrecord`` shards of scenes in kfnas's LiDAR format
(``kfnas.data.lidar``; no annotation file, ``DatasetFiles.annotations`` is empty).

Extent: ``image_size`` is the side of the bird's-eye-view grid at ``PILLAR_SIZE`` = 0.4 m pillars,
so a scene spans x and y in ``[-image_size * 0.2, image_size * 0.2]`` metres (25.6 m square at the
default 64) and z in ``[-3, 3]`` m around the sensor at the origin; ``point_range(image_size)``
gives that range for ``task.options``. Every point and every box lies inside it.

A scene holds:

* a ground plane at z = ``GROUND_Z`` = -1.6 m: points on a jittered 0.5 m grid, kept with a
  probability falling as ``5 m / distance`` from the sensor (a LiDAR's rings thin out), none under
  an object;
* 1 to 6 labelled objects (``OBJECT_CLASSES``: 1 vehicle, 2 pedestrian, 3 cyclist, the first
  ``num_classes`` of them) standing on the ground with a uniform heading in ``[-pi, pi)``, fully
  inside the range, apart from each other and from the sensor. Their points lie on the box faces
  that face the sensor and on the top, lower over the front part of vehicles and cyclists and
  brighter on their front face (so the points tell the heading, as real objects' shapes do);
  their number falls linearly with distance from the class's
  ``points[1]`` (at the sensor) to ``points[0]`` (at the range's corner), and their intensity is
  drawn from the class's own range;
* unlabelled clutter: poles (a vertical line of points, 1.5-3 m high) and bushes (a blob of
  points on the ground), apart from the objects, with low intensities;
* uniform noise points anywhere in the range, outside the objects.

At the default size a scene has about 1,500-4,000 points. The points are shuffled.

Determinism: each scene is drawn from its own generator seeded with ``(seed, split, index)`` and
the serialized examples are deterministic, so the same arguments give byte-identical files.

To add a class: add one ``ObjectClass`` to ``OBJECT_CLASSES`` (its size ranges, its points at the
sensor and at the range's corner, its intensity range); ``num_classes`` may then go up to
``len(OBJECT_CLASSES)``.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from kfnas.data.lidar import scene_example, write_split
from kfnas.data.synthetic import DatasetFiles

#: Side of a bird's-eye-view pillar, metres: ``image_size`` pillars span the scene.
PILLAR_SIZE = 0.4
#: The vertical extent of a scene, metres around the sensor.
Z_RANGE = (-3.0, 3.0)
#: Height of the ground plane below the sensor, metres.
GROUND_Z = -1.6
_SPLITS = ("train", "validation")
_MAX_OBJECTS = 6
_PLACEMENT_TRIES = 50
_GROUND_SPACING = 0.5  # metres between ground grid points
_GROUND_FULL_RADIUS = 5.0  # metres: every ground point is kept within it
_SENSOR_CLEARANCE = 1.0  # metres between the sensor and an object's footprint
_OBJECT_GAP = 0.5  # metres between two objects' (or clutter's) bounding circles
_EDGE_MARGIN = 0.05  # metres between an object's footprint and the range's edge
_FREE_MARGIN = 0.25  # metres around an object kept free of ground, clutter and noise points
_SURFACE_NOISE = 0.015  # metres: standard deviation of object points around their face


@dataclasses.dataclass(frozen=True)
class ObjectClass:
    """One class of the dataset.

    Attributes:
        name: The class's name.
        length: Range of the box's length (along its heading), metres.
        width: Range of its width, metres.
        height: Range of its height, metres.
        points: Points on an object ``(far, near)``: at the range's corner and at the sensor.
        intensity: Range of its points' intensities, within ``[0, 1]``.
        front: ``(share of the length, share of the height)``: the front part of the object
            (along its heading) is that much lower (a car's bonnet, a bicycle without its
            rider), so its points say which way it faces; ``(0, 1)``: no such part.
    """

    name: str
    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    points: tuple[int, int]
    intensity: tuple[float, float]
    front: tuple[float, float] = (0.0, 1.0)


#: The classes, in label order: class ``k`` is ``OBJECT_CLASSES[k - 1]``.
OBJECT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass(
        "vehicle", (3.8, 4.8), (1.6, 2.0), (1.4, 1.8), (150, 400), (0.55, 0.9), (0.3, 0.55)
    ),
    ObjectClass("pedestrian", (0.5, 0.9), (0.5, 0.8), (1.6, 1.9), (40, 100), (0.2, 0.4)),
    ObjectClass("cyclist", (1.6, 1.9), (0.5, 0.8), (1.5, 1.8), (60, 160), (0.4, 0.55), (0.4, 0.6)),
)
#: Added to the intensity of the points on an object's front face (lights, number plates).
_FRONT_FACE_INTENSITY = 0.15
_GROUND_INTENSITY = (0.02, 0.15)
_CLUTTER_INTENSITY = (0.05, 0.3)


def point_range(image_size: int) -> tuple[float, float, float, float, float, float]:
    """The ``(x_min, y_min, z_min, x_max, y_max, z_max)`` a dataset of ``image_size`` spans."""
    half = image_size * PILLAR_SIZE / 2
    return (-half, -half, Z_RANGE[0], half, half, Z_RANGE[1])


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A placed object or clutter: its bounding circle in x, y."""

    x: float
    y: float
    radius: float


def _corners(box: np.ndarray) -> np.ndarray:
    """The 4 footprint corners ``[4, 2]`` of a box row."""
    cx, cy, _, length, width, _, heading = box
    c, s = math.cos(heading), math.sin(heading)
    u = np.array([1, 1, -1, -1]) * length / 2
    v = np.array([1, -1, -1, 1]) * width / 2
    return np.stack([cx + u * c - v * s, cy + u * s + v * c], axis=-1)


def _in_box(xyz: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """Which points ``[N, 3]`` lie in the box row grown by ``margin`` on every side."""
    cx, cy, cz, length, width, height, heading = box
    dx, dy = xyz[:, 0] - cx, xyz[:, 1] - cy
    c, s = math.cos(heading), math.sin(heading)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return (
        (np.abs(u) <= length / 2 + margin)
        & (np.abs(v) <= width / 2 + margin)
        & (np.abs(xyz[:, 2] - cz) <= height / 2 + margin)
    )


def _place_objects(
    rng: np.random.Generator, half: float, num_classes: int
) -> tuple[list[np.ndarray], list[int], list[_Placed]]:
    """Boxes (rows of 7) and classes of 1 to ``_MAX_OBJECTS`` objects, and their circles."""
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    taken: list[_Placed] = []
    wanted = int(rng.integers(1, _MAX_OBJECTS + 1))
    for attempt in range(wanted + 100):  # Attempts past ``wanted`` only while none is placed.
        if attempt >= wanted and boxes:
            break
        label = int(rng.integers(1, num_classes + 1))
        kind = OBJECT_CLASSES[label - 1]
        length, width, height = (
            float(rng.uniform(*r)) for r in (kind.length, kind.width, kind.height)
        )
        radius = math.hypot(length, width) / 2
        for _ in range(_PLACEMENT_TRIES):
            heading = float(rng.uniform(-math.pi, math.pi))
            cx, cy = (float(v) for v in rng.uniform(-half, half, size=2))
            box = np.array([cx, cy, GROUND_Z + height / 2, length, width, height, heading])
            corners = _corners(box)
            if np.abs(corners).max() > half - _EDGE_MARGIN:
                continue
            origin = np.zeros((1, 3))
            origin[0, 2] = box[2]
            if _in_box(origin, box, _SENSOR_CLEARANCE)[0]:
                continue
            if any(math.hypot(cx - o.x, cy - o.y) < radius + o.radius + _OBJECT_GAP for o in taken):
                continue
            boxes.append(box)
            classes.append(label)
            taken.append(_Placed(cx, cy, radius))
            break
    return boxes, classes, taken


def _object_points(
    rng: np.random.Generator, box: np.ndarray, kind: ObjectClass, far: float
) -> np.ndarray:
    """Points ``[n, 4]`` on the faces of ``box`` that face the sensor and on its top."""
    cx, cy, cz, length, width, height, heading = box
    distance = math.hypot(cx, cy)
    closeness = max(0.0, 1.0 - distance / far) * float(rng.uniform(0.85, 1.0))
    count = round(kind.points[0] + (kind.points[1] - kind.points[0]) * closeness)
    c, s = math.cos(heading), math.sin(heading)
    # Faces in the box frame (u along the heading, v across, z up): centre offset, normal, the
    # two half extents spanning the face, its area.
    faces = []
    for sign in (1.0, -1.0):
        faces.append(((sign * length / 2, 0.0, 0.0), (sign, 0.0), ("v", "z"), width * height))
        faces.append(((0.0, sign * width / 2, 0.0), (0.0, sign), ("u", "z"), length * height))
    visible = []
    for offset, normal, span, area in faces:
        fx = cx + offset[0] * c - offset[1] * s
        fy = cy + offset[0] * s + offset[1] * c
        nx, ny = normal[0] * c - normal[1] * s, normal[0] * s + normal[1] * c
        if nx * -fx + ny * -fy > 0:  # The face's normal points towards the sensor.
            visible.append((offset, span, area))
    visible.append(((0.0, 0.0, height / 2), ("u", "v"), length * width))  # the top
    areas = np.array([area for _, _, area in visible])
    per_face = rng.multinomial(count, areas / areas.sum())
    half = {"u": length / 2, "v": width / 2, "z": height / 2}
    local = []
    for (offset, span, _), n in zip(visible, per_face, strict=True):
        uvz = np.tile(np.array(offset, dtype=np.float64), (n, 1))
        for axis in span:
            column = "uvz".index(axis)
            uvz[:, column] = rng.uniform(-half[axis], half[axis], size=n)
        local.append(uvz)
    uvz = np.concatenate(local)
    front_share, front_height = kind.front
    if front_share > 0:  # the lower front part: its top face is lower, its sides shorter
        top = -half["z"] + front_height * height
        front = uvz[:, 0] > half["u"] - front_share * length
        on_top = front & (uvz[:, 2] >= half["z"])
        uvz[on_top, 2] = top
        sides = front & ~on_top & (uvz[:, 2] > top)
        uvz[sides, 2] = rng.uniform(-half["z"], top, size=int(sides.sum()))
    front_face = uvz[:, 0] >= half["u"]
    uvz = uvz + rng.normal(0.0, _SURFACE_NOISE, size=(count, 3))
    uvz = np.clip(uvz, [-half["u"], -half["v"], -half["z"]], [half["u"], half["v"], half["z"]])
    xyz = np.stack(
        [cx + uvz[:, 0] * c - uvz[:, 1] * s, cy + uvz[:, 0] * s + uvz[:, 1] * c, cz + uvz[:, 2]],
        axis=-1,
    )
    intensity = rng.uniform(*kind.intensity, size=count)
    intensity[front_face] = np.minimum(intensity[front_face] + _FRONT_FACE_INTENSITY, 1.0)
    return np.concatenate([xyz, intensity[:, None]], axis=-1)


def _ground_points(rng: np.random.Generator, half: float) -> np.ndarray:
    """Ground points ``[n, 4]`` on a jittered grid, thinning out with distance."""
    ticks = np.arange(-half + _GROUND_SPACING / 2, half, _GROUND_SPACING)
    gx, gy = np.meshgrid(ticks, ticks)
    xy = np.stack([gx.ravel(), gy.ravel()], axis=-1)
    xy = xy + rng.uniform(-0.4, 0.4, size=xy.shape) * _GROUND_SPACING
    xy = np.clip(xy, -half, half)
    distance = np.maximum(np.hypot(xy[:, 0], xy[:, 1]), 1e-6)
    keep = rng.uniform(size=len(xy)) < np.minimum(1.0, _GROUND_FULL_RADIUS / distance)
    xy = xy[keep]
    z = GROUND_Z + rng.normal(0.0, 0.02, size=(len(xy), 1))
    intensity = rng.uniform(*_GROUND_INTENSITY, size=(len(xy), 1))
    return np.concatenate([xy, z, intensity], axis=-1)


def _clutter_points(
    rng: np.random.Generator, half: float, taken: list[_Placed]
) -> list[np.ndarray]:
    """Unlabelled poles and bushes ``[n, 4]`` each, apart from ``taken`` (which grows)."""
    out = []
    area = (2 * half) ** 2
    for _ in range(int(rng.integers(1, 2 + int(area // 100)))):
        pole = bool(rng.uniform() < 0.5)
        radius = 0.15 if pole else float(rng.uniform(0.3, 0.8))
        for _ in range(_PLACEMENT_TRIES):
            x, y = (float(v) for v in rng.uniform(-half + radius, half - radius, size=2))
            if math.hypot(x, y) < radius + _SENSOR_CLEARANCE:
                continue
            if any(math.hypot(x - o.x, y - o.y) < radius + o.radius + _OBJECT_GAP for o in taken):
                continue
            break
        else:
            continue
        taken.append(_Placed(x, y, radius))
        n = int(rng.integers(15, 41))
        if pole:
            top = float(rng.uniform(1.5, 3.0))
            offsets = np.concatenate(
                [rng.normal(0.0, 0.04, size=(n, 2)), rng.uniform(0.0, top, size=(n, 1))], axis=-1
            )
        else:
            direction = rng.normal(size=(n, 3))
            direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
            offsets = direction * radius * rng.uniform(0.7, 1.0, size=(n, 1))
            offsets[:, 2] = np.abs(offsets[:, 2]) * 0.8
        xyz = np.array([x, y, GROUND_Z]) + offsets
        xyz[:, :2] = np.clip(xyz[:, :2], -half, half)
        intensity = rng.uniform(*_CLUTTER_INTENSITY, size=(n, 1))
        out.append(np.concatenate([xyz, intensity], axis=-1))
    return out


def _draw_scene(
    rng: np.random.Generator, image_size: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: points ``[N, 4]``, boxes ``[K, 7]`` and classes ``[K]``, drawn from ``rng``."""
    half = image_size * PILLAR_SIZE / 2
    boxes, classes, taken = _place_objects(rng, half, num_classes)
    far = half * math.sqrt(2)
    parts = [
        _object_points(rng, box, OBJECT_CLASSES[label - 1], far)
        for box, label in zip(boxes, classes, strict=True)
    ]
    ground = _ground_points(rng, half)
    clutter = _clutter_points(rng, half, taken)
    area = (2 * half) ** 2
    num_noise = round(float(rng.uniform(0.03, 0.08)) * area)
    lo, hi = np.array([-half, -half, Z_RANGE[0]]), np.array([half, half, Z_RANGE[1]])
    noise = np.concatenate(
        [rng.uniform(lo, hi, size=(num_noise, 3)), rng.uniform(0.0, 1.0, size=(num_noise, 1))],
        axis=-1,
    )
    free = np.concatenate([ground, *clutter, noise])  # No point of these inside an object.
    inside = np.zeros(len(free), dtype=bool)
    for box in boxes:
        inside |= _in_box(free[:, :3], box, _FREE_MARGIN)
    points = np.concatenate([*parts, free[~inside]])
    points = points[rng.permutation(len(points))]
    return points, np.array(boxes).reshape(-1, 7), np.array(classes, dtype=np.int64)


def _check_arguments(
    num_train: int, num_validation: int, image_size: int, num_classes: int, shards: int
) -> None:
    if num_train < 1 or num_validation < 1:
        raise ValueError(f"need at least 1 scene per split, got {num_train}, {num_validation}")
    if not 1 <= num_classes <= len(OBJECT_CLASSES):
        names = ", ".join(c.name for c in OBJECT_CLASSES)
        raise ValueError(
            f"num_classes must be in 1..{len(OBJECT_CLASSES)} ({names}), got {num_classes}"
        )
    if image_size < 16:
        raise ValueError(
            f"image_size (the BEV grid side, {PILLAR_SIZE} m pillars) must be at least 16, got "
            f"{image_size}"
        )
    if not 1 <= shards <= min(num_train, num_validation):
        raise ValueError(f"shards must be in 1..{min(num_train, num_validation)}, got {shards}")


def write_lidar_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_train: int = 128,
    num_validation: int = 32,
    image_size: int = 64,
    num_classes: int = 3,
    seed: int = 0,
    shards: int = 1,
) -> DatasetFiles:
    """Writes a synthetic LiDAR detection dataset (see the module docstring) into ``out_dir``.

    Args:
        out_dir: Folder to write into, local or ``gs://`` (created if missing; files replaced).
        num_train: Number of training scenes.
        num_validation: Number of validation scenes.
        image_size: Side of the bird's-eye-view grid in ``PILLAR_SIZE`` (0.4 m) pillars: the
            scenes span x, y in ``[-image_size * 0.2, image_size * 0.2]`` metres.
        num_classes: Number of classes, at most ``len(OBJECT_CLASSES)`` (vehicle, pedestrian,
            cyclist).
        seed: Seed of the dataset; the same arguments give byte-identical files.
        shards: Number of TFRecord files per split (scenes are split into contiguous runs).

    Returns:
        The paths written (``annotations`` empty).

    Raises:
        ValueError: An argument is out of range.
    """
    import tensorflow as tf  # The data module's writer; proposing trials never gets here.

    _check_arguments(num_train, num_validation, image_size, num_classes, shards)
    out = os.fspath(out_dir)
    tf.io.gfile.makedirs(out)
    counts = {"train": num_train, "validation": num_validation}
    paths = {}
    for split_index, split in enumerate(_SPLITS):

        def scene(index: int, split_index: int = split_index, split: str = split) -> bytes:
            rng = np.random.default_rng([seed, split_index, index])
            points, boxes, classes = _draw_scene(rng, image_size, num_classes)
            return scene_example(points, boxes, classes, f"{split}-{index:06d}")

        paths[split] = write_split(out, split, counts[split], shards, scene)
    return DatasetFiles(
        out_dir=out,
        train=tuple(paths["train"]),
        validation=tuple(paths["validation"]),
        annotations="",
        num_classes=num_classes,
        image_size=image_size,
        names=tuple(c.name for c in OBJECT_CLASSES[:num_classes]),
    )


__all__ = [
    "GROUND_Z",
    "OBJECT_CLASSES",
    "PILLAR_SIZE",
    "Z_RANGE",
    "ObjectClass",
    "point_range",
    "write_lidar_dataset",
]
