"""The report stage: the experiment's HTML page and Markdown summary under ``reports/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfnas.store import open_experiment


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
    from kfnas.views.report import render_experiment, write_report  # plots: only for reports.

    exp = open_experiment(experiment_uri)
    built = render_experiment(exp)
    uris: dict[str, Any] = write_report(exp.store, exp.layout, built)
    for path, text in ((html_path, built.html), (markdown_path, built.markdown)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
    return {**uris, "kendall_tau": built.kendall_tau}
