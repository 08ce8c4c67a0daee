"""The ``select_models`` step: the model-selection iterations, their report in the KFP UI.

It runs as long as the iterations (see ``kfnas.stages.selection.select_models``), training each
iteration's models as trial jobs of the launcher ``launch_config`` names, like ``search_study``.
"""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_models(
    experiment_uri: str,
    parallelism: int,
    launch_config: str,
    run_id: str,
    html: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Selects the reference models; returns the URI of the report's JSON in the store."""
    import json

    from kfnas import stages

    report = stages.select_models(
        experiment_uri, int(parallelism), json.loads(launch_config), run_id, html_path=html.path
    )
    metrics.log_metric("selected_models", len(report["selected"]))
    return report["json"]
