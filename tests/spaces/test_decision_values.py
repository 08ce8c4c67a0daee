"""``decision_values``: a trial's decisions by readable id, as PyGlove decodes them, but fast."""

from __future__ import annotations

import json
import random

import pyglove as pg
import pytest

from kfnas.records.base import RecordError
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import _flat_literals, decision_values, dna_spec


def _pyglove(space, dna_json):
    dna = pg.from_json_str(dna_json)
    dna.use_spec(dna_spec(space))
    literal = dna.to_dict(key_type="id", value_type="literal")
    return {str(k): v.strip("'") if isinstance(v, str) else v for k, v in literal.items()}


@pytest.mark.parametrize("name", [n for n in SPACES.names() if n != "spinenet49"])
def test_the_fast_path_decodes_every_space_as_pyglove_does(name):
    space = get_space(name)
    spec = dna_spec(space)
    for seed in range(5):
        dna_json = pg.to_json_str(pg.random_dna(spec, random.Random(seed)))
        assert _flat_literals(spec, dna_json) is not None  # the built-in spaces are all flat
        assert decision_values(space, dna_json, spec=spec) == _pyglove(space, dna_json)


def test_names_are_readable_paths_and_strings_lose_their_quotes():
    space = get_space("mnasnet")
    dna_json = pg.to_json_str(pg.random_dna(dna_spec(space), random.Random(0)))
    values = decision_values(space, dna_json)
    assert len(values) == 42 and values["blocks[0].block_fn"] in ("mbconv", "conv")
    assert isinstance(values["blocks[0].kernel_size"], int)


def test_a_dna_that_does_not_fit_the_space_is_refused():
    space = get_space("mnasnet")
    dna_json = pg.to_json_str(pg.random_dna(dna_spec(get_space("nasfpn")), random.Random(0)))
    with pytest.raises(RecordError, match="does not fit the space"):
        decision_values(space, dna_json)
    out_of_range = json.loads(pg.to_json_str(pg.random_dna(dna_spec(space), random.Random(0))))
    out_of_range["value"][0] = 99
    with pytest.raises(RecordError):
        decision_values(space, json.dumps(out_of_range))
    assert decision_values(space, "") == {}
