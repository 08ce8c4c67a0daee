"""The ``report`` step: the experiment's HTML report and Markdown summary, shown in the KFP UI.

The stage writes both into the store's ``reports/`` folder and into this step's ``HTML`` and
``Markdown`` artifacts; Kendall's tau of proxy vs full-training scores goes to ``metrics``.
"""

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def report(
    experiment_uri: str, html: Output[HTML], markdown: Output[Markdown], metrics: Output[Metrics]
) -> str:
    """Writes the report; returns the URI of its HTML page in the store."""
    from kfnas import stages

    written = stages.report(experiment_uri, html_path=html.path, markdown_path=markdown.path)
    if written["kendall_tau"] is not None:
        metrics.log_metric("kendall_tau", written["kendall_tau"])
    return written["html"]
