"""Running the search pipeline on this machine with ``kfp.local``: the same DAG the cluster runs.

``run_search_locally`` builds the pipeline without a cluster profile and runs it under
``kfp.local.SubprocessRunner(use_venv=False)``: every step is a subprocess of this Python, with the
installed kfnas, and nothing is pip-installed. ``kfp.local`` runs at most two iterations of a
``ParallelFor`` at once whatever the parallelism, and ignores accelerators and Kubernetes settings.
Its task logs (every step's output) go to ``log_file`` when one is given, so a person can follow
progress elsewhere (``kfnas run`` reads the store) and read the details after.

``run_retraining_locally`` does the same for the retraining pipeline, ``run_proxy_tool_locally``
for the proxy-task tools' pipelines (``variance``, ``selection``, ``proxy-search``). To run
another pipeline locally: build it like ``build_search_pipeline`` and call it the same way inside
``_local_session``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from kfp import local

from kfnas.pipelines.proxy import PROXY_TOOLS
from kfnas.pipelines.retraining import build_retraining_pipeline
from kfnas.pipelines.search import build_search_pipeline


@contextlib.contextmanager
def _local_session(pipeline_root: Path, log_file: TextIO | None) -> Iterator[None]:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    with warnings.catch_warnings():
        # The runtime image's name has no "python" in it; locally the steps use this Python.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        # Display names (for the KFP UI) mean nothing to the local runner.
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        if log_file is None:
            yield
        else:
            with contextlib.redirect_stdout(log_file):  # kfp.local logs and step output
                yield


def run_search_locally(
    arguments: Mapping[str, Any],
    *,
    rounds: int,
    trials_per_round: int,
    parallelism: int,
    top_k: int,
    pipeline_root: str | Path,
    log_file: TextIO | None = None,
) -> str:
    """Runs the search pipeline in subprocesses of this Python and waits for it to end.

    Args:
        arguments: Pipeline parameters (see ``build_search_pipeline``), e.g. ``spec_yaml``,
            ``overrides``.
        rounds: Rounds of the proxy search.
        trials_per_round: Default trials per round (``arguments`` may set it).
        parallelism: ``ParallelFor`` parallelism (``kfp.local`` runs at most 2 at once).
        top_k: Default number of proxy trials trained fully (``arguments`` may set it).
        pipeline_root: Folder for the KFP outputs (artifacts such as metrics and the report).
        log_file: Where the steps' logs go; ``None`` prints them.

    Returns:
        The experiment URI.

    Raises:
        RuntimeError: A step failed (its log says why).
    """
    pipeline = build_search_pipeline(rounds, trials_per_round, parallelism, top_k)
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    with _local_session(Path(pipeline_root), log_file):
        task = pipeline(**arguments)
    return str(task.output)


def run_retraining_locally(
    arguments: Mapping[str, Any], *, pipeline_root: str | Path, log_file: TextIO | None = None
) -> str:
    """Runs the retraining pipeline in subprocesses of this Python and waits for it to end.

    Args:
        arguments: Pipeline parameters (see ``build_retraining_pipeline``): ``handoff_uri``,
            ``train_data``, ``tolerance``, ...
        pipeline_root: Folder for the KFP outputs (the publish step's metrics).
        log_file: Where the steps' logs go; ``None`` prints them.

    Returns:
        ``published`` or ``rejected``.

    Raises:
        RuntimeError: A step failed (its log says why), e.g. new data that do not fit the model
            or a retrained trial that failed.
    """
    pipeline = build_retraining_pipeline()
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    with _local_session(Path(pipeline_root), log_file):
        task = pipeline(**arguments)
    return str(task.output)


def run_proxy_tool_locally(
    tool: str,
    arguments: Mapping[str, Any],
    *,
    pipeline_root: str | Path,
    log_file: TextIO | None = None,
) -> str:
    """Runs a proxy-task tool's pipeline in subprocesses of this Python and waits for it.

    Args:
        tool: A name in ``PROXY_TOOLS``: ``variance``, ``selection`` or ``proxy-search``.
        arguments: Its pipeline parameters (``spec_yaml``, ``overrides``, ``parallelism``, ...).
        pipeline_root: Folder for the KFP outputs (the report's HTML artifact, its metrics).
        log_file: Where the steps' logs go; ``None`` prints them.

    Returns:
        The pipeline's output: the URI of its report in the store.

    Raises:
        RuntimeError: A step failed (its log says why).
    """
    pipeline = PROXY_TOOLS[tool](int(arguments.get("parallelism", 2)))
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    with _local_session(Path(pipeline_root), log_file):
        task = pipeline(**arguments)
    return str(task.output)
