"""API keys and what each request may do.

A key looks like ``rsk_<id>_<secret>``: ``id`` (public, 12 hex) finds the row, the SHA-256 of the whole
key is compared in constant time with the stored one. Keys carry 256 random bits, so a fast hash is
enough (slow password hashes exist for guessable secrets). The plain key is printed once at creation
and never stored.

Every request gets a :class:`Principal`. With authentication off (the embedded default, loopback only)
it is the anonymous admin over every collection, so the handlers have one code path either way.
Isolation rule: a key bound to collection A sees nothing of B. Naming B explicitly is refused with 403
(which says nothing about whether B exists); a document or job of B looks exactly like a missing one (404).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import ApiKey
from ragsvc.errors import Forbidden, InvalidInput, NotFound, Unauthorized

SCOPES = ("read", "write", "admin")  # each includes the ones before it
KEY_PREFIX = "rsk_"
# Paths that never need a key: liveness/readiness probes, metrics for the scraper, the API schema and
# the sign-in form of the web page. Everything else (``/v1/...``, the web page and its assets) does:
# a route added later is protected unless it is listed here.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/login", "/logout"})
PUBLIC_PREFIXES = ("/schema",)
COOKIE = "ragsvc_key"


@dataclass(frozen=True)
class Principal:
    key_id: str | None  # None: authentication is off
    collection: str | None  # None: every collection
    scope: str

    @property
    def label(self) -> str:
        return self.key_id or "anonymous"

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def require(self, scope: str, action: str) -> None:
        if not self.allows(scope):
            raise Forbidden(f"This API key has scope {self.scope!r}; {action} needs a key with scope {scope!r} "
                            "(create one with `ragsvc keys create --scope ...`).")

    def sees(self, collection: str) -> bool:
        return self.collection is None or self.collection == collection

    def collection_for(self, requested: str | None, scope: str, action: str) -> str:
        """The collection a request works on: the one it names, else the key's own, else ``default``.

        Raises 403 when the scope is too small or the collection is not the key's.
        """
        self.require(scope, action)
        name = requested or self.collection or "default"
        if not self.sees(name):
            raise Forbidden(f"This API key is for collection {self.collection!r}; it cannot use collection "
                            f"{name!r}.")
        return name

    def check_visible(self, collection: str, what: str) -> None:
        """A thing in another collection is reported exactly as a missing one."""
        if not self.sees(collection):
            raise NotFound(f"There is no {what}.")


ANONYMOUS = Principal(key_id=None, collection=None, scope="admin")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def create(self, scope: str, collection: str | None, name: str = "") -> tuple[str, dict]:
        """Returns the plain key (shown once) and the stored row as JSON."""
        if scope not in SCOPES:
            raise InvalidInput(f"The scope must be one of {', '.join(SCOPES)}; got {scope!r}.")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKey(id=key_id, key_hash=_hash(key), collection=collection, scope=scope, name=name[:128])
        with self.sessions() as session:
            session.add(row)
            session.commit()
            return key, _key_json(row)

    def list(self) -> list[dict]:
        with self.sessions() as session:
            return [_key_json(k) for k in session.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def revoke(self, key_id: str) -> dict:
        key_id = key_id.removeprefix(KEY_PREFIX).split("_", 1)[0]  # the id, or a whole key pasted in
        with self.sessions() as session:
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"There is no API key with id {key_id!r}; `ragsvc keys list` shows them.")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(timezone.utc)
                session.commit()
            return _key_json(row)

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise Unauthorized("This service needs an API key: send `Authorization: Bearer <key>` "
                               "(an administrator creates one with `ragsvc keys create`).")
        key_id = key.removeprefix(KEY_PREFIX).split("_", 1)[0] if key.startswith(KEY_PREFIX) else ""
        with self.sessions() as session:
            row = session.get(ApiKey, key_id) if key_id else None
            stored = row.key_hash if row is not None else _hash("no such key")
            # Compared even when no row matched, so the answer takes the same time either way.
            if not hmac.compare_digest(stored, _hash(key)) or row is None:
                raise Unauthorized("The API key is not valid; check it was copied whole.")
            if row.revoked_at is not None:
                raise Unauthorized("The API key has been revoked; ask an administrator for a new one.")
            return Principal(key_id=row.id, collection=row.collection, scope=row.scope)


def _key_json(k: ApiKey) -> dict:
    return {"id": k.id, "scope": k.scope, "collection": k.collection, "name": k.name,
            "created_at": k.created_at.isoformat() if k.created_at else None,
            "revoked": k.revoked_at is not None}


def bearer_or_cookie(headers: dict[str, str], cookies: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return cookies.get(COOKIE) or None
