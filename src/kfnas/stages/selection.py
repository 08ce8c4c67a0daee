"""Proxy-task design: choosing the reference models a proxy task is judged against.

``init_model_selection`` turns a search spec into a *model-selection experiment*
(``<name>-selection``): one study, ``selection``, whose first trials are ``models`` distinct
architectures of the proxy study's space drawn with the spec's seed, each to be trained with the
full-training budget (the spec's ``validation`` study) in iterations (``kfnas.search.
model_selection.SelectionSchedule``: 30 models to 3.3 % of the steps, 25 to 7.3 %, ... 10 to
100 %). ``select_models`` runs the iterations: the search controller trains the iteration's trials
(measured on the latency device as every trial is), the crowding rule removes the models that add
least spread in accuracy against latency (a failed trial counts among the removals), and the
survivors continue from their checkpoints as the next iteration's trials (``promoted_from``, the
next ``rung``). The last iteration trains the final models to the full budget; their scores are
the full-training references. ``reports/model_selection.json`` lists every iteration's kept and
removed trials and the selected models; ``model_selection.html`` draws them.

Resumable: each iteration's trials and removals are stored before the next starts, so a rerun
continues where the last one stopped.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, ExperimentSpec, SpecError, StudySpec
from kfnas.config.studies import PROXY, VALIDATION
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.search.model_selection import SelectionSchedule, crowding_removals
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, dna_spec
from kfnas.stages._common import (
    StudyStoppedError,
    create_experiment,
    trial_seed,
    write_tool_report,
)
from kfnas.stages.controller import search_with_config
from kfnas.store import Experiment, open_experiment
from kfnas.validation import check_data, experiment_spec, validate
from kfnas.views.selection import selection_page

#: The study of a model-selection experiment.
SELECTION = "selection"
#: Draws of a random architecture before the space counts as too small for the models asked.
_MAX_DRAWS = 100


def selection_spec(spec: ExperimentSpec, schedule: SelectionSchedule) -> ExperimentSpec:
    """The model-selection experiment of a search spec (see the module doc).

    Raises:
        SpecError: A bad schedule, a spec without a proxy study, or a full-training budget too
            short for the schedule's iterations.
    """
    if problems := schedule.problems():
        raise SpecError("model selection: " + "; ".join(problems))
    if PROXY not in spec.studies or VALIDATION not in spec.studies:
        raise SpecError(
            f"the spec has no {PROXY!r} study whose space to select models from; studies: "
            f"{', '.join(spec.studies) or 'none'}"
        )
    full = spec.study(VALIDATION).budget
    assert full is not None
    try:
        schedule.steps(full.train_steps)
    except ValueError as e:
        raise SpecError(f"model selection: {e} (studies.{VALIDATION}.budget.train_steps)") from e
    budget = dataclasses.replace(full, rounds=1, trials_per_round=schedule.start)
    study = StudySpec(
        space=spec.study(PROXY).space, algorithm=AlgorithmSpec("random"), budget=budget
    )
    return validate(
        dataclasses.replace(spec, name=f"{spec.name}-selection", studies={SELECTION: study})
    )


def init_model_selection(
    spec_yaml: str,
    overrides: Sequence[str] = (),
    models: int = 30,
    final_models: int = 10,
    remove_per_iteration: int = 5,
) -> str:
    """Writes the model-selection experiment, its plan and its first iteration's trials.

    Idempotent: rerun with the same arguments it returns the same experiment.

    Args:
        spec_yaml: The search spec (YAML text, or ``"demo"``).
        overrides: Dotted ``key=value`` overrides, last.
        models: Architectures drawn at the start (Vertex AI NAS: 30).
        final_models: Models kept and trained to the full budget (Vertex AI NAS: 10; the proxy-
            task search needs at least 5 for its rank correlation).
        remove_per_iteration: Models removed after each iteration at most (Vertex AI NAS: 5).

    Returns:
        The model-selection experiment's URI.

    Raises:
        SpecError: A bad spec, data, store or schedule, before any trial.
    """
    schedule = SelectionSchedule(models, final_models, remove_per_iteration)
    spec = selection_spec(experiment_spec(spec_yaml, overrides), schedule)
    check_data(spec)
    exp = create_experiment(spec)
    full = spec.study(SELECTION).budget
    assert full is not None
    plan = {
        "start": schedule.start,
        "final": schedule.final,
        "remove": schedule.remove,
        "iterations": [list(item) for item in schedule.iterations()],
        "steps": list(schedule.steps(full.train_steps)),
    }
    plan_path = exp.layout.study_plan(SELECTION)
    if not exp.store.exists(plan_path):
        exp.store.write_text(plan_path, json.dumps(plan, indent=1), if_absent=True)
    elif json.loads(exp.store.read_text(plan_path)) != plan:
        raise SpecError(f"{exp.store.uri(plan_path)} holds another schedule: use the same counts")
    if not exp.records.trial_ids(SELECTION):
        _write_first_models(exp, spec, plan["steps"][0])
    return exp.uri


def _write_first_models(exp: Experiment, spec: ExperimentSpec, steps: int) -> None:
    study = spec.study(SELECTION)
    assert study.budget is not None
    space = get_space(study.space)
    rng, seen, dnas = random.Random(study.seed), set(), []
    for _ in range(study.budget.trials_per_round * _MAX_DRAWS):
        dna = pg.random_dna(dna_spec(space), rng)
        if (key := pg.to_json_str(dna)) not in seen:
            seen.add(key)
            dnas.append(dna)
        if len(dnas) == study.budget.trials_per_round:
            break
    else:
        raise SpecError(
            f"the space {study.space!r} gave only {len(dnas)} distinct architectures in "
            f"{study.budget.trials_per_round * _MAX_DRAWS} draws: ask for fewer models"
        )
    budget = {**dataclasses.asdict(study.budget), "train_steps": steps}
    for trial_id, dna in enumerate(dnas):
        exp.records.write_spec(
            TrialSpec(
                experiment=spec.name,
                study=SELECTION,
                trial_id=trial_id,
                round=1,
                space=study.space,
                dna_json=pg.to_json_str(dna),
                arch_json=architecture_json(space, dna),
                budget=budget,
                seed=trial_seed(study, trial_id),
            )
        )


def select_models(
    experiment_uri: str,
    parallelism: int,
    launch_config: Mapping[str, Any],
    run_id: str = "",
    html_path: str = "",
) -> dict[str, Any]:
    """Runs the iterations (see the module doc) and writes the reports.

    Args:
        experiment_uri: From ``init_model_selection``.
        parallelism: Trials trained at once.
        launch_config: How the trials run (``kfnas.launch``), as for ``search_study``.
        run_id: The run (the controller's lease).
        html_path: Also write the HTML page here (the KFP step's HTML artifact).

    Returns:
        The JSON report: ``iterations`` (models, step, kept, removed, failed) and ``selected``
        (trial id, source trial chain's first id, metric, latency), plus the reports' URIs.

    Raises:
        StudyStoppedError: Fewer than 2 models are left to compare.
    """
    exp = open_experiment(experiment_uri)
    plan = json.loads(exp.store.read_text(exp.layout.study_plan(SELECTION)))
    metric = exp.spec.objectives.metric
    iterations: list[dict[str, Any]] = []
    for rung, step in enumerate(plan["steps"]):
        current = [s for s, _ in exp.records.history(SELECTION) if s.rung == rung]
        if not current:
            _continue_survivors(exp, iterations[-1]["kept"], rung, step)
        search_with_config(exp, SELECTION, parallelism, launch_config, run_id)
        history = {s.trial_id: (s, r) for s, r in exp.records.history(SELECTION) if s.rung == rung}
        points = _scores(history, metric)
        failed = sorted(set(history) - set(points))
        if len(points) < 2:
            raise StudyStoppedError(
                f"model selection iteration {rung + 1}: only {len(points)} of {len(history)} "
                f"models trained: " + "; ".join(_why(history[t][1]) for t in failed)
            )
        last = rung == len(plan["steps"]) - 1
        count = 0 if last else max(0, min(plan["remove"], len(history) - plan["final"]))
        removed = crowding_removals(points, max(0, count - len(failed)))
        iterations.append(
            {
                "iteration": rung + 1,
                "step": step,
                "models": len(history),
                "points": {str(t): list(p) for t, p in points.items()},
                "failed": failed,
                "removed": removed,
                "kept": sorted(set(points) - set(removed)),
            }
        )
    return _write_reports(exp, iterations, metric, html_path)


def _scores(
    history: Mapping[int, tuple[TrialSpec, TrialResult | None]], metric: str
) -> dict[int, tuple[float, float | None]]:
    """(metric, latency) of each COMPLETED trial of an iteration."""
    return {
        trial_id: (result.metrics[metric], result.metrics.get("latency_ms"))
        for trial_id, (_, result) in history.items()
        if result is not None and result.completed and metric in result.metrics
    }


def _why(result: TrialResult | None) -> str:
    return "no result" if result is None else f"trial {result.trial_id}: {result.error}"


def _continue_survivors(exp: Experiment, kept: Sequence[int], rung: int, step: int) -> None:
    """The next iteration's trials: each survivor continues from its checkpoint to ``step``."""
    first = exp.records.next_trial_id(SELECTION)
    for offset, parent in enumerate(kept):
        source = exp.records.read_spec(SELECTION, parent)
        exp.records.write_spec(
            dataclasses.replace(
                source,
                trial_id=first + offset,
                rung=rung,
                promoted_from=parent,
                budget={**source.budget, "train_steps": step},
            )
        )


def _write_reports(
    exp: Experiment, iterations: list[dict[str, Any]], metric: str, html_path: str
) -> dict[str, Any]:
    specs = {s.trial_id: s for s, _ in exp.records.history(SELECTION)}
    final = iterations[-1]
    selected = []
    for trial_id in final["kept"]:
        origin = trial_id
        while specs[origin].promoted_from is not None:
            origin = specs[origin].promoted_from  # type: ignore[assignment]
        accuracy, latency = final["points"][str(trial_id)]
        selected.append(
            {"trial_id": trial_id, "model": origin, metric: accuracy, "latency_ms": latency}
        )
    report = {"metric": metric, "iterations": iterations, "selected": selected}
    page = selection_page(report, title=f"{exp.spec.name}: model selection")
    return {**report, **write_tool_report(exp, "model_selection", report, page, html_path)}
