"""Talking to a KFP API server through ``kfp.Client``, with errors that say what to fix.

``connect(host, namespace, token)`` first asks the API's health endpoint once (``check_host``):
``kfp.Client`` itself retries its health check for half a minute on any error and then reports a
bare timeout. Every later call goes through ``client_call``, which drops the client's console
chatter and turns its errors into ``KfpApiError`` messages: an unreachable host, a refused token
(401/403), a wrong host or path (404), or the server's own message.

The token never leaves the host it was given for. ``check_host`` follows no redirect at all (a
redirect from the API is a login page or a wrong address, and ``urllib`` would forward the token
to any host): it reports where it was sent instead. ``kfp.Client`` goes through urllib3, which
drops the ``Authorization`` header on a redirect to another host, scheme or port; ``connect``
refuses a urllib3 that would not. A token is never sent over plain ``http`` to a host other than
this machine (``localhost``, 127.0.0.0/8, ``::1``) unless the caller passes ``insecure=True``
(``--insecure``): a port-forward or ``https`` needs no such flag. ``tests/faults/test_token.py``
checks both against real redirecting servers.

Used by ``pipelines/submit.py`` and ``pipelines/schedule.py``. To explain another HTTP status, add
a branch to ``_status_error``.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from kfnas.config.strict import SpecError

_HEALTHZ = "/apis/v2beta1/healthz"
_PORT_FORWARD = "kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80"
_T = TypeVar("_T")


class KfpApiError(SpecError):
    """The KFP API cannot be used as asked; the message names the problem and the fix."""


def _server_message(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)[:300]
    return text.strip()[:300]


def _status_error(
    host: str, status: int, what: str, body: Any, location: str | None = None
) -> KfpApiError:
    if 300 <= status < 400:
        return KfpApiError(
            f"KFP at {host} answered {what} with a redirect ({status}) to {location or '?'}: "
            f"kfnas follows no redirect with your token (it would leave for another address; a "
            f"redirect is often a login page). Give --host the API's own address: https://... "
            f"if it redirects to https, or a port-forwarded one such as http://localhost:8080 "
            f"(`{_PORT_FORWARD}`)."
        )
    said = _server_message(body)
    said = f": {said}" if said else ""
    if status in (401, 403):
        return KfpApiError(
            f"KFP at {host} refused {what} ({status}{said}). Give a valid token with --token or "
            f"KFP_TOKEN (e.g. `gcloud auth print-access-token`, or `kubectl -n NAMESPACE create "
            f"token default-editor`), and on a multi-user cluster your --namespace."
        )
    if status == 404:
        return KfpApiError(
            f"{host} answered 404 Not Found to {what}{said}: it is not the KFP API at that "
            f"address. Check --host: the KFP UI or API base URL without a path (e.g. "
            f"http://localhost:8080 after `{_PORT_FORWARD}`)."
        )
    return KfpApiError(f"KFP at {host} answered {status} to {what}{said}")


def _unreachable(host: str, reason: Any) -> KfpApiError:
    return KfpApiError(
        f"cannot reach KFP at {host} ({reason}). Check --host and that it is reachable from here, "
        f"e.g. `{_PORT_FORWARD}` and --host http://localhost:8080."
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: ``urllib`` would send the request's headers, token included, along."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx answer as an HTTPError


def is_local(host: str) -> bool:
    """Whether a URL's host is this machine: ``localhost`` (and ``*.localhost``) or loopback."""
    name = (urllib.parse.urlsplit(host).hostname or "").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_transport(host: str, token: str | None, insecure: bool = False) -> None:
    """Refuses to send ``token`` over plain http to another machine unless ``insecure``.

    Raises:
        KfpApiError: ``host`` has no http(s) scheme, or is ``http://`` to a host other than this
            machine with a token and without ``insecure``.
    """
    if not host.startswith(("http://", "https://")):
        raise KfpApiError(f"--host {host!r} needs its scheme, e.g. http://localhost:8080")
    if token and host.startswith("http://") and not insecure and not is_local(host):
        raise KfpApiError(
            f"--host {host} is plain http to another machine: the token would cross the network "
            f"unencrypted. Use https://..., or a port-forward and --host http://localhost:8080 "
            f"(`{_PORT_FORWARD}`); on a network you trust, pass --insecure."
        )


def _check_redirects_drop_the_token() -> None:
    """Refuses a urllib3 that would forward the token on a redirect to another host."""
    from urllib3.util.retry import Retry

    dropped = {name.lower() for name in Retry.DEFAULT_REMOVE_HEADERS_ON_REDIRECT}
    if "authorization" not in dropped:  # pragma: no cover - depends on the installed urllib3
        raise KfpApiError(
            "the installed urllib3 forwards the Authorization header on redirects to other "
            "hosts; install the pinned version (pip install -c images/constraints.txt kfnas)"
        )


def check_host(host: str, token: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Asks the KFP API's health endpoint whether ``host`` is a KFP API that accepts the token.

    ``kfp.Client`` retries its own health check for half a minute on any error and then reports
    a bare timeout; asking once first gives a message that says what to fix.

    Returns:
        The health answer (``multi_user``, ...).

    Raises:
        KfpApiError: The host is unreachable, refuses the token, is not the KFP API, answers
            with a redirect (never followed) or with something other than the API's JSON (e.g. a
            login page).
    """
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(host + _HEALTHZ, headers=headers)
    # No proxy, as kfp.Client; no redirect: urllib would forward the token to any host.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        location = e.headers.get("Location") if e.headers else None
        raise _status_error(host, e.code, f"GET {_HEALTHZ}", e.read(), location) from None
    except (urllib.error.URLError, OSError) as e:
        raise _unreachable(host, getattr(e, "reason", e)) from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise KfpApiError(
            f"{host}{_HEALTHZ} answered with something other than the KFP API's JSON (a login "
            f"page?): give a token with --token, or --host a port-forwarded address such as "
            f"http://localhost:8080 (`{_PORT_FORWARD}`)."
        )
    return answer


def client_call(host: str, what: str, call: Callable[[], _T]) -> _T:
    """Runs one ``kfp.Client`` call; its console chatter is dropped, its errors explained."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return call()
    except ApiException as e:
        if e.status == 0:  # TLS and other transport errors
            raise _unreachable(host, e.reason) from None
        raise _status_error(host, e.status, what, e.body) from None
    except HTTPError as e:
        raise _unreachable(host, e) from None


def name_filter(name: str) -> str:
    """A v2beta1 list filter matching ``display_name`` exactly (1: EQUALS, as kfp.Client writes)."""
    predicate = {"operation": 1, "key": "display_name", "stringValue": name}
    return json.dumps({"predicates": [predicate]})


def listed(host: str, what: str, call: Callable[[], Any], field: str) -> list[Any]:
    """The items of one list call (the API leaves the field out when the list is empty)."""
    return getattr(client_call(host, what, call), field) or []


def connect(
    host: str, namespace: str | None = None, token: str | None = None, insecure: bool = False
) -> Any:
    """A ``kfp.Client`` for ``host``, after checking that it is a KFP API that takes the token.

    Args:
        host: The KFP UI or API base URL, e.g. ``http://localhost:8080``.
        namespace: The Kubernetes namespace (multi-user KFP); ``None`` for single-user KFP.
        token: A bearer token for the API (``existing_token`` of ``kfp.Client``).
        insecure: Allow sending the token over plain http to another machine.

    Raises:
        KfpApiError: The host has no scheme, is plain http to another machine with a token and
            without ``insecure``, is unreachable, redirects, refuses the token, is not the KFP
            API, or is multi-user and no namespace is given.
    """
    import kfp

    check_transport(host, token, insecure)
    _check_redirects_drop_the_token()
    if check_host(host, token).get("multi_user") and not namespace:
        raise KfpApiError(
            f"KFP at {host} is multi-user: pass --namespace (your Kubeflow profile's namespace)"
        )
    return client_call(
        host,
        f"GET {_HEALTHZ}",
        lambda: kfp.Client(host=host, namespace=namespace or "kubeflow", existing_token=token),
    )
