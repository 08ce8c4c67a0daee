"""The KServe handoff of an export: ``serving/inferenceservice.yaml``, an ``InferenceService``.

Every export writes, beside its ``handoff.json``, a KServe ``serving.kserve.io/v1beta1``
``InferenceService`` for the TensorFlow serving runtime (TF Serving) that serves the exported
SavedModel; ``kubectl apply -f`` it and the model answers ``POST /v1/models/<name>:predict``.

Where the SavedModel lies, and why (the numbered version folder). KServe's storage initializer
downloads ``storageUri`` to ``/mnt/models`` and TF Serving runs with
``--model_base_path=/mnt/models``, which must hold numbered version folders (``1/saved_model.pb``;
it serves the highest number). The export therefore writes its one SavedModel at
``<export>/serving/model/1/`` (``kfnas.export.saved_model.SAVED_MODEL_DIR``) and ``storageUri`` is
``<export>/serving/model``, which holds nothing else, so the storage initializer downloads only
the model. The SavedModel is written there rather than copied: one copy is the one
``handoff.json`` describes and KServe serves (nothing to drift apart, no doubled storage or upload
time); readers find it through ``handoff.json``'s ``saved_model`` and ``export.json``'s
``saved_model_dir`` (both relative to the export folder; exports of earlier releases keep theirs at
``saved_model/``).

The parts:

* ``ServingSettings``: how the model is served (runtime, replicas, CPU, memory, accelerator,
  placement, service account), the JSON form of a cluster profile's ``serving`` section that the
  pipeline compiles into the export step's ``serving`` argument
  (``kfnas.pipelines.profiles.serving_settings``). Without one (local runs) the manifest asks for
  ``DEFAULT_CPU`` and ``DEFAULT_MEMORY`` and says so.
* ``storage_uri``: the store URI of the model folder as KServe reads it: ``gs://`` and ``s3://``
  as they are; a local path under a PVC the export step mounts becomes ``pvc://<claim>/...``; any
  other local path stays, with a warning (KServe cannot download it; the export does not fail).
* ``service_name``: the ``InferenceService`` name, a DNS-1123 label of at most ``MAX_NAME_LENGTH``
  characters made from the experiment name: every version of an experiment has the same name, so
  applying a newer version's manifest rolls the service over to it and clients keep their URL.
* ``inference_service(handoff, ...)`` -> ``InferenceService``: the manifest (``manifest()``,
  ``to_yaml()`` with comments saying how to apply and call it) and what the model card shows.
  Annotations name the signature clients call (``kfnas.io/signature-name``: TF Serving's
  ``signature_name``), its kind of input (``kfnas.io/inputs``) and outputs, and the export.

To extend: a new setting is a field of ``ServingSettings`` (checked in ``problems``, set in
``InferenceService.manifest``) and of the profile's section (``kfnas.pipelines.profiles``); a new
kind of input is an entry of ``INPUT_KINDS`` and ``_input_kind``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from kfnas.config.strict import SpecError, from_data, to_data
from kfnas.export.handoff import Handoff
from kfnas.export.saved_model import SERVING_MODEL_DIR, SERVING_VERSION
from kfnas.launch.k8s_manifest import PodSettings, PvcMount, Toleration

#: The manifest, relative to the export folder.
INFERENCE_SERVICE_FILE = "serving/inferenceservice.yaml"
API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
#: KServe's model format for SavedModels, served by TF Serving (``kserve-tensorflow-serving``).
MODEL_FORMAT = "tensorflow"


@dataclasses.dataclass(frozen=True)
class ServedFormat:
    """How KServe serves one export format (``Handoff.model_format``).

    Attributes:
        model_format: KServe's ``modelFormat`` name.
        protocol: The ``protocolVersion`` to ask for (``""``: the runtime's default, v1).
        layout: What ``storageUri`` holds, for the manifest's comments.
        path: The prediction endpoint, ``{name}`` being the service's name.
        problem: Why KServe cannot serve this format as written (a warning), or ``""``.
    """

    model_format: str
    protocol: str
    layout: str
    path: str
    problem: str = ""


#: ``Handoff.model_format`` -> how it is served. To serve a new format: one entry here.
SERVED_FORMATS: dict[str, ServedFormat] = {
    "tensorflow": ServedFormat(
        MODEL_FORMAT,
        "",
        f"the numbered folder {SERVING_VERSION}/, the SavedModel: TF Serving serves the highest "
        "number",
        "/v1/models/{name}:predict",
    ),
    "onnx": ServedFormat(
        "onnx",
        "v2",
        f"the numbered folder {SERVING_VERSION}/ with model.onnx (KServe's ONNX runtime, Triton)",
        "/v2/models/{name}/infer",
    ),
    "torchscript": ServedFormat(
        "pytorch",
        "v2",
        "the TorchScript module model.pt",
        "/v2/models/{name}/infer",
        problem=(
            "this export is TorchScript only (ONNX could not express the model; export.json "
            "says why): KServe's pytorch format needs a TorchServe archive, so this manifest "
            "does not serve as written; serve torchscript/model.pt with Triton's PyTorch "
            "backend (a model repository with its config.pbtxt), or change the ops ONNX cannot "
            "express and export again"
        ),
    ),
}
#: The resources of a model served without a profile's serving section (KServe's own defaults).
DEFAULT_CPU, DEFAULT_MEMORY = "1", "2Gi"
#: KServe appends suffixes (``-predictor-00001-private``) to make names of up to 63 characters.
MAX_NAME_LENGTH = 45
#: The storage URI schemes KServe's storage initializer downloads.
KSERVE_SCHEMES = ("gs://", "s3://", "pvc://", "https://", "http://", "hdfs://", "webhdfs://")

ANNOTATION_SIGNATURE = "kfnas.io/signature-name"
ANNOTATION_INPUTS = "kfnas.io/inputs"
ANNOTATION_OUTPUTS = "kfnas.io/outputs"
ANNOTATION_EXPERIMENT = "kfnas.io/experiment"
ANNOTATION_VERSION = "kfnas.io/model-version"
ANNOTATION_TRIAL = "kfnas.io/trial"
ANNOTATION_HANDOFF = "kfnas.io/handoff"

#: Kind of input (``kfnas.io/inputs``) -> (what it is, a JSON request's ``instances``).
INPUT_KINDS = {
    "encoded-images": (
        "encoded images (PNG, JPEG, GIF or BMP bytes; the images of one request share their "
        'size), each base64-encoded as {"b64": ...}',
        '[{"b64": "<base64 of a PNG or JPEG image>"}]',
    ),
    "image-tensor": (
        "uint8 images of any size, each a [height][width][3] list of 0..255 values",
        "[[[[0, 0, 0], ...], ...]]",
    ),
    "tensor": ("tensors as the signature's inputs say", "[...]"),
}

_NAME_BAD = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    """How an exported model is served on KServe; every field is optional.

    The JSON form of a cluster profile's ``serving`` section (``to_json``/``from_json``).

    Attributes:
        runtime: The ``ServingRuntime``/``ClusterServingRuntime`` name (e.g.
            ``kserve-tensorflow-serving``); empty: KServe picks one for ``tensorflow``.
        runtime_version: The runtime image's tag (TF Serving's version, ``-gpu`` for GPUs); empty:
            the runtime's own.
        min_replicas: Fewest replicas (0: scale to zero, serverless mode only).
        max_replicas: Most replicas (at least ``min_replicas`` and 1).
        cpu_request: CPU request (``"1"``, ``"500m"``); empty: the limit, or ``DEFAULT_CPU``.
        cpu_limit: CPU limit; empty: the request.
        memory_request: Memory request (``"2Gi"``); empty: the limit, or ``DEFAULT_MEMORY``.
        memory_limit: Memory limit; empty: the request.
        accelerator_type: An extended resource name (``nvidia.com/gpu``); empty: none.
        accelerator_count: How many, set as a limit.
        node_selector: Node labels the predictor's pods must match.
        tolerations: Taints they tolerate.
        service_account: The predictor's service account (storage credentials); empty: default.
        pvcs: The PVCs the export step mounts: a local store under one is served as ``pvc://``.
        source: Where the settings come from, for people (``cluster profile 'gke-gpu'``); empty:
            kfnas's defaults, no profile.
    """

    runtime: str = ""
    runtime_version: str = ""
    min_replicas: int = 1
    max_replicas: int = 1
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    accelerator_type: str = ""
    accelerator_count: int = 0
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[Toleration] = dataclasses.field(default_factory=list)
    service_account: str = ""
    pvcs: list[PvcMount] = dataclasses.field(default_factory=list)
    source: str = ""

    @classmethod
    def from_json(cls, text: str, where: str = "serving") -> ServingSettings:
        """Reads settings written by ``to_json``, strictly.

        Raises:
            ValueError: Not JSON, an unknown key, a value of the wrong type, or a setting
                KServe refuses (the message names it).
        """
        try:
            settings = from_data(cls, json.loads(text), where)
        except (SpecError, json.JSONDecodeError) as e:
            raise ValueError(f"serving settings: {e}") from e
        if problems := settings.problems(where):
            raise ValueError("serving settings: " + "; ".join(problems))
        return settings

    def to_json(self) -> str:
        """The JSON form (``from_json`` reads it back), keys sorted."""
        return json.dumps(to_data(self), sort_keys=True)

    def problems(self, where: str = "serving", names: Mapping[str, str] | None = None) -> list[str]:
        """What KServe would refuse, as messages naming ``where`` and the key.

        Args:
            where: Where the settings come from (``serving``).
            names: How the caller's config names a field (``{"cpu_limit":
                "resources.cpu_limit"}``); a field not in it is named as it is.
        """

        def at(field: str) -> str:
            return f"{where}.{(names or {}).get(field, field)}"

        pod = PodSettings(
            accelerator_type=self.accelerator_type,
            accelerator_count=self.accelerator_count,
            cpu_request=self.cpu_request,
            cpu_limit=self.cpu_limit,
            memory_request=self.memory_request,
            memory_limit=self.memory_limit,
            node_selector=dict(self.node_selector),
            tolerations=list(self.tolerations),
            pvcs=list(self.pvcs),
        )  # Quantities, the accelerator, tolerations and mounts are checked as a Job's are.
        out = pod.problems(where, names)
        if self.min_replicas < 0:
            out.append(
                f"{at('min_replicas')} must be >= 0 (0: scale to zero), got {self.min_replicas}"
            )
        if self.max_replicas < max(self.min_replicas, 1):
            out.append(
                f"{at('max_replicas')} {self.max_replicas} is below {at('min_replicas')} "
                f"{self.min_replicas} (or 1): raise max_replicas to at least "
                f"{max(self.min_replicas, 1)}"
            )
        for field, pattern, example in (
            ("runtime", _DNS_SUBDOMAIN, "kserve-tensorflow-serving"),
            ("service_account", _DNS_SUBDOMAIN, "kfnas-serving"),
            ("runtime_version", _IMAGE_TAG, "2.19.0-gpu"),
        ):
            value = getattr(self, field)
            if value and not pattern.match(value):
                out.append(f"{at(field)} {value!r} is not a valid name: e.g. {example}")
        return out

    def resources(self) -> dict[str, dict[str, str]]:
        """The predictor's ``requests`` and ``limits`` (unset ones filled as the fields say)."""
        cpu = self.cpu_request or self.cpu_limit or DEFAULT_CPU
        memory = self.memory_request or self.memory_limit or DEFAULT_MEMORY
        limits = {"cpu": self.cpu_limit or cpu, "memory": self.memory_limit or memory}
        if self.accelerator_type and self.accelerator_count:
            limits[self.accelerator_type] = str(self.accelerator_count)
        return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def service_name(experiment: str) -> str:
    """The ``InferenceService`` name of an experiment's models: a DNS-1123 label.

    Lowercase letters, digits and '-', starting with a letter and ending with a letter or digit,
    at most ``MAX_NAME_LENGTH`` characters (a longer name is cut and ends in a hash of the
    experiment name, so two long names stay apart).
    """
    name = re.sub(r"-{2,}", "-", _NAME_BAD.sub("-", experiment.lower())).strip("-")
    if not name[:1].isalpha():
        name = f"kfnas-{name}".rstrip("-")
    if len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(experiment.encode()).hexdigest()[:6]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"
    return name


def is_service_name(name: str) -> bool:
    """Whether ``name`` is a DNS-1123 label KServe takes as an ``InferenceService`` name."""
    return len(name) <= MAX_NAME_LENGTH and bool(_DNS_LABEL.match(name))


def model_folder(saved_model: str) -> str:
    """The folder TF Serving is given for a SavedModel folder: its parent if it is numbered.

    ``serving/model/1`` -> ``serving/model``; an unnumbered one (``saved_model``, as earlier
    releases exported) is returned as it is, and ``inference_service`` warns about it.
    """
    saved_model = saved_model.rstrip("/")
    parent, _, version = saved_model.rpartition("/")
    return parent if parent and version.isascii() and version.isdigit() else saved_model


def storage_uri(uri: str, pvcs: Sequence[PvcMount] = ()) -> str:
    """The ``storageUri`` of a store URI: a local path under a mounted PVC becomes ``pvc://``.

    Args:
        uri: The store URI of the model folder (``ArtifactStore.uri``).
        pvcs: The PVCs mounted where the store was written (the export step's).

    Returns:
        ``uri`` itself when KServe can download it (``gs://``, ``s3://``, ...) or when no PVC
        holds it, else ``pvc://<claim>/<sub_path>/<path under the mount>``.
    """
    if uri.startswith(KSERVE_SCHEMES):
        return uri
    for pvc in pvcs:
        mount = pvc.mount_path.rstrip("/")
        if uri.startswith(f"{mount}/"):
            parts = [pvc.claim, pvc.sub_path.strip("/"), uri[len(mount) + 1 :]]
            return "pvc://" + "/".join(p for p in parts if p)
    return uri


@dataclasses.dataclass(frozen=True)
class InferenceService:
    """The KServe ``InferenceService`` of one export, and what the model card says of it.

    Attributes:
        name: Its name (``service_name``).
        storage_uri: The folder whose numbered subfolder holds the SavedModel.
        signature: The signature clients name in their requests (``signature_name``).
        inputs: The kind of input it takes (a key of ``INPUT_KINDS``).
        outputs: The output keys it returns.
        settings: How it is served.
        handoff: What it serves: the export's manifest.
        handoff_uri: Where that manifest is.
        warnings: Why KServe could not serve it as it is (a local storage URI, ...); empty: none.
    """

    name: str
    storage_uri: str
    signature: str
    inputs: str
    outputs: tuple[str, ...]
    settings: ServingSettings
    handoff: Handoff
    handoff_uri: str = ""
    warnings: tuple[str, ...] = ()

    def manifest(self) -> dict[str, Any]:
        """The ``InferenceService`` document."""
        s, h = self.settings, self.handoff
        served = SERVED_FORMATS[h.model_format]
        model: dict[str, Any] = {"modelFormat": {"name": served.model_format}}
        model |= {"protocolVersion": served.protocol} if served.protocol else {}
        model |= {"runtime": s.runtime} if s.runtime else {}
        model |= {"runtimeVersion": s.runtime_version} if s.runtime_version else {}
        model |= {"storageUri": self.storage_uri, "resources": s.resources()}
        predictor: dict[str, Any] = {"minReplicas": s.min_replicas, "maxReplicas": s.max_replicas}
        predictor |= {"serviceAccountName": s.service_account} if s.service_account else {}
        predictor |= {"nodeSelector": dict(s.node_selector)} if s.node_selector else {}
        if s.tolerations:
            predictor["tolerations"] = [_toleration(t) for t in s.tolerations]
        annotations = {
            ANNOTATION_SIGNATURE: self.signature,
            ANNOTATION_INPUTS: self.inputs,
            ANNOTATION_OUTPUTS: ",".join(self.outputs),
            ANNOTATION_EXPERIMENT: h.experiment,
            ANNOTATION_VERSION: h.model_version,
            ANNOTATION_TRIAL: f"{h.study}/{h.trial_id}",
        }
        annotations |= {ANNOTATION_HANDOFF: self.handoff_uri} if self.handoff_uri else {}
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.name,
                "labels": {
                    "app.kubernetes.io/name": "kfnas",
                    "app.kubernetes.io/component": "model",
                },
                "annotations": annotations,
            },
            "spec": {"predictor": {**predictor, "model": model}},
        }

    def request(self) -> str:
        """An example body of the prediction request (JSON, ``...`` to fill in)."""
        if SERVED_FORMATS[self.handoff.model_format].protocol == "v2":
            name, tensor = next(iter(self.handoff.signatures[self.signature]["inputs"].items()))
            shape = [1 if d is None else d for d in tensor["shape"]]
            return (
                f'{{"inputs": [{{"name": "{name}", "shape": {shape}, "datatype": "FP32", '
                f'"data": [...]}}]}}'
            )
        instances = INPUT_KINDS[self.inputs][1]
        return f'{{"signature_name": "{self.signature}", "instances": {instances}}}'

    def to_yaml(self) -> str:
        """The manifest as YAML after comments: what it serves, how to apply and call it."""
        h = self.handoff
        served = SERVED_FORMATS[h.model_format]
        comments = [
            f"KServe InferenceService of kfnas export {h.experiment} {h.model_version} "
            f"({h.task_kind}, {h.study} trial {h.trial_id}), written by kfnas "
            f"{h.frameworks.get('kfnas', '')}.",
            "Apply: kubectl apply -n <namespace> -f inferenceservice.yaml (every version of the "
            "experiment has this name: applying a newer one rolls the service over to it).",
            f"storageUri holds {served.layout}.",
            f"Resources: {resources_source(self.settings)}.",
            f"Call: POST {served.path.format(name=self.name)} with {self.request()}",
            f"  ({self.signature} takes {INPUT_KINDS[self.inputs][0]}; see model_card.md.)",
            *(f"WARNING: {w}" for w in self.warnings),
        ]
        document = yaml.safe_dump(self.manifest(), sort_keys=False, default_flow_style=False)
        return "".join(f"# {line}\n" for line in comments) + document


def resources_source(settings: ServingSettings) -> str:
    """Where the serving resources come from, for the manifest's comments and the model card."""
    if settings.source:
        return f"from {settings.source}"
    return (
        f"kfnas defaults ({DEFAULT_CPU} CPU, {DEFAULT_MEMORY} memory, no accelerator): the export "
        "ran without a cluster profile's serving section; compile the pipeline with a profile "
        "that has one (pipelines/profiles/*.yaml) or edit spec.predictor.model.resources"
    )


def inference_service(
    handoff: Handoff,
    model_uri: str,
    settings: ServingSettings | None = None,
    *,
    handoff_uri: str = "",
) -> InferenceService:
    """The KServe ``InferenceService`` serving the SavedModel of ``handoff``.

    Args:
        handoff: The export's manifest (its signatures, experiment and version).
        model_uri: The store URI of the folder holding the numbered SavedModel folder
            (``<export>/serving/model``).
        settings: How to serve it (the profile's serving section); ``None``: kfnas's defaults.
        handoff_uri: Where ``handoff.json`` is, recorded in an annotation.

    Returns:
        The service; its ``warnings`` say why KServe could not serve it as written.
    """
    settings = settings or ServingSettings()
    signature = "serving_default" if "serving_default" in handoff.signatures else ""
    signature = signature or next(iter(handoff.signatures))
    uri = storage_uri(model_uri, settings.pvcs)
    warnings = []
    if not uri.startswith(KSERVE_SCHEMES):
        warnings.append(
            f"storageUri {uri} is a local path, which KServe cannot download: it needs a gs://, "
            "s3:// or pvc:// URI. Put the store on gs:// or s3:// (store_root), or on a PVC that "
            "the cluster profile's export section mounts (then it is pvc://), or copy "
            f"{SERVING_MODEL_DIR}/ of this export there and set storageUri to it"
        )
    if problem := SERVED_FORMATS[handoff.model_format].problem:
        warnings.append(problem)
    version = handoff.saved_model.rstrip("/").rpartition("/")[2]
    if handoff.model_format == MODEL_FORMAT and not (version.isascii() and version.isdigit()):
        warnings.append(
            f"the SavedModel ({handoff.saved_model}) is not in a numbered folder, which TF "
            f"Serving needs: copy it to <storageUri>/1/ (an export of an earlier kfnas release)"
        )
    return InferenceService(
        name=service_name(handoff.experiment),
        storage_uri=uri,
        signature=signature,
        inputs=_input_kind(handoff.signatures[signature]),
        outputs=tuple(handoff.signatures[signature]["outputs"]),
        settings=settings,
        handoff=handoff,
        handoff_uri=handoff_uri,
        warnings=tuple(warnings),
    )


def _input_kind(signature: Mapping[str, Any]) -> str:
    """The kind of input (``INPUT_KINDS``) of a signature as ``handoff.json`` records it."""
    inputs = list(signature["inputs"].values())
    if len(inputs) == 1:
        dtype, shape = inputs[0]["dtype"], inputs[0]["shape"]
        if dtype == "string" and shape is not None and len(shape) == 1:
            return "encoded-images"
        if dtype == "uint8" and shape is not None and len(shape) == 4:
            return "image-tensor"
    return "tensor"


def _toleration(t: Toleration) -> dict[str, Any]:
    fields = {
        "key": t.key,
        "operator": t.operator,
        "value": t.value,
        "effect": t.effect,
        "tolerationSeconds": t.toleration_seconds,
    }
    return {k: v for k, v in fields.items() if v not in ("", None)}
