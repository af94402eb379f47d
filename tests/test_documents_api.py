"""Collections, new versions, progress, the job queue and hostile uploads, over HTTP."""

from __future__ import annotations

from pathlib import Path

from tests import ingest_table
from tests.docmaker import FACT_PAGES, make_pdf, zip_bomb
from tests.test_bad_input import assert_problem

V1 = """# Ferry timetable

## Weekdays

The first ferry to Holmsund leaves at 06:10 on weekdays.

## Weekends

On weekends the first ferry to Holmsund leaves at 08:40.

## Tickets

A single ticket costs 45 crowns; children under seven travel free.
"""
V2 = V1.replace("08:40", "09:15")


def test_collections_crud(service):
    c = service.client
    assert c.post("/v1/collections", json={"name": "crud"}).status_code == 201
    assert_problem(c.post("/v1/collections", json={"name": "crud"}), 409, "already exists")
    assert_problem(c.post("/v1/collections", json={"name": "a/b"}), 422, "slashes")
    doc = service.upload([("crud.txt", b"The crud collection holds one note about herons.", "text/plain")],
                         collection="crud").json()["documents"][0]
    assert service.wait_done(doc["id"])["status"] == "ready"
    assert c.get("/v1/collections/crud").json()["documents"] == 1
    assert c.delete("/v1/collections/crud").status_code == 204
    assert_problem(c.get("/v1/collections/crud"), 404)
    assert_problem(c.get(f"/v1/documents/{doc['id']}"), 404)
    assert not (service.tmp / "indexes").joinpath("crud").exists()
    assert_problem(c.post("/v1/ask", json={"question": "herons?", "collection": "crud"}), 404)


def test_new_version_replaces_old_and_reuses_unchanged_chunks(service):
    first = service.upload([("ferry.md", V1.encode(), "text/markdown")], collection="versions").json()["documents"][0]
    v1 = service.wait_done(first["id"])
    assert v1["status"] == "ready" and v1["chunks"] >= 3
    second = service.upload([("ferry.md", V2.encode(), "text/markdown")], collection="versions").json()["documents"][0]
    assert second["replaces"] == v1["id"] and second["duplicate"] is False
    v2 = service.wait_done(second["id"])
    assert v2["status"] == "ready"
    # Only the changed section was embedded again.
    assert 1 <= v2["reused_chunks"] == v2["chunks"] - 1
    assert_problem(service.client.get(f"/v1/documents/{v1['id']}"), 404)
    body = service.client.post("/v1/ask", json={"question": "When does the first weekend ferry leave?",
                                                "collection": "versions", "top_k": 10}).json()
    texts = " ".join(p["text"] for p in body["passages"])
    assert "09:15" in texts and "08:40" not in texts
    assert {p["document_id"] for p in body["passages"]} == {v2["id"]}


def test_explicit_replaces_must_exist(service):
    resp = service.client.post("/v1/documents", data={"replaces": "nope"},
                               files=[("files", ("x.txt", b"hello there", "text/plain"))])
    assert_problem(resp, 404, "replace")


def test_failed_document_can_be_uploaded_again(service):
    bad = b"%PDF-1.4 broken"
    first = service.upload([("again.pdf", bad, "application/pdf")], collection="again").json()["documents"][0]
    assert service.wait_done(first["id"])["status"] == "failed"
    second = service.upload([("again.pdf", bad, "application/pdf")], collection="again").json()["documents"][0]
    assert second["id"] != first["id"] and second["duplicate"] is False


def test_progress_and_jobs_are_visible(service):
    doc = service.upload([("progress.pdf", make_pdf(FACT_PAGES * 3), "application/pdf")],
                         collection="progress").json()["documents"][0]
    done = service.wait_done(doc["id"])
    assert done["status"] == "ready" and done["progress"] == 1.0 and done["stage"] is None and done["pages"] == 9
    jobs = service.client.get("/v1/jobs").json()["jobs"]
    job = next(j for j in jobs if j["document_id"] == doc["id"])
    assert job["status"] == "done" and job["attempts"] == 1 and job["filename"] == "progress.pdf"


def test_upload_over_the_limit_is_413(service):
    big = b"x" * (6 * 1024 * 1024)  # the test service allows 5 MiB
    resp = service.upload([("big.txt", big, "text/plain")])
    assert_problem(resp, 413, "RAGSVC_MAX_UPLOAD_MB")
    assert service.client.get("/health").status_code == 200


def test_hostile_and_unusual_filenames_are_shown_as_given(service):
    # Paths are text, normalised (ragsvc/paths.py): these need no change and are shown as given.
    names = ["Résumé – 日本語.md", "n" * 296 + ".txt", "docs/2024/notes.txt"]
    resp = service.upload([(n, f"File number {i} mentions a kestrel.".encode(), "text/plain")
                           for i, n in enumerate(names)], collection="names")
    assert resp.status_code == 202, resp.text
    docs = resp.json()["documents"]
    assert [d["filename"] for d in docs] == [d["path"] for d in docs] == names
    data_dir = (service.tmp / "data").resolve()
    for d in docs:
        assert service.wait_done(d["id"])["status"] == "ready"
        stored = data_dir / "files" / d["id"] / "original"
        assert stored.exists()
    # A path out of the folder is refused, naming the file; nothing of the request is stored.
    resp = service.upload([("fine.txt", b"A fine note.", "text/plain"),
                           ("../../../etc/passwd.txt", b"root:x:0:0", "text/plain")], collection="names")
    assert_problem(resp, 422, "../../../etc/passwd.txt", "'..'")
    listed = service.client.get("/v1/documents", params={"collection": "names"}).json()["documents"]
    assert {d["path"] for d in listed} == set(names)
    assert not Path("/etc/passwd.txt").exists()


def test_extension_that_lies(service):
    resp = service.upload([("really-a-pdf.txt", make_pdf(["The lighthouse keeper feeds seven cats."]),
                            "text/plain")], collection="liars")
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["kind"] == "pdf" and doc["status"] == "ready"


def test_zip_bomb_docx_fails_with_reason(service):
    resp = service.upload([("bomb.docx", zip_bomb(), "application/octet-stream")], collection="bombs")
    assert resp.status_code == 202, resp.text
    doc = service.wait_done(resp.json()["documents"][0]["id"])
    assert doc["status"] == "failed" and "zip bomb" in doc["error"]


def test_a_thousand_files_in_one_request(service):
    files = [(f"note-{i:04d}.txt", f"Note {i}: the tide table entry number {i}.".encode(), "text/plain")
             for i in range(1000)]
    resp = service.upload(files, collection="thousand")
    assert resp.status_code == 202, resp.text[:500]
    docs = resp.json()["documents"]
    assert len(docs) == 1000 and len({d["id"] for d in docs}) == 1000
    listed = service.client.get("/v1/documents", params={"collection": "thousand"}).json()["documents"]
    assert len(listed) == 1000
    # Clean up so the worker does not spend the rest of the run on them.
    assert service.client.delete("/v1/collections/thousand").status_code == 204


def test_cli_ingest_walks_a_folder(service, tmp_path):
    import subprocess

    from tests.conftest import RAGSVC

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha\n\nThe alpha note is about puffins.\n")
    (folder / "sub" / "b.txt").write_text("The beta note is about guillemots.\n")
    (folder / "sub" / "c.txt").write_bytes(b"\x89PNG\r\n\x1a\n fake")  # lies about being text
    (folder / "skip.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # not a supported suffix: not sent
    (folder / ".hidden.md").write_text("hidden files are skipped")
    out = subprocess.run([RAGSVC, "ingest", str(folder), "--collection", "cli", "--url", service.url],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr  # one file refused
    table = ingest_table.parse(out.stdout)
    assert table["ready"].count == 2 and table["failed"].count == 0, out.stdout
    assert table["refused"].rows[0][0] == str(folder / "sub" / "c.txt") and "PNG" in table["refused"].rows[0][1]
    assert table["skipped"].count == 1 and ".png 1" in table["skipped"].rows[0][1]  # reported, not sent
    # Markdown and text have no pages: no pages/s beside them.
    assert "documents/s" in out.stderr and "pages/s" not in out.stderr
    names = {d["filename"] for d in service.client.get("/v1/documents", params={"collection": "cli"}).json()["documents"]}
    assert names == {"a.md", "sub/b.txt"}  # paths relative to the folder given
    again = subprocess.run([RAGSVC, "ingest", str(folder / "a.md"), "--collection", "cli", "--url", service.url],
                           capture_output=True, text=True, timeout=300)
    # A file given alone goes by its base name: the same path as the folder's a.md, the same bytes.
    assert again.returncode == 0 and ingest_table.parse(again.stdout)["duplicate"].count == 1, again.stdout
