"""The HTTP side of access control: who is asking (API key or the web page's cookie), how often they may
ask and upload, and the web page's sign-in form.

Default-deny: with authentication on, every path except :data:`ragsvc.auth.PUBLIC_PATHS` needs a key,
so a route added later is protected without anyone remembering to protect it.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any, Callable, TypeVar

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import (DURATION_VALUES, CacheObject, RateLimitConfig,
                                          RateLimitMiddleware)
from litestar.params import Body
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER

from ragsvc.api.executors import AUTH_EXECUTOR, run_in
from ragsvc.api.websafety import LOOPBACK_NAMES, cross_site_origin, header_map, host_name, send_problem
from ragsvc.auth import (ANONYMOUS, SESSION_COOKIE, SESSION_COOKIE_PLAIN, Principal, bearer, is_public,
                         session_token)
from ragsvc.errors import Unauthorized
from ragsvc.rate_limit import count_hit
from ragsvc.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Key and session checks, on their own threads (never behind upload fsyncs: ragsvc.api.executors)."""
    return await run_in(AUTH_EXECUTOR, fn, *args)


def auth_middleware(app):  # noqa: ANN001, ANN201 - an ASGI middleware factory
    """Put a :class:`Principal` in ``scope["user"]`` (``request.user``) or refuse with 401; refuse a
    browser's state-changing request from another origin with 403 unless a bearer key authenticates it.

    Fail closed: a scope other than HTTP (a websocket) is refused unless its path is public."""

    async def middleware(scope, receive, send):  # noqa: ANN001
        state = scope["litestar_app"].state
        settings: Settings = state.settings
        public = is_public(scope["path"]) or (scope["path"] == "/metrics" and metrics_public(settings))
        if scope["type"] != "http":
            if not public:
                return await send({"type": "websocket.close", "code": 1008})
            return await app(scope, receive, send)
        headers = header_map(scope)
        key = bearer(headers)
        if key is None and (foreign := cross_site_origin(scope["method"], headers)):
            # Keys off or the sign-in cookie: the browser would attach either to another site's request.
            return await send_problem(scope, send, 403, "Forbidden",
                                      f"Cross-site request refused: a page at {foreign[:200]!r} may not "
                                      f"{scope['method']} here. Use the service's own web page, or send an API "
                                      "key in the Authorization header.")
        if not settings.auth_enabled or public:
            scope["user"] = ANONYMOUS if not settings.auth_enabled else None
            return await app(scope, receive, send)
        try:
            if key is not None:
                scope["user"] = await off_loop(state.api_keys.authenticate, key)
            else:
                token = session_token(_cookies(headers.get("cookie", "")))
                if token is None:
                    state.api_keys.authenticate(None)  # raises the "needs an API key" 401
                scope["user"] = await off_loop(state.api_keys.session_principal, token)
        except Unauthorized:
            if scope["path"] == "/" and scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                # A person opening the web page: to the sign-in form rather than a JSON problem.
                await send({"type": "http.response.start", "status": HTTP_303_SEE_OTHER,
                            "headers": [(b"location", b"/login"), (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
            raise
        return await app(scope, receive, send)

    return middleware


def metrics_public(settings: Settings) -> bool:
    """``/metrics`` needs no key with keys off (loopback) or when RAGSVC_METRICS_PUBLIC says so."""
    return settings.metrics_public or not settings.auth_enabled


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


def principal_of(request: Request) -> Principal:
    """Fail closed: a handler reached without a principal (a public path, a middleware bypassed) gets none."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthorized("This service needs an API key: send `Authorization: Bearer <key>`.")
    return user


class KeyRateLimit(RateLimitMiddleware):
    """Litestar's rate limiter, counted per API key (not per client address) and per bucket."""

    def cache_key_from_request(self, request: Request[Any, Any, Any]) -> str:
        user = request.scope.get("user")
        return f"{self.config.store}::{user.label if isinstance(user, Principal) else 'anonymous'}"


class SharedKeyRateLimit(KeyRateLimit):
    """The same limits, counted in the database (RAGSVC_RATE_LIMIT_STORE=database): N requests spread over
    any number of API replicas count as N against one key. One atomic upsert per limited request
    (:mod:`ragsvc.rate_limit`), on the key-check threads; refused requests count too (the window is
    fixed, so they do not extend it)."""

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - the ASGI signature
        app = scope["litestar_app"]
        request = app.request_class(scope)
        if await self.should_check_request(request=request):
            hits, reset_at = await off_loop(count_hit, app.state.sessions, self.cache_key_from_request(request),
                                            DURATION_VALUES[self.unit])
            # Litestar's header helper counts a history list; only its length matters.
            seen = CacheObject(history=[0] * min(hits, self.max_requests), reset=reset_at)
            if hits > self.max_requests:
                raise TooManyRequestsException(headers=self.create_response_headers(cache_object=seen))
            send = self.create_send_wrapper(send=send, cache_object=seen)
        await self.app(scope, receive, send)


# Async on purpose: Litestar runs a plain function check in a thread of the default executor, so with
# uploads filling that executor every keyed request would wait here before its limit was even looked at.
async def _is_upload(request: Request) -> bool:
    return request.method == "POST" and request.url.path.rstrip("/") == "/v1/documents"


async def _is_ask(request: Request) -> bool:
    return request.method == "POST" and request.url.path.rstrip("/") in ("/v1/ask", "/v1/chat/completions")


async def _is_delete(request: Request) -> bool:
    return request.method == "DELETE" and request.url.path.startswith("/v1/")


def rate_limits(settings: Settings) -> list:
    """One limiter each for asking, uploading and deleting; only with authentication on, where a key
    names who is asking (the embedded default serves one person on loopback). Counted in this process
    or in the database (``RAGSVC_RATE_LIMIT_STORE``)."""
    if not settings.auth_enabled:
        return []
    # memory: Litestar's in-process store, right for one API process; database: shared by every replica.
    limiter = SharedKeyRateLimit if settings.rate_limit_store == "database" else KeyRateLimit
    out = []
    for bucket, per_minute, check in (
        ("ask", settings.rate_limit_ask_per_minute, _is_ask),
        ("upload", settings.rate_limit_upload_per_minute, _is_upload),
        ("delete", settings.rate_limit_delete_per_minute, _is_delete),
    ):
        if per_minute > 0:
            out.append(RateLimitConfig(rate_limit=("minute", per_minute), check_throttle_handler=check,
                                       middleware_class=limiter, store=f"rate_limit_{bucket}").middleware)
    return out


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ragsvc: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}}button{{margin-top:.75rem;padding:.5rem 1rem;font:inherit}}
.error{{color:#b00020}}</style></head>
<body><h1>ragsvc</h1><p>This service needs an API key. An administrator creates one with
<code>ragsvc keys create --collection NAME --scope read|write|admin</code>.</p>
{error}<form method="post" action="/login"><label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button></form></body></html>
"""


LOGIN_CSS = re.search(r"<style>(.*?)</style>", LOGIN_PAGE.format(error=""), re.S)[1]


@get("/login", include_in_schema=False)
async def login_form() -> Response:
    return Response(LOGIN_PAGE.format(error=""), media_type="text/html; charset=utf-8")


def _login_failed(detail: str) -> Response:
    page = LOGIN_PAGE.format(error=f'<p class="error">{html.escape(detail)}</p>')
    return Response(page, status_code=401, media_type="text/html; charset=utf-8")


def _cookie_name(request: Request) -> tuple[str, bool]:
    """``__Host-`` with Secure wherever a browser keeps a Secure cookie: https, and loopback over plain
    http (a secure context). Over plain http to another host a Secure cookie would be dropped, so the
    page would never sign in: there the plain name, and a warning that the page wants https."""
    if request.url.scheme == "https" or host_name(request.headers.get("host", "")) in LOOPBACK_NAMES:
        return SESSION_COOKIE, True
    log.warning("web sign-in over plain http to %s: the session cookie cannot be Secure; serve the page "
                "over https (a TLS proxy in front of ragsvc)", host_name(request.headers.get("host", ""))[:100])
    return SESSION_COOKIE_PLAIN, False


@post("/login", include_in_schema=False, status_code=HTTP_303_SEE_OTHER, opt={"body": "form"})
async def login(request: Request,
                data: dict[str, str] = Body(media_type=RequestEncodingType.URL_ENCODED)) -> Response:
    """Check the key and open a server-side session; the cookie holds only the session's random token
    (HttpOnly: scripts cannot read it; SameSite=Strict: other sites cannot make the browser send it).
    The key itself never leaves this request. The Origin check in :func:`auth_middleware` runs first."""
    state = request.app.state
    settings: Settings = state.settings
    key = (data.get("key") or "").strip() if isinstance(data, dict) else ""
    try:
        token = await off_loop(state.api_keys.start_session, key, settings.session_ttl_s)
    except Unauthorized as exc:
        return _login_failed(exc.detail)
    name, secure = _cookie_name(request)
    resp = Redirect("/", status_code=HTTP_303_SEE_OTHER)
    resp.set_cookie(name, token, httponly=True, samesite="strict", path="/", secure=secure,
                    max_age=settings.session_ttl_s)
    return resp


@post("/logout", include_in_schema=False, status_code=HTTP_303_SEE_OTHER, opt={"body": "form"})
async def logout(request: Request) -> Response:
    """End the session on the server (the old cookie value gets 401 from now on) and clear the cookie."""
    token = session_token(request.cookies)
    if token:
        await off_loop(request.app.state.api_keys.end_session, token)
    resp = Redirect("/login", status_code=HTTP_303_SEE_OTHER)
    name, secure = _cookie_name(request)
    # Expired at once; a __Host- cookie is only replaced by one with the same Secure attribute.
    resp.set_cookie(name, "", max_age=0, httponly=True, samesite="strict", path="/", secure=secure)
    return resp


SECURITY_ROUTES = [login_form, login, logout]
