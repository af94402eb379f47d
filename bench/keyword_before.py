"""The keyword query path as it was before the query rewrite (commit 004c9d0's ragsvc/keyword_index.py),
kept verbatim so bench/keyword_search.py can time it side by side with today's in the same run.

Same tables and index format as today; only the query differs: terms pruned against a 20,000-row postings
budget, the collection as a MATCH phrase (FTS5 ``bm25()`` walks its 1M-row doclist for its IDF), and on
PostgreSQL every matching row ranked by one ``ts_rank`` per term.
"""

from __future__ import annotations

import math
import re
import threading
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

FTS_TABLE = "keyword_fts"
FTS_VOCAB = "keyword_fts_vocab"
PG_TABLE = "keyword_entries"
TOKEN = re.compile(r"(?u)\b\w\w+\b")
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with"))
MAX_TERMS = 64
MAX_QUERY_CHARS = 20_000
POSTINGS_BUDGET = 20_000
PG_STATS_TTL_S = 60.0


def prune(terms: list[str], df: dict[str, int], budget: int) -> list[str]:
    """The rarest terms whose document frequencies sum to at most ``budget`` (at least one), in query order."""
    kept: set[str] = set()
    total = 0
    for t in sorted(terms, key=lambda t: df.get(t, 0)):
        d = df.get(t, 0)
        if kept and total + d > budget:
            break
        kept.add(t)
        total += d
    return [t for t in terms if t in kept]


def query_terms(question: str) -> list[str]:
    """Distinct lower-case tokens of ``question`` minus stopwords, in order, at most MAX_TERMS."""
    seen: dict[str, None] = {}
    for m in TOKEN.finditer(question[:MAX_QUERY_CHARS].lower()):
        tok = m.group()
        if tok not in STOPWORDS and tok not in seen:
            seen[tok] = None
            if len(seen) >= MAX_TERMS:
                break
    return list(seen)


def _fts5_query(collection_id: str, terms: list[str]) -> str:
    # Double quotes make each term a plain string to FTS5 (NEAR, AND, *, ^, column names lose meaning);
    # a term holds only word characters, so it has no quote to escape. The collection id is hex.
    words = " OR ".join(f'"{t}"' for t in terms)
    return f'collection_id : "{collection_id}" AND body : ({words})'


class KeywordStoreBefore:
    """Searches the keyword entries of one collection through the caller's database session."""

    def __init__(self, postings_budget: int = POSTINGS_BUDGET) -> None:
        self.postings_budget = postings_budget
        self._pg_stats: tuple[float, dict[str, float], float] | None = None  # (read at, term freqs, rows)
        self._lock = threading.Lock()

    def _sqlite_df(self, session: Session, terms: list[str]) -> dict[str, int]:
        marks = ", ".join(f":t{i}" for i in range(len(terms)))
        rows = session.execute(text(f"SELECT term, doc FROM {FTS_VOCAB} WHERE term IN ({marks})"),
                               {f"t{i}": t for i, t in enumerate(terms)})
        return {term: int(doc) for term, doc in rows}

    def _pg_df(self, session: Session, terms: list[str]) -> dict[str, int]:
        with self._lock:
            stats = self._pg_stats
        if stats is None or time.monotonic() - stats[0] > PG_STATS_TTL_S:
            row = session.execute(text(
                "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples "
                "FROM pg_class c LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = 'tsv' "
                f"AND s.schemaname = current_schema() WHERE c.relname = '{PG_TABLE}' "
                "AND c.relnamespace = current_schema()::regnamespace")).first()
            freqs: dict[str, float] = {}
            if row is not None and row[0] is not None:
                freqs = dict(zip(row[0], row[1]))  # the freqs array has 3 extra numbers at its end
            stats = (time.monotonic(), freqs, float(row[2]) if row is not None else 0.0)
            with self._lock:
                self._pg_stats = stats
        _, freqs, rows = stats
        return {t: int(freqs[t] * rows) for t in terms if t in freqs}

    def _pg_idf(self, terms: list[str], df: dict[str, int]) -> list[float]:
        """BM25's IDF of each term from pg_stats (a term not among the most common counts as rare);
        all 1.0 before the table was ever analysed."""
        with self._lock:
            rows = self._pg_stats[2] if self._pg_stats else 0.0
        if rows <= 0:
            return [1.0] * len(terms)
        return [math.log(1.0 + (rows - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in terms]

    def search(self, session: Session, collection_id: str, query: str, k: int) -> list[tuple[int, float]]:
        """Top-``k`` (chunk id, score > 0) pairs, best first. Only ready documents have entries."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        sqlite = session.get_bind().dialect.name == "sqlite"
        df: dict[str, int] = {}
        if len(terms) > 1 or not sqlite:
            df = self._sqlite_df(session, terms) if sqlite else self._pg_df(session, terms)
            terms = prune(terms, df, self.postings_budget)
        if sqlite:
            # bm25() is lower for better matches; the collection column weighs nothing. (bm25() walks the
            # collection term's postings once per query for its IDF: a cost linear in the collection,
            # but a sequential one; docs/benchmarks.md.)
            rows = session.execute(text(
                f"SELECT rowid, -bm25({FTS_TABLE}, 0.0, 1.0) AS score FROM {FTS_TABLE} "
                f"WHERE {FTS_TABLE} MATCH :q ORDER BY bm25({FTS_TABLE}, 0.0, 1.0) LIMIT :k"),
                {"q": _fts5_query(collection_id, terms), "k": k}).all()
        else:
            # ts_rank has no IDF: each term's own ts_rank is weighted by its IDF, BM25's idea, so a rare
            # term outweighs a common one (recall on the eval set, docs/benchmarks.md). The terms are bound
            # parameters; websearch_to_tsquery never raises, and the words are joined by its "or".
            params: dict[str, object] = {"q": " or ".join(terms), "c": collection_id, "k": k}
            parts = []
            for i, (t, w) in enumerate(zip(terms, self._pg_idf(terms, df))):
                params[f"t{i}"], params[f"w{i}"] = t, w
                parts.append(f"ts_rank(tsv, websearch_to_tsquery('simple', :t{i})) * :w{i}")
            rows = session.execute(text(
                f"SELECT chunk_id, {' + '.join(parts)} AS score FROM {PG_TABLE}, "
                "websearch_to_tsquery('simple', :q) AS q "
                "WHERE collection_id = :c AND tsv @@ q ORDER BY score DESC, chunk_id LIMIT :k"), params).all()
        return [(int(cid), float(score)) for cid, score in rows if score > 0]
