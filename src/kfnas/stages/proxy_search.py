"""Proxy-task design: which cheap training setting ranks the reference models as full training.

``init_proxy_search`` checks everything before any training and writes a *proxy-search
experiment* (``<name>-proxy-search``, the search spec renamed) with its plan: the reference models
of a model selection (``kfnas.stages.selection``: ``<name>-selection`` unless another is given)
with their full-training scores and latencies, the candidates of the user's grid
(``kfnas.search.proxy_search.parse_grid``: spec overrides such as ``task.image_size`` or
``studies.proxy.budget.train_steps``), each one's experiment spec, and the targets.

``search_proxy_tasks`` then tries the candidates one after the other. A candidate is its own
experiment (``<name>-proxy-<candidate>``: image size and data are experiment-wide), one study
``candidate`` whose trials retrain the reference models from scratch under the candidate's
setting, evaluating ``evaluations`` times; the search controller runs them as it runs every trial.
The trials carry the ``proxy_target`` stopping rule: each stops itself once the candidate ranks
the models well enough (Kendall's tau against their full-training scores), or its own training
time reaches the candidate's limit: the time limit, or the best successful candidate's time so far
when ``stop_if_slower``. Afterwards the stored curves are read (``kfnas.search.proxy_search.
track``) for the candidate's correlation over training steps and time and its stopping state. The
cheapest successful candidate is the answer: its settings plus ``studies.proxy.budget.train_steps``
set to the steps it needed, ready as the overrides of a search. ``reports/proxy_search.json`` and
``proxy_search.html`` hold it all.

Resumable: each candidate's trials are in its experiment; a rerun trains only what is missing and
reaches the same time limits from the stored curves.

To extend (another per-candidate statistic): compute it in ``_candidate_report`` from the stored
curves and results, and show it in ``kfnas.views.proxy_search``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.config.spec import (
    AlgorithmSpec,
    EarlyStoppingSpec,
    ExperimentSpec,
    SpecError,
    StudySpec,
)
from kfnas.config.studies import PROXY
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.search.proxy_search import (
    MIN_PAIRS,
    PROXY_TARGET,
    CandidateTrack,
    ProxyCandidate,
    ProxyTargets,
    best_candidate,
    parse_grid,
    track,
)
from kfnas.stages._common import (
    StudyStoppedError,
    create_experiment,
    trial_seed,
    write_tool_report,
)
from kfnas.stages.controller import search_with_config
from kfnas.stages.selection import SELECTION
from kfnas.store import Experiment, experiment_uri, open_experiment
from kfnas.validation import check_data, experiment_spec, validate
from kfnas.views.proxy_search import proxy_search_page

#: The study of a candidate's experiment.
CANDIDATE = "candidate"
#: The plan of a proxy-search experiment, beside its ``experiment.json``.
PLAN = "proxy_search_plan.json"
#: The override a successful candidate's steps are handed back as.
STEPS_KEY = f"studies.{PROXY}.budget.train_steps"


def _plan_path(exp: Experiment) -> str:
    return f"{exp.layout.experiment_dir()}/{PLAN}"


def _references(base: ExperimentSpec, selection_uri: str) -> tuple[str, list[dict[str, Any]]]:
    """The model selection's space and its selected models, each with its DNA."""
    uri = selection_uri or experiment_uri(dataclasses.replace(base, name=f"{base.name}-selection"))
    try:
        selection = open_experiment(uri)
    except SpecError as e:
        raise SpecError(
            f"no model selection at {uri} ({e}): run `kfnas proxy select` (the kfnas-proxy-select "
            f"pipeline) with this spec first, or name its experiment"
        ) from e
    path = f"{selection.layout.reports_dir()}/model_selection.json"
    if not selection.store.exists(path):
        raise SpecError(
            f"the model selection {uri} has not finished (no {selection.store.uri(path)}): run "
            f"`kfnas proxy select` to its end first"
        )
    report = json.loads(selection.store.read_text(path))
    metric = base.objectives.metric
    if report.get("metric") != metric:
        raise SpecError(
            f"the model selection {uri} scored {report.get('metric')!r}, this spec's metric is "
            f"{metric!r}: select models with this spec"
        )
    models = []
    for entry in report.get("selected", []):
        score = entry.get(metric)
        if not isinstance(score, int | float) or not math.isfinite(score):
            continue
        trial = selection.records.read_spec(SELECTION, entry["trial_id"])
        models.append(
            {
                "model": entry["model"],
                "selection_trial": entry["trial_id"],
                "score": float(score),
                "latency_ms": entry.get("latency_ms"),
                "dna_json": trial.dna_json,
                "arch_json": trial.arch_json,
            }
        )
    if len(models) < MIN_PAIRS:
        raise SpecError(
            f"the model selection {uri} has {len(models)} reference models with a full-training "
            f"score; the rank correlation needs at least {MIN_PAIRS}: run `kfnas proxy select` "
            f"with --final {MIN_PAIRS} or more"
        )
    return selection.spec.study(SELECTION).space, models


def candidate_spec(
    base: ExperimentSpec,
    candidate: ProxyCandidate,
    candidate_search: ExperimentSpec,
    references: Sequence[Mapping[str, Any]],
    targets: ProxyTargets,
    evaluations: int,
) -> ExperimentSpec:
    """A candidate's experiment: its proxy setting, one trial per reference model.

    Args:
        base: The search spec the grid varies.
        candidate: The candidate.
        candidate_search: The search spec with the candidate's overrides applied.
        references: The reference models (``score`` by trial id order).
        targets: Its targets; ``time_limit_s`` is the candidate's limit.
        evaluations: Evaluations of each trial.

    Raises:
        SpecError: The candidate's study is not valid (e.g. fewer steps than evaluations).
    """
    proxy = candidate_search.study(PROXY)
    assert proxy.budget is not None
    if proxy.budget.train_steps < evaluations:
        raise SpecError(
            f"it trains {proxy.budget.train_steps} steps, fewer than its {evaluations} "
            f"evaluations: give it more steps or ask for fewer evaluations"
        )
    budget = dataclasses.replace(
        proxy.budget, rounds=1, trials_per_round=len(references), evaluations=evaluations
    )
    options = {
        "reference": [model["score"] for model in references],
        "correlation": targets.correlation,
        "accuracy": targets.accuracy,
        "seconds": targets.time_limit_s,
    }
    study = StudySpec(
        space=proxy.space,
        algorithm=AlgorithmSpec("random"),
        budget=budget,
        early_stopping=EarlyStoppingSpec(PROXY_TARGET.name, options),
    )
    name = f"{base.name}-proxy-{candidate.name}"
    return validate(dataclasses.replace(candidate_search, name=name, studies={CANDIDATE: study}))


def plan_proxy_search(
    spec_yaml: str,
    grid_yaml: str,
    overrides: Sequence[str] = (),
    selection_uri: str = "",
    target_correlation: float = 0.65,
    target_accuracy: float = -1.0,
    time_limit_hours: float = 3.0,
    stop_if_slower: bool = True,
    latency_correlation: float = 0.65,
    evaluations: int = 5,
) -> tuple[ExperimentSpec, dict[str, Any]]:
    """The search spec and the plan of a proxy-task search, everything checked; writes nothing.

    Arguments as for ``init_proxy_search``.

    Raises:
        SpecError: A bad spec, grid, candidate, target, data, or too few reference models.
    """
    base = experiment_spec(spec_yaml, overrides)
    problems = []
    if not -1 <= target_correlation <= 1:
        problems.append(f"target correlation must be between -1 and 1, got {target_correlation}")
    if not -1 <= latency_correlation <= 1:
        problems.append(
            f"latency correlation must be between -1 and 1 (-1: any), got {latency_correlation}"
        )
    if not time_limit_hours > 0:
        problems.append(f"the time limit must be positive hours, got {time_limit_hours}")
    if evaluations < 2:
        problems.append(
            f"evaluations must be at least 2 to follow the correlation, got {evaluations}"
        )
    if problems:
        raise SpecError("proxy-task search: " + "; ".join(problems))
    try:
        candidates = parse_grid(grid_yaml)
    except ValueError as e:
        raise SpecError(str(e)) from e
    space, references = _references(base, selection_uri)
    targets = ProxyTargets(
        correlation=target_correlation,
        accuracy=None if target_accuracy < 0 else target_accuracy,
        time_limit_s=time_limit_hours * 3600.0,
        latency_correlation=latency_correlation,
    )
    specs = {}
    for candidate in candidates:
        try:
            searched = experiment_spec(spec_yaml, [*overrides, *candidate.overrides()])
            spec = candidate_spec(base, candidate, searched, references, targets, evaluations)
            check_data(spec)
        except SpecError as e:
            raise SpecError(f"proxy candidate {candidate.name!r}: {e}") from e
        if spec.study(CANDIDATE).space != space:
            raise SpecError(
                f"proxy candidate {candidate.name!r} searches the space "
                f"{spec.study(CANDIDATE).space!r}, the reference models are of {space!r}: the grid "
                f"may not change the space"
            )
        specs[candidate.name] = spec.to_json()
    plan = {
        "metric": base.objectives.metric,
        "references": references,
        "candidates": [dataclasses.asdict(c) for c in candidates],
        "specs": specs,
        "targets": dataclasses.asdict(targets),
        "stop_if_slower": stop_if_slower,
    }
    return base, json.loads(json.dumps(plan, sort_keys=True))


def init_proxy_search(
    spec_yaml: str,
    grid_yaml: str,
    overrides: Sequence[str] = (),
    selection_uri: str = "",
    target_correlation: float = 0.65,
    target_accuracy: float = -1.0,
    time_limit_hours: float = 3.0,
    stop_if_slower: bool = True,
    latency_correlation: float = 0.65,
    evaluations: int = 5,
) -> str:
    """Checks the search, the reference models and every candidate; writes the plan.

    Idempotent: rerun with the same arguments it returns the same experiment.

    Args:
        spec_yaml: The search spec (YAML text, or ``"demo"``) whose proxy study is varied.
        grid_yaml: The candidates (``kfnas.search.proxy_search.parse_grid``).
        overrides: Dotted ``key=value`` overrides of the spec, before each candidate's.
        selection_uri: The model-selection experiment; empty: ``<name>-selection`` in the spec's
            store.
        target_correlation: Kendall's tau that makes a candidate good (Vertex AI NAS: 0.65).
        target_accuracy: A median proxy value that makes it good too; below 0: not used.
        time_limit_hours: Training hours after which a candidate gives up (Vertex AI NAS: 3).
        stop_if_slower: Stop a candidate once it needs more time than the best one so far.
        latency_correlation: The latency tau a good candidate needs when the models' latencies
            are measured (-1: any).
        evaluations: Evaluations of each trial (the points the correlation is followed at).

    Returns:
        The proxy-search experiment's URI.

    Raises:
        SpecError: A bad spec, grid, candidate, target, data or store, or too few reference
            models, before any training.
    """
    base, plan = plan_proxy_search(
        spec_yaml,
        grid_yaml,
        overrides,
        selection_uri,
        target_correlation,
        target_accuracy,
        time_limit_hours,
        stop_if_slower,
        latency_correlation,
        evaluations,
    )
    exp = create_experiment(dataclasses.replace(base, name=f"{base.name}-proxy-search"))
    path = _plan_path(exp)
    if not exp.store.exists(path):
        exp.store.write_text(path, json.dumps(plan, indent=1, sort_keys=True), if_absent=True)
    elif json.loads(exp.store.read_text(path)) != plan:
        raise SpecError(
            f"{exp.store.uri(path)} holds another proxy-task search: use the same grid, targets "
            f"and reference models, or another spec name"
        )
    return exp.uri


def search_proxy_tasks(
    experiment_uri: str,
    parallelism: int,
    launch_config: Mapping[str, Any],
    run_id: str = "",
    html_path: str = "",
) -> dict[str, Any]:
    """Tries the candidates in order (see the module doc) and writes the reports.

    Args:
        experiment_uri: From ``init_proxy_search``.
        parallelism: Trials trained at once.
        launch_config: How the trials run (``kfnas.launch``), as for ``search_study``.
        run_id: The run (the controllers' lease).
        html_path: Also write the HTML page here (the KFP step's HTML artifact).

    Returns:
        The JSON report (``candidates``, ``best``, ``best_overrides``, ...) with the reports' URIs.
    """
    exp = open_experiment(experiment_uri)
    plan = json.loads(exp.store.read_text(_plan_path(exp)))
    base = ProxyTargets(**plan["targets"])
    entries: list[dict[str, Any]] = []
    tracks = {}
    best_s: float | None = None
    for raw in plan["candidates"]:
        candidate = ProxyCandidate(**raw)
        targets = dataclasses.replace(base, best_s=best_s if plan["stop_if_slower"] else None)
        limit = min(s for s in (base.time_limit_s, targets.best_s) if s is not None)
        spec = _with_limit(ExperimentSpec.from_json(plan["specs"][candidate.name]), limit)
        cexp = create_experiment(spec)
        if not cexp.records.trial_ids(CANDIDATE):
            _write_trials(cexp, spec, plan["references"])
        error = ""
        try:
            search_with_config(cexp, CANDIDATE, parallelism, launch_config, run_id)
        except StudyStoppedError as e:  # its trials failed: the other candidates go on
            error = str(e)
        results = {spec.trial_id: result for spec, result in cexp.records.history(CANDIDATE)}
        tracks[candidate.name] = found = _track(cexp, results, plan["references"], targets)
        entries.append(_candidate_report(cexp, candidate, found, results, limit, error))
        if found.succeeded and found.final_seconds is not None:
            best_s = found.final_seconds if best_s is None else min(best_s, found.final_seconds)
    best = best_candidate(tracks)
    report = {
        "metric": plan["metric"],
        "targets": {**plan["targets"], "stop_if_slower": plan["stop_if_slower"]},
        "references": [
            {k: m[k] for k in ("model", "selection_trial", "score", "latency_ms")}
            for m in plan["references"]
        ],
        "candidates": entries,
        "best": best,
        "best_overrides": _best_overrides(entries, best),
    }
    page = proxy_search_page(report, title=f"{exp.spec.name}: proxy-task search")
    return {**report, **write_tool_report(exp, "proxy_search", report, page, html_path)}


def _with_limit(spec: ExperimentSpec, seconds: float) -> ExperimentSpec:
    """The candidate's spec with its trials' time limit (the plan's holds the time limit)."""
    study = spec.studies[CANDIDATE]
    options = {**study.early_stopping.options, "seconds": seconds}
    stopping = dataclasses.replace(study.early_stopping, options=options)
    studies = {CANDIDATE: dataclasses.replace(study, early_stopping=stopping)}
    return dataclasses.replace(spec, studies=studies)


def _write_trials(exp: Experiment, spec: ExperimentSpec, references: Sequence[Any]) -> None:
    study = spec.study(CANDIDATE)
    assert study.budget is not None
    budget = dataclasses.asdict(study.budget)
    for trial_id, model in enumerate(references):
        exp.records.write_spec(
            TrialSpec(
                experiment=spec.name,
                study=CANDIDATE,
                trial_id=trial_id,
                round=1,
                space=study.space,
                dna_json=model["dna_json"],
                arch_json=model["arch_json"],
                budget=budget,
                seed=trial_seed(study, trial_id),
            )
        )


def _track(
    exp: Experiment,
    results: Mapping[int, TrialResult | None],
    references: Sequence[Any],
    targets: ProxyTargets,
) -> CandidateTrack:
    values, seconds, latencies = {}, {}, {}
    for trial_id, result in results.items():
        curve = exp.records.read_curve(CANDIDATE, trial_id)
        if curve is not None:
            values[trial_id], seconds[trial_id] = curve.points(), curve.seconds()
        if result is not None and result.completed and "latency_ms" in result.metrics:
            latencies[trial_id] = result.metrics["latency_ms"]
    full = {
        i: float(m["latency_ms"]) for i, m in enumerate(references) if m["latency_ms"] is not None
    }
    reference = {i: m["score"] for i, m in enumerate(references)}
    return track(values, seconds, reference, targets, (latencies, full))


def _candidate_report(
    exp: Experiment,
    candidate: ProxyCandidate,
    found: CandidateTrack,
    by_trial: Mapping[int, TrialResult | None],
    limit: float,
    error: str,
) -> dict[str, Any]:
    results = list(by_trial.values())
    return {
        "name": candidate.name,
        "settings": candidate.settings,
        "overrides": candidate.overrides(),
        "experiment": exp.uri,
        "state": found.state,
        "stop_step": found.stop_step,
        "final_steps": found.final_steps,
        "final_seconds": found.final_seconds,
        "latency_correlation": found.latency_correlation,
        "time_limit_s": limit,
        "trials": len(results),
        "stopped_early": sum(1 for r in results if r is not None and r.stopped_early),
        "failed": sum(1 for r in results if r is None or not r.completed),
        "error": error,
        "stats": [dataclasses.asdict(stat) for stat in found.stats],
        "scores_step": found.scores_step,
        "scores": [{"model": m, "proxy": p, "full": f} for m, p, f in found.scores],
    }


def _best_overrides(entries: Sequence[Mapping[str, Any]], best: str | None) -> list[str]:
    """The best candidate's settings and the steps it needed, as a search's overrides."""
    if best is None:
        return []
    entry = next(e for e in entries if e["name"] == best)
    kept = [o for o in entry["overrides"] if not o.startswith(f"{STEPS_KEY}=")]
    return [*kept, f"{STEPS_KEY}={math.ceil(entry['final_steps'])}"]
