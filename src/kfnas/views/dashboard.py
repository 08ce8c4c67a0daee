"""The live view: the experiment's report served from its store on localhost, refreshed as it runs.

``Dashboard(uri)`` binds a small read-only HTTP server (the standard library's
``ThreadingHTTPServer``) to ``127.0.0.1`` (another host only when asked); ``serve_forever()``
serves in the calling thread (``kfnas dashboard``), ``start()`` in a daemon thread and ``stop()``
ends it (``kfnas run``). Nothing it does writes to the store.

Endpoints (``GET`` and ``HEAD``; any other method gets 405, any other path 404):

- ``/``: the report page, ``render_experiment(exp).html`` as the store holds it now, with a small
  script (``_LIVE_SCRIPT``) injected before ``</body>``. The script polls ``api/state`` every
  ``refresh_s`` seconds and reloads the page when the fingerprint differs from the one the page
  was rendered from, keeping the scroll position (``sessionStorage``). If a poll fails (the
  server stopped) it shows a small "live view disconnected" note and keeps polling, without
  reloading, so the page stays readable. Before the experiment exists (``kfnas run`` starts the
  server before the pipeline creates it) ``/`` is a small self-refreshing waiting page; when the
  store cannot be read or the report cannot be rendered, a page that shows the error and keeps
  polling. Never a blank page or a traceback.
- ``/api/state``: ``State`` as JSON: per study the trial ids with a ``trial.json`` and those with
  a ``result.json``, whether the report and an export exist, and a fingerprint of all of it.

The state comes from listing the store, not reading it (``ProgressScanner``: one listing per
study, then an ``exists`` per trial not yet finished; ``result.json`` is create-only, so a
finished trial stays finished), so polling is cheap on a local folder and on ``gs://``. The page is
rendered only when the fingerprint changed since the last render (rendering reads every record
and can take seconds); renders are serialized by a lock and the last page is cached. A
``result.json`` deleted by hand (the repair of a corrupt record) shows at the next other change or
restart.

Requests are logged at DEBUG level only (nothing per request on stderr). On a loopback bind a
request whose ``Host`` header names another host is refused (403), so a web page cannot read the
report through DNS rebinding.

To add an endpoint: write a ``_Handler._<name>(self) -> _Response`` method and add its path to
``_Handler.ROUTES``; ``GET`` and ``HEAD`` (and the refusal of other methods) come with it. To
watch another record, add it to ``LiveExperiment._scan`` (it becomes part of the fingerprint, so
the page reloads when it changes).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import html
import http
import ipaddress
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kfnas.config.spec import SpecError
from kfnas.store import Experiment, open_experiment

#: The address the dashboard binds to unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
#: The port of ``kfnas dashboard`` (and the one ``kfnas run`` tries first).
DEFAULT_PORT = 8765
#: How often the page asks whether the store changed, in seconds.
DEFAULT_REFRESH_S = 5.0

#: Above this many unfinished trials in a study, one recursive listing replaces the ``exists``
#: calls (the first look at a big study on ``gs://``).
_LIST_THRESHOLD = 16
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

log = logging.getLogger(__name__)

#: What a page is built from: an opened experiment -> a complete HTML document.
Renderer = Callable[[Experiment], str]


class DashboardError(OSError):
    """The dashboard cannot serve (bad address, no permission); the message says what to do."""


class PortInUseError(DashboardError):
    """The port asked for is taken by another program."""


@dataclasses.dataclass(frozen=True)
class State:
    """What ``/api/state`` answers: the experiment's progress as the store lists it now.

    Attributes:
        experiment: The experiment URI.
        status: ``ready`` (the experiment exists), ``waiting`` (not yet) or ``error`` (the store
            cannot be listed; see ``error``).
        studies: Per study of the chain: ``{"proposed": ids with a trial.json, "finished": ids
            with a result.json}``.
        report: Whether the stored report (``reports/report.html``) exists.
        export: Whether an exported model (``export/latest``) exists.
        error: Why the store cannot be read, for ``status == "error"``.
    """

    experiment: str
    status: str
    studies: dict[str, dict[str, list[int]]] = dataclasses.field(default_factory=dict)
    report: bool = False
    export: bool = False
    error: str = ""

    @property
    def fingerprint(self) -> str:
        """A short hash of everything above: equal states, equal fingerprints (across restarts)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def to_json(self) -> str:
        """The JSON of ``/api/state``: the fields and ``fingerprint``."""
        return json.dumps({**dataclasses.asdict(self), "fingerprint": self.fingerprint})


class ProgressScanner:
    """Lists which trials of an experiment have a spec and a result, cheaply, poll after poll.

    Args:
        exp: The experiment to scan.
    """

    def __init__(self, exp: Experiment):
        self.exp = exp
        self._proposed: dict[str, set[int]] = {}
        self._finished: dict[str, set[int]] = {}

    def scan(self) -> dict[str, dict[str, list[int]]]:
        """Per study of the chain: the sorted ids of the trials with a spec and with a result.

        Raises:
            StoreError: The store cannot be listed.
        """
        return {study: self._study(study) for study in self.exp.spec.studies}

    def _study(self, study: str) -> dict[str, list[int]]:
        store, layout = self.exp.store, self.exp.layout
        ids = set(self.exp.records.trial_ids(study))
        proposed = self._proposed.setdefault(study, set())
        finished = self._finished.setdefault(study, set())
        proposed &= ids  # a trial folder deleted by hand leaves the page
        finished &= ids
        open_ids = sorted(ids - finished)
        if len(open_ids) > _LIST_THRESHOLD:
            for path in store.list(layout.trials_dir(study)):
                folder, _, name = path.partition("/")
                try:
                    trial_id = layout.parse_trial_id(folder)
                except ValueError:
                    continue
                if name == "trial.json":
                    proposed.add(trial_id)
                elif name == "result.json":
                    finished.add(trial_id)
        else:
            for trial_id in open_ids:
                if trial_id not in proposed and store.exists(layout.trial_spec(study, trial_id)):
                    proposed.add(trial_id)
                if store.exists(layout.trial_result(study, trial_id)):
                    finished.add(trial_id)
        return {"proposed": sorted(proposed), "finished": sorted(finished)}


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if not isinstance(error, OSError) else str(error)


class LiveExperiment:
    """The experiment behind the page: opened once it exists, scanned, rendered when it changed.

    Thread-safe: scans are serialized by one lock, renders by another, so ``/api/state`` answers
    while a slow render runs.

    Args:
        experiment_uri: The experiment; it may not exist yet.
        render: Builds the page of an opened experiment; default ``render_experiment(exp).html``
            (``kfnas.views.report``, imported on the first render).
    """

    def __init__(self, experiment_uri: str, render: Renderer | None = None):
        self.experiment_uri = experiment_uri
        self._render = render
        self._scanner: ProgressScanner | None = None
        self._scan_lock = threading.Lock()
        self._render_lock = threading.Lock()
        self._cached: tuple[str, str] | None = None  # (fingerprint, page)

    def state(self) -> State:
        """The experiment's progress now; never raises (an unreadable store is ``error``)."""
        with self._scan_lock:
            try:
                return self._scan()
            except Exception as e:  # a store error, a network error: shown, polled again
                log.debug("scanning %s failed", self.experiment_uri, exc_info=True)
                return State(self.experiment_uri, "error", error=_describe(e))

    def _scan(self) -> State:
        if self._scanner is None:
            try:
                self._scanner = ProgressScanner(open_experiment(self.experiment_uri))
            except SpecError:
                return State(self.experiment_uri, "waiting")
        exp = self._scanner.exp
        return State(
            self.experiment_uri,
            "ready",
            self._scanner.scan(),
            report=exp.store.exists(exp.layout.report_html()),
            export=exp.store.exists(exp.layout.export_latest()),
        )

    def page(self) -> tuple[str, State]:
        """The page for the store as it is now (rendered again only if it changed), its state."""
        with self._render_lock:
            state = self.state()
            if state.status == "waiting":
                return waiting_page(self.experiment_uri), state
            if state.status == "error":
                title = "The store cannot be read"
                return error_page(self.experiment_uri, title, state.error), state
            if self._cached is not None and self._cached[0] == state.fingerprint:
                return self._cached[1], state
            assert self._scanner is not None
            try:
                page = self._render_page(self._scanner.exp)
            except Exception as e:  # not cached: a reload of the page tries again
                log.debug("rendering %s failed", self.experiment_uri, exc_info=True)
                return error_page(
                    self.experiment_uri, "The report cannot be rendered", _describe(e)
                ), state
            self._cached = (state.fingerprint, page)
            return page, state

    def _render_page(self, exp: Experiment) -> str:
        if self._render is not None:
            return self._render(exp)
        from kfnas.views import report

        return report.render_experiment(exp).html


_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:3em auto;max-width:46em;padding:0 1em;"
    "color:#222}code,pre{background:#f4f4f4;padding:.1em .3em;border-radius:3px}"
    "pre{padding:.8em;white-space:pre-wrap;word-break:break-word}"
)


def _small_page(title: str, body: str, *, refresh_s: float | None = None) -> str:
    refresh = ""
    if refresh_s is not None:  # only for browsers without scripts; the live script does it too
        refresh = f'<noscript><meta http-equiv="refresh" content="{max(1, round(refresh_s))}">'
        refresh += "</noscript>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{refresh}<style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def waiting_page(experiment_uri: str, refresh_s: float = DEFAULT_REFRESH_S) -> str:
    """The page shown before the experiment exists: it reloads by itself once it does."""
    uri = html.escape(experiment_uri)
    return _small_page(
        f"kfnas: waiting for {experiment_uri}",
        f"<h1>Waiting for experiment <code>{uri}</code></h1>\n"
        "<p>Its store holds no <code>experiment.json</code> yet: the pipeline's first step "
        "writes it once the spec and data are checked. This page shows the report as soon as "
        "it does.</p>",
        refresh_s=refresh_s,
    )


def error_page(experiment_uri: str, title: str, message: str) -> str:
    """The page shown when the store cannot be read or the report cannot be rendered."""
    return _small_page(
        f"kfnas: {title.lower()}",
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Experiment <code>{html.escape(experiment_uri)}</code>:</p>\n"
        f"<pre>{html.escape(message)}</pre>\n"
        "<p>The live view keeps watching the store and shows the report when the store "
        "changes; reload the page to try again now.</p>",
    )


# The live script: ``__FINGERPRINT__`` and ``__EVERY_MS__`` are filled in per page.
_LIVE_SCRIPT = """
<div id="kfnas-live-note" role="status" style="display:none;position:fixed;right:.8em;
bottom:.8em;z-index:2147483647;padding:.4em .8em;border-radius:4px;background:#fff3cd;
color:#533f03;border:1px solid #e0c36a;font:13px system-ui,sans-serif"></div>
<script>
(function () {
  var rendered = __FINGERPRINT__, every = __EVERY_MS__, key = "kfnas-dashboard-scroll";
  var note = document.getElementById("kfnas-live-note");
  function show(text) { note.textContent = text; note.style.display = text ? "block" : "none"; }
  window.addEventListener("load", function () {
    try {
      var y = sessionStorage.getItem(key);
      if (y !== null) { sessionStorage.removeItem(key); window.scrollTo(0, Number(y) || 0); }
    } catch (e) { /* no sessionStorage: the browser keeps what it can */ }
  });
  function poll() {
    fetch("api/state", {cache: "no-store"}).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (state) {
      show("");
      if (state.fingerprint !== rendered) {
        try { sessionStorage.setItem(key, String(window.scrollY)); } catch (e) { /* none */ }
        location.reload();
        return;
      }
      setTimeout(poll, every);
    }).catch(function () {
      show("live view disconnected: this page shows the store as of its last update");
      setTimeout(poll, every);
    });
  }
  setTimeout(poll, every);
})();
</script>
"""


def inject_live_script(page: str, fingerprint: str, refresh_s: float) -> str:
    """``page`` with the live script before its last ``</body>`` (appended if it has none)."""
    script = _LIVE_SCRIPT.replace("__FINGERPRINT__", json.dumps(fingerprint))
    script = script.replace("__EVERY_MS__", str(max(100, round(refresh_s * 1000))))
    at = page.lower().rfind("</body>")
    return page + script if at < 0 else page[:at] + script + page[at:]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _text(status: int, text: str) -> _Response:
    title = f"{status} {http.HTTPStatus(status).phrase}"
    body = f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(text)}</p>"
    return _Response(status, _small_page(title, body).encode("utf-8"))


class _Handler(BaseHTTPRequestHandler):
    """Answers the dashboard's requests; ``server`` is the ``_Server`` it belongs to."""

    server: _Server
    server_version = "kfnas-dashboard"
    #: Path -> the method answering it (GET and HEAD).
    ROUTES = {"/": "_page", "/api/state": "_state"}

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def __getattr__(self, name: str) -> Any:
        # http.server dispatches METHOD to ``do_METHOD`` (501 when missing): every method other
        # than GET and HEAD is refused with 405 instead.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        response = _text(405, "the kfnas dashboard is read-only: only GET and HEAD are served")
        self._send(dataclasses.replace(response, headers=(("Allow", "GET, HEAD"),)), body=True)

    def _answer(self, *, body: bool) -> None:
        if not self._host_allowed():
            response = _text(
                403, f"this dashboard answers on {self.server.url} only (Host header refused)"
            )
        elif (route := self.ROUTES.get(urlsplit(self.path).path)) is None:
            response = _text(404, f"nothing at {urlsplit(self.path).path}; the report is at /")
        else:
            try:
                response = getattr(self, route)()
            except Exception as e:  # never a traceback: the message, and the page keeps polling
                log.debug("answering %s failed", self.path, exc_info=True)
                response = _text(500, _describe(e))
        self._send(response, body=body)

    def _host_allowed(self) -> bool:
        """On a loopback bind, only requests addressed to a loopback name (DNS rebinding)."""
        if not self.server.loopback:
            return True
        host = self.headers.get("Host")
        if not host:
            return True
        name = urlsplit(f"//{host}").hostname or ""
        return name in _LOOPBACK_NAMES or is_loopback(name)

    def _page(self) -> _Response:
        live = self.server.live
        page, state = live.page()
        page = inject_live_script(page, state.fingerprint, self.server.refresh_s)
        return _Response(200, page.encode("utf-8"))

    def _state(self) -> _Response:
        state = self.server.live.state()
        return _Response(200, state.to_json().encode("utf-8"), "application/json")

    def _send(self, response: _Response, *, body: bool) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` for one experiment, that binds without a reverse DNS lookup."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], live: LiveExperiment, refresh_s: float):
        self.live = live
        self.refresh_s = refresh_s
        self.loopback = is_loopback(address[0])
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Binds; unlike ``HTTPServer.server_bind``, without ``getfqdn`` (slow on some hosts)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed past the handler (a dropped connection): logged, not printed."""
        log.debug("request from %s failed", client_address, exc_info=True)


def _bind(host: str, port: int, live: LiveExperiment, refresh_s: float) -> _Server:
    """The server bound to ``host:port``.

    Raises:
        PortInUseError: Another program serves on the port.
        DashboardError: The address cannot be used (not this machine's, no permission).
    """
    try:
        return _Server((host, port), live, refresh_s)
    except socket.gaierror as e:
        raise DashboardError(
            f"cannot serve on host {host!r} ({e.strerror}); give an address of this machine, "
            f"such as {DEFAULT_HOST} (the default) or 0.0.0.0 (every interface)"
        ) from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is in use (another kfnas dashboard or another program "
                f"serves on it); choose another with --port N, or --port 0 for any free port"
            ) from None
        if e.errno == errno.EACCES:
            raise DashboardError(
                f"no permission to serve on port {port} of {host} (ports below 1024 need "
                f"privileges); choose another with --port N, or --port 0 for any free port"
            ) from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise DashboardError(
                f"cannot serve on {host}: it is not an address of this machine; give one that is, "
                f"such as {DEFAULT_HOST} (the default) or 0.0.0.0 (every interface)"
            ) from None
        raise DashboardError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


class Dashboard:
    """The live view of one experiment, bound to an address (serving once started).

    Args:
        experiment_uri: The experiment (``<store_root>/<name>``); it may not exist yet.
        host: The address to bind; ``127.0.0.1`` (this machine only) by default.
        port: The port; ``0`` for any free one (``url`` names the one chosen).
        refresh_s: How often the page polls for changes, in seconds.
        render: Builds the page of an opened experiment (default: ``render_experiment``'s).

    Raises:
        PortInUseError: Another program serves on ``port``.
        DashboardError: The address cannot be used.
        ValueError: ``refresh_s`` is not a positive number.
    """

    def __init__(
        self,
        experiment_uri: str,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        refresh_s: float = DEFAULT_REFRESH_S,
        render: Renderer | None = None,
    ):
        if not refresh_s > 0:
            raise ValueError(
                f"the refresh interval must be a positive number of seconds, got {refresh_s!r}"
            )
        self.live = LiveExperiment(experiment_uri, render)
        self._server = _bind(host, port, self.live, refresh_s)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the page is: ``http://127.0.0.1:PORT/``."""
        return self._server.url

    @property
    def port(self) -> int:
        """The port bound (the one chosen when asked for port 0)."""
        return self._server.server_port

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach it."""
        return self._server.loopback

    def serve_forever(self) -> None:
        """Serves in this thread until ``stop()`` (from another thread) or an exception."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def start(self) -> Dashboard:
        """Serves in a daemon thread (it never keeps the process alive); returns ``self``."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="kfnas-dashboard", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops serving and frees the port (waits at most ``timeout_s`` for the thread)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout_s)
            self._thread = None
        else:
            self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
