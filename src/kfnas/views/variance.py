"""The proxy-task variance page: one self-contained HTML page of repeated trainings of one model.

``variance_page(summary, curves, title=...)`` renders a ``kfnas.search.proxy_stats``
``VarianceSummary.to_dict()`` and the repeats' evaluation curves: a header with the two verdicts
(variance and smoothness, each against its threshold, with its advice), a table of the repeats
and one Plotly plot of every repeat's curve (metric against training step).

Like the experiment report (``views/report.py``) the page fetches nothing: it holds its data once
(JSON), a short drawing script and plotly.js gzip-compressed and base64-encoded, unpacked in the
browser with ``DecompressionStream``. The verdicts and the table are server-side HTML, so a
browser without scripts still shows them; the script only draws the plot.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.views.pages import page, plot_script

__all__ = ["variance_page"]

_CSS = """
.verdicts{display:flex;flex-wrap:wrap;gap:1em;margin:.5em 0}
.verdict{border:1px solid #99a;border-radius:6px;padding:.5em 1em;background:#f6f7fb;
  flex:1 1 26em}
.verdict h2{margin:.2em 0;font-size:1.1em}
.verdict .value{font-size:1.4em;font-weight:bold}
.verdict.good{background:#e8f5e9;border-color:#4caf50}
.verdict.bad{background:#fdecea;border-color:#e57373}
.verdict.unknown{background:#f4f4f4;border-color:#bbb}
.verdict .advice{margin:.3em 0;color:#333}
table.trials.repeats{width:auto}
tr.left-out td{color:#888}
"""

# Draws every repeat's curve from #kfnas-data; plotly.js unpacks from #kfnas-plotly.
_SCRIPT = plot_script(
    "variance-curves",
    empty="!DATA.curves.length",
    empty_note="No evaluation curve to draw.",
    draw=r"""
    const traces = DATA.curves.map((c) => ({
      type: "scatter", mode: "lines+markers", connectgaps: true, name: "trial " + c.trial,
      x: c.steps, y: c.values,
    }));
    Plotly.newPlot(div, traces, {
      title: {text: `${DATA.metric} of each repeat by training step`, x: 0.01, xanchor: "left",
              font: {size: 14}},
      xaxis: {title: {text: "training step"}}, yaxis: {title: {text: DATA.metric}},
      hovermode: "closest", margin: {t: 40, r: 10}, height: 480,
    }, {displaylogo: false, responsive: true});
""",
)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, infinite, not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, digits: int) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.{digits}f}"


def _sort_key(trial: str) -> tuple[int, float, str]:
    try:
        return (0, float(trial), trial)
    except ValueError:
        return (1, 0.0, trial)


def _verdict(
    name: str, value: Any, threshold: Any, ok: Any, advice: Any, digits: int, what: str
) -> str:
    esc = html.escape
    shown = _fmt(value, digits)
    if not isinstance(ok, bool) or shown == "-":
        cls, word = "unknown", "not measured"
    else:
        cls, word = ("good", "good") if ok else ("bad", "too high")
    limit = _fmt(threshold, digits)
    return (
        f'<div class="verdict {cls}" id="verdict-{esc(name.lower())}"><h2>{esc(name)}: '
        f'<span class="word">{word}</span></h2>'
        f'<p><span class="value">{shown}</span> (good at most {limit}; {esc(what)})</p>'
        f'<p class="advice">{esc(str(advice or ""))}</p></div>'
    )


def _rows(summary: Mapping[str, Any], trials: Sequence[str]) -> list[tuple[str, Any, Any, bool]]:
    """(trial id, final value, smoothness, counted) per repeat: the summary's, then the rest."""
    finals = list(summary.get("final_values") or [])
    smooth = list(summary.get("smoothness_per_curve") or [])
    ids = [str(t) for t in summary.get("trial_ids") or []]
    if len(ids) != len(finals):  # a summary without trial ids: the curves' order, if it fits
        ids = (
            list(trials)
            if len(trials) == len(finals)
            else [f"#{i + 1}" for i in range(len(finals))]
        )
    smooth += [None] * (len(finals) - len(smooth))
    rows = [(t, f, s, True) for t, f, s in zip(ids, finals, smooth, strict=False)]
    rows += [(t, None, None, False) for t in trials if t not in ids]
    return rows


def _table(summary: Mapping[str, Any], trials: Sequence[str], metric: str) -> str:
    esc = html.escape
    rows = _rows(summary, trials)
    if not rows:
        return '<p class="empty">No repeat finished: nothing to tabulate.</p>'
    body = []
    for trial, final, smooth, counted in rows:
        cls = "" if counted else ' class="left-out"'
        note = "" if counted else " (not counted: no usable evaluation)"
        body.append(
            f'<tr{cls} data-trial="{esc(trial)}"><td>{esc(trial)}{esc(note)}</td>'
            f"<td>{_fmt(final, 4)}</td><td>{_fmt(smooth, 2)}</td></tr>"
        )
    return (
        '<div class="table-holder"><table class="trials repeats"><thead><tr><th>trial</th>'
        f"<th>final {esc(metric)}</th><th>smoothness</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _curve_data(curves: Mapping[str, Mapping[str, list]]) -> list[dict[str, Any]]:
    shown = []
    for key, curve in sorted(curves.items(), key=lambda item: _sort_key(str(item[0]))):
        trial = str(key)
        steps = list(curve.get("steps") or [])
        values = list(curve.get("values") or [])
        n = min(len(steps), len(values))
        shown.append(
            {
                "trial": trial,
                "steps": [_number(s) for s in steps[:n]],
                "values": [_number(v) for v in values[:n]],  # NaN: a gap, JSON null
            }
        )
    return shown


def variance_page(
    summary: Mapping[str, Any], curves: Mapping[str, Mapping[str, list]], *, title: str
) -> str:
    """The self-contained HTML page of a proxy-task variance measurement.

    Args:
        summary: ``VarianceSummary.to_dict()``; missing entries show as "-" / "not measured".
        curves: Trial id (str) -> ``{"steps": [...], "values": [...]}``: each repeat's evaluation
            curve. NaN values are drawn as gaps. A curve of a trial the summary does not count
            gets a table row saying so.
        title: The page's title (the experiment, say).
    """
    esc = html.escape
    metric = str(summary.get("metric") or "metric")
    data = {"metric": metric, "curves": _curve_data(curves)}
    trials = [c["trial"] for c in data["curves"]]
    repeats = len(summary.get("final_values") or [])
    verdicts = "".join(
        [
            _verdict(
                "Variance",
                summary.get("coefficient_of_variation"),
                summary.get("variance_threshold"),
                summary.get("variance_ok"),
                summary.get("variance_advice"),
                3,
                f"coefficient of variation std/|mean| of the {repeats} repeats' final {metric}",
            ),
            _verdict(
                "Smoothness",
                summary.get("smoothness"),
                summary.get("smoothness_threshold"),
                summary.get("smoothness_ok"),
                summary.get("smoothness_advice"),
                2,
                "mean over the repeats of |sum of the negative slopes| of the normalized curve",
            ),
        ]
    )
    info = f"metric <b>{esc(metric)}</b>; {repeats} repeat(s) of one architecture"
    body = [
        f"<header><h1>{esc(title)}</h1><p>{info}</p></header>",
        f'<section id="verdicts"><div class="verdicts">{verdicts}</div></section>',
        f'<section id="repeats"><h2>Repeats</h2>{_table(summary, trials, metric)}</section>',
        '<section id="curves"><h2>Evaluation curves</h2>'
        '<noscript><p class="empty">Scripts are off: the plot needs them.</p></noscript>'
        '<div class="plot" id="variance-curves"></div></section>',
    ]
    return page(title, body, data, _SCRIPT, _CSS)
