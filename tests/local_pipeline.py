"""Runs the search pipeline under kfp.local for an end-to-end test, its log kept for failures.

Every pipeline test runs ``run_search_locally`` the same way: the log goes to a file that stays
open until the caller's ``ExitStack`` closes (kfp.local's threads write late), and a failed run
fails the test with the log's last lines. Add options here, not a copy in a test file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from kfnas.pipelines.local import run_search_locally

#: Lines of the pipeline's log a failure shows.
TAIL_LINES = 40


def run_logged(
    arguments: Mapping[str, Any],
    counts: Mapping[str, int],
    root: Path,
    what: str,
    keep_open: contextlib.ExitStack,
    log_name: str = "pipeline.log",
) -> tuple[str, float]:
    """Runs the pipeline under ``root / "kfp"`` with its log in ``root / log_name``.

    Args:
        arguments: The pipeline's parameters.
        counts: ``rounds``, ``trials_per_round``, ``parallelism`` and ``top_k``.
        root: The test's folder.
        what: Names the run in a failure, e.g. ``"the lidar"``.
        keep_open: Holds the log file open until it closes.
        log_name: The log file's name under ``root``.

    Returns:
        The experiment's URI and the run's wall seconds.
    """
    log = root / log_name
    out = keep_open.enter_context(log.open("w"))
    start = time.monotonic()
    try:
        uri = run_search_locally(
            dict(arguments), **counts, pipeline_root=root / "kfp", log_file=out
        )
    except RuntimeError as e:
        out.flush()
        tail = "\n".join(log.read_text().splitlines()[-TAIL_LINES:])
        pytest.fail(f"{what} pipeline failed: {e}\n{tail}")
    return uri, time.monotonic() - start
