"""Answer-quality evaluation: ``ragsvc eval QUESTIONS.jsonl --collection NAME``.

A question file holds one JSON object per line::

    {"id": "faq-sid", "question": "...", "answers": ["unstable"], "evidence": ["text a correct passage holds"],
     "kind": "lookup"}

``answers`` are accepted short answer strings (empty only for ``kind: "unanswerable"``); ``evidence`` (a string
or a list of strings, one per piece a multi-hop question needs) is text that a correct passage contains.

For every question the runner makes two calls to ``POST /v1/ask``: a dry run with ``top_k`` = the largest k
reported and ``include_retrieved`` (the ranked retrieval list, for recall@k and MRR; no generation), then the
real ask as a user makes it (the service's own defaults), whose packed passages, citations, mode, timings and
usage give the other metrics. The metric functions are pure; the raw responses are kept beside the report so
every figure can be recomputed.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

KS = (1, 5, 10)
MODES = ("auto", "off", "on")
KINDS_NO_ANSWER = ("unanswerable",)
ALLOWED_KEYS = {"id", "question", "answers", "evidence", "kind", "note"}


# --- question files ------------------------------------------------------------------------------

class QuestionFileError(ValueError):
    """A question file that cannot be used; the message names the file and line."""


@dataclass
class Question:
    id: str
    question: str
    answers: list[str]
    evidence: list[str] = field(default_factory=list)
    kind: str = "lookup"
    source: str = ""  # the question file's name, for per-set figures


def _strings(value, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise QuestionFileError(f"{where}: {what} must be a non-empty string or a list of non-empty strings")
    return value


def load_questions(path: str | Path) -> list[Question]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise QuestionFileError(f"cannot read question file {path}: {exc.strerror or exc}") from exc
    out: list[Question] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionFileError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(row, dict):
            raise QuestionFileError(f"{where}: each line must be a JSON object")
        unknown = set(row) - ALLOWED_KEYS
        if unknown:  # a typo such as "answer" would otherwise silently score every answer as wrong
            raise QuestionFileError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}")
        if not isinstance(row.get("question"), str) or not row["question"].strip():
            raise QuestionFileError(f"{where}: \"question\" must be a non-empty string")
        kind = row.get("kind", "lookup")
        if not isinstance(kind, str) or not kind:
            raise QuestionFileError(f"{where}: \"kind\" must be a non-empty string")
        if "answers" not in row:
            raise QuestionFileError(f"{where}: \"answers\" is missing (a list of accepted answer strings)")
        if kind in KINDS_NO_ANSWER:
            if row["answers"] != []:
                raise QuestionFileError(f"{where}: an unanswerable question must have \"answers\": []")
            answers: list[str] = []
        else:
            answers = _strings(row["answers"], "\"answers\"", where)
        evidence = _strings(row["evidence"], "\"evidence\"", where) if "evidence" in row else []
        qid = str(row.get("id") or f"{path.stem}-{lineno}")
        if qid in seen:
            raise QuestionFileError(f"{where}: duplicate id {qid!r}")
        seen.add(qid)
        out.append(Question(qid, row["question"].strip(), answers, evidence, kind, path.name))
    if not out:
        raise QuestionFileError(f"{path}: no questions")
    return out


# --- metrics (pure) ------------------------------------------------------------------------------

def normalize_ws(text: str) -> str:
    return " ".join(text.split())


def has_evidence(text: str, evidence: Iterable[str]) -> bool:
    """Whether a passage contains any of the evidence strings (after whitespace normalisation)."""
    flat = normalize_ws(text)
    return any(normalize_ws(e) in flat for e in evidence)


def _pieces_found(texts: list[str], evidence: list[str]) -> int:
    flat = [normalize_ws(t) for t in texts]
    return sum(any(normalize_ws(e) in t for t in flat) for e in evidence)


def recall_at_k(ranked: list[str], evidence: list[str], k: int) -> float | None:
    """Share of the evidence pieces found in the top-k passages; None when the question has no evidence."""
    if not evidence:
        return None
    return _pieces_found(ranked[:k], evidence) / len(evidence)


def reciprocal_rank(ranked: list[str], evidence: list[str]) -> float | None:
    """1/rank of the first passage that contains any evidence piece; 0 when none does."""
    if not evidence:
        return None
    for rank, text in enumerate(ranked, 1):
        if has_evidence(text, evidence):
            return 1.0 / rank
    return 0.0


def packed_recall(packed: list[str], evidence: list[str]) -> float | None:
    """Share of the evidence pieces that reached the prompt (the packed passages)."""
    if not evidence:
        return None
    return _pieces_found(packed, evidence) / len(evidence)


_MARKER = re.compile(r"\[\d+(?:\s*[,;]\s*\d+)*\]")


def normalize_answer(text: str) -> str:
    """Lower case, accents and punctuation removed, citation markers dropped, whitespace collapsed."""
    text = _MARKER.sub(" ", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = re.sub(r"[^\w]+", " ", text.casefold())
    return normalize_ws(text.replace("_", " "))


def answer_match(answer: str, accepted: list[str]) -> bool:
    """An accepted answer occurs in the answer as whole words, after normalisation."""
    padded = f" {normalize_answer(answer)} "
    return any(f" {normalize_answer(a)} " in padded for a in accepted if normalize_answer(a))


def citation_precision(cited: list[str], evidence: list[str]) -> float | None:
    """Share of the cited passages that contain evidence; None without evidence or citations."""
    if not evidence or not cited:
        return None
    return sum(has_evidence(t, evidence) for t in cited) / len(cited)


def citation_recall(packed: dict[int, str], cited: set[int], evidence: list[str]) -> float | None:
    """Share of the packed passages holding evidence that were cited; None when no packed passage holds any."""
    holding = [n for n, t in packed.items() if has_evidence(t, evidence)] if evidence else []
    if not holding:
        return None
    return sum(n in cited for n in holding) / len(holding)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between ranks (numpy's default method)."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# --- scoring one question and summarising --------------------------------------------------------

def score(q: Question, retrieval: dict, answer: dict, latency_ms: float) -> dict:
    """One question's metrics from the two raw responses (dry run with ``retrieved``, then the answer)."""
    ranked = [p["text"] for p in retrieval.get("retrieved", [])]
    packed = {p["n"]: p["text"] for p in answer.get("passages", [])}
    cited = [c["n"] for c in answer.get("citations", [])]
    answerable = q.kind not in KINDS_NO_ANSWER
    row = {
        "id": q.id, "source": q.source, "kind": q.kind, "question": q.question,
        "mode": answer.get("mode"), "mode_reason": answer.get("mode_reason"),
        "answered": bool(answer.get("answered")), "answer": answer.get("answer", ""),
        **{f"recall@{k}": recall_at_k(ranked, q.evidence, k) for k in KS},
        "rr": reciprocal_rank(ranked, q.evidence),
        "packed_recall": packed_recall(list(packed.values()), q.evidence),
        "answer_match": answer_match(answer.get("answer", ""), q.answers) if answerable else None,
        "citation_precision": citation_precision([packed[n] for n in cited if n in packed], q.evidence),
        "citation_recall": citation_recall(packed, set(cited), q.evidence),
        "citations": len(cited),
        "inferred_citations": sum(bool(c.get("inferred")) for c in answer.get("citations", [])),
        "abstained": not answer.get("answered", False),
        "unanswered_reason": answer.get("unanswered_reason"),
        "latency_ms": round(latency_ms, 1),
        "server_total_ms": (answer.get("timings") or {}).get("total_ms"),
        "prompt_tokens": (answer.get("usage") or {}).get("prompt_tokens", 0),
        "completion_tokens": (answer.get("usage") or {}).get("completion_tokens", 0),
    }
    return row


def summarize(rows: list[dict]) -> dict:
    """Averages over the questions where each metric is defined (``n_*`` says over how many)."""
    ok = [r for r in rows if not r.get("error")]
    answerable = [r for r in ok if r["kind"] not in KINDS_NO_ANSWER]
    unanswerable = [r for r in ok if r["kind"] in KINDS_NO_ANSWER]
    with_evidence = [r for r in ok if r["rr"] is not None]
    out: dict = {"questions": len(rows), "errors": len(rows) - len(ok)}
    for k in KS:
        out[f"recall@{k}"] = mean(r[f"recall@{k}"] for r in with_evidence)
    out["mrr"] = mean(r["rr"] for r in with_evidence)
    out["packed_recall"] = mean(r["packed_recall"] for r in with_evidence)
    out["n_evidence"] = len(with_evidence)
    out["answer_match"] = mean(r["answer_match"] for r in answerable)
    out["n_answerable"] = len(answerable)
    precisions = [r["citation_precision"] for r in ok if r["citation_precision"] is not None]
    recalls = [r["citation_recall"] for r in ok if r["citation_recall"] is not None]
    out["citation_precision"], out["n_citation_precision"] = mean(precisions), len(precisions)
    out["citation_recall"], out["n_citation_recall"] = mean(recalls), len(recalls)
    out["abstention_rate"] = mean(r["abstained"] for r in answerable)
    out["abstention_rate_unanswerable"] = mean(r["abstained"] for r in unanswerable)
    out["n_unanswerable"] = len(unanswerable)
    # The answerability goals (issue 19): flag >= 80% of the unanswerable, wrongly flag <= 5% of the rest.
    out["unanswerable_flagged"] = out["abstention_rate_unanswerable"]
    out["answerable_flagged"] = out["abstention_rate"]
    out["unanswered_reasons"] = {
        kind: dict(sorted(Counter(r.get("unanswered_reason") or "unknown" for r in sel if r["abstained"]).items()))
        for kind, sel in (("answerable", answerable), ("unanswerable", unanswerable))}
    out["modes"] = {m: sum(r["mode"] == m for r in ok) for m in ("off", "on")}
    out["by_mode"] = {}
    for m in ("off", "on"):
        sel = [r for r in ok if r["mode"] == m]
        if not sel:
            continue
        generated = [r for r in sel if r["answered"]]  # refusals never reach the model: not in latency
        lat = [r["latency_ms"] for r in generated]
        out["by_mode"][m] = {
            "questions": len(sel), "answered": len(generated),
            "latency_p50_ms": percentile(lat, 50), "latency_p99_ms": percentile(lat, 99),
            "prompt_tokens_mean": mean(r["prompt_tokens"] for r in generated),
            "completion_tokens_mean": mean(r["completion_tokens"] for r in generated),
            "completion_tokens_total": sum(r["completion_tokens"] for r in sel),
        }
    return out


# --- talking to the service ----------------------------------------------------------------------

class EvalError(RuntimeError):
    """The run cannot go on (service unreachable, unknown collection, ...); the message says why."""


class HttpService:
    """A running ``ragsvc serve`` (or the same API behind a proxy) over HTTP."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 1800) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.where = url

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        import httpx

        for attempt in range(6):
            try:
                resp = self.client.request(method, path, json=body)
            except httpx.TransportError as exc:
                raise EvalError(f"cannot reach ragsvc at {self.where}: {exc}; is `ragsvc serve` running?") from exc
            if resp.status_code != 429 or attempt == 5:
                break
            # Rate limited (per API key): wait as told, then ask again; the latency is measured per call.
            time.sleep(min(float(resp.headers.get("retry-after") or 5), 60))
        try:
            data = resp.json()
        except ValueError:
            data = {"detail": resp.text[:500]}
        return resp.status_code, data

    def close(self) -> None:
        self.client.close()


class InProcessService(HttpService):
    """The real app (``create_app(settings)``) in this process, driven through Litestar's TestClient."""

    def __init__(self, settings, api_key: str | None = None,  # noqa: ANN001 - Settings
                 ready_timeout: float = 1800) -> None:
        from litestar.testing import TestClient

        from ragsvc.app import create_app
        from ragsvc.db.migrate import upgrade

        if settings.auto_migrate:
            upgrade(settings.resolved_database_url)
        self._cm = TestClient(create_app(settings), timeout=1800)
        self.client = self._cm.__enter__()  # runs the lifespan: embedder, index store, engine load
        if api_key:
            self.client.headers["Authorization"] = f"Bearer {api_key}"
        self.where = "the in-process service"
        deadline = time.monotonic() + ready_timeout
        while True:  # the engine loads in the background; /ready says when it is there
            status, body = self.request("GET", "/ready")
            if status == 200:
                break
            if time.monotonic() > deadline:
                self.close()
                raise EvalError(f"the in-process service was not ready after {ready_timeout:.0f}s: {body}")
            time.sleep(1)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


# --- the run -------------------------------------------------------------------------------------

def _ask_one(service: HttpService, q: Question, collection: str, mode: str,
             max_tokens: int | None) -> tuple[dict, dict]:
    """The two calls for one question (dry run with the ranking, then the real ask) and its scored row."""
    ask = {"question": q.question, "mode": mode, "collection": collection}
    if max_tokens:  # caps output (and so changes packing's reserve): sent with both calls
        ask["max_tokens"] = max_tokens
    status, retrieval = service.request("POST", "/v1/ask", ask | {"dry_run": True, "top_k": max(KS),
                                                                  "include_retrieved": True})
    if status == 200 and "retrieved" not in retrieval:
        raise EvalError("the service's /v1/ask does not return \"retrieved\" (include_retrieved); "
                        "it is older than this ragsvc eval")
    if status == 200:
        t0 = time.perf_counter()
        status, answer = service.request("POST", "/v1/ask", ask)
        latency = (time.perf_counter() - t0) * 1000
    else:
        answer, latency = retrieval, 0.0
    if status != 200:
        row = {"id": q.id, "source": q.source, "kind": q.kind, "question": q.question,
               "error": f"HTTP {status}: {answer.get('detail', answer)}"}
    else:
        row = score(q, retrieval, answer, latency)
    return row, {"id": q.id, "question": asdict(q), "retrieval": retrieval, "answer": answer,
                 "latency_ms": round(latency, 1)}


def run_eval(service: HttpService, questions: list[Question], collection: str, mode: str = "auto",
             progress: Callable[[int, int, dict], None] | None = None, max_tokens: int | None = None) -> dict:
    """Ask every question; return ``{"summary", "by_kind", "by_source", "questions", "responses"}``."""
    status, body = service.request("GET", f"/v1/collections/{collection}")
    if status != 200:
        raise EvalError(f"collection {collection!r}: {body.get('detail', body)} (HTTP {status})")
    rows, responses = [], []
    stopped = False
    for i, q in enumerate(questions, 1):
        try:
            row, response = _ask_one(service, q, collection, mode, max_tokens)
        except KeyboardInterrupt:  # Ctrl-C: stop asking and report the questions done so far
            stopped = True
            break
        rows.append(row)
        responses.append(response)
        if progress:
            progress(i, len(questions), row)
    if not rows:
        raise EvalError("stopped before any question was answered")
    groups = lambda key: {v: summarize([r for r in rows if r[key] == v])  # noqa: E731
                          for v in sorted({r[key] for r in rows})}
    model = next((r["answer"].get("model") for r in responses if isinstance(r["answer"], dict)
                  and r["answer"].get("model")), None)
    return {
        "meta": {"collection": collection, "mode": mode, "model": model, "service": service.where,
                 "max_tokens": max_tokens, "questions_total": len(questions), "interrupted": stopped,
                 "ks": list(KS), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "summary": summarize(rows), "by_kind": groups("kind"), "by_source": groups("source"),
        "questions": rows, "responses": responses,
    }


# --- reports -------------------------------------------------------------------------------------

def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{v:.0%}" if pct else f"{v:,.0f}"


QUALITY = [("recall@1", "Recall@1"), ("recall@5", "Recall@5"), ("recall@10", "Recall@10"), ("mrr", "MRR"),
           ("packed_recall", "Packed recall"), ("answer_match", "Answer match"),
           ("citation_precision", "Citation precision"), ("citation_recall", "Citation recall"),
           ("abstention_rate", "Answerable wrongly flagged (goal ≤ 5%)"),
           ("abstention_rate_unanswerable", "Unanswerable flagged (goal ≥ 80%)")]


def _sec(ms: float | None) -> str:
    return "–" if ms is None else f"{ms / 1000:.1f} s"


def markdown(report: dict) -> str:
    meta = report["meta"]
    groups = [("all", report["summary"])] + list(report["by_kind"].items()) + (
        list(report["by_source"].items()) if len(report["by_source"]) > 1 else [])
    lines = [f"Model `{meta['model']}`, collection `{meta['collection']}`, mode `{meta['mode']}`, "
             f"{report['summary']['questions']} questions ({meta['date']})"
             + (f"; stopped early: {report['summary']['questions']} of {meta['questions_total']} asked." if
                meta.get("interrupted") else "."), "",
             "| Metric | " + " | ".join(name for name, _ in groups) + " |",
             "|---|" + "---:|" * len(groups)]
    lines.append("| Questions | " + " | ".join(str(g["questions"]) for _, g in groups) + " |")
    for key, label in QUALITY:
        if key == "mrr":
            cells = ["–" if g[key] is None else f"{g[key]:.2f}" for _, g in groups]
        else:
            cells = [_fmt(g[key]) for _, g in groups]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| Mode chosen (off / on) | " + " | ".join(
        f"{g['modes']['off']} / {g['modes']['on']}" for _, g in groups) + " |")
    if report["summary"]["errors"]:
        lines.append("| Errors | " + " | ".join(str(g["errors"]) for _, g in groups) + " |")
    reasons = report["summary"].get("unanswered_reasons") or {}
    if any(reasons.values()):
        lines += ["", "Why questions were not answered (`unanswered_reason`): " + "; ".join(
            f"{kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for kind, counts in reasons.items() if counts)
            + "."]
    lines += ["", "Latency and tokens per mode chosen, over the answers the model generated (refusals take no model "
              "call and are left out):", "",
              "| Mode | Questions | Generated | Latency p50 | Latency p99 | Prompt tokens (mean) | "
              "Completion tokens (mean) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, s in report["summary"]["by_mode"].items():
        lines.append(f"| {m} | {s['questions']} | {s['answered']} | {_sec(s['latency_p50_ms'])} | "
                     f"{_sec(s['latency_p99_ms'])} | {_fmt(s['prompt_tokens_mean'], False)} | "
                     f"{_fmt(s['completion_tokens_mean'], False)} |")
    return "\n".join(lines) + "\n"


def charts(report: dict, prefix: Path) -> list[Path]:
    """Two PNGs: quality metrics by question kind, and latency per mode."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    meta = report["meta"]
    title = f"{meta['model']} · mode {meta['mode']} · {report['summary']['questions']} questions"
    groups = [("all", report["summary"])] + list(report["by_kind"].items())
    metrics = QUALITY
    fig, ax = plt.subplots(figsize=(12, 4.8))
    width = 0.8 / len(groups)
    for gi, (name, g) in enumerate(groups):
        # Metrics undefined for a group (no evidence, no unanswerable questions, ...) get no bar, not a 0.
        cells = [(i + gi * width, g[k]) for i, (k, _) in enumerate(metrics) if g[k] is not None]
        bars = ax.bar([x for x, _ in cells], [v for _, v in cells], width, label=f"{name} ({g['questions']})")
        ax.bar_label(bars, labels=[f"{v:.2f}" for _, v in cells], fontsize=6, rotation=90, padding=2)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(metrics))])
    ax.set_xticklabels([lab for _, lab in metrics], rotation=25, ha="right")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share (MRR: mean 1/rank)")
    ax.set_title(f"Answer quality · {title}")
    ax.legend(title="question kind", fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    quality = prefix.with_name(prefix.name + "_quality.png")
    fig.savefig(quality, dpi=110)
    plt.close(fig)

    by_mode = report["summary"]["by_mode"]
    fig, ax = plt.subplots(figsize=(6, 4))
    modes = list(by_mode)
    xs = range(len(modes))
    ax.bar([x - 0.2 for x in xs], [(by_mode[m]["latency_p50_ms"] or 0) / 1000 for m in modes], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [(by_mode[m]["latency_p99_ms"] or 0) / 1000 for m in modes], 0.4, label="p99")
    ax.set_xticks(list(xs))
    ax.set_xlim(-0.7, len(modes) - 0.3)
    ax.set_xticklabels([f"{m} ({by_mode[m]['answered']} answers, "
                        f"{_fmt(by_mode[m]['completion_tokens_mean'], False)} tok)" for m in modes])
    ax.set_ylabel("seconds per answer")
    ax.set_title(f"Latency by mode chosen\n{title}", fontsize=9)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    latency = prefix.with_name(prefix.name + "_latency.png")
    fig.savefig(latency, dpi=110)
    plt.close(fig)
    return [quality, latency]


def write_reports(report: dict, out_dir: str | Path, name: str | None = None) -> list[Path]:
    """``<name>.json`` (summary and per-question rows), ``<name>_responses.jsonl`` (raw responses),
    ``<name>.md`` and the PNG charts; ``name`` defaults to ``eval_<mode>``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / (name or f"eval_{report['meta']['mode']}")
    paths = [prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + "_responses.jsonl"),
             prefix.with_name(prefix.name + ".md")]
    summary = {k: v for k, v in report.items() if k != "responses"}
    paths[0].write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    paths[1].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in report["responses"]))
    paths[2].write_text(markdown(report))
    return paths + charts(report, prefix)


def command(settings, paths: list[str], collection: str, mode: str, out: str, url: str, api_key: str,  # noqa: ANN001
            in_process: bool, limit: int | None, name: str | None, max_tokens: int | None = None) -> int:
    """What ``ragsvc eval`` does: load, run, write the reports, print the Markdown table."""
    import sys

    try:
        questions = [q for p in paths for q in load_questions(p)][:limit]
    except QuestionFileError as exc:
        print(f"ragsvc eval: {exc}", file=sys.stderr)
        return 2

    def progress(i: int, n: int, row: dict) -> None:
        if row.get("error"):
            print(f"[{i}/{n}] {row['id']}: {row['error']}", file=sys.stderr)
        else:
            print(f"[{i}/{n}] {row['id']}: mode {row['mode']}, recall@5 {_fmt(row['recall@5'])}, "
                  f"match {row['answer_match']}, {row['latency_ms'] / 1000:.1f} s", file=sys.stderr)

    try:
        service = InProcessService(settings, api_key) if in_process else HttpService(url, api_key)
        try:
            report = run_eval(service, questions, collection, mode, progress, max_tokens)
        finally:
            service.close()
    except EvalError as exc:
        print(f"ragsvc eval: {exc}", file=sys.stderr)
        return 1
    for path in write_reports(report, out, name):
        print(f"wrote {path}", file=sys.stderr)
    print(markdown(report))
    return 0 if not report["summary"]["errors"] else 3
