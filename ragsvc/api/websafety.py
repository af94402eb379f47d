"""What keeps a web page the user happens to visit from using the service on their behalf.

The loopback default has no keys, so the browser itself is the attacker's way in. Four answers:

- **Host allow-list** (:func:`allowed_hosts_middleware`): a DNS-rebinding page reaches 127.0.0.1 under
  its own name, so a request whose ``Host`` is not a loopback name, an IP address or a name listed in
  ``RAGSVC_ALLOWED_HOSTS`` is refused (400) before anything else runs. An IP literal cannot be rebound.
- **JSON only on JSON routes** (:func:`body_content_type`): a page can post ``text/plain`` without a
  CORS preflight, so every body-carrying route but the form ones (upload, sign-in) wants
  ``application/json`` (415 otherwise); a cross-site JSON post needs a preflight we never grant.
- **Origin check** (:func:`cross_site_origin`): a multipart or form post needs no preflight, so a
  state-changing request that a browser sent from another origin is refused (403) whenever no bearer
  key authenticates it (keys off, or the sign-in cookie). Clients that send no ``Origin`` (curl, SDKs)
  are not browsers and pass.
- **Headers on every answer** (:func:`security_headers_middleware`): CSP without inline script and
  without framing, ``nosniff`` and no referrer.

Each check is a set lookup or a string comparison: linear in the header, nothing user-supplied is
compiled into a pattern.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from ragsvc.errors import RagsvcError
from ragsvc.settings import Settings

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class UnsupportedContentType(RagsvcError):
    status_code = 415
    title = "Unsupported media type"


def header_map(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


async def send_problem(scope: dict, send: Any, status: int, title: str, detail: str,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A problem+json answer from ASGI middleware, where Litestar's exception handlers do not reach."""
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail,
                       "instance": scope.get("path", "")}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


# --- Host ----------------------------------------------------------------------------------------
def host_name(host: str) -> str:
    """``Host`` without its port, lower case: ``[::1]:8000`` -> ``::1``, ``Example.org.:80`` -> ``example.org``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def allowed_names(settings: Settings) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact names and ``*.suffix`` wildcards (stored as ``.suffix``) the service answers to."""
    names = set(LOOPBACK_NAMES) | {settings.host.lower()}
    suffixes = []
    for entry in settings.allowed_hosts:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*."):
            suffixes.append(entry[1:])
        elif entry:
            names.add(entry)
    return frozenset(names), tuple(suffixes)


def host_allowed(host: str, names: frozenset[str], suffixes: tuple[str, ...]) -> bool:
    name = host_name(host)
    if not name:
        return False
    if name in names or (suffixes and name.endswith(suffixes)) or "*" in names:
        return True
    try:  # an address typed by the user: DNS rebinding always arrives under the attacker's name
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def allowed_hosts_middleware(app):  # noqa: ANN001, ANN201 - an ASGI middleware factory
    """Refuse requests for a name the service does not answer to (DNS rebinding), with a problem body.

    Litestar's AllowedHostsMiddleware answers with a bare JSON message and compares the name with its
    port; this one says which setting admits the name and ignores the port."""
    cache: dict[int, tuple[frozenset[str], tuple[str, ...]]] = {}

    async def middleware(scope, receive, send):  # noqa: ANN001
        settings: Settings = scope["litestar_app"].state.settings
        allowed = cache.get(id(settings)) or cache.setdefault(id(settings), allowed_names(settings))
        host = header_map(scope).get("host", "")
        if host_allowed(host, *allowed):
            return await app(scope, receive, send)
        if scope["type"] != "http":
            return await send({"type": "websocket.close", "code": 1008})
        await send_problem(scope, send, 400, "Unknown host",
                           f"This service does not answer to the host name {host_name(host)[:100]!r}. If that is "
                           "really its name, add it to RAGSVC_ALLOWED_HOSTS (a JSON list) and restart.")

    return middleware


# --- Origin --------------------------------------------------------------------------------------
def _netloc(value: str, scheme: str) -> str:
    value = value.strip().lower()
    for default in ((":80",) if scheme == "http" else (":443",)):
        value = value.removesuffix(default)
    return value


def cross_site_origin(method: str, headers: dict[str, str]) -> str | None:
    """The foreign ``Origin`` of a state-changing request from another site's page, else None.

    A browser sends ``Origin`` with every POST, PUT, PATCH and DELETE; the page's own requests carry
    the service's own scheme://host:port. ``null`` (sandboxed frames, data: pages) is foreign too."""
    if method not in UNSAFE_METHODS or "origin" not in headers:
        return None
    origin = headers["origin"].strip()
    parts = urlsplit(origin)
    if origin.lower() == "null" or parts.scheme not in ("http", "https") or not parts.netloc:
        return origin or "(empty)"
    if _netloc(parts.netloc, parts.scheme) != _netloc(headers.get("host", ""), parts.scheme):
        return origin
    return None


# --- Content type --------------------------------------------------------------------------------
async def body_content_type(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Guard (app-wide): a request with a body sends JSON, or a form where the handler says
    ``opt={"body": "form"}``. Default-deny: a route added later takes JSON only. Async so that Litestar
    runs it on the loop (a sync guard goes through the default executor, behind upload fsyncs)."""
    if connection.scope.get("method") not in ("POST", "PUT", "PATCH"):
        return
    headers = connection.headers
    if headers.get("content-length", "0" if "transfer-encoding" not in headers else "") == "0":
        return  # no body: nothing to mistype (logout, a bare POST that fails validation anyway)
    sent = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if handler.opt.get("body") == "form":
        if sent not in FORM_TYPES:
            raise UnsupportedContentType(
                f"This route takes a form ({' or '.join(FORM_TYPES)}); the request was sent as "
                f"{sent or 'no content type'!r}.")
        return
    if sent != JSON:
        raise UnsupportedContentType(
            f"This route takes a JSON body sent as 'Content-Type: {JSON}'; the request was sent as "
            f"{sent or 'no content type'!r}.")


# --- Response headers ----------------------------------------------------------------------------
def style_hash(css: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"


def content_security_policy(inline_styles: tuple[str, ...] = ()) -> str:
    styles = " ".join(("'self'", *(style_hash(c) for c in inline_styles)))
    return ("default-src 'self'; script-src 'self'; style-src " + styles + "; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def security_headers_middleware_for(csp: str):  # noqa: ANN201
    """Every answer gets ``nosniff`` and ``Referrer-Policy: same-origin`` (not ``no-referrer``: with
    that, Chromium sends ``Origin: null`` on the page's own form posts, and the Origin check refuses
    the sign-in); every one but the API
    schema viewer (which loads its renderer from a CDN) gets the CSP and ``X-Frame-Options: DENY``."""
    common = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
    page = [(b"content-security-policy", csp.encode()), (b"x-frame-options", b"DENY")]

    def factory(app):  # noqa: ANN001, ANN202
        async def middleware(scope, receive, send):  # noqa: ANN001
            if scope["type"] != "http":
                return await app(scope, receive, send)
            extra = common if scope["path"].startswith("/schema") else common + page

            async def send_with_headers(message):  # noqa: ANN001
                if message["type"] == "http.response.start":
                    present = {k.lower() for k, _ in message.get("headers") or []}
                    message["headers"] = [*(message.get("headers") or []),
                                          *(h for h in extra if h[0] not in present)]
                await send(message)

            await app(scope, receive, send_with_headers)

        return middleware

    return factory
