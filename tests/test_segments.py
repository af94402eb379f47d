"""Segmented FAISS indexes (issue 13, items 1 and 2): every index change costs what the change costs.

Real FAISS files throughout; where the database matters, real SQLite and PostgreSQL with the real
pipeline and embedder. The kills are real SIGKILLs of child processes: the only thing placed by the test
is *where* the child kills itself (in its subclass of the index store), as tests/test_isolation.py does.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import select, update

from ingest.pipeline import Pipeline
from ragsvc.db import Chunk, Collection
from ragsvc.db.migrate import upgrade
from ragsvc.db.session import make_engine, make_sessionmaker
from ragsvc.documents import DocumentService, Upload
from ragsvc.embedder import SentenceTransformerEmbedder
from ragsvc.index_check import check
from ragsvc.index_rebuild import rebuild
from ragsvc.index_store import MANIFEST, IndexStore
from ragsvc.settings import Settings
from tests.conftest import RAGSVC, base_env

DIM = 384


def unit(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, DIM)).astype(np.float32)
    vecs = centers[rng.integers(0, 50, n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def files_of(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()
            if not p.name.startswith(".")}


def bytes_written(before: dict, after: dict) -> int:
    """Bytes of files that are new or replaced, plus what was appended to files that grew in place."""
    total = 0
    for name, (ino, mtime, size) in after.items():
        old = before.get(name)
        if old is None or old[0] != ino:
            total += size
        elif old[1] != mtime:
            total += max(size - old[2], 0)
    return total


# --- the store alone ------------------------------------------------------------------------------------

def test_bytes_written_by_an_add_or_a_delete_do_not_grow_with_the_collection(tmp_path):
    """Adding a 200-chunk document writes about its own vectors at 2k and at 20k vectors (the one-file
    store rewrote the whole collection: 10x more at 20k); a delete writes one manifest line."""
    store = IndexStore(tmp_path, DIM)
    vecs = unit(20_400)
    cost = {}
    for size in (2000, 20_000):
        have = store.size("c")
        store.add("c", list(range(have, size)), vecs[have:size])
        before = files_of(tmp_path / "c")
        store.add("c", list(range(size, size + 200)), vecs[size:size + 200])
        added = files_of(tmp_path / "c")
        store.remove("c", list(range(size, size + 200)))
        cost[size] = (bytes_written(before, added), bytes_written(added, files_of(tmp_path / "c")))
    own = 200 * DIM * 4
    assert own <= cost[2000][0] < 2 * own and own <= cost[20_000][0] < 2 * own, cost
    assert cost[20_000][0] < 2 * cost[2000][0], cost
    assert 0 < cost[20_000][1] < 200 * 12, cost  # 200 ids in one line, no segment rewritten


def test_tombstones_hide_deleted_ids_at_once_in_another_reader(tmp_path):
    writer, reader = IndexStore(tmp_path, DIM), IndexStore(tmp_path, DIM)
    vecs = unit(1000)
    for start in range(0, 1000, 200):
        writer.add("c", list(range(start, start + 200)), vecs[start:start + 200])
    assert reader.search("c", vecs[250], 1)[0][0] == 250
    segments = files_of(tmp_path / "c")
    assert writer.remove("c", [250, 251, 999]) == 3
    assert writer.remove("c", [250]) == 0  # already gone
    hits = {h for q in (250, 251, 999) for h, _ in reader.search("c", vecs[q], 10)}
    assert hits and not hits & {250, 251, 999}
    assert reader.size("c") == 997
    changed = {n for n, st in files_of(tmp_path / "c").items() if segments.get(n) != st}
    assert changed == {MANIFEST}  # no segment file was touched


def test_compaction_merges_applies_tombstones_and_keeps_results(tmp_path):
    writer, reader = IndexStore(tmp_path, DIM), IndexStore(tmp_path, DIM)
    vecs = unit(2000, seed=3)
    for start in range(0, 2000, 200):
        writer.add("c", list(range(start, start + 200)), vecs[start:start + 200])
    gone = list(range(0, 2000, 7))
    writer.remove("c", gone)
    queries = unit(30, seed=9)
    before = [reader.search("c", q, 10) for q in queries]
    assert len(writer.plan("c")) >= 4
    while writer.plan("c"):
        assert writer.compact("c")
    segs = writer.segments("c")
    assert len(segs) < 10 and sum(s.vectors for s in segs) == 2000 - len(gone)  # the dead are gone for good
    assert set(os.listdir(tmp_path / "c")) >= {s.name for s in segs}
    assert not [n for n in os.listdir(tmp_path / "c") if n.startswith("seg-") and n not in {s.name for s in segs}]
    after = [reader.search("c", q, 10) for q in queries]
    assert [[h for h, _ in r] for r in after] == [[h for h, _ in r] for r in before]
    assert np.allclose([s for r in after for _, s in r], [s for r in before for _, s in r], atol=1e-5)
    assert (tmp_path / "c" / MANIFEST).read_text().count('"del"') == 0  # applied, so dropped


def test_a_reader_sees_a_new_segment_by_reading_only_it(tmp_path):
    writer, reader = IndexStore(tmp_path, DIM), IndexStore(tmp_path, DIM)
    vecs = unit(10_200)
    writer.add("c", list(range(10_000)), vecs[:10_000])
    assert reader.size("c") == 10_000
    read_before = reader.bytes_read
    writer.add("c", list(range(10_000, 10_200)), vecs[10_000:])
    new = writer.segments("c")[-1]
    assert reader.search("c", vecs[10_100], 1)[0][0] == 10_100
    read = reader.bytes_read - read_before
    assert new.bytes <= read < new.bytes + 1024, (read, new.bytes)  # the new segment and one manifest line
    assert read < (tmp_path / "c" / writer.segments("c")[0].name).stat().st_size / 10


def test_small_segments_are_searched_as_one_tail_with_the_same_results(tmp_path):
    """Document segments are folded into one flat index for searching (fewer FAISS calls per query);
    results must equal exact search over the live vectors, through adds, deletes and a re-add, and
    must follow each change in another reader."""
    writer, reader = IndexStore(tmp_path, DIM), IndexStore(tmp_path, DIM)
    big = unit(3000, seed=1)  # one segment past the tail's size limit: searched on its own
    writer.add("c", list(range(3000)), big, fresh=True)
    live = {i: big[i] for i in range(3000)}
    docs = unit(12 * 40, seed=2)
    for d in range(12):
        ids = list(range(10_000 + d * 40, 10_000 + (d + 1) * 40))
        writer.add("c", ids, docs[d * 40:(d + 1) * 40], fresh=True)
        live.update(zip(ids, docs[d * 40:(d + 1) * 40]))
    queries = unit(20, seed=3)

    def assert_exact():
        ids = np.array(sorted(live))
        mat = np.stack([live[i] for i in ids])
        for q in queries:
            want = ids[np.argsort(-(mat @ q), kind="stable")[:10]]
            got = [i for i, _ in reader.search("c", q, 10)]
            assert got == want.tolist()

    assert_exact()
    snap = reader._snapshots["c"]
    assert len(snap.segments) == 13 and len(snap.searched) == 2  # the big one, then the tail of 12
    dead = list(range(10_000, 10_080)) + [10_200] + list(range(0, 3000, 7))
    writer.remove("c", dead)
    for i in dead:
        live.pop(i)
    assert_exact()
    again = unit(1, seed=4)
    writer.add("c", [10_200], again)  # a re-added id: its new vector counts, its old one never
    live[10_200] = again[0]
    assert_exact()
    assert reader.search("c", again[0], 1)[0][0] == 10_200


def test_a_reader_frees_a_collection_another_process_dropped(tmp_path):
    writer, reader = IndexStore(tmp_path, DIM), IndexStore(tmp_path, DIM)
    writer.add("gone", list(range(50)), unit(50), fresh=True)
    writer.add("kept", list(range(50, 60)), unit(10, seed=5), fresh=True)
    assert reader.search("gone", unit(1)[0], 3) and reader.memory_bytes("gone") > 0
    writer.drop("gone")  # as another replica or the CLI would: this reader never searches "gone" again
    reader._forgotten_at -= 3600  # the periodic look, due now
    assert reader.search("kept", unit(1)[0], 3)
    assert "gone" not in reader._snapshots and "gone" not in reader._manifests
    assert "kept" in reader._snapshots


def test_a_torn_manifest_line_is_ignored_and_cut_by_the_next_writer(tmp_path):
    writer = IndexStore(tmp_path, DIM)
    vecs = unit(400)
    writer.add("c", list(range(200)), vecs[:200])
    with open(tmp_path / "c" / MANIFEST, "ab") as fh:  # what a writer killed mid-append leaves
        fh.write(b'{"op":"del","seq":9,"ids":[1,2')
    assert IndexStore(tmp_path, DIM).size("c") == 200
    writer.add("c", list(range(200, 400)), vecs[200:])
    assert IndexStore(tmp_path, DIM).size("c") == 400


def test_ivf_sq8_segments_hold_a_quarter_of_the_memory_and_still_search_and_delete(tmp_path):
    vecs = unit(6000, seed=4)
    held = {}
    for kind in ("ivf", "ivf_sq8"):
        store = IndexStore(tmp_path / kind, DIM, kind=kind, ivf_min_vectors=4000, nprobe=64)
        store.add("c", list(range(6000)), vecs)
        store.compact("c", [seg.name for seg in store.segments("c")])
        assert [seg.kind for seg in store.segments("c")] == [kind]
        held[kind] = store.memory_bytes("c") / store.size("c")
        top = [store.search("c", vecs[i], 1)[0][0] for i in range(0, 6000, 60)]
        assert np.mean(np.array(top) == np.arange(0, 6000, 60)) >= 0.95
        assert store.remove("c", [0, 60, 120]) == 3
        assert not {h for h, _ in store.search("c", vecs[60], 10)} & {0, 60, 120}
    assert held["ivf"] > 1500 and held["ivf_sq8"] < held["ivf"] / 3, held


# --- the database, the pipeline and killed processes ---------------------------------------------------

TOPICS = ["harbour cranes", "ferry timetables", "lighthouse keepers", "tide tables", "pier repairs",
          "fishing nets", "sail making", "harbour pilots"]


def text_about(topic: str, n: int = 12) -> str:
    return " ".join(f"Note {i} on {topic}: the {topic} of berth {i} were checked on day {i * 3}." for i in range(n))


class Setup:
    def __init__(self, tmp_path: Path, url: str, embedder) -> None:
        upgrade(url)
        self.url, self.tmp = url, tmp_path
        self.settings = Settings(data_dir=tmp_path / "data", index_dir=tmp_path / "indexes", database_url=url)
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self.embedder = embedder
        self.store = IndexStore(self.settings.index_dir, embedder.dim)
        self.docs = DocumentService(self.settings, self.sessions, self.store)
        self.pipeline = Pipeline(self.sessions, embedder, self.store, 64, self.settings.files_dir.resolve())

    def upload(self, topic: str) -> dict:
        return self.docs.create("c", [Upload(f"{topic}.txt", text_about(topic).encode())])[0]

    def ingest(self, topic: str) -> dict:
        doc = self.upload(topic)
        self.pipeline.process(doc["id"])
        return doc

    @property
    def collection_id(self) -> str:
        with self.sessions() as s:
            return s.scalar(select(Collection.id).where(Collection.name == "c"))

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        full = base_env(self.tmp) | {"RAGSVC_DATABASE_URL": self.url,
                                     "RAGSVC_INDEX_DIR": str(self.settings.index_dir)} | env
        return subprocess.run([RAGSVC, "index", *args], env=full, cwd=self.tmp, capture_output=True, text=True,
                              timeout=300)

    def results(self, store: IndexStore) -> list[list[int]]:
        qs = self.embedder.embed([f"what about the {t}?" for t in TOPICS])
        return [[h for h, _ in store.search(self.collection_id, q, 8)] for q in qs]

    def ready_ids(self) -> list[int]:
        return sorted(self.store.stored_ids(self.collection_id).tolist())

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def setup(tmp_path, db_url, embedder):
    s = Setup(tmp_path, db_url, embedder)
    yield s
    s.close()


def _die_in(url: str, data_dir: str, index_dir: str, where: str, document_id: str | None) -> None:
    """Child process: the real pipeline (or compaction), SIGKILLed with the new segment on disk but the
    manifest not yet changed, the one window a kill can leave anything behind in."""

    class DyingStore(IndexStore):
        def _append(self, folder, lines):
            if where == "segment write" and any(line["op"] == "add" for line in lines):
                os.kill(os.getpid(), signal.SIGKILL)
            super()._append(folder, lines)

        def _rewrite(self, folder, state):
            if where == "compaction":
                os.kill(os.getpid(), signal.SIGKILL)
            super()._rewrite(folder, state)

    settings = Settings(data_dir=data_dir, index_dir=index_dir, database_url=url)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    store = DyingStore(index_dir, embedder.dim)
    if where == "compaction":
        cid = store.collections_on_disk()[0]
        store.compact(cid, [s.name for s in store.segments(cid)])
    else:
        sessions = make_sessionmaker(make_engine(url))
        Pipeline(sessions, embedder, store, 64, settings.files_dir.resolve()).process(document_id)


def kill_child(s: Setup, where: str, document_id: str | None = None) -> None:
    child = multiprocessing.get_context("spawn").Process(
        target=_die_in, args=(s.url, str(s.settings.data_dir), str(s.settings.index_dir), where, document_id))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL, f"the child was not killed in the {where} ({child.exitcode})"


def assert_check_clean(s: Setup) -> None:
    # --garbage-age-s 0: report every unreferenced segment file, even one just written.
    found = s.cli("check", "--garbage-age-s", "0")
    assert found.returncode == 0 and "1 index(es) agree with the database" in found.stdout, found.stdout + found.stderr


def test_workers_killed_in_a_segment_write_and_in_compaction_lose_and_duplicate_nothing(setup):
    s = setup
    for topic in TOPICS[:4]:
        s.ingest(topic)
    retried = s.upload(TOPICS[4])
    kill_child(s, "segment write", retried["id"])
    folder = s.settings.index_dir / s.collection_id
    orphan_files = [n for n in os.listdir(folder) if n.startswith("seg-")
                    and n not in {x.name for x in s.store.segments(s.collection_id)}]
    assert len(orphan_files) == 1  # the killed write's segment: on disk, named by no manifest line
    found = s.cli("check", "--garbage-age-s", "0")
    assert found.returncode == 1 and "1 segment file(s) not in the manifest" in found.stdout, found.stdout
    s.pipeline.process(retried["id"])  # the job's retry, as the next worker does it
    fixed = s.cli("check", "--garbage-age-s", "0", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert not (folder / orphan_files[0]).exists()
    assert_check_clean(s)
    with s.sessions() as session:
        rows = sorted(session.scalars(select(Chunk.id)))
    assert s.ready_ids() == rows  # one vector per row: nothing lost, nothing twice

    before = s.results(IndexStore(s.settings.index_dir, s.embedder.dim))
    segments = [x.name for x in s.store.segments(s.collection_id)]
    kill_child(s, "compaction")
    assert [x.name for x in IndexStore(s.settings.index_dir, DIM).segments(s.collection_id)] == segments
    assert s.results(IndexStore(s.settings.index_dir, s.embedder.dim)) == before
    assert s.ready_ids() == rows
    s.store.compact(s.collection_id, segments)  # the next compaction runs to the end
    assert len(s.store.segments(s.collection_id)) == 1
    assert s.ready_ids() == rows
    assert s.results(IndexStore(s.settings.index_dir, s.embedder.dim)) == before
    fixed = s.cli("check", "--garbage-age-s", "0", "--repair")  # sweeps the killed compaction's file
    assert fixed.returncode == 0 and "segment file(s) not in the manifest" in fixed.stdout, fixed.stdout
    assert_check_clean(s)


def test_rebuild_from_the_database_embeds_nothing_and_gives_the_same_results(setup):
    s = setup
    for topic in TOPICS:
        s.ingest(topic)
    s.docs.delete(s.docs.list("c")[0]["id"])
    before = s.results(IndexStore(s.settings.index_dir, s.embedder.dim))
    ids = s.ready_ids()
    folder = s.settings.index_dir / s.collection_id
    for p in folder.iterdir():  # the index is lost: only the database is left
        p.unlink()
    # A model that does not exist: had the rebuild loaded or called an embedder, it would fail.
    out = s.cli("rebuild", RAGSVC_EMBEDDING_MODEL="no-such-model-anywhere")
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"vectors": %d' % len(ids) in out.stdout and '"rows_without_vector": 0' in out.stdout, out.stdout
    fresh = IndexStore(s.settings.index_dir, s.embedder.dim)
    assert sorted(fresh.stored_ids(s.collection_id).tolist()) == ids
    assert s.results(fresh) == before
    assert_check_clean(s)


def test_rebuild_backfills_rows_from_before_the_vector_column(tmp_path, embedder):
    """An upgraded install: rows without a stored vector and the old one-file index. The old file becomes
    a segment, the rebuild copies its vectors into the rows (once), and search is unchanged."""
    s = Setup(tmp_path, f"sqlite:///{tmp_path / 'old.db'}", embedder)
    try:
        for topic in TOPICS[:3]:
            s.ingest(topic)
        cid = s.collection_id
        ids, vecs = s.store.all_vectors(cid)
        before = s.results(IndexStore(s.settings.index_dir, embedder.dim))
        folder = s.settings.index_dir / cid
        for p in folder.iterdir():
            p.unlink()
        old = faiss.IndexIDMap2(faiss.IndexFlatIP(embedder.dim))
        old.add_with_ids(vecs, ids)
        faiss.write_index(old, str(folder / "index.faiss"))  # the layout before segments
        with s.sessions() as session:
            session.execute(update(Chunk).values(embedding=None))
            session.commit()
        store = IndexStore(s.settings.index_dir, embedder.dim)
        assert s.results(store) == before  # adopted as the first segment, searchable at once
        report = rebuild(s.sessions, store, embedder.dim)
        assert report[0]["backfilled_from_index"] == len(ids) and report[0]["rows_without_vector"] == 0
        with s.sessions() as session:
            assert session.scalar(select(Chunk.id).where(Chunk.embedding.is_(None))) is None
        assert s.results(IndexStore(s.settings.index_dir, embedder.dim)) == before
        assert [r.describe() for r in check(s.sessions, store) if r.problems] == []
    finally:
        s.close()
