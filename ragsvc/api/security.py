"""The HTTP side of access control: who is asking (API key or the web page's cookie), how often they may
ask and upload, and the web page's sign-in form.

Default-deny: with authentication on, every path except :data:`ragsvc.auth.PUBLIC_PATHS` needs a key,
so a route added later is protected without anyone remembering to protect it.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.middleware.rate_limit import RateLimitConfig, RateLimitMiddleware
from litestar.params import Body
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER

from ragsvc.auth import ANONYMOUS, COOKIE, Principal, bearer_or_cookie, is_public
from ragsvc.errors import Unauthorized
from ragsvc.settings import Settings


def auth_middleware(app):  # noqa: ANN001, ANN201 - an ASGI middleware factory
    """Put a :class:`Principal` in ``scope["user"]`` (``request.user``) or refuse with 401."""

    async def middleware(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await app(scope, receive, send)
        state = scope["litestar_app"].state
        settings: Settings = state.settings
        if not settings.auth_enabled or is_public(scope["path"]):
            scope["user"] = ANONYMOUS if not settings.auth_enabled else None
            return await app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        key = bearer_or_cookie(headers, _cookies(headers.get("cookie", "")))
        try:
            scope["user"] = await asyncio.to_thread(state.api_keys.authenticate, key)
        except Unauthorized:
            if scope["path"] == "/" and scope["method"] == "GET" and "text/html" in headers.get("accept", ""):
                # A person opening the web page: to the sign-in form rather than a JSON problem.
                await send({"type": "http.response.start", "status": HTTP_303_SEE_OTHER,
                            "headers": [(b"location", b"/login"), (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
            raise
        return await app(scope, receive, send)

    return middleware


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            out[name] = value
    return out


def principal_of(request: Request) -> Principal:
    user = request.scope.get("user")
    return user if isinstance(user, Principal) else ANONYMOUS


class KeyRateLimit(RateLimitMiddleware):
    """Litestar's rate limiter, counted per API key (not per client address) and per bucket."""

    def cache_key_from_request(self, request: Request[Any, Any, Any]) -> str:
        return f"{self.config.store}::{principal_of(request).label}"


def rate_limits(settings: Settings) -> list:
    """One limiter for asking and one for uploading; only with authentication on, where a key names
    who is asking (the embedded default serves one person on loopback)."""
    if not settings.auth_enabled:
        return []
    out = []
    for bucket, per_minute, routes in (
        ("ask", settings.rate_limit_ask_per_minute, {"/v1/ask", "/v1/chat/completions"}),
        ("upload", settings.rate_limit_upload_per_minute, {"/v1/documents"}),
    ):
        if per_minute <= 0:
            continue

        def check(request: Request, routes: set[str] = routes) -> bool:
            return request.method == "POST" and request.url.path.rstrip("/") in routes

        out.append(RateLimitConfig(rate_limit=("minute", per_minute), check_throttle_handler=check,
                                   middleware_class=KeyRateLimit, store=f"rate_limit_{bucket}").middleware)
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


@get("/login", include_in_schema=False)
async def login_form() -> Response:
    return Response(LOGIN_PAGE.format(error=""), media_type="text/html; charset=utf-8")


@post("/login", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
async def login(request: Request,
                data: dict[str, str] = Body(media_type=RequestEncodingType.URL_ENCODED)) -> Response:
    """Check the key and keep it in an HttpOnly, SameSite=Strict cookie: the page's own requests carry it,
    scripts cannot read it and other sites cannot make the browser send it."""
    state = request.app.state
    key = (data.get("key") or "").strip()
    try:
        await asyncio.to_thread(state.api_keys.authenticate, key)
    except Unauthorized as exc:
        page = LOGIN_PAGE.format(error=f'<p class="error">{html.escape(exc.detail)}</p>')
        return Response(page, status_code=401, media_type="text/html; charset=utf-8")
    resp = Redirect("/", status_code=HTTP_303_SEE_OTHER)
    resp.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https")
    return resp


@post("/logout", include_in_schema=False, status_code=HTTP_303_SEE_OTHER)
async def logout() -> Response:
    resp = Redirect("/login", status_code=HTTP_303_SEE_OTHER)
    resp.delete_cookie(COOKIE, path="/")
    return resp


SECURITY_ROUTES = [login_form, login, logout]
