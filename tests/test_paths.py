"""A document's identity is its path: the normaliser's table, then over HTTP on SQLite and PostgreSQL a
tree of same-named files ingested with the real ``ragsvc ingest``, an edited copy, and refused paths."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import time
import unicodedata

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.paths import MAX_PATH_CHARS, MAX_SEGMENTS, normalise_path
from tests import ingest_table
from tests.conftest import RAGSVC, new_pg_database, start_service, stop_service
from tests.test_bad_input import assert_problem

SAME = [
    ("README.md", "README.md"),
    ("guide/README.md", "guide/README.md"),
    ("guide\\README.md", "guide/README.md"),  # Windows separators
    ("guide\\sub/README.md", "guide/sub/README.md"),
    ("guide//README.md", "guide/README.md"),
    ("./guide/./README.md", "guide/README.md"),
    ("/guide/README.md", "guide/README.md"),  # absolute: read from the collection's root
    ("///home/me/notes.md", "home/me/notes.md"),
    ("guide/", "guide"),
    (" guide / README.md ", "guide/README.md"),  # whitespace around segments
    ("my notes/first draft.md", "my notes/first draft.md"),  # inside a segment it stays
    ("...", "..."),  # a name, not a parent
    ("..hidden/a..b.md", "..hidden/a..b.md"),
    (".env.md", ".env.md"),
    ("Re\u0301sume\u0301.md", "R\u00e9sum\u00e9.md"),  # macOS's decomposed é is the composed one
    ("Résumé – 日本語.md", "Résumé – 日本語.md"),
    ("a\u200db.md", "a\u200db.md"),  # a zero-width joiner (emoji sequences) is not a disguise
    ("C:\\Users\\me\\a.md", "C:/Users/me/a.md"),  # text, never resolved: the drive letter is a name
    ("<img src=x onerror=1><script>x</script>.txt", "<img src=x onerror=1><script>x</script>.txt"),
    ("/".join(["d"] * MAX_SEGMENTS), "/".join(["d"] * MAX_SEGMENTS)),
    ("n" * MAX_PATH_CHARS, "n" * MAX_PATH_CHARS),
    ("./" * 300 + "a.md", "a.md"),  # long input that collapses to a short path
]

REFUSED = [
    ("..", "'..' segment"),
    ("../etc/passwd.txt", "'..' segment"),
    ("../../../etc/passwd.txt", "'..' segment"),
    ("guide/../api/README.md", "'..' segment"),
    ("guide/..", "'..' segment"),
    ("guide\\..\\..\\x.md", "'..' segment"),
    ("guide/ .. /x.md", "'..' segment"),  # trimmed, it is still a parent
    ("/..", "'..' segment"),
    ("a\x00b.md", "U+0000"),
    ("a\nb.md", "U+000A"),
    ("a\rb.md", "U+000D"),
    ("a\tb.md", "U+0009"),
    ("a\x1bb.md", "U+001B"),
    ("a\x7fb.md", "U+007F"),
    ("a\x85b.md", "U+0085"),  # C1
    ("evil\u202etxt.md", "U+202E"),  # right-to-left override
    ("a\u2028b.md", "U+2028"),
    ("", "names no file"),
    ("   ", "names no file"),
    ("/", "names no file"),
    ("././/", "names no file"),
    ("n" * (MAX_PATH_CHARS + 1), "at most 512"),
    ("/".join(["d"] * (MAX_SEGMENTS + 1)), f"at most {MAX_SEGMENTS}"),
    ("x" * 100_000, "at most 512"),  # refused before any work
]


@pytest.mark.parametrize("raw, path", SAME)
def test_normalised(raw, path):
    assert normalise_path(raw) == path
    assert normalise_path(path) == path  # idempotent: a stored path names itself


@pytest.mark.parametrize("raw, words", REFUSED)
def test_refused_with_a_sentence_naming_the_file(raw, words):
    with pytest.raises(InvalidInput) as err:
        normalise_path(raw)
    detail = err.value.detail
    assert words.lower() in detail.lower() and detail.endswith(".")
    assert repr(raw[:20])[1:-1][:10] in detail  # the file is named (escaped, so control characters show)
    assert err.value.status_code == 422


def _assert_clean(out: str) -> None:
    assert "\\" not in out and "//" not in out and not out.startswith("/")
    assert all(seg not in ("", ".", "..") and seg == seg.strip() for seg in out.split("/"))
    assert unicodedata.is_normalized("NFC", out)
    assert not any(unicodedata.category(c) == "Cc" for c in out)
    assert normalise_path(out) == out


def test_every_output_is_clean():
    for raw, _ in SAME:
        _assert_clean(normalise_path(raw))


def test_every_short_string_is_refused_or_clean():
    # Every string of up to 5 pieces from separators, dots, spaces, a letter, a decomposed letter and a
    # control character: each is refused with InvalidInput or comes out clean, and never as a parent.
    pieces = ["a", ".", "/", "\\", " ", "e\u0301", "\x00"]
    for n in range(1, 6):
        for combo in itertools.product(pieces, repeat=n):
            raw = "".join(combo)
            kept = [seg.strip() for seg in raw.replace("\\", "/").split("/") if seg.strip() not in ("", ".")]
            should_refuse = "\x00" in raw or ".." in kept or not kept
            try:
                out = normalise_path(raw)
            except InvalidInput:
                assert should_refuse, repr(raw)
                continue
            assert not should_refuse, repr(raw)
            _assert_clean(out)
            assert out == unicodedata.normalize("NFC", "/".join(kept))


# --- over HTTP, with the real `ragsvc ingest` ----------------------------------------------------------

TREE = {
    "README.md": "# Harbour\n\nThe harbour office opens at seven.\n",
    "guide/README.md": "# Guide\n\nThe guide explains how to moor a dinghy at the east pier.\n",
    "api/README.md": "# API\n\nThe tide API answers with the next high water in minutes.\n",
    "a/b/c/README.md": "# Deep\n\nThe deepest folder keeps the lighthouse keeper's log.\n",
    "guide/LICENSE.txt": "Permission is granted to read the harbour notes aloud.\n",
    "api/LICENSE.txt": "Permission is granted to read the harbour notes aloud.\n",  # same bytes, other path
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request, tmp_path_factory):
    """The API, worker, embedder and indexes, no language model: nothing here needs an answer."""
    tmp = tmp_path_factory.mktemp(f"paths-{request.param}")
    if request.param == "sqlite":
        service = start_service(tmp, None, "sqlite", engine=False)
        yield service
        stop_service(service)
        return
    with new_pg_database() as url:
        service = start_service(tmp, url, "postgresql", engine=False)
        yield service
        stop_service(service)


def _ingest(svc, *paths, collection: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAGSVC, "ingest", *map(str, paths), "--collection", collection, "--url", svc.url],
                          capture_output=True, text=True, timeout=600)


def _docs(svc, collection: str) -> dict[str, dict]:
    listed = svc.client.get("/v1/documents", params={"collection": collection}).json()["documents"]
    by_path = {d["path"]: d for d in listed}
    assert len(by_path) == len(listed), listed  # one document per path
    return by_path


def test_a_tree_of_same_named_files_then_an_edited_copy(svc, tmp_path):
    tree = tmp_path / "notes"
    for rel, text in TREE.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    first = _ingest(svc, tree, collection="tree")
    assert first.returncode == 0, first.stdout + first.stderr
    table = ingest_table.parse(first.stdout)
    assert table["ready"].count == 6 and table["ready"].rows == [("", "6 new")], first.stdout
    assert (table["duplicate"].count, table["failed"].count, table["refused"].count) == (0, 0, 0), first.stdout
    before = _docs(svc, "tree")
    assert set(before) == set(TREE)  # every file is present under its path
    assert all(d["status"] == "ready" and d["filename"] == p and d["replaces"] is None for p, d in before.items())

    (tree / "guide/README.md").write_text(TREE["guide/README.md"] + "\nThe west pier is closed in winter.\n")
    second = _ingest(svc, tree, collection="tree")
    assert second.returncode == 0, second.stdout + second.stderr
    table = ingest_table.parse(second.stdout)
    assert table["ready"].count == 1 and table["duplicate"].count == 5, second.stdout
    assert (table["failed"].count, table["refused"].count) == (0, 0), second.stdout
    after = _docs(svc, "tree")
    assert set(after) == set(TREE)
    changed = [p for p in TREE if after[p]["id"] != before[p]["id"]]
    assert changed == ["guide/README.md"]  # exactly one new version, of the edited file
    assert after["guide/README.md"]["status"] == "ready"
    assert table["ready"].rows == [("", "0 new, 1 new version(s)"), (
        str(tree / "guide/README.md"), f"new version; replaces document {before['guide/README.md']['id']}")]
    # The old version is gone once the new one is ready: its row and its stored file.
    assert_problem(svc.client.get(f"/v1/documents/{before['guide/README.md']['id']}"), 404)
    assert not (svc.tmp / "data" / "files" / before["guide/README.md"]["id"]).exists()


def test_folders_whose_paths_collide_are_refused_by_the_cli(svc, tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "README.md").write_text(f"# {folder}\n\nThe {folder} folder's note about eiders.\n")
    out = _ingest(svc, tmp_path / "one", tmp_path / "two", collection="collide")
    assert out.returncode == 2, out.stdout + out.stderr
    table = ingest_table.parse(out.stdout)
    assert table["ready"].count == 1 and table["refused"].count == 1 and table["failed"].count == 0, out.stdout
    assert table["refused"].rows[0][0] == str(tmp_path / "two" / "README.md")
    assert "two/README.md" in out.stdout and "'README.md'" in out.stdout and "one/README.md" in out.stdout
    kept = _docs(svc, "collide")
    assert set(kept) == {"README.md"}  # the first folder's file, not replaced by the second's
    assert kept["README.md"]["sha256"] == hashlib.sha256((tmp_path / "one" / "README.md").read_bytes()).hexdigest()


def _stored_folders(svc) -> set[str]:
    files = svc.tmp / "data" / "files"
    return {p.name for p in files.iterdir()} if files.exists() else set()


@pytest.mark.parametrize("bad, words", [
    ("../secret.txt", "'..' segment"),
    ("guide/../../etc/passwd.txt", "'..' segment"),
    ("log\x1b[31m.txt", "U+001B"),
])
def test_refused_paths_store_nothing(svc, bad, words):
    stored = _stored_folders(svc)
    resp = svc.upload([("fine.txt", b"A fine note about herons.", "text/plain"),
                       (bad, b"A note that must not be stored.", "text/plain")], collection="refused")
    body = assert_problem(resp, 422, words)
    assert repr(bad)[1:-1] in body["detail"]  # names the file
    assert _stored_folders(svc) == stored
    assert_problem(svc.client.get("/v1/collections/refused"), 404)  # not even the collection


def test_identity_rules_over_http(svc):
    up = lambda files, **kw: svc.client.post(  # noqa: E731
        "/v1/documents", data={"collection": "rules", **kw},
        files=[("files", (name, data, "text/plain")) for name, data in files])
    first = up([("docs\\ferry.txt", b"The ferry leaves at six.")]).json()["documents"][0]
    assert first["path"] == first["filename"] == "docs/ferry.txt" and first["replaces"] is None
    # The same path spelled another way with the same bytes: unchanged.
    same = up([("/docs//./ferry.txt", b"The ferry leaves at six.")]).json()["documents"][0]
    assert same["duplicate"] is True and same["id"] == first["id"]
    # The same bytes at another path: a document of its own, so both paths are present.
    copy = up([("archive/ferry.txt", b"The ferry leaves at six.")]).json()["documents"][0]
    assert copy["duplicate"] is False and copy["id"] != first["id"] and copy["replaces"] is None
    # The same path with other bytes: a new version of that document, not of the copy.
    edit = up([("docs/ferry.txt", b"The ferry leaves at seven.")]).json()["documents"][0]
    assert edit["replaces"] == first["id"] and edit["duplicate"] is False
    assert svc.wait_done(edit["id"])["status"] == "ready"
    assert set(_docs(svc, "rules")) == {"docs/ferry.txt", "archive/ferry.txt"}
    # One request, one path twice: refused, since one would silently replace the other.
    assert_problem(up([("x/a.txt", b"one"), ("x\\a.txt", b"two")]), 422, "'x/a.txt'", "two files")
    # `replaces` onto a path another document holds would leave two documents at one path.
    assert_problem(up([("archive/ferry.txt", b"Renamed ferry notes.")], replaces=edit["id"]), 409,
                   "archive/ferry.txt", "two documents")
    # `replaces` still renames: another path, the old document goes once the new one is ready.
    moved = up([("timetables/ferry.txt", b"The ferry leaves at seven.")], replaces=edit["id"]).json()["documents"][0]
    assert moved["replaces"] == edit["id"]
    assert svc.wait_done(moved["id"])["status"] == "ready"
    assert set(_docs(svc, "rules")) == {"timetables/ferry.txt", "archive/ferry.txt"}


def test_ingest_ends_when_a_document_it_waits_for_is_deleted(tmp_path):
    # No worker, so the document stays queued until the test deletes it: no race. The database plays no
    # part in what the CLI does with a 404, so SQLite only.
    (tmp_path / "svc").mkdir()
    service = start_service(tmp_path / "svc", None, "sqlite", extra_env={"RAGSVC_EMBEDDED_WORKER": "false"},
                            engine=False)
    (tmp_path / "note.md").write_text("# Note\n\nA note about razorbills that someone deletes.\n")
    proc = subprocess.Popen([RAGSVC, "ingest", str(tmp_path / "note.md"), "--collection", "gone", "--url",
                             service.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            listed = service.client.get("/v1/documents", params={"collection": "gone"}).json()["documents"]
            if listed:
                assert service.client.delete(f"/v1/documents/{listed[0]['id']}").status_code == 204
                break
            time.sleep(0.2)
        out, err = proc.communicate(timeout=120)  # before, it polled the 404 forever
        assert proc.returncode == 2, out + err
        table = ingest_table.parse(out)
        assert table["ready"].count == 0 and table["failed"].count == 1 and table["refused"].count == 0, out
        assert table["failed"].rows[0][0] == str(tmp_path / "note.md"), out
        assert table["failed"].rows[0][1].startswith("deleted while ingest waited"), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stop_service(service)


@pytest.mark.parametrize("svc", ["sqlite"], indirect=True)  # the page's part is the same on both databases
def test_web_page_uploads_a_folder_under_its_paths(svc, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from tests.test_web_ui import CHROMIUM, FLAGS

    site = tmp_path / "site"
    for rel in ("guide/README.md", "api/README.md", ".git/README.md", "logo.png"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(f"# {rel}\n\nThe page sent {rel} about cormorants.\n")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(svc.url + "/")
            page.fill("#collection", "web-folder")
            page.locator("#collection").dispatch_event("change")
            page.set_input_files("#folder", str(site))  # the folder picker (webkitdirectory)
            for path in ("guide/README.md", "api/README.md"):
                expect(page.locator("#docs tbody tr td.file", has_text=path)).to_have_text(path, timeout=60_000)
        finally:
            browser.close()
    # Below the folder chosen, as `ragsvc ingest site` sends them; hidden folders and other types left out.
    assert set(_docs(svc, "web-folder")) == {"guide/README.md", "api/README.md"}
