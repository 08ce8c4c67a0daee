"""Human-readable reports of an experiment: one self-contained HTML page and a Markdown summary.

``build_report`` turns an experiment spec and the trial histories of its studies (as
``TrialRecords.history`` returns them) into a ``Report``; ``write_report`` stores it under
``ExperimentLayout.reports_dir()``. Everything here is a pure function of its inputs: no kfp, no
TensorFlow, no store reads. Plots are drawn with matplotlib's object API (``Figure``, rendered by
Agg, no pyplot global state) and embedded in the page as base64 PNG, so the page opens anywhere
(KFP's HTML viewer, a browser, an e-mail).

The proxy-vs-full-training comparison takes explicit ``pairs`` of (proxy score, full-training
score), one per validated candidate, so this module does not depend on how the validation study
records which proxy trial a candidate came from; the caller (the ``report`` stage) builds them.

To add a plot: write a ``_plot_<what>(...) -> Figure`` function that draws on a new ``Figure``
and append ``(caption, figure)`` to the list built in ``_figures``; it is encoded and embedded
for you. The candidates tables' measured columns are every trial table's (``views/rows.py``).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence

from matplotlib import colormaps
from matplotlib.figure import Figure

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.search.ranking import kendall_tau, pareto_front
from kfnas.store import ArtifactStore, ExperimentLayout
from kfnas.views.rows import PENDING, TrialRow, measure_cells, measure_headers, trial_row

__all__ = ["Report", "build_report", "kendall_tau", "pareto_front", "write_report"]

History = Sequence[tuple[TrialSpec, TrialResult | None]]

LATENCY = "latency_ms"
# The row's values that must be finite numbers to be shown or plotted.
_MEASURED = ("value", "reward", "latency_ms", "flops", "params")
_STATUSES = [s.value for s in TrialStatus] + [PENDING]
_REASON_CHARS = 160


@dataclasses.dataclass(frozen=True)
class Report:
    """A rendered experiment report.

    Attributes:
        html: A self-contained HTML page (plots embedded as base64 PNG).
        markdown: A Markdown summary: status counts, the top-candidates table, failure reasons.
        kendall_tau: Kendall rank correlation of proxy vs full-training scores, or ``None`` when
            fewer than 2 pairs were given or it is undefined (all scores tied).
    """

    html: str
    markdown: str
    kendall_tau: float | None


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _rows(history: History, metric: str) -> list[TrialRow]:
    """The trials by id; values that are not finite numbers are left out (shown as ``-``)."""
    rows = []
    for spec, res in sorted(history, key=lambda pair: pair[0].trial_id):
        row = trial_row(spec.trial_id, res, metric, spec)
        finite = {name: _finite(getattr(row, name)) for name in _MEASURED}
        rows.append(dataclasses.replace(row, **finite))
    return rows


def _ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """COMPLETED trials by reward, best first; ties by trial id."""
    done = [r for r in rows if r.status == TrialStatus.COMPLETED.value and r.reward is not None]
    return sorted(done, key=lambda r: (-(r.reward or 0.0), r.trial_id))


def _table(
    rows: list[TrialRow], metric: str, choices: Mapping[int, str] | None = None
) -> tuple[list[str], list[list[str]]]:
    headers = ["rank", "trial id", "round", "status", *measure_headers(metric)]
    cells = [
        [str(rank), str(r.trial_id), str(r.round), r.status, *measure_cells(r)]
        for rank, r in enumerate(rows, 1)
    ]
    if choices is None:
        return headers, cells
    return [*headers, "choice"], [
        [*row, choices.get(r.trial_id, "-")] for row, r in zip(cells, rows, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class Refinement:
    """A refinement study (scaling, augmentation) as the report shows it.

    Attributes:
        study: The study's name.
        space: Its space.
        history: ``TrialRecords.history(study)``.
        choices: Trial id -> what the trial changed (its own task overrides, as text).
    """

    study: str
    space: str
    history: History
    choices: Mapping[int, str]


def _reason(row: TrialRow) -> str:
    text = " ".join(row.error.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _study_info(spec: ExperimentSpec, study: str, history: History) -> tuple[str, str]:
    """The (space, algorithm) of a study, from the spec or, failing that, from its trials."""
    try:
        resolved = spec.study(study)
        space = resolved.space
        algorithm = resolved.algorithm.name if resolved.algorithm else spec.algorithm.name
    except SpecError:
        space, algorithm = "", spec.algorithm.name
    if not space and history:
        space = history[0][0].space
    return space or "-", algorithm


# ---- Plots ---------------------------------------------------------------------------------


def _plot_by_trial(rows: list[TrialRow], metric: str) -> Figure:
    """Reward and the quality metric by trial id, coloured by round; failures on the x axis."""
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    rounds = sorted({r.round for r in rows})
    colors = {rnd: colormaps["tab10"](i % 10) for i, rnd in enumerate(rounds)}
    marks = {TrialStatus.FAILED.value: ("x", "red"), TrialStatus.INFEASIBLE.value: ("^", "orange")}
    getters: list[Callable[[TrialRow], float | None]] = [lambda r: r.reward, lambda r: r.value]
    for ax, name, get in zip(axes, ["reward", metric], getters, strict=True):
        for rnd, color in colors.items():
            pts = [(r.trial_id, get(r)) for r in rows if r.round == rnd and get(r) is not None]
            if pts:
                ax.scatter(*zip(*pts, strict=True), color=color, label=f"round {rnd}")
        for status, (marker, color) in marks.items():
            ids = [r.trial_id for r in rows if r.status == status]
            style = {"marker": marker, "color": color, "label": status.lower(), "clip_on": False}
            if ids:  # On the x axis (axes y = 0) whatever the data range.
                ax.scatter(ids, [0] * len(ids), transform=ax.get_xaxis_transform(), **style)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("trial id")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="best", fontsize="small")
    fig.suptitle(f"Reward and {metric} by trial")
    return fig


def _plot_pareto(rows: list[TrialRow], metric: str, targets: list[float]) -> Figure:
    """The quality metric against latency, with the Pareto front and the latency targets."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    measured = [r for r in rows if r.value is not None and r.latency_ms is not None]
    points = [(r.value or 0.0, r.latency_ms or 0.0) for r in measured]
    front = pareto_front(points)
    if points:
        ys, xs = zip(*points, strict=True)
        ax.scatter(xs, ys, color="tab:blue", alpha=0.6, label="trials")
        line = sorted((points[i][1], points[i][0]) for i in front)
        style = {"where": "post", "color": "tab:red", "marker": "o"}
        ax.step(*zip(*line, strict=True), label="Pareto front", **style)
        for i in front:
            label = {"textcoords": "offset points", "xytext": (4, 4), "fontsize": "small"}
            ax.annotate(str(measured[i].trial_id), (xs[i], ys[i]), **label)
    else:
        text = f"no trial has both {metric} and {LATENCY}"
        ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes)
    for target in targets:
        ax.axvline(target, color="gray", linestyle="--", label=f"latency target {target:g} ms")
    ax.set(xlabel="latency (ms)", ylabel=metric, title=f"{metric} vs latency")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    return fig


def _plot_ranked(rows: list[TrialRow], metric: str, choices: Mapping[int, str]) -> Figure:
    """The completed trials of a refinement study ranked by ``metric``, labelled by choice."""
    ranked = sorted(
        (r for r in rows if r.value is not None), key=lambda r: (-(r.value or 0.0), r.trial_id)
    )[:20]
    fig = Figure(figsize=(8, 1.2 + 0.35 * max(len(ranked), 1)), layout="constrained")
    ax = fig.subplots()
    if ranked:
        labels = [f"{r.trial_id}: {choices.get(r.trial_id, '-')}"[:80] for r in ranked]
        ax.barh(range(len(ranked)), [r.value or 0.0 for r in ranked], color="tab:purple")
        ax.set_yticks(range(len(ranked)), labels, fontsize="x-small")
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, f"no trial has {metric} yet", ha="center", transform=ax.transAxes)
    ax.set(xlabel=metric, title=f"Choices ranked by {metric}")
    ax.grid(alpha=0.3, axis="x")
    return fig


def _tau_text(tau: float | None, n: int) -> str:
    if tau is not None:
        return f"Kendall tau = {tau:.3f} over {n} candidates"
    if n < 2:
        return f"Kendall tau not computed: {n} pair(s), at least 2 are needed"
    return "Kendall tau undefined: the scores of one side are all tied"


def _plot_pairs(pairs: Sequence[tuple[float, float]], tau: float | None) -> Figure:
    """Proxy score against full-training score of the validated candidates."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], color="tab:green")
    title = f"Proxy vs full training: {_tau_text(tau, len(pairs))}"
    ax.set(xlabel="proxy score", ylabel="full-training score", title=title)
    ax.grid(alpha=0.3)
    return fig


def _png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# ---- Rendering -----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return html.escape(text).replace("|", "\\|")


@dataclasses.dataclass(frozen=True)
class _Section:
    """One study's part of the report, before it is rendered as Markdown or HTML."""

    title: str
    counts: str
    headers: list[str]
    cells: list[list[str]]
    failures: list[str]

    @classmethod
    def of(
        cls,
        title: str,
        rows: list[TrialRow],
        metric: str,
        top_k: int,
        choices: Mapping[int, str] | None = None,
    ) -> _Section:
        counts = {s: sum(r.status == s for r in rows) for s in _STATUSES}
        text = ", ".join(f"{s}: {n}" for s, n in counts.items() if s != PENDING or n)
        headers, cells = _table(_ranked(rows)[:top_k], metric, choices)
        bad = [r for r in rows if r.status not in (TrialStatus.COMPLETED.value, PENDING)]
        failures = [f"trial {r.trial_id} ({r.status}): {_reason(r)}" for r in bad]
        return cls(title, text, headers, cells, failures)

    def markdown(self) -> list[str]:
        lines = [f"## {_md_cell(self.title)}", "", f"Trials: {self.counts}", ""]
        lines += [f"| {' | '.join(self.headers)} |", f"|{'---|' * len(self.headers)}"]
        lines += [f"| {' | '.join(_md_cell(c) for c in row)} |" for row in self.cells]
        if not self.cells:
            lines += ["", "_No completed trial yet._"]
        if self.failures:
            lines += ["", "Failed and infeasible trials:", ""]
            lines += [f"- {_md_cell(f)}" for f in self.failures]
        return [*lines, ""]

    def html(self) -> str:
        esc = html.escape
        parts = [f"<h2>{esc(self.title)}</h2>", f"<p>Trials: {esc(self.counts)}</p>"]
        if self.cells:
            rows = [self.headers, *self.cells]
            tags = ["th"] + ["td"] * len(self.cells)
            trs = (
                "".join(f"<{t}>{esc(c)}</{t}>" for c in r) for t, r in zip(tags, rows, strict=True)
            )
            parts.append("<table>" + "".join(f"<tr>{tr}</tr>" for tr in trs) + "</table>")
        else:
            parts.append("<p><em>No completed trial yet.</em></p>")
        if self.failures:
            items = "".join(f"<li>{esc(f)}</li>" for f in self.failures)
            parts.append(f"<p>Failed and infeasible trials:</p><ul>{items}</ul>")
        return "\n".join(parts)


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:70em}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}th{background:#eee}img{max-width:100%}"
)


def _figures(
    rows: list[TrialRow],
    spec: ExperimentSpec,
    pairs: list[tuple[float, float]] | None,
    tau: float | None,
) -> list[tuple[str, Figure]]:
    """The plots of the page, as (caption, figure), in page order."""
    metric = spec.objectives.metric
    targets = [c.target for c in spec.objectives.constraints if c.measure == LATENCY]
    figures = [
        (f"Reward and {metric} by trial id", _plot_by_trial(rows, metric)),
        (f"{metric} vs latency, Pareto front", _plot_pareto(rows, metric, targets)),
    ]
    if pairs:
        figures.append(("Proxy vs full-training score", _plot_pairs(pairs, tau)))
    return figures


def build_report(
    exp_spec: ExperimentSpec,
    proxy_history: History,
    validation_history: History | None = None,
    *,
    pairs: Sequence[tuple[float, float]] | None = None,
    proxy_study: str = "proxy",
    validation_study: str = "validation",
    top_k: int = 10,
    refinements: Sequence[Refinement] = (),
) -> Report:
    """Builds the report of an experiment from its trial records.

    Args:
        exp_spec: The experiment's resolved spec (name, objective metric, constraints, studies).
        proxy_history: ``TrialRecords.history(proxy_study)``: (spec, result or ``None``) pairs.
        validation_history: ``TrialRecords.history(validation_study)``, if that study ran; its
            counts, candidates table and failures get their own section.
        pairs: ``(proxy score, full-training score)``, one per validated candidate, for the
            proxy-vs-full-training plot and Kendall's tau. The caller matches each validation
            trial to the proxy trial it came from, so this module does not depend on how that
            link is recorded. ``None``: no comparison section.
        proxy_study: Name of the proxy study, for headings and its space and algorithm.
        validation_study: Name of the validation study, for headings.
        top_k: How many candidates the tables list.
        refinements: The refinement studies that ran (scaling, augmentation), in chain order;
            each gets a section (its candidates with what each changed), its metric against
            latency with the latency targets marked, and its choices ranked by the metric.

    Returns:
        The report; ``kendall_tau`` is ``None`` without at least 2 pairs.
    """
    metric = exp_spec.objectives.metric
    rows = _rows(proxy_history, metric)
    pairs = [(float(p), float(f)) for p, f in pairs] if pairs is not None else None
    tau = kendall_tau([p for p, _ in pairs], [f for _, f in pairs]) if pairs else None
    space, algorithm = _study_info(exp_spec, proxy_study, proxy_history)
    name = exp_spec.name

    sections = [_Section.of(f"Top candidates of study {proxy_study}", rows, metric, top_k)]
    if validation_history is not None:
        v_rows = _rows(validation_history, metric)
        sections.append(_Section.of(f"Study {validation_study}", v_rows, metric, top_k))
    refined = [(r, _rows(r.history, metric)) for r in refinements]
    for r, r_rows in refined:
        title = f"Study {r.study} ({r.space})"
        sections.append(_Section.of(title, r_rows, metric, top_k, r.choices))
    info = {"Space": space, "algorithm": algorithm, "metric": metric}
    md = [f"# kfnas report: {_md_cell(name)}", ""]
    md += ["; ".join(f"{k}: {_md_cell(v)}" for k, v in info.items()), ""]
    body = [f"<h1>kfnas report: {html.escape(name)}</h1>"]
    body.append(
        "<p>"
        + "; ".join(f"{k}: <strong>{html.escape(v)}</strong>" for k, v in info.items())
        + "</p>"
    )
    for section in sections:
        md += section.markdown()
        body.append(section.html())
    if pairs is not None or validation_history is not None:
        tau_text = _tau_text(tau, len(pairs or []))
        if pairs is None:
            tau_text = "Kendall tau not computed: no proxy/full-training pairs were given"
        md += ["## Proxy vs full training", "", tau_text, ""]
        body.append(f"<h2>Proxy vs full training</h2><p>{html.escape(tau_text)}</p>")
    body.append("<h2>Plots</h2>")
    figures = _figures(rows, exp_spec, pairs, tau)
    targets = [c.target for c in exp_spec.objectives.constraints if c.measure == LATENCY]
    for r, r_rows in refined:
        figures.append((f"{r.study}: {metric} vs latency", _plot_pareto(r_rows, metric, targets)))
        figures.append((f"{r.study}: choices ranked", _plot_ranked(r_rows, metric, r.choices)))
    for caption, fig in figures:
        body.append(
            f'<figure><img alt="{html.escape(caption)}" '
            f'src="data:image/png;base64,{_png_base64(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>kfnas report: {html.escape(name)}</title><style>{_STYLE}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    return Report(html=page, markdown="\n".join(md), kendall_tau=tau)


def write_report(store: ArtifactStore, layout: ExperimentLayout, report: Report) -> dict[str, str]:
    """Writes the report under the experiment's reports folder, replacing an older one.

    Returns:
        ``{"html": URI of reports/report.html, "markdown": URI of reports/top_candidates.md}``.
    """
    paths = {
        "html": layout.report_html(),
        "markdown": layout.report_markdown(),
    }
    store.write_text(paths["html"], report.html)
    store.write_text(paths["markdown"], report.markdown)
    return {kind: store.uri(path) for kind, path in paths.items()}
