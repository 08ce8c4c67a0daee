"""The model card of an exported model (``model_card.md``) and the search summary it shows.

``render_model_card(handoff)`` turns a ``kfnas.export.handoff.Handoff`` into readable Markdown: the
task, the data used, an architecture summary, the metrics on the evaluation data, latency, FLOPs and
parameters, how to call the SavedModel, how to serve it on KServe (when given the export's
``kfnas.export.kserve.InferenceService``), the search history in brief, known limits and
provenance. It is a pure function of the manifest (and the KServe manifest), so the card and
``handoff.json`` never disagree.
``study_summary`` and ``proxy_pairs`` compute the search history the manifest records, from trial
histories as ``TrialRecords.history`` returns them. No TensorFlow, no kfp, no store access here.

To add a section: write a ``_<section>(handoff) -> list[str]`` function returning its Markdown
lines (heading first) and add it to ``_SECTIONS``; to state another limit, add it to
``_limits``. The KServe section (``_kserve``) also reads the ``InferenceService`` and follows
``_serving``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kfnas.export.handoff import Handoff
from kfnas.records.trial import TrialResult, TrialSpec
from kfnas.tasks import TASKS
from kfnas.tasks.base import IMAGE_INPUTS, ModelInputs

if TYPE_CHECKING:  # kserve imports this module's neighbours; the card only reads its fields.
    from kfnas.export.kserve import InferenceService

History = Sequence[tuple[TrialSpec, TrialResult | None]]
#: Lines of the architecture summary shown before it is cut (the whole is in architecture.json).
SUMMARY_LINES = 40


def study_summary(study: str, space: str, history: History, metric: str) -> dict[str, Any]:
    """One study in brief: trials, completed, failed (or infeasible), best metric and reward."""
    results = [r for _, r in history if r is not None]
    done = [r for r in results if r.completed]
    scores = [r.metrics[metric] for r in done if metric in r.metrics]
    rewards = [r.reward for r in done if r.reward is not None]
    return {
        "study": study,
        "space": space,
        "trials": len(history),
        "completed": len(done),
        "failed": len(results) - len(done),
        "best_metric": max(scores) if scores else None,
        "best_reward": max(rewards) if rewards else None,
    }


def proxy_pairs(histories: Mapping[str, History], metric: str) -> list[tuple[float, float]]:
    """(proxy score, full-training score) of each completed retrained copy of a proposed trial.

    A retrained copy names its source (``TrialSpec.source_study``/``source_trial``); copies of
    copies (the final training of a validated trial) are left out, so the pairs compare the proxy
    task with full training, as the report's rank correlation does.
    """
    specs = {(s.study, s.trial_id): s for history in histories.values() for s, _ in history}
    scores = {
        (s.study, s.trial_id): r.metrics[metric]
        for history in histories.values()
        for s, r in history
        if r is not None and r.completed and metric in r.metrics
    }
    pairs = []
    for key, spec in specs.items():
        source = specs.get((spec.source_study, spec.source_trial))
        if source is None or source.source_study:
            continue
        proxy, full = scores.get((source.study, source.trial_id)), scores.get(key)
        if proxy is not None and full is not None:
            pairs.append((proxy, full))
    return pairs


def architecture_summary(arch_json: str, max_lines: int = SUMMARY_LINES) -> list[str]:
    """The architecture as short lines: its type, then one line per field (per item of lists)."""
    data = json.loads(arch_json)
    if not isinstance(data, dict):
        return [_compact(data)]
    lines = [_type_name(data)]
    for key, value in data.items():
        if key == "_type":
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{key}:")
            lines += [f"  {i}: {_compact(v)}" for i, v in enumerate(value)]
        else:
            lines.append(f"{key} = {_compact(value)}")
    if len(lines) > max_lines:
        cut = len(lines) - max_lines
        lines = [*lines[:max_lines], f"... ({cut} more lines: see architecture.json)"]
    return lines


def _type_name(value: Mapping[str, Any]) -> str:
    return str(value.get("_type", "")).rpartition(".")[2] or "object"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        fields = ", ".join(f"{k}={_compact(v)}" for k, v in value.items() if k != "_type")
        return f"{_type_name(value)}({fields})"
    if isinstance(value, list):
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    return json.dumps(value)


def _num(value: float | None, spec: str = ".4f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ") or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _overview(h: Handoff) -> list[str]:
    return [
        f"# Model card: {h.experiment} {h.model_version}",
        "",
        f"A {h.task_kind} model for {h.num_classes} classes on {_inputs(h).describe(h.input_size)}"
        f", found by neural architecture search in space `{h.space}` and exported on "
        f"{h.created} from {h.study} trial {h.trial_id} of experiment `{h.experiment}`. "
        f"The machine-readable manifest is `handoff.json` beside this card.",
    ]


def _inputs(h: Handoff) -> ModelInputs:
    """How the card words the model's inputs: the task kind's, else images'."""
    kind = TASKS.get(h.task_kind) if h.task_kind in TASKS else None
    return getattr(kind, "model_inputs", None) or IMAGE_INPUTS


#: ``Handoff.model_format`` -> how to load and call the exported model in Python.
CALLS = {
    "tensorflow": "`tf.saved_model.load('<this folder>/{folder}').signatures[NAME](inputs=...)`",
    "onnx": (
        "`onnxruntime.InferenceSession('<this folder>/{folder}/model.onnx').run(None, "
        "{{'input': x}})`, or the TorchScript module: "
        "`torch.jit.load('<this folder>/torchscript/model.pt')(x)`"
    ),
    "torchscript": "`torch.jit.load('<this folder>/torchscript/model.pt')(x)`",
}


def _serving(h: Handoff) -> list[str]:
    def tensors(spec: Mapping[str, Any]) -> str:
        shown = []
        for key, t in spec.items():
            shape = (
                "?"
                if t["shape"] is None
                else ", ".join("?" if d is None else str(d) for d in t["shape"])
            )
            shown.append(f"`{key}` {t['dtype']} [{shape}]")
        return "<br>".join(shown)

    rows = [
        (f"`{n}`", tensors(s["inputs"]), tensors(s["outputs"])) for n, s in h.signatures.items()
    ]
    return [
        "## How to call it",
        "",
        f"{CALLS[h.model_format].format(folder=h.saved_model)}; "
        f"`?` is a dimension of any size (any batch). {_inputs(h).serving_note}",
        "",
        *_table(("signature", "inputs", "outputs"), rows),
    ]


def _kserve(h: Handoff, service: InferenceService) -> list[str]:
    """How to serve the model on KServe: the manifest, how to apply it and an example request."""
    from kfnas.export.kserve import (
        INFERENCE_SERVICE_FILE,
        INPUT_KINDS,
        MODEL_FORMAT,
        resources_source,
    )

    resources = service.settings.resources()
    shown = resources_shown = "; ".join(
        f"{kind} " + ", ".join(f"{k} {v}" for k, v in values.items())
        for kind, values in resources.items()
    )
    uri = service.handoff_uri.rpartition("/")[0] or "<this folder>"
    yaml_uri = f"{uri}/{INFERENCE_SERVICE_FILE}"
    apply = (
        f"gcloud storage cat {yaml_uri} | kubectl apply -n <namespace> -f -"
        if yaml_uri.startswith("gs://")
        else f"kubectl apply -n <namespace> -f {yaml_uri}"
    )
    name, signature = service.name, service.signature
    if h.model_format != MODEL_FORMAT:
        return _kserve_v2(
            h, service, apply, f"{resources_shown}, {resources_source(service.settings)}"
        )
    lines = [
        "## Serving on KServe",
        "",
        f"`{INFERENCE_SERVICE_FILE}` beside this card is a KServe `InferenceService` "
        f"(`serving.kserve.io/v1beta1`, model format `tensorflow`: TensorFlow Serving) named "
        f"`{name}`. Its `storageUri` is `{service.storage_uri}`, whose numbered folder `1/` holds "
        f"the SavedModel above (TF Serving serves the highest number). Resources: {shown}, "
        f"{resources_source(service.settings)}. Every version of experiment `{h.experiment}` "
        f"has this name, so applying a newer version's manifest rolls the service over to it.",
        "",
        "```sh",
        apply,
        f"kubectl get inferenceservice {name} -n <namespace>  # READY True, then:",
        f"HOST=$(kubectl get inferenceservice {name} -n <namespace> -o jsonpath='{{.status.url}}'"
        " | cut -d/ -f3)",
        f'curl -H "Host: $HOST" -H "Content-Type: application/json" -d @request.json '
        f"http://<ingress>/v1/models/{name}:predict",
        "```",
        "",
        f"`request.json` names the signature `{signature}` "
        f"(annotation `kfnas.io/signature-name`), which takes {INPUT_KINDS[service.inputs][0]}:",
        "",
        "```json",
        service.request(),
        "```",
    ]
    if service.inputs == "encoded-images":
        lines += [
            "",
            "made from an image with:",
            "",
            "```sh",
            'python -c \'import base64, json, sys; print(json.dumps({"signature_name": '
            f'"{signature}", "instances": [{{"b64": base64.b64encode(open(sys.argv[1], '
            '"rb").read()).decode()}]}))\' image.png > request.json',
            "```",
        ]
    lines += [
        "",
        f'The answer is `{{"predictions": [...]}}`, one object per instance with the outputs '
        f"{', '.join(f'`{o}`' for o in service.outputs)} (the table above, without the batch "
        f"axis). The runtime's TF Serving must read SavedModels of TensorFlow "
        f"{h.frameworks.get('tensorflow') or 'of the export'}: use that version of the "
        f"`tensorflow/serving` image or a newer one (the profile's `serving.runtime_version`).",
    ]
    for warning in service.warnings:
        lines += ["", f"**Warning:** {warning}."]
    return lines


def _kserve_v2(h: Handoff, service: InferenceService, apply: str, resources: str) -> list[str]:
    """Serving a torch export (ONNX; TorchScript only with a warning) on KServe, protocol v2."""
    from kfnas.export.kserve import INFERENCE_SERVICE_FILE, SERVED_FORMATS

    served, name = SERVED_FORMATS[h.model_format], service.name
    lines = [
        "## Serving on KServe",
        "",
        f"`{INFERENCE_SERVICE_FILE}` beside this card is a KServe `InferenceService` "
        f"(`serving.kserve.io/v1beta1`, model format `{served.model_format}`, protocol "
        f"`{served.protocol}`) named `{name}`. Its `storageUri` is `{service.storage_uri}`, which "
        f"holds {served.layout}. Resources: {resources}. Every version of experiment "
        f"`{h.experiment}` has this name, so applying a newer version's manifest rolls the "
        f"service over to it.",
        "",
        "```sh",
        apply,
        f'curl -H "Host: $HOST" -H "Content-Type: application/json" -d @request.json '
        f"http://<ingress>{served.path.format(name=name)}",
        "```",
        "",
        "with `request.json` (the input flattened in row-major order into `data`):",
        "",
        "```json",
        service.request(),
        "```",
    ]
    for warning in service.warnings:
        lines += ["", f"**Warning:** {warning}."]
    return lines


def _data(h: Handoff) -> list[str]:
    rows = [
        ("training", f"`{h.data.get('train', '')}`"),
        ("evaluation (validation)", f"`{h.data.get('validation', '')}`"),
        ("annotations", f"`{h.data.get('annotations')}`" if h.data.get("annotations") else "-"),
    ]
    return ["## Data used", "", *_table(("split", "files"), rows)]


def _architecture(h: Handoff) -> list[str]:
    chain = " <- ".join(f"{s['study']} trial {s['trial_id']}" for s in h.lineage)
    return [
        "## Architecture",
        "",
        f"Search space `{h.space}`; lineage {chain}. `architecture.json` holds it whole "
        f"(`kfnas.spaces.base.load_architecture` rebuilds it from the space's own classes; so "
        f"does `arch_json` in `handoff.json`).",
        "",
        "```",
        *architecture_summary(h.arch_json),
        "```",
        *(
            ["", "Trained with these changes to the experiment's task (scaling, augmentation):", ""]
            + [f"- `{o}`" for o in h.task_overrides]
            if h.task_overrides
            else []
        ),
    ]


def _metrics(h: Handoff) -> list[str]:
    measured = {"latency_ms", "latency_p90_ms", "flops", "params", "memory_mb"}
    rows = [
        (f"**{k}**" if k == h.metric else k, _num(v))
        for k, v in sorted(h.metrics.items())
        if k not in measured
    ]
    rows.append(("reward", _num(h.reward)))
    cost = [
        ("latency (ms, batch 1, median on the latency device)", _num(h.latency_ms, ".2f")),
        ("FLOPs (M multiply-adds, batch 1)", _num(h.flops, ".1f", 1e6)),
        ("parameters", _num(h.params, ",.0f")),
    ]
    if "latency_p90_ms" in h.metrics:
        cost.insert(1, ("latency p90 (ms, batch 1)", _num(h.metrics["latency_p90_ms"], ".2f")))
    if "memory_mb" in h.metrics:
        cost.append(("peak accelerator memory (MB, batch 1)", _num(h.metrics["memory_mb"], ".1f")))
    return [
        "## Metrics on the evaluation data",
        "",
        f"The objective metric, `{h.metric}`, is in bold.",
        "",
        *_table(("metric", "value"), rows),
        "",
        "## Latency, FLOPs and parameters",
        "",
        *_table(("measure", "value"), cost),
    ]


def _history(h: Handoff) -> list[str]:
    rows = [
        (
            s["study"],
            f"`{s['space']}`",
            s["trials"],
            s["completed"],
            s["failed"],
            _num(s["best_metric"]),
            _num(s["best_reward"]),
        )
        for s in h.search_history
    ]
    tau = (
        f"Kendall's tau of proxy vs full-training `{h.metric}`: {h.kendall_tau:.3f} (1: the proxy "
        f"ranked the validated candidates as full training did)."
        if h.kendall_tau is not None
        else "Kendall's tau of proxy vs full-training scores: not computed (fewer than 2 "
        "validated candidates)."
    )
    header = (
        "study",
        "space",
        "trials",
        "completed",
        "failed or infeasible",
        f"best {h.metric}",
        "best reward",
    )
    return ["## Search history in brief", "", *_table(header, rows), "", tau]


def _limits(h: Handoff) -> list[str]:
    limits = [
        "Trained and evaluated only on the data named above. The metrics are on the validation "
        "data the search also used to choose this architecture, so they are optimistic: measure "
        "the model on held-out data of the target domain before relying on it. Data made by "
        "`kfnas make-data` or the demo is generated: a model trained on it has not learned "
        "real data.",
        "Latency was measured by the measurement step on the run's latency device (the cluster "
        "profile's `latency` section; this machine for a local run), one model at a time, at "
        "batch 1 on the model alone (median and 90th percentile of the timed runs), without "
        "image decoding or pre- and post-processing; if the serving hardware differs, measure "
        "again there.",
        "The proxy study trained each candidate briefly; its ranking can differ from full "
        "training (see Kendall's tau above), so a better architecture may have been passed over.",
        _inputs(h).limit(h.input_size),
    ]
    if h.task_kind in TASKS:
        limits.extend(TASKS.get(h.task_kind).known_limits)
    return ["## Known limits", "", *(f"- {text}" for text in limits)]


def _provenance(h: Handoff) -> list[str]:
    rows = [
        ("experiment", f"`{h.experiment_uri}`"),
        ("KFP run id", h.run_id or "none recorded (a local run, or not passed)"),
        ("image", f"`{h.image}`" if h.image else "not recorded"),
        *((name, version or "not installed") for name, version in sorted(h.frameworks.items())),
    ]
    return ["## Provenance", "", *_table(("what", "value"), rows)]


_SECTIONS: tuple[Callable[[Handoff], list[str]], ...] = (
    _overview,
    _data,
    _architecture,
    _metrics,
    _serving,
    _history,
    _limits,
    _provenance,
)


def render_model_card(handoff: Handoff, service: InferenceService | None = None) -> str:
    """The model card of ``handoff`` as Markdown text.

    Args:
        handoff: The export's manifest.
        service: The export's KServe ``InferenceService`` (``kfnas.export.kserve``); given, the
            card says how to serve the model on KServe, after how to call it.
    """
    lines: list[str] = []
    for section in _SECTIONS:
        lines += [*section(handoff), ""]
        if section is _serving and service is not None:
            lines += [*_kserve(handoff, service), ""]
    return "\n".join(lines)
