"""Compiling the pipelines for a cluster: a profile (and compile-time counts) -> YAML.

``compile_pipeline`` (the search), ``compile_retraining`` and the proxy-task tools'
``compile_proxy_tool`` (``variance``, ``selection``) are what ``kfnas compile`` runs. The
YAML it writes is uploaded in the KFP UI (or submitted with ``kfp.Client``); its parameters (data,
budgets, ...) are set per run there.

To compile another pipeline: give it a ``build_<name>(...)`` in its own module and a
``compile_<name>`` function here that loads the profile the same way.
"""

from __future__ import annotations

from pathlib import Path

from kfp import compiler

from kfnas.pipelines.profiles import ClusterProfile, load_profile
from kfnas.pipelines.proxy import PROXY_TOOLS
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


def compile_proxy_tool(
    tool: str,
    profile: str | Path | ClusterProfile | None,
    parallelism: int,
    output_path: str | Path,
) -> Path:
    """Compiles a proxy-task tool's pipeline with a cluster profile into a YAML file.

    Args:
        tool: ``variance``, ``selection`` or ``proxy-search`` (``PROXY_TOOLS``).
        profile: As for ``compile_pipeline``.
        parallelism: Default of its ``parallelism`` parameter (trainings at once).
        output_path: Where to write the YAML; its folder is created.

    Returns:
        The path written.

    Raises:
        ProfileError: The profile does not exist or is invalid.
        ValueError: An unknown tool, or ``parallelism`` below 1.
    """
    if tool not in PROXY_TOOLS:
        raise ValueError(f"no proxy-task tool {tool!r}: use one of {', '.join(PROXY_TOOLS)}")
    if profile is not None and not isinstance(profile, ClusterProfile):
        profile = load_profile(profile)
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(PROXY_TOOLS[tool](parallelism, profile), str(path))
    return path
