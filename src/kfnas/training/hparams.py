"""TensorBoard HParams of a trial: its decisions as hparams, its final figures as scalars.

A trial's HParams session is its log folder: the run ``<id>/logs`` of ``tensorboard --logdir
<store>/<experiment>/studies/<study>/trials``. Its hparams (``trial_hparams``) are the decisions of
its DNA under their readable ids (``blocks[0].kernel_size``, from
``kfnas.spaces.base.decision_values``) and a few that say which trial it is: ``study``, ``round``,
``seed``, ``status``, ``source`` (``<study>/<id>`` of a retrained copy's source trial),
``budget.train_steps``, ``budget.batch_size`` and one ``override:<key>`` per task or data override.
Its metrics are the ``final/<name>`` scalars of the same run (``final/AP``, ``final/latency_ms``,
``final/reward``); TensorBoard also lists the ``train`` and ``eval`` curves as metrics of the
session, grouped by subfolder.

Who writes what: the training (``kfnas.training.runner.execute_trial``, every outcome) writes the
hparams and the final metrics it has (``record_trial``); the measurement step
(``kfnas.stages.measure``) adds the measured figures and the reward as another event file of
``final/`` scalars (``write_final_metrics``). Writing them is best effort: it never fails a trial.

To extend: another hparam goes in ``trial_hparams`` (a bool, int, float or str); another final
metric needs nothing here, every finite number of the trial's metrics is written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfnas.config.spec import ExperimentSpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialTraining

log = logging.getLogger(__name__)

#: The types TensorBoard takes as an hparam's value.
HParamValue = bool | int | float | str
#: The prefix of the final-metric scalars (``final/AP``, ``final/reward``).
FINAL_PREFIX = "final/"
#: The ``status`` hparam of a trial trained well and not measured yet (the measurement step's).
TRAINED = "TRAINED"


def trial_hparams(
    spec: ExperimentSpec | None, trial: TrialSpec, status: str = ""
) -> dict[str, HParamValue]:
    """The HParams of a trial: its decisions, then the hparams that say which trial it is.

    A decision whose id is also one of the identifying names is kept as ``decision:<id>``.

    Args:
        spec: The experiment spec, to find the space the trial's DNA was proposed in (its study's,
            else its source study's); ``None``: the trial's own space only.
        trial: The trial.
        status: How the trial ended (``TrialStatus`` value, or ``TRAINED``); empty: left out.
    """
    identity: dict[str, HParamValue] = {
        "study": trial.study,
        "round": trial.round,
        "seed": trial.seed,
    }
    if status:
        identity["status"] = status
    if trial.source_study:
        identity["source"] = f"{trial.source_study}/{trial.source_trial}"
    for key in ("train_steps", "batch_size"):
        if isinstance(trial.budget.get(key), int | float):
            identity[f"budget.{key}"] = trial.budget[key]
    for override in (*trial.task_overrides, *trial.data_overrides):
        key, _, value = override.partition("=")
        identity[f"override:{key.strip()}"] = _override_value(value.strip())
    decisions = {
        (f"decision:{name}" if name in identity else name): value
        for name, value in trial_decisions(spec, trial).items()
    }
    return {**decisions, **identity}


def trial_decisions(spec: ExperimentSpec | None, trial: TrialSpec) -> dict[str, HParamValue]:
    """The trial's decisions by readable id; ``{}`` without a DNA or when none of its spaces fits.

    The DNA is a point of the space of the study that proposed it: the trial's study (a search or
    refinement study), or for a retrained copy the study it was copied from; a search trial's own
    ``space`` is tried last. A trial spec that carries its ``decisions`` (written with the
    proposal) gives those.
    """
    if not trial.dna_json:
        return {}
    if trial.decisions:
        return dict(trial.decisions)
    from kfnas.spaces import get_space
    from kfnas.spaces.base import decision_values

    names: list[str] = []
    for study in (trial.study, trial.source_study):
        if spec is not None and study:
            try:
                names.append(spec.study(study).space)
            except Exception:  # a study the spec does not hold: try the others
                continue
    names.append(trial.space)
    for name in dict.fromkeys(names):
        try:
            return decision_values(get_space(name), trial.dna_json)
        except Exception:  # not this space's DNA (a refinement point, a copy's source space)
            continue
    log.warning("trial %d of %s: no space fits its DNA; no decisions", trial.trial_id, trial.study)
    return {}


def trial_status(result: TrialResult | TrialTraining) -> str:
    """The ``status`` hparam of an outcome: its ``TrialStatus`` value, or ``TRAINED``."""
    return TRAINED if isinstance(result, TrialTraining) else result.status.value


def final_metrics(result: TrialResult | TrialTraining) -> dict[str, float]:
    """The outcome's finite metrics, and its reward when it has one, by name (no prefix)."""
    out = {
        name: float(value)
        for name, value in result.metrics.items()
        if isinstance(value, int | float) and math.isfinite(value)
    }
    reward = getattr(result, "reward", None)
    if reward is not None and math.isfinite(reward):
        out["reward"] = float(reward)
    return out


def write_hparams(
    log_dir: str | Path,
    hparams: Mapping[str, HParamValue],
    metrics: Mapping[str, float],
    *,
    step: int,
    session: str,
) -> None:
    """Writes the session start (``hparams``) and ``final/<name>`` scalars to one event file.

    Args:
        log_dir: The trial's log folder, the HParams session's run (local or ``gs://``).
        hparams: Name -> bool, int, float or str.
        metrics: Name -> value, written as ``final/<name>`` at ``step``.
        step: The step of the final metrics (the trial's training steps).
        session: The session group's name (one per trial: ``<study>/<id>``).

    Raises:
        TypeError: A value is not a bool, int, float or str.
    """
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        with writer.as_default():
            hp.hparams(dict(hparams), trial_id=session)
            _scalars(metrics, step)
    finally:
        writer.close()


def write_final_metrics(log_dir: str | Path, metrics: Mapping[str, float], *, step: int) -> None:
    """Writes ``metrics`` as ``final/<name>`` scalars at ``step`` to a new event file."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    try:
        with writer.as_default():
            _scalars(metrics, step)
    finally:
        writer.close()


def record_trial(
    log_dir: str | Path,
    spec: ExperimentSpec | None,
    trial: TrialSpec,
    result: TrialResult | TrialTraining,
) -> bool:
    """Writes a trial's hparams and final metrics into its log folder; never raises.

    Returns:
        Whether they were written (a failure is logged as a warning).
    """
    try:
        hparams = trial_hparams(spec, trial, trial_status(result))
        step = int(trial.budget.get("train_steps", 0))
        write_hparams(log_dir, hparams, final_metrics(result), step=step, session=session(trial))
        return True
    except Exception as e:  # TensorBoard logs must never fail a trial
        log.warning("trial %d: could not write its TensorBoard HParams: %s", trial.trial_id, e)
        return False


def session(trial: TrialSpec) -> str:
    """The HParams session group of a trial: ``<study>/<id>``."""
    return f"{trial.study}/{trial.trial_id}"


def _override_value(text: str) -> HParamValue:
    """An override's value as a number or bool when it reads as one, else its text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _scalars(metrics: Mapping[str, Any], step: int) -> None:
    import tensorflow as tf

    for name, value in metrics.items():
        tf.summary.scalar(FINAL_PREFIX + name, float(value), step=step)
