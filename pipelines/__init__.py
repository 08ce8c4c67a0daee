"""KFP pipelines of kfnas, shipped in the distribution as ``kfnas.pipelines``.

* ``search``: ``build_search_pipeline`` (proxy search, validation by full training, final training
  and export), its DAG and parameters;
* ``profiles``: cluster profiles (``profiles/*.yaml``) and how they configure each kind of step;
* ``compile``: ``compile_pipeline`` (what ``kfnas compile`` runs);
* ``local``: ``run_search_locally`` under ``kfp.local`` (what ``kfnas run`` runs).
* ``submit``: ``submit_search`` (what ``kfnas submit`` runs): compile, check, upload, start a run;
* ``parameters``: a compiled pipeline's run parameters and arguments checked against them;
* ``kfp_api``: talking to a KFP API server through ``kfp.Client``, with errors that say what to fix.

Pipelines wire ``kfnas.components`` into DAGs; only this package and ``kfnas.components`` import
kfp.

To add a pipeline (e.g. retraining): write ``pipelines/<name>.py`` with a ``build_<name>(...)``
function returning the ``@dsl.pipeline``, configure its steps with a profile as ``search`` does,
and add a ``compile_<name>`` to ``compile``.
"""
