"""Rate-limit counters in the database, so that every API replica counts the same requests.

Litestar's limiter reads a key's history from its store, appends and writes it back: atomic inside one
process (an in-process lock), but two replicas sharing a store both read ``n`` and both write ``n + 1``,
and each replica grants the whole limit. So the shared counter is one SQL statement that adds the hit
and returns the new count: an upsert on the key's row (PostgreSQL row lock, SQLite's write lock), with
no read-modify-write between processes. A fixed window, like Litestar's: the first hit after a window
ends starts the next one.

Why the database and not Redis: every replica and worker already shares it (nothing new to run, back
up or secure), the limited routes (asking, uploading, deleting) each cost far more than one indexed
upsert, and the API cannot serve a keyed request without the database anyway (it looks the key up).
"""

from __future__ import annotations

import time

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from ragsvc.db import RateLimitWindow


def count_hit(sessions: sessionmaker[Session], key: str, window_s: int, now: float | None = None) -> tuple[int, int]:
    """Record one request under ``key`` and return ``(hits in the current window, its end in unix s)``."""
    now_s = int(time.time() if now is None else now)
    table = RateLimitWindow.__table__
    with sessions() as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        ended = table.c.reset_at <= now_s
        stmt = (insert(table).values(key=key, reset_at=now_s + window_s, hits=1)
                .on_conflict_do_update(index_elements=[table.c.key], set_={
                    "hits": case((ended, 1), else_=table.c.hits + 1),
                    "reset_at": case((ended, now_s + window_s), else_=table.c.reset_at)})
                .returning(table.c.hits, table.c.reset_at))
        hits, reset_at = session.execute(stmt).one()
        session.commit()
    return int(hits), int(reset_at)
