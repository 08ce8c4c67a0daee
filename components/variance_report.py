"""The ``variance_report`` step: the repeats' variance and smoothness, shown in the KFP UI.

The stage (``kfnas.stages.proxy.variance_report``) writes ``reports/variance.json`` and
``variance.html`` to the store and the page to this step's ``HTML`` artifact; the coefficient of
variation and the smoothness go to ``metrics``.
"""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def variance_report(experiment_uri: str, html: Output[HTML], metrics: Output[Metrics]) -> str:
    """Writes the variance report; returns the URI of its HTML page in the store."""
    from kfnas import stages

    written = stages.variance_report(experiment_uri, html_path=html.path)
    metrics.log_metric("coefficient_of_variation", written["coefficient_of_variation"])
    metrics.log_metric("smoothness", written["smoothness"])
    return written["html"]
