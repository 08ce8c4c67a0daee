"""Submitting the search pipeline to a KFP cluster: compile, check, upload, start a run.

``kfnas submit`` runs it in two halves:

1. ``prepare_submission`` (contacts nothing; ``--dry-run`` stops here): compiles the search
   pipeline for a cluster profile, reads its run parameters from the compiled spec
   (``pipelines/parameters.py``), checks the given arguments against them (unknown names, types)
   and validates the experiment spec the run would start with, exactly as the ``init_experiment``
   step will (spec text, named settings, the compiled rounds, overrides), except the data check:
   the data (often ``gs://``) need not be readable from here. Relative local paths (the store,
   the data) are refused: each step runs in its own pod. Everything a person can get wrong fails
   here, before a GPU is requested.
2. ``submit`` goes through ``kfp.Client``: it checks that the host answers as the KFP API,
   uploads the YAML as the pipeline ``pipeline_name`` (or, if a pipeline of that name exists, as a
   new version of it named ``<kfnas version>-<content hash>``; the same YAML again reuses its
   version), gets or creates the KFP experiment and creates a run of that version.

Problems found before anything is sent are ``SubmitError``s; the server's are ``KfpApiError``s
(``pipelines/kfp_api.py``): an unreachable host, a refused token (401/403), a wrong host or path
(404). Both are ``SpecError``s: one message that says what to fix.

To submit another pipeline: give ``prepare_submission`` a compile step for it (see
``compile.py``) and a way to validate its arguments; ``submit`` works for any compiled pipeline.
``kfnas schedule`` (``pipelines/schedule.py``) reuses ``upload_pipeline`` for the retraining
pipeline and creates a recurring run instead of a run.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kfnas.config.settings import ExperimentSettings
from kfnas.config.spec import ExperimentSpec
from kfnas.config.strict import SpecError
from kfnas.config.studies import PROXY
from kfnas.pipelines.compile import compile_pipeline
from kfnas.pipelines.kfp_api import KfpApiError, client_call, connect, listed, name_filter
from kfnas.pipelines.parameters import (
    PipelineParameter,
    pipeline_parameters,
    typed_arguments,
    unknown_name_message,
)
from kfnas.pipelines.search import PIPELINE_NAME
from kfnas.validation import experiment_spec
from kfnas.version import __version__

#: Defaults of ``kfnas submit``.
DEFAULT_PROFILE = "gke-gpu"
DEFAULT_EXPERIMENT = "kfnas"
DEFAULT_ROUNDS, DEFAULT_TRIALS = 2, 3

#: The pipeline parameters that carry the spec text and the dotted overrides.
SPEC_PARAMETER, OVERRIDES_PARAMETER = "spec_yaml", "overrides"


class SubmitError(SpecError):
    """A submission that cannot go ahead; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class SubmitSpec:
    """What to compile and where it goes on the cluster.

    Attributes:
        profile: Cluster profile name or YAML path (see ``pipelines/profiles.py``).
        rounds: Proxy rounds compiled into the DAG; ``None``: the experiment spec's.
        trials_per_round: Compiled default of ``trials_per_round``; ``None``: the spec's.
        parallelism: Trials at once (compiled into the DAG).
        top_k: Compiled default of ``top_k``.
        pipeline_name: The KFP pipeline to upload to (a new version if it exists).
        experiment: The KFP experiment the run goes in (created if missing).
        run_name: The run's name; empty: ``<experiment spec name> <date time>``.
    """

    profile: str | Path = DEFAULT_PROFILE
    rounds: int | None = None
    trials_per_round: int | None = None
    parallelism: int = 2
    top_k: int = 1
    pipeline_name: str = PIPELINE_NAME
    experiment: str = DEFAULT_EXPERIMENT
    run_name: str = ""


@dataclasses.dataclass(frozen=True)
class Submission:
    """A compiled and checked submission: everything that would be sent, nothing sent yet.

    Attributes:
        spec: The options it was prepared with.
        package_yaml: The compiled pipeline YAML.
        parameters: The pipeline's run parameters, read from ``package_yaml``.
        arguments: The run arguments, typed: only those given (the rest keep their defaults).
        rounds: The compiled rounds.
        trials_per_round: The compiled default of ``trials_per_round``.
        version_name: The name a new pipeline version gets: ``<kfnas version>-<hash>``.
        run_name: The run's name.
        experiment_spec: The experiment spec the run starts with, validated and resolved.
    """

    spec: SubmitSpec
    package_yaml: str
    parameters: dict[str, PipelineParameter]
    arguments: dict[str, Any]
    rounds: int
    trials_per_round: int
    version_name: str
    run_name: str
    experiment_spec: ExperimentSpec

    def summary(self) -> list[str]:
        """What would be sent, in a few lines for a person (the token is never part of it)."""
        spec, exp = self.spec, self.experiment_spec
        lines = [
            f"Pipeline {spec.pipeline_name}: {self.rounds} rounds, parallelism {spec.parallelism}, "
            f"profile {spec.profile}; a new version would be named {self.version_name}",
            f"Experiment {exp.name!r} in {exp.store_root}: spec valid (data not checked here)",
            f"KFP experiment {spec.experiment!r}, run {self.run_name!r}, parameters:",
        ]
        for name, value in self.arguments.items():
            shown = json.dumps(value)
            lines.append(f"  {name} = {shown if len(shown) <= 100 else shown[:90] + '...'}")
        return lines if self.arguments else [*lines, "  (none: every parameter's default)"]


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    """What ``submit`` created or reused on the cluster."""

    run_id: str
    run_url: str
    pipeline_id: str
    pipeline_version_id: str
    pipeline_version_name: str
    experiment_id: str
    new_pipeline: bool
    new_version: bool


def _compile(spec: SubmitSpec, rounds: int, trials: int) -> str:
    with tempfile.TemporaryDirectory(prefix="kfnas-submit-") as folder:
        path = Path(folder) / "pipeline.yaml"
        compile_pipeline(spec.profile, rounds, trials, spec.parallelism, spec.top_k, path)
        return path.read_text()


def _with_spec(
    arguments: dict[str, Any],
    parameters: Mapping[str, PipelineParameter],
    spec_yaml: str | None,
    overrides: Sequence[str],
) -> dict[str, Any]:
    """Adds the spec text and ``--set`` overrides to the arguments, as ``kfnas run`` passes them."""
    out = dict(arguments)
    for name, given in ((SPEC_PARAMETER, spec_yaml), (OVERRIDES_PARAMETER, overrides)):
        if given and name not in parameters:
            raise SubmitError(unknown_name_message(name, parameters))
    if spec_yaml is not None:
        if SPEC_PARAMETER in out:
            raise SubmitError(
                f"the spec is given twice: as a file and as the {SPEC_PARAMETER} parameter; "
                f"give one of them"
            )
        out[SPEC_PARAMETER] = spec_yaml
    if overrides:
        out[OVERRIDES_PARAMETER] = [*out.get(OVERRIDES_PARAMETER, []), *overrides]
    return out


def _run_spec(
    arguments: Mapping[str, Any], parameters: Mapping[str, PipelineParameter], **counts: int
) -> ExperimentSpec:
    """The spec ``init_experiment`` will resolve from these arguments (without the data check).

    Every pipeline parameter that is an ``ExperimentSettings`` field is a setting, with its given
    value or its default; ``counts`` are the compiled ones (``rounds``) and defaults not yet known.
    """
    values = {name: arguments.get(name, p.default) for name, p in parameters.items()}
    fields = {f.name for f in dataclasses.fields(ExperimentSettings)}
    settings = {name: value for name, value in values.items() if name in fields} | counts
    try:
        return experiment_spec(
            values.get(SPEC_PARAMETER) or "",
            values.get(OVERRIDES_PARAMETER) or [],
            ExperimentSettings.from_kwargs(settings),
        )
    except SpecError as e:
        raise SubmitError(
            f"{e}\nFix the spec file, --set, or the run parameters; nothing was submitted."
        ) from e


def _cluster_problems(spec: ExperimentSpec) -> list[str]:
    """Paths that cannot work on a cluster: relative local paths (each step has its own pod)."""
    paths = {f"data.{f.name}": getattr(spec.data, f.name) for f in dataclasses.fields(spec.data)}
    paths["store_root"] = spec.store_root
    return [
        f"{key} {value!r} is a relative path on this machine, which the pipeline's pods do not "
        f"have: give gs://bucket/... or an absolute path on a volume the profile mounts"
        for key, value in paths.items()
        if value and "://" not in value and not value.startswith("/")
    ]


def prepare_submission(
    spec: SubmitSpec,
    values: Mapping[str, Any] | None = None,
    strings: Mapping[str, str] | None = None,
    spec_yaml: str | None = None,
    overrides: Sequence[str] = (),
) -> Submission:
    """Compiles the search pipeline and checks the run's arguments and spec; contacts nothing.

    Args:
        spec: What to compile, and the names on the cluster.
        values: Typed run arguments (a ``--params`` file).
        strings: ``--param NAME=VALUE`` arguments as strings, read by the parameter's type; they
            win over ``values``.
        spec_yaml: The experiment spec text (the ``spec`` file), for the ``spec_yaml`` parameter.
        overrides: Dotted overrides (``--set``), appended to the ``overrides`` parameter.

    Returns:
        The submission, ready for ``submit``.

    Raises:
        SubmitError: The arguments or the experiment spec are invalid (every problem listed), or
            the profile or a count is.
    """
    rounds, trials = spec.rounds or DEFAULT_ROUNDS, spec.trials_per_round or DEFAULT_TRIALS
    try:
        package = _compile(spec, rounds, trials)
    except (SpecError, ValueError) as e:
        raise SubmitError(f"cannot compile the pipeline: {e}") from e
    parameters = pipeline_parameters(package)
    arguments = _with_spec(
        typed_arguments(parameters, values, strings), parameters, spec_yaml, overrides
    )
    # The spec's own counts fill the compiled ones not given, as in `kfnas run`.
    given = {"rounds": spec.rounds or 0}
    if "trials_per_round" not in arguments:
        given["trials_per_round"] = spec.trials_per_round or 0
    budget = _run_spec(arguments, parameters, **given).study(PROXY).budget
    assert budget is not None  # resolved
    counts = (spec.rounds or budget.rounds, spec.trials_per_round or budget.trials_per_round)
    if counts != (rounds, trials):
        rounds, trials = counts
        package = _compile(spec, rounds, trials)
        parameters = pipeline_parameters(package)
    resolved = _run_spec(arguments, parameters, rounds=rounds)
    slots = arguments.get("parallelism", parameters["parallelism"].default)
    if slots < 1:
        raise SubmitError(
            f"parallelism {slots} would run no trial: give the trials to run at once (at least "
            f"1) with --param parallelism=N or --parallelism; nothing was submitted."
        )
    if problems := _cluster_problems(resolved):
        raise SubmitError(
            "the experiment cannot run on a cluster:\n  - " + "\n  - ".join(problems) + "\nSet "
            "them in the spec, with --set, or with the run parameters (kfnas submit --help)."
        )
    digest = hashlib.sha256(package.encode()).hexdigest()[:12]
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    return Submission(
        spec=spec,
        package_yaml=package,
        parameters=parameters,
        arguments=arguments,
        rounds=rounds,
        trials_per_round=trials,
        version_name=f"{__version__}-{digest}",
        run_name=spec.run_name or f"{resolved.name} {now}",
        experiment_spec=resolved,
    )


def upload_pipeline(
    client: Any,
    host: str,
    name: str,
    version_name: str,
    description: str,
    namespace: str | None,
    package: Path,
) -> tuple[str, str, str, bool, bool]:
    """Uploads a compiled pipeline as ``name``, or as version ``version_name`` of it if it exists.

    A version of that name (the same content, when named after its hash) is reused as it is.

    Returns:
        The pipeline id, version id and version name, and whether each was created.

    Raises:
        KfpApiError: The server refuses a request, or has several pipelines named ``name``.
    """
    found = listed(
        host,
        f"listing pipelines named {name!r}",
        lambda: client.list_pipelines(filter=name_filter(name), namespace=namespace, page_size=2),
        "pipelines",
    )
    if len(found) > 1:
        raise KfpApiError(
            f"KFP at {host} has {len(found)} pipelines named {name!r}: give --pipeline-name a "
            f"name of its own"
        )
    if not found:  # The server names the first version after the pipeline.
        pipeline = client_call(
            host,
            f"uploading pipeline {name!r}",
            lambda: client.upload_pipeline(str(package), name, description, namespace=namespace),
        )
        first = listed(
            host,
            f"listing the versions of pipeline {name!r}",
            lambda: client.list_pipeline_versions(
                pipeline.pipeline_id, page_size=1, sort_by="created_at desc"
            ),
            "pipeline_versions",
        )
        if not first:
            raise KfpApiError(f"KFP at {host} uploaded pipeline {name!r} without a version")
        version = first[0]
        return pipeline.pipeline_id, version.pipeline_version_id, version.display_name, True, True
    pipeline_id = found[0].pipeline_id
    same = listed(
        host,
        f"listing the versions of pipeline {name!r}",
        lambda: client.list_pipeline_versions(
            pipeline_id, filter=name_filter(version_name), page_size=1
        ),
        "pipeline_versions",
    )
    if same:  # The same YAML was uploaded before: run that version.
        return pipeline_id, same[0].pipeline_version_id, version_name, False, False
    version = client_call(
        host,
        f"uploading version {version_name!r} of pipeline {name!r}",
        lambda: client.upload_pipeline_version(
            str(package), version_name, pipeline_id=pipeline_id, description=description
        ),
    )
    return pipeline_id, version.pipeline_version_id, version_name, False, True


def submit(
    submission: Submission,
    host: str,
    namespace: str | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> SubmitResult:
    """Uploads a prepared submission and starts its run through ``kfp.Client``.

    Args:
        submission: From ``prepare_submission``.
        host: The KFP UI or API base URL, e.g. ``http://localhost:8080``.
        namespace: The Kubernetes namespace (multi-user KFP); ``None`` for single-user KFP.
        token: A bearer token for the API (``existing_token`` of ``kfp.Client``).
        insecure: Allow sending the token over plain http to another machine.

    Returns:
        The run's id and URL in the KFP UI, and the pipeline, version and experiment used.

    Raises:
        KfpApiError: The host is unreachable, refuses the token, is not the KFP API, or refuses
            a request (the message says what to fix).
    """
    host = host.strip().rstrip("/")
    client = connect(host, namespace, token, insecure)
    with tempfile.TemporaryDirectory(prefix="kfnas-submit-") as folder:
        package = Path(folder) / f"{submission.spec.pipeline_name}.yaml"
        package.write_text(submission.package_yaml)
        spec = submission.spec
        description = f"kfnas {__version__}: profile {spec.profile}, {submission.rounds} rounds"
        pipeline_id, version_id, version_name, new_pipeline, new_version = upload_pipeline(
            client,
            host,
            spec.pipeline_name,
            submission.version_name,
            description,
            namespace,
            package,
        )
    experiment = client_call(
        host,
        f"getting or creating experiment {submission.spec.experiment!r}",
        lambda: client.create_experiment(submission.spec.experiment, namespace=namespace),
    )
    run = client_call(
        host,
        f"creating run {submission.run_name!r}",
        lambda: client.run_pipeline(
            experiment.experiment_id,
            submission.run_name,
            params=submission.arguments,
            pipeline_id=pipeline_id,
            version_id=version_id,
        ),
    )
    return SubmitResult(
        run_id=run.run_id,
        run_url=f"{host}/#/runs/details/{run.run_id}",
        pipeline_id=pipeline_id,
        pipeline_version_id=version_id,
        pipeline_version_name=version_name,
        experiment_id=experiment.experiment_id,
        new_pipeline=new_pipeline,
        new_version=new_version,
    )
