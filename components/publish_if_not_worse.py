"""The ``publish_if_not_worse`` step: export the retrained model only if it is not worse.

Its outputs say what happened (``status``: ``published`` or ``rejected``; a failed trial fails the
step) and the ``metrics`` artifact shows the new and previous scores and the tolerance in the KFP
UI. The decision and its record are the stage's (``kfnas.stages.retraining``); to show another
number, log it to ``metrics`` here. ``serving`` (the cluster profile's serving section as JSON,
compiled in by the pipeline) sizes the KServe manifest of a published version.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish_if_not_worse(
    experiment_uri: str,
    study: str,
    trial_id: int,
    previous_handoff_uri: str,
    new_version: str,
    tolerance: float,
    metrics: Output[Metrics],
    run_id: str = "",
    image: str = "",
    serving: str = "",
) -> NamedTuple("Published", status=str, version=str, export_uri=str):
    """Judges the retrained trial and exports it if not worse; returns the status."""
    from typing import NamedTuple

    from kfnas import stages

    r = stages.publish_if_not_worse(
        experiment_uri, study, int(trial_id), previous_handoff_uri, new_version,
        float(tolerance), run_id, image, serving,
    )  # fmt: skip
    for name in [n for n in ("score", "previous_score", "tolerance") if r[n] is not None]:
        metrics.log_metric(name, r[name])
    Published = NamedTuple("Published", status=str, version=str, export_uri=str)  # noqa: UP014
    return Published(r["status"], r["version"], r["export_uri"])
