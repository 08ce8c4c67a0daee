"""Search spaces: the registry ``SPACES`` and helpers every space shares.

A search space is an object that follows ``kfnas.spaces.base.SearchSpace``. Built-ins are listed in
the
lazy table below (name -> ``"module:attribute"``), so listing them imports nothing heavy. A user's
own
space is named as ``"package.module:object"`` anywhere a built-in name is accepted.

To add a built-in space: write one module in this package that defines the space object, then add
one
line to ``_BUILTINS``. The conformance tests in ``tests/conformance`` then cover it automatically.
"""

from __future__ import annotations

from kfnas.registry import Registry, RegistryError, load_object
from kfnas.spaces.base import RefinementSpace, SearchSpace

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


__all__ = ["SPACES", "RefinementSpace", "SearchSpace", "get_space"]
