"""What every data check shares: listing each split's files and naming the ones to read.

``split_files`` turns a ``DataSpec``'s train and validation patterns into the files a check reads
(the first ``max_files``, sorted, and how many records each), or messages that say what to fix
(empty pattern, pattern that cannot be listed, pattern that matches nothing). A task kind's check
module then reads its own records from each file.

To add a task kind's check: call ``split_files`` and read the records of the files it returns.
"""

from __future__ import annotations

import math
from typing import Any

from kfnas.config.spec import DataSpec

SPLITS = ("train", "validation")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (TensorFlow's are long), or its type's name."""
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def split_files(
    tf: Any, data: DataSpec, kind: str, hint: str, max_records: int, max_files: int
) -> tuple[list[str], list[tuple[str, str, int]]]:
    """The files to check per split, and the problems found listing them.

    Args:
        tf: The ``tensorflow`` module (imported by the caller, only when checking).
        data: The file patterns.
        kind: The task kind, for messages ("a file pattern of <kind> TFRecords").
        hint: How to generate data of this kind, appended to the messages.
        max_records: At most this many records are read per split (spread over its files).
        max_files: At most this many files (the first, sorted) are read per split.

    Returns:
        ``(problems, [(split, path, records to read), ...])``.
    """
    problems: list[str] = []
    files_to_read: list[tuple[str, str, int]] = []
    for split in SPLITS:
        pattern = getattr(data, split)
        if not pattern:
            problems.append(
                f"data.{split} is empty: give a file pattern of {kind} TFRecords, or {hint}"
            )
            continue
        try:
            files = sorted(tf.io.gfile.glob(pattern))
        except tf.errors.OpError as e:
            problems.append(f"data.{split} pattern {pattern!r} cannot be listed: {first_line(e)}")
            continue
        if not files:
            problems.append(
                f"data.{split} pattern {pattern!r} matches no file: check the path, or {hint}"
            )
            continue
        checked = files[:max_files]
        per_file = max(1, math.ceil(max_records / len(checked)))
        files_to_read.extend((split, path, per_file) for path in checked)
    return problems, files_to_read
