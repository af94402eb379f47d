"""Fit the retrieval stage of ``ragsvc/answerability.py`` on a TRAIN split, report it on the held-out split.

    .venv/bin/python bench/answerability_fit.py --url http://127.0.0.1:8000 --collection eval \\
        bench/eval/debian.jsonl bench/eval/wiki.jsonl [--out bench/results/answerability_fit.json]

For every question of the eval files it asks the running service for a dry run (``mode: off``, the
service's own ``top_k``: retrieval only, no generation) and takes the signals the service computed
(``answerability`` in the response; the weights in use do not change them). Each question goes
to TRAIN or HELD-OUT by a hash of its id (half each, fixed: no choice by hand), the logistic weights
are fitted by Newton's method on TRAIN (a small L2 penalty: few questions), and the threshold is the
highest one that wrongly flags at most 5% of the answerable TRAIN questions. The held-out figures are
the ones to trust. "Before" is today's rule on the same questions: flagged when the best dense
similarity is under ``min_relevance`` (0.35).

Prints the ``WEIGHTS``/``THRESHOLD`` lines to copy into ragsvc/answerability.py, and writes the JSON.

    .venv/bin/python bench/answerability_fit.py --split-eval REPORT.json... --out OUT.json

breaks ``ragsvc eval`` reports (both stages, generation included) down by the same split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragsvc import answerability  # noqa: E402
from ragsvc.evaluation import KINDS_NO_ANSWER, HttpService, load_questions  # noqa: E402

L2 = 0.1
MAX_FALSE_FLAGS = 0.05  # goal: at most 5% of answerable questions called unanswered


def split_of(qid: str) -> str:
    return "train" if hashlib.sha256(qid.encode()).digest()[0] % 2 == 0 else "held_out"


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2, steps: int = 50) -> np.ndarray:
    """Weights (bias first) maximising the L2-penalised log likelihood, by Newton's method."""
    xb = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(xb.shape[1])
    reg = l2 * np.eye(len(w))
    reg[0, 0] = 0.0  # the bias is not penalised
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -50, 50)))
        grad = xb.T @ (p - y) + reg @ w
        hess = xb.T @ (xb * (p * (1 - p))[:, None]) + reg
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def rates(flagged: list[bool], answerable: list[bool]) -> dict:
    una = [f for f, a in zip(flagged, answerable) if not a]
    ans = [f for f, a in zip(flagged, answerable) if a]
    return {"unanswerable_flagged": sum(una) / len(una) if una else None, "n_unanswerable": len(una),
            "answerable_flagged": sum(ans) / len(ans) if ans else None, "n_answerable": len(ans)}


def split_reports(paths: list[str], out: str) -> int:
    """The end-to-end figures (``ragsvc eval`` reports, both stages) by the same TRAIN / HELD-OUT split."""
    rows = [r for path in paths for r in json.loads(Path(path).read_text())["questions"] if not r.get("error")]
    report: dict = {"reports": paths, "results": {}}
    for split in ("train", "held_out", "all"):
        sel = [r for r in rows if split == "all" or split_of(r["id"]) == split]
        for src in [None] + sorted({r["source"] for r in sel}):
            part = [r for r in sel if src is None or r["source"] == src]
            key = split if src is None else f"{split}/{src}"
            answerable = [r["kind"] not in KINDS_NO_ANSWER for r in part]
            res = rates([r["abstained"] for r in part], answerable)
            res["reasons"] = {kind: {} for kind in ("answerable", "unanswerable")}
            for r, a in zip(part, answerable):
                if r["abstained"]:
                    kind = res["reasons"]["answerable" if a else "unanswerable"]
                    kind[r.get("unanswered_reason") or "unknown"] = kind.get(r.get("unanswered_reason") or "unknown", 0) + 1
            report["results"][key] = res
            print(f"{key:28} unanswerable flagged {res['unanswerable_flagged']:.0%} of {res['n_unanswerable']}, "
                  f"answerable flagged {res['answerable_flagged']:.0%} of {res['n_answerable']}; {res['reasons']}")
    Path(out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--split-eval", action="store_true",
                    help="the files are `ragsvc eval` reports (JSON): print and write their rates by split")
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--collection", default="eval")
    ap.add_argument("--min-relevance", type=float, default=0.35)
    ap.add_argument("--out", default=str(ROOT / "bench/results/answerability_fit.json"))
    args = ap.parse_args()
    if args.split_eval:
        return split_reports(args.files, args.out)
    questions = [q for f in args.files for q in load_questions(f)]
    service = HttpService(args.url)
    rows = []
    for q in questions:
        status, body = service.request("POST", "/v1/ask", {"question": q.question, "collection": args.collection,
                                                           "mode": "off", "dry_run": True})
        if status != 200:
            sys.exit(f"{q.id}: HTTP {status}: {body}")
        if "answerability" not in body:
            sys.exit("the service's dry run has no \"answerability\": it is older than this script")
        signals = body["answerability"]  # computed by the service itself, collection-wide lookups included
        rows.append({"id": q.id, "source": q.source, "split": split_of(q.id),
                     "answerable": q.kind not in KINDS_NO_ANSWER,
                     "features": [signals[f] for f in answerability.FEATURES], "missing": signals["missing"]})
    service.close()

    train = [r for r in rows if r["split"] == "train"]
    x = np.array([r["features"] for r in train])
    y = np.array([1.0 if r["answerable"] else 0.0 for r in train])
    w = fit_logistic(x, y)

    def prob(r: dict) -> float:
        return float(1.0 / (1.0 + np.exp(-(w[0] + np.dot(w[1:], r["features"])))))

    # The highest threshold that keeps TRAIN false flags within the goal (flag when P(covered) < threshold).
    # Not zero: one odd answerable question would then set it (a paraphrase sharing few words with its passage).
    answerable_p = sorted(prob(r) for r in train if r["answerable"])
    allowed = int(MAX_FALSE_FLAGS * len(answerable_p))  # how many answerable TRAIN questions may be flagged
    threshold = min(0.5, answerable_p[allowed]) if answerable_p else 0.5
    for r in rows:
        r["p_covered"] = round(prob(r), 4)
        r["flagged_after"] = prob(r) < threshold
        r["flagged_before"] = r["features"][0] < args.min_relevance
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "collection": args.collection,
        "files": args.files, "features": list(answerability.FEATURES),
        "weights": [round(float(v), 3) for v in w], "threshold": round(float(threshold), 3), "l2": L2,
        "results": {},
    }
    for split in ("train", "held_out", "all"):
        sel = [r for r in rows if split == "all" or r["split"] == split]
        for src in [None] + sorted({r["source"] for r in sel}):
            part = [r for r in sel if src is None or r["source"] == src]
            key = split if src is None else f"{split}/{src}"
            report["results"][key] = {
                "before": rates([r["flagged_before"] for r in part], [r["answerable"] for r in part]),
                "after_retrieval_stage": rates([r["flagged_after"] for r in part], [r["answerable"] for r in part]),
            }
    report["questions"] = rows
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"WEIGHTS = ({', '.join(f'{v:.3f}' for v in w)})")
    print(f"THRESHOLD = {threshold:.3f}")
    for key, val in report["results"].items():
        b, a = val["before"], val["after_retrieval_stage"]
        print(f"{key:28} before: unanswerable flagged {b['unanswerable_flagged']}, answerable flagged "
              f"{b['answerable_flagged']} | after: {a['unanswerable_flagged']}, {a['answerable_flagged']} "
              f"(n {a['n_unanswerable']}/{a['n_answerable']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
