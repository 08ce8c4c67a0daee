"""``kfnas dashboard`` and the live view of ``kfnas run``: addresses, messages, exit codes.

The server itself is tested in ``tests/views/test_dashboard.py``; here the commands around it.
``kfnas run`` is run with its pipeline replaced by a stand-in (no training), which checks the live
view while the "pipeline" runs.
"""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request

import pytest
from rich.console import Console

from kfnas import cli
from kfnas.cli import dashboard as cli_dashboard
from kfnas.cli import main
from kfnas.store import ExperimentLayout, open_store
from kfnas.validation import experiment_spec
from kfnas.views import dashboard as views_dashboard
from kfnas.views.dashboard import Dashboard

SPEC = """
name: dash-cli
task: {kind: classification}
data: {train: train-*.tfrecord, validation: validation-*.tfrecord}
studies:
  proxy: {space: mnasnet}
budget: {rounds: 1, trials_per_round: 1}
"""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setattr(cli._common, "console", Console(width=200, highlight=False))


def _write_experiment(store_root: str) -> str:
    spec = experiment_spec(SPEC, [f"store_root={store_root}"])
    open_store(store_root).write_text(ExperimentLayout(spec.name).experiment_json(), spec.to_json())
    return f"{store_root}/{spec.name}"


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, " ".join(captured.out.split()), captured.err


def fetch(url: str) -> tuple[int, str]:
    with _OPENER.open(url, timeout=30) as response:
        return response.status, response.read().decode("utf-8")


@pytest.fixture
def stop_serving(monkeypatch):
    """``serve_forever`` answers one request for the page, then gets Ctrl-C; the pages seen."""
    pages: list[str] = []
    serve = Dashboard.serve_forever

    def one_request_then_ctrl_c(self: Dashboard) -> None:
        thread = threading.Thread(target=serve, args=(self,), daemon=True)
        thread.start()
        try:
            pages.append(fetch(self.url)[1])
        finally:
            self._server.shutdown()
            thread.join(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(Dashboard, "serve_forever", one_request_then_ctrl_c)
    return pages


def test_the_defaults_are_the_views(capsys):
    assert cli_dashboard.DEFAULT_HOST == views_dashboard.DEFAULT_HOST == "127.0.0.1"
    assert cli_dashboard.DEFAULT_PORT == views_dashboard.DEFAULT_PORT
    assert cli_dashboard.DEFAULT_REFRESH_S == views_dashboard.DEFAULT_REFRESH_S


def test_dashboard_serves_until_ctrl_c(tmp_path, capsys, stop_serving, monkeypatch):
    monkeypatch.setattr("kfnas.views.report.render_experiment", _fake_render)
    uri = _write_experiment(str(tmp_path))
    status, out, err = run(capsys, "dashboard", uri, "--port", "0", "--refresh", "2")
    assert status == 0 and err == ""
    assert "dashboard: http://127.0.0.1:" in out and "/ (Ctrl-C to stop)" in out
    assert out.endswith("dashboard stopped") and "warning" not in out
    (page,) = stop_serving
    assert "fake report of dash-cli" in page and "every = 2000," in page


def _fake_render(exp):
    return type("R", (), {"html": f"<html><body>fake report of {exp.spec.name}</body></html>"})()


def test_dashboard_on_every_interface_warns(tmp_path, capsys, stop_serving, monkeypatch):
    monkeypatch.setattr("kfnas.views.report.render_experiment", _fake_render)
    uri = _write_experiment(str(tmp_path))
    status, out, _ = run(capsys, "dashboard", uri, "--port", "0", "--host", "0.0.0.0")
    assert status == 0
    assert "warning: serving on 0.0.0.0, not only this machine" in out
    assert "dashboard: http://0.0.0.0:" in out


def test_dashboard_without_an_experiment_exits_2_with_the_fix(tmp_path, capsys):
    status, out, err = run(capsys, "dashboard", str(tmp_path / "nope"))
    assert status == 2 and "Traceback" not in out + err
    assert out.startswith(f"error: no experiment at '{tmp_path}/nope'")
    assert "check the URI: kfnas dashboard takes <store_root>/<experiment name>" in out


def test_dashboard_on_an_unsupported_store_exits_2(capsys):
    status, out, _ = run(capsys, "dashboard", "s3://bucket/exp")
    assert status == 2 and "unsupported store scheme" in out and "check the URI" in out


def test_dashboard_on_a_port_in_use_exits_2_naming_it(tmp_path, capsys):
    uri = _write_experiment(str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, out, err = run(capsys, "dashboard", uri, "--port", str(port))
    assert status == 2 and "Traceback" not in out + err
    assert f"error: port {port} on 127.0.0.1 is in use" in out
    assert "--port N, or --port 0 for any free port" in out


@pytest.mark.parametrize(("flag", "value"), [("--port", "70000"), ("--refresh", "0")])
def test_dashboard_refuses_a_bad_port_or_interval(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(["dashboard", str(tmp_path / "x"), flag, value])
    assert info.value.code == 2


def test_the_run_live_view_takes_any_free_port_when_the_default_is_taken(
    tmp_path, capsys, monkeypatch
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(cli_dashboard, "DEFAULT_PORT", port)
        dashboard = cli_dashboard.start_live_view(f"{tmp_path}/later", None)
        assert dashboard is not None
        try:
            assert dashboard.port != port
            assert fetch(dashboard.url)[0] == 200
        finally:
            dashboard.stop()
        assert cli_dashboard.start_live_view(f"{tmp_path}/later", port) is None
    out = " ".join(capsys.readouterr().out.split())
    assert f"live view: {dashboard.url}" in out
    assert f"warning: no live view: port {port} is in use" in out
    assert "--dashboard-port N" in out


@pytest.fixture
def spec_file(tmp_path, monkeypatch):
    monkeypatch.setattr("kfnas.validation.check_data", lambda spec: None)  # no data read
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC + f"store_root: {tmp_path / 'store'}\n")
    return path


def test_run_serves_the_live_view_while_the_pipeline_runs(tmp_path, capsys, monkeypatch, spec_file):
    started = []
    real_start = cli_dashboard.start_live_view
    monkeypatch.setattr(
        cli_dashboard, "start_live_view", lambda *a: started.append(real_start(*a)) or started[-1]
    )
    seen = {}

    def pipeline(uri, out, arguments, counts, log):
        (dashboard,) = started
        seen["waiting"] = fetch(dashboard.url)[1]
        _write_experiment(str(tmp_path / "store"))
        seen["state"] = fetch(f"{dashboard.url}api/state")[1]
        return False  # the pipeline "failed": no summary to print

    monkeypatch.setattr("kfnas.cli.pipeline._run_pipeline", pipeline)
    status, out, _ = run(capsys, "run", str(spec_file), "--out", str(tmp_path / "out"))
    assert status == 1
    (dashboard,) = started
    lines = out.split(" live view: ")
    assert len(lines) == 2 and lines[0].endswith("kfp.log")  # just after the experiment's line
    assert lines[1].startswith(dashboard.url)
    assert "Waiting for experiment" in seen["waiting"]
    assert '"status": "ready"' in seen["state"]
    with pytest.raises(urllib.error.URLError):  # stopped at the end
        fetch(dashboard.url)


def test_run_without_the_live_view(tmp_path, capsys, monkeypatch, spec_file):
    monkeypatch.setattr("kfnas.cli.pipeline._run_pipeline", lambda *a: False)
    status, out, _ = run(
        capsys, "run", str(spec_file), "--out", str(tmp_path / "out"), "--no-dashboard"
    )
    assert status == 1 and "live view" not in out
