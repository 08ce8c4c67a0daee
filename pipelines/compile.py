"""Compiling the pipelines for a cluster: a profile (and compile-time counts) -> YAML.

``compile_pipeline`` (the search), ``compile_retraining`` and ``compile_variance`` (the proxy-task
variance measurement) are what ``kfnas compile`` runs. The
YAML it writes is uploaded in the KFP UI (or submitted with ``kfp.Client``); its parameters (data,
budgets, ...) are set per run there.

To compile another pipeline: give it a ``build_<name>(...)`` in its own module and a
``compile_<name>`` function here that loads the profile the same way.
"""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from kfnas.pipelines.profiles import ClusterProfile, load_profile
from kfnas.pipelines.proxy import build_variance_pipeline
from kfnas.pipelines.retraining import build_retraining_pipeline
from kfnas.pipelines.search import build_search_pipeline


def compile_pipeline(
    profile: str | Path | ClusterProfile | None,
    rounds: int,
    trials_per_round: int,
    parallelism: int,
    top_k: int,
    output_path: str | Path,
) -> Path:
    """Compiles the search pipeline with a cluster profile into a KFP pipeline YAML file.

    Args:
        profile: A built-in profile name (``gke-gpu``, ``nvidia-gpu``, ``cpu-only``), a profile
            YAML path, a loaded ``ClusterProfile``, or ``None`` for no platform settings.
        rounds: Rounds of the proxy search (fixed in the DAG).
        trials_per_round: Default trials per round (a pipeline parameter).
        parallelism: Trials that run at once (fixed in the DAG).
        top_k: Default number of proxy trials trained fully (a pipeline parameter).
        output_path: Where to write the YAML; its folder is created.

    Returns:
        The path written.

    Raises:
        ProfileError: The profile does not exist or is invalid.
        ValueError: A count is below 1.
    """
    if profile is not None and not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    pipeline = build_search_pipeline(rounds, trials_per_round, parallelism, top_k, profile)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(path))
    return path


def compile_retraining(
    profile: str | Path | ClusterProfile | None, output_path: str | Path
) -> Path:
    """Compiles the retraining pipeline with a cluster profile into a KFP pipeline YAML file.

    Args:
        profile: As for ``compile_pipeline``.
        output_path: Where to write the YAML; its folder is created.

    Returns:
        The path written.

    Raises:
        ProfileError: The profile does not exist or is invalid.
    """
    if profile is not None and not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_retraining_pipeline(profile), str(path))
    return path


def compile_variance(
    profile: str | Path | ClusterProfile | None, parallelism: int, output_path: str | Path
) -> Path:
    """Compiles the proxy-task variance pipeline with a cluster profile into a YAML file.

    Args:
        profile: As for ``compile_pipeline``.
        parallelism: Default of its ``parallelism`` parameter (repeats trained at once).
        output_path: Where to write the YAML; its folder is created.

    Returns:
        The path written.

    Raises:
        ProfileError: The profile does not exist or is invalid.
        ValueError: ``parallelism`` below 1.
    """
    if profile is not None and not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_variance_pipeline(parallelism, profile), str(path))
    return path
