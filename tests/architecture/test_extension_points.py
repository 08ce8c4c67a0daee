"""Extension costs, checked by registering throwaway ones through the public registries.

A new search space is one module-level class and one ``SPACES.register`` line; it declares the
``task.options`` knobs it reads, and validation accepts them for its experiments only. A new task
kind is its module (here an ``OfficialTask`` subclass), its data module (a ``GENERATORS`` writer)
and one registry line each; export, the augmentation study's default and validation find it
through ``TASKS``. A new algorithm is a factory and an ``Algorithm`` record in its module, and one
registry line. Nothing here trains: no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import pyglove as pg
import pytest

from kfnas.config.settings import ExperimentSettings
from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.data import GENERATORS, DatasetFiles
from kfnas.export.saved_model import serving_export
from kfnas.search.algorithms import ALGORITHMS, Algorithm
from kfnas.search.controller import propose
from kfnas.spaces import SPACES, declared_options, get_space
from kfnas.spaces.base import Network, SearchSpace, architecture_json, dna_spec, materialize
from kfnas.spaces.options import Option, integer, number
from kfnas.tasks import TASKS
from kfnas.tasks.base import OfficialTask, ServingExport, TaskKind
from kfnas.validation import complete_studies, validate


@pg.members([("width", pg.typing.Int(), "Channels of the toy backbone.")])
class ToyArchitecture(pg.Object):
    """One point of the toy space."""


@dataclasses.dataclass(frozen=True)
class ToySpace:
    """A throwaway search space: one choice of width; it reads ``task.options.toy_depth``."""

    name: str = "toy_space"
    tasks: tuple[str, ...] = ("detection", "toy")
    task_options: ClassVar[dict[str, Option]] = {"toy_depth": integer(1, 2)}

    def hyper(self) -> Any:
        return ToyArchitecture(width=pg.one_of([8, 16]))

    def reference(self) -> Any:
        return ToyArchitecture(width=8)

    def task_problems(self, task: Any) -> list[str]:
        return []

    def build_network(self, arch: Any, task: Any, input_specs: Any) -> Network:
        raise NotImplementedError("the toy space is never trained")


class ToyTask(OfficialTask):
    """A throwaway task kind: its own knob, metric, exporter and augmentation default."""

    name = "toy"
    default_metric = "score"
    metric_names = ("score",)
    options: dict[str, Option] = {"toy_rate": number(0, 0.5)}
    serving_export = ServingExport(module="toy.serving:ToyModule")
    augmentation_space = "toy_augmentation"
    known_limits = ("Toys are not models.",)
    base_rate = (0.1, 256)

    def build_model(self, official_task: Any, network: Network) -> Any:
        raise NotImplementedError("the toy task is never trained")

    def data_problems(self, task: Any, data: Any) -> list[str]:
        return toy_data_problems(task, data)


# The toy kind's data module: its data checks and the writer ``kfnas make-data toy`` calls.
def toy_data_problems(task: Any, data: Any) -> list[str]:
    return [] if data.train else ["data.train is empty: name the toy training files"]


def write_toy_dataset(out_dir: str, **kwargs: Any) -> DatasetFiles:
    raise NotImplementedError("the toy data set is never written")


@pytest.fixture()
def registered() -> Iterator[None]:
    SPACES.register("toy_space", ToySpace())
    TASKS.register("toy", ToyTask())
    GENERATORS.register("toy", write_toy_dataset)
    yield
    SPACES.unregister("toy_space")
    TASKS.unregister("toy")
    GENERATORS.unregister("toy")


def _spec(kind: str, options: dict[str, Any], metric: str, space: str = "toy_space") -> Any:
    return ExperimentSpec.from_dict(
        {
            "name": "toy",
            "task": {"kind": kind, "image_size": 128, "options": options},
            "objectives": {"metric": metric},
            "studies": {"proxy": {"space": space}},
        }
    )


@pytest.mark.usefixtures("registered")
def test_a_registered_space_is_listed_validated_and_materialized() -> None:
    assert "toy_space" in SPACES.names()
    space = get_space("toy_space")
    assert isinstance(space, SearchSpace)
    validate(_spec("detection", {"toy_depth": 3}, "AP"))  # its knob, under its experiment
    arch = materialize(space, pg.DNA(1))
    assert arch == ToyArchitecture(width=16)
    assert pg.from_json_str(architecture_json(space, pg.DNA(0))) == space.reference()
    assert dna_spec(space).space_size == 2


@pytest.mark.usefixtures("registered")
def test_a_space_knob_is_checked_and_refused_where_no_space_reads_it() -> None:
    with pytest.raises(SpecError, match=r"task\.options\.toy_depth must be an integer >= 1"):
        validate(_spec("detection", {"toy_depth": 0}, "AP"))
    with pytest.raises(SpecError, match=r"task\.options\.toy_depth is not a detection option"):
        validate(_spec("detection", {"toy_depth": 3}, "AP", space="spinenet"))


def test_a_module_object_space_has_its_own_knobs_accepted_when_its_trial_builds(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A space named as ``module:object`` is not registered: the trial passes its knobs along."""
    (tmp_path / "my_toy_space.py").write_text(
        "from kfnas.spaces.options import integer\n"
        "class MySpace:\n"
        "    name = 'my_toy_space:SPACE'\n"
        "    tasks = ('detection',)\n"
        "    task_options = {'my_depth': integer(1, 2)}\n"
        "    def hyper(self): return None\n"
        "    def reference(self): return None\n"
        "    def task_problems(self, task): return []\n"
        "    def build_network(self, arch, task, input_specs): return None\n"
        "SPACE = MySpace()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    detection = TASKS.get("detection")
    task = _spec("detection", {"my_depth": 3}, "AP").task
    with pytest.raises(SpecError, match=r"my_depth is not a detection option"):
        detection.check(task)  # the registered spaces alone do not know the knob
    own = declared_options("detection", [get_space("my_toy_space:SPACE")])
    assert detection.check(task, own)["my_depth"] == 3


@pytest.mark.usefixtures("registered")
def test_a_registered_task_kind_validates_and_is_found_by_export_and_augmentation() -> None:
    task = TASKS.get("toy")
    assert isinstance(task, TaskKind)
    resolved = validate(_spec("toy", {"toy_rate": 0.25, "toy_depth": 2}, "score"))
    assert resolved.task.kind == "toy"
    with pytest.raises(SpecError, match=r"task\.options\.toy_rat is not a toy option"):
        validate(_spec("toy", {"toy_rat": 0.25}, "score"))
    assert serving_export("toy") == ToyTask.serving_export
    settings = ExperimentSettings(augmentation_trials=2)
    studies = complete_studies(_spec("toy", {}, "score"), settings).studies
    assert studies["augmentation"].space == "toy_augmentation"
    assert GENERATORS.get("toy") is write_toy_dataset
    no_train = dataclasses.replace(resolved.data, train="")
    assert task.data_problems(resolved.task, no_train) == [
        "data.train is empty: name the toy training files"
    ]
    assert task.metric_names == ("score",)


# A new algorithm: its module holds a factory and an ``Algorithm`` record; one registry line.
TOY_ALGORITHM = Algorithm(
    name="toy_sweep",
    summary="Visits the space in order (a throwaway algorithm for the extension test).",
    factory=lambda options, seed: pg.geno.Sweeping(),
    options={"unused": 1},
)


@pytest.fixture()
def toy_algorithm() -> Iterator[None]:
    ALGORITHMS.register("toy_sweep", TOY_ALGORITHM)
    yield
    ALGORITHMS.unregister("toy_sweep")


@pytest.mark.usefixtures("registered", "toy_algorithm")
def test_a_registered_algorithm_validates_its_options_and_proposes() -> None:
    spec = _spec("detection", {}, "AP").with_overrides(['algorithm={"name": "toy_sweep"}'])
    study = validate(spec).study("proxy")
    first = propose(study, [], 2, round_index=1)
    assert [materialize(get_space("toy_space"), d).width for d in first] == [8, 16]
    with pytest.raises(SpecError, match=r"unknown option\(s\) bogus for toy_sweep"):
        validate(spec.with_overrides(['algorithm.options={"bogus": 1}']))


def test_throwaway_registrations_are_gone_after_the_tests() -> None:
    assert "toy_space" not in SPACES.names()
    assert "toy" not in TASKS.names() and "toy" not in GENERATORS.names()
    assert "toy_sweep" not in ALGORITHMS.names()
