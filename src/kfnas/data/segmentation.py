"""Checks of a user's semantic-segmentation data, run before any trial spends accelerator time.

``segmentation_data_problems`` checks what official.vision's segmentation input pipeline
(``official/vision/dataloaders/segmentation_input.py``) needs, and returns one message per
problem, naming the file and saying what to fix:

* each of ``data.train`` and ``data.validation`` matches files (local paths or ``gs://``, through
  ``tf.io.gfile``);
* records are ``tf.train.Example`` protos holding ``image/encoded`` and
  ``image/segmentation/class/encoded`` (bytes) and ``image/height`` and ``image/width`` (int64:
  the parser reshapes the decoded image and mask with them), which the official ``Decoder`` parses;
* the image decodes with 3 channels (1 is accepted: the parser converts it) and the mask with 1
  channel (the parser would turn an RGB mask into grey levels, not class ids), both of the stored
  height and width;
* mask values are class ids ``0..task.num_classes`` (0 the background, as the synthetic data and
  the detection labels count classes without it) or ``IGNORE_LABEL`` (255, left out of loss and
  metrics).

Reads are bounded: at most ``max_files`` files per split and ``max_records`` records per split.

To add a check: write a function returning messages and call it from ``segmentation_data_problems``
(per record: ``_record_problems``; per file: ``_file_problems``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kfnas.data._files import first_line, split_files

if TYPE_CHECKING:
    from kfnas.config.spec import DataSpec, TaskSpec

MAKE_DATA_HINT = "generate data with `kfnas make-data segmentation --out DIR`"
#: Mask value official.vision's segmentation loss and metrics ignore.
IGNORE_LABEL = 255
MASK_KEY = "image/segmentation/class/encoded"
#: Features the official segmentation Decoder and Parser need: key -> value list kind.
_REQUIRED = {
    "image/encoded": "bytes_list",
    MASK_KEY: "bytes_list",
    "image/height": "int64_list",
    "image/width": "int64_list",
}


def segmentation_data_problems(
    task: TaskSpec, data: DataSpec, *, max_records: int = 64, max_files: int = 8
) -> list[str]:
    """What is wrong with the segmentation data of an experiment, as messages that say what to fix.

    Args:
        task: The task; ``num_classes`` bounds the mask values.
        data: The file patterns (``data.annotations`` is not used by segmentation).
        max_records: At most this many records are read per split.
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        One message per problem; empty when the data looks right.
    """
    import tensorflow as tf  # Checking data needs it; naming the task does not.

    out, files = split_files(tf, data, "segmentation", MAKE_DATA_HINT, max_records, max_files)
    for _, path, per_file in files:
        out.extend(_file_problems(tf, path, per_file, task.num_classes))
    return out


def _file_problems(tf: Any, path: str, limit: int, num_classes: int) -> list[str]:
    """Problems of the first ``limit`` records of one file."""
    problems: list[str] = []
    bad_values: set[int] = set()
    num_read = 0
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).take(limit)):
            num_read += 1
            record = raw.numpy()
            try:
                example = tf.train.Example.FromString(record)
            except Exception as e:  # The protobuf runtime's DecodeError has no stable import.
                return [f"{path}: record {index} is not a tf.train.Example ({e})"]
            found = _record_problems(tf, example.features.feature, bad_values)
            if not found and index == 0:
                found = _decoder_problems(tf, record)
            if found:
                return [f"{path}: record {index} {p}" for p in found]
    except tf.errors.OpError as e:
        return [f"{path} cannot be read as TFRecords: {first_line(e)}"]
    if num_read == 0:
        problems.append(f"{path} holds no records")
    bad = sorted(v for v in bad_values if v > num_classes and v != IGNORE_LABEL)
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        problems.append(
            f"{path}: mask value(s) {shown} exceed task.num_classes = {num_classes}: mask pixels "
            f"must be class ids 0..{num_classes} (0 the background) or {IGNORE_LABEL} (ignored); "
            f"set task.num_classes to at least {max(bad)} "
            f"or fix the masks"
        )
    return problems


def _record_problems(tf: Any, feature: Any, bad_values: set[int]) -> list[str]:
    """Structural problems of one record; its mask values go into ``bad_values``."""
    for key, kind in _REQUIRED.items():
        actual = feature[key].WhichOneof("kind") if key in feature else None
        if actual is None:
            return [f"has no {key!r} feature, which official.vision's segmentation parser needs"]
        if actual != kind:
            return [f"stores {key!r} as {actual}, but the segmentation decoder reads {kind}"]
        if len(getattr(feature[key], kind).value) != 1:
            return [f"has {len(getattr(feature[key], kind).value)} values in {key!r}, not 1"]
    height = feature["image/height"].int64_list.value[0]
    width = feature["image/width"].int64_list.value[0]
    try:
        image = tf.io.decode_image(feature["image/encoded"].bytes_list.value[0]).numpy()
    except (tf.errors.OpError, ValueError) as e:
        return [f"has an image/encoded that is not a PNG/JPEG image: {first_line(e)}"]
    try:
        mask = tf.io.decode_image(feature[MASK_KEY].bytes_list.value[0]).numpy()
    except (tf.errors.OpError, ValueError) as e:
        return [f"has a {MASK_KEY} that is not a PNG image: {first_line(e)}"]
    out = []
    if image.ndim != 3 or image.shape[:2] != (height, width) or image.shape[2] not in (1, 3):
        out.append(
            f"has an image of shape {list(image.shape)} but image/height x image/width = "
            f"{height} x {width}: store the image's own size and 3 (RGB) channels"
        )
    if mask.ndim != 3 or mask.shape[:2] != (height, width):
        out.append(
            f"has a mask of shape {list(mask.shape)} but image/height x image/width = "
            f"{height} x {width}: the mask must be as large as its image"
        )
    elif mask.shape[2] != 1:
        out.append(
            f"has a mask with {mask.shape[2]} channels: store the class ids as a single-channel "
            f"(grayscale) PNG"
        )
    else:
        bad_values.update(int(v) for v in np.unique(mask))
    return out


def _decoder_problems(tf: Any, record: bytes) -> list[str]:
    """Runs official.vision's own segmentation decoder on one record."""
    from official.vision.dataloaders import segmentation_input

    try:
        segmentation_input.Decoder().decode(tf.constant(record))
    except (tf.errors.OpError, ValueError) as e:
        return [f"cannot be parsed by the official segmentation Decoder: {first_line(e)}"]
    return []


__all__ = ["IGNORE_LABEL", "MAKE_DATA_HINT", "segmentation_data_problems"]
