"""Tests for the synthetic detection dataset (kfnas.data.synthetic)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.data.synthetic import SHAPES, DatasetFiles, write_detection_dataset

pytestmark = pytest.mark.tf

SIZE = 64
NUM_CLASSES = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    out = tmp_path_factory.mktemp("synthetic")
    return write_detection_dataset(
        out, num_train=24, num_validation=12, image_size=SIZE, num_classes=NUM_CLASSES, shards=2
    )


def decoded(paths: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """Every record of ``paths`` decoded by official.vision's own TfExampleDecoder."""
    import tensorflow as tf
    from official.vision.dataloaders.tf_example_decoder import TfExampleDecoder

    decoder = TfExampleDecoder()
    return [
        {k: v.numpy() for k, v in decoder.decode(raw).items()}
        for raw in tf.data.TFRecordDataset(list(paths))
    ]


def all_bytes(files: DatasetFiles) -> dict[str, bytes]:
    paths = (*files.train, *files.validation, files.annotations)
    return {Path(p).name: Path(p).read_bytes() for p in paths}


def test_same_seed_gives_byte_identical_files(files: DatasetFiles, tmp_path: Path) -> None:
    again = write_detection_dataset(
        tmp_path / "again", num_train=24, num_validation=12, num_classes=NUM_CLASSES, shards=2
    )
    assert all_bytes(again) == all_bytes(files)


def test_another_seed_gives_other_images(files: DatasetFiles, tmp_path: Path) -> None:
    other = write_detection_dataset(
        tmp_path / "other",
        num_train=24,
        num_validation=12,
        num_classes=NUM_CLASSES,
        shards=2,
        seed=1,
    )
    mine, theirs = all_bytes(files), all_bytes(other)
    assert mine.keys() == theirs.keys()
    assert all(mine[name] != theirs[name] for name in mine)


def test_shards_counts_and_unique_source_ids(files: DatasetFiles) -> None:
    assert [Path(p).name for p in files.train] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert len(files.validation) == 2
    train, validation = decoded(files.train), decoded(files.validation)
    assert (len(train), len(validation)) == (24, 12)
    ids = [int(r["source_id"]) for r in train + validation]
    assert len(set(ids)) == 36
    assert all(1 <= len(r["groundtruth_classes"]) <= 3 for r in train + validation)


def test_records_decode_with_boxes_inside_and_classes_in_range(files: DatasetFiles) -> None:
    records = decoded(files.train + files.validation)
    labels = set()
    for r in records:
        assert r["image"].shape == (SIZE, SIZE, 3)
        assert (r["height"], r["width"]) == (SIZE, SIZE)
        boxes = r["groundtruth_boxes"]  # ymin, xmin, ymax, xmax, normalized
        assert boxes.shape == (len(r["groundtruth_classes"]), 4)
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert not r["groundtruth_is_crowd"].any()
        labels.update(r["groundtruth_classes"].tolist())
    assert labels == {1, 2, 3}  # every class occurs, none outside 1..num_classes


def test_boxes_are_tight_around_the_drawn_shape(files: DatasetFiles) -> None:
    for r in decoded(files.validation):
        image = r["image"]
        for label, box in zip(r["groundtruth_classes"], r["groundtruth_boxes"], strict=True):
            ymin, xmin, ymax, xmax = np.rint(box * SIZE).astype(int)
            shape = np.all(image == SHAPES[label - 1].color, axis=-1)
            inside = shape[ymin:ymax, xmin:xmax]
            # The shape touches all four sides of its box ...
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            # ... and nothing of its colour lies just outside them (objects keep a gap).
            rows = slice(ymin, ymax)
            cols = slice(xmin, xmax)
            if ymin > 0:
                assert not shape[ymin - 1, cols].any()
            if ymax < SIZE:
                assert not shape[ymax, cols].any()
            if xmin > 0:
                assert not shape[rows, xmin - 1].any()
            if xmax < SIZE:
                assert not shape[rows, xmax].any()


def test_coco_json_matches_the_validation_records(files: DatasetFiles) -> None:
    coco = json.loads(Path(files.annotations).read_text())
    assert coco["categories"] == [
        {"id": k + 1, "name": name, "supercategory": "shape"}
        for k, name in enumerate(files.class_names)
    ]
    by_image: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records = decoded(files.validation)
    assert sorted(i["id"] for i in coco["images"]) == sorted(int(r["source_id"]) for r in records)
    for r in records:
        anns = by_image[int(r["source_id"])]
        assert [a["category_id"] for a in anns] == r["groundtruth_classes"].tolist()
        for ann, box, area in zip(anns, r["groundtruth_boxes"], r["groundtruth_area"], strict=True):
            ymin, xmin, ymax, xmax = box * SIZE
            np.testing.assert_allclose(
                ann["bbox"], [xmin, ymin, xmax - xmin, ymax - ymin], atol=1e-3
            )
            assert ann["area"] == pytest.approx(area)
            assert 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]
            assert ann["iscrowd"] == 0
    assert len(coco["annotations"]) == len({a["id"] for a in coco["annotations"]})


def test_data_spec_points_at_the_files(files: DatasetFiles) -> None:
    import tensorflow as tf

    spec = files.data_spec()
    assert sorted(tf.io.gfile.glob(spec.train)) == list(files.train)
    assert sorted(tf.io.gfile.glob(spec.validation)) == list(files.validation)
    assert spec.annotations == files.annotations
    assert files.data_spec(with_annotations=False).annotations == ""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": len(SHAPES) + 1},
        {"num_classes": 0},
        {"num_train": 0},
        {"image_size": 8},
        {"shards": 3, "num_validation": 2},
    ],
)
def test_out_of_range_arguments_are_refused(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_detection_dataset(tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())
