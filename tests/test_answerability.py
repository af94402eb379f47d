"""The answerability decision (ragsvc/answerability.py) on hand-made inputs: signals, the model's own
refusal in its many phrasings, and how the two stages combine. The HTTP test on the real engine is in
tests/test_ask_e2e.py."""

from __future__ import annotations

import pytest

from ragsvc import answerability as a
from ragsvc.citations import CheckedSentence, SentenceCitation

PORTS = ("Network services listen on TCP ports; the file /etc/services maps port numbers to service names. "
         "CUPS, the printing system, listens on port 631.")


def test_question_terms_keep_the_subject_not_the_question_words():
    assert a.question_terms("Which TCP port does the Prometheus node exporter listen on by default?") == {
        "tcp", "port", "prometheus", "node", "exporter", "listen"}
    assert a.question_terms("How many?") == set()


def test_coverage_counts_the_question_terms_the_top_passages_hold():
    s = a.retrieval_signals("Which port does the CUPS printing system listen on?", [0.6, 0.5, 0.1], [PORTS])
    assert s.coverage_top == 1.0 and s.coverage_best == 1.0 and s.missing == ()
    assert s.best_dense == 0.6 and s.margin == pytest.approx(0.1)  # reported, not a feature

    s = a.retrieval_signals("Which TCP port does the Prometheus node exporter listen on by default?",
                            [0.6, 0.55], [PORTS, "Unrelated text about node names."])
    assert s.missing == ("exporter", "prometheus")
    assert s.coverage_top == pytest.approx(4 / 6)  # tcp, port, node, listen
    assert s.coverage_best == pytest.approx(3 / 6)  # the ports passage alone: tcp, port, listen


def test_terms_the_collection_never_uses_are_counted_apart():
    q = "Which TCP port does the Prometheus node exporter listen on by default?"
    s = a.retrieval_signals(q, [0.6], [PORTS], known={"tcp", "port", "listen", "node"})
    assert s.unknown == pytest.approx(2 / 6)  # prometheus, exporter: nowhere in the collection
    assert a.retrieval_signals(q, [0.6], [PORTS]).unknown == 0.0  # no keyword index: no evidence either way


def test_only_the_top_passages_count_for_coverage():
    later = ["filler"] * a.TOP_PASSAGES + ["prometheus exporter"]
    s = a.retrieval_signals("prometheus exporter", [0.5] * len(later), later)
    assert s.coverage_top == 0.0


def test_no_passages_and_stopword_questions_do_not_crash():
    s = a.retrieval_signals("What is the port?", [], [])
    assert (s.best_dense, s.coverage_top, s.coverage_best) == (0.0, 0.0, 0.0)
    assert a.retrieval_signals("what is it?", [0.4], ["x"]).coverage_top == 1.0  # nothing to miss


def test_probability_rises_with_every_signal():
    base = a.RetrievalSignals(0.5, 0.05, 0.5, 0.5, 0.2, ())
    p = a.covered_probability(base)
    for better in (a.RetrievalSignals(0.7, 0.05, 0.5, 0.5, 0.2, ()), a.RetrievalSignals(0.5, 0.05, 1.0, 0.5, 0.2, ()),
                   a.RetrievalSignals(0.5, 0.05, 0.5, 1.0, 0.2, ()), a.RetrievalSignals(0.5, 0.05, 0.5, 0.5, 0.0, ())):
        assert a.covered_probability(better) > p


def test_stage_one_flags_a_near_topic_question_whose_subject_is_absent():
    v = a.before_generation("Which TCP port does the Prometheus node exporter listen on by default?",
                            [0.45, 0.44], ["Daemons and their ports.", "Listen sockets of node services."])
    assert not v.answered and v.reason == a.NOT_COVERED
    assert "prometheus" in v.json()["missing"]
    ok = a.before_generation("Which port does the CUPS printing system listen on?", [0.7, 0.5], [PORTS])
    assert ok.answered and ok.reason is None and ok.covered > a.THRESHOLD


@pytest.mark.parametrize("text", [
    "The provided documents do not contain information about the Prometheus exporter.",
    "There is no information about this in the passages.",
    "The port is not mentioned in the text.",
    "I don't know.",
    "I’m sorry, but I can’t find that in the documents.",
    "None of the passages says which port it uses.",
    "The context does not specify the default port.",
    "Based on the given sources, it is not possible to answer this question.",
])
def test_the_models_refusal_is_recognised_in_its_many_phrasings(text):
    assert a.declines(text)


@pytest.mark.parametrize("text", [
    "Run dpkg -L package to list the files a package installed.",
    "Do not run apt-get as root without need.",
    "The unstable distribution is called sid.",
    "No, the kernel is not rebuilt on upgrade.",
    "Seven Samurai was directed by Akira Kurosawa.",
])
def test_ordinary_answers_are_not_refusals(text):
    assert not a.declines(text)


def _sentence(text: str, supported: bool | None) -> CheckedSentence:
    cites = [] if supported is None else [SentenceCitation(1, 0.6 if supported else 0.2, False, supported)]
    return CheckedSentence(text, cites)


def _stage_two(*sentences: CheckedSentence) -> a.Verdict:
    first = a.before_generation("Which port does the CUPS printing system listen on?", [0.7, 0.5], [PORTS])
    return a.after_generation(first, sentences)


def test_a_supported_answer_stays_an_answer():
    v = _stage_two(_sentence("CUPS listens on TCP port 631 for printing.", True))
    assert v.answered and v.reason is None and v.answer == a.AnswerSignals(False, 1, 1)


def test_a_refusal_with_nothing_supported_is_a_non_answer():
    v = _stage_two(_sentence("The documents do not mention the exporter's port.", None))
    assert not v.answered and v.reason == a.MODEL_DECLINED


def test_a_refusal_beside_a_supported_claim_keeps_the_answer():
    v = _stage_two(_sentence("CUPS listens on TCP port 631 for printing.", True),
                   _sentence("The documents do not say whether this can be changed.", None))
    assert v.answered and v.answer.declined


def test_claims_no_passage_supports_make_a_non_answer():
    v = _stage_two(_sentence("The exporter listens on port 9100 by default.", False),
                   _sentence("Restart the service afterwards.", None))
    assert not v.answered and v.reason == a.UNSUPPORTED
    assert v.json()["claims"] == 2 and v.json()["supported_claims"] == 0


def test_an_answer_without_claims_is_left_alone():
    assert _stage_two(_sentence("Yes.", None)).answered
