"""The live view: the report served from the store, its state endpoint, and what it does on errors.

Each test starts a ``Dashboard`` on port 0 in a thread and asks it with urllib, like a browser.
Most pass a small renderer that lists the finished trials, so they test the server and not the
report (``tests/views/test_reports.py`` does that); ``test_the_real_report_is_served`` serves
``render_experiment``'s page.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.store import Experiment, ExperimentLayout, StoreError, open_experiment, open_store
from kfnas.validation import experiment_spec
from kfnas.views import dashboard as live
from kfnas.views.dashboard import Dashboard, PortInUseError, ProgressScanner, State

SPEC = """
name: dash-test
task: {kind: classification}
studies:
  proxy: {space: mnasnet}
budget: {rounds: 2, trials_per_round: 2}
"""
NAME = "dash-test"
# urllib would send a request for 127.0.0.1 through an http_proxy of the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _write_experiment(store_root: str) -> str:
    spec = experiment_spec(SPEC, [f"store_root={store_root}"])
    open_store(store_root).write_text(ExperimentLayout(NAME).experiment_json(), spec.to_json())
    return f"{store_root}/{NAME}"


def _spec(trial_id: int, study: str = "proxy") -> TrialSpec:
    return TrialSpec(NAME, study, trial_id, 1, "mnasnet", "{}", "{}")


def _finish(exp: Experiment, trial_id: int, value: float = 0.5) -> None:
    result = TrialResult(trial_id, TrialStatus.COMPLETED, {"accuracy": value}, value)
    exp.records.write_result("proxy", result)


class StubReport:
    """A renderer: one line per trial with a result, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, exp: Experiment) -> str:
        self.calls += 1
        done = [i for i in exp.records.trial_ids("proxy") if exp.records.read_result("proxy", i)]
        lines = "".join(f"<p>proxy trial {i} finished</p>" for i in done)
        return f"<!DOCTYPE html><html><body><h1>report of {exp.spec.name}</h1>{lines}</body></html>"


@pytest.fixture
def exp(tmp_path) -> Experiment:
    """Proxy trials 1, 2 and 3 proposed; trial 1 finished."""
    exp = open_experiment(_write_experiment(str(tmp_path / "store")))
    for trial_id in (1, 2, 3):
        exp.records.write_spec(_spec(trial_id))
    _finish(exp, 1)
    return exp


@pytest.fixture
def stub() -> StubReport:
    return StubReport()


@pytest.fixture
def served(exp, stub) -> Iterator[Dashboard]:
    with Dashboard(exp.uri, port=0, refresh_s=0.5, render=stub) as dashboard:
        yield dashboard


def request(url: str, method: str = "GET", headers: dict | None = None):
    """(status, headers, body text) of a request, error statuses included."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=30) as response:
            return response.status, response.headers, response.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read().decode("utf-8")


def get_state(dashboard: Dashboard) -> dict:
    status, headers, body = request(f"{dashboard.url}api/state")
    assert status == 200 and headers["Content-Type"] == "application/json"
    return json.loads(body)


def test_the_page_is_the_report_with_the_live_script(served, stub):
    status, headers, page = request(served.url)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "<h1>report of dash-test</h1><p>proxy trial 1 finished</p>" in page
    script = page.index('fetch("api/state"')
    assert page.index("<h1>report of") < script < page.rindex("</body>")
    assert json.dumps(get_state(served)["fingerprint"]) in page
    assert "live view disconnected" in page and "sessionStorage" in page
    assert "every = 500," in page  # refresh_s=0.5
    head_status, head_headers, body = request(served.url, "HEAD")
    assert (head_status, body) == (200, "")
    assert head_headers["Content-Length"] == headers["Content-Length"]


def test_the_state_lists_progress_and_the_page_renders_again_only_when_it_changed(
    served, exp, stub
):
    before = get_state(served)
    assert before["status"] == "ready" and before["experiment"] == exp.uri
    assert before["studies"]["proxy"] == {"proposed": [1, 2, 3], "finished": [1]}
    assert before["studies"]["validation"] == {"proposed": [], "finished": []}
    assert before["report"] is False and before["export"] is False
    request(served.url)
    request(served.url)
    assert stub.calls == 1  # the store did not change: the cached page
    assert get_state(served) == before

    _finish(exp, 3)
    after = get_state(served)
    assert after["fingerprint"] != before["fingerprint"]
    assert after["studies"]["proxy"] == {"proposed": [1, 2, 3], "finished": [1, 3]}
    status, _, page = request(served.url)
    assert status == 200 and stub.calls == 2
    assert "<p>proxy trial 3 finished</p>" in page
    assert json.dumps(after["fingerprint"]) in page

    exp.records.write_spec(_spec(4))
    assert get_state(served)["studies"]["proxy"]["proposed"] == [1, 2, 3, 4]
    exp.store.write_text(exp.layout.report_html(), "<html></html>")
    assert get_state(served)["report"] is True


def test_the_fingerprint_is_the_same_across_restarts(exp, stub):
    with Dashboard(exp.uri, port=0, render=stub) as first:
        fingerprint = get_state(first)["fingerprint"]
    with Dashboard(exp.uri, port=0, render=stub) as second:
        assert get_state(second)["fingerprint"] == fingerprint


def test_a_big_study_is_scanned_with_one_listing(exp, monkeypatch):
    for trial_id in range(4, 40):
        exp.records.write_spec(_spec(trial_id))
    _finish(exp, 20)
    exp.store.write_text(f"{exp.layout.trial_dir('proxy', 21)}/logs/events", "x")
    scanner = ProgressScanner(exp)
    checked = []
    monkeypatch.setattr(type(exp.store), "exists", lambda self, path: checked.append(path))
    proxy = scanner.scan()["proxy"]
    assert proxy["proposed"] == list(range(1, 40)) and proxy["finished"] == [1, 20]
    assert checked == []  # 37 unfinished trials: listed, not checked one by one
    monkeypatch.undo()
    _finish(exp, 22)
    assert scanner.scan()["proxy"]["finished"] == [1, 20, 22]


def test_other_methods_are_refused_and_unknown_paths_are_not_found(served):
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"):
        status, headers, body = request(served.url, method)
        assert status == 405, method
        assert headers["Allow"] == "GET, HEAD" and "read-only" in body
    status, _, _ = request(f"{served.url}api/state", "POST")
    assert status == 405
    status, _, body = request(f"{served.url}favicon.ico")
    assert status == 404 and "the report is at /" in body
    status, _, _ = request(f"{served.url}?scroll=1")  # a query string is the same page
    assert status == 200


def test_it_binds_to_loopback_and_refuses_other_host_names(served):
    assert served.url == f"http://127.0.0.1:{served.port}/" and served.loopback
    assert served._server.socket.getsockname()[0] == "127.0.0.1"
    status, _, body = request(served.url, headers={"Host": f"evil.example:{served.port}"})
    assert status == 403 and "Host header refused" in body
    status, _, _ = request(served.url, headers={"Host": f"localhost:{served.port}"})
    assert status == 200


def test_a_port_in_use_is_a_clear_error(exp):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as info:
            Dashboard(exp.uri, port=port)
    message = str(info.value)
    assert f"port {port} on 127.0.0.1 is in use" in message
    assert "--port N, or --port 0 for any free port" in message


def test_an_address_of_another_machine_is_a_clear_error(exp):
    with pytest.raises(live.DashboardError, match="not an address of this machine"):
        Dashboard(exp.uri, host="192.0.2.1", port=0)  # TEST-NET-1: never this machine's


def test_before_the_experiment_exists_the_page_waits_for_it(tmp_path, stub):
    root = str(tmp_path / "store")
    uri = f"{root}/{NAME}"
    with Dashboard(uri, port=0, refresh_s=0.5, render=stub) as dashboard:
        status, _, page = request(dashboard.url)
        assert status == 200 and f"Waiting for experiment <code>{uri}</code>" in page
        assert 'fetch("api/state"' in page and 'http-equiv="refresh"' in page
        waiting = get_state(dashboard)
        assert waiting["status"] == "waiting" and waiting["studies"] == {}
        assert stub.calls == 0

        _write_experiment(root)
        ready = get_state(dashboard)
        assert ready["status"] == "ready" and ready["fingerprint"] != waiting["fingerprint"]
        status, _, page = request(dashboard.url)
        assert status == 200 and "<h1>report of dash-test</h1>" in page


def test_a_failed_render_shows_the_error_and_is_tried_again(exp, monkeypatch):
    def broken(exp: Experiment):
        raise RuntimeError("record 7 is odd <b>")

    monkeypatch.setattr("kfnas.views.report.render_experiment", broken)
    with Dashboard(exp.uri, port=0) as dashboard:  # the default renderer: render_experiment
        status, _, page = request(dashboard.url)
        assert status == 200
        assert "The report cannot be rendered" in page
        assert "RuntimeError: record 7 is odd &lt;b&gt;" in page
        assert "Traceback" not in page
        assert 'fetch("api/state"' in page  # it keeps polling
        assert json.dumps(get_state(dashboard)["fingerprint"]) in page  # no reload loop
        monkeypatch.undo()
        monkeypatch.setattr(
            "kfnas.views.report.render_experiment",
            lambda exp: type("R", (), {"html": "<html><body>fixed</body></html>"})(),
        )
        status, _, page = request(dashboard.url)  # a failure is not cached
        assert status == 200 and page.startswith("<html><body>fixed")


def test_a_store_that_cannot_be_read_shows_the_error(served, monkeypatch):
    def unreadable(self):
        raise StoreError("cannot list gs://b/nas: permission denied; check the credentials")

    monkeypatch.setattr(ProgressScanner, "scan", unreadable)
    state = get_state(served)
    assert state["status"] == "error" and "permission denied" in state["error"]
    status, _, page = request(served.url)
    assert status == 200 and "The store cannot be read" in page and "permission denied" in page
    monkeypatch.undo()
    assert get_state(served)["status"] == "ready"


def test_state_json_round_trips_and_the_fingerprint_covers_every_field():
    a = State("u", "ready", {"proxy": {"proposed": [1], "finished": []}})
    assert json.loads(a.to_json())["fingerprint"] == a.fingerprint
    assert State("u", "ready", {"proxy": {"proposed": [1], "finished": [1]}}).fingerprint != (
        a.fingerprint
    )
    assert State("u", "ready", a.studies, report=True).fingerprint != a.fingerprint


def test_the_script_goes_before_the_last_body_end_or_at_the_end():
    page = live.inject_live_script("<body>a</BODY></html>", "abc", 2)
    assert page.startswith("<body>a\n<div") and page.endswith("</script>\n</BODY></html>")
    assert '"abc"' in page and "every = 2000," in page
    assert live.inject_live_script("no body", "abc", 2).startswith("no body\n<div")


def test_a_gcs_store_is_served(monkeypatch, gcs_emulator, gcs_bucket, stub):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    uri = _write_experiment(f"gs://{gcs_bucket}/nas")
    exp = open_experiment(uri)
    exp.records.write_spec(_spec(1))
    with Dashboard(uri, port=0, refresh_s=0.5, render=stub) as dashboard:
        before = get_state(dashboard)
        assert before["status"] == "ready" and before["experiment"] == uri
        assert before["studies"]["proxy"] == {"proposed": [1], "finished": []}
        status, _, page = request(dashboard.url)
        assert status == 200 and "<h1>report of dash-test</h1>" in page
        assert "finished</p>" not in page
        _finish(exp, 1)
        after = get_state(dashboard)
        assert after["studies"]["proxy"]["finished"] == [1]
        assert after["fingerprint"] != before["fingerprint"]
        status, _, page = request(dashboard.url)
        assert status == 200 and "<p>proxy trial 1 finished</p>" in page


@pytest.mark.parametrize("finished", [False, True])
def test_the_real_report_is_served(tmp_path, finished):
    """``render_experiment``'s page, with no finished trial (its empty state) and with one."""
    exp = open_experiment(_write_experiment(str(tmp_path / "store")))
    exp.records.write_spec(_spec(1))
    if finished:
        _finish(exp, 1)
    with Dashboard(exp.uri, port=0) as dashboard:
        status, _, page = request(dashboard.url)
    assert status == 200
    assert "The report cannot be rendered" not in page, page[-2000:]
    assert NAME in page and 'fetch("api/state"' in page


# Runs the live script of a page against stubs of the browser (argv: page file, scenario).
_HARNESS = r"""
const src = require("fs").readFileSync(process.argv[2], "utf8");
const js = src.slice(src.indexOf("<script>") + 8, src.lastIndexOf("</script>"));
const scenario = process.argv[3], log = [], timers = [];
const note = {textContent: "", style: {display: "none"}};
const storage = scenario === "reloaded" ? {"kfnas-dashboard-scroll": "420"} : {};
global.document = {getElementById: () => note};
global.window = {scrollY: 420, scrollTo: (x, y) => log.push("scrollTo " + y),
                 addEventListener: (event, f) => { if (event === "load") f(); }};
global.sessionStorage = {getItem: k => (k in storage ? storage[k] : null),
                         setItem: (k, v) => { storage[k] = v; },
                         removeItem: k => { delete storage[k]; }};
global.location = {reload: () => log.push("reload")};
global.setTimeout = (f, ms) => { timers.push([f, ms]); };
global.fetch = () => {
  log.push("fetch");
  if (scenario === "down") return Promise.reject(new TypeError("Failed to fetch"));
  const fingerprint = scenario === "changed" ? "new" : "old";
  return Promise.resolve({ok: true, json: () => Promise.resolve({fingerprint})});
};
eval(js);
(async () => {
  for (let i = 0; i < 3 && timers.length; i++) {
    const [f, ms] = timers.shift();
    log.push("wait " + ms);
    f();
    for (let j = 0; j < 3; j++) await new Promise(r => setImmediate(r));
  }
  const shown = note.style.display === "block" ? note.textContent : "";
  console.log(JSON.stringify({log, note: shown, storage}));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
@pytest.mark.parametrize("scenario", ["same", "changed", "down", "reloaded"])
def test_the_live_script_reloads_on_a_change_only_and_survives_a_stopped_server(tmp_path, scenario):
    page = tmp_path / "page.html"
    page.write_text(live.inject_live_script("<html><body>x</body></html>", "old", 2))
    harness = tmp_path / "harness.js"
    harness.write_text(_HARNESS)
    done = subprocess.run(
        ["node", str(harness), str(page), scenario], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    polls = ["wait 2000", "fetch"] * 3
    if scenario in ("same", "reloaded"):
        assert seen["log"] == (["scrollTo 420"] if scenario == "reloaded" else []) + polls
        assert seen["note"] == "" and seen["storage"] == {}  # the scroll position was used once
    elif scenario == "changed":
        assert seen["log"] == ["wait 2000", "fetch", "reload"]
        assert seen["storage"] == {"kfnas-dashboard-scroll": "420"}
    else:  # the server stopped: a note, no reload, and it keeps asking
        assert seen["log"] == polls
        assert seen["note"].startswith("live view disconnected")
