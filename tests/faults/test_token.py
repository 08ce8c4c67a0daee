"""The KFP token never leaves the host it was given for, and never crosses a network in clear text.

Two real HTTP servers on this machine: the "KFP API" at ``127.0.0.1:<port>`` answers ``302`` to a
second server (``localhost`` or ``127.0.0.1`` on another port), which records every header it gets.
Both ways kfnas talks to KFP are checked: its own health check (``urllib``, which forwards headers
on redirects unless told not to follow them) and ``kfp.Client`` (urllib3). Plain http with a token
to a host other than this machine is refused unless ``--insecure``.
"""

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from kfnas.cli import main
from kfnas.pipelines.kfp_api import KfpApiError, check_transport, client_call, connect, is_local

TOKEN = "s3cret-token-value"


class _Server:
    """A local HTTP server on a free port whose handler is ``answer(handler)``."""

    def __init__(self, answer):
        self.seen: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                outer.seen.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                answer(self)

            def do_GET(self):
                self._any()

            def do_POST(self):
                self._any()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _json(handler, body):
    data = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture
def target() -> Iterator[_Server]:
    """Where the redirects point: answers every request with the API's health JSON."""
    server = _Server(lambda h: _json(h, {"multi_user": False}))
    yield server
    server.close()


def _redirecting(target_url, *, healthz_too):
    def answer(handler):
        if handler.path.startswith("/apis/v2beta1/healthz") and not healthz_too:
            return _json(handler, {"multi_user": False})
        handler.send_response(302)
        handler.send_header("Location", target_url + handler.path)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def _leaked(server):
    return [h for h in server.seen if any(TOKEN in value for value in h.values())]


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_the_health_check_follows_no_redirect_with_the_token(target, name):
    api = _Server(_redirecting(f"http://{name}:{target.port}", healthz_too=True))
    try:
        host = f"http://127.0.0.1:{api.port}"
        with pytest.raises(KfpApiError, match=r"redirect \(302\) to http://.*follows no redirect"):
            connect(host, token=TOKEN)
        assert api.seen and api.seen[0]["authorization"] == f"Bearer {TOKEN}"  # its own host
        assert _leaked(target) == []
    finally:
        api.close()


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_kfp_client_drops_the_token_on_a_redirect_to_another_host(target, name):
    api = _Server(_redirecting(f"http://{name}:{target.port}", healthz_too=False))
    try:
        host = f"http://127.0.0.1:{api.port}"
        client = connect(host, token=TOKEN)
        client_call(host, "listing experiments", lambda: client.list_experiments())
        assert target.seen, "the redirect was not followed: the test proves nothing"
        assert _leaked(target) == []
        assert any(h.get("authorization") == f"Bearer {TOKEN}" for h in api.seen)
    finally:
        api.close()


@pytest.mark.parametrize(
    "host",
    ["http://localhost:8080", "http://127.0.0.1:8080", "http://127.3.4.5", "http://[::1]:8080",
     "http://kfp.localhost", "https://kfp.example.com"],
)  # fmt: skip
def test_local_or_https_hosts_take_a_token(host):
    check_transport(host, TOKEN)


def test_plain_http_to_another_machine_needs_insecure():
    for host in ("http://kfp.example.com", "http://10.0.0.7:8080", "http://localhost.evil.com"):
        assert not is_local(host)
        with pytest.raises(KfpApiError, match=r"plain http to another machine.*--insecure"):
            check_transport(host, TOKEN)
        check_transport(host, TOKEN, insecure=True)
        check_transport(host, None)  # no token: nothing to protect


def test_the_commands_refuse_it_before_sending_anything(capsys, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    argv = ["schedule", "--list", "--host", "http://kfp.example.com", "--token", TOKEN]
    assert main(argv) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "plain http to another machine" in out and "--insecure" in out
