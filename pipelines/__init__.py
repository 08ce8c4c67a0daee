"""KFP pipelines of kfnas, shipped in the distribution as ``kfnas.pipelines``.

* ``search``: ``build_search_pipeline`` (proxy search, validation by full training, final training
  and export), its DAG and parameters;
* ``profiles``: cluster profiles (``profiles/*.yaml``) and how they configure each kind of step;
* ``compile``: ``compile_pipeline`` (what ``kfnas compile`` runs);
* ``local``: ``run_search_locally`` under ``kfp.local`` (what ``kfnas run`` runs);
* ``steps``: ``Steps``, how every pipeline configures its steps by kind from a cluster profile;
* ``retraining``: ``build_retraining_pipeline`` (retrain an exported model, publish if not worse);
* ``submit``: ``prepare_submission`` and ``submit`` (what ``kfnas submit`` runs): compile, check,
  upload, start a run;
* ``schedule``: ``prepare_schedule`` and ``create_schedule`` (what ``kfnas schedule`` runs);
* ``parameters``: a compiled pipeline's run parameters and arguments checked against them;
* ``kfp_api``: talking to a KFP API server through ``kfp.Client``, with errors that say what to fix.

Pipelines wire ``kfnas.components`` into DAGs; only this package, ``kfnas.components`` and the CLI
(``kfnas.cli``) import kfp.

To add a pipeline: write ``pipelines/<name>.py`` with a ``build_<name>(...)`` function returning
the ``@dsl.pipeline``, configure its steps with ``steps.Steps(profile)``, and add a
``compile_<name>`` to ``compile``.
"""
