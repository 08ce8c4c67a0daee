"""The ``init_model_selection`` step: the model-selection experiment and its first models.

See ``kfnas.stages.selection.init_model_selection``: ``models`` architectures of the proxy study's
space, to be trained toward the full-training budget in iterations.
"""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_model_selection(
    spec_yaml: str,
    overrides: list[str],
    models: int,
    final_models: int,
    remove_per_iteration: int,
) -> str:
    """Validates the spec, the data and the schedule, writes the first models; returns the URI."""
    from kfnas import stages

    return stages.init_model_selection(
        spec_yaml, overrides, int(models), int(final_models), int(remove_per_iteration)
    )
