"""``ragsvc ingest`` as a person sees it: a folder of mixed files against a real service (API, worker,
embedder, indexes; no language model), its progress in a pipe and on a terminal, and its final table."""

from __future__ import annotations

import io
import os
import pty
import subprocess
from collections import Counter

import pytest

from ragsvc.bulk import Summary
from ragsvc.bulk_report import PlainProgress, eta, plain_line, rates, summary_table
from tests.conftest import RAGSVC, start_service, stop_service
from tests.docmaker import FACT_PAGES, HTML_DOC, make_pdf
from tests.ingest_table import parse

BROKEN_PDF = b"%PDF-1.4\n this is not really a pdf \n%%EOF"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    # What the CLI prints does not depend on the database: SQLite only.
    tmp = tmp_path_factory.mktemp("ingest-cli")
    service = start_service(tmp, None, "sqlite", engine=False)
    yield service
    stop_service(service)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSVC_")}
    return env | {"HF_HUB_OFFLINE": "1", **extra}


def _ingest(svc, *paths, collection: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([RAGSVC, "ingest", *map(str, paths), "--collection", collection, "--url", svc.url],
                          capture_output=True, text=True, timeout=600, env=_env(**env))


def _pages(svc, collection: str) -> int:
    docs = svc.client.get("/v1/documents", params={"collection": collection}).json()["documents"]
    return sum(d["pages"] or 0 for d in docs if d["status"] == "ready")


def test_a_mixed_folder_in_a_pipe(svc, tmp_path):
    folder = tmp_path / "manual"
    (folder / "guide").mkdir(parents=True)
    (folder / "guide" / "shop.html").write_bytes(HTML_DOC)
    (folder / "notes.txt").write_text("The harbour office opens at seven and closes at noon on Sundays.\n")

    # Pages without pages: HTML and text. No "0.0 pages/s".
    first = _ingest(svc, folder, collection="mixed")
    assert first.returncode == 0, first.stdout + first.stderr
    table = parse(first.stdout)
    assert table["ready"].count == 2 and table["ready"].rows == [("", "2 new")], first.stdout
    assert "pages/s" not in first.stderr and "documents/s" in first.stderr and "ETA" in first.stderr
    assert "\r" not in first.stderr and "\x1b" not in first.stderr  # plain lines, no redraws, no colours
    assert first.stderr.splitlines()[-1].startswith("ingest: 2/2 documents"), first.stderr
    assert "HTTP Request" not in first.stderr and "httpx" not in first.stderr, first.stderr

    # The same folder with more in it: a PDF, a broken PDF, a PNG posing as text, an image, a typo.
    (folder / "facts.pdf").write_bytes(make_pdf(FACT_PAGES))
    (folder / "guide" / "broken.pdf").write_bytes(BROKEN_PDF)
    (folder / "guide" / "diagram.txt").write_bytes(b"\x89PNG\r\n\x1a\n not text at all")
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")  # hidden: neither sent nor mentioned
    second = _ingest(svc, folder, tmp_path / "manaul", collection="mixed")
    assert second.returncode == 2, second.stdout + second.stderr
    table = parse(second.stdout)
    pages = _pages(svc, "mixed")
    assert pages == len(FACT_PAGES)
    assert table["ready"].count == 1 and table["ready"].rows == [("", f"1 new, {pages} pages")]
    assert table["duplicate"].count == 2
    assert table["failed"].count == 1 and table["failed"].rows[0][0] == str(folder / "guide" / "broken.pdf")
    assert "not a readable pdf" in table["failed"].rows[0][1].lower(), second.stdout
    assert table["refused"].count == 1 and table["refused"].rows[0][0] == str(folder / "guide" / "diagram.txt")
    assert "PNG" in table["refused"].rows[0][1], second.stdout
    assert table["skipped"].count == 1 and ".png 1" in table["skipped"].rows[0][1]
    assert table["not found"].rows == [(str(tmp_path / "manaul"), "no such file or folder")]
    assert set(table) == {"ready", "duplicate", "failed", "refused", "skipped", "not found"}
    assert "pages/s" in second.stderr.splitlines()[-1]  # the PDF had pages
    assert second.stderr.splitlines()[-1].startswith("ingest: 5/5 documents"), second.stderr
    # What the table says is what the service holds.
    listed = svc.client.get("/v1/documents", params={"collection": "mixed"}).json()["documents"]
    assert Counter(d["status"] for d in listed) == {"ready": 3, "failed": 1}


def test_http_client_lines_only_at_debug(svc, tmp_path):
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nThe pier lamp is lit at dusk.\n")
    quiet = _ingest(svc, note, collection="debug")
    assert quiet.returncode == 0 and "HTTP Request" not in quiet.stderr, quiet.stderr
    loud = _ingest(svc, note, collection="debug", RAGSVC_LOG_LEVEL="DEBUG")
    assert loud.returncode == 0, loud.stderr
    assert "DEBUG httpx: HTTP Request: POST" in loud.stderr, loud.stderr
    assert parse(loud.stdout)["duplicate"].count == 1


def test_a_terminal_gets_one_bar_and_the_table(svc, tmp_path):
    folder = tmp_path / "tty"
    folder.mkdir()
    (folder / "facts.pdf").write_bytes(make_pdf(FACT_PAGES + ["A page only this copy has, about terns."]))
    (folder / "a.txt").write_text("The terns arrive in May.\n")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([RAGSVC, "ingest", str(folder), "--collection", "tty", "--url", svc.url],
                            stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                            env=_env(COLUMNS="150", TERM="xterm"))
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(120) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "documents/s" in screen and "ETA" in screen and "2/2" in screen and "pages/s" in screen
    assert "HTTP Request" not in screen
    assert screen.count("━") > 10  # the bar itself (rich draws it with heavy lines)
    table = parse(screen.replace("\r", ""))
    assert table["ready"].count == 2 and f"{len(FACT_PAGES) + 1} pages" in table["ready"].rows[0][1]


# --- the pieces, without a service ------------------------------------------------------------------


def test_rates_mention_pages_only_when_there_are_some():
    assert rates(10, 0, 5.0) == "2.00 documents/s"
    assert rates(10, 40, 5.0) == "2.00 documents/s  8.0 pages/s"
    assert eta(0, 10, 3.0) == "?" and eta(10, 10, 3.0) == "0:00:00"
    assert eta(1, 11, 6.0) == "0:01:00" and eta(1, 3601, 1.0) == "1:00:00"
    assert plain_line(3, 4, 0, 1.5) == "ingest: 3/4 documents  2.00 documents/s  ETA 0:00:00"


def test_plain_progress_prints_a_line_per_interval_and_the_last():
    out = io.StringIO()
    progress = PlainProgress(out, every_s=3600)
    progress.start(3)
    progress.update(1, 0)  # the first change prints (no line for an hour before it)
    progress.update(2, 0)  # too soon
    progress.update(2, 0)
    progress.close()  # the count on close is always printed
    lines = out.getvalue().splitlines()
    assert lines[0] == "ingest: 3 files to send"
    assert [line.split("  ")[0] for line in lines[1:]] == ["ingest: 1/3 documents", "ingest: 2/3 documents"]


def test_the_table_lists_every_failure_and_refusal_with_its_reason():
    from rich.console import Console

    s = Summary(new=2, duplicate=1, pages=7, files=6, versions=[("docs/a.md", "doc-1")],
                failed=[("x.pdf", "The PDF has no text layer (a scan?)"), ("y.pdf", "password protected")],
                refused=[("z[bold].txt", "The file is a PNG image, not text [1]")])
    out = io.StringIO()
    Console(file=out, width=4096).print(summary_table(s))
    table = parse(out.getvalue())
    assert table["ready"].count == 3 and table["ready"].rows[0] == ("", "2 new, 1 new version(s), 7 pages")
    assert table["ready"].rows[1] == ("docs/a.md", "new version; replaces document doc-1")
    assert table["failed"].count == 2 and [r[0] for r in table["failed"].rows] == ["x.pdf", "y.pdf"]
    assert table["refused"].rows == [("z[bold].txt", "The file is a PNG image, not text [1]")]  # not markup
    assert "skipped" not in table and "not found" not in table
