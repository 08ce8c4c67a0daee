"""Reading a trial's TensorBoard logs back the way TensorBoard does, for the tests of HParams.

``read_run`` loads one run folder (every event file in it, not its subfolders) with TensorBoard's
``EventAccumulator`` and returns its HParams session start and its scalars; add a reader here when
another test needs another kind of summary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util


@dataclasses.dataclass(frozen=True)
class Run:
    """What one TensorBoard run holds.

    Attributes:
        group: The HParams session group's name (empty without a session start).
        hparams: The session's hparams by name, as Python values (empty without one).
        scalars: Each scalar tag's ``(step, value)`` points, in order.
    """

    group: str
    hparams: dict[str, bool | float | str]
    scalars: dict[str, list[tuple[int, float]]]


def read_run(path: str | Path) -> Run:
    """The session start and scalars of the run folder (or the one event file) at ``path``."""
    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    group, hparams, scalars = "", {}, {}
    for tag in acc.Tags()[event_accumulator.TENSORS]:
        meta = acc.SummaryMetadata(tag)
        if meta.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME:
            if tag == hparams_metadata.SESSION_START_INFO_TAG:
                info = hparams_metadata.parse_session_start_info_plugin_data(
                    meta.plugin_data.content
                )
                group = info.group_name
                hparams = {name: _value(value) for name, value in info.hparams.items()}
            continue
        scalars[tag] = [
            (e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)
        ]
    return Run(group, hparams, scalars)


def _value(value) -> bool | float | str:
    kind = value.WhichOneof("kind")
    return {"bool_value": value.bool_value, "number_value": value.number_value}.get(
        kind, value.string_value
    )
