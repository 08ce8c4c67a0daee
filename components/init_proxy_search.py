"""The ``init_proxy_search`` step: the proxy-task search's plan, checked before any training.

See ``kfnas.stages.proxy_search.init_proxy_search``: the reference models of a model selection,
the candidates of the grid, each one's experiment spec and the targets.
"""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_proxy_search(
    spec_yaml: str,
    grid_yaml: str,
    overrides: list[str],
    selection_uri: str,
    target_correlation: float,
    target_accuracy: float,
    time_limit_hours: float,
    stop_if_slower: bool,
    latency_correlation: float,
    evaluations: int,
) -> str:
    """Validates the spec, the grid, the data and the references; returns the URI."""
    from kfnas import stages

    where = (spec_yaml, grid_yaml, overrides, selection_uri)
    targets = (float(target_correlation), float(target_accuracy), float(time_limit_hours))
    rest = (bool(stop_if_slower), float(latency_correlation), int(evaluations))
    return stages.init_proxy_search(*where, *targets, *rest)
