"""A trial's training curves, read from the TensorBoard event files its training wrote.

A trial's logs folder in the store (``ExperimentLayout.trial_logs_dir``) holds ``train/`` (loss,
learning rate, train metrics) and ``eval/`` (evaluation results) event files
(``kfnas.training.logs``). ``read_curves(store, logs_dir)`` reads every scalar of both into
``Curves``: per split, the steps and one series per tag. The event files are read through the
store (local or ``gs://``) and parsed with TensorBoard's protocol buffers (TFRecord framing, then
``Event``), so reports never import TensorFlow.

``Curves.thinned(points)`` keeps at most ``points`` steps per split (evenly spaced, first and last
kept) so a report of a thousand trials stays small.

To read another split: add its folder name to ``SPLITS``.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterator

from kfnas.store import ArtifactStore

#: The folders of a trial's logs whose scalars are read, in the order reports show them.
SPLITS = ("train", "eval")
_EVENTS = "tfevents"
# Train scalars reports do not plot: timing bookkeeping, not learning.
_SKIPPED_TAGS = frozenset({"steps_per_second"})


class CurvesError(ValueError):
    """A trial's event files cannot be read (truncated, not TensorBoard events)."""


@dataclasses.dataclass(frozen=True)
class Curves:
    """The scalars of one trial's logs.

    Attributes:
        splits: Split (``train``, ``eval``) -> ``{"step": [...], tag: [value or None, ...]}``:
            the steps in increasing order and each tag's value at those steps (``None`` where a
            tag was not written at a step).
    """

    splits: dict[str, dict[str, list[float | None]]]

    def thinned(self, points: int) -> Curves:
        """These curves with at most ``points`` steps per split, first and last kept."""
        out = {}
        for split, series in self.splits.items():
            steps = series["step"]
            if len(steps) <= points or points < 2:
                out[split] = series
                continue
            last = len(steps) - 1
            keep = sorted({round(i * last / (points - 1)) for i in range(points)})
            out[split] = {tag: [values[i] for i in keep] for tag, values in series.items()}
        return Curves(out)

    def to_dict(self) -> dict[str, dict[str, list[float | None]]]:
        """Plain JSON-ready data, values rounded to 5 significant digits."""
        return {
            split: {
                tag: [v if tag == "step" else _rounded(v) for v in values]
                for tag, values in series.items()
            }
            for split, series in self.splits.items()
        }


def _rounded(value: float | None) -> float | None:
    """``value`` to 5 significant digits; ``None`` for a missing or non-finite one (NaN loss)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.5g}")


def _records(data: bytes, source: str) -> Iterator[bytes]:
    """The records of a TFRecord file (length, length CRC, data, data CRC; CRCs not checked)."""
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise CurvesError(f"{source}: truncated record header at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(data):
            raise CurvesError(f"{source}: truncated record at byte {offset}")
        yield data[start:end]
        offset = end + 4


def _scalars(data: bytes, source: str) -> Iterator[tuple[int, str, float]]:
    """(step, tag, value) of every scalar summary in one event file."""
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    for record in _records(data, source):
        event = event_pb2.Event()
        try:
            event.ParseFromString(record)
        except DecodeError as e:
            raise CurvesError(f"{source}: not a TensorBoard event file ({e})") from e
        for value in event.summary.value:
            if value.HasField("simple_value"):
                yield event.step, value.tag, float(value.simple_value)
            elif value.HasField("tensor") and value.tensor.dtype in (1, 2, 3, 9):
                array = tensor_util.make_ndarray(value.tensor)
                if array.size == 1:  # float, double, int32, int64 scalars; text is skipped
                    yield event.step, value.tag, float(array.reshape(-1)[0])


def read_curves(store: ArtifactStore, logs_dir: str) -> Curves:
    """Every scalar of the trial's ``train`` and ``eval`` event files.

    Args:
        store: The experiment's store.
        logs_dir: The trial's logs folder in the store.

    Returns:
        The curves; a split without event files is left out (empty ``splits``: no logs).

    Raises:
        CurvesError: An event file is truncated or is not TensorBoard events.
    """
    splits = {}
    for split in SPLITS:
        values: dict[str, dict[int, float]] = {}
        folder = f"{logs_dir}/{split}"
        for name in store.list(folder):
            if _EVENTS not in name.rsplit("/", 1)[-1]:
                continue
            path = f"{folder}/{name}"
            for step, tag, value in _scalars(store.read_bytes(path), store.uri(path)):
                if tag not in _SKIPPED_TAGS:
                    values.setdefault(tag, {})[step] = value
        if values:
            steps = sorted({step for series in values.values() for step in series})
            table: dict[str, list[float | None]] = {"step": [float(s) for s in steps]}
            for tag in sorted(values):
                table[tag] = [values[tag].get(s) for s in steps]
            splits[split] = table
    return Curves(splits)
