"""The ``export_model`` step: the final trial as a SavedModel in the store's ``export/<version>``.

The ``model`` artifact records where the export lies (``metadata["store_uri"]``) with the trial and
version, so the KFP UI links a run to its model without copying the SavedModel.
"""

from kfp import dsl
from kfp.dsl import Model, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_model(
    experiment_uri: str, study: str, trial_id: int, version: str, model: Output[Model]
) -> str:
    """Exports the trial (at once if already exported); returns the export folder's URI."""
    from kfnas import stages

    uri = stages.export_model(experiment_uri, study, int(trial_id), version)
    model.metadata.update({"store_uri": uri, "study": study, "trial_id": int(trial_id)})
    model.metadata["version"] = version
    return uri
