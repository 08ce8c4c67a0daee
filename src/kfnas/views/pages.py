"""The shell of the proxy-task tools' pages: one self-contained HTML page with its plots.

``page(title, sections, data, script, css)`` wraps server-side HTML sections, the page's data
(JSON, ``#kfnas-data``), plotly.js (gzip-compressed and base64-encoded, as the experiment report
carries it: nothing is fetched) and a drawing script built by ``plot_script``: it shows a note when
there is nothing to draw or plotly.js cannot load, else runs the page's drawing statements (with
``DATA``, ``div`` and ``Plotly``), and sets ``document.body.dataset.ready`` when it is done (tests
wait for it).

To add a page: write its sections and its drawing statements (see ``views/variance.py``,
``views/selection.py``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.views.report import _asset, _plotly_gzip_base64
from kfnas.views.report_data import to_json

__all__ = ["page", "plot_script"]

_PRELUDE = """
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("kfnas-data").textContent);
  const div = document.getElementById("%(div)s");
  const note = (text) => {
    div.textContent = "";
    const p = document.createElement("p");
    p.className = "plot-note";
    p.textContent = text;
    div.appendChild(p);
  };
  async function loadPlotly() {
    if (window.Plotly) return;
    if (typeof DecompressionStream === "undefined") {
      throw new Error("this browser cannot unpack the plots (it lacks DecompressionStream)");
    }
    const base64 = document.getElementById("kfnas-plotly").textContent.trim();
    const packed = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const unpacked = new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip"));
    const text = await new Response(unpacked).text();
    (0, eval)(text);
  }
"""


def plot_script(div_id: str, *, empty: str, empty_note: str, draw: str) -> str:
    """The page's script: load plotly.js and draw the plot in ``#div_id``.

    Args:
        div_id: The plot's element.
        empty: A JavaScript expression over ``DATA``, true when there is nothing to draw (the
            plot then shows ``empty_note``).
        empty_note: What the plot says when ``empty`` holds.
        draw: JavaScript statements drawing with ``Plotly`` into ``div`` from ``DATA``.
    """
    return (
        _PRELUDE % {"div": div_id}
        + f"""  async function main() {{
    if ({empty}) {{
      note({json.dumps(empty_note)});
      document.body.dataset.ready = "1";
      return;
    }}
    try {{
      await loadPlotly();
    }} catch (e) {{
      note("Plots unavailable: " + e.message);
      document.body.dataset.ready = "error";
      return;
    }}
{draw}
    document.body.dataset.ready = "1";
  }}
  main();
}})();
"""
    )


def page(
    title: str, sections: Sequence[str], data: Mapping[str, Any], script: str, css: str = ""
) -> str:
    """The whole page: the report's stylesheet plus ``css``, ``sections``, data and plotly."""
    esc = html.escape
    body = [
        *sections,
        f'<script type="application/json" id="kfnas-data">{to_json(data)}</script>',
        f'<script type="text/plain" id="kfnas-plotly">{_plotly_gzip_base64()}</script>',
        f"<script>{script}</script>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_asset('report.css')}{css}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
