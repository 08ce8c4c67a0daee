"""Tests for the KITTI converter (kfnas.data.kitti) and ``kfnas convert-kitti``.

Three frames are written in KITTI's object layout from boxes known in the velodyne frame, through
a calibration with a non-trivial rotation and translation; the converted scenes must give those
boxes back.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas import cli
from kfnas.cli import main
from kfnas.data.kitti import (
    Calibration,
    KittiError,
    KittiObject,
    convert_kitti,
    label_boxes,
    read_calibration,
)
from kfnas.data.lidar import parse_scene

pytestmark = pytest.mark.tf


def rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


#: KITTI's nominal axes: camera x = -velodyne y, camera y = -velodyne z, camera z = velodyne x.
NOMINAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: The test calibration: the nominal axes after a 0.03 rad yaw, a translation, and a rectifying
#: rotation of 0.02 rad around the camera's (vertical) y axis.
VELO_TO_CAM = NOMINAL @ rotation_z(0.03)
TRANSLATION = np.array([0.05, -0.08, -0.27])
R0_RECT = rotation_y(0.02)

#: Frame id -> objects in the velodyne frame: (type, [cx, cy, cz, l, w, h, heading]).
FRAMES: dict[str, list[tuple[str, list[float]]]] = {
    "000000": [
        ("Car", [12.0, -3.0, -0.9, 4.2, 1.7, 1.5, 0.4]),
        ("Pedestrian", [6.5, 2.5, -0.8, 0.7, 0.6, 1.8, -2.9]),
        ("DontCare", [30.0, 10.0, -1.0, 1.0, 1.0, 1.0, 0.0]),
    ],
    "000001": [
        ("Cyclist", [9.0, 4.0, -0.85, 1.8, 0.6, 1.7, 3.1]),
        ("Van", [15.0, -6.0, -0.6, 5.0, 2.0, 2.2, 1.0]),
    ],
    "000002": [("Car", [-8.0, 7.0, -0.95, 4.5, 1.8, 1.6, -1.2])],
}
CLASSES = {"Car": 1, "Pedestrian": 2, "Cyclist": 3}


def kitti_label_line(kind: str, box: list[float]) -> str:
    """The KITTI label line of a box given in the velodyne frame (through the test calibration)."""
    cx, cy, cz, length, width, height, heading = box
    centre = R0_RECT @ (VELO_TO_CAM @ np.array([cx, cy, cz]) + TRANSLATION)
    bottom = centre + np.array([0.0, height / 2, 0.0])  # camera y points down
    forward = R0_RECT @ VELO_TO_CAM @ np.array([math.cos(heading), math.sin(heading), 0.0])
    assert abs(forward[1]) < 1e-12  # the heading stays in the camera's x-z plane
    ry = math.atan2(-forward[2], forward[0])  # forward = (cos ry, 0, -sin ry)
    numbers = [0.0, 0, -10.0, 100.0, 120.0, 200.0, 180.0, height, width, length, *bottom, ry]
    return kind + " " + " ".join(f"{v:.10f}" for v in numbers)


def calib_text() -> str:
    def row(name: str, values: np.ndarray) -> str:
        return f"{name}: " + " ".join(f"{v:.15e}" for v in np.ravel(values))

    projection = np.hstack([np.eye(3) * 700.0, np.zeros((3, 1))])
    return "\n".join(
        [
            *(row(f"P{i}", projection) for i in range(4)),
            row("R0_rect", R0_RECT),
            row("Tr_velo_to_cam", np.hstack([VELO_TO_CAM, TRANSLATION[:, None]])),
            row("Tr_imu_to_velo", np.hstack([np.eye(3), np.zeros((3, 1))])),
            "",
        ]
    )


def frame_points(frame: str) -> np.ndarray:
    rng = np.random.default_rng(int(frame))
    xyz = rng.uniform([-40.0, -20.0, -2.5], [40.0, 20.0, 1.0], size=(200, 3))
    return np.c_[xyz, rng.uniform(0.0, 1.0, size=200)].astype(np.float32)


def write_kitti(folder: Path) -> Path:
    """The three test frames in KITTI's object layout under ``folder``."""
    for sub in ("velodyne", "label_2", "calib"):
        (folder / sub).mkdir(parents=True)
    for frame, objects in FRAMES.items():
        frame_points(frame).tofile(folder / "velodyne" / f"{frame}.bin")
        lines = [kitti_label_line(kind, box) for kind, box in objects]
        (folder / "label_2" / f"{frame}.txt").write_text("\n".join(lines) + "\n")
        (folder / "calib" / f"{frame}.txt").write_text(calib_text())
    return folder


def read_scenes(paths: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    import tensorflow as tf

    scenes = tf.data.TFRecordDataset(list(paths)).map(parse_scene)
    return {s["scene_id"].numpy().decode(): {k: v.numpy() for k, v in s.items()} for s in scenes}


def assert_boxes_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual[:, :6], expected[:, :6], atol=1e-5)
    turn = np.mod(actual[:, 6] - expected[:, 6] + math.pi, 2 * math.pi) - math.pi
    np.testing.assert_allclose(turn, 0.0, atol=1e-5)
    assert np.all((actual[:, 6] >= -math.pi) & (actual[:, 6] < math.pi))


def truth(frame: str) -> tuple[np.ndarray, list[int]]:
    kept = [(kind, box) for kind, box in FRAMES[frame] if kind in CLASSES]
    return np.array([box for _, box in kept]).reshape(-1, 7), [CLASSES[k] for k, _ in kept]


@pytest.fixture
def kitti(tmp_path: Path) -> Path:
    return write_kitti(tmp_path / "kitti")


def test_converted_boxes_are_the_velodyne_truth(kitti: Path, tmp_path: Path) -> None:
    files = convert_kitti(kitti, tmp_path / "out")
    assert files.annotations == "" and files.num_classes == 3
    train, validation = read_scenes(files.train), read_scenes(files.validation)
    assert (len(train), len(validation)) == (2, 1)  # 20 % of 3 frames, at least one
    assert sorted({**train, **validation}) == sorted(FRAMES)
    for frame, scene in {**train, **validation}.items():
        boxes, classes = truth(frame)
        assert_boxes_equal(scene["boxes"], boxes)
        assert scene["classes"].tolist() == classes  # DontCare and Van left out
        np.testing.assert_array_equal(scene["points"], frame_points(frame))


def test_heading_is_minus_rotation_y_minus_half_pi_for_kitti_nominal_axes() -> None:
    calibration = Calibration(np.eye(3), np.hstack([NOMINAL, np.zeros((3, 1))]))
    for ry in (-3.0, -1.2, 0.0, 0.5, 2.9):
        objects = [KittiObject("Car", (1.5, 1.7, 4.0), (1.0, 1.6, 10.0), ry)]
        boxes, classes = label_boxes(objects, calibration, CLASSES)
        expected = (-ry - math.pi / 2 + math.pi) % (2 * math.pi) - math.pi
        assert boxes[0, 6] == pytest.approx(expected, abs=1e-9)
        # The bottom centre (camera y down) becomes the box centre, 0.75 m higher.
        np.testing.assert_allclose(boxes[0, :3], [10.0, -1.0, -1.6 + 0.75], atol=1e-9)
        assert boxes[0, 3:6].tolist() == [4.0, 1.7, 1.5] and classes.tolist() == [1]


def test_training_folder_layout_split_and_determinism(kitti: Path, tmp_path: Path) -> None:
    parent = tmp_path / "object"
    parent.mkdir()
    kitti.rename(parent / "training")
    first = convert_kitti(parent, tmp_path / "a", validation_share=0.5, seed=3)
    again = convert_kitti(parent / "training", tmp_path / "b", validation_share=0.5, seed=3)
    for x, y in zip(first.train + first.validation, again.train + again.validation, strict=True):
        assert Path(x).read_bytes() == Path(y).read_bytes()
    assert len(read_scenes(first.validation)) == 2  # round(1.5) = 2, one frame left to train


def test_point_range_drops_points_and_boxes_outside(kitti: Path, tmp_path: Path) -> None:
    limits = (0.0, -10.0, -3.0, 14.0, 10.0, 1.0)
    files = convert_kitti(kitti, tmp_path / "out", point_range=limits)
    scenes = read_scenes(files.train + files.validation)
    assert scenes["000002"]["boxes"].shape == (0, 7)  # behind the sensor
    boxes, _ = truth("000000")
    assert_boxes_equal(scenes["000000"]["boxes"], boxes)  # both inside
    xyz = scenes["000001"]["points"][:, :3]
    assert len(xyz) and np.all((xyz >= limits[:3]) & (xyz <= limits[3:]))


def test_scan_of_the_wrong_size_is_refused(kitti: Path, tmp_path: Path) -> None:
    scan = kitti / "velodyne" / "000001.bin"
    scan.write_bytes(np.zeros(15, np.float32).tobytes())  # 5 features x 3 points
    with pytest.raises(KittiError, match="wrong number of features") as raised:
        convert_kitti(kitti, tmp_path / "out")
    assert str(raised.value).startswith(f"{scan} has 60 bytes, not a multiple of 16")


def test_missing_calibration_and_folders_are_named(kitti: Path, tmp_path: Path) -> None:
    calib = kitti / "calib" / "000001.txt"
    calib.unlink()
    with pytest.raises(KittiError) as raised:
        convert_kitti(kitti, tmp_path / "out")
    assert str(raised.value).startswith(
        f"frame 000001 has {kitti / 'velodyne' / '000001.bin'} but no {calib}"
    )
    for path in (kitti / "calib").iterdir():
        path.unlink()
    (kitti / "calib").rmdir()
    with pytest.raises(KittiError, match="is not a KITTI object folder: it lacks calib/"):
        convert_kitti(kitti, tmp_path / "out")


def test_calibration_without_the_velodyne_transform() -> None:
    with pytest.raises(KittiError, match=r"c\.txt has no Tr_velo_to_cam line"):
        read_calibration("R0_rect: 1 0 0 0 1 0 0 0 1\n", "c.txt")


def test_convert_kitti_command(kitti: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli._common, "console", Console(width=300, highlight=False))
    out = tmp_path / "out"
    assert main(["convert-kitti", str(kitti), "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"train:       {out}/train-*.tfrecord" in printed
    assert (out / "validation-00000-of-00001.tfrecord").is_file()
    assert main(["convert-kitti", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "is not a KITTI object folder" in " ".join(capsys.readouterr().out.split())
