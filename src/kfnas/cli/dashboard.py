"""``kfnas dashboard``: an experiment's report served live from its store, and ``kfnas run``'s view.

``kfnas dashboard URI`` serves the report page (``kfnas.views.dashboard``) on
``http://127.0.0.1:8765/`` until Ctrl-C, refreshed in the browser as trials finish; it works on
any store the machine can read (a local folder, ``gs://``) while the pipeline runs anywhere. It
is read-only and binds to 127.0.0.1 unless ``--host`` says otherwise (with a warning: the page
has no login). A URI without an experiment, a port in use or an address that cannot be bound
print one message and exit with status 2.

``kfnas run`` uses ``start_live_view`` (a daemon thread, before the pipeline creates the
experiment: the page waits for it) and ``serve_until_interrupted`` (``--serve``).

To add an option: declare it in ``_add_dashboard`` and pass it to ``Dashboard`` in
``_run_dashboard``.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from kfnas.cli import _common as ui
from kfnas.config.spec import SpecError

if TYPE_CHECKING:
    from kfnas.views.dashboard import Dashboard

# Kept equal to kfnas.views.dashboard's (a test checks), so --help needs no import of it.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_REFRESH_S = 5.0


def port_number(text: str) -> int:
    """An ``argparse`` type: a TCP port, 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give 0 to 65535 (0: any free port)"
        )
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _add_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment URI (<store_root>/<name>), local or gs://")
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to serve on (default {DEFAULT_PORT}; 0: any free port)",
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
        f"interface, readable by anyone who can reach it)",
    )
    parser.add_argument(
        "--refresh",
        type=_seconds,
        default=DEFAULT_REFRESH_S,
        metavar="SECONDS",
        help=f"how often the page checks the store for changes (default {DEFAULT_REFRESH_S:g})",
    )


def _check_experiment(uri: str) -> None:
    """Raises ``SpecError`` with the fix when ``uri`` holds no experiment or cannot be read."""
    from kfnas.store import StoreError, open_experiment

    hint = (
        "check the URI: kfnas dashboard takes <store_root>/<experiment name>, as kfnas init "
        "and kfnas run print it"
    )
    try:
        open_experiment(uri)
    except SpecError as e:
        raise SpecError(f"{e}; {hint}") from None
    except (ValueError, StoreError) as e:
        raise SpecError(f"cannot open experiment {uri!r}: {e}; {hint}") from None


def _run_dashboard(args: argparse.Namespace) -> int:
    from kfnas.views.dashboard import Dashboard, DashboardError

    _check_experiment(args.experiment)
    try:
        dashboard = Dashboard(
            args.experiment, host=args.host, port=args.port, refresh_s=args.refresh
        )
    except DashboardError as e:
        raise SpecError(str(e)) from None
    if not dashboard.loopback:
        ui.console.print(
            f"[yellow]warning:[/yellow] serving on {args.host}, not only this machine: anyone "
            f"who can reach it can read the experiment's report (read-only, no login)",
            soft_wrap=True,
        )
    ui.console.print(f"dashboard: {dashboard.url} (Ctrl-C to stop)", soft_wrap=True)
    try:
        dashboard.serve_forever()
    except KeyboardInterrupt:
        ui.console.print("dashboard stopped")
    return 0


def start_live_view(experiment_uri: str, port: int | None) -> Dashboard | None:
    """Serves ``kfnas run``'s live view in a daemon thread and prints its address.

    Args:
        experiment_uri: The experiment the run creates (the page waits until it exists).
        port: The port; ``None``: 8765, or any free port when 8765 is taken; ``0``: any free one.

    Returns:
        The started dashboard (``stop()`` it at the end), or ``None`` after a warning when it
        cannot be bound: the run goes on without it.
    """
    from kfnas.views.dashboard import Dashboard, DashboardError, PortInUseError

    try:
        try:
            dashboard = Dashboard(experiment_uri, port=DEFAULT_PORT if port is None else port)
        except PortInUseError:
            if port is not None:
                raise
            dashboard = Dashboard(experiment_uri, port=0)
    except PortInUseError:
        ui.console.print(
            f"[yellow]warning:[/yellow] no live view: port {port} is in use; choose another with "
            f"--dashboard-port N (0: any free port), or serve it later with kfnas dashboard "
            f"{experiment_uri} --port 0",
            soft_wrap=True,
        )
        return None
    except DashboardError as e:
        ui.console.print(f"[yellow]warning:[/yellow] no live view: {e}", soft_wrap=True)
        return None
    ui.console.print(f"live view: {dashboard.url}", soft_wrap=True)
    return dashboard.start()


def serve_until_interrupted(dashboard: Dashboard) -> None:
    """Keeps a started dashboard serving until Ctrl-C (``kfnas run --serve``), then stops it."""
    ui.console.print(f"live view: still serving {dashboard.url} (Ctrl-C to stop)", soft_wrap=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ui.console.print("live view stopped")
    finally:
        dashboard.stop()


COMMANDS = {
    "dashboard": ui.Command(
        "serve an experiment's report from its store on localhost, refreshed as trials finish",
        _run_dashboard,
        _add_dashboard,
    ),
}
