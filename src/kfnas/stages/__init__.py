"""Pipeline stages: plain functions over the store, one per pipeline step.

Stages take and return ids and URIs, never large data: the store is the single source of truth.
Each stage opens the experiment (``kfnas.store.open_experiment``) at its start and writes once at
its end; no stage calls another (what they share is in ``_common``), and every stage is safe to
run again (a resubmitted pipeline resumes instead of redoing work). KFP components are thin
wrappers over these functions; ``kfnas`` commands call them directly.

The search pipeline calls ``init_experiment``; ``search_study`` for the proxy study (the search
controller: it proposes and runs trials, each trial job running ``run_trial`` through
``kfnas.stages.worker``); ``select_top``; ``propose_retraining`` of the best proxy trials into
``validation`` and ``run_trial`` for each, then ``measure_trials`` on the latency device;
``search_study`` per refinement study; ``select_winner``, ``report``, ``propose_retraining`` into
``final``, ``run_trial``, ``measure_trials`` and ``export_model``. The search controller sends each
trained trial to ``measure_trial`` (``kfnas.stages.measure_worker``). The retraining pipeline
calls ``init_retraining``, ``run_trial``, ``measure_trials`` and ``publish_if_not_worse``. With a
cluster profile whose full trainings span several nodes, those pipelines call ``launch_trial``
instead of ``run_trial`` for each full training: it starts the trial as a multi-node job and
records how it ended. The proxy-task variance pipeline calls ``init_variance``, ``search_study``
(its repeats) and ``variance_report``; the model-selection pipeline ``init_model_selection`` and
``select_models``; the proxy-task search pipeline ``init_proxy_search`` and
``search_proxy_tasks``. ``kfnas`` commands also call
``propose_trials`` and ``propose_refinement`` (one round at a time), ``promote_trials`` (ASHA, one
at a time) and ``request_stop``.

To add a stage: write one function (about 40 lines at most, its contract in the docstring) in the
module of its group (``search``, ``refinement``, ``report``, ``export``, ``retraining``), export it
here, and wrap it in ``components/<stage>.py``.
"""

from kfnas.stages._common import StudyStoppedError
from kfnas.stages._control import ControllerConflictError, ControllerState, read_state, request_stop
from kfnas.stages.controller import search_study, search_summary
from kfnas.stages.export import export_model
from kfnas.stages.launched import launch_trial
from kfnas.stages.measure import NotTrainedError, measure_trial, measure_trials
from kfnas.stages.proxy import init_variance, variance_report
from kfnas.stages.proxy_search import init_proxy_search, search_proxy_tasks
from kfnas.stages.refinement import propose_refinement, select_winner
from kfnas.stages.report import report
from kfnas.stages.retraining import init_retraining, publish_if_not_worse
from kfnas.stages.search import (
    init_experiment,
    promote_trials,
    propose_retraining,
    propose_trials,
    run_trial,
    select_top,
)
from kfnas.stages.selection import init_model_selection, select_models

__all__ = [
    "ControllerConflictError",
    "ControllerState",
    "NotTrainedError",
    "StudyStoppedError",
    "export_model",
    "init_experiment",
    "init_model_selection",
    "init_proxy_search",
    "init_retraining",
    "init_variance",
    "launch_trial",
    "measure_trial",
    "measure_trials",
    "promote_trials",
    "propose_refinement",
    "propose_retraining",
    "propose_trials",
    "publish_if_not_worse",
    "read_state",
    "report",
    "request_stop",
    "run_trial",
    "search_proxy_tasks",
    "search_study",
    "search_summary",
    "select_models",
    "select_top",
    "select_winner",
    "variance_report",
]
