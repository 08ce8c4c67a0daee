"""The MLOps handoff of an exported model: ``handoff.json``, ``model_card.md`` and ``latest``.

The export step (``kfnas.stages.export_model``) writes a SavedModel into
``<experiment>/export/<version>/`` (``kfnas.export.saved_model``), then calls ``write_handoff``,
which adds to that folder, in this order:

0. ``serving/inferenceservice.yaml``: the KServe ``InferenceService`` serving the SavedModel
   (``kfnas.export.kserve``);
1. ``model_card.md``: the model card a person reads (task, data, architecture, metrics, latency,
   FLOPs, parameters, the search in brief, known limits);
2. ``handoff.json``: the ``Handoff`` manifest a machine reads (``schemas/handoff.schema.json``,
   shipped as ``kfnas.schemas``): model version, framework versions, serving signatures read
   from the SavedModel, metrics, the architecture JSON that rebuilds it, lineage, run and image;
3. last, ``<experiment>/export/latest``: a small JSON pointer naming the newest finished version,
   written atomically through the store. A reader that follows ``latest`` therefore never sees a
   half-written version. Earlier versions stay where they are; ``latest`` only moves forward (to a
   version whose handoff was created no earlier than the one it names).

``read_handoff(uri)`` reads a manifest back from a version folder, its ``handoff.json`` or the
``export/latest`` pointer (local or ``gs://``), upgrading older schema versions and refusing
missing URIs, newer schema versions, documents that break the schema and architectures that name
types their space does not hold (``architecture_problem``: a handoff is data, nothing it names is
imported), with messages that say what to do. ``kfnas.export.model_card.render_model_card``
renders the card from a ``Handoff``.

``Handoff`` is a ``kfnas.records.Record`` whose reader also checks the JSON schema. To add a
field: add it to ``Handoff`` with a default and to the JSON schema, bump ``SCHEMA_VERSION`` (and
the schema's ``const``) and register in ``Handoff.UPGRADES`` how to fill it for older manifests.
This module imports TensorFlow only to read the SavedModel's signatures.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.resources
import json
import platform
from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.records import Record, RecordError
from kfnas.store import ArtifactStore, ObjectNotFound, StoreError, open_store
from kfnas.store.layout import LATEST
from kfnas.version import __version__

# 1: the first layout. 2: model_format (torch exports are ONNX or TorchScript).
SCHEMA_VERSION = 2
#: File of the export folder holding the ``Handoff``; written last of the folder's files.
HANDOFF_FILE = "handoff.json"
#: File of the export folder holding the model card.
MODEL_CARD_FILE = "model_card.md"
#: The tf-models experiment config that ``export_inference_graph`` writes beside the SavedModel.
TASK_CONFIG_FILE = "params.yaml"
#: Environment variable read for the KFP run id when the caller gives none.
RUN_ID_ENV = "KFNAS_RUN_ID"
#: Distributions whose versions the manifest records (besides Python's); "" when not installed.
FRAMEWORKS = ("tensorflow", "tf-models-official", "pyglove", "kfp", "torch", "onnx")

Tensor = dict[str, Any]  # {"dtype": "float32", "shape": [null, 4] or null}
Signature = dict[str, dict[str, Tensor]]  # {"inputs": {...}, "outputs": {...}}


class HandoffError(RecordError):
    """A handoff manifest that cannot be used: a newer or unknown schema, or a broken document."""


class HandoffNotFoundError(FileNotFoundError):
    """No handoff manifest at the URI given (nothing exported there yet, or a wrong URI)."""


@dataclasses.dataclass(frozen=True)
class Handoff(Record):
    """What an exported model is, how to call it, how well it did and where it came from.

    Attributes:
        model_version: The export folder name (``<experiment>/export/<model_version>``).
        created: When the manifest was written (UTC, ISO 8601).
        task_kind: The task kind (``detection``, ``classification``, ``segmentation``, ...).
        num_classes: The number of classes of the task.
        input_size: The model's input without the batch: ``(height, width, channels)`` for
            images, ``(points, features)`` for point clouds.
        frameworks: Distribution name -> version: ``python``, ``tensorflow``,
            ``tf-models-official``, ``kfnas`` and more.
        saved_model: The served model's folder, relative to the export folder (the SavedModel;
            a torch export's ``model.onnx``, or its TorchScript when ONNX could not express it).
        model_format: What ``saved_model`` holds, as KServe names it: ``tensorflow``, ``onnx``,
            or ``torchscript`` (not served by KServe: the model card says so).
        signatures: Serving signature name -> ``{"inputs": {key: tensor}, "outputs": {...}}``,
            each tensor ``{"dtype": str, "shape": [int or None] or None}`` (``None``: any size).
        metric: The objective metric the search maximized.
        metrics: The exported trial's metrics on the evaluation data, with its measurements.
        reward: The exported trial's reward.
        latency_ms: Batch-1 latency (median) on the run's latency device, if measured.
        flops: Multiply-adds of one batch-1 inference, if counted.
        params: Number of weights, if counted.
        space: The search space of the architecture.
        arch_json: The architecture, serialized (``kfnas.spaces.base.load_architecture`` with
            the space rebuilds it; a reader refuses one naming types its space does not hold).
        task_overrides: The dotted ``task.*`` overrides it was trained with (its scaling and
            augmentation policy); a retraining applies them to the experiment's task.
        experiment: The experiment name.
        experiment_uri: The experiment's URI in the store.
        study: The exported trial's study.
        trial_id: The exported trial's id.
        lineage: The exported trial first, then the trial each step retrained (e.g. final <-
            validation <- proxy), each ``{"study", "trial_id", "metric"}``.
        run_id: The KFP run id; empty when unknown (``kfp.local`` and the CLI have none).
        image: The runtime image of the pipeline's steps; empty when unknown.
        data: The data patterns used: ``train``, ``validation``, ``annotations``.
        files: Role -> path relative to the export folder (``saved_model``, ``architecture``,
            ``export_record``, ``model_card``, ``inference_service``: the KServe manifest, ...).
        search_history: One summary per study: trials, completed, failed, best metric, best
            reward.
        kendall_tau: Rank correlation of proxy vs full-training scores, when computable.
    """

    KIND = "handoff manifest"
    SCHEMA_VERSION = SCHEMA_VERSION
    ERROR = HandoffError

    model_version: str
    created: str
    task_kind: str
    num_classes: int
    input_size: tuple[int, ...]
    frameworks: dict[str, str]
    saved_model: str
    signatures: dict[str, Signature]
    metric: str
    metrics: dict[str, float]
    reward: float | None
    latency_ms: float | None
    flops: float | None
    params: float | None
    space: str
    arch_json: str
    task_overrides: tuple[str, ...]
    experiment: str
    experiment_uri: str
    study: str
    trial_id: int
    lineage: list[dict[str, Any]]
    run_id: str = ""
    image: str = ""
    data: dict[str, str] = dataclasses.field(default_factory=dict)
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    search_history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kendall_tau: float | None = None
    model_format: str = "tensorflow"

    UPGRADES = {1: lambda data: {**data, "model_format": "tensorflow"}}

    @classmethod
    def _check(cls, data: Mapping[str, Any], source: str) -> None:
        """Refuses a manifest the JSON schema refuses, or whose architecture names foreign types."""
        if problem := schema_problem(data):
            raise HandoffError(f"{source} does not match the handoff schema: {problem}")
        if problem := architecture_problem(data["space"], data["arch_json"]):
            raise HandoffError(f"{source}: {problem}; export the model again")


def handoff_schema() -> dict[str, Any]:
    """The JSON schema of ``handoff.json`` (``schemas/handoff.schema.json``)."""
    text = importlib.resources.files("kfnas.schemas").joinpath("handoff.schema.json").read_text()
    return json.loads(text)


def schema_problem(data: Mapping[str, Any]) -> str:
    """What the JSON schema finds wrong with ``data`` (the most relevant error), or ``""``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(handoff_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return ""
    where = ".".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


def architecture_problem(space: str, arch_json: str) -> str:
    """What makes a handoff's architecture untrusted, or ``""``; nothing it names is imported.

    A handoff is data, not code: its ``arch_json`` may name only the classes of its space. For a
    built-in space they are the space's own (``kfnas.spaces.base.architecture_types``). A user's
    space (``module:object``) is not imported from a handoff, so its classes are not known here:
    they must lie in the space's own top-level package, and the retraining that trains the
    architecture imports the space only if the experiment's spec names it (``TrialRecords``) and
    decodes the architecture with ``load_architecture``.
    """
    from kfnas.registry import RegistryError
    from kfnas.spaces import get_space
    from kfnas.spaces.base import architecture_type_names, foreign_types

    try:
        tree = json.loads(arch_json)
    except json.JSONDecodeError as e:
        return f"arch_json is not valid JSON: {e}"
    module, colon, _ = space.partition(":")
    if colon:
        package = module.split(".")[0]
        foreign = [n for n in foreign_types(tree, ()) if not n.startswith(f"{package}.")]
        allowed = f"types of the package {package!r} of its space {space!r}"
    else:
        try:
            names = architecture_type_names(get_space(space))
        except RegistryError as e:
            return f"space {space!r} is not a registered space: {e}"
        foreign = foreign_types(tree, names)
        allowed = f"the types of its space {space!r}: {', '.join(sorted(names)) or 'none'}"
    if foreign:
        return (
            f"arch_json names the type(s) {', '.join(foreign)}, but a handoff may hold only "
            f"{allowed}; nothing was imported"
        )
    return ""


def framework_versions() -> dict[str, str]:
    """The versions of Python, kfnas and ``FRAMEWORKS`` in this process (``""``: not installed)."""
    versions = {"python": platform.python_version(), "kfnas": __version__}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def read_signatures(
    store: ArtifactStore, saved_model_dir: str, names: Sequence[str]
) -> dict[str, Signature]:
    """The inputs and outputs (dtype, shape) of the named signatures of a stored SavedModel.

    Reads ``saved_model.pb`` through the store and parses it; the model itself is not loaded.

    Raises:
        HandoffError: The SavedModel lacks one of ``names``.
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(store.read_bytes(f"{saved_model_dir}/saved_model.pb"))
    found = proto.meta_graphs[0].signature_def

    def tensors(infos: Any) -> dict[str, Tensor]:
        out = {}
        for key in sorted(infos):
            shape = infos[key].tensor_shape
            dims = (
                None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]
            )
            out[key] = {"dtype": tf.dtypes.as_dtype(infos[key].dtype).name, "shape": dims}
        return out

    if missing := [n for n in names if n not in found]:
        raise HandoffError(
            f"the SavedModel at {store.uri(saved_model_dir)} has no signature {missing}; it has "
            f"{sorted(n for n in found if not n.startswith('__'))}"
        )
    return {
        n: {"inputs": tensors(found[n].inputs), "outputs": tensors(found[n].outputs)} for n in names
    }


def read_handoff(uri: str) -> Handoff:
    """Reads the handoff manifest of an exported model.

    Args:
        uri: An export version folder (``<store>/<experiment>/export/<version>``), its
            ``handoff.json``, the experiment's ``export`` folder or its ``export/latest`` pointer
            (both follow the pointer to the newest finished version); local or ``gs://``.

    Raises:
        HandoffNotFoundError: Nothing exported there (the message lists the versions found nearby).
        HandoffError: A newer or unknown schema version, or a document the schema refuses.
    """
    parent, _, name = uri.rstrip("/").rpartition("/")
    if name == HANDOFF_FILE:
        return read_manifest(open_store(parent or "."), HANDOFF_FILE)
    if name == LATEST:
        return read_manifest(open_store(parent or "."), _follow(open_store(parent or "."), LATEST))
    store = open_store(uri)
    if not store.exists(HANDOFF_FILE) and store.exists(LATEST):
        return read_manifest(store, _follow(store, LATEST))
    return read_manifest(store, HANDOFF_FILE)


def _follow(store: ArtifactStore, pointer: str) -> str:
    try:
        data = json.loads(store.read_text(pointer))
    except ObjectNotFound as e:
        raise HandoffNotFoundError(_missing(store.uri(pointer), "no model exported yet")) from e
    except json.JSONDecodeError as e:
        raise HandoffError(f"{store.uri(pointer)} is not a kfnas latest pointer: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise HandoffError(f"{store.uri(pointer)} names no version; export the model again")
    if data.get("schema_version", 0) > SCHEMA_VERSION:
        raise HandoffError(
            f"{store.uri(pointer)} has schema_version {data['schema_version']}, newer than "
            f"{SCHEMA_VERSION} that kfnas {__version__} reads; upgrade kfnas to read it"
        )
    return f"{data['version']}/{HANDOFF_FILE}"


def read_manifest(store: ArtifactStore, path: str) -> Handoff:
    """Reads the ``Handoff`` at ``path`` of ``store``; see ``read_handoff`` for the errors."""
    uri = store.uri(path)
    try:
        text = store.read_text(path)
    except ObjectNotFound as e:
        raise HandoffNotFoundError(_missing(uri, f"{HANDOFF_FILE} does not exist")) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HandoffError(f"{uri} is not valid JSON ({e}); export the model again") from e
    if not isinstance(data, dict):
        raise HandoffError(f"{uri} must hold a JSON object, got {type(data).__name__}")
    return Handoff.from_dict(data, uri)


def _missing(uri: str, why: str) -> str:
    """The message for a missing manifest, with the versions exported nearby when there are some."""
    folder = uri.rsplit("/", 1)[0]
    exports = folder if folder.endswith("/export") else folder.rpartition("/")[0]
    try:
        versions = [v for v in open_store(exports).list_children() if v != LATEST]
    except (StoreError, ValueError):
        versions = []
    nearby = f"; versions in {exports}: {', '.join(versions)}" if versions else ""
    return (
        f"no model handoff at {uri}: {why}{nearby}. Give an export version folder "
        f"(<store>/<experiment>/export/<version>), its {HANDOFF_FILE}, or "
        f"<store>/<experiment>/export/{LATEST}; a model is exported by the pipeline's export_model "
        f"step (kfnas run)"
    )
