"""KFP components of kfnas, shipped in the distribution as ``kfnas.components``.

Each component is a thin lightweight KFP component (about ten lines) over the function of the same
name in ``kfnas.stages``, running on the project image (``_image.IMAGE``), with the stage's
parameters (a stage's ``<name>_path`` parameter is the component's output artifact ``<name>``).
Only this package and ``kfnas.pipelines`` import kfp.

To add a component: write ``components/<stage>.py`` with one
``@dsl.component(base_image=IMAGE, install_kfp_package=False)`` whose body imports ``kfnas.stages``
and calls the stage of the same name, and add it to ``COMPONENTS`` below.
"""

from kfnas.components.export_model import export_model
from kfnas.components.init_experiment import init_experiment
from kfnas.components.init_model_selection import init_model_selection
from kfnas.components.init_proxy_search import init_proxy_search
from kfnas.components.init_retraining import init_retraining
from kfnas.components.init_variance import init_variance
from kfnas.components.launch_trial import launch_trial
from kfnas.components.measure_trials import measure_trials
from kfnas.components.propose_retraining import propose_retraining
from kfnas.components.publish_if_not_worse import publish_if_not_worse
from kfnas.components.report import report
from kfnas.components.run_trial import run_trial
from kfnas.components.search_proxy_tasks import search_proxy_tasks
from kfnas.components.search_study import search_study
from kfnas.components.select_models import select_models
from kfnas.components.select_top import select_top
from kfnas.components.select_winner import select_winner
from kfnas.components.variance_report import variance_report

#: Every component by the name of the stage it runs.
COMPONENTS = {
    component.name.replace("-", "_"): component
    for component in (
        init_experiment,
        search_study,
        run_trial,
        launch_trial,
        measure_trials,
        select_top,
        propose_retraining,
        select_winner,
        report,
        export_model,
        init_retraining,
        publish_if_not_worse,
        init_variance,
        variance_report,
        init_model_selection,
        select_models,
        init_proxy_search,
        search_proxy_tasks,
    )
}

__all__ = [
    "COMPONENTS",
    "export_model",
    "init_experiment",
    "init_model_selection",
    "init_proxy_search",
    "init_retraining",
    "init_variance",
    "launch_trial",
    "measure_trials",
    "propose_retraining",
    "publish_if_not_worse",
    "report",
    "run_trial",
    "search_proxy_tasks",
    "search_study",
    "select_models",
    "select_top",
    "select_winner",
    "variance_report",
]
