"""The ``search_proxy_tasks`` step: the candidates tried in turn, their report in the KFP UI.

It runs as long as the candidates' trainings (see ``kfnas.stages.proxy_search.
search_proxy_tasks``), training each candidate's models as trial jobs of the launcher
``launch_config`` names, like ``search_study``.
"""

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def search_proxy_tasks(
    experiment_uri: str,
    parallelism: int,
    launch_config: str,
    run_id: str,
    html: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Tries the candidate proxy tasks; returns the URI of the report's JSON in the store."""
    import json

    from kfnas import stages

    report = stages.search_proxy_tasks(
        experiment_uri, int(parallelism), json.loads(launch_config), run_id, html_path=html.path
    )
    succeeded = [c for c in report["candidates"] if c["name"] == report["best"]]
    metrics.log_metric("candidates", len(report["candidates"]))
    if succeeded:
        metrics.log_metric("best_final_steps", float(succeeded[0]["final_steps"]))
    return report["json"]
