"""KFP pipelines of kfnas (search, retraining), shipped in the distribution as ``kfnas.pipelines``.

Pipelines wire ``kfnas.components`` into DAGs; cluster profiles in ``pipelines/profiles/`` say which
resources each kind of step gets. Only this package and ``kfnas.components`` import kfp.

To add a pipeline: write ``pipelines/<name>.py`` with a ``build_<name>(...)`` function returning the
``@dsl.pipeline`` and register it with the compile helpers.
"""
