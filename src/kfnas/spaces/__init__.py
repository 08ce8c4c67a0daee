"""Search spaces: the registry ``SPACES`` and the knobs the spaces declare.

A search space is an object that follows ``kfnas.spaces.base.SearchSpace`` (it builds networks)
or ``kfnas.spaces.base.RefinementSpace`` (it retrains a chosen network differently). Built-ins are
listed in the lazy table ``_BUILTINS`` (name -> ``"module:attribute"``), so listing them imports
nothing heavy. A user's own space is named as ``"package.module:object"`` anywhere a built-in name
is accepted.

A new space costs one module and one registry line: write a module (in this package, or your own
package) defining the space object, with a ``task_options`` table
(``{name: kfnas.spaces.options.Option}``) of the ``task.options`` knobs it reads that no task reads;
then add one line to ``_BUILTINS`` (or call ``SPACES.register(name, space)``). No task changes:
validation accepts the knobs the experiment's spaces declare (``declared_options``), and the
conformance tests in ``tests/conformance`` cover every registered space.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kfnas.registry import Registry, RegistryError, load_object
from kfnas.spaces import base
from kfnas.spaces.base import RefinementSpace, SearchSpace
from kfnas.spaces.options import Option, merge

_BUILTINS: dict[str, str] = {
    "spinenet": "kfnas.spaces.spinenet:SPINENET",
    "spinenet_v2": "kfnas.spaces.spinenet:SPINENET_V2",
    "spinenet_mbconv": "kfnas.spaces.spinenet:SPINENET_MBCONV",
    "spinenet49": "kfnas.spaces.spinenet49:SPINENET49",
    "spinenet_scaling": "kfnas.spaces.spinenet_scaling:SPINENET_SCALING",
    "mnasnet": "kfnas.spaces.mnasnet:MNASNET",
    "mnasnet_a1": "kfnas.spaces.mnasnet:MNASNET_A1",
    "efficientnet_v2": "kfnas.spaces.efficientnet_v2:EFFICIENTNET_V2",
    "nasfpn": "kfnas.spaces.nasfpn:NASFPN",
    "pointpillars": "kfnas.spaces.pointpillars:POINTPILLARS",
    # 3-D medical segmentation (PyTorch: kfnas.torch.unet builds them).
    "unet_encoder": "kfnas.spaces.unet:UNET_ENCODER",
    "unet_nasfpn": "kfnas.spaces.unet:UNET_NASFPN",
    "unet_baseline": "kfnas.spaces.unet:UNET_BASELINE",
    "randaugment_detection": "kfnas.spaces.augmentation:RANDAUGMENT_DETECTION",
    "randaugment_segmentation": "kfnas.spaces.augmentation:RANDAUGMENT_SEGMENTATION",
    "autoaugment_detection": "kfnas.spaces.augmentation:AUTOAUGMENT_DETECTION",
    "autoaugment_segmentation": "kfnas.spaces.augmentation:AUTOAUGMENT_SEGMENTATION",
}

SPACES: Registry[SearchSpace | RefinementSpace] = Registry("search space", _BUILTINS)


def get_space(name: str) -> SearchSpace | RefinementSpace:
    """Returns the registered space ``name``, or a user's own given as ``"module:object"``.

    Raises:
        RegistryError: Unknown name, or a reference that cannot be imported (the message says why).
    """
    if ":" not in name:
        return SPACES.get(name)
    try:
        space = load_object(name)
    except ImportError as e:
        raise RegistryError(
            f"cannot import the search space {name!r}: {e}. Check that the module is installed in "
            f"the image and importable (python -c 'import {name.partition(':')[0]}')"
        ) from e
    if not isinstance(space, SearchSpace | RefinementSpace):
        raise RegistryError(
            f"{name!r} is a {type(space).__name__}, not a search space: it needs a 'name', the "
            f"'tasks' it serves and the methods 'hyper()', 'reference()' and 'build_network()' "
            f"(see kfnas.spaces.base.SearchSpace; or, for a space that refines a trained trial, "
            f"'base_problems()', 'objective_problems()' and 'task_overrides()' in place of "
            f"'build_network()': "
            f"kfnas.spaces.base.RefinementSpace)"
        )
    return space


def declared_options(kind: str, spaces: Iterable[Any] | None = None) -> dict[str, Option]:
    """The ``task.options`` knobs that ``spaces`` serving ``kind`` declare (``merge``d).

    Args:
        kind: The task kind; spaces that do not serve it are left out.
        spaces: The experiment's spaces; ``None``: every registered space (what a task accepts
            when it is not told which spaces an experiment uses).
    """
    if spaces is None:
        spaces = [SPACES.get(name) for name in SPACES.names()]
    return merge(base.declared_options(s) for s in spaces if kind in s.tasks)


__all__ = ["SPACES", "RefinementSpace", "SearchSpace", "declared_options", "get_space"]
