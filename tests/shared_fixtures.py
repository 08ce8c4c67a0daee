"""Session-scoped fixtures that cost real work: generated datasets and one trained, exported model.

Every real detection training on the CPU pays ~40-60 s of fixed cost (first-step tracing, COCO
evaluation, latency and FLOPs), so the tests that need *a* trained and exported model share one:
``exported_detection`` is a proxy-sized RetinaNet experiment (64 px, levels 3..5, narrow backbone
and head) whose one proxy trial trains 2 steps and is exported as ``v1`` by the export stage.
Tests read it and must not change it; a test that writes to the experiment (retraining, publishing)
works on ``copy_experiment(...)``. The datasets are generated once per task kind. Tests of trial
mechanics that do not depend on the task kind (resuming, killed attempts, multi-worker trials)
train ``CLASSIFICATION_SPEC`` on ``classification_data`` instead, a fraction of that cost.

Under pytest-xdist each worker is its own session, so ``exported_detection`` is built once per
run, not once per worker: ``once_per_run`` lets the first worker that asks build it in the run's
shared temporary folder (under a file lock) and the others read what it wrote.

``tests/conftest.py`` imports these fixtures; add a shared fixture here when a second test file
needs the same expensive object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from filelock import FileLock

from kfnas.data import GENERATORS, DatasetFiles
from kfnas.export.saved_model import SAVED_MODEL_DIR
from kfnas.store import Experiment, open_experiment

DETECTION_SPEC = """
name: shared-detection
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 2,
            pre_nms_score_threshold: 0.0, max_num_detections: 10}
studies:
  proxy: {space: spinenet_mbconv, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 5}
measurement: {min_seconds: 0}
"""
#: The smallest classification experiment (MnasNet at 32 px, batch 2: seconds, not a minute, per
#: training), for tests of trial mechanics that do not depend on the task kind (resuming, killed
#: attempts, multi-worker trials); use it with ``classification_data``.
CLASSIFICATION_SPEC = """
name: shared-classification
task: {kind: classification, num_classes: 3, image_size: 32, options: {endpoints_num_filters: 16}}
studies:
  proxy: {space: mnasnet, budget: {rounds: 1, trials_per_round: 1}}
budget: {train_steps: 2, batch_size: 2, latency_runs: 3}
measurement: {min_seconds: 0}
"""
EXPORT_RUN_ID, EXPORT_IMAGE = "run-7", "reg/kfnas:9"
STALE_FILE = "stale.pb"
#: The text records of a store (``export/latest`` has no suffix).
RECORD_SUFFIXES = (".json", ".md", ".yaml", "")


T = TypeVar("T")
#: The file ``once_per_run`` writes beside what it built, once the build succeeded.
BUILT_FILE = "built.json"


def once_per_run(
    factory: pytest.TempPathFactory,
    name: str,
    build: Callable[[Path], T],
    dump: Callable[[T], Any],
    load: Callable[[Any], T],
) -> T:
    """Builds an expensive session object once per test run, shared by the xdist workers.

    Args:
        factory: The session's ``tmp_path_factory``.
        name: The object's folder under the run's shared temporary folder.
        build: Builds the object into the (empty) folder it is given.
        dump: The object as JSON, written once the build succeeded.
        load: The object from that JSON, for the workers that did not build it.

    Returns:
        The object: built here, or read from what another worker built. A build that failed
        leaves no ``built.json``; the next worker to ask builds it again, from an empty folder.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(factory.mktemp(name))
    folder = factory.getbasetemp().parent / name
    with FileLock(f"{folder}.lock"):
        built = folder / BUILT_FILE
        if built.exists():
            return load(json.loads(built.read_text()))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        value = build(folder)
        built.write_text(json.dumps(dump(value)))
        return value


def _dataset(factory: pytest.TempPathFactory, kind: str, **kwargs) -> DatasetFiles:
    return GENERATORS.get(kind)(
        factory.mktemp(f"{kind}-data"), num_train=4, num_validation=2, **kwargs
    )


@pytest.fixture(scope="session")
def detection_data(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    """A generated detection dataset (4 train, 2 validation 64 px images, COCO annotations)."""
    return _dataset(tmp_path_factory, "detection")


@pytest.fixture(scope="session")
def classification_data(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    """A generated classification dataset (4 train, 2 validation 64 px images)."""
    return _dataset(tmp_path_factory, "classification")


@pytest.fixture(scope="session")
def segmentation_data(tmp_path_factory: pytest.TempPathFactory) -> DatasetFiles:
    """A generated segmentation dataset (4 train, 2 validation 64 px images with masks)."""
    return _dataset(tmp_path_factory, "segmentation")


def data_overrides(files: DatasetFiles) -> list[str]:
    """The ``key=value`` overrides that point a spec at ``files``."""
    overrides = [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]
    if files.annotations:
        overrides.append(f"data.annotations={files.annotations}")
    return overrides


@dataclasses.dataclass(frozen=True)
class ExportedExperiment:
    """An experiment whose proxy trial ``trial_id`` is trained and exported as ``v1``."""

    uri: str
    trial_id: int
    data: DatasetFiles

    @property
    def experiment(self) -> Experiment:
        """A fresh handle on the experiment."""
        return open_experiment(self.uri)

    @property
    def folder(self) -> Path:
        """The ``export/v1`` folder."""
        exp = self.experiment
        return Path(exp.store.uri(exp.layout.export_dir("v1")))


@pytest.fixture(scope="session")
def exported_detection(tmp_path_factory: pytest.TempPathFactory) -> ExportedExperiment:
    """One detection trial trained 2 steps and exported as ``v1`` by ``stages.export_model``.

    Built once per run (``once_per_run``), with its own generated detection dataset. Before the
    export, ``export/v1`` holds what an export stopped midway leaves (a SavedModel folder with a
    stale file and no ``export.json``): the export must replace it.
    """
    return once_per_run(
        tmp_path_factory, "exported-detection", _export_detection, dataclasses.asdict, _exported
    )


def _exported(data: dict[str, Any]) -> ExportedExperiment:
    files = {k: tuple(v) if isinstance(v, list) else v for k, v in data["data"].items()}
    return ExportedExperiment(data["uri"], data["trial_id"], DatasetFiles(**files))


def _export_detection(root: Path) -> ExportedExperiment:
    from kfnas import stages

    detection_data = GENERATORS.get("detection")(root / "data", num_train=4, num_validation=2)
    uri = stages.init_experiment(
        DETECTION_SPEC, [f"store_root={root / 'store'}", *data_overrides(detection_data)]
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    assert result.completed, result.error
    exported = ExportedExperiment(uri, trial_id, detection_data)
    stale = exported.folder / SAVED_MODEL_DIR
    stale.mkdir(parents=True)
    (stale / STALE_FILE).write_text("left by a stopped export")
    (stale.parent / "2").mkdir()  # a version TF Serving would serve instead: removed too
    folder = stages.export_model(
        uri, "proxy", trial_id, "v1", run_id=EXPORT_RUN_ID, image=EXPORT_IMAGE
    )
    assert folder == str(exported.folder)
    return exported


def copy_experiment(exported: ExportedExperiment, root: Path) -> ExportedExperiment:
    """A copy of ``exported``'s store under ``root``, for tests that write to the experiment.

    The handoff and the ``latest`` pointer name the experiment by its URI; the copy's name the copy.
    """
    source = Path(exported.uri).parent
    target = root / source.name
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        if path.is_file() and path.suffix in RECORD_SUFFIXES:
            text = path.read_text()
            if str(source) in text:
                path.write_text(text.replace(str(source), str(target)))
    return dataclasses.replace(exported, uri=str(target / Path(exported.uri).name))
