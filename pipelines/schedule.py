"""Recurring retraining on a KFP cluster: ``kfnas schedule`` creates, lists and disables them.

``kfnas schedule --cron EXPR --handoff URI`` runs it in two halves, like ``kfnas submit``
(``pipelines/submit.py``):

1. ``prepare_schedule`` (contacts nothing; ``--dry-run`` stops here): checks the cron expression
   (``parse_cron``), compiles the retraining pipeline (``pipelines/retraining.py``) for a cluster
   profile, and checks the run arguments against its parameters (``pipelines/parameters.py``);
   relative local paths are refused (each step runs in its own pod).
2. ``create_schedule`` goes through ``kfp.Client``: uploads the pipeline (or a new version of it,
   ``upload_pipeline``), gets or creates the KFP experiment and calls ``create_recurring_run``
   with the cron schedule, ``max_concurrency`` (1: a retraining never overlaps another, so each
   compares with the version the one before left current) and ``no_catchup`` (true unless asked:
   a paused schedule does not start every run it missed when enabled again).

``list_schedules`` and ``disable_schedule`` are ``kfnas schedule --list`` and ``--disable ID``.

KFP's scheduler reads cron expressions with a seconds field (robfig/cron): six fields, ``second
minute hour day-of-month month day-of-week``, e.g. ``0 0 3 * * *`` for 03:00 every day. A
five-field (classic) expression is accepted and read as at second 0 (``0 3 * * *`` becomes
``0 0 3 * * *``); the descriptors ``@hourly``, ``@daily``, ... and ``@every 6h`` pass as they are.

To schedule another pipeline: compile it in ``prepare_schedule`` (a ``compile_<name>`` of
``compile.py``) and give it its own pipeline name; ``create_schedule`` works for any.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kfnas.config.strict import SpecError
from kfnas.pipelines.compile import compile_retraining
from kfnas.pipelines.kfp_api import client_call, connect
from kfnas.pipelines.parameters import PipelineParameter, pipeline_parameters, typed_arguments
from kfnas.pipelines.retraining import PIPELINE_NAME
from kfnas.pipelines.submit import DEFAULT_EXPERIMENT, DEFAULT_PROFILE, upload_pipeline
from kfnas.version import __version__

#: The pipeline parameter that names the model to retrain.
HANDOFF_PARAMETER = "handoff_uri"
#: Parameters that hold paths, which a cluster's pods must be able to read.
_PATH_PARAMETERS = (HANDOFF_PARAMETER, "train_data", "validation_data", "annotations")
_EXAMPLE = "'0 0 3 * * *' (03:00 every day) or '0 30 2 * * SUN' (02:30 every Sunday)"
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_EVERY = re.compile(r"^@every (\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class ScheduleError(SpecError):
    """A schedule that cannot be created; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    any_day: bool = False  # accepts '?'


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31, any_day=True),
    _Field("month", 1, 12, tuple(_MONTHS)),
    _Field("day-of-week", 0, 6, tuple(_DAYS), any_day=True),
)


def _value(text: str, field: _Field) -> int:
    if text.upper() in field.names:
        return field.names.index(text.upper()) + field.low
    if not text.isdigit() or not field.low <= int(text) <= field.high:
        allowed = f"{field.low}-{field.high}" + (f" or {field.names[0]}..." if field.names else "")
        raise ValueError(f"the {field.name} field has {text!r}, outside {allowed}")
    return int(text)


def _check_field(text: str, field: _Field) -> None:
    for item in text.split(","):
        span, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            raise ValueError(f"the {field.name} field has step {step!r}: give a positive integer")
        if span == "*" or (span == "?" and field.any_day and not step):
            continue
        low, _, high = span.partition("-")
        if _value(low, field) > (_value(high, field) if high else _value(low, field)):
            raise ValueError(f"the {field.name} field has the empty range {span!r}")


def parse_cron(expression: str) -> tuple[str, str]:
    """Checks a cron expression and returns it as KFP's scheduler reads it.

    Args:
        expression: Six fields (``second minute hour day-of-month month day-of-week``), five
            (read as at second 0), or a descriptor (``@daily``, ``@every 6h``).

    Returns:
        ``(expression for KFP, how it was read)``; the second is empty when nothing changed.

    Raises:
        ScheduleError: What is wrong with it, and an example.
    """
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() in _DESCRIPTORS or _EVERY.match(text):
            return text, ""
        raise ScheduleError(
            f"invalid cron expression {expression!r}: unknown descriptor; use one of "
            f"{', '.join(sorted(_DESCRIPTORS))}, '@every 6h', or six fields, e.g. {_EXAMPLE}"
        )
    fields = text.split(" ") if text else []
    note = ""
    if len(fields) == 5:
        fields, note = ["0", *fields], "five fields, read as at second 0 (KFP's cron has seconds)"
    if len(fields) != 6:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: {len(fields)} fields; KFP expects six, "
            f"second minute hour day-of-month month day-of-week, e.g. {_EXAMPLE}"
        )
    try:
        for value, field in zip(fields, _FIELDS, strict=True):
            _check_field(value, field)
    except ValueError as e:
        raise ScheduleError(f"invalid cron expression {expression!r}: {e}; e.g. {_EXAMPLE}") from e
    return " ".join(fields), note


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """What to schedule and where it goes on the cluster.

    Attributes:
        cron: The cron expression (see ``parse_cron``).
        profile: Cluster profile name or YAML path (see ``pipelines/profiles.py``).
        pipeline_name: The KFP pipeline to upload to (a new version if it exists).
        experiment: The KFP experiment the runs go in (created if missing).
        name: The recurring run's name; empty: ``retrain <handoff URI>``.
        max_concurrency: Runs of it at once (1: retrainings never overlap).
        catchup: Whether runs missed while it was paused are started when it resumes.
    """

    cron: str
    profile: str | Path = DEFAULT_PROFILE
    pipeline_name: str = PIPELINE_NAME
    experiment: str = DEFAULT_EXPERIMENT
    name: str = ""
    max_concurrency: int = 1
    catchup: bool = False


@dataclasses.dataclass(frozen=True)
class PreparedSchedule:
    """A compiled and checked schedule: everything that would be sent, nothing sent yet."""

    spec: ScheduleSpec
    cron: str
    cron_note: str
    package_yaml: str
    parameters: dict[str, PipelineParameter]
    arguments: dict[str, Any]
    version_name: str
    name: str

    def summary(self) -> list[str]:
        """What would be sent, in a few lines for a person."""
        spec = self.spec
        catchup = "catches up missed runs" if spec.catchup else "no catch-up"
        lines = [
            f"Pipeline {spec.pipeline_name}, profile {spec.profile}; a new version would be "
            f"named {self.version_name}",
            f"Recurring run {self.name!r} in KFP experiment {spec.experiment!r}: cron "
            f"{self.cron!r}{' (' + self.cron_note + ')' if self.cron_note else ''}, "
            f"max concurrency {spec.max_concurrency}, {catchup}; parameters:",
        ]
        return lines + [f"  {name} = {value!r}" for name, value in self.arguments.items()]


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """One recurring run on the cluster, as ``--list`` shows it."""

    recurring_run_id: str
    name: str
    cron: str
    status: str
    max_concurrency: int | None
    no_catchup: bool | None


def prepare_schedule(
    spec: ScheduleSpec,
    handoff_uri: str,
    values: Mapping[str, Any] | None = None,
    strings: Mapping[str, str] | None = None,
) -> PreparedSchedule:
    """Checks the cron expression, compiles the retraining pipeline, checks the arguments.

    Contacts nothing: everything a person can get wrong fails here, before any request.

    Raises:
        ScheduleError: The cron expression, concurrency or a path is invalid.
        ParameterError: A run argument is unknown or of the wrong type, or one without a default
            (``train_data``) is missing.
    """
    cron, note = parse_cron(spec.cron)
    if spec.max_concurrency < 1:
        raise ScheduleError(f"--max-concurrency must be at least 1, got {spec.max_concurrency}")
    with tempfile.TemporaryDirectory(prefix="kfnas-schedule-") as folder:
        package = compile_retraining(spec.profile, Path(folder) / "pipeline.yaml").read_text()
    parameters = pipeline_parameters(package)
    arguments = typed_arguments(
        parameters, values, {**(strings or {}), HANDOFF_PARAMETER: handoff_uri}
    )
    relative = [
        f"{name} {value!r}"
        for name, value in arguments.items()
        if name in _PATH_PARAMETERS and value and "://" not in value and not value.startswith("/")
    ]
    if relative:
        raise ScheduleError(
            f"{', '.join(relative)}: relative paths on this machine, which the pipeline's pods "
            f"do not have; give gs://bucket/... or an absolute path on a volume the profile mounts"
        )
    digest = hashlib.sha256(package.encode()).hexdigest()[:12]
    return PreparedSchedule(
        spec=spec,
        cron=cron,
        cron_note=note,
        package_yaml=package,
        parameters=parameters,
        arguments=arguments,
        version_name=f"{__version__}-{digest}",
        name=spec.name or f"retrain {handoff_uri}",
    )


def create_schedule(
    prepared: PreparedSchedule,
    host: str,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> ScheduleInfo:
    """Uploads the pipeline (or a version) and creates the recurring run through ``kfp.Client``.

    ``insecure`` allows sending the token over plain http to another machine (``connect``).

    Raises:
        KfpApiError: The host is unreachable, refuses the token, is not the KFP API, or refuses
            a request; or it is plain http to another machine and ``insecure`` is not set.
    """
    host = host.strip().rstrip("/")
    client = connect(host, namespace, token, insecure)
    spec = prepared.spec
    with tempfile.TemporaryDirectory(prefix="kfnas-schedule-") as folder:
        package = Path(folder) / f"{spec.pipeline_name}.yaml"
        package.write_text(prepared.package_yaml)
        description = f"kfnas {__version__}: retraining, profile {spec.profile}"
        pipeline_id, version_id, *_ = upload_pipeline(
            client, host, spec.pipeline_name, prepared.version_name, description, namespace, package
        )
    experiment = client_call(
        host,
        f"getting or creating experiment {spec.experiment!r}",
        lambda: client.create_experiment(spec.experiment, namespace=namespace),
    )
    created = client_call(
        host,
        f"creating recurring run {prepared.name!r}",
        lambda: client.create_recurring_run(
            experiment.experiment_id,
            prepared.name,
            description=f"kfnas schedule: {spec.pipeline_name} on {prepared.cron!r}",
            cron_expression=prepared.cron,
            max_concurrency=spec.max_concurrency,
            no_catchup=not spec.catchup,
            params=prepared.arguments,
            pipeline_id=pipeline_id,
            version_id=version_id,
        ),
    )
    return _info(created)


def _info(run: Any) -> ScheduleInfo:
    trigger = run.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else ""
    if not cron and trigger and trigger.periodic_schedule:
        cron = f"every {trigger.periodic_schedule.interval_second} s"
    return ScheduleInfo(
        recurring_run_id=run.recurring_run_id,
        name=run.display_name,
        cron=cron,
        status=run.status or ("ENABLED" if run.mode == "ENABLE" else "DISABLED"),
        max_concurrency=int(run.max_concurrency) if run.max_concurrency is not None else None,
        no_catchup=run.no_catchup,
    )


def list_schedules(
    host: str, namespace: str | None = None, token: str | None = None, insecure: bool = False
) -> list[ScheduleInfo]:
    """Every recurring run the cluster holds (of ``namespace`` in a multi-user KFP), page by page.

    Raises:
        KfpApiError: As for ``create_schedule``.
    """
    host = host.strip().rstrip("/")
    client = connect(host, namespace, token, insecure)
    out, token_page = [], ""
    while True:
        page = client_call(
            host,
            "listing recurring runs",
            lambda page_token=token_page: client.list_recurring_runs(
                page_token=page_token, page_size=100, namespace=namespace
            ),
        )
        out += [_info(run) for run in page.recurring_runs or []]
        token_page = page.next_page_token or ""
        if not token_page:
            return out


def disable_schedule(
    host: str,
    recurring_run_id: str,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> None:
    """Disables one recurring run: no new runs start (runs in progress go on).

    Raises:
        KfpApiError: As for ``create_schedule``; a 404 when there is no such recurring run.
    """
    host = host.strip().rstrip("/")
    client = connect(host, namespace, token, insecure)
    client_call(
        host,
        f"disabling recurring run {recurring_run_id!r}",
        lambda: client.disable_recurring_run(recurring_run_id),
    )
