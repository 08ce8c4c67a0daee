"""kfnas: Neural Architecture Search on Kubeflow Pipelines.

The library (everything under ``kfnas``) never imports kfp; ``kfnas.components`` and
``kfnas.pipelines`` wrap its stages for KFP. Import submodules directly, for example
``from kfnas.config.spec import ExperimentSpec``; this package keeps its import cheap on purpose.

Keras: kfnas and tf-models-official build their models with Keras 2 (``tf_keras``). Unless
``TF_USE_LEGACY_KERAS`` is set already, importing kfnas sets it to ``1`` so that a TensorFlow
imported after it loads ``tf_keras`` as ``tf.keras`` instead of also loading Keras 3 (``import
tensorflow`` otherwise imports ``keras.src`` eagerly, with scikit-learn: about 1.5 s of every
trial's, measurement's and pipeline step's start-up on 2 CPU cores, for a library nothing here
uses). The runtime image sets the same variable.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from kfnas.version import __version__

__all__ = ["__version__"]
