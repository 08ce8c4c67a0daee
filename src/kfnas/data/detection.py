"""Checks of a user's detection data, run before any trial spends accelerator time.

``detection_data_problems`` checks what tf-models-official's RetinaNet input pipeline and COCO
evaluator will need, and returns one message per problem, naming the file and saying what to fix:

* each of ``data.train`` and ``data.validation`` matches files (local paths or ``gs://``, through
  ``tf.io.gfile``);
* records are ``tf.train.Example`` protos with the features ``official.vision``'s
  ``TfExampleDecoder`` reads, of the right value types (``image/encoded`` and ``image/source_id``
  are required; boxes, labels, areas and crowd flags are optional lists of equal lengths), with
  boxes normalized to ``[0, 1]``, and the first record of each file decodes with that decoder;
* class ids lie in ``1..task.num_classes`` (0 is the background);
* validation records carry integer source ids (the COCO evaluator turns them into image ids);
* ``data.annotations``, when set, is a readable COCO JSON whose category ids fit
  ``task.num_classes`` and whose images include the validation records' source ids.

Reads are bounded: at most ``max_files`` files per split and ``max_records`` records per split.

To add a check: write a function returning messages and call it from ``detection_data_problems``
(per record: ``_record_problems``; per file: ``_file_problems``; annotations:
``_annotation_problems``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kfnas.data._files import first_line, split_files

if TYPE_CHECKING:
    from kfnas.config.spec import DataSpec, TaskSpec

MAKE_DATA_HINT = "generate data with `kfnas make-data detection --out DIR`"
_BOX_KEYS = tuple(f"image/object/bbox/{c}" for c in ("xmin", "ymin", "xmax", "ymax"))
_LABEL_KEY = "image/object/class/label"
#: Features TfExampleDecoder cannot do without: key -> value list kind.
_REQUIRED = {"image/encoded": "bytes_list", "image/source_id": "bytes_list"}
#: Features it reads when present: key -> value list kind.
_OPTIONAL = {
    "image/height": "int64_list",
    "image/width": "int64_list",
    **dict.fromkeys(_BOX_KEYS, "float_list"),
    _LABEL_KEY: "int64_list",
    "image/object/area": "float_list",
    "image/object/is_crowd": "int64_list",
}
_BOX_TOLERANCE = 1e-3
_MAX_ANNOTATION_BYTES = 1 << 30  # Larger COCO files are checked for existence only.


def detection_data_problems(
    task: TaskSpec, data: DataSpec, *, max_records: int = 64, max_files: int = 8
) -> list[str]:
    """What is wrong with the detection data of an experiment, as messages that say what to fix.

    Args:
        task: The task; ``num_classes`` bounds the class ids.
        data: The file patterns and the optional COCO annotation file.
        max_records: At most this many records are read per split.
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        One message per problem; empty when the data looks right.
    """
    import tensorflow as tf  # Checking data needs it; naming the task does not.

    out, files = split_files(tf, data, "detection", MAKE_DATA_HINT, max_records, max_files)
    validation_ids: list[int] = []
    for split, path, per_file in files:
        problems, ids = _file_problems(tf, path, per_file, task.num_classes, split)
        out.extend(problems)
        if split == "validation":
            validation_ids.extend(ids)
    if data.annotations:
        out.extend(_annotation_problems(tf, data.annotations, task.num_classes, validation_ids))
    return out


def _file_problems(
    tf: Any, path: str, limit: int, num_classes: int, split: str
) -> tuple[list[str], list[int]]:
    """Problems of the first ``limit`` records of one file, and the source ids read."""
    problems: list[str] = []
    bad_classes: set[int] = set()
    source_ids: list[int] = []
    num_read = num_with_objects = 0
    decoded_one = reported_source_id = False
    try:
        for index, raw in enumerate(tf.data.TFRecordDataset(path).take(limit)):
            num_read += 1
            record = raw.numpy()
            try:
                example = tf.train.Example.FromString(record)
            except Exception as e:  # The protobuf runtime's DecodeError has no stable import.
                return [f"{path}: record {index} is not a tf.train.Example ({e})"], source_ids
            feature = example.features.feature
            structural = _record_problems(feature, num_classes, bad_classes)
            if structural:
                return [f"{path}: record {index} {p}" for p in structural], source_ids
            num_with_objects += bool(_values(feature, _LABEL_KEY))
            source_id = _values(feature, "image/source_id")[0].decode(errors="replace")
            if split == "validation":
                if source_id.isdigit():
                    source_ids.append(int(source_id))
                elif not reported_source_id:
                    reported_source_id = True
                    problems.append(
                        f"{path}: record {index} has image/source_id {source_id!r}, not an "
                        f"integer: COCO evaluation uses it as the image id; write integer ids"
                    )
            if not decoded_one:
                decoded_one = True
                problems.extend(_decoder_problems(tf, path, index, record))
    except tf.errors.OpError as e:
        return [f"{path} cannot be read as TFRecords: {first_line(e)}"], source_ids
    if num_read == 0:
        problems.append(f"{path} holds no records")
    elif num_with_objects == 0:
        problems.append(
            f"{path}: none of the {num_read} records read has an object ({_LABEL_KEY} is empty "
            f"or missing): these are not detection records"
        )
    if bad_classes:
        ids = ", ".join(str(c) for c in sorted(bad_classes))
        problems.append(
            f"{path}: class id(s) {ids} outside 1..{num_classes} (task.num_classes = "
            f"{num_classes}; 0 is the background): fix the labels or set task.num_classes"
        )
    return problems, source_ids


def _record_problems(feature: Any, num_classes: int, bad_classes: set[int]) -> list[str]:
    """Structural problems of one record; out-of-range class ids go into ``bad_classes``."""
    for key in _REQUIRED:
        if key not in feature or feature[key].WhichOneof("kind") is None:
            return [f"has no {key!r} feature, which official.vision's TfExampleDecoder needs"]
    for key, kind in {**_REQUIRED, **_OPTIONAL}.items():
        actual = feature[key].WhichOneof("kind") if key in feature else None
        if actual is not None and actual != kind:
            return [f"stores {key!r} as {actual}, but TfExampleDecoder reads it as {kind}"]
    lengths = {key: len(_values(feature, key)) for key in (*_BOX_KEYS, _LABEL_KEY)}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{n} {key.rsplit('/', 1)[-1]}" for key, n in lengths.items())
        return [f"has {counts}: every object needs one of each"]
    coords = [v for key in _BOX_KEYS for v in _values(feature, key)]
    if any(not -_BOX_TOLERANCE <= v <= 1 + _BOX_TOLERANCE for v in coords):
        worst = max(coords, key=lambda v: abs(v - 0.5))
        return [
            f"has box coordinate {worst:g} outside [0, 1]: boxes must be normalized (divide "
            f"pixel coordinates by the image width and height)"
        ]
    bad_classes.update(c for c in _values(feature, _LABEL_KEY) if not 1 <= c <= num_classes)
    return []


def _values(feature: Any, key: str) -> list[Any]:
    if key not in feature:
        return []
    kind = feature[key].WhichOneof("kind")
    return list(getattr(feature[key], kind).value) if kind else []


def _decoder_problems(tf: Any, path: str, index: int, record: bytes) -> list[str]:
    """Runs official.vision's own decoder on one record (catches e.g. undecodable images)."""
    from official.vision.dataloaders import tf_example_decoder

    try:
        tf_example_decoder.TfExampleDecoder().decode(tf.constant(record))
    except (tf.errors.OpError, ValueError) as e:
        return [f"{path}: TfExampleDecoder cannot decode record {index}: {first_line(e)}"]
    return []


def _annotation_problems(
    tf: Any, path: str, num_classes: int, validation_ids: list[int]
) -> list[str]:
    """Problems of the COCO annotation file ``path`` (``data.annotations``)."""
    where = f"data.annotations {path!r}"
    fix = "fix the path, or leave data.annotations empty to evaluate against the validation records"
    try:
        if not tf.io.gfile.exists(path):
            return [f"{where} does not exist: {fix}"]
        if tf.io.gfile.stat(path).length > _MAX_ANNOTATION_BYTES:
            return []
        with tf.io.gfile.GFile(path, "r") as f:
            coco = json.loads(f.read())
    except (tf.errors.OpError, UnicodeDecodeError) as e:
        return [f"{where} cannot be read: {first_line(e)}; {fix}"]
    except json.JSONDecodeError as e:
        return [f"{where} is not valid JSON ({e}): {fix}"]
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(coco, dict) or not isinstance(coco.get(key), list)
    ]
    if missing:
        return [f"{where} is not COCO JSON: it lacks the list(s) {', '.join(missing)}; {fix}"]
    out = []
    category_ids = {c.get("id") for c in coco["categories"] if isinstance(c, dict)}
    category_ids |= {a.get("category_id") for a in coco["annotations"] if isinstance(a, dict)}
    bad = sorted(str(c) for c in category_ids if not (isinstance(c, int) and 1 <= c <= num_classes))
    if bad:
        out.append(
            f"{where} has category id(s) {', '.join(bad)} outside 1..{num_classes}: fix the "
            f"categories or set task.num_classes"
        )
    image_ids = {i.get("id") for i in coco["images"] if isinstance(i, dict)}
    unknown = sorted(set(validation_ids) - image_ids)
    if unknown:
        shown = ", ".join(str(i) for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        out.append(
            f"{where} has no image with id {shown}, the image/source_id of validation records: "
            f"the JSON must describe data.validation; {fix}"
        )
    return out


__all__ = ["MAKE_DATA_HINT", "detection_data_problems"]
