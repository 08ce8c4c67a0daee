"""The torch network builders, by search space name: ``TORCH_NETWORKS``.

A builder takes a materialized architecture of its space (``pg.materialize(space.hyper(), dna)``
or ``kfnas.spaces.base.load_architecture`` of a trial's ``arch_json``) and the experiment's
``kfnas.config.spec.TaskSpec`` (classes, input size, ``task.options`` knobs) and returns a
``torch.nn.Module``:

* 3-D segmentation (``unet_encoder``, ``unet_nasfpn``, ``unet_baseline``): input
  ``(N, in_channels, S, S, S)`` float32, output logits ``(N, num_classes, S, S, S)`` with
  ``S = task.image_size``;
* classification (``mnasnet``, ``mnasnet_a1``): input ``(N, 3, S, S)`` float32, output logits
  ``(N, num_classes)``.

Entries are ``"module:function"`` strings, so naming a builder imports nothing. To add one: write
the builder and add one line below (or call ``TORCH_NETWORKS.register(space, builder)``).
"""

from __future__ import annotations

from kfnas.registry import Registry

TORCH_NETWORKS: Registry = Registry(
    "torch network",
    {
        "unet_encoder": "kfnas.torch.unet:build_unet",
        "unet_nasfpn": "kfnas.torch.unet:build_unet",
        "unet_baseline": "kfnas.torch.unet:build_unet",
        "mnasnet": "kfnas.torch.mnasnet:build_mnasnet",
        "mnasnet_a1": "kfnas.torch.mnasnet:build_mnasnet",
    },
)

__all__ = ["TORCH_NETWORKS"]
