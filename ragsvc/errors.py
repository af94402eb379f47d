"""ragsvc's error hierarchy. Foreign errors (pypdf, PDFium, FAISS, vLLM) are wrapped where they happen.

    RagsvcError                      500  something went wrong on our side
    ├── BadRequest                   400  the request itself is malformed
    ├── Unauthorized                 401  no API key, or an unknown or revoked one
    ├── Forbidden                    403  the key's scope or collection does not allow this
    ├── NotFound                     404  no such document / collection
    ├── Conflict                     409  the request clashes with current state
    ├── PayloadTooLarge              413  upload over the size limit
    ├── UnsupportedMediaType         415  file type we cannot parse
    ├── InvalidInput                 422  well-formed but unusable input (empty file, empty question)
    ├── TooManyRequests              429  the key's rate limit is spent (Retry-After says for how long)
    ├── NotReady                     503  a component (engine, database) is still starting
    └── IngestError                  —    a document cannot be ingested; marks it failed with the reason
        └── ParseError               —    the parser rejected the file (corrupt, encrypted, no text)
            └── ParseLimitExceeded   —    parsing went past a limit (memory, CPU, time, pages, size)

The HTTP boundary (``ragsvc.api.problems``) turns each into an RFC 9457 problem+json body.
"""

from __future__ import annotations


class RagsvcError(Exception):
    status_code = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class BadRequest(RagsvcError):
    status_code = 400
    title = "Bad request"


class Unauthorized(RagsvcError):
    status_code = 401
    title = "Unauthorized"


class Forbidden(RagsvcError):
    status_code = 403
    title = "Forbidden"


class NotFound(RagsvcError):
    status_code = 404
    title = "Not found"


class Conflict(RagsvcError):
    status_code = 409
    title = "Conflict"


class PayloadTooLarge(RagsvcError):
    status_code = 413
    title = "Payload too large"


class UnsupportedMediaType(RagsvcError):
    status_code = 415
    title = "Unsupported file type"


class InvalidInput(RagsvcError):
    status_code = 422
    title = "Invalid input"


class TooManyRequests(RagsvcError):
    status_code = 429
    title = "Too many requests"


class NotReady(RagsvcError):
    status_code = 503
    title = "Not ready"


class IngestError(RagsvcError):
    title = "Ingestion failed"


class ParseError(IngestError):
    title = "Document could not be parsed"


class ParseLimitExceeded(ParseError):
    """Parsing the document went past one of its limits; ``limit`` names the setting (``RAGSVC_PARSE_CPU_S``)."""

    title = "Document exceeds a parsing limit"

    def __init__(self, detail: str, limit: str, **extra: object) -> None:
        super().__init__(detail, limit=limit, **extra)
        self.limit = limit
