"""Reads the table ``ragsvc ingest`` prints at the end (rich's box drawing) back into rows."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    count: int
    rows: list[tuple[str, str]] = field(default_factory=list)  # (file, detail)


def parse(stdout: str) -> dict[str, Outcome]:
    """Result name -> its count and its (file, detail) rows; a row with an empty Result continues the last."""
    out: dict[str, Outcome] = {}
    last = None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("│"):
            continue
        result, count, file, detail = (c.strip() for c in line.strip("│").split("│"))
        if result:
            last = out[result] = Outcome(int(count))
        if file or detail:
            last.rows.append((file, detail))
    return out
