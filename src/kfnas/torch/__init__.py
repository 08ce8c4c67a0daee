"""PyTorch trials: the task kinds, networks, trainer, measurement and export of the torch examples.

Installed with the ``torch`` extra (``pip install kfnas[torch]``). Nothing outside this package
imports ``torch`` (an import-linter contract), so the TensorFlow paths never load it; the search,
the store, rewards, reports and pipelines see a torch trial exactly as a TensorFlow one, because
the trial step picks its trainer by the task kind's ``framework``
(``kfnas.tasks.frameworks.FRAMEWORKS``).

Modules: ``networks`` (the registry of torch network builders by search space), ``unet`` (the 3-D
UNet encoder and NAS-FPN decoder of the medical spaces), ``mnasnet`` (the ``mnasnet`` space's
architectures as torch modules), ``tasks`` (the ``segmentation_3d`` and ``torch_classification``
task kinds), ``runner`` (one trial: train, evaluate, checkpoint, measure), ``measure`` (the
measurement protocol on torch models), ``export`` (TorchScript and ONNX with a model card).

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch loads: torch's
OpenMP threads otherwise spin while they wait, and beside other busy processes (trials side by
side, a measurement) each step became many times slower on a 2-core machine.

To add a torch example: register its network builder in ``networks.TORCH_NETWORKS``, write a task
kind following ``kfnas.torch.tasks.TorchTask`` and register it in ``kfnas.tasks.TASKS``.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
