"""Checks of a user's classification data, run before any trial spends accelerator time.

``classification_data_problems`` checks what tf-models-official's image classification input
pipeline will need, and returns one message per problem, naming the file and saying what to fix:

* each of ``data.train`` and ``data.validation`` matches files (local paths or ``gs://``, through
  ``tf.io.gfile``) that read as TFRecords;
* records are ``tf.train.Example`` protos with the features ``official.vision``'s
  ``classification_input.Decoder`` reads: one encoded image in ``image/encoded`` (bytes) and one
  integer ``image/class/label``; detection records (``image/object/class/label``) are named as
  such;
* labels lie in ``0..task.num_classes - 1``;
* the first record of each file goes through official.vision's own ``Decoder`` and ``Parser``
  (training and evaluation), with the task's ``decode_jpeg_only`` and ``aug_crop``: this catches
  images that do not decode, and non-JPEG images when only JPEG is decoded.

Reads are bounded: at most ``max_files`` files per split and ``max_records`` records per split.

To add a check: write a function returning messages and call it from
``classification_data_problems`` (per record: ``_record_problems``; per file: ``_file_problems``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kfnas.data._files import first_line, split_files

if TYPE_CHECKING:
    from kfnas.config.spec import DataSpec, TaskSpec

MAKE_DATA_HINT = "generate data with `kfnas make-data classification --out DIR`"
IMAGE_KEY = "image/encoded"
LABEL_KEY = "image/class/label"
_DETECTION_LABEL_KEY = "image/object/class/label"
_JPEG_MAGIC = b"\xff\xd8\xff"


def classification_data_problems(
    task: TaskSpec,
    data: DataSpec,
    *,
    decode_jpeg_only: bool = False,
    aug_crop: bool = True,
    max_records: int = 64,
    max_files: int = 8,
) -> list[str]:
    """What is wrong with an experiment's classification data, as messages that say what to fix.

    Args:
        task: The task; ``num_classes`` bounds the labels and ``image_size`` sizes the parse.
        data: The file patterns (``data.annotations`` is not used by classification).
        decode_jpeg_only: The task's ``decode_jpeg_only`` option (JPEG images only).
        aug_crop: The task's ``aug_crop`` option (with ``decode_jpeg_only``, JPEG is required).
        max_records: At most this many records are read per split.
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        One message per problem; empty when the data looks right.
    """
    import tensorflow as tf  # Checking data needs it; naming the task does not.

    jpeg_only = decode_jpeg_only and aug_crop  # tf-models decodes any format otherwise.
    out, files = split_files(tf, data, "classification", MAKE_DATA_HINT, max_records, max_files)
    for _, path, per_file in files:
        out.extend(_file_problems(tf, path, per_file, task, jpeg_only=jpeg_only))
    return out


def _file_problems(tf: Any, path: str, limit: int, task: TaskSpec, *, jpeg_only: bool) -> list[str]:
    """Problems of the first ``limit`` records of one file."""
    problems: list[str] = []
    bad_labels: set[int] = set()
    num_read = 0
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).take(limit)):
            num_read += 1
            record = raw.numpy()
            try:
                example = tf.train.Example.FromString(record)
            except Exception as e:  # The protobuf runtime's DecodeError has no stable import.
                return [f"{path}: record {index} is not a tf.train.Example ({e})"]
            structural = _record_problems(example.features.feature, jpeg_only=jpeg_only)
            if structural:
                return [f"{path}: record {index} {structural}"]
            label = example.features.feature[LABEL_KEY].int64_list.value[0]
            if not 0 <= label < task.num_classes:
                bad_labels.add(int(label))
            if index == 0:
                problems.extend(_parser_problems(tf, path, record, task, jpeg_only=jpeg_only))
    except tf.errors.OpError as e:
        return [f"{path} cannot be read as TFRecords: {first_line(e)}"]
    if num_read == 0:
        problems.append(f"{path} holds no records")
    if bad_labels:
        labels = ", ".join(str(c) for c in sorted(bad_labels))
        problems.append(
            f"{path}: label(s) {labels} outside 0..{task.num_classes - 1} (task.num_classes = "
            f"{task.num_classes}; labels count from 0): set task.num_classes to at least "
            f"{max(bad_labels) + 1} if the labels are right (ImageNet records labelled 1..1000 "
            f"need 1001), or fix the labels"
        )
    return problems


def _record_problems(feature: Any, *, jpeg_only: bool) -> str:
    """The structural problem of one record, or ``""``."""
    kinds = {key: feature[key].WhichOneof("kind") for key in feature}
    if kinds.get(LABEL_KEY) is None:
        if _DETECTION_LABEL_KEY in feature:
            return (
                f"has {_DETECTION_LABEL_KEY!r} but no {LABEL_KEY!r}: these are detection "
                f"records; classification needs one class label per image in {LABEL_KEY!r}"
            )
        return f"has no {LABEL_KEY!r} feature (one integer class per image)"
    if kinds.get(IMAGE_KEY) is None:
        return f"has no {IMAGE_KEY!r} feature (the encoded image)"
    if kinds[IMAGE_KEY] != "bytes_list":
        return f"stores {IMAGE_KEY!r} as {kinds[IMAGE_KEY]}, but the Decoder reads it as bytes_list"
    if kinds[LABEL_KEY] != "int64_list":
        return f"stores {LABEL_KEY!r} as {kinds[LABEL_KEY]}, but the Decoder reads it as int64_list"
    counts = {key: len(getattr(feature[key], kinds[key]).value) for key in (IMAGE_KEY, LABEL_KEY)}
    if counts != {IMAGE_KEY: 1, LABEL_KEY: 1}:
        return (
            f"has {counts[IMAGE_KEY]} value(s) in {IMAGE_KEY!r} and {counts[LABEL_KEY]} in "
            f"{LABEL_KEY!r}: official.vision's classification Decoder reads exactly one of each"
        )
    if jpeg_only and not feature[IMAGE_KEY].bytes_list.value[0].startswith(_JPEG_MAGIC):
        return (
            "holds an image that is not a JPEG, and task.options.decode_jpeg_only is true: set "
            "task.options.decode_jpeg_only to false (decodes PNG, GIF and BMP too)"
        )
    return ""


def _parser_problems(
    tf: Any, path: str, record: bytes, task: TaskSpec, *, jpeg_only: bool
) -> list[str]:
    """Runs official.vision's own Decoder and Parser on one record (training and evaluation)."""
    from official.vision.dataloaders import classification_input

    decoder = classification_input.Decoder()
    parser = classification_input.Parser(
        output_size=[task.image_size, task.image_size],
        num_classes=task.num_classes,
        decode_jpeg_only=jpeg_only,
        aug_crop=True,
    )
    try:
        decoded = decoder.decode(tf.constant(record))
        for training in (True, False):
            parser.parse_fn(training)(decoded)
    except (tf.errors.OpError, ValueError) as e:
        return [
            f"{path}: official.vision's classification parser cannot read the first record: "
            f"{first_line(e)}; is {IMAGE_KEY!r} an encoded JPEG, PNG, GIF or BMP image?"
        ]
    return []


__all__ = ["IMAGE_KEY", "LABEL_KEY", "MAKE_DATA_HINT", "classification_data_problems"]
