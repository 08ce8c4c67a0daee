"""The ``init_experiment`` step: validate the spec and the data, write ``experiment.json``.

Its parameters are ``kfnas.stages.init_experiment``'s: the spec text, the overrides and the named
settings declared by ``kfnas.config.settings.ExperimentSettings`` (an empty string or 0 keeps the
spec's value). KFP ships this function's source to the container, so its signature is written out;
``tests/config/test_settings_declaration.py`` checks it against the declaration.
"""

from kfp import dsl

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def init_experiment(
    spec_yaml: str,
    overrides: list[str],
    experiment_name: str,
    store_root: str,
    task_kind: str,
    num_classes: int,
    train_data: str,
    validation_data: str,
    annotations: str,
    space: str,
    algorithm: str,
    rounds: int,
    trials_per_round: int,
    proxy_train_steps: int,
    proxy_batch_size: int,
    full_train_steps: int,
    full_batch_size: int,
    metric: str,
    latency_target_ms: float,
    scaling_trials: int,
    scaling_train_steps: int,
    augmentation_space: str,
    augmentation_trials: int,
    augmentation_train_steps: int,
    augmentation_evaluations: int,
) -> str:
    """Validates the spec and its data and creates (or resumes) the experiment; returns its URI."""
    settings = dict(locals())  # Every parameter; the two below are not settings.
    spec_yaml, overrides = settings.pop("spec_yaml"), settings.pop("overrides")
    from kfnas import stages

    return stages.init_experiment(spec_yaml, overrides, **settings)
