"""What a trial writes under its ``log_dir``: TensorBoard scalars and the error log.

Layout: ``<log_dir>/train`` (training scalars), ``<log_dir>/eval`` (evaluation results), and
``<log_dir>/trainer_error.log`` when a trial does not complete. Paths go through ``tf.summary`` and
``tf.io.gfile``, so ``log_dir`` may be local or any filesystem TensorFlow knows (``gs://``). The
event files in ``<log_dir>`` itself are the trial's HParams session (``kfnas.training.hparams``).

To add a kind of log: a subfolder constant and a writer in ``TrialLogs``, or a function beside
``write_error_log``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

TRAIN_SUBDIR = "train"
EVAL_SUBDIR = "eval"
ERROR_LOG = "trainer_error.log"
_MAX_ERROR_CHARS = 2000


class TrialLogs:
    """The TensorBoard writers of one trial: ``train`` and ``eval`` under ``log_dir``."""

    def __init__(self, log_dir: str) -> None:
        self._writers = {
            name: tf.summary.create_file_writer(os.path.join(log_dir, name))
            for name in (TRAIN_SUBDIR, EVAL_SUBDIR)
        }

    def write(self, split: str, scalars: Mapping[str, float], step: int) -> None:
        """Writes ``scalars`` at ``step`` to the ``split`` (``train`` or ``eval``) event files."""
        with self._writers[split].as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)

    def write_text(self, split: str, name: str, text: str, step: int) -> None:
        """Writes ``text`` (shown in TensorBoard's Text tab) at ``step`` to ``split``."""
        with self._writers[split].as_default(step=step):
            tf.summary.text(name, text)

    def flush(self, split: str) -> None:
        """Makes what ``split`` holds visible on disk."""
        self._writers[split].flush()

    def close(self, *, quietly: bool = False) -> None:
        """Flushes and closes the writers (errors are swallowed when ``quietly``)."""
        while self._writers:
            _, writer = self._writers.popitem()
            try:
                writer.close()
            except Exception:
                if not quietly:
                    raise


def write_error_log(log_dir: str, text: str) -> None:
    """Writes ``<log_dir>/trainer_error.log``; best effort (the outcome carries the error too)."""
    try:
        tf.io.gfile.makedirs(log_dir)
        with tf.io.gfile.GFile(os.path.join(log_dir, ERROR_LOG), "w") as f:
            f.write(text + "\n")
    except Exception:  # an unwritable log_dir may be the very failure being reported
        pass


def short_message(error: BaseException) -> str:
    """The gist of an exception's message, at most 2000 characters.

    Leaves out the traceback that AutoGraph ("in user code") and graph execution errors ("Detected
    at node ... defined at") put in it; the error log keeps the whole text.
    """
    text = str(error).strip() or repr(error)
    if "in user code:" in text or "Graph execution error" in text:
        chunks = [chunk.strip() for chunk in text.split("\n\n") if chunk.strip()]
        text = chunks[-1].splitlines()[0].removeprefix(f"{type(error).__name__}: ")
    return text[:_MAX_ERROR_CHARS]


def learning_rate(optimizer: Any) -> float | None:
    """The optimizer's current learning rate as tf-models' ``base_trainer`` logs it, or None.

    Legacy optimizers hand a schedule back as it is (it is called with ``iterations``, giving the
    rate of the next step); the newer ones give the rate of the last step.
    """
    rate = optimizer.learning_rate
    if callable(rate):
        rate = rate(optimizer.iterations)
    try:
        return float(rate)
    except (TypeError, ValueError):
        return None
