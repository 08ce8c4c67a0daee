"""The ``init_variance`` step: the variance experiment of a search spec and its repeated trials.

See ``kfnas.stages.proxy.init_variance``: one architecture of the proxy study's space, ``repeats``
trials of it with the proxy study's budget, differing only in their seed.
"""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_variance(spec_yaml: str, overrides: list[str], repeats: int, architecture: str) -> str:
    """Validates the spec and its data and writes the repeats; returns the experiment's URI."""
    from kfnas import stages

    return stages.init_variance(
        spec_yaml, overrides, repeats=int(repeats), architecture=architecture
    )
