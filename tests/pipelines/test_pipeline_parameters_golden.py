"""Golden test: the parameters users see on the compiled pipelines never change by accident.

The search and retraining pipelines are compiled and their parameter lists (name, type, default,
description, optional) compared with ``tests/golden/pipeline_parameters.json``. A deliberate change
regenerates the file with ``KFNAS_UPDATE_GOLDEN=1 pytest`` on this test
and shows up in review as a diff of that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from kfnas.pipelines.compile import compile_pipeline, compile_retraining

GOLDEN = Path(__file__).parent.parent / "golden" / "pipeline_parameters.json"


def _parameters(path: Path) -> dict:
    pipeline_spec = next(yaml.safe_load_all(path.read_text()))
    return pipeline_spec["root"]["inputDefinitions"]["parameters"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("golden")
    return {
        "search": _parameters(compile_pipeline("gke-gpu", 2, 3, 2, 2, folder / "search.yaml")),
        "retraining": _parameters(compile_retraining("gke-gpu", folder / "retraining.yaml")),
    }


def test_compiled_parameters_match_the_golden_file(compiled: dict[str, dict]) -> None:
    if os.environ.get("KFNAS_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(compiled, indent=1, sort_keys=True) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for pipeline in ("search", "retraining"):
        assert sorted(compiled[pipeline]) == sorted(golden[pipeline]), pipeline
        for name, definition in golden[pipeline].items():
            assert compiled[pipeline][name] == definition, f"{pipeline}: parameter {name}"
