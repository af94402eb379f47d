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
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import ApiKey, WebSession
from ragsvc.errors import Forbidden, InvalidInput, NotFound, Unauthorized

SCOPES = ("read", "write", "admin")  # each includes the ones before it
KEY_PREFIX = "rsk_"
# Paths that never need a key: liveness/readiness probes, the API schema and the sign-in form of the
# web page. Everything else (``/v1/...``, ``/metrics`` unless RAGSVC_METRICS_PUBLIC, the web page and its
# assets) does: a route added later is protected unless it is listed here.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/login", "/logout"})
PUBLIC_PREFIXES = ("/schema",)
# The web page's sign-in cookie holds a session token, never the key. ``__Host-``: the browser only
# accepts it with Secure, Path=/ and no Domain, so no sibling host or plain-http page can set or
# overwrite it. Browsers treat http://localhost and http://127.0.0.1 as secure, so the loopback default
# gets it too; over plain http to any other host a browser drops Secure cookies, so there (and only
# there) the cookie falls back to SESSION_COOKIE_PLAIN (docs/security-web.md).
SESSION_COOKIE = "__Host-ragsvc_session"
SESSION_COOKIE_PLAIN = "ragsvc_session"


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

    # --- web page sessions ------------------------------------------------------------------------
    def start_session(self, key: str, ttl_s: float) -> str:
        """Check the key and open a session for it; returns the token for the cookie (stored hashed)."""
        principal = self.authenticate(key)
        token = secrets.token_urlsafe(32)
        now = datetime.now(timezone.utc)
        with self.sessions() as session:
            session.add(WebSession(id=_hash(token), key_id=principal.key_id, created_at=now,
                                   expires_at=now + timedelta(seconds=ttl_s)))
            session.commit()
        return token

    def session_principal(self, token: str) -> Principal:
        """The principal of a live session: not signed out, not expired, and its key not revoked."""
        with self.sessions() as session:
            row = session.get(WebSession, _hash(token)) if token else None
            key = session.get(ApiKey, row.key_id) if row is not None else None
            if row is None or key is None or row.revoked_at is not None:
                raise Unauthorized("You are signed out; sign in again at /login.")
            if _aware(row.expires_at) <= datetime.now(timezone.utc):
                raise Unauthorized("Your sign-in has expired; sign in again at /login.")
            if key.revoked_at is not None:
                raise Unauthorized("The API key has been revoked; ask an administrator for a new one.")
            return Principal(key_id=key.id, collection=key.collection, scope=key.scope)

    def end_session(self, token: str) -> None:
        with self.sessions() as session:
            row = session.get(WebSession, _hash(token)) if token else None
            if row is not None and row.revoked_at is None:
                row.revoked_at = datetime.now(timezone.utc)
                session.commit()


def _aware(ts: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _key_json(k: ApiKey) -> dict:
    return {"id": k.id, "scope": k.scope, "collection": k.collection, "name": k.name,
            "created_at": k.created_at.isoformat() if k.created_at else None,
            "revoked": k.revoked_at is not None}


def bearer(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def session_token(cookies: dict[str, str]) -> str | None:
    return cookies.get(SESSION_COOKIE) or cookies.get(SESSION_COOKIE_PLAIN) or None
