"""Exporting a trained trial for serving, and the handoff package MLOps receives.

``saved_model`` writes the SavedModel with its serving signatures and ``export.json``;
``serving`` holds the serving modules official.vision lacks; ``handoff`` is the ``Handoff``
manifest (``handoff.json``) and its reader; ``kserve`` builds the KServe ``InferenceService``
(``serving/inferenceservice.yaml``) that serves the SavedModel; ``model_card`` renders
``model_card.md`` from them; ``package`` writes the KServe manifest, the card, the handoff manifest
and, last, the ``export/latest`` pointer.
"""
