"""Keyword search in the database's full-text engine (issue 13 item 3), on real SQLite and real PostgreSQL.

A document's terms are searchable the moment it is ready and gone the moment it is deleted (same
transactions, no rebuild); hostile questions never raise; ranking and stopwords behave like BM25; the
collection filter is part of the query. Real parts: migrated databases, the real pipeline and embedder,
and once a real service (API + worker process) driven over HTTP.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import pytest
from sqlalchemy import select, text

from ingest.pipeline import Pipeline
from ragsvc.db import Chunk, Collection
from ragsvc.db.migrate import upgrade
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService, Upload
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import MAX_TERMS, KeywordStore, prune, query_terms
from ragsvc.settings import Settings
from tests.conftest import new_pg_database, start_service, stop_service

RARE = "Zorblaxian"  # a term no other text here holds
KS = KeywordStore()

HOSTILE = [
    '"', '""', "'", "''", '"unbalanced', "NEAR(", "NEAR(a b, 2)", "a NEAR b", "*", "pump*", "^pump", "^",
    "(", ")", "((((", "))))", "a AND", "OR OR OR", "NOT", "AND NOT pump", "body : pump", "collection_id : x",
    "{body collection_id} : pump", "-pump", "!pump", "pump & gasket", "pump | gasket", "pump <-> gasket",
    "pump:*", "pump:A", "\\", "\\\\'", "\x00", "pump\x00gasket", "\x00" * 50, "%s %d", ";DROP TABLE chunks;--",
    "\u202e\u200bpump\ufeff", "日本語の質問", "x" * 4000, ("pump " * 800)[:4000], ("\"NEAR(* ^) " * 400)[:4000],
    " ".join(f"w{i}" for i in range(700)), "", "   ", "the of and",
]


class World:
    def __init__(self, tmp_path, url: str, embedder) -> None:
        upgrade(url)
        self.settings = Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", database_url=url)
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        store = IndexStore(self.settings.index_dir, embedder.dim)
        self.docs = DocumentService(self.settings, self.sessions, store)
        self.pipeline = Pipeline(self.sessions, embedder, store, 200, self.settings.files_dir.resolve())

    def upload(self, collection: str, name: str, body: str, replaces: str | None = None) -> dict:
        return self.docs.create(collection, [Upload(name, body.encode())], replaces=replaces)[0]

    def ingest(self, collection: str, name: str, body: str, replaces: str | None = None) -> dict:
        doc = self.upload(collection, name, body, replaces)
        self.pipeline.process(doc["id"])
        return doc

    def coll(self, name: str) -> str:
        with self.sessions() as s:
            return s.scalar(select(Collection.id).where(Collection.name == name))

    def chunk_ids(self, document_id: str) -> set[int]:
        with self.sessions() as s:
            return set(s.scalars(select(Chunk.id).where(Chunk.document_id == document_id)))

    def search(self, collection: str, query: str, k: int = 10) -> list[tuple[int, float]]:
        with self.sessions() as s:
            return KS.search(s, self.coll(collection), query, k)


@pytest.fixture
def world(tmp_path, db_url, embedder):
    w = World(tmp_path, db_url, embedder)
    yield w
    w.engine.dispose()


def test_found_the_moment_ready_and_gone_the_moment_deleted(world):
    """No worker, no flush, no rebuild: the pipeline's own ready transaction is what makes it searchable."""
    w = world
    w.ingest("a", "other.txt", "The harbour crane lifts containers every morning.")
    doc = w.upload("a", "rare.txt", f"The {RARE} valve sits behind the second hatch of the pump room.")
    assert w.search("a", RARE) == []  # queued: not searchable yet
    w.pipeline.process(doc["id"])
    ids = w.chunk_ids(doc["id"])
    hits = w.search("a", f"Where is the {RARE} valve?")
    assert hits and hits[0][0] in ids and hits[0][1] > 0
    w.docs.delete(doc["id"])
    assert w.search("a", RARE) == []
    assert w.search("a", "harbour crane")  # the other document is untouched


def test_present_names_the_word_stems_a_collection_uses(world):
    """Answerability's collection-wide lookup: prefix matches, per collection, hostile stems refused."""
    w = world
    w.ingest("a", "pumps.txt", "The bilge pumps start when the float switch rises.")
    w.ingest("b", "exporter.txt", "The Prometheus exporter listens on port 9100.")
    with w.sessions() as s:
        got = KS.present(s, w.coll("a"), ["bilge", "pump", "switch", "prometheu", "exporter", "ris"])
        assert got == {"bilge", "pump", "switch", "ris"}  # "pump" begins "pumps"; b's words stay in b
        assert KS.present(s, w.coll("b"), ["prometheu", "bilge"]) == {"prometheu"}
        # Only plain ASCII words reach FTS5 / to_tsquery; anything else is skipped, never an error.
        assert KS.present(s, w.coll("a"), ['"', "pump*", "pump:*", "a b", "\x00", "日本", ""]) == set()


def test_heading_path_is_searchable_and_a_new_version_replaces_the_old(world):
    w = world
    old = w.ingest("a", "manual.md", "# Quarterdeck procedures\n\nCoil every line before leaving the deck.\n")
    (hit,) = w.search("a", "quarterdeck")
    assert hit[0] in w.chunk_ids(old["id"])
    new = w.ingest("a", "manual.md", "# Quarterdeck procedures\n\nCoil every line and stow the fenders.\n",
                   replaces=old["id"])
    got = {cid for cid, _ in w.search("a", "quarterdeck coil fenders")}
    assert got and got <= w.chunk_ids(new["id"])  # the old version's entries left with its rows


def test_collection_filter_and_dropped_collection(world):
    w = world
    a = w.ingest("a", "a.txt", f"Collection A keeps the {RARE} spare in locker one.")
    b = w.ingest("b", "b.txt", f"Collection B keeps the {RARE} spare in locker two, {RARE} again.")
    assert {cid for cid, _ in w.search("a", RARE, 100)} == w.chunk_ids(a["id"])
    assert {cid for cid, _ in w.search("b", RARE, 100)} == w.chunk_ids(b["id"])
    b_id = w.coll("b")
    w.docs.delete_collection("b")
    with w.sessions() as s:
        assert KS.search(s, b_id, RARE, 100) == []
        table = "keyword_fts" if w.engine.dialect.name == "sqlite" else "keyword_entries"
        assert s.scalar(text(f"SELECT count(*) FROM {table}")) == len(w.chunk_ids(a["id"]))


def test_ranking_counts_terms_and_ignores_stopwords(world):
    w = world
    once = w.ingest("a", "once.txt", "The kestrel nests on the north cliff above the bay near town.")
    twice = w.ingest("a", "twice.txt", "A kestrel hunts the cliff; the kestrel hovers over the bay.")
    hits = w.search("a", "kestrel")
    assert [cid for cid, _ in hits] == [*w.chunk_ids(twice["id"]), *w.chunk_ids(once["id"])]
    assert hits[0][1] > hits[1][1] > 0
    # Every text holds "the", "of", "a" and "on": stopwords alone match nothing, and add nothing to a query.
    assert w.search("a", "the of a on") == []
    assert [c for c, _ in w.search("a", "the kestrel of the")] == [c for c, _ in hits]


def test_hostile_questions_never_raise(world):
    w = world
    w.ingest("a", "pump.txt", "Spare part XK-4471-B is the gasket for the bilge pump; keep two on board.")
    pump = w.search("a", "pump")
    assert pump
    for q in HOSTILE:
        got = w.search("a", q)
        assert isinstance(got, list), q
    # Operators around a real term are plain text: the term is still found.
    for q in ['"pump', "NEAR(pump", "pump*", "^pump", "(pump)", "body : pump", "pump\x00", "-pump", "pump:*"]:
        assert [c for c, _ in w.search("a", q)] == [c for c, _ in pump], q
    assert [c for c, _ in w.search("a", "XK-4471-B")] == [c for c, _ in pump]


def test_query_terms_are_bounded_tokens():
    assert query_terms('The "XK-4471-B" NEAR(pump*, 2) ^gasket \x00 of') == ["xk", "4471", "near", "pump", "gasket"]
    assert len(query_terms(" ".join(f"w{i}" for i in range(10_000)))) == MAX_TERMS
    assert all(t.replace("_", "").isalnum() for q in HOSTILE for t in query_terms(q))


def test_migration_fills_entries_of_ready_documents(tmp_path, db_url):
    """Rows that were ready before revision 0008 are searchable after the upgrade; others are not."""
    upgrade(db_url, "0006")
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO collections (id, name, created_at) VALUES ('c1', 'old', CURRENT_TIMESTAMP)"))
            for doc, status in (("d1", "ready"), ("d2", "processing")):
                c.execute(text(
                    "INSERT INTO documents (id, collection_id, filename, kind, size_bytes, sha256, storage_path, "
                    "status, created_at, updated_at) VALUES (:d, 'c1', 'f.txt', 'text', 1, 'x', 'p', :s, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"d": doc, "s": status})
                c.execute(text(
                    "INSERT INTO chunks (document_id, ordinal, text, heading_path, char_start, char_end, token_count, "
                    "content_hash) VALUES (:d, 0, :t, 'Old heading', 0, 1, 1, '')"), {"d": doc, "t": f"{RARE} {doc}"})
        upgrade(db_url)
        with make_sessionmaker(engine)() as s:
            hits = KS.search(s, "c1", f"{RARE} heading", 10)
            ready_chunk = s.scalar(text("SELECT id FROM chunks WHERE document_id = 'd1'"))
        assert [cid for cid, _ in hits] == [ready_chunk]
    finally:
        engine.dispose()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_service_worker_ready_means_searchable_and_delete_means_gone(tmp_path, db):
    """The real API and worker process: the first time the API says ``ready``, the keyword entries are
    in the database; right after the DELETE answers, they are gone."""
    with (new_pg_database() if db == "postgresql" else nullcontext(f"sqlite:///{tmp_path / 'svc.db'}")) as url:
        svc = start_service(tmp_path, url, db, engine=False)
        engine = make_engine(url)
        try:
            r = svc.upload([("rare.txt", f"The {RARE} beacon is on the breakwater.".encode(), "text/plain")], "kw")
            assert r.status_code == 202, r.text
            doc_id = r.json()["documents"][0]["id"]
            deadline = time.time() + 300
            while svc.client.get(f"/v1/documents/{doc_id}").json()["status"] != "ready":
                assert time.time() < deadline, svc.log_tail()
                time.sleep(0.05)
            with make_sessionmaker(engine)() as s:  # no waiting after "ready"
                coll = s.scalar(select(Collection.id).where(Collection.name == "kw"))
                ids = set(s.scalars(select(Chunk.id).where(Chunk.document_id == doc_id)))
                assert ids and {c for c, _ in KS.search(s, coll, RARE, 10)} == ids
            assert svc.client.delete(f"/v1/documents/{doc_id}").status_code == 204
            with make_sessionmaker(engine)() as s:
                assert KS.search(s, coll, RARE, 10) == []
        finally:
            engine.dispose()
            stop_service(svc)



def test_prune_keeps_the_rarest_terms_within_the_budget():
    df = {"who": 900, "film": 300, "kubrick": 4, "screenplay": 20}
    terms = ["who", "screenplay", "film", "kubrick", "unseen"]
    assert prune(terms, df, 10_000) == terms  # under the budget: the exact query
    assert prune(terms, df, 30) == ["screenplay", "kubrick", "unseen"]
    assert prune(["who", "film"], df, 10) == ["film"]  # the rarest is always kept


def test_common_terms_are_pruned_past_the_budget(world):
    """Past the budget a query's commonest term neither matches nor scores; under it, it does."""
    w = world
    for i in range(4):
        w.ingest("a", f"h{i}.txt", f"Harbour note {i}: the harbour opens at dawn.")
    rare = w.ingest("a", "rare.txt", f"The {RARE} harbour buoy is yellow.")
    if w.engine.dialect.name == "postgresql":  # the document frequencies PostgreSQL knows come from ANALYZE
        with w.engine.begin() as c:
            c.execute(text("ANALYZE keyword_entries"))
    assert len(w.search("a", f"harbour {RARE}")) == 5
    with w.sessions() as s:
        hits = KeywordStore(postings_budget=2).search(s, w.coll("a"), f"harbour {RARE}", 10)
    assert [c for c, _ in hits] == sorted(w.chunk_ids(rare["id"]))


def test_reindex_collection_rewrites_only_that_collections_entries(world):
    from ragsvc.keyword_index import reindex_collection

    w = world
    a = w.ingest("a", "a.txt", f"The {RARE} lamp in collection A.")
    b = w.ingest("b", "b.txt", f"The {RARE} lamp in collection B.")
    before = w.search("a", RARE)
    with w.sessions() as s:
        assert reindex_collection(s, w.coll("a")) == len(w.chunk_ids(a["id"]))
        s.commit()
    assert w.search("a", RARE) == before and [c for c, _ in w.search("b", RARE)] == sorted(w.chunk_ids(b["id"]))


# --- the query path at scale: bounded term counts, capped ranking, literal operators (issue 13) ---------

def test_prune_when_every_term_is_common_keeps_the_rarest():
    df = {"film": 9_000, "who": 40_000, "directed": 5_000}
    assert prune(["who", "directed", "film"], df, 2_000) == ["directed"]
    assert prune([], df, 2_000) == []
    assert prune(["alone"], {}, 0) == ["alone"]  # unknown counts are rare; one term is always kept


def test_rare_terms_are_kept_and_common_ones_pruned_by_real_counts(world):
    """The counts come from the engine (FTS5 matches counted up to the budget; pg_stats after ANALYZE):
    a term in many rows is pruned past a small budget, and the rare term alone decides the ranking."""
    w = world
    common = [w.ingest("a", f"c{i}.txt", f"Harbour log {i}: the harbour master signs the log.") for i in range(6)]
    rare = w.ingest("a", "rare.txt", f"The {RARE} buoy marks the harbour mouth.")
    if w.engine.dialect.name == "postgresql":
        with w.engine.begin() as c:
            c.execute(text("ANALYZE keyword_entries"))
    store = KeywordStore(postings_budget=3, rank_cap=3)
    with w.sessions() as s:
        hits = store.search(s, w.coll("a"), f"harbour log {RARE}", 10)
        only_common = store.search(s, w.coll("a"), "harbour master log", 10)
    assert [c for c, _ in hits] == sorted(w.chunk_ids(rare["id"]))
    # Every term is common: the rarest is kept, and at most rank_cap rows holding it are ranked.
    common_ids = set().union(*(w.chunk_ids(d["id"]) for d in common))
    assert 0 < len(only_common) <= 3 and {c for c, _ in only_common} <= common_ids | w.chunk_ids(rare["id"])
    # Under the default budget nothing is pruned: all seven documents hold "harbour".
    assert len(w.search("a", f"harbour {RARE}")) == 7


def test_terms_in_no_row_and_odd_input(world):
    w = world
    doc = w.ingest("a", "pump.txt", "The bilge pump needs a new gasket.")
    ids = w.chunk_ids(doc["id"])
    assert w.search("a", "zzzunknownzzz qqqabsentqqq") == []
    assert {c for c, _ in w.search("a", "zzzunknownzzz pump")} == ids  # an absent term costs nothing
    for q in ["", "   ", "?!", "a", "the of to", "\x00\x00", "_", "__ __", "🙂🙂"]:
        assert w.search("a", q) == [], q
    assert w.search("a", "pump", k=0) == []
    with w.sessions() as s:
        assert KS.search(s, "0" * 32, "pump", 10) == []  # a collection with no entries


def test_operators_in_user_text_are_literal(world):
    """Neither FTS5's nor tsquery's syntax is reachable: minus is no NOT, a star or :* no prefix, quotes no
    phrase, "or"/"and"/"not" are plain (stop)words, a column name is a word."""
    w = world
    pump = w.ingest("a", "pump.txt", "The bilge pump sits aft.")
    gasket = w.ingest("a", "gasket.txt", "A spare gasket sits aft.")
    plural = w.ingest("a", "gaskets.txt", "Gaskets sit forward.")
    both = w.chunk_ids(pump["id"]) | w.chunk_ids(gasket["id"])
    assert {c for c, _ in w.search("a", "pump -gasket")} == both
    assert {c for c, _ in w.search("a", "pump !gasket")} == both
    assert {c for c, _ in w.search("a", "pump & !gasket")} == both
    assert {c for c, _ in w.search("a", "pump NOT gasket")} == both
    assert {c for c, _ in w.search("a", "gasket*")} == w.chunk_ids(gasket["id"])  # no prefix match
    assert {c for c, _ in w.search("a", "gasket:*")} == w.chunk_ids(gasket["id"])
    assert {c for c, _ in w.search("a", '"sits pump"')} == both  # no phrase: any order, either word
    assert w.search("a", "body : collection_id") == []
    assert {c for c, _ in w.search("a", "gaskets")} == w.chunk_ids(plural["id"])


def test_paths_urls_and_tags_are_searched_by_their_words(world):
    """PostgreSQL's parser keeps "/var/log/dpkg.log" or "www.debian.org" whole and drops "<package>";
    entries are written so that a question's words find them, as on SQLite."""
    w = world
    doc = w.ingest("a", "dpkg.txt", "Add the line log /var/log/dpkg.log to /etc/dpkg/dpkg.cfg. "
                                    "See www.debian.org or mail owner@bugs.example.org; run apt install <package>.")
    w.ingest("a", "other.txt", "Nothing about packages here.")
    ids = w.chunk_ids(doc["id"])
    for q in ["dpkg log", "dpkg.cfg", "debian", "owner bugs", "package", "/var/log/dpkg.log"]:
        assert {c for c, _ in w.search("a", q)} == ids, q


def test_migration_0010_rewrites_older_entries(tmp_path, db_url):
    """Entries written before revision 0010 held paths whole on PostgreSQL; after the upgrade their words
    are found (SQLite found them all along)."""
    upgrade(db_url, "0007")
    engine = make_engine(db_url)
    try:
        with engine.begin() as c:
            c.execute(text("INSERT INTO collections (id, name, created_at) VALUES ('c1', 'old', CURRENT_TIMESTAMP)"))
            c.execute(text(
                "INSERT INTO documents (id, collection_id, filename, kind, size_bytes, sha256, storage_path, "
                "status, created_at, updated_at) VALUES ('d1', 'c1', 'f.txt', 'text', 1, 'x', 'p', 'ready', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            c.execute(text(
                "INSERT INTO chunks (document_id, ordinal, text, heading_path, char_start, char_end, token_count, "
                "content_hash) VALUES ('d1', 0, 'log /var/log/dpkg.log', '', 0, 1, 1, '')"))
        upgrade(db_url, "0009")
        pg = engine.dialect.name == "postgresql"
        with make_sessionmaker(engine)() as s:
            assert bool(KeywordStore().search(s, "c1", "dpkg", 10)) is not pg  # the old parse on PostgreSQL
        upgrade(db_url)
        with make_sessionmaker(engine)() as s:
            chunk = s.scalar(text("SELECT id FROM chunks"))
            assert [c for c, _ in KeywordStore().search(s, "c1", "dpkg", 10)] == [chunk]
            if pg:
                assert s.scalar(text("SELECT attstattarget FROM pg_attribute WHERE attrelid = "
                                     "'keyword_entries'::regclass AND attname = 'tsv'")) == 1000
    finally:
        engine.dispose()


def test_both_collection_filters_give_the_same_answer(world, monkeypatch):
    """SQLite filters a collection sharing the table either inside MATCH (small collections) or by
    reading each match's collection column; both return exactly that collection's rows."""
    import ragsvc.keyword_index as ki

    w = world
    a = w.ingest("a", "a.txt", f"Locker one holds the {RARE} flare.")
    b = w.ingest("b", "b.txt", f"Locker two holds the {RARE} flare and a {RARE} horn.")
    answers = []
    for ratio in (10**9, 0):  # every collection "small", then every collection "large"
        monkeypatch.setattr(ki, "PHRASE_FILTER_RATIO", ratio)
        answers.append(({c for c, _ in w.search("a", RARE)}, {c for c, _ in w.search("b", RARE)}))
    assert answers[0] == answers[1] == (w.chunk_ids(a["id"]), w.chunk_ids(b["id"]))
