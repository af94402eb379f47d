"""Accuracy of ``mode: auto`` routing, per class, on real questions.

Multi-hop: the 310 FanOutQA dev questions, on which the router's patterns were tuned, and the FanOutQA
test questions, held out (both read from the PyPI package ``fanoutqa``'s data files; not copied into
this repository) plus 20 hand-written comparison/bridge/aggregation questions
(``bench/data/multihop_extra.txt``). Lookups: 118 hand-written single-fact questions in the styles
people ask of manuals, policies and general knowledge (``bench/data/lookups.txt``). The router sees
the question only (retrieval signals are neutral here). Goal: at least 90% on each class.

    .venv/bin/python bench/route_eval.py [--show-errors]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragsvc.router import route  # noqa: E402


def fanoutqa_questions(split: str) -> list[str]:
    spec = importlib.util.find_spec("fanoutqa")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install --no-deps fanoutqa  (only its data file is read)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"fanout-final-{split}.json"
    return [q["question"] for q in json.loads(path.read_text())]


def lines(name: str) -> list[str]:
    return [ln.strip() for ln in (ROOT / "bench" / "data" / name).read_text().splitlines() if ln.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show-errors", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "route_eval.json"))
    args = ap.parse_args()
    sets = {
        "multi-hop (FanOutQA dev; weights tuned on it)": (fanoutqa_questions("dev"), "on"),
        "multi-hop (FanOutQA test; held out, never tuned on)": (fanoutqa_questions("test"), "on"),
        "multi-hop (hand-written)": (lines("multihop_extra.txt"), "on"),
        "lookup (hand-written)": (lines("lookups.txt"), "off"),
    }
    result = {}
    print("| Class | Questions | Routed correctly | Accuracy |\n|---|---:|---:|---:|")
    for name, (questions, want) in sets.items():
        wrong = [(q, r.reason) for q in questions if (r := route(q)).mode != want]
        acc = 1 - len(wrong) / len(questions)
        result[name] = {"n": len(questions), "correct": len(questions) - len(wrong), "accuracy": acc,
                        "errors": wrong}
        print(f"| {name} | {len(questions)} | {len(questions) - len(wrong)} | {acc:.1%} |")
        if args.show_errors:
            for q, why in wrong:
                print(f"    ✗ {q}  [{why}]", file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
