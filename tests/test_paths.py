"""A document's identity is its path: the normaliser's table, then over HTTP on SQLite and PostgreSQL a
tree of same-named files ingested with the real ``ragsvc ingest``, an edited copy, and refused paths."""

from __future__ import annotations

import subprocess
import unicodedata

import pytest

from ragsvc.errors import InvalidInput
from ragsvc.paths import MAX_PATH_CHARS, MAX_SEGMENTS, normalise_path
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


def test_every_output_is_clean():
    for raw, _ in SAME:
        out = normalise_path(raw)
        assert "\\" not in out and "//" not in out and not out.startswith("/")
        assert all(seg not in ("", ".", "..") and seg == seg.strip() for seg in out.split("/"))
        assert unicodedata.is_normalized("NFC", out)
