"""``kfnas schedule`` against the local stand-in of the KFP v2beta1 API of ``test_submit.py``.

The stand-in is extended here with the recurring-run endpoints ``kfp.Client`` calls
(``kfp_server_api``'s ``RecurringRunServiceApi``): create (``POST /recurringruns``), list
(``GET /recurringruns``) and disable (``POST /recurringruns/{id}:disable``). Creating checks the
body the way the API server does and records it: it must name an uploaded pipeline version and an
existing experiment, carry a cron trigger, and give only the version's parameters, typed. The
tests then check what kfnas asked for: the cron expression, ``max_concurrency`` 1, ``no_catchup``
true unless ``--catchup``, and the parameters. Invalid input fails before any request.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator

import pytest
from test_submit import (  # the stand-in of the KFP API, and its fixtures' helpers
    ApiError,
    KfpStandIn,
    _hermetic_kfp_client,  # noqa: F401 - an autouse fixture, used by being here
    _serve,
)

from kfnas.cli import main
from kfnas.pipelines.kfp_api import KfpApiError
from kfnas.pipelines.parameters import ParameterError
from kfnas.pipelines.retraining import build_retraining_pipeline
from kfnas.pipelines.schedule import (
    ScheduleError,
    ScheduleSpec,
    create_schedule,
    parse_cron,
    prepare_schedule,
)

HANDOFF = "gs://nas-bucket/runs/demo/export/latest"
NEW_DATA = {"train_data": "gs://nas-data/new/train-*.tfrecord"}
RETRAINING_PARAMETERS = set(inspect.signature(build_retraining_pipeline().pipeline_func).parameters)


@dataclasses.dataclass
class ScheduleStandIn(KfpStandIn):
    """The KFP API stand-in with recurring runs."""

    recurring_runs: dict[str, dict] = dataclasses.field(default_factory=dict)

    def create_recurring_run(self, query: dict, body: dict) -> dict:
        reference = body.get("pipeline_version_reference") or {}
        version = self.versions.get(reference.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise self.refuse(f"recurring run of unknown pipeline version {reference}", 404, 5)
        if body.get("experiment_id") not in self.experiments:
            raise self.refuse(f"recurring run in unknown experiment {body.get('experiment_id')}")
        if "pipeline_spec" in body or not (body.get("trigger") or {}).get("cron_schedule"):
            raise self.refuse(f"recurring run without a version's spec or a cron trigger: {body}")
        self.check_parameters(
            version["pipeline_version_id"], body["runtime_config"].get("parameters") or {}
        )
        run = {**body, "recurring_run_id": self.new_id("recurring"), "created_at": "2026"}
        run["status"] = "ENABLED" if body.get("mode") == "ENABLE" else "DISABLED"
        self.recurring_runs[run["recurring_run_id"]] = run
        return run

    def list_recurring_runs(self, query: dict, body: object) -> dict:
        found = list(self.recurring_runs.values())
        start, size = int(query.get("page_token") or 0), int(query.get("page_size") or 10)
        page = found[start : start + min(size, 2)]  # the stand-in pages by 2 at most
        more = start + len(page) < len(found)
        # The proto field is ``recurringRuns`` (not snake_case, unlike the others): so it is sent.
        answer = {"recurringRuns": page, "total_size": len(found)} if page else {}
        return {**answer, "next_page_token": str(start + len(page))} if more else answer

    def disable_recurring_run(self, query: dict, body: object, run_id: str) -> dict:
        if run_id not in self.recurring_runs:
            raise ApiError(404, 5, f"RecurringRun {run_id} not found")
        self.recurring_runs[run_id] |= {"status": "DISABLED", "mode": "DISABLE"}
        return {}

    def routes(self):
        import re

        from test_submit import API

        table = [
            ("POST", "/recurringruns", self.create_recurring_run),
            ("GET", "/recurringruns", self.list_recurring_runs),
            ("POST", "/recurringruns/(?P<run_id>[^/:]+):disable", self.disable_recurring_run),
        ]
        ours = [(m, re.compile(f"^{API}{path}$"), handler) for m, path, handler in table]
        return super().routes() + ours


@pytest.fixture
def kfp_api() -> Iterator[ScheduleStandIn]:
    """A single-user KFP API stand-in with recurring runs."""
    yield from _serve(ScheduleStandIn())


def test_schedule_creates_a_recurring_run_of_the_retraining_pipeline(kfp_api):
    prepared = prepare_schedule(
        ScheduleSpec("0 0 3 * * *", profile="cpu-only", experiment="retrain"),
        HANDOFF,
        strings={**NEW_DATA, "tolerance": "0.02"},
    )
    info = create_schedule(prepared, kfp_api.host)

    (pipeline,) = kfp_api.pipelines.values()
    (version,) = kfp_api.versions.values()
    (experiment,) = kfp_api.experiments.values()
    (run,) = kfp_api.recurring_runs.values()
    assert (pipeline["display_name"], experiment["display_name"]) == ("kfnas-retraining", "retrain")
    spec, platform = kfp_api.packages[version["pipeline_version_id"]]
    assert spec["pipelineInfo"]["name"] == "kfnas-retraining" and "platforms" in platform
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == RETRAINING_PARAMETERS
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert run["experiment_id"] == experiment["experiment_id"]
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(run["max_concurrency"]) == 1 and run["no_catchup"] is True
    assert run["mode"] == "ENABLE" and run["display_name"] == f"retrain {HANDOFF}"
    assert run["runtime_config"]["parameters"] == {
        **NEW_DATA,
        "tolerance": 0.02,
        "handoff_uri": HANDOFF,
    }
    assert (info.recurring_run_id, info.status) == (run["recurring_run_id"], "ENABLED")
    assert (info.cron, info.max_concurrency, info.no_catchup) == ("0 0 3 * * *", 1, True)


def test_a_schedule_uploads_a_version_once_and_catchup_is_asked_for(kfp_api):
    spec = ScheduleSpec("30 2 * * SUN", profile="cpu-only", name="weekly", catchup=True)
    for _ in range(3):
        create_schedule(prepare_schedule(spec, HANDOFF, NEW_DATA), kfp_api.host)

    # The first upload creates the pipeline (and its first version), the second a version named
    # after the YAML's hash, and the third finds that version: the same YAML is uploaded once.
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.versions) == 2
    first, second, third = kfp_api.recurring_runs.values()
    assert second["pipeline_version_reference"] == third["pipeline_version_reference"]
    assert first["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * SUN"  # at second 0
    assert first["no_catchup"] is False and first["display_name"] == "weekly"


def test_kfnas_schedule_lists_and_disables_recurring_runs(kfp_api, capsys):
    base = ["schedule", "--host", kfp_api.host, "--handoff", HANDOFF, "--profile", "cpu-only"]
    for name in ("nightly", "hourly", "weekly"):
        args = [
            *base,
            "--cron",
            "@daily",
            "--name",
            name,
            "--param",
            f"train_data={NEW_DATA['train_data']}",
        ]
        assert main(args) == 0
    assert "Created recurring run 'weekly'" in capsys.readouterr().out
    first = next(iter(kfp_api.recurring_runs))

    assert main(["schedule", "--host", kfp_api.host, "--disable", first]) == 0
    assert f"Disabled recurring run {first}" in capsys.readouterr().out
    assert main(["schedule", "--host", kfp_api.host, "--list"]) == 0

    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if "recurring-" in line}
    assert set(rows) == {"nightly", "hourly", "weekly"}  # three, over two pages
    assert "DISABLED" in rows["nightly"] and "ENABLED" in rows["weekly"]
    assert "@daily" in rows["hourly"]


def test_disabling_an_unknown_recurring_run_says_so(kfp_api):
    from kfnas.pipelines.schedule import disable_schedule

    with pytest.raises(KfpApiError, match=r"answered 404 .*RecurringRun nope not found"):
        disable_schedule(kfp_api.host, "nope")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * *", "4 fields; KFP expects six, second minute hour day-of-month month"),
        ("61 0 3 * * *", "the second field has '61', outside 0-59"),
        ("0 0 25 * * *", "the hour field has '25', outside 0-23"),
        ("0 0 3 * FOO *", "the month field has 'FOO', outside 1-12 or JAN..."),
        ("0 0 3 * * 1-9", "the day-of-week field has '9', outside 0-6"),
        ("0 */0 * * * *", "the minute field has step '0'"),
        ("0 0 5-2 * * *", "the hour field has the empty range '5-2'"),
        ("@sometimes", "unknown descriptor"),
        ("", "0 fields"),
    ],
)
def test_an_invalid_cron_is_refused_before_any_request(kfp_api, capsys, cron, message):
    args = ["schedule", "--host", kfp_api.host, "--handoff", HANDOFF, "--cron", cron]
    status = main([*args, "--param", f"train_data={NEW_DATA['train_data']}"])

    out = capsys.readouterr().out.replace("\n", "")
    assert status == 2
    assert f"invalid cron expression {cron!r}" in out and message in out
    assert "e.g. '0 0 3 * * *' (03:00 every day)" in out
    assert kfp_api.requests == []


@pytest.mark.parametrize(
    ("cron", "kfp_cron", "note"),
    [
        ("0 0 3 * * *", "0 0 3 * * *", ""),
        ("0  3 * * 1-5", "0 0 3 * * 1-5", "five fields, read as at second 0"),
        ("0 0 9 ? * MON-FRI", "0 0 9 ? * MON-FRI", ""),
        ("0 0,30 */2 1-15 JAN-JUN *", "0 0,30 */2 1-15 JAN-JUN *", ""),
        ("@every 6h", "@every 6h", ""),
    ],
)
def test_valid_cron_expressions_are_read_as_kfp_reads_them(cron, kfp_cron, note):
    read, said = parse_cron(cron)
    assert read == kfp_cron and said.startswith(note)


def test_missing_new_data_and_relative_paths_are_refused_before_any_request(kfp_api):
    spec = ScheduleSpec("@daily", profile="cpu-only")
    with pytest.raises(ParameterError, match="parameter 'train_data' has no default"):
        prepare_schedule(spec, HANDOFF)
    with pytest.raises(ScheduleError, match=r"handoff_uri 'store/demo/export/latest'.*relative"):
        prepare_schedule(spec, "store/demo/export/latest", NEW_DATA)
    with pytest.raises(ScheduleError, match="--max-concurrency must be at least 1"):
        prepare_schedule(dataclasses.replace(spec, max_concurrency=0), HANDOFF, NEW_DATA)
    assert kfp_api.requests == []


def test_kfnas_schedule_needs_a_handoff_and_a_host(capsys):
    assert main(["schedule", "--cron", "@daily"]) == 2
    assert "--handoff URI" in capsys.readouterr().out
    assert main(["schedule", "--list"]) == 2
    assert "--host URL or KFP_HOST" in capsys.readouterr().out
