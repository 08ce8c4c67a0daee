"""Proxy-task design: how much a proxy task's score varies between runs of one architecture.

``init_variance`` turns a search spec into a *variance experiment* (``<name>-variance``): one study,
``variance``, holding ``repeats`` trials of one architecture of the proxy study's space, trained
with the proxy study's budget (its settings and overrides apply as for a search) and differing
only in their seed. The search controller runs them (``search_study``: they are all written
already, so it proposes nothing). ``variance_report`` then reads each trial's evaluation curve
(``curve.json``) and reports the coefficient of variation of the final metric and the smoothness
of the curves against Vertex AI NAS's thresholds (``kfnas.search.proxy_stats``), as JSON and as an
HTML page in the store's ``reports/``.

The architecture is the space's published reference when it has one (known to train), else one
drawn with the spec's seed; ``architecture="random"`` always draws one. Each trial evaluates at
least ``MIN_EVALUATIONS`` times, so its curve has the points the smoothness needs.

To extend (the model-selection and proxy-search tools): add their stages here; they share the
curves and the statistics module.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from typing import Any

import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, ExperimentSpec, SpecError, StudySpec
from kfnas.config.studies import PROXY
from kfnas.records.trial import TrialSpec
from kfnas.search.proxy_stats import summarize
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, dna_spec
from kfnas.stages._common import (
    StudyStoppedError,
    create_experiment,
    trial_seed,
    write_tool_report,
)
from kfnas.store import open_experiment
from kfnas.validation import check_data, experiment_spec, validate
from kfnas.views.variance import variance_page

#: The study of a variance experiment.
VARIANCE = "variance"
#: Each repeat evaluates at least this many times (the smoothness needs a curve).
MIN_EVALUATIONS = 5
#: Architectures ``init_variance`` accepts besides the default.
ARCHITECTURES = ("", "reference", "random")


def variance_spec(spec: ExperimentSpec, repeats: int) -> ExperimentSpec:
    """The variance experiment of a search spec: ``repeats`` trials of the proxy study's setting.

    Raises:
        SpecError: Fewer than 2 repeats, or the spec has no proxy study.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 2:
        raise SpecError(
            f"repeats must be at least 2 to measure how scores vary between runs, got "
            f"{repeats!r}: use 5 (the default) or more"
        )
    if PROXY not in spec.studies:
        raise SpecError(
            f"the spec has no {PROXY!r} study whose proxy task to measure; studies: "
            f"{', '.join(spec.studies) or 'none'}"
        )
    proxy = spec.study(PROXY)
    assert proxy.budget is not None
    budget = dataclasses.replace(
        proxy.budget,
        rounds=1,
        trials_per_round=repeats,
        evaluations=max(proxy.budget.evaluations, MIN_EVALUATIONS),
    )
    study = StudySpec(space=proxy.space, algorithm=AlgorithmSpec("random"), budget=budget)
    name = f"{spec.name}-variance"
    return validate(dataclasses.replace(spec, name=name, studies={VARIANCE: study}))


def init_variance(
    spec_yaml: str,
    overrides: Sequence[str] = (),
    repeats: int = 5,
    architecture: str = "",
) -> str:
    """Writes the variance experiment of a search spec and its ``repeats`` trials.

    Idempotent: run again with the same arguments it returns the same experiment (trials that
    already exist are kept), so a resubmitted pipeline resumes.

    Args:
        spec_yaml: The search spec (YAML text, or ``"demo"``).
        overrides: Dotted ``key=value`` overrides (``studies.proxy.budget.train_steps=400``,
            ``data.train=...``), last.
        repeats: Trainings of the one architecture (at least 2; Vertex AI NAS uses 5).
        architecture: ``""`` (the space's reference if it has one, else random), ``"reference"``
            or ``"random"`` (drawn with the spec's seed).

    Returns:
        The variance experiment's URI.

    Raises:
        SpecError: A bad spec, data, store, ``repeats`` or ``architecture``, before any trial.
    """
    if architecture not in ARCHITECTURES:
        raise SpecError(
            f"architecture {architecture!r} is not known: use reference (the space's published "
            f"one), random, or leave it empty"
        )
    search = experiment_spec(spec_yaml, overrides)
    spec = variance_spec(search, repeats)
    check_data(spec)
    exp = create_experiment(spec)
    if not exp.records.trial_ids(VARIANCE):
        _write_repeats(exp, spec, architecture)
    return exp.uri


def _write_repeats(exp: Any, spec: ExperimentSpec, architecture: str) -> None:
    study = spec.study(VARIANCE)
    space = get_space(study.space)
    reference = space.reference() if architecture != "random" else None
    if architecture == "reference" and reference is None:
        raise SpecError(
            f"the space {study.space!r} has no published reference architecture: use "
            f"architecture=random"
        )
    if reference is not None:
        dna = pg.template(space.hyper()).encode(reference)
    else:
        dna = pg.random_dna(dna_spec(space), random.Random(study.seed))
    dna_json, arch_json = pg.to_json_str(dna), architecture_json(space, dna)
    assert study.budget is not None
    for trial_id in range(study.budget.trials_per_round):
        exp.records.write_spec(
            TrialSpec(
                experiment=spec.name,
                study=VARIANCE,
                trial_id=trial_id,
                round=1,
                space=study.space,
                dna_json=dna_json,
                arch_json=arch_json,
                budget=dataclasses.asdict(study.budget),
                seed=trial_seed(study, trial_id),
            )
        )


def variance_report(experiment_uri: str, html_path: str = "") -> dict[str, Any]:
    """Measures the variance and smoothness of the repeats; writes the JSON and HTML reports.

    Args:
        experiment_uri: From ``init_variance``, its trials run.
        html_path: Also write the HTML page here (the KFP step's HTML artifact).

    Returns:
        ``VarianceSummary.to_dict()`` plus ``html`` and ``json``: the reports' URIs in the store.

    Raises:
        StudyStoppedError: Fewer than 2 repeats completed (each failure's reason is listed).
    """
    exp = open_experiment(experiment_uri)
    metric = exp.spec.objectives.metric
    curves: dict[int, tuple[list[int], list[float]]] = {}
    failed = []
    for spec, result in exp.records.history(VARIANCE):
        curve = exp.records.read_curve(VARIANCE, spec.trial_id)
        if result is None or not result.completed or curve is None:
            why = result.error if result is not None else "no result"
            failed.append(f"trial {spec.trial_id}: {why}")
            continue
        points = [(s, v) for s, v in curve.points() if math.isfinite(v)]
        curves[spec.trial_id] = ([s for s, _ in points], [v for _, v in points])
    if len(curves) < 2:
        raise StudyStoppedError(
            f"a variance measurement needs at least 2 completed repeats, got {len(curves)}"
            + (": " + "; ".join(failed) if failed else "")
        )
    study = exp.spec.study(VARIANCE)
    assert study.budget is not None
    summary = summarize(metric, curves, study.budget.train_steps).to_dict()
    page = variance_page(
        summary,
        {str(k): {"steps": s, "values": v} for k, (s, v) in curves.items()},
        title=f"{exp.spec.name}: proxy-task variance",
    )
    uris = write_tool_report(exp, "variance", summary, page, html_path)
    return {**summary, "failed": failed, **uris}
