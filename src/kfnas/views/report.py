"""The experiment's report: one self-contained interactive HTML page and a Markdown summary.

``render_experiment(exp)`` reads the store (``views/report_data.py``: every study of the chain,
each trial's row, decisions, curves, and the exported model's lineage) and builds a ``Report``;
``write_report`` stores it under ``ExperimentLayout.reports_dir()``, where the KFP UI shows the
page as the run's HTML artifact and ``kfnas dashboard`` serves it live.

The page works offline and inside the KFP UI's HTML viewer: nothing is fetched. It holds the
page data once (JSON), the drawing script (``assets/report.js``) and plotly.js from the pinned
``plotly`` package, gzip-compressed and base64-encoded (1.9 MB instead of 4.8 MB) and unpacked in
the browser with ``DecompressionStream``. The server-side HTML already shows each study's counts,
failures and the chain and lineage diagram, so a browser without scripts still gets a page; the
script adds the sortable, filterable trials tables and the plots.

Size: plotly.js and the page's own code take about 2 MB; each trial adds roughly 0.3 KB plus its
curves (at most ``report_data.CURVE_POINTS`` steps per split): about 4 MB for 1,000 trials.

To add a section: draw it in ``assets/report.js`` from the page data (add what it needs in
``report_data.page_data``) and give it a container in ``_study_html`` or ``_page``.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import gzip
import html
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from kfnas.records.trial import TrialStatus
from kfnas.store import ArtifactStore, Experiment, ExperimentLayout
from kfnas.views.report_data import StudyData, collect, page_data, to_json
from kfnas.views.rows import PENDING, measure_cells, measure_headers

__all__ = ["Report", "build_report", "render_experiment", "write_report"]

_TOP_K = 10
_REASON_CHARS = 160
_ARROW = '<span class="arrow">&rarr;</span>'


@dataclasses.dataclass(frozen=True)
class Report:
    """A rendered experiment report.

    Attributes:
        html: The self-contained interactive page.
        markdown: A Markdown summary: per study, status counts, the top candidates and failures.
        kendall_tau: Kendall rank correlation of proxy vs full-training scores, or ``None`` when
            fewer than 2 pairs exist or it is undefined (all scores tied).
        data: The page data the page draws from (``report_data.page_data``).
    """

    html: str
    markdown: str
    kendall_tau: float | None
    data: Mapping[str, Any]


@functools.cache
def _plotly_gzip_base64() -> str:
    from plotly.offline import get_plotlyjs

    packed = gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)
    return base64.b64encode(packed).decode("ascii")


@functools.cache
def _asset(name: str) -> str:
    return (resources.files("kfnas.views") / "assets" / name).read_text(encoding="utf-8")


def _latest_handoff(exp: Experiment) -> dict[str, Any] | None:
    """The newest export's manifest data, or ``None`` before any export (or if unreadable)."""
    from kfnas.export.handoff import HandoffError, HandoffNotFoundError, read_handoff

    if not exp.store.exists(exp.layout.export_latest()):
        return None
    try:
        return read_handoff(exp.store.uri(exp.layout.export_latest())).to_dict()
    except (HandoffError, HandoffNotFoundError, OSError):
        return None


def render_experiment(exp: Experiment, *, with_curves: bool = True) -> Report:
    """The report of an opened experiment, from what its store holds now.

    Args:
        exp: The experiment.
        with_curves: Read each finished trial's training curves from its TensorBoard logs.
    """
    studies = collect(exp, with_curves=with_curves)
    return build_report(page_data(exp.spec, exp.uri, studies, _latest_handoff(exp)), studies)


def build_report(data: Mapping[str, Any], studies: Sequence[StudyData]) -> Report:
    """The page and the Markdown of page data ``data`` gathered from ``studies``."""
    return Report(
        html=_page(data),
        markdown=_markdown(data, studies),
        kendall_tau=data["kendall_tau"],
        data=data,
    )


# ---- Markdown ------------------------------------------------------------------------------


def _md(text: str) -> str:
    return html.escape(text).replace("|", "\\|")


def _reason(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def tau_text(tau: float | None, n: int) -> str:
    """Kendall's tau as the report states it, or why it is not there."""
    if tau is not None:
        return f"Kendall tau = {tau:.3f} over {n} candidates"
    if n < 2:
        return f"Kendall tau not computed: {n} pair(s), at least 2 are needed"
    return "Kendall tau undefined: the scores of one side are all tied"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{s}: {n}" for s, n in counts.items() if s != PENDING or n)


def _markdown(data: Mapping[str, Any], studies: Sequence[StudyData]) -> str:
    metric = data["metric"]
    lines = [f"# kfnas report: {_md(data['experiment'])}", ""]
    lines += [f"Metric: {_md(metric)}; algorithm: {_md(data['algorithm'])}", ""]
    for study, shown in zip(studies, data["studies"], strict=True):
        rows = [t.row for t in study.trials]
        lines += [f"## Study {_md(study.name)} ({_md(study.space)})", ""]
        lines += [f"Trials: {_counts(shown['counts'])}", ""]
        done = [r for r in rows if r.status == TrialStatus.COMPLETED.value and r.reward is not None]
        done.sort(key=lambda r: (-(r.reward or 0.0), r.trial_id))
        changes = {t.row.trial_id: t.change for t in study.trials}
        headers = ["rank", "trial id", "round", "status", *measure_headers(metric)]
        if any(changes.values()):
            headers.append("change")
        lines += [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}"]
        for rank, r in enumerate(done[:_TOP_K], 1):
            cells = [str(rank), str(r.trial_id), str(r.round), r.status, *measure_cells(r)]
            if "change" in headers:
                cells.append(changes[r.trial_id] or "-")
            lines.append(f"| {' | '.join(_md(c) for c in cells)} |")
        if not done:
            lines += ["", "_No completed trial yet._"]
        bad = [r for r in rows if r.status not in (TrialStatus.COMPLETED.value, PENDING)]
        if bad:
            lines += ["", "Failed and infeasible trials:", ""]
            lines += [f"- trial {r.trial_id} ({r.status}): {_md(_reason(r.error))}" for r in bad]
        lines.append("")
    if data["pairs"] or any(s["name"] == "validation" for s in data["studies"]):
        text = tau_text(data["kendall_tau"], len(data["pairs"]))
        lines += ["## Proxy vs full training", "", text, ""]
    return "\n".join(lines)


# ---- HTML ----------------------------------------------------------------------------------


def _chain_html(data: Mapping[str, Any]) -> str:
    esc = html.escape
    boxes = []
    for s in data["studies"]:
        total = sum(s["counts"].values())
        done = s["counts"].get(TrialStatus.COMPLETED.value, 0)
        boxes.append(
            f'<a class="box" href="#study-{esc(s["name"])}"><b>{esc(s["name"])}</b>'
            f"<span>{esc(s['space'])}</span><span>{done} of {total} completed</span></a>"
        )
    chain = _ARROW.join(boxes)
    lineage = data["lineage"]
    if lineage["steps"]:
        steps = []
        for step in reversed(lineage["steps"]):
            value = step.get("value")
            shown = f"{data['metric']} {value:.4f}" if isinstance(value, int | float) else ""
            steps.append(
                f'<span class="box"><b>{esc(step["study"])} trial {step["trial_id"]}</b>'
                f"<span>{esc(shown)}</span></span>"
            )
        if lineage["exported"]:
            version = esc(lineage["exported"])
            steps.append(f'<span class="box export"><b>export {version}</b></span>')
            what = f"Lineage of the exported model {version}"
        else:
            what = "Lineage of the best candidate so far (no model exported yet)"
        line = f'<p>{what}:</p><div class="chain">{_ARROW.join(steps)}</div>'
    else:
        line = '<p class="empty">No completed trial yet: no lineage to show.</p>'
    return f'<div class="chain">{chain}</div>{line}'


def _study_html(study: Mapping[str, Any]) -> str:
    esc = html.escape
    name = esc(study["name"])
    counts = study["counts"]
    parts = [
        f'<section class="study" id="study-{name}" data-study="{name}">',
        f"<h2>Study {name} <small>{esc(study['space'])}, {esc(study['algorithm'])}</small></h2>",
        f'<p class="counts">Trials: {esc(_counts(counts))}</p>',
    ]
    if not study["trials"]:
        parts.append('<p class="empty">Not started: no trial yet.</p>')
    else:
        if not counts.get(TrialStatus.COMPLETED.value):
            parts.append('<p class="empty">No finished trial yet: plots appear as trials end.</p>')
        parts.append('<div class="table-holder"></div><div class="plots"></div>')
    bad = [t for t in study["trials"] if t["status"] not in (TrialStatus.COMPLETED.value, PENDING)]
    if bad:
        items = "".join(
            f"<li>trial {t['trial_id']} ({esc(t['status'])}): {esc(_reason(t['error']))}</li>"
            for t in bad
        )
        parts.append(
            f"<details><summary>Failed, infeasible and corrupt trials ({len(bad)})</summary>"
            f"<ul>{items}</ul></details>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _page(data: Mapping[str, Any]) -> str:
    esc = html.escape
    name = esc(data["experiment"])
    nav = " ".join(
        f'<a href="#study-{esc(s["name"])}">{esc(s["name"])}</a>' for s in data["studies"]
    )
    info = (
        f"metric <b>{esc(data['metric'])}</b>; algorithm <b>{esc(data['algorithm'])}</b>; "
        f"store <code>{esc(data['uri'])}</code>"
    )
    pairs = ""
    if data["pairs"] or any(s["name"] == "validation" for s in data["studies"]):
        text = esc(tau_text(data["kendall_tau"], len(data["pairs"])))
        pairs = (
            f'<section id="pairs"><h2>Proxy vs full training</h2><p class="tau">{text}</p>'
            '<div class="plot plot-pairs"></div></section>'
        )
    body = [
        f"<header><h1>kfnas report: {name}</h1><p>{info}</p><nav>{nav}</nav></header>",
        '<noscript><p class="empty">Scripts are off: tables and plots need them.</p></noscript>',
        f'<section id="overview"><h2>Studies and lineage</h2>{_chain_html(data)}</section>',
        *(_study_html(s) for s in data["studies"]),
        pairs,
        f'<script type="application/json" id="kfnas-data">{to_json(data)}</script>',
        f'<script type="text/plain" id="kfnas-plotly">{_plotly_gzip_base64()}</script>',
        f"<script>{_asset('report.js')}</script>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>kfnas report: {name}</title><style>{_asset('report.css')}</style></head>\n"
        "<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )


def write_report(store: ArtifactStore, layout: ExperimentLayout, report: Report) -> dict[str, str]:
    """Writes the report under the experiment's reports folder, replacing an older one.

    Returns:
        ``{"html": URI of reports/report.html, "markdown": URI of reports/top_candidates.md}``.
    """
    paths = {"html": layout.report_html(), "markdown": layout.report_markdown()}
    store.write_text(paths["html"], report.html)
    store.write_text(paths["markdown"], report.markdown)
    return {kind: store.uri(path) for kind, path in paths.items()}
