"""Safe decoding of stored architectures and DNA (``kfnas.spaces.base``), over every space.

Every registered space declares (by default: finds in its own ``hyper()`` and ``reference()``) the
classes its architectures hold, so a random architecture and the reference of each space decode
through ``load_architecture``; any other ``_type`` (a foreign module, a function, a pickled
object, a class of another space) is refused by name before anything is imported. Every
algorithm's proposals, metadata included, decode through ``load_dna``.
"""

from __future__ import annotations

import json
import random
import sys

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.records.base import RecordError
from kfnas.search import propose
from kfnas.search.algorithms import ALGORITHMS
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import (
    architecture_json,
    architecture_types,
    dna_spec,
    foreign_types,
    load_architecture,
    load_dna,
)

FOREIGN = "no_such_module_zz.Payload"


@pytest.mark.parametrize("name", sorted(SPACES.names()))
def test_every_space_decodes_its_own_architectures(name: str) -> None:
    space = get_space(name)
    for seed in range(3):
        dna = pg.random_dna(dna_spec(space), random.Random(seed))
        text = architecture_json(space, dna)
        assert pg.eq(load_architecture(space, text), pg.from_json_str(text))
    if (reference := space.reference()) is not None:
        text = pg.to_json_str(reference)
        assert pg.eq(load_architecture(space, text), reference)


@pytest.mark.parametrize("name", sorted(SPACES.names()))
def test_every_space_refuses_a_foreign_type_by_name(name: str) -> None:
    space = get_space(name)
    dna = pg.random_dna(dna_spec(space), random.Random(0))
    tree = json.loads(architecture_json(space, dna))
    crafted = {**tree, "x": {"_type": FOREIGN}} if isinstance(tree, dict) else {"_type": FOREIGN}
    with pytest.raises(RecordError, match=rf"s3://b/trial\.json: arch_json names .*{FOREIGN}"):
        load_architecture(space, json.dumps(crafted), "s3://b/trial.json")
    assert "no_such_module_zz" not in sys.modules


def test_a_space_does_not_accept_another_spaces_classes() -> None:
    mnasnet, spinenet = get_space("mnasnet"), get_space("spinenet")
    text = architecture_json(spinenet, pg.random_dna(dna_spec(spinenet), random.Random(0)))
    with pytest.raises(RecordError, match="SpineNetArchitecture"):
        load_architecture(mnasnet, text)
    assert not architecture_types(mnasnet) & architecture_types(spinenet)


def test_a_space_may_declare_its_architecture_types() -> None:
    class Declared:
        name, tasks = "declared", ("detection",)
        architecture_types = (pg.DNA,)

        def hyper(self) -> object:
            return pg.one_of([1, 2])

        def reference(self) -> None:
            return None

    assert architecture_types(Declared()) == frozenset({pg.DNA})
    assert load_architecture(Declared(), pg.to_json_str(pg.DNA(1))) == pg.DNA(1)


@pytest.mark.parametrize(
    "bad",
    [
        {"_type": "function", "name": "os.system"},
        {"_type": "type", "name": "subprocess.Popen"},
        {"_type": "method", "name": "os.system"},
        {"_type": "pyglove.core.utils.json_conversion._OpaqueObject", "value": "gASV"},
        {"_type": ["not", "a", "name"]},
    ],
)
def test_code_in_a_record_is_refused(bad: dict) -> None:
    space = get_space("mnasnet")
    with pytest.raises(RecordError, match="nothing was imported"):
        load_architecture(space, json.dumps({"blocks": [bad]}))
    with pytest.raises(RecordError, match="nothing was imported"):
        load_dna(json.dumps({"_type": "pyglove.core.geno.base.DNA", "value": 1, "m": bad}))


def test_foreign_types_lists_each_name_once_in_order() -> None:
    tree = [{"_type": "a.B", "x": [{"_type": "c.D"}, {"_type": "a.B"}]}, {"_type": "ok.T"}]
    assert foreign_types(tree, {"ok.T"}) == ["a.B", "c.D"]
    assert foreign_types({"no": "types"}, ()) == []


def _study(name: str) -> StudySpec:
    return StudySpec(space="mnasnet", algorithm=AlgorithmSpec(name=name), seed=1)


@pytest.mark.parametrize("name", sorted(ALGORITHMS.names()))
def test_every_algorithms_dna_decodes_with_its_metadata(name: str) -> None:
    for dna in propose(_study(name), [], 3, round_index=1):
        loaded = load_dna(pg.to_json_str(dna))
        assert loaded == dna and dict(loaded.metadata) == dict(dna.metadata)


def test_load_dna_refuses_what_is_not_a_dna() -> None:
    with pytest.raises(RecordError, match="trial 7: dna_json is not valid JSON"):
        load_dna("{oops", "trial 7")
    with pytest.raises(RecordError, match=f"names the type.*{FOREIGN}"):
        load_dna(json.dumps({"_type": FOREIGN}))
    with pytest.raises(RecordError, match="holds a List, not a DNA"):
        load_dna("[1, 2]")
    assert "no_such_module_zz" not in sys.modules
