"""``kfnas submit`` against a local stand-in of the KFP v2beta1 REST API.

The stand-in is a real ``ThreadingHTTPServer`` on 127.0.0.1 that answers the endpoints
``kfp.Client`` calls (read from ``kfp/client/client.py`` and ``kfp_server_api``) the way the KFP
API server does: JSON with snake_case fields, grpc-gateway error bodies, 404 for unknown routes,
409 for a duplicate name. It keeps pipelines, versions, experiments and runs, and checks what it
receives: uploads must be compiled KFP pipelines (parsed into ``PipelineSpec``/``PlatformSpec``
protos as the server does), list filters must be well formed, runs must name an existing version
and experiment and give only the version's parameters with their types, and, when it is given a
token, every request must carry it. Anything it does not expect is recorded and fails the test.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from kfnas.cli import main
from kfnas.pipelines.kfp_api import KfpApiError
from kfnas.pipelines.parameters import pipeline_parameters, typed_arguments
from kfnas.pipelines.search import build_search_pipeline
from kfnas.pipelines.submit import SubmitSpec, prepare_submission, submit
from kfnas.version import __version__

API = "/apis/v2beta1"
TOKEN = "s3cret-token-value"
# The demo spec's store and data are relative local paths, which a cluster cannot use.
ON_CLUSTER = {
    "store_root": "gs://nas-bucket/runs",
    "train_data": "gs://nas-data/train-*.tfrecord",
    "validation_data": "gs://nas-data/validation-*.tfrecord",
}
SEARCH_PARAMETERS = set(inspect.signature(build_search_pipeline().pipeline_func).parameters)
_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "STRING": lambda v: isinstance(v, str),
    "NUMBER_INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "NUMBER_DOUBLE": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "LIST": lambda v: isinstance(v, list),
    "STRUCT": lambda v: isinstance(v, dict),
}


class ApiError(Exception):
    """An error answer: HTTP status, grpc code and message, as grpc-gateway writes them."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclasses.dataclass
class KfpStandIn:
    """The state and the checks of the stand-in KFP API server."""

    token: str | None = None
    multi_user: bool = False
    uploads_allowed: bool = True
    host: str = ""
    pipelines: dict[str, dict] = dataclasses.field(default_factory=dict)
    versions: dict[str, dict] = dataclasses.field(default_factory=dict)
    packages: dict[str, list[dict]] = dataclasses.field(default_factory=dict)
    experiments: dict[str, dict] = dataclasses.field(default_factory=dict)
    runs: dict[str, dict] = dataclasses.field(default_factory=dict)
    requests: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    auth: list[str | None] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    _ids: Any = dataclasses.field(default_factory=itertools.count)

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    def created_at(self) -> str:
        return f"2026-01-01T00:00:{len(self.requests):02d}Z"

    def refuse(self, message: str, status: int = 400, code: int = 3) -> ApiError:
        """Records a request the real server would refuse (the test fails) and answers it."""
        self.unexpected.append(message)
        return ApiError(status, code, message)

    # --- checks -----------------------------------------------------------------------------

    def matches(self, item: dict, query: dict[str, str]) -> bool:
        if "filter" not in query:
            return True
        predicates = json.loads(query["filter"]).get("predicates", [])
        for p in predicates:
            if p.get("operation") not in (1, "EQUALS") or p.get("key") != "display_name":
                raise self.refuse(f"filter the stand-in does not know: {p}")
            if item["display_name"] != p.get("stringValue"):
                return False
        return True

    def package(self, body: bytes, content_type: str) -> list[dict]:
        """The uploaded pipeline file: multipart field ``uploadfile``, a compiled pipeline."""
        message = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        files = {
            part.get_param("name", header="content-disposition"): part
            for part in message.iter_parts()
        }
        if list(files) != ["uploadfile"]:
            raise self.refuse(f"upload fields {list(files)}, expected ['uploadfile']")
        docs = list(yaml.safe_load_all(files["uploadfile"].get_payload(decode=True)))
        try:  # What the API server does with an upload: strict protobuf parsing.
            json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
            for platform in docs[1:]:
                json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
        except json_format.ParseError as e:
            raise self.refuse(f"invalid pipeline spec: {e}") from None
        return docs

    def check_parameters(self, version_id: str, parameters: dict[str, Any]) -> None:
        spec = self.packages[version_id][0]
        declared = spec["root"]["inputDefinitions"]["parameters"]
        for name, value in parameters.items():
            if name not in declared:
                raise self.refuse(f"run parameter {name!r} is not a pipeline parameter")
            kind = declared[name]["parameterType"]
            if not _TYPE_CHECKS[kind](value):
                raise self.refuse(f"run parameter {name}={value!r} is not of type {kind}")

    # --- endpoints ----------------------------------------------------------------------------

    def healthz(self, query: dict, body: Any) -> dict:
        return {"multi_user": self.multi_user, "pipeline_store": "database"}

    def list_pipelines(self, query: dict, body: Any) -> dict:
        namespace = query.get("namespace", "")
        found = [
            p
            for p in self.pipelines.values()
            if p["namespace"] == namespace and self.matches(p, query)
        ]
        return {"pipelines": found, "total_size": len(found)} if found else {}

    def upload_pipeline(self, query: dict, body: tuple[bytes, str]) -> dict:
        name, namespace = query.get("name", ""), query.get("namespace", "")
        docs = self.package(*body)
        if not self.uploads_allowed:  # what KFP's own authorization answers
            raise ApiError(403, 7, f"User is not authorized to create pipelines in {namespace!r}")
        if any(
            p["display_name"] == name and p["namespace"] == namespace
            for p in self.pipelines.values()
        ):
            raise ApiError(409, 6, f"Pipeline with name {name} already exists")
        pipeline = {
            "pipeline_id": self.new_id("pipeline"),
            "name": name,
            "display_name": name,
            "description": query.get("description", ""),
            "created_at": self.created_at(),
            "namespace": namespace,
        }
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.add_version(pipeline["pipeline_id"], name, query.get("description", ""), docs)
        return pipeline

    def add_version(self, pipeline_id: str, name: str, description: str, docs: list) -> dict:
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self.new_id("version"),
            "name": name,
            "display_name": name,
            "description": description,
            "created_at": self.created_at(),
        }
        self.versions[version["pipeline_version_id"]] = version
        self.packages[version["pipeline_version_id"]] = docs
        return version

    def list_versions(self, query: dict, body: Any, pipeline_id: str) -> dict:
        if pipeline_id not in self.pipelines:
            raise ApiError(404, 5, f"Pipeline {pipeline_id} not found")
        found = [
            v
            for v in self.versions.values()
            if v["pipeline_id"] == pipeline_id and self.matches(v, query)
        ]
        if query.get("sort_by") == "created_at desc":
            found.sort(key=lambda v: v["created_at"], reverse=True)
        found = found[: int(query.get("page_size") or 10)]
        return {"pipeline_versions": found, "total_size": len(found)} if found else {}

    def upload_version(self, query: dict, body: tuple[bytes, str]) -> dict:
        pipeline_id, name = query.get("pipelineid", ""), query.get("name", "")
        docs = self.package(*body)
        if pipeline_id not in self.pipelines:
            raise self.refuse(f"upload_version to unknown pipeline {pipeline_id!r}", 404, 5)
        if any(
            v["pipeline_id"] == pipeline_id and v["name"] == name for v in self.versions.values()
        ):
            raise ApiError(409, 6, f"Pipeline version with name {name} already exists")
        return self.add_version(pipeline_id, name, query.get("description", ""), docs)

    def list_experiments(self, query: dict, body: Any) -> dict:
        namespace = query.get("namespace", "")
        found = [
            e
            for e in self.experiments.values()
            if e["namespace"] == namespace and self.matches(e, query)
        ]
        return {"experiments": found, "total_size": len(found)} if found else {}

    def create_experiment(self, query: dict, body: dict) -> dict:
        if set(body) - {"display_name", "description", "namespace"} or not body.get("display_name"):
            raise self.refuse(f"experiment body {body}")
        experiment = {
            "experiment_id": self.new_id("experiment"),
            "display_name": body["display_name"],
            "description": body.get("description", ""),
            "created_at": self.created_at(),
            "namespace": body.get("namespace", ""),
            "storage_state": "AVAILABLE",
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def create_run(self, query: dict, body: dict) -> dict:
        reference = body.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise self.refuse(f"run of unknown pipeline version {reference}", 404, 5)
        if body.get("experiment_id") not in self.experiments:
            raise self.refuse(f"run in unknown experiment {body.get('experiment_id')!r}", 404, 5)
        if "pipeline_spec" in body:
            raise self.refuse("run with an inline pipeline_spec as well as a version")
        parameters = (body.get("runtime_config") or {}).get("parameters") or {}
        self.check_parameters(version["pipeline_version_id"], parameters)
        run = {**body, "run_id": self.new_id("run"), "state": "PENDING"}
        run["created_at"] = self.created_at()
        self.runs[run["run_id"]] = run
        return run

    def routes(self) -> list[tuple[str, re.Pattern, Callable[..., dict]]]:
        table = [
            ("GET", "/healthz", self.healthz),
            ("GET", "/pipelines", self.list_pipelines),
            ("POST", "/pipelines/upload", self.upload_pipeline),
            ("POST", "/pipelines/upload_version", self.upload_version),
            ("GET", "/pipelines/(?P<pipeline_id>[^/]+)/versions", self.list_versions),
            ("GET", "/experiments", self.list_experiments),
            ("POST", "/experiments", self.create_experiment),
            ("POST", "/runs", self.create_run),
        ]
        return [(m, re.compile(f"^{API}{path}$"), handler) for m, path, handler in table]


def _handler(standin: KfpStandIn) -> type[BaseHTTPRequestHandler]:
    routes = standin.routes()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def answer(self, status: int, payload: Any, content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_any(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                standin.requests.append((self.command, url.path))
                standin.auth.append(self.headers.get("Authorization"))
                if standin.token and self.headers.get("Authorization") != f"Bearer {standin.token}":
                    # What an auth proxy in front of KFP (Istio, oauth2-proxy) answers.
                    return self.answer(401, b"Jwt verification fails", "text/plain")
                matches = [
                    (m, handler)
                    for method, pattern, handler in routes
                    if method == self.command and (m := pattern.match(url.path))
                ]
                if not matches:
                    standin.unexpected.append(f"unknown route {self.command} {url.path}")
                    return self.answer(
                        404, {"error": "Not Found", "code": 5, "message": "Not Found"}
                    )
                (match, endpoint), *_ = matches
                content_type = self.headers.get("Content-Type", "")
                if content_type.startswith("multipart/"):
                    body: Any = (raw, content_type)
                else:
                    body = json.loads(raw) if raw else None
                try:
                    return self.answer(200, endpoint(query, body, **match.groupdict()))
                except ApiError as e:
                    error = {
                        "error": e.message,
                        "code": e.code,
                        "message": e.message,
                        "details": [],
                    }
                    return self.answer(e.status, error)

        do_GET = do_POST = do_DELETE = do_PATCH = handle_any  # noqa: N815 - http.server's names

    return Handler


@pytest.fixture(autouse=True)
def _hermetic_kfp_client(tmp_path, monkeypatch):
    """No user KFP context, endpoint or token from this machine leaks into the tests."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT", "KFP_HOST", "KFP_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _serve(standin: KfpStandIn) -> Iterator[KfpStandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(standin))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    standin.host = f"http://127.0.0.1:{server.server_port}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert not standin.unexpected, f"kfp.Client sent what the KFP API refuses: {standin.unexpected}"


@pytest.fixture
def params_file(tmp_path) -> str:
    """A ``--params`` file giving the demo spec a store and data a cluster can use."""
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(ON_CLUSTER))
    return str(path)


@pytest.fixture
def kfp_api() -> Iterator[KfpStandIn]:
    """A single-user KFP API stand-in without authentication."""
    yield from _serve(KfpStandIn())


@pytest.fixture
def kfp_api_with_auth() -> Iterator[KfpStandIn]:
    """A multi-user KFP API stand-in behind a proxy that wants ``Bearer TOKEN``."""
    yield from _serve(KfpStandIn(token=TOKEN, multi_user=True))


def _versions_of(standin: KfpStandIn, pipeline_id: str) -> list[dict]:
    return [v for v in standin.versions.values() if v["pipeline_id"] == pipeline_id]


def test_a_first_submit_uploads_the_pipeline_and_starts_a_run(kfp_api):
    values = {**ON_CLUSTER, "num_classes": 5, "top_k": 2}
    strings = {"latency_target_ms": "12", "num_classes": "4"}  # strings win over values

    submission = prepare_submission(
        SubmitSpec(profile="cpu-only", rounds=2, trials_per_round=2),
        values,
        strings,
        overrides=["budget.train_steps=20"],
    )
    result = submit(submission, kfp_api.host)

    (pipeline,) = kfp_api.pipelines.values()
    (version,) = kfp_api.versions.values()
    (experiment,) = kfp_api.experiments.values()
    (run,) = kfp_api.runs.values()
    assert (pipeline["display_name"], experiment["display_name"]) == ("kfnas-search", "kfnas")
    assert result.pipeline_id == pipeline["pipeline_id"] == version["pipeline_id"]
    assert result.pipeline_version_id == version["pipeline_version_id"]
    assert (result.new_pipeline, result.new_version) == (True, True)
    assert result.run_id == run["run_id"]
    assert result.run_url == f"{kfp_api.host}/#/runs/details/{run['run_id']}"
    # The upload is the compiled kfnas search pipeline, with its parameters and counts.
    spec, platform = kfp_api.packages[version["pipeline_version_id"]]
    assert spec["pipelineInfo"]["name"] == "kfnas-search"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == SEARCH_PARAMETERS
    assert spec["pipelineInfo"]["description"].startswith(
        "kfnas neural architecture search: 2 rounds"
    )
    assert "platforms" in platform
    # The run names that version and experiment and carries exactly the given parameters, typed.
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["experiment_id"] == experiment["experiment_id"] == result.experiment_id
    assert run["display_name"].startswith("demo ")
    parameters = run["runtime_config"]["parameters"]
    assert parameters == {
        **ON_CLUSTER,
        "num_classes": 4,
        "top_k": 2,
        "latency_target_ms": 12.0,
        "overrides": ["budget.train_steps=20"],
    }
    assert isinstance(parameters["num_classes"], int) and isinstance(parameters["top_k"], int)
    assert isinstance(parameters["latency_target_ms"], float)
    assert set(kfp_api.requests) == {
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/{pipeline['pipeline_id']}/versions"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    }
    assert set(kfp_api.auth) == {None}


def test_a_second_submit_uploads_a_version_and_the_same_yaml_reuses_it(kfp_api):
    first = submit(
        prepare_submission(SubmitSpec(profile="cpu-only", rounds=2), ON_CLUSTER), kfp_api.host
    )
    spec = SubmitSpec(profile="cpu-only", rounds=3, run_name="three rounds")

    second = submit(prepare_submission(spec, ON_CLUSTER), kfp_api.host)
    uploads = kfp_api.requests.count(("POST", f"{API}/pipelines/upload_version"))
    third = submit(prepare_submission(spec, ON_CLUSTER), kfp_api.host)

    assert second.pipeline_id == third.pipeline_id == first.pipeline_id
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.experiments) == 1
    versions = _versions_of(kfp_api, first.pipeline_id)
    assert [v["display_name"] for v in versions] == ["kfnas-search", second.pipeline_version_name]
    assert re.fullmatch(rf"{re.escape(__version__)}-[0-9a-f]{{12}}", second.pipeline_version_name)
    assert (second.new_pipeline, second.new_version) == (False, True)
    assert (third.new_version, third.pipeline_version_id) == (False, second.pipeline_version_id)
    assert kfp_api.requests.count(("POST", f"{API}/pipelines/upload_version")) == uploads == 1
    newest = kfp_api.packages[second.pipeline_version_id][0]
    assert "3 rounds" in newest["pipelineInfo"]["description"]
    runs = list(kfp_api.runs.values())
    assert [r["pipeline_version_reference"]["pipeline_version_id"] for r in runs] == [
        first.pipeline_version_id,
        second.pipeline_version_id,
        second.pipeline_version_id,
    ]
    assert [r["display_name"] for r in runs[1:]] == ["three rounds", "three rounds"]
    assert {r["experiment_id"] for r in runs} == {first.experiment_id}


def test_the_token_and_namespace_go_with_every_request(kfp_api_with_auth):
    submission = prepare_submission(
        SubmitSpec(profile="cpu-only", experiment="nas-team"),
        ON_CLUSTER,
        {"experiment_name": "cars"},
    )
    result = submit(submission, kfp_api_with_auth.host, namespace="team-a", token=TOKEN)

    assert set(kfp_api_with_auth.auth) == {f"Bearer {TOKEN}"}
    (pipeline,) = kfp_api_with_auth.pipelines.values()
    (experiment,) = kfp_api_with_auth.experiments.values()
    assert (pipeline["namespace"], experiment["namespace"]) == ("team-a", "team-a")
    assert experiment["display_name"] == "nas-team"
    run = kfp_api_with_auth.runs[result.run_id]
    assert run["runtime_config"]["parameters"] == {**ON_CLUSTER, "experiment_name": "cars"}
    assert run["display_name"].startswith("cars ")


def test_a_multi_user_kfp_needs_a_namespace(kfp_api_with_auth):
    with pytest.raises(KfpApiError, match="multi-user: pass --namespace"):
        submit(
            prepare_submission(SubmitSpec(profile="cpu-only"), ON_CLUSTER),
            kfp_api_with_auth.host,
            token=TOKEN,
        )
    assert kfp_api_with_auth.requests == [("GET", f"{API}/healthz")]


def test_a_refused_token_gives_a_token_hint_and_is_never_printed(
    kfp_api_with_auth, params_file, capsys
):
    status = main(
        f"submit --host {kfp_api_with_auth.host} --params {params_file} --token wrong".split()
    )

    out = capsys.readouterr().out
    assert status == 2
    assert "401" in out and "--token" in out and "KFP_TOKEN" in out
    assert "wrong" not in out
    assert kfp_api_with_auth.requests == [("GET", f"{API}/healthz")]
    assert not kfp_api_with_auth.runs


def test_a_request_refused_later_gives_the_token_hint_too(kfp_api):
    kfp_api.uploads_allowed = False

    with pytest.raises(KfpApiError, match="refused uploading pipeline 'kfnas-search' \\(403") as e:
        submit(
            prepare_submission(SubmitSpec(profile="cpu-only"), ON_CLUSTER),
            kfp_api.host,
            token=TOKEN,
        )
    assert "not authorized to create pipelines" in str(e.value) and "--token" in str(e.value)
    assert TOKEN not in str(e.value)
    assert not kfp_api.pipelines and not kfp_api.runs


def test_a_wrong_path_gives_a_host_hint(kfp_api):
    with pytest.raises(KfpApiError, match=r"404 Not Found.*Check --host"):
        submit(
            prepare_submission(SubmitSpec(profile="cpu-only"), ON_CLUSTER),
            f"{kfp_api.host}/pipeline/v1",
        )
    assert kfp_api.unexpected == [f"unknown route GET /pipeline/v1{API}/healthz"]
    kfp_api.unexpected.clear()  # the 404 was the point


def test_an_unreachable_host_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(KfpApiError, match=f"cannot reach KFP at http://127.0.0.1:{port}"):
        submit(prepare_submission(SubmitSpec(), ON_CLUSTER), f"http://127.0.0.1:{port}")


def test_unknown_and_badly_typed_parameters_are_refused_before_any_request(kfp_api, capsys):
    status = main(
        f"submit --host {kfp_api.host} --profile cpu-only --param trails_per_round=4 "
        "--param top_k=two --param overrides=x".split()
    )

    out = capsys.readouterr().out
    assert status == 2
    assert "no parameter 'trails_per_round' (did you mean 'trials_per_round'?)" in out
    assert ", ".join(sorted(SEARCH_PARAMETERS)) in out.replace("\n", "")
    assert "--param top_k=two: top_k is an integer (NUMBER_INTEGER)" in out
    assert "overrides is a JSON list" in out
    assert kfp_api.requests == []


def test_a_parallelism_of_zero_is_refused_before_any_request(kfp_api, capsys):
    status = main(f"submit --host {kfp_api.host} --profile cpu-only --param parallelism=0".split())

    out = capsys.readouterr().out
    assert status == 2
    assert "parallelism 0 would run no trial" in out and "--param parallelism=N" in out
    assert kfp_api.requests == []


def test_a_params_file_value_of_the_wrong_type_is_refused(kfp_api, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("experiment_name: 2024\nlatency_target_ms: fast\n")

    status = main(["submit", "--host", kfp_api.host, "--params", str(params)])

    out = capsys.readouterr().out
    assert status == 2
    assert "experiment_name: 2024 is not a string (STRING)" in out and "quote" in out
    assert "latency_target_ms: 'fast' is not a number (NUMBER_DOUBLE)" in out
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "studies.proxy.space=no_such_space"], "unknown search space 'no_such_space'"),
        (["--param", "num_classes=-3"], "task.num_classes"),
        (["--set", "budget.train_stepz=5"], "budget.train_stepz"),
    ],
)
def test_a_bad_spec_is_refused_before_any_request(kfp_api, capsys, args, message):
    status = main(["submit", "--host", kfp_api.host, "--profile", "cpu-only", *args])

    out = capsys.readouterr().out.replace("\n", "")
    assert status == 2
    assert message in out and "nothing was submitted" in out
    assert kfp_api.requests == []


def test_dry_run_compiles_checks_and_contacts_nothing(kfp_api, params_file, capsys):
    status = main(
        f"submit --dry-run --host {kfp_api.host} --token {TOKEN} --rounds 3 --params {params_file} "
        "--param store_root=gs://nas-bucket/other --set budget.train_steps=30".split()
    )

    out = capsys.readouterr().out
    assert status == 0
    assert "Pipeline kfnas-search: 3 rounds" in out and "profile gke-gpu" in out
    assert "Experiment 'demo' in gs://nas-bucket/other: spec valid" in out
    assert 'store_root = "gs://nas-bucket/other"' in out and "train_data" in out
    assert 'overrides = ["budget.train_steps=30"]' in out
    assert f"Dry run: nothing was sent to {kfp_api.host}" in out and TOKEN not in out
    assert kfp_api.requests == []


def test_kfnas_submit_end_to_end(kfp_api, tmp_path, capsys, monkeypatch):
    spec = tmp_path / "cars.yaml"
    text = (
        "name: cars\ntask: {kind: detection, num_classes: 2, image_size: 128}\n"
        "data: {train: gs://cars/train-*.tfrecord, validation: gs://cars/val-*.tfrecord,\n"
        "       annotations: gs://cars/val.json}\n"
        "studies: {proxy: {space: spinenet_mbconv}}\n"
        "budget: {rounds: 3, trials_per_round: 4, train_steps: 100, batch_size: 8}\n"
        "objectives: {metric: AP}\nstore_root: gs://cars-nas/store\n"
    )
    spec.write_text(text)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"top_k": 2, "overrides": ["seed=7"], "model_version": "v2"}))
    monkeypatch.setenv("KFP_HOST", kfp_api.host)

    status = main(
        [
            *f"submit {spec} --set budget.batch_size=4 --params {params} --param".split(),
            *["model_version=v3", "--profile", "nvidia-gpu", "--run-name", "cars 1"],
        ]
    )

    out = capsys.readouterr().out
    assert status == 0, out
    (run,) = kfp_api.runs.values()
    assert f"{kfp_api.host}/#/runs/details/{run['run_id']}" in out
    assert run["display_name"] == "cars 1"
    assert run["runtime_config"]["parameters"] == {
        "top_k": 2,
        "overrides": ["seed=7", "budget.batch_size=4"],
        "model_version": "v3",
        "spec_yaml": text,
    }
    # Rounds and the trials default come from the spec, as in `kfnas run`.
    (version,) = kfp_api.versions.values()
    spec_doc = kfp_api.packages[version["pipeline_version_id"]][0]
    assert "3 rounds" in spec_doc["pipelineInfo"]["description"]
    declared = spec_doc["root"]["inputDefinitions"]["parameters"]
    assert declared["trials_per_round"]["defaultValue"] == 4


def test_local_paths_are_refused_before_any_request(kfp_api, params_file, capsys):
    status = main(
        f"submit --host {kfp_api.host} --params {params_file} --set data.annotations=/mnt/a.json "
        "--set data.train=local/train-*.tfrecord".split()
    )

    out = capsys.readouterr().out.replace("\n", "")
    assert status == 2
    assert "data.train 'local/train-*.tfrecord' is a relative path on this machine" in out
    assert "store_root" not in out and "data.annotations" not in out  # gs:// and absolute: fine
    assert kfp_api.requests == []


def test_kfnas_submit_needs_a_host(capsys):
    assert main(["submit", "--profile", "cpu-only"]) == 2
    assert "--host URL or KFP_HOST" in capsys.readouterr().out


def test_parameters_are_read_from_the_compiled_pipeline_and_typed():
    submission = prepare_submission(SubmitSpec(profile="cpu-only", top_k=3), ON_CLUSTER)
    parameters = pipeline_parameters(submission.package_yaml)

    assert set(parameters) == SEARCH_PARAMETERS
    assert (parameters["top_k"].type, parameters["top_k"].default) == ("NUMBER_INTEGER", 3)
    assert parameters["overrides"].default == [] and parameters["spec_yaml"].default == "demo"
    assert all(p.description for p in parameters.values())
    typed = typed_arguments(
        parameters,
        {"latency_target_ms": 5, "num_classes": 3.0},
        {"overrides": '["seed=1"]', "proxy_train_steps": "+40"},
    )
    assert typed == {
        "latency_target_ms": 5.0,
        "num_classes": 3,
        "overrides": ["seed=1"],
        "proxy_train_steps": 40,
    }
    assert type(typed["latency_target_ms"]) is float and type(typed["num_classes"]) is int
    assert submission.arguments == ON_CLUSTER and submission.rounds == 4  # the demo spec's
