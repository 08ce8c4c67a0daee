"""The report stage: the experiment's HTML page and Markdown summary under ``reports/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfnas.config.studies import FINAL, PROXY, VALIDATION
from kfnas.store import Experiment, open_experiment


def report(experiment_uri: str, html_path: str = "", markdown_path: str = "") -> dict[str, Any]:
    """Writes the experiment's report (HTML page and Markdown summary) under ``reports/``.

    The report covers the proxy study and, once it has trials, the validation study, with the
    objective metric of each validated architecture after the proxy and after full training, and
    their rank correlation. Writing it again replaces it (it shows the records as they are).

    Args:
        experiment_uri: From ``init_experiment``.
        html_path: If set, a local file that also gets the HTML page (a KFP ``HTML`` artifact).
        markdown_path: If set, a local file that also gets the Markdown (a KFP ``Markdown``
            artifact).

    Returns:
        ``{"html": URI, "markdown": URI, "kendall_tau": float or None}``.
    """
    from kfnas.views.report import build_report, write_report  # matplotlib: only for reports.

    exp = open_experiment(experiment_uri)
    records = exp.records
    proxy = records.history(PROXY)
    validation = records.history(VALIDATION) if VALIDATION in exp.spec.studies else []
    metric = exp.spec.objectives.metric
    scores = {spec.trial_id: r.metrics.get(metric) for spec, r in proxy if r and r.completed}
    pairs = [
        (scores[spec.source_trial], r.metrics[metric])
        for spec, r in validation
        if r and r.completed and metric in r.metrics and scores.get(spec.source_trial) is not None
    ]
    built = build_report(
        exp.spec,
        proxy,
        validation or None,
        pairs=pairs if validation else None,
        refinements=_refinements(exp),
    )
    uris: dict[str, Any] = write_report(exp.store, exp.layout, built)
    for path, text in ((html_path, built.html), (markdown_path, built.markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    return {**uris, "kendall_tau": built.kendall_tau}


def _refinements(exp: Experiment) -> list[Any]:
    """The refinement studies between validation and final, with what each trial changed."""
    from kfnas.views.report import Refinement

    names = list(exp.spec.studies)
    if VALIDATION not in names or FINAL not in names:
        return []
    out = []
    for study in names[names.index(VALIDATION) + 1 : names.index(FINAL)]:
        history = exp.records.history(study)
        choices = {}
        for spec, _ in history:
            inherited = 0
            if spec.source_study:
                source = exp.records.read_spec(spec.source_study, spec.source_trial or 0)
                inherited = len(source.task_overrides)
            own = spec.task_overrides[inherited:]
            choices[spec.trial_id] = ", ".join(o.removeprefix("task.") for o in own) or "-"
        out.append(Refinement(study, exp.spec.studies[study].space, history, choices))
    return out
