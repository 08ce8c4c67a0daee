"""JSON schemas of kfnas's machine-readable records, shipped in the distribution as kfnas.schemas.

``handoff.schema.json`` describes ``handoff.json``, the manifest the export step writes beside each
exported model (``kfnas.export.handoff``); ``kfnas.export.handoff.read_handoff`` validates against
it, and tools outside kfnas (a model registry, a CI check) can validate against the same file.

To add a schema: put ``<record>.schema.json`` here (JSON Schema draft 2020-12, its ``$id`` naming
the file) and load it with ``importlib.resources.files("kfnas.schemas")``; bump the record's
``schema_version`` (and the schema's ``const``) whenever a field changes meaning or is removed.
"""
