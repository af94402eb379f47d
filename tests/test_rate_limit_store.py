"""The database rate-limit counter (RAGSVC_RATE_LIMIT_STORE=database) on real SQLite and PostgreSQL:
concurrent hits from many connections are each counted exactly once, and a window ends on time.
(Across real API replicas: tests/test_replicas.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ragsvc.db.migrate import upgrade
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.rate_limit import count_hit
from tests.conftest import new_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    def made(url):
        upgrade(url)
        engine = make_engine(url)
        return engine, make_sessionmaker(engine)

    if request.param == "sqlite":
        engine, sm = made(f"sqlite:///{tmp_path / 'rl.db'}")
        yield sm
        engine.dispose()
    else:
        with new_pg_database() as url:
            engine, sm = made(url)
            yield sm
            engine.dispose()


def test_concurrent_hits_are_each_counted_once(sessions):
    # A read-modify-write (what Litestar's limiter does with any store) loses hits here: two connections
    # read the same count and both write count + 1. The upsert hands out every count exactly once.
    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(lambda _: count_hit(sessions, "ask::k1", 60, now=1000)[0], range(160)))
    assert sorted(counts) == list(range(1, 161))
    # Keys are counted apart.
    assert count_hit(sessions, "ask::k2", 60, now=1000) == (1, 1060)


def test_a_window_ends_and_the_next_starts_at_one(sessions):
    assert count_hit(sessions, "delete::k", 60, now=1000) == (1, 1060)
    assert count_hit(sessions, "delete::k", 60, now=1059) == (2, 1060)
    assert count_hit(sessions, "delete::k", 60, now=1060) == (1, 1120)  # the window ended: counting restarts
    assert count_hit(sessions, "delete::k", 60, now=1061) == (2, 1120)
