"""What the report shows, gathered from an experiment's store into one JSON-ready dictionary.

``collect(exp)`` reads every study of the chain (in the spec's order: proxy, validation, scaling,
augmentation, final, retraining), each trial's row (``views/rows.py``), its decisions
(``kfnas.spaces.base.decision_values``), what a refinement trial changed, its training curves
(``views/curves.py``), and the exported model's lineage; ``page_data(...)`` turns that into the
dictionary the page's script draws from (``views/report.py`` embeds it once; every plot, the
trials tables and the hover texts are built from it in the browser, so a trial's data is stored
once however many plots show it).

Statistics are computed here, in Python, where tests check them: the Pareto fronts (metric
against latency and against FLOPs), each decision's importance (the share of the reward's variance
its choices explain beyond chance: epsilon squared) with the mean reward of
every choice, and Kendall's tau of the proxy against the full-training scores.

A study that searches with asynchronous successive halving (its spec's ``multi_fidelity``) gets
its rung table (``kfnas.search.asha.rung_table``: per rung, its steps and the trials started,
finished and promoted there, and the best reward); one with an early-stopping rule gets the rule
and how many trials it stopped. Each trial carries its rung, the trial it was promoted from, the
steps it trained to and whether (and why) it was stopped early.

To show another per-trial value: add it to ``TrialRow`` (``views/rows.py``); ``to_dict`` carries
it into the page data. Another per-study statistic: compute it in ``_study_data`` and draw it in
``assets/report.js``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.config.spec import ExperimentSpec, SpecError, StudySpec
from kfnas.config.studies import PROXY, VALIDATION
from kfnas.records.base import RecordError
from kfnas.records.trial import TrialSpec, TrialStatus
from kfnas.search.asha import HalvingSchedule, RungTrial, rung_table
from kfnas.search.ranking import kendall_tau, pareto_front
from kfnas.store import Experiment, ObjectNotFound
from kfnas.views.curves import CurvesError, read_curves
from kfnas.views.listing import study_trials
from kfnas.views.rows import PENDING, TrialRow

#: Steps kept per split of a trial's curves (see ``Curves.thinned``).
CURVE_POINTS = 40
#: Decisions drawn as axes of the parallel-coordinates plot (the most important first).
PARCOORDS_DECISIONS = 10
LATENCY = "latency_ms"
_STATUSES = [s.value for s in TrialStatus] + [PENDING]


@dataclasses.dataclass
class TrialData:
    """One trial as the report knows it.

    Attributes:
        spec: Its ``trial.json`` (``None`` when unreadable).
        row: Its table row.
        decisions: Decision id -> chosen value (empty when it has none or they do not decode).
        change: What a refinement trial changed (its own task overrides, as text), else empty.
        curves: Its training curves as JSON-ready data (``Curves.to_dict``), if read.
        curves_error: Why its curves could not be read, if they could not.
    """

    spec: TrialSpec | None
    row: TrialRow
    decisions: dict[str, Any] = dataclasses.field(default_factory=dict)
    change: str = ""
    curves: dict[str, Any] | None = None
    curves_error: str = ""


@dataclasses.dataclass
class StudyData:
    """One study of the chain: its space, algorithm and trials in id order.

    Attributes:
        name: The study's name.
        space: Its search space (``-``: a study of trained trials).
        algorithm: Its search algorithm.
        trials: Its trials in id order.
        spec: Its resolved spec (budget, early stopping, multi-fidelity); ``None`` when the
            experiment's spec does not define it.
    """

    name: str
    space: str
    algorithm: str
    trials: list[TrialData]
    spec: StudySpec | None = None


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _finite_row(row: TrialRow) -> TrialRow:
    """``row`` with every measured value that is not a finite number left out (``None``)."""
    names = ("value", "reward", "latency_ms", "latency_p90_ms", "flops", "params")
    return dataclasses.replace(row, **{n: _finite(getattr(row, n)) for n in names})


def _study_spec(exp: Experiment, study: str) -> StudySpec | None:
    """The resolved spec of a study, or ``None`` when the experiment's spec lacks it."""
    try:
        return exp.spec.study(study)
    except SpecError:
        return None


def _study_info(exp: Experiment, study: str) -> tuple[str, str]:
    """The (space, algorithm) of a study from the spec (``-``: a study of trained trials)."""
    try:
        resolved = exp.spec.study(study)
    except SpecError:
        return "-", exp.spec.algorithm.name
    algorithm = resolved.algorithm.name if resolved.algorithm else exp.spec.algorithm.name
    return resolved.space or "-", algorithm


@functools.cache
def _space(name: str) -> tuple[Any, Any]:
    """A registered space and its DNA spec (built once: it takes a good part of a second)."""
    from kfnas.spaces import get_space
    from kfnas.spaces.base import dna_spec

    space = get_space(name)
    return space, dna_spec(space)


def _decisions(spec: TrialSpec, spaces: Sequence[str]) -> dict[str, Any]:
    """The trial's decisions, decoded with the first of ``spaces`` its DNA fits."""
    from kfnas.spaces.base import decision_values

    if not spec.dna_json:
        return {}
    for name in dict.fromkeys(s for s in spaces if s and s != "-"):
        try:
            space, dna_spec = _space(name)
            return decision_values(space, spec.dna_json, spec=dna_spec)
        except (RecordError, SpecError, KeyError, ValueError, TypeError):
            continue
    return {}


# Logs URI -> (curves, error) of finished trials: their train and eval event files no longer
# change, so the live view, which renders again whenever a trial ends, reads each trial's once.
_FINISHED_CURVES: dict[str, tuple[dict[str, Any] | None, str]] = {}
_CACHED_TRIALS = 20_000


def _curves(exp: Experiment, study: str, trial: TrialData, with_curves: bool) -> None:
    if not with_curves or trial.row.status == PENDING:
        return
    logs = exp.layout.trial_logs_dir(study, trial.row.trial_id)
    key = exp.store.uri(logs)
    if key not in _FINISHED_CURVES:
        if len(_FINISHED_CURVES) >= _CACHED_TRIALS:
            _FINISHED_CURVES.clear()
        _FINISHED_CURVES[key] = _read(exp, logs)
    trial.curves, trial.curves_error = _FINISHED_CURVES[key]


def _read(exp: Experiment, logs: str) -> tuple[dict[str, Any] | None, str]:
    try:
        curves = read_curves(exp.store, logs)
    except (CurvesError, ObjectNotFound, OSError) as e:
        return None, f"its training logs cannot be read: {e}"
    if not curves.splits:
        return None, f"no training logs under {exp.store.uri(logs)}"
    return curves.thinned(CURVE_POINTS).to_dict(), ""


def collect(exp: Experiment, *, with_curves: bool = True) -> list[StudyData]:
    """Every study of the experiment's chain with its trials, from the store as it is now.

    Unreadable records become ``CORRUPT`` rows (the error names the file and the repair), missing
    or unreadable logs leave a trial without curves (``curves_error`` says why); nothing here
    raises for a trial's sake.

    Args:
        exp: The opened experiment.
        with_curves: Read each finished trial's training curves (one listing and a read per event
            file).
    """
    studies: list[StudyData] = []
    specs: dict[tuple[str, int], TrialSpec] = {}
    for name in exp.spec.studies:
        space, algorithm = _study_info(exp, name)
        trials = []
        for spec, listed in study_trials(exp, name):
            row = _finite_row(listed)
            trial = TrialData(spec, row)
            if spec is not None:
                specs[(name, row.trial_id)] = spec
                source = specs.get((spec.source_study or "", spec.source_trial or -1))
                spaces = [space, source.space if source else "", spec.space]
                if source is not None:
                    spaces.insert(1, _study_info(exp, source.study)[0])
                trial.decisions = _decisions(spec, spaces)
                own = spec.task_overrides[len(source.task_overrides) if source else 0 :]
                trial.change = ", ".join(o.removeprefix("task.") for o in own)
            _curves(exp, name, trial, with_curves)
            trials.append(trial)
        if space == "-" and trials and trials[0].spec is not None:
            space = trials[0].spec.space  # a study of retrained copies: the network's space
        studies.append(StudyData(name, space, algorithm, trials, _study_spec(exp, name)))
    return studies


# ---- Statistics ----------------------------------------------------------------------------


def importance(
    rewards: Sequence[float], choices: Sequence[Sequence[Any]], names: Sequence[str]
) -> list[dict[str, Any]]:
    """How much of the reward's variance each decision's choices explain, most first.

    Args:
        rewards: One reward per trial.
        choices: Per trial, its value of each decision in ``names`` (``None``: not taken).
        names: The decision ids.

    Returns:
        One ``{"id", "score", "choices": [{"value", "mean", "n"}]}`` per decision with at least
        two choices seen: ``score`` is epsilon squared, the between-choice sum of squares less
        what chance explains with that many choices, over the total (in [0, 1]; 0 when the
        trials leave no degree of freedom within the choices); the choices by mean reward,
        best first. Empty with fewer than 3 trials or no
        variance.
    """
    if len(rewards) < 3:
        return []
    mean = sum(rewards) / len(rewards)
    total = sum((r - mean) ** 2 for r in rewards)
    if total <= 0:
        return []
    out = []
    for i, name in enumerate(names):
        groups: dict[str, list[float]] = {}
        for reward, values in zip(rewards, choices, strict=True):
            if values[i] is not None:
                groups.setdefault(str(values[i]), []).append(reward)
        if len(groups) < 2:
            continue
        means = {value: sum(g) / len(g) for value, g in groups.items()}
        between = sum(len(g) * (means[v] - mean) ** 2 for v, g in groups.items())
        seen = sum(len(g) for g in groups.values())
        spare = seen - len(groups)  # degrees of freedom left within the choices
        # Epsilon squared: eta squared less what chance alone explains with this many choices
        # (with a dozen trials, a decision with ten choices "explains" most of any variance).
        within = (total - between) / spare if spare > 0 else math.inf
        score = max(0.0, (between - (len(groups) - 1) * within) / total) if spare > 0 else 0.0
        ranked = sorted(groups, key=lambda v: -means[v])
        out.append(
            {
                "id": name,
                "score": round(score, 4),
                "choices": [
                    {"value": v, "mean": round(means[v], 5), "n": len(groups[v])} for v in ranked
                ],
            }
        )
    return sorted(out, key=lambda d: (-d["score"], d["id"]))


def _fronts(rows: Sequence[TrialRow]) -> dict[str, list[int]]:
    """Trial ids on the Pareto front of the metric against latency and against FLOPs."""
    fronts = {}
    for cost in ("latency_ms", "flops"):
        points = [
            (r.trial_id, r.value, getattr(r, cost))
            for r in rows
            if r.value is not None and getattr(r, cost) is not None
        ]
        front = pareto_front([(v, c) for _, v, c in points])
        fronts[cost] = sorted(points[i][0] for i in front)
    return fronts


def _multi_fidelity(study: StudyData) -> dict[str, Any] | None:
    """The study's successive-halving schedule and rung table; ``None`` without multi-fidelity.

    Returns:
        ``{"scheduler", "min_steps", "reduction_factor", "max_steps", "rungs", "error"}``:
        ``rungs`` is ``kfnas.search.asha.rung_table`` over the trials whose spec is readable
        (a trial's value is its reward when COMPLETED; a FAILED, INFEASIBLE or CORRUPT trial is
        finished without one); ``error`` says why there is no table (an invalid schedule, a
        trial at a rung the schedule lacks), else empty.
    """
    spec = study.spec
    if spec is None or not spec.multi_fidelity.scheduler:
        return None
    fidelity = spec.multi_fidelity
    max_steps = spec.budget.train_steps if spec.budget else 0
    schedule = HalvingSchedule(fidelity.min_steps, max_steps, fidelity.reduction_factor)
    trials = [
        RungTrial(
            trial_id=t.row.trial_id,
            rung=t.row.rung,
            value=t.row.reward if t.row.status == TrialStatus.COMPLETED.value else None,
            finished=t.row.status != PENDING,
            promoted_from=t.row.promoted_from,
        )
        for t in study.trials
        if t.spec is not None
    ]
    try:
        rungs, error = rung_table(schedule, trials), ""
    except ValueError as e:
        rungs, error = [], str(e)
    return {
        "scheduler": fidelity.scheduler,
        "min_steps": fidelity.min_steps,
        "reduction_factor": fidelity.reduction_factor,
        "max_steps": max_steps,
        "rungs": rungs,
        "error": error,
    }


def _early_stopping(study: StudyData) -> dict[str, Any] | None:
    """The study's early-stopping rule and how many trials it stopped; ``None`` without one."""
    if study.spec is None or not study.spec.early_stopping.rule:
        return None
    rule = study.spec.early_stopping
    return {
        "rule": rule.rule,
        "options": dict(rule.options),
        "stopped": sum(t.row.stopped_early for t in study.trials),
    }


def _study_data(study: StudyData) -> dict[str, Any]:
    rows = [t.row for t in study.trials]
    names = list(dict.fromkeys(k for t in study.trials for k in t.decisions))
    values: dict[str, list[Any]] = {n: [] for n in names}
    for t in study.trials:
        for n in names:
            if n in t.decisions and t.decisions[n] not in values[n]:
                values[n].append(t.decisions[n])
    # Proposed trials, or refinements of trained ones, rather than retrained copies of others.
    searched = any(
        t.spec is not None and (t.spec.source_trial is None or t.change) for t in study.trials
    )
    scored = [t for t in study.trials if t.row.status == "COMPLETED" and t.row.reward is not None]
    ranked = (
        importance(
            [t.row.reward or 0.0 for t in scored],
            [[t.decisions.get(n) for n in names] for t in scored],
            names,
        )
        if searched
        else []
    )
    trials = []
    for t in study.trials:
        item = {k: v for k, v in t.row.to_dict().items() if k != "metric"}
        item["change"] = t.change
        if names:
            item["d"] = [values[n].index(t.decisions[n]) if n in t.decisions else -1 for n in names]
        trials.append(item)
    return {
        "name": study.name,
        "space": study.space,
        "algorithm": study.algorithm,
        "counts": {s: sum(r.status == s for r in rows) for s in _STATUSES},
        "searched": searched,
        "decisions": [{"id": n, "choices": [str(v) for v in values[n]]} for n in names],
        "importance": ranked,
        "fronts": _fronts(rows),
        "multi_fidelity": _multi_fidelity(study),
        "early_stopping": _early_stopping(study),
        "trials": trials,
        "curves": {str(t.row.trial_id): t.curves for t in study.trials if t.curves},
        "curve_errors": {
            str(t.row.trial_id): t.curves_error for t in study.trials if t.curves_error
        },
    }


def pairs(studies: Sequence[StudyData]) -> list[dict[str, Any]]:
    """Each validated candidate's proxy score against its full-training score."""
    by_name = {s.name: s for s in studies}
    if PROXY not in by_name or VALIDATION not in by_name:
        return []
    proxy = {t.row.trial_id: t.row for t in by_name[PROXY].trials if t.row.status == "COMPLETED"}
    out = []
    for t in by_name[VALIDATION].trials:
        source = proxy.get(
            t.spec.source_trial if t.spec and t.spec.source_trial is not None else -1
        )
        ok = t.row.status == "COMPLETED" and t.row.value is not None
        if ok and source is not None and source.value is not None:
            pair = {"proxy": source.value, "full": t.row.value}
            out.append({"proxy_trial": source.trial_id, "trial": t.row.trial_id, **pair})
    return out


def lineage(studies: Sequence[StudyData], handoff: Mapping[str, Any] | None) -> dict[str, Any]:
    """The exported model's lineage, or, before an export, the best candidate's.

    Args:
        studies: The collected studies.
        handoff: The latest export's ``handoff.json`` data, if one exists.

    Returns:
        ``{"exported": version or "", "steps": [{"study", "trial_id", "value"}...]}``: the model's
        trial first, then each trial it retrained; no steps when no trial completed.
    """
    rows = {(s.name, t.row.trial_id): t for s in studies for t in s.trials}
    if handoff and handoff.get("lineage"):
        steps = [
            {"study": s["study"], "trial_id": s["trial_id"], "value": s.get("metric")}
            for s in handoff["lineage"]
        ]
        return {"exported": str(handoff.get("model_version", "")), "steps": steps}
    for study in reversed(studies):
        done = [t for t in study.trials if t.row.status == "COMPLETED" and t.row.reward is not None]
        if not done:
            continue
        best = max(done, key=lambda t: (t.row.reward or 0.0, -t.row.trial_id))
        steps, current = [], best
        while current is not None:
            steps.append(
                {
                    "study": current.spec.study if current.spec else study.name,
                    "trial_id": current.row.trial_id,
                    "value": current.row.value,
                }
            )
            spec = current.spec
            if spec is None or spec.source_study is None or spec.source_trial is None:
                break
            current = rows.get((spec.source_study, spec.source_trial))
        return {"exported": "", "steps": steps}
    return {"exported": "", "steps": []}


def page_data(
    spec: ExperimentSpec,
    uri: str,
    studies: Sequence[StudyData],
    handoff: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dictionary the report page draws from (see the module docstring).

    Args:
        spec: The experiment's spec (name, metric, algorithm, latency targets).
        uri: The experiment's URI, shown on the page.
        studies: ``collect(exp)``.
        handoff: The latest export's ``handoff.json`` data, if any (the lineage shown).
    """
    found = pairs(studies)
    tau = kendall_tau([p["proxy"] for p in found], [p["full"] for p in found]) if found else None
    return {
        "experiment": spec.name,
        "uri": uri,
        "metric": spec.objectives.metric,
        "algorithm": spec.algorithm.name,
        "latency_targets": [c.target for c in spec.objectives.constraints if c.measure == LATENCY],
        "studies": [_study_data(s) for s in studies],
        "lineage": lineage(studies, handoff),
        "pairs": found,
        "kendall_tau": tau,
    }


def to_json(data: Mapping[str, Any]) -> str:
    """``data`` as compact JSON safe inside an HTML ``<script>`` element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, default=str)
    return text.replace("<", "\\u003c")  # no "</script>" or "<!--" can end the element
