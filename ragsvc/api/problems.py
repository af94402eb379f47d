"""The one place where errors become HTTP responses: RFC 9457 ``application/problem+json``."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException

from ragsvc.errors import RagsvcError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(request: Request, status: int, title: str, detail: str, **extra: object) -> Response:
    headers = dict(extra.pop("headers", None) or {})  # type: ignore[arg-type]
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ragsvc"'
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.url.path, **extra}
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _ragsvc_error(request: Request, exc: RagsvcError) -> Response:
    if exc.status_code >= 500 and exc.status_code != 503:
        log.error("request failed: %s", exc.detail, exc_info=exc)
    return problem(request, exc.status_code, exc.title, exc.detail, **exc.extra)


def _validation_error(request: Request, exc: ValidationException) -> Response:
    # Litestar says 400 for a body that does not match the schema; the body was well-formed but
    # unusable, so 422 with each field's complaint in one sentence.
    errors = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for err in errors:
        if isinstance(err, dict):
            key = str(err.get("key") or "body")
            parts.append(f"{key}: {err.get('message', 'invalid')}")
    detail = "The request body is not valid"
    detail += f" ({'; '.join(parts)})." if parts else f": {exc.detail}."
    return problem(request, 422, "Invalid input", detail, errors=errors)


def _http_error(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if isinstance(exc, NotFoundException) and detail == "Not Found":
        detail = f"There is nothing at {request.url.path}; see /schema for the API."
    if exc.status_code == 413:
        settings = request.app.state.settings
        if request.method == "POST" and request.url.path.rstrip("/") == "/v1/documents":
            detail = (f"The upload is over {settings.max_upload_mb} MiB. Raise RAGSVC_MAX_UPLOAD_MB "
                      "or send smaller files.")
        else:
            detail = (f"The request body is over {settings.max_json_body_kb} KiB, the most this route takes "
                      "(RAGSVC_MAX_JSON_BODY_KB); only uploads take large bodies.")
    headers = dict(exc.headers or {})
    if exc.status_code == 429:
        # Litestar's limiter says when the window resets (RateLimit-Reset); clients read Retry-After.
        wait = headers.get("RateLimit-Reset", "60")
        headers["Retry-After"] = wait
        detail = (f"This API key has used its requests for this minute; try again in {wait} s "
                  "(limits: RAGSVC_RATE_LIMIT_ASK_PER_MINUTE, RAGSVC_RATE_LIMIT_UPLOAD_PER_MINUTE, "
                  "RAGSVC_RATE_LIMIT_DELETE_PER_MINUTE).")
    return problem(request, exc.status_code, _title(exc.status_code), str(detail), headers=headers)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return problem(request, 500, "Internal error",
                   f"The server hit an unexpected {type(exc).__name__}; the service keeps running. "
                   "Check the server log for details.")


exception_handlers = {
    RagsvcError: _ragsvc_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
