"""KFP pipelines of kfnas, shipped in the distribution as ``kfnas.pipelines``.

* ``search``: ``build_search_pipeline`` (proxy search, validation by full training, final training
  and export), its DAG and parameters;
* ``profiles``: cluster profiles (``profiles/*.yaml``) and how they configure each kind of step;
* ``compile``: ``compile_pipeline`` (what ``kfnas compile`` runs);
* ``local``: ``run_search_locally`` under ``kfp.local`` (what ``kfnas run`` runs).

Pipelines wire ``kfnas.components`` into DAGs; only this package and ``kfnas.components`` import
kfp.

To add a pipeline (e.g. retraining): write ``pipelines/<name>.py`` with a ``build_<name>(...)``
function returning the ``@dsl.pipeline``, configure its steps with a profile as ``search`` does,
and add a ``compile_<name>`` to ``compile``.
"""
