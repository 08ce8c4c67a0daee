"""The proxy-task search page: how well each candidate proxy ranked the reference models.

``proxy_search_page(report, title=...)`` renders ``kfnas.stages.proxy_search``'s report: the best
candidate and the overrides that make it a search's proxy task, a table of the candidates (their
settings, how they ended, the steps and seconds they needed, their latency correlation), the
reference models, and two Plotly figures: each candidate's Kendall tau against the median model's
training time (left, with the target as a dashed line) and against the training step (right); and
each candidate's proxy scores against the full-training scores at the step it was judged.
Self-contained like the other tools' pages (``views/pages.py``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from kfnas.views.pages import page, plot_script

__all__ = ["proxy_search_page"]

#: How each stopping state reads on the page.
STATES = {
    "met_correlation": "met the target correlation",
    "met_accuracy": "met the target value",
    "exceeded_time_limit": "reached the time limit",
    "slower_than_best": "slower than the best",
    "not_met": "ended without meeting a target",
    "failed_latency_correlation": "met, but ranks latency poorly",
}

_CSS = """
tr.best td{background:#e8f5e9;font-weight:bold}
pre.overrides{background:#f6f7fb;border:1px solid #99a;padding:.5em;white-space:pre-wrap}
"""

_SCRIPT = plot_script(
    "proxy-correlation",
    empty="!DATA.candidates.some((c) => c.stats.some((s) => s.correlation !== null))",
    empty_note="No candidate had enough models at any step for a correlation.",
    draw=r"""
    const traces = [];
    for (const c of DATA.candidates) {
      const points = c.stats.filter((s) => s.correlation !== null);
      const text = points.map((s) => `step ${s.step}, ${s.pairs} models, p ${s.p_value}`);
      traces.push({type: "scatter", mode: "lines+markers", name: c.name, legendgroup: c.name,
        x: points.map((s) => s.median_seconds), y: points.map((s) => s.correlation), text,
        hovertemplate: "%{text}<extra>" + c.name + "</extra>"});
      traces.push({type: "scatter", mode: "lines+markers", name: c.name, legendgroup: c.name,
        showlegend: false, xaxis: "x2", yaxis: "y2",
        x: points.map((s) => s.step), y: points.map((s) => s.correlation), text,
        hovertemplate: "%{text}<extra>" + c.name + "</extra>"});
    }
    const target = DATA.targets.correlation;
    const line = (xref) => ({type: "line", xref: xref + " domain", x0: 0, x1: 1, yref:
      xref === "x" ? "y" : "y2", y0: target, y1: target, line: {dash: "dash", color: "#888"}});
    Plotly.newPlot(div, traces, {
      title: {text: "Kendall tau with the full-training scores, as the candidates train",
              x: 0.01, xanchor: "left", font: {size: 14}},
      grid: {rows: 1, columns: 2, pattern: "independent"},
      xaxis: {title: {text: "training seconds (median model)"}},
      xaxis2: {title: {text: "training step"}},
      yaxis: {title: {text: "Kendall tau"}, range: [-1.05, 1.05]},
      yaxis2: {range: [-1.05, 1.05]},
      shapes: [line("x"), line("x2")],
      hovermode: "closest", margin: {t: 40, r: 10}, height: 460,
    }, {displaylogo: false, responsive: true});
    const judged = DATA.candidates.filter((c) => c.scores.length);
    Plotly.newPlot(document.getElementById("proxy-scores"), judged.map((c) => ({
      type: "scatter", mode: "markers", marker: {size: 9},
      name: `${c.name} (step ${c.scores_step})`,
      x: c.scores.map((s) => s.full), y: c.scores.map((s) => s.proxy),
      text: c.scores.map((s) => "model " + s.model), hovertemplate: "%{text}<extra></extra>",
    })), {
      title: {text: "Proxy score against full-training score where each candidate was judged",
              x: 0.01, xanchor: "left", font: {size: 14}},
      xaxis: {title: {text: `full-training ${DATA.metric}`}},
      yaxis: {title: {text: `proxy ${DATA.metric}`}},
      hovermode: "closest", margin: {t: 40, r: 10}, height: 420,
    }, {displaylogo: false, responsive: true});
""",
)


def _fmt(value: Any, digits: int) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _row(c: Mapping[str, Any], best: Any) -> str:
    esc = html.escape
    marked = ' class="best"' if c["name"] == best else ""
    error = f" ({esc(c['error'])})" if c.get("error") else ""
    settings = ", ".join(f"{k}={v}" for k, v in c["settings"].items())
    return (
        f'<tr data-candidate="{esc(str(c["name"]))}"{marked}><td>{esc(str(c["name"]))}</td>'
        f"<td>{esc(settings)}</td><td>{esc(STATES.get(c['state'], c['state']))}{error}</td>"
        f"<td>{_fmt(c['final_steps'], 0)}</td><td>{_fmt(c['final_seconds'], 1)}</td>"
        f"<td>{_fmt(c['latency_correlation'], 3)}</td>"
        f"<td>{c['stopped_early']} of {c['trials']}</td><td>{c['failed']}</td></tr>"
    )


def proxy_search_page(report: Mapping[str, Any], *, title: str) -> str:
    """The self-contained HTML page of a proxy-task search.

    Args:
        report: ``{"metric", "targets": {"correlation", ...}, "references": [{"model",
            "selection_trial", "score", "latency_ms"}], "candidates": [{"name", "settings",
            "state", "stop_step", "final_steps", "final_seconds", "latency_correlation",
            "time_limit_s", "trials", "stopped_early", "failed", "error", "stats": [{"step",
            "pairs", "correlation", "p_value", "median_value", "median_seconds"}],
            "scores_step", "scores": [{"model", "proxy", "full"}]}], "best",
            "best_overrides"}``.
        title: The page's title.
    """
    esc = html.escape
    metric = str(report.get("metric") or "metric")
    candidates = list(report.get("candidates") or [])
    best = report.get("best")
    targets = dict(report.get("targets") or {})
    rows = "".join(_row(c, best) for c in candidates)
    references = "".join(
        f"<tr><td>{m['model']}</td><td>{_fmt(m['score'], 4)}</td>"
        f"<td>{_fmt(m.get('latency_ms'), 2)}</td></tr>"
        for m in report.get("references") or []
    )
    if best is None:
        verdict = (
            "<p>No candidate met a target: widen the grid (more steps, larger images, more "
            "data) or lower the target correlation.</p>"
        )
    else:
        overrides = "\n".join(f"--set {o}" for o in report.get("best_overrides") or [])
        verdict = (
            f"<p>Best: <b>{esc(str(best))}</b>, the cheapest candidate that met a target. Use "
            f'it as the search\'s proxy task:</p><pre class="overrides">{esc(overrides)}</pre>'
        )
    sections = [
        f"<header><h1>{esc(title)}</h1><p>{len(candidates)} candidate proxy tasks, each "
        f"retraining the reference models; target Kendall tau "
        f"{_fmt(targets.get('correlation'), 2)} with their full-training <b>{esc(metric)}</b>"
        f"</p></header>",
        f'<section id="best"><h2>Result</h2>{verdict}</section>',
        '<section id="candidates"><h2>Candidates</h2><div class="table-holder">'
        '<table class="trials"><thead><tr><th>candidate</th><th>settings</th><th>ended</th>'
        "<th>steps needed</th><th>seconds needed</th><th>latency tau</th>"
        f"<th>stopped early</th><th>failed</th></tr></thead><tbody>{rows}</tbody></table></div>"
        "</section>",
        '<section id="correlation"><h2>Correlation over training</h2>'
        '<noscript><p class="empty">Scripts are off: the plot needs them.</p></noscript>'
        '<div class="plot" id="proxy-correlation"></div>'
        '<div class="plot" id="proxy-scores"></div></section>',
        '<section id="references"><h2>Reference models</h2><div class="table-holder"><table>'
        f"<thead><tr><th>model</th><th>full-training {esc(metric)}</th><th>latency ms</th>"
        f"</tr></thead>{references}</table></div></section>",
    ]
    data = {"metric": metric, "targets": targets, "candidates": candidates}
    return page(title, sections, data, _SCRIPT, _CSS)
