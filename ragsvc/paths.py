"""A document's path within its collection: its identity, as the user gave it, made safe.

The path is only ever text in the database (the stored file keeps a generated name,
``files_dir/<document id>/original``), so normalising is not about protecting the disk; it is about
identity: ``guide\\README.md``, ``./guide//README.md`` and ``/guide/README.md`` must name one
document, and ``guide/../api/README.md`` must not quietly name another one's path.

Rules, in order:

- refuse control characters (NUL, C0, DEL, C1), line/paragraph separators and bidirectional
  overrides: they hide or disguise a name on a terminal or web page;
- backslashes become slashes (Windows clients);
- Unicode is NFC-normalised (macOS sends decomposed ``é``; it must match the composed one);
- segments are trimmed of whitespace; empty and ``.`` segments are dropped, so ``//``, ``./`` and a
  leading ``/`` vanish: a path is relative to the collection, and an absolute client path
  (``/home/me/notes.md``) is read from the collection's root rather than refused, because old clients
  send whatever name they have and nothing is ever resolved against a filesystem;
- a ``..`` segment is refused: it cannot be resolved without guessing, and a client that sends it is
  either confused or probing;
- at most ``MAX_PATH_CHARS`` characters (the column size) and ``MAX_SEGMENTS`` segments; nothing is
  cut short, since a truncated path would be another document's identity.

Every step is one pass over a string capped at ``MAX_RAW_CHARS`` first: linear time.
"""

from __future__ import annotations

import unicodedata

from ragsvc.errors import InvalidInput

MAX_PATH_CHARS = 512
MAX_SEGMENTS = 64
MAX_RAW_CHARS = 4 * MAX_PATH_CHARS  # before any work: NFC and trimming never shorten by more than this
# Shown like text but reorder or hide it: Trojan-source style disguises of a file name.
_DISGUISES = frozenset("\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _shown(raw: str) -> str:
    """The name as a message can quote it: escaped (repr) and short."""
    text = raw if len(raw) <= 80 else raw[:77] + "..."
    return repr(text)


def normalise_path(raw: str) -> str:
    """The collection-relative path for a file name or path as a client sent it; InvalidInput (422) with a
    sentence naming the file when it cannot be one."""
    if len(raw) > MAX_RAW_CHARS:
        raise InvalidInput(f"The file path {_shown(raw)} is {len(raw)} characters long; a path has at most "
                           f"{MAX_PATH_CHARS}.")
    for ch in raw:
        if ch in _DISGUISES or unicodedata.category(ch) == "Cc":
            raise InvalidInput(f"The file path {_shown(raw)} contains the control character U+{ord(ch):04X}; "
                               "rename the file without it.")
    text = unicodedata.normalize("NFC", raw.replace("\\", "/"))
    segments: list[str] = []
    for seg in text.split("/"):
        seg = seg.strip()
        if seg in ("", "."):
            continue
        if seg == "..":
            raise InvalidInput(f"The file path {_shown(raw)} has a '..' segment; send a path inside the folder "
                               "you upload from, such as 'guide/README.md'.")
        segments.append(seg)
    if not segments:
        raise InvalidInput(f"The file path {_shown(raw)} names no file; send a file name such as 'README.md'.")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidInput(f"The file path {_shown(raw)} has {len(segments)} segments (folders and the file "
                           f"name); a path has at most {MAX_SEGMENTS}.")
    path = "/".join(segments)
    if len(path) > MAX_PATH_CHARS:
        raise InvalidInput(f"The file path {_shown(raw)} is {len(path)} characters long; a path has at most "
                           f"{MAX_PATH_CHARS}.")
    return path
