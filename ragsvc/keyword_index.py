"""Keyword (BM25-style) search in the database's own full-text engine: current the moment a document is ready.

Entries live next to the rows they index, so they change in the same transactions as the rows:

- SQLite: an FTS5 table ``keyword_fts(collection_id, body)`` whose rowid is the chunk id, ranked by FTS5's
  ``bm25()`` over the body column.
- PostgreSQL: a table ``keyword_entries(chunk_id, collection_id, tsv)`` with a GIN index on ``tsv``
  (``'simple'`` configuration: no stemming, like bm25s; paths, URLs and tags split into their words, see
  :data:`PG_SPLIT_CHARS`), ranked by the sum of each term's ``ts_rank`` weighted by its BM25 IDF.

:func:`index_document` inserts a document's entries inside the transaction that makes it ready
(ingest/pipeline.py ``_make_ready``). Deleting chunk rows removes their entries in the same transaction:
``ON DELETE CASCADE`` on PostgreSQL, a trigger on SQLite (FTS5 tables cannot hold foreign keys). So there
is no rebuild, no lag behind ``ready``, and a change costs the size of the document, not the collection
(measured in bench/keyword_search.py, docs/benchmarks.md).

User text never reaches a query language: the question is split into word tokens (the same pattern and
English stopwords as bm25s, which ragsvc used before), at most :data:`MAX_TERMS` distinct ones, and each
is passed as a quoted FTS5 string or a ``websearch_to_tsquery`` word joined by ``or``. Tokens are made of
word characters only, so neither syntax can see an operator in them.

Both engines score every row that holds any query term, without dynamic pruning (no WAND/MaxScore), and
FTS5's ``bm25()`` walks each query phrase's whole doclist for its IDF. A question's common words ("who",
"film") hold a sizeable share of a large collection, so a query is *pruned* (issue 13: p99 <= 30 ms at
1M chunks):

- its terms are taken rarest first while their document frequencies sum to at most ``postings_budget``
  (the rarest is always kept); the commoner rest, which carries the least IDF, neither matches nor
  scores. Below the budget nothing is pruned and the ranking is exact;
- at most ``rank_cap`` matching rows are ranked (this binds only when even the rarest term is common:
  SQLite ranks the newest rows, PostgreSQL the first the bitmap scan reaches);
- SQLite counts each term's rows by matching it with ``LIMIT budget + 1`` (exact up to the budget, the
  cost bounded by it; fts5vocab would walk the whole doclist), and leaves out the collection filter when
  the collection holds every document (else the collection is a MATCH phrase or a column check,
  whichever reads less);
- PostgreSQL reads the frequencies from ``pg_stats`` (ANALYZE's 10,000 commonest terms, migration 0010;
  any other term at half the least common one's share, as its planner does), and ranks a ``LIMIT``-ed
  subquery of the GIN matches.

bench/keyword_search.py measures latency at 10k-1M chunks and recall on the eval set, against the
previous query path (bench/keyword_before.py); docs/benchmarks.md has the figures.
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
HEX_ID = re.compile(r"[0-9a-fA-F]{1,64}")  # collection ids (uuid4().hex): a single FTS5 token
# bm25s's English stopwords (bm25s.stopwords.STOPWORDS_EN), the list the bm25s index used.
STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with"))
MAX_TERMS = 64  # a question's distinct terms searched; each one costs a posting-list scan
MAX_QUERY_CHARS = 20_000  # longer input is cut before tokenising (the API already limits questions)
POSTINGS_BUDGET = 2_000  # rows a query's terms may match before its commonest terms are pruned
RANK_CAP = 2_000  # rows ranked at most (binds only when even the rarest kept term matches more)
PHRASE_FILTER_RATIO = 50  # collection doclist rows walked in place of one collection-column read
PG_SCORED_PRUNED = 8  # pruned terms still scored on PostgreSQL's capped candidates
PG_STATS_TTL_S = 60.0  # pg_stats changes only when (auto)ANALYZE runs
DF_TTL_S = 60.0  # how long a common term's FTS5 row count is reused for pruning
DF_CACHE_MAX = 200_000  # cached common-term counts before the cache starts over


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


# PostgreSQL's parser keeps paths, URLs, e-mail addresses, host names, versions and decimals whole
# ("/var/log/dpkg.log" is one lexeme) and drops what looks like a tag ("<package>"), where questions
# (query_terms, like bm25s and FTS5's unicode61) see words: "dpkg", "log". These characters become spaces
# before parsing, so both sides see the same words (migration 0010 rewrote older entries this way).
PG_SPLIT_CHARS = "/.@<>_:\\"


def pg_tsvector(sql_text: str) -> str:
    """The SQL expression of a text's tsvector (for literal SQL; the characters hold no quote or colon
    name a bind parameter could take)."""
    return f"to_tsvector('simple', translate({sql_text}, '{PG_SPLIT_CHARS}', '{' ' * len(PG_SPLIT_CHARS)}'))"


PG_CHUNK_TSVECTOR = pg_tsvector("heading_path || E'\\n' || text")  # see index_body


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
            f"SELECT id, :c, {PG_CHUNK_TSVECTOR} FROM chunks WHERE document_id = :d "
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


def _fts5_query(terms: list[str], collection_id: str | None = None) -> str:
    # Double quotes make each term a plain string to FTS5 (NEAR, AND, *, ^, column names lose meaning);
    # a term holds only word characters, so it has no quote to escape. The collection id is hex.
    words = " OR ".join(f'"{t}"' for t in terms)
    if collection_id is None:
        return f"body : ({words})"
    return f'collection_id : "{collection_id}" AND body : ({words})'


class KeywordStore:
    """Searches the keyword entries of one collection through the caller's database session."""

    def __init__(self, postings_budget: int = POSTINGS_BUDGET, rank_cap: int = RANK_CAP) -> None:
        self.postings_budget = postings_budget
        self.rank_cap = rank_cap
        self.pg_scored_pruned = PG_SCORED_PRUNED
        # Per database URL: (read at, term -> share of rows, share of any other term, rows) from pg_stats.
        self._pg_stats: dict[str, tuple[float, dict[str, float], float, float]] = {}
        # (database URL, term) -> (read at, df) of terms FTS5 counted above the budget (see _sqlite_df).
        self._common: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def _sqlite_vocab_df(self, session: Session, terms: list[str]) -> dict[str, int]:
        """Exact row counts from fts5vocab, which counts a term by walking its whole doclist (~70 ms for
        a term in all of 1M rows). Counts above the budget are kept for DF_TTL_S: they only choose which
        common term to keep when a query has nothing rarer, where a minute-old count does as well."""
        url, now, df = str(session.get_bind().url), time.monotonic(), {}
        with self._lock:
            for t in terms:
                got = self._common.get((url, t))
                if got is not None and now - got[0] <= DF_TTL_S:
                    df[t] = got[1]
        ask = [t for t in terms if t not in df]
        if ask:
            marks = ", ".join(f":t{i}" for i in range(len(ask)))
            fresh = {term: int(doc) for term, doc in session.execute(
                text(f"SELECT term, doc FROM {FTS_VOCAB} WHERE term IN ({marks})"),
                {f"t{i}": t for i, t in enumerate(ask)})}
            df |= fresh
            with self._lock:
                if len(self._common) > DF_CACHE_MAX:
                    self._common.clear()
                self._common.update({(url, t): (now, d) for t, d in fresh.items() if d > self.postings_budget})
        return df

    @staticmethod
    def _fts5_counts(session: Session, terms: list[str], cap: int) -> dict[str, int]:
        """min(rows holding the term, cap) for each term in the body column; absent terms left out. The
        walk of each doclist stops at ``cap``, so the cost is bounded however common a term is."""
        counts = " UNION ALL ".join(
            f"SELECT {i}, (SELECT count(*) FROM (SELECT 1 FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q{i} "
            "LIMIT :cap))" for i in range(len(terms)))
        params: dict[str, object] = {f"q{i}": f'body : "{t}"' for i, t in enumerate(terms)} | {"cap": cap}
        return {terms[i]: int(n) for i, n in session.execute(text(counts), params) if n}

    def _sqlite_df(self, session: Session, terms: list[str]) -> dict[str, int]:
        """Each term's number of rows, exact up to the budget: counting stops at budget + 1, so the cost is
        bounded however common a term is. A term above the budget is pruned whenever a rarer one fits;
        only when every term is above it are their exact counts read (fts5vocab, cached), to keep the
        rarest. (Counting further through MATCH costs more per row than fts5vocab's walk: measured.)"""
        cap = self.postings_budget + 1
        df = self._fts5_counts(session, terms, cap)
        if df and all(n >= cap for n in df.values()):
            df |= self._sqlite_vocab_df(session, list(df))
        return df

    @staticmethod
    def _only_collection(session: Session, collection_id: str) -> bool:
        """Whether every document (hence every keyword entry) belongs to this collection: two index
        look-ups, exact in the caller's transaction."""
        lo, hi = session.execute(text("SELECT (SELECT min(collection_id) FROM documents), "
                                      "(SELECT max(collection_id) FROM documents)")).one()
        return lo == hi == collection_id

    def _sqlite_search(self, session: Session, collection_id: str, terms: list[str],
                       k: int) -> list[tuple[int, float]]:
        df = self._sqlite_df(session, terms)
        terms = [t for t in terms if df.get(t, 0) > 0]  # a term in no row matches nothing
        if not terms:
            return []
        terms = prune(terms, df, self.postings_budget)
        matched = min(sum(df[t] for t in terms), self.rank_cap)
        # The collection filter, cheapest first (bench/keyword_search.py, docs/benchmarks.md):
        # - none when the collection holds every row (one collection: the usual deployment);
        # - the collection as a MATCH phrase when it is small next to the matches: bm25() then walks the
        #   collection's doclist once for its IDF (~0.05 us a row; its size from the df cache);
        # - else a read of each match's collection column (a content-row read, ~3 us a match).
        where, coll = "", None
        if not self._only_collection(session, collection_id):
            coll_rows = None
            if HEX_ID.fullmatch(collection_id):  # ids are uuid4().hex: one FTS5 token
                coll_rows = self._sqlite_vocab_df(session, [collection_id.lower()]).get(collection_id.lower(), 0)
                if coll_rows == 0:
                    return []
            if coll_rows is not None and coll_rows <= PHRASE_FILTER_RATIO * matched:
                coll = collection_id
            else:
                where = " AND collection_id = :c"
        # bm25() is lower for better matches; the collection column weighs nothing. The inner LIMIT binds
        # only when even the rarest kept term holds more than rank_cap rows: then the newest rows are ranked.
        rows = session.execute(text(
            f"SELECT rowid, score FROM (SELECT rowid, -bm25({FTS_TABLE}, 0.0, 1.0) AS score FROM {FTS_TABLE} "
            f"WHERE {FTS_TABLE} MATCH :q{where} ORDER BY rowid DESC LIMIT :cap) "
            "ORDER BY score DESC, rowid LIMIT :k"),
            {"q": _fts5_query(terms, coll), "c": collection_id, "cap": self.rank_cap, "k": k}).all()
        return [(int(cid), float(score)) for cid, score in rows if score > 0]

    def _pg_stats_of(self, session: Session) -> tuple[dict[str, float], float, float]:
        """(term -> share of rows, share assumed for any other term, rows) from pg_stats, read at most
        every PG_STATS_TTL_S. Migration 0010 raises the column's statistics target so ANALYZE keeps the
        10,000 commonest terms; a term not among them is rarer than the least common one kept, and is
        taken at half its share, as PostgreSQL's own planner does (tsquerysel)."""
        url = str(session.get_bind().url)
        with self._lock:
            stats = self._pg_stats.get(url)
        if stats is None or time.monotonic() - stats[0] > PG_STATS_TTL_S:
            row = session.execute(text(
                "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples "
                "FROM pg_class c LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = 'tsv' "
                f"AND s.schemaname = current_schema() WHERE c.relname = '{PG_TABLE}' "
                "AND c.relnamespace = current_schema()::regnamespace")).first()
            freqs: dict[str, float] = {}
            other = 0.0
            if row is not None and row[0] is not None:
                freqs = dict(zip(row[0], row[1]))  # the freqs array ends with the min and max freqs
                other = row[1][len(row[0])] / 2 if len(row[1]) > len(row[0]) else 0.0
            stats = (time.monotonic(), freqs, other, max(float(row[2]) if row is not None else 0.0, 0.0))
            with self._lock:
                self._pg_stats[url] = stats
        return stats[1], stats[2], stats[3]

    def _pg_search(self, session: Session, collection_id: str, terms: list[str],
                   k: int) -> list[tuple[int, float]]:
        freqs, other, rows = self._pg_stats_of(session)
        df = {t: int(freqs.get(t, other) * rows) for t in terms}
        kept = prune(terms, df, self.postings_budget)
        # ts_rank has no IDF: each term's own ts_rank is weighted by its BM25 IDF, so a rare term
        # outweighs a common one (recall on the eval set, docs/benchmarks.md); all 1.0 before the table
        # was ever analysed. The GIN index finds the rows of the kept terms; at most rank_cap of them are
        # read and ranked (the LIMIT inside the subquery: the plan is a bitmap scan that stops there).
        # Those few rows are ranked by the pruned terms too (up to PG_SCORED_PRUNED, rarest first): they
        # no longer match, but among the rare terms' rows they still order them as the exact query would.
        # The terms are bound parameters; websearch_to_tsquery never raises, its "or" joins the words.
        pruned = sorted((t for t in terms if t not in set(kept)), key=lambda t: df[t])[:self.pg_scored_pruned]
        params: dict[str, object] = {"q": " or ".join(kept), "c": collection_id, "k": k, "cap": self.rank_cap}
        parts = []
        for i, t in enumerate(kept + pruned):
            params[f"t{i}"] = t
            params[f"w{i}"] = math.log(1.0 + (rows - df[t] + 0.5) / (df[t] + 0.5)) if rows > 0 else 1.0
            parts.append(f"ts_rank(tsv, websearch_to_tsquery('simple', :t{i})) * :w{i}")
        found = session.execute(text(
            f"SELECT chunk_id, {' + '.join(parts)} AS score FROM (SELECT chunk_id, tsv FROM {PG_TABLE} "
            "WHERE collection_id = :c AND tsv @@ websearch_to_tsquery('simple', :q) LIMIT :cap) AS cand "
            "ORDER BY score DESC, chunk_id LIMIT :k"), params).all()
        return [(int(cid), float(score)) for cid, score in found if score > 0]

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
        if session.get_bind().dialect.name == "sqlite":
            return self._sqlite_search(session, collection_id, terms, k)
        return self._pg_search(session, collection_id, terms, k)
