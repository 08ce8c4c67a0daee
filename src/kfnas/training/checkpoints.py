"""A trial's checkpoints in the store: uploaded while it trains, restored by its next attempt.

The trainer saves checkpoints in a local folder (``tf.train.CheckpointManager``, files
``ckpt-<step>.index`` and ``ckpt-<step>.data-*``); a killed pod loses that folder. Here each saved
checkpoint is copied to the trial's ``checkpoints/`` folder in the store
(``ExperimentLayout.trial_checkpoints_dir``) with the TensorBoard logs as they were at that step,
and the next attempt downloads the newest complete one before training, so the trainer's own
restore continues from its step (optimizer iterations included, hence the same learning-rate
schedule) and the logs continue rather than restart.

Store layout: two slots used in turn, so the newest two complete checkpoints are kept without ever
deleting an object::

    checkpoints/slot-0/marker.json     {"state": "writing"} while written; "complete" LAST
    checkpoints/slot-0/files/ckpt.index, files/ckpt.data-00000-of-00001, files/logs/...
    checkpoints/slot-1/...

Writing a slot first marks it ``writing``, then writes the files, then writes the ``complete``
marker naming every file with its size. A slot whose marker is missing, not ``complete``, unreadable
or whose files do not match it is partial and ignored: a pod killed mid-upload leaves the other
slot, the previous complete checkpoint, intact.

Uploads run on a background thread (``CheckpointUploader``): the training loop only pays for hard
links to the new checkpoint files and a copy of the (small) logs; a newer checkpoint replaces one
still waiting for its turn. This module never imports TensorFlow (the step that schedules trials
reads markers too). To extend (another file kind in a checkpoint): stage it in
``CheckpointUploader._stage`` under its own folder name; the marker lists whatever was staged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
import time
from pathlib import Path

from kfnas.store.base import ArtifactStore, ObjectNotFound, StoreError, join, local_files

log = logging.getLogger(__name__)

SLOTS = ("slot-0", "slot-1")
MARKER = "marker.json"
FILES = "files"
LOGS = "logs"
#: The checkpoint name the trainer's ``CheckpointManager`` uses (``ckpt-<step>.*``).
CHECKPOINT_NAME = "ckpt"


@dataclasses.dataclass(frozen=True)
class StoredCheckpoint:
    """A complete checkpoint in the store, as its marker describes it.

    Attributes:
        slot: The slot folder holding it.
        step: The training step it was saved at.
        attempt: The attempt that wrote it.
        time: When its marker was written (unix seconds).
        files: Each file under the slot's ``files/`` with its size in bytes.
    """

    slot: str
    step: int
    attempt: int
    time: float
    files: dict[str, int]


class TrialCheckpoints:
    """The checkpoints of one trial in a store.

    Args:
        store: The experiment's store.
        folder: The trial's checkpoints folder (``ExperimentLayout.trial_checkpoints_dir``).
    """

    def __init__(self, store: ArtifactStore, folder: str) -> None:
        self.store, self.folder = store, folder

    def complete(self) -> list[StoredCheckpoint]:
        """The complete checkpoints, oldest first; partial or damaged slots are left out."""
        found = [c for slot in SLOTS if (c := self._read_marker(slot)) is not None]
        return sorted(found, key=lambda c: (c.step, c.time))

    def latest(self) -> StoredCheckpoint | None:
        """The newest complete checkpoint, or None when the trial has none."""
        found = self.complete()
        return found[-1] if found else None

    def _read_marker(self, slot: str) -> StoredCheckpoint | None:
        path = join(self.folder, slot, MARKER)
        try:
            data = json.loads(self.store.read_text(path))
        except ObjectNotFound:
            return None
        except (ValueError, StoreError) as e:
            log.warning("ignoring checkpoint %s: unreadable marker (%s)", self.store.uri(path), e)
            return None
        if not isinstance(data, dict) or data.get("state") != "complete":
            return None
        try:
            return StoredCheckpoint(
                slot,
                int(data["step"]),
                int(data["attempt"]),
                float(data["time"]),
                {str(k): int(v) for k, v in dict(data["files"]).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring checkpoint %s: malformed marker (%s)", self.store.uri(path), e)
            return None

    def write(self, step: int, attempt: int, staged: Path) -> StoredCheckpoint:
        """Uploads a staged checkpoint folder into the slot not holding the newest checkpoint.

        Args:
            step: The step it was saved at.
            attempt: The attempt writing it.
            staged: A local folder with the checkpoint files (``ckpt.index``, ``ckpt.data-*``) and
                a ``logs/`` folder.

        Returns:
            The checkpoint as now stored, complete.
        """
        latest = self.latest()
        slot = SLOTS[1] if latest is not None and latest.slot == SLOTS[0] else SLOTS[0]
        marker = join(self.folder, slot, MARKER)
        self.store.write_text(marker, json.dumps({"state": "writing", "step": step}))
        files = {}
        for relative, file in local_files(staged):
            data = file.read_bytes()
            self.store.write_bytes(join(self.folder, slot, FILES, relative), data)
            files[relative] = len(data)
        done = StoredCheckpoint(slot, step, attempt, time.time(), files)
        record = {"state": "complete", **dataclasses.asdict(done)}
        del record["slot"]
        self.store.write_text(marker, json.dumps(record, sort_keys=True))
        return done

    def restore(self, checkpoint: StoredCheckpoint, model_dir: Path, logs_dir: Path) -> bool:
        """Downloads ``checkpoint`` so that the trainer resumes from it in ``model_dir``.

        The checkpoint files become ``<model_dir>/ckpt-<step>.*`` with a ``checkpoint`` state file
        naming them; the stored logs go under ``logs_dir``.

        Returns:
            Whether it was restored; False when its files do not match its marker (a newer
            attempt rewrote the slot meanwhile), leaving ``model_dir`` without a checkpoint.
        """
        prefix = f"{CHECKPOINT_NAME}-{checkpoint.step}"
        contents = {}
        for relative, size in checkpoint.files.items():
            try:
                data = self.store.read_bytes(join(self.folder, checkpoint.slot, FILES, relative))
            except ObjectNotFound:
                data = b""
            if len(data) != size:
                log.warning(
                    "checkpoint at step %d in %s does not match its marker (%s): not resumed",
                    checkpoint.step,
                    self.store.uri(join(self.folder, checkpoint.slot)),
                    relative,
                )
                return False
            contents[relative] = data
        for relative, data in contents.items():
            if relative.startswith(f"{LOGS}/"):
                target = logs_dir / relative.removeprefix(f"{LOGS}/")
            else:
                target = model_dir / relative.replace(CHECKPOINT_NAME, prefix, 1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "checkpoint").write_text(
            f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'
        )
        return True


class CheckpointUploader:
    """The trainer's ``on_checkpoint`` hook: stages each new checkpoint, uploads it in background.

    Call it as ``uploader(step, prefix)`` right after a checkpoint is saved at ``prefix``
    (``<dir>/ckpt-<step>``); call ``close()`` once training is over: it waits for the last upload.
    An upload that fails is logged and skipped (the next checkpoint tries again): training never
    stops for it.

    Args:
        checkpoints: Where the checkpoints go.
        logs_dir: The trial's local TensorBoard folder, copied with each checkpoint.
        staging_dir: A local folder for the staged copies (outside the model and logs folders).
        attempt: The attempt number written into each marker.
    """

    def __init__(
        self, checkpoints: TrialCheckpoints, logs_dir: Path, staging_dir: Path, attempt: int
    ) -> None:
        self.checkpoints, self.logs_dir = checkpoints, logs_dir
        self.staging_dir, self.attempt = staging_dir, attempt
        self.uploaded: list[int] = []
        self.failures: list[str] = []
        self._pending: tuple[int, Path] | None = None
        self._closed = False
        self._condition = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def __call__(self, step: int, prefix: str) -> None:
        """Stages the checkpoint saved at ``prefix`` and queues its upload (newest wins)."""
        staged = self._stage(step, Path(prefix))
        with self._condition:
            if self._pending is not None:  # not started yet: the newer checkpoint replaces it
                shutil.rmtree(self._pending[1], ignore_errors=True)
            self._pending = (step, staged)
            self._condition.notify()

    def _stage(self, step: int, prefix: Path) -> Path:
        staged = self.staging_dir / f"{step:010d}-{time.monotonic_ns()}"
        staged.mkdir(parents=True)
        for file in sorted(prefix.parent.glob(f"{prefix.name}.*")):
            (staged / file.name.replace(prefix.name, CHECKPOINT_NAME, 1)).hardlink_to(file)
        if self.logs_dir.is_dir():
            shutil.copytree(self.logs_dir, staged / LOGS)
        return staged

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    self._condition.wait()
                if self._pending is None:
                    return
                step, staged = self._pending
                self._pending = None
            try:
                self.checkpoints.write(step, self.attempt, staged)
                self.uploaded.append(step)
            except Exception as e:  # a store hiccup must not stop training
                self.failures.append(f"step {step}: {type(e).__name__}: {e}")
                log.warning("checkpoint upload at step %d failed: %s", step, e)
            finally:
                shutil.rmtree(staged, ignore_errors=True)

    def close(self) -> None:
        """Waits for the pending upload, then stops the thread."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join()
