"""Keyword (BM25-style) search in the database's own full-text engine: current the moment a document is ready.

Entries live next to the rows they index, so they change in the same transactions as the rows:

- SQLite: an FTS5 table ``keyword_fts(collection_id, body)`` whose rowid is the chunk id, ranked by FTS5's
  ``bm25()``. The collection id is an indexed column, so the collection filter is part of the MATCH.
- PostgreSQL: a table ``keyword_entries(chunk_id, collection_id, tsv)`` with a GIN index on ``tsv``
  (``'simple'`` configuration: no stemming, like bm25s), ranked by the sum of each term's ``ts_rank``
  weighted by its BM25 IDF (from ``pg_stats``, see below).

:func:`index_document` inserts a document's entries inside the transaction that makes it ready
(ingest/pipeline.py ``_make_ready``). Deleting chunk rows removes their entries in the same transaction:
``ON DELETE CASCADE`` on PostgreSQL, a trigger on SQLite (FTS5 tables cannot hold foreign keys). So there
is no rebuild, no lag behind ``ready``, and a change costs the size of the document, not the collection
(measured in bench/keyword_search.py, docs/benchmarks.md).

User text never reaches a query language: the question is split into word tokens (the same pattern and
English stopwords as bm25s, which ragsvc used before), at most :data:`MAX_TERMS` distinct ones, and each
is passed as a quoted FTS5 string or a ``websearch_to_tsquery`` word joined by ``or``. Tokens are made of
word characters only, so neither syntax can see an operator in them.

Both engines score every row that holds any query term, and FTS5's ``bm25()`` even counts each term's
whole posting list for its IDF. A question's common words ("who", "his", "film") hold a sizeable share of
a large collection, so a query is *pruned*: its terms are taken rarest first while their document
frequencies sum to at most ``postings_budget`` (the rarest is always kept), and the commoner rest is left
out of matching and scoring. Those words carry the least IDF; below the budget (while the table holds
up to ~``postings_budget`` chunks, all collections together) nothing is pruned and the ranking is exact.
Document frequencies come from
FTS5's ``fts5vocab`` table (exact) and PostgreSQL's ``pg_stats`` of the ``tsv`` column (estimates kept
by ANALYZE; a term not among the most common is taken as rare). bench/keyword_search.py measures both.
"""

from __future__ import annotations

import math
import re
import threading
import time

from sqlalchemy import select, text
from sqlalchemy.orm import Session

# The tables live only in migrations/versions/0008_keyword_fulltext.py: an FTS5 virtual table has no
# SQLAlchemy model, so ragsvc/db/models.py names them for Alembic's comparison to skip.
FTS_TABLE = "keyword_fts"
FTS_VOCAB = "keyword_fts_vocab"  # fts5vocab 'row' table: term -> number of rows holding it
PG_TABLE = "keyword_entries"

# bm25s.tokenize's default pattern: runs of two or more word characters. Linear time (no nesting).
TOKEN = re.compile(r"(?u)\b\w\w+\b")
# bm25s's English stopwords (bm25s.stopwords.STOPWORDS_EN), the list the bm25s index used.
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with"))
MAX_TERMS = 64  # a question's distinct terms searched; each one costs a posting-list scan
MAX_QUERY_CHARS = 20_000  # longer input is cut before tokenising (the API already limits questions)
POSTINGS_BUDGET = 20_000  # rows a query's terms may match before its commonest terms are pruned
PG_STATS_TTL_S = 60.0  # pg_stats changes only when (auto)ANALYZE runs


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


def _tokenize(texts: list[str]) -> list[list[str]]:
    """Tokens of each text as the keyword search sees them (tests/test_linear_time.py times this)."""
    return [query_terms(t) for t in texts]


def index_body(heading_path: str, body: str) -> str:
    # The heading path is searchable too: a question naming a section finds its chunks.
    return f"{heading_path}\n{body}"


def index_document(session: Session, document_id: str, collection_id: str) -> None:
    """Write the keyword entries of a document's chunks, in the caller's transaction (the one making it ready).

    Entries an earlier attempt may have left for these chunk ids are replaced, never duplicated.
    """
    params = {"d": document_id, "c": collection_id}
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE rowid IN "
                             "(SELECT id FROM chunks WHERE document_id = :d)"), params)
        session.execute(text(f"INSERT INTO {FTS_TABLE} (rowid, collection_id, body) "
                             "SELECT id, :c, heading_path || char(10) || text FROM chunks WHERE document_id = :d"),
                        params)
    else:
        session.execute(text(
            f"INSERT INTO {PG_TABLE} (chunk_id, collection_id, tsv) "
            "SELECT id, :c, to_tsvector('simple', heading_path || E'\\n' || text) FROM chunks WHERE document_id = :d "
            "ON CONFLICT (chunk_id) DO UPDATE SET collection_id = EXCLUDED.collection_id, tsv = EXCLUDED.tsv"),
            params)


def reindex_collection(session: Session, collection_id: str) -> int:
    """Rewrite a collection's keyword entries from its ready chunks (for ``ragsvc index rebuild``; never
    needed on the write path). Returns the number of entries. The caller commits."""
    from ragsvc.db import Document, DocumentStatus

    if session.get_bind().dialect.name == "sqlite":
        session.execute(text(f"DELETE FROM {FTS_TABLE} WHERE collection_id = :c"), {"c": collection_id})
    else:
        session.execute(text(f"DELETE FROM {PG_TABLE} WHERE collection_id = :c"), {"c": collection_id})
    ready = session.scalars(select(Document.id).where(Document.collection_id == collection_id,
                                                      Document.status == DocumentStatus.READY)).all()
    for document_id in ready:
        index_document(session, document_id, collection_id)
    table, key = (FTS_TABLE, "rowid") if session.get_bind().dialect.name == "sqlite" else (PG_TABLE, "chunk_id")
    return int(session.scalar(text(f"SELECT count({key}) FROM {table} WHERE collection_id = :c"),
                              {"c": collection_id}))


def _fts5_query(collection_id: str, terms: list[str]) -> str:
    # Double quotes make each term a plain string to FTS5 (NEAR, AND, *, ^, column names lose meaning);
    # a term holds only word characters, so it has no quote to escape. The collection id is hex.
    words = " OR ".join(f'"{t}"' for t in terms)
    return f'collection_id : "{collection_id}" AND body : ({words})'


class KeywordStore:
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

    def present(self, session: Session, collection_id: str, stems: list[str]) -> set[str]:
        """Which of ``stems`` begin a word anywhere in the collection (answerability: a question term the
        collection never uses is strong evidence that it does not answer). One indexed lookup per stem."""
        found: set[str] = set()
        sqlite = session.get_bind().dialect.name == "sqlite"
        for stem in stems[:MAX_TERMS]:
            if not stem.isascii() or not stem.isalnum():  # only plain words reach the query languages
                continue
            if sqlite:  # a quoted string then `*`: a prefix query; the collection id is hex
                row = session.execute(text(f"SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q LIMIT 1"),
                                      {"q": f'collection_id : "{collection_id}" AND body : "{stem}" *'}).first()
            else:
                row = session.execute(text(f"SELECT 1 FROM {PG_TABLE} WHERE collection_id = :c "
                                           "AND tsv @@ to_tsquery('simple', :t) LIMIT 1"),
                                      {"c": collection_id, "t": f"{stem}:*"}).first()
            if row is not None:
                found.add(stem)
        return found

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
