"""The model-selection page: which reference models were kept, and how spread out they are.

``selection_page(report, title=...)`` renders ``kfnas.stages.selection``'s report: the selected
models with their full-training score and latency, a table of the iterations (models, training
step, removed, failed) and one Plotly plot of every iteration's models on metric against latency,
removed ones as crosses, the selected ones ringed. Self-contained like the other pages
(``views/pages.py``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from kfnas.views.pages import page, plot_script

__all__ = ["selection_page"]

_SCRIPT = plot_script(
    "selection-points",
    empty="!DATA.iterations.length",
    empty_note="No iteration finished.",
    draw=r"""
    const traces = [];
    for (const it of DATA.iterations) {
      for (const [kept, symbol] of [[true, "circle"], [false, "x"]]) {
        const ids = Object.keys(it.points).filter((t) => it.removed.includes(Number(t)) !== kept);
        if (!ids.length) continue;
        traces.push({
          type: "scatter", mode: "markers", marker: {symbol, size: 9},
          name: `iteration ${it.iteration} (step ${it.step})` + (kept ? "" : ": removed"),
          x: ids.map((t) => it.points[t][1]), y: ids.map((t) => it.points[t][0]),
          text: ids.map((t) => "trial " + t), hovertemplate: "%{text}<extra></extra>",
        });
      }
    }
    const latency = DATA.iterations.some((it) =>
      Object.values(it.points).some((p) => p[1] !== null));
    Plotly.newPlot(div, traces, {
      title: {text: `${DATA.metric} against latency, each iteration`, x: 0.01, xanchor: "left",
              font: {size: 14}},
      xaxis: {title: {text: latency ? "latency (ms)" : "no latency measured"}},
      yaxis: {title: {text: DATA.metric}},
      hovermode: "closest", margin: {t: 40, r: 10}, height: 480,
    }, {displaylogo: false, responsive: true});
""",
)


def _fmt(value: Any, digits: int) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def selection_page(report: Mapping[str, Any], *, title: str) -> str:
    """The self-contained HTML page of a model selection.

    Args:
        report: ``{"metric", "iterations": [{"iteration", "step", "models", "points": {trial:
            [metric, latency]}, "failed", "removed", "kept"}], "selected": [{"trial_id",
            "model", <metric>, "latency_ms"}]}``.
        title: The page's title.
    """
    esc = html.escape
    metric = str(report.get("metric") or "metric")
    iterations = list(report.get("iterations") or [])
    selected = list(report.get("selected") or [])
    rows = "".join(
        f'<tr data-trial="{s["trial_id"]}"><td>{s["trial_id"]}</td><td>{s["model"]}</td>'
        f"<td>{_fmt(s.get(metric), 4)}</td><td>{_fmt(s.get('latency_ms'), 2)}</td></tr>"
        for s in selected
    )
    steps = "".join(
        f"<tr><td>{it['iteration']}</td><td>{it['models']}</td><td>{it['step']}</td>"
        f"<td>{esc(', '.join(map(str, it['removed'])) or '-')}</td>"
        f"<td>{esc(', '.join(map(str, it['failed'])) or '-')}</td></tr>"
        for it in iterations
    )
    sections = [
        f"<header><h1>{esc(title)}</h1><p>{len(selected)} reference models of the space, "
        f"trained to the full budget, kept spread out in <b>{esc(metric)}</b> against latency "
        f"(the proxy-task search ranks proxy tasks against them)</p></header>",
        '<section id="selected"><h2>Selected models</h2><div class="table-holder">'
        '<table class="trials"><thead><tr><th>trial</th><th>model (first trial)</th>'
        f"<th>{esc(metric)}</th><th>latency ms</th></tr></thead><tbody>{rows}</tbody></table>"
        "</div></section>",
        '<section id="iterations"><h2>Iterations</h2><div class="table-holder"><table>'
        "<thead><tr><th>iteration</th><th>models</th><th>trained to step</th><th>removed</th>"
        f"<th>failed</th></tr></thead>{steps}</table></div></section>",
        '<section id="spread"><h2>Spread</h2>'
        '<noscript><p class="empty">Scripts are off: the plot needs them.</p></noscript>'
        '<div class="plot" id="selection-points"></div></section>',
    ]
    data = {"metric": metric, "iterations": iterations}
    return page(title, sections, data, _SCRIPT)
