"""kfnas: Neural Architecture Search on Kubeflow Pipelines.

The library (everything under ``kfnas``) never imports kfp; ``kfnas.components`` and
``kfnas.pipelines`` wrap its stages for KFP. Import submodules directly, for example
``from kfnas.config.spec import ExperimentSpec``; this package keeps its import cheap on purpose.
"""

from kfnas.version import __version__

__all__ = ["__version__"]
