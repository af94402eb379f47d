"""One collection's text never reaches another's key (issue 12, item 3), on SQLite and on PostgreSQL.

Real parts throughout: migrated databases, the real pipeline and embedder, real FAISS and BM25 indexes.
The two windows in which the index and the rows could drift apart are forced for real: a delete while a
document is in the ``indexing`` stage (the worker held there by a pause placed in this test's subclass
of the index store), and a worker process SIGKILLed right after its index write (the kill is in the child
process's store subclass, here). Then a document in collection B must never come back from A.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import threading

import faiss
import pytest
from sqlalchemy import select

from ingest.pipeline import Pipeline
from ragsvc.db import Chunk, Document, Job
from ragsvc.db.migrate import upgrade
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService, Upload
from ragsvc.embedder import SentenceTransformerEmbedder
from ragsvc.errors import IngestError
from ragsvc.index_check import check
from ragsvc.index_store import IndexStore
from ragsvc.keyword_index import KeywordStore
from ragsvc.retrieval import retrieve
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, base_env

SECRET = "The vault combination for project Bluebird is 7741-alpha, known only to the night shift."
QUESTION = "What is the vault combination for project Bluebird?"
# A's own documents: one about the same subject (so its vectors rank first for the question), one not.
DRAFT = "Draft note for the harbour office: the vault combination for project Bluebird will be chosen later."
HARBOUR = "The harbour crane lifts containers from the ferry to the pier every morning at six."


class World:
    def __init__(self, tmp_path, url: str, embedder, store: IndexStore | None = None, chunk_tokens: int = 200):
        upgrade(url)
        self.url, self.tmp = url, tmp_path
        self.settings = Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", database_url=url)
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.embedder = embedder
        self.store = store or IndexStore(self.settings.index_dir, embedder.dim)
        self.keywords = KeywordStore()
        self.docs = DocumentService(self.settings, self.sessions, self.store)
        self.chunk_tokens = chunk_tokens
        self.pipeline = self.pipeline_on(self.store)

    def pipeline_on(self, store: IndexStore) -> Pipeline:
        return Pipeline(self.sessions, self.embedder, store, self.chunk_tokens, self.settings.files_dir.resolve())

    def upload(self, collection: str, filename: str, text: str) -> dict:
        return self.docs.create(collection, [Upload(filename, text.encode())])[0]

    def ingest(self, collection: str, filename: str, text: str) -> dict:
        doc = self.upload(collection, filename, text)
        stats = self.pipeline.process(doc["id"])
        return doc | {"collection_id": stats["collection_id"]}

    def collection_id(self, name: str) -> str:
        from ragsvc.db import Collection

        with self.sessions() as s:
            return s.scalar(select(Collection.id).where(Collection.name == name))

    def chunk_ids(self, document_id: str) -> list[int]:
        with self.sessions() as s:
            return list(s.scalars(select(Chunk.id).where(Chunk.document_id == document_id).order_by(Chunk.id)))

    def ask(self, collection_id: str, question: str = QUESTION, **kw):
        with self.sessions() as s:
            return retrieve(s, self.embedder, self.store, self.keywords, collection_id, question, 8, **kw)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def world(tmp_path, db_url, embedder):
    w = World(tmp_path, db_url, embedder)
    yield w
    w.close()


def assert_a_never_sees_b(w: World, a_id: str, b_doc: dict) -> None:
    """A's answers hold none of B's text, filename or document id; B's own answers do (so this can fail)."""
    for kw in ({}, {"document_ids": [b_doc["id"]]}):
        hits = w.ask(a_id, **kw)
        assert all("7741" not in h.text and h.document_id != b_doc["id"] and h.filename != "secret.txt"
                   for h in hits), [(h.chunk_id, h.filename, h.text) for h in hits]
    assert any("7741" in h.text for h in w.ask(b_doc["collection_id"]))


def misfile_keyword_entry(w: World, chunk_id: int, collection_id: str) -> None:
    from sqlalchemy import text

    table, key = ("keyword_fts", "rowid") if w.url.startswith("sqlite") else ("keyword_entries", "chunk_id")
    with w.sessions() as s:
        s.execute(text(f"UPDATE {table} SET collection_id = :c WHERE {key} = :k"), {"c": collection_id, "k": chunk_id})
        s.commit()


def assert_index_matches_rows(w: World) -> None:
    reports = check(w.sessions, w.store)
    assert [r.describe() for r in reports if r.problems] == []


# --- every retrieval path filters by collection in SQL ------------------------------------------------

def test_orphan_vector_and_keyword_entry_never_return_another_collections_chunk(world):
    """A's index holds an id whose row is B's chunk (what an orphan vector plus a reused id make):
    neither the dense nor the keyword path of A returns it, nor does filtering A by B's document id."""
    w = world
    w.ingest("a", "harbour.txt", HARBOUR)
    b = w.ingest("b", "secret.txt", SECRET)
    a_id = w.collection_id("a")
    (secret_id,) = w.chunk_ids(b["id"])
    # The orphan: B's chunk id, in A's FAISS index; and B's keyword entry misfiled under A (the keyword
    # search filters by its own collection column, so this is what a stale entry of A would look like).
    w.store.add(a_id, [secret_id], w.embedder.embed([SECRET]))
    misfile_keyword_entry(w, secret_id, a_id)
    assert secret_id in {cid for cid, _ in w.store.search(a_id, w.embedder.embed([QUESTION])[0], 5)}
    with w.sessions() as s:
        assert secret_id in {cid for cid, _ in w.keywords.search(s, a_id, "Bluebird vault 7741", 5)}
    assert_a_never_sees_b(w, a_id, b)
    # ... and the check names that vector as one without a ready row of A.
    (report,) = [r for r in check(w.sessions, w.store) if r.collection == "a"]
    assert report.orphans == [secret_id]


# --- ids are never reused ------------------------------------------------------------------------------

def test_chunk_and_job_ids_are_never_reused(world):
    """Delete the newest document: the next document's chunks and job get ids above every id used."""
    w = world
    w.ingest("a", "harbour.txt", HARBOUR)
    newest = w.ingest("a", "draft.txt", DRAFT)
    top_chunk = max(w.chunk_ids(newest["id"]))
    with w.sessions() as s:
        top_job = s.scalar(select(Job.id).order_by(Job.id.desc()).limit(1))
    w.docs.delete(newest["id"])
    b = w.ingest("b", "secret.txt", SECRET)
    assert min(w.chunk_ids(b["id"])) > top_chunk
    with w.sessions() as s:
        assert s.scalar(select(Job.id).where(Job.document_id == b["id"])) > top_job


# --- a new version stays within its collection -------------------------------------------------------

def test_new_version_reuses_and_replaces_only_within_its_collection(world):
    """Same collection: the new version reuses unchanged vectors and takes the old one's place, and the
    index equals the rows. A ``replaces`` link to another collection's document (the API refuses to
    make one; here it is written straight into the row) neither reuses its vectors nor deletes it."""
    from sqlalchemy import update

    w = world
    first = "# Ferry\n\nThe ferry leaves the pier at seven.\n\n# Crane\n\nThe harbour crane is inspected on Mondays.\n"
    v1 = w.ingest("a", "notes.md", first)
    v2 = w.upload("a", "notes.md", first + "\n# Tides\n\nThe tide tables are posted at the harbour office.\n")
    assert v2["replaces"] == v1["id"]
    stats = w.pipeline.process(v2["id"])
    assert stats["replaced"] == v1["id"] and stats["reused_chunks"] >= 1
    assert_index_matches_rows(w)
    b = w.upload("b", "other.md", first)
    with w.sessions() as s, s.begin():
        s.execute(update(Document).where(Document.id == b["id"]).values(replaces_id=v2["id"]))
    stats = w.pipeline.process(b["id"])
    assert stats["replaced"] is None and stats["reused_chunks"] == 0
    with w.sessions() as s:
        assert s.get(Document, v2["id"]).status == "ready"  # A's document is untouched
    assert_index_matches_rows(w)


# --- window 1: a delete while the worker is in the indexing stage ------------------------------------

class PausingStore(IndexStore):
    """The real index store, held still in ``add`` (before or after the write) until the test lets go."""

    def __init__(self, *args, pause: str, **kw) -> None:
        super().__init__(*args, **kw)
        self.pause, self.paused, self.go = pause, threading.Event(), threading.Event()

    def _hold(self) -> None:
        self.paused.set()
        assert self.go.wait(120), "the test never released the worker"

    def add(self, collection_id, ids, vectors, **kw):
        if self.pause == "before the vectors":
            self._hold()
        super().add(collection_id, ids, vectors, **kw)
        if self.pause == "after the vectors":
            self._hold()


@pytest.mark.parametrize("pause", ["before the vectors", "after the vectors"])
def test_delete_during_indexing_leaves_no_vector_and_b_stays_out_of_a(world, pause):
    w = world
    w.ingest("a", "harbour.txt", HARBOUR)
    a_id = w.collection_id("a")
    doomed = w.upload("a", "draft.txt", DRAFT)
    pausing = PausingStore(w.settings.index_dir, w.embedder.dim, pause=pause)
    outcome: dict = {}

    def work():
        try:
            outcome["stats"] = w.pipeline_on(pausing).process(doomed["id"])
        except IngestError as exc:
            outcome["error"] = exc.detail

    worker = threading.Thread(target=work)
    worker.start()
    assert pausing.paused.wait(180), "the worker never reached the index write"
    with w.sessions() as s:
        assert s.get(Document, doomed["id"]).stage == "indexing"
    deleter = threading.Thread(target=w.docs.delete, args=(doomed["id"],))
    deleter.start()
    # The delete may wait for a lock the worker holds (it did before the fix: the rows were written in
    # the transaction that was still open); let the worker go on then, as time would.
    deleter.join(3)
    pausing.go.set()
    deleter.join(120)
    worker.join(120)
    assert not deleter.is_alive() and not worker.is_alive()
    with w.sessions() as s:
        assert s.get(Document, doomed["id"]) is None
    # B's chunks take the next ids: whatever the deleted document left in A must not name them.
    b = w.ingest("b", "secret.txt", SECRET)
    assert_a_never_sees_b(w, a_id, b)
    # No vector of the deleted document is left in A, and the worker knew it had been deleted.
    assert set(w.store.stored_ids(a_id)) == set(w.chunk_ids(w.docs.list("a")[0]["id"]))
    assert_index_matches_rows(w)
    assert "stats" not in outcome, "the worker made a deleted document ready"
    assert "deleted while it was being ingested" in outcome["error"]


# --- window 2: a worker killed between the index write and the commit --------------------------------

def _ingest_and_die_after_index_write(url: str, data_dir: str, index_dir: str, document_id: str) -> None:
    """Child process: the real pipeline, SIGKILLed the moment its vectors are on disk."""

    class DyingStore(IndexStore):
        def add(self, collection_id, ids, vectors, **kw):
            super().add(collection_id, ids, vectors, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

    settings = Settings(data_dir=data_dir, index_dir=index_dir, database_url=url)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    sessions = make_sessionmaker(make_engine(url))
    Pipeline(sessions, embedder, DyingStore(index_dir, embedder.dim), 200, settings.files_dir.resolve()).process(
        document_id)


def kill_mid_commit(w: World, document_id: str) -> None:
    child = multiprocessing.get_context("spawn").Process(
        target=_ingest_and_die_after_index_write,
        args=(w.url, str(w.settings.data_dir), str(w.settings.index_dir), document_id))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the child was not killed at the index write ({child.exitcode})"


def test_worker_killed_between_index_write_and_commit(world):
    """Two crashes: the first document's job is retried (ready, one vector per row), the second is
    deleted by its user while stuck. Neither leaves a vector behind, and B never shows up in A."""
    w = world
    w.ingest("a", "harbour.txt", HARBOUR)
    a_id = w.collection_id("a")
    retried = w.upload("a", "crane.txt", "The crane operator logs each lift in the harbour book.")
    kill_mid_commit(w, retried["id"])
    w.pipeline.process(retried["id"])  # what the next worker does once the lease runs out
    assert len(w.chunk_ids(retried["id"])) == 1
    stuck = w.upload("a", "draft.txt", DRAFT)
    kill_mid_commit(w, stuck["id"])
    # The killed attempt's vectors are on disk; the check leaves them to the job (not yet ready).
    assert len(w.store.stored_ids(a_id)) > len(w.chunk_ids(retried["id"])) + 1
    w.docs.delete(stuck["id"])  # the user gives up on it
    assert sorted(w.store.stored_ids(a_id)) == sorted(
        w.chunk_ids(retried["id"]) + w.chunk_ids(w.docs.list("a")[0]["id"]))
    b = w.ingest("b", "secret.txt", SECRET)
    assert_a_never_sees_b(w, a_id, b)
    assert_index_matches_rows(w)


# --- ragsvc index check [--repair] ----------------------------------------------------------------------

def index_cli(w: World, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = base_env(w.tmp) | {"RAGSVC_DATABASE_URL": w.url} | env
    return subprocess.run([RAGSVC, "index", "check", *args], env=full, cwd=w.tmp, capture_output=True,
                          text=True, timeout=300)


MANY = " ".join(f"Buoy {i} marks the {['north', 'south', 'east', 'west'][i % 4]} edge of shoal {i * 7}, "
                f"lit {['red', 'green', 'white'][i % 3]} every {i % 5 + 2} seconds." for i in range(40))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_index_check_reports_and_repairs_via_the_cli(tmp_path, db_url, embedder, kind):
    """A database damaged on purpose: an orphan vector, a ready row without its vector, and an index
    folder whose collection is gone. The check names all three and exits 1; --repair fixes them (the
    missing vector embedded again from the row's text); a second check is clean."""
    store = IndexStore(tmp_path / "indexes", embedder.dim, kind=kind, ivf_min_vectors=16)
    w = World(tmp_path, db_url, embedder, store=store, chunk_tokens=32)
    try:
        w.ingest("c", "harbour.txt", HARBOUR)
        buoys = w.ingest("c", "buoys.txt", MANY)
        c_id = w.collection_id("c")
        if kind == "ivf":  # the worker's compaction merges the documents' segments and trains IVF lists
            w.store.compact(c_id, [seg.name for seg in w.store.segments(c_id)])
            index = faiss.read_index(str(tmp_path / "indexes" / c_id / w.store.segments(c_id)[0].name))
            faiss.extract_index_ivf(index)  # raises unless the collection really was trained as IVF
        assert w.store.size(c_id) >= 17
        orphan, lost = 10**9, w.chunk_ids(buoys["id"])[3]
        with w.sessions() as s:
            lost_text = s.get(Chunk, lost).text
        w.store.add(c_id, [orphan], w.embedder.embed(["a vector whose row never existed"]))
        assert w.store.remove(c_id, [lost]) == 1
        stray = "f" * 32
        w.store.add(stray, [5], w.embedder.embed(["left by a worker of a deleted collection"]))
        env = {"RAGSVC_INDEX_KIND": kind, "RAGSVC_IVF_MIN_VECTORS": "16"}

        found = index_cli(w, **env)
        assert found.returncode == 1, found.stderr[-3000:]
        assert f"1 vector(s) without a ready row (ids {orphan})" in found.stdout
        assert f"1 ready chunk(s) without a vector (ids {lost})" in found.stdout
        assert f"index folder {stray}: its collection no longer exists" in found.stdout
        assert "3 problem(s) found" in found.stdout
        if kind == "flat":  # the same code for both kinds
            only = index_cli(w, "--collection", "c", "--json", **env)
            assert only.returncode == 1 and stray not in only.stdout
            assert json.loads(only.stdout)["vectors_without_ready_row"] == [orphan]
            nope = index_cli(w, "--collection", "nope", **env)
            assert nope.returncode == 2 and "no collection named 'nope'" in nope.stderr

        fixed = index_cli(w, "--repair", **env)  # the one run that loads the embedding model
        assert fixed.returncode == 0, fixed.stderr[-3000:]
        assert "repaired: removed 1 vector(s), re-embedded and added 1" in fixed.stdout
        again = index_cli(w, **env)
        assert again.returncode == 0 and "1 index(es) agree with the database" in again.stdout, again.stdout
        assert not (tmp_path / "indexes" / stray).exists()
        ids = set(w.store.stored_ids(c_id))
        assert lost in ids and orphan not in ids
        # The re-added vector is the chunk's own: searching for its text finds it first.
        fresh = IndexStore(tmp_path / "indexes", embedder.dim, kind=kind, nprobe=64)
        assert fresh.search(c_id, w.embedder.embed([lost_text])[0], 1)[0][0] == lost
    finally:
        w.close()

