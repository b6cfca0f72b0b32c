"""Difficulty judges, specialty labelers, the ask-until-parsed loop and the annotation cache."""

import dataclasses

import pandas as pd
import pytest
import yaml

from meds1.config.compose import CONF_DIR, compose
from meds1.config.rules import validate
from meds1.config.schema import InferenceConfig, JudgeConfig, LLMConfig, ModelConfig, SpecialtyConfig
from meds1.curation.cache import AnnotationCache, annotate
from meds1.curation.difficulty import judge_rows, match_verdict, parse_verdict
from meds1.curation.llm import ask, load_model
from meds1.curation.specialty import (
    column_labels,
    label_with_llm,
    labels_spec,
    load_taxonomy,
    numbered,
    parse_specialty,
)
from meds1.errors import UserError
from meds1.inference import Generation

_PRESET = yaml.safe_load((CONF_DIR / "curation/specialty/meds1.yaml").read_text())
MEDS1 = SpecialtyConfig(**{**_PRESET, "llm": LLMConfig(**_PRESET["llm"])})  # curation/specialty=meds1
TAXONOMY = load_taxonomy(MEDS1.taxonomy)  # meds1's 139 names
MED_S1 = SpecialtyConfig()  # the default: med-s1's labeler
MED_S1_TAXONOMY = load_taxonomy(MED_S1.taxonomy)


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Yes.", "correct"),
        ("yes", "correct"),
        ("They mean the same thing.\n\n**Yes**", "correct"),
        ("Final answer: YES!", "correct"),
        ("No.", "incorrect"),
        ("The model names a different drug. No", "incorrect"),
        ("Yes, they match.", None),  # the final word decides: "match" is neither
        ("Yes\n\nThe answers are equivalent because ...", None),
        ("", None),
        ("Maybe", None),
    ],
)
def test_judge_verdict_is_the_final_yes_or_no(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize(
    ("answer", "reference", "verdict"),
    [
        ("Thinking it over... The answer is C.", "Explained at length. The answer is C.", "correct"),
        ("The answer is (B) because ...", "The answer is C.", "incorrect"),
        ("This is most likely parvovirus B19 infection.", "Parvovirus B19 infection", "correct"),
        ("First idea.\n\nI think it is an iron deficiency.", "Parvovirus B19 infection", "incorrect"),
        ("Answer: Parvovirus B19", "Parvovirus B19 infection", "incorrect"),  # "infection" is missing
        ("   ", "Parvovirus B19 infection", "unparseable"),
        ("Something", "...", "unparseable"),
        ("The answer is Amoxicillin.", "Answer: amoxicillin", "correct"),  # a word, not the option letter A
    ],
)
def test_match_judge(answer, reference, verdict):
    assert match_verdict(answer, reference) == verdict


def judged_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Question": ["q1", "q2", "q3"],
            "Response": ["The answer is A.", "The answer is B.", "The answer is C."],
            "base_answer": ["The answer is A.", "The answer is D.", ""],
            "base_answer_error": [None, None, "HTTP 500"],
        },
        index=pd.Index([10, 11, 12], name="row_id"),
    )


def test_match_judge_rows_record_each_verdict():
    out = judge_rows(judged_rows(), JudgeConfig(method="match"), None, seed=0)
    assert out["row_id"].tolist() == [10, 11, 12]
    assert out["verdict"].tolist() == ["correct", "incorrect", "no_answer"]


class ScriptedBackend:
    """Replies from a script, one list per generate() call: the real server cannot be made to reply
    "Yes." or "SPECIALTY: 030" on cue, and these tests are about what happens when it does."""

    def __init__(self, *rounds: list[str]):
        self.rounds = list(rounds)
        self.calls: list[list] = []

    def generate(self, conversations, sampling):
        self.calls.append(conversations)
        return [
            Generation("", 0, 0, error="HTTP 503") if text is None else Generation(text, 1, 1)
            for text in self.rounds.pop(0)
        ]


def test_ask_retries_unparseable_replies_with_a_correction():
    backend = ScriptedBackend(["Yes.", "I am not sure", None], ["Still unsure"], ["No"])
    replies = ask(
        backend,
        [[{"role": "user", "content": f"q{i}"}] for i in range(3)],
        parse_verdict,
        "Yes or No?",
        LLMConfig(attempts=3),
        seed=0,
    )
    assert [(r.value, r.status, r.attempts) for r in replies] == [
        ("correct", "ok", 1),
        ("incorrect", "ok", 3),
        (None, "failed", 1),
    ]
    assert replies[2].text == "HTTP 503"
    retried = backend.calls[1][0]
    assert [m["role"] for m in retried] == ["user", "assistant", "user"]
    assert retried[1]["content"] == "I am not sure" and retried[2]["content"] == "Yes or No?"


def test_ask_gives_up_after_the_last_attempt():
    backend = ScriptedBackend(["hmm"], ["hmm"])
    (reply,) = ask(
        backend, [[{"role": "user", "content": "q"}]], parse_verdict, "?", LLMConfig(attempts=2), seed=0
    )
    assert (reply.value, reply.status, reply.attempts, reply.text) == (None, "unparseable", 2, "hmm")


def test_llm_judge_rows_map_replies_to_verdicts():
    backend = ScriptedBackend(["Equivalent. Yes.", "Different drug. No"])
    judge = JudgeConfig(method="llm", llm=LLMConfig(attempts=1))
    out = judge_rows(judged_rows(), judge, lambda: backend, seed=0)
    assert out["verdict"].tolist() == ["correct", "incorrect", "no_answer"]
    assert len(backend.calls[0]) == 2  # the row without a base answer is not sent to the judge
    assert "Correct Answer: The answer is A." in backend.calls[0][0][0]["content"]


def test_med_s1_taxonomy_is_med_s1s_list_of_147():
    assert len(MED_S1_TAXONOMY) == len(set(MED_S1_TAXONOMY)) == 147
    assert MED_S1_TAXONOMY[:2] == ["Allergy and Immunology", "Anesthesiology"]
    assert MED_S1_TAXONOMY[-3:] == ["Religion", "General Knowledge", "Astronomy"]  # its non-medical buckets
    # the prompt's worked example ("Cardiology (Cardiovascular Disease)", SPECIALTY: 030) points into it
    assert "SPECIALTY: 030" in MED_S1.prompt and MED_S1_TAXONOMY[29] == "Cardiovascular Disease"


def test_med_s1_prompt_lists_the_taxonomy_after_the_question():
    text = MED_S1.prompt.format(
        question="Chest pain and ST elevation.", specialties=numbered(MED_S1_TAXONOMY)
    )
    assert text.startswith("You are a medical education expert tasked with classifying questions")
    assert "\n\nQuestion: Chest pain and ST elevation.\n\nGiven a medical question" in text
    assert "Available Specialties:\n001. Allergy and Immunology\n002. Anesthesiology\n" in text
    assert "\n147. Astronomy\n\nInstructions:" in text and text.endswith("SPECIALTY: 030\n\nYour response:\n")
    assert (MED_S1.llm.temperature, MED_S1.llm.max_new_tokens, MED_S1.llm.attempts) == (0.1, 500, 3)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Cardiology manages this.\nSPECIALTY: 030", 29),
        ("SPECIALTY: 030 because the heart is involved", 29),  # med-s1: anywhere in the reply
        ("SPECIALTY:147", 146),
        ("Not 012. SPECIALTY: 045, or rather SPECIALTY: 030", 44),  # the first match decides
        ("SPECIALTY: 148", None),  # not in the list
        ("SPECIALTY: 999 then SPECIALTY: 030", None),  # the first match is out of range: med-s1 gives up too
        ("SPECIALTY: 30", None),
        ("Cardiovascular Disease", None),
    ],
)
def test_med_s1_reply_parsing(reply, expected):
    found = parse_specialty(reply, MED_S1_TAXONOMY, MED_S1.code_pattern)
    assert found == (None if expected is None else MED_S1_TAXONOMY[expected])


def test_med_s1_labeler_asks_the_same_prompt_again():
    backend = ScriptedBackend(["Cardiology. SPECIALTY: 030", "no idea", ""], ["SPECIALTY: 147", "??"], ["??"])
    questions = pd.Series(["chest pain", "stars", "???"], index=pd.Index([5, 6, 7], name="row_id"))
    out = label_with_llm(questions, MED_S1_TAXONOMY, MED_S1, backend, seed=0)
    assert out["specialty"].tolist() == ["Cardiovascular Disease", "Astronomy", "Unlabeled"]
    assert out["specialty_status"].tolist() == ["labeled", "labeled", "unparseable"]
    first = backend.calls[0][1]
    assert backend.calls[1][0] == first and len(first) == 1  # no correction turn: the prompt, afresh
    assert backend.calls[2] == [backend.calls[0][2]]
    assert "Question: stars" in first[0]["content"]


def test_label_cache_key_changes_with_prompt_taxonomy_and_parsing(make_config):
    cfg = make_config("experiment=med-s1-1k")
    key = labels_spec(cfg, MED_S1_TAXONOMY, "src")
    assert labels_spec(cfg, MED_S1_TAXONOMY, "src") == key
    assert labels_spec(cfg, TAXONOMY, "src") != key
    meds1 = make_config("experiment=med-s1-1k", "curation/specialty=meds1")
    assert labels_spec(meds1, MED_S1_TAXONOMY, "src") != key  # prompt, pattern, correction, sampling
    for override in (
        "curation.specialty.code_pattern='SPECIALTY (\\d+)'",
        "curation.specialty.correction=again",
        "curation.specialty.llm.temperature=0.5",
    ):
        assert labels_spec(make_config("experiment=med-s1-1k", override), MED_S1_TAXONOMY, "src") != key
    unlabeled_kept = make_config("experiment=med-s1-1k", "curation.specialty.unlabeled=domain")
    assert labels_spec(unlabeled_kept, MED_S1_TAXONOMY, "src") == key  # labels are the same either way


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"code_pattern": "SPECIALTY: ("}, "curation.specialty.code_pattern is not a regular expression"),
        ({"code_pattern": "SPECIALTY: \\d+"}, "has 0 groups; it needs one"),
    ],
)
def test_bad_labeler_settings(change, message):
    config = compose(["experiment=med-s1-1k"])
    config.curation.specialty = dataclasses.replace(config.curation.specialty, **change)
    with pytest.raises(UserError, match=message):
        validate(config)


def test_meds1_taxonomy_is_unique_and_numbered():
    assert len(TAXONOMY) == len(set(TAXONOMY)) == 139
    assert {"Cardiovascular Disease", "Dentistry", "Pharmacology", "Non-Medical"} <= set(TAXONOMY)
    listing = numbered(TAXONOMY).splitlines()
    assert listing[0] == "001. Allergy and Immunology" and listing[-1] == f"139. {TAXONOMY[-1]}"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Cardiology manages this.\nSPECIALTY: 030", 29),
        ("SPECIALTY: 030.", 29),
        ("**SPECIALTY: 001**", 0),
        ("SPECIALTY:139", 138),
        ("SPECIALTY: 30", None),  # three digits, strictly
        ("SPECIALTY: 140", None),  # not in the list
        ("SPECIALTY: 000", None),
        ("SPECIALTY: 030 because the heart is involved", None),  # must end the reply
        ("Cardiovascular Disease", None),
    ],
)
def test_meds1_specialty_code_parsing_is_strict(reply, expected):
    found = parse_specialty(reply, TAXONOMY, MEDS1.code_pattern)
    assert found == (None if expected is None else TAXONOMY[expected])


def test_meds1_labeler_retries_with_a_correction_then_records_unlabeled():
    backend = ScriptedBackend(
        ["SPECIALTY: 030", "Cardiology", "SPECIALTY: 999"], ["SPECIALTY: 012", "no idea"]
    )
    questions = pd.Series(["chest pain", "rash", "???"], index=pd.Index([5, 6, 7], name="row_id"))
    meds1 = dataclasses.replace(MEDS1, llm=dataclasses.replace(MEDS1.llm, attempts=2))
    out = label_with_llm(questions, TAXONOMY, meds1, backend, seed=0)
    assert out["row_id"].tolist() == [5, 6, 7]
    assert out["specialty"].tolist() == [TAXONOMY[29], TAXONOMY[11], "Unlabeled"]
    assert out["specialty_status"].tolist() == ["labeled", "labeled", "unparseable"]
    assert "001. Allergy and Immunology" in backend.calls[0][0][0]["content"]
    retried = backend.calls[1][0]
    assert [m["role"] for m in retried] == ["user", "assistant", "user"]
    assert retried[2]["content"] == MEDS1.correction


def test_column_labels(tmp_path):
    frame = pd.DataFrame({"hint": ["Neurology", None, "  "]}, index=[3, 4, 5])
    out = column_labels(frame, "hint")
    assert out["specialty"].tolist() == ["Neurology", "Unlabeled", "Unlabeled"]
    assert out["specialty_status"].tolist() == ["labeled", "missing", "missing"]
    with pytest.raises(
        UserError, match="curation.specialty.column 'specialty' is not a source column; valid: hint"
    ):
        column_labels(frame, "specialty")


def test_taxonomy_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_taxonomy(str(tmp_path / "none.txt"))
    (tmp_path / "dup.txt").write_text("A\nB\nA\n")
    with pytest.raises(UserError, match="repeats A"):
        load_taxonomy(str(tmp_path / "dup.txt"))
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(UserError, match="is empty"):
        load_taxonomy(str(tmp_path / "empty.txt"))


def test_cache_computes_only_missing_rows_and_survives_a_crash(tmp_path):
    spec = {"source": "abc", "model": "m"}
    calls = []

    def compute(ids, fail_on=None):
        calls.append(list(ids))
        if fail_on is not None and fail_on in ids:
            raise KeyboardInterrupt  # a crash in the middle of the run
        return pd.DataFrame({"row_id": ids, "value": [i * 10 for i in ids]})

    cache = AnnotationCache(tmp_path, "answers", spec)
    with pytest.raises(KeyboardInterrupt):
        annotate(cache, range(10), lambda ids: compute(ids, fail_on=7), chunk_rows=3, desc="test")
    assert len(cache.chunks()) == 2  # rows 0-5 were saved; the chunk with row 7 was lost
    calls.clear()
    frame, info = annotate(AnnotationCache(tmp_path, "answers", spec), range(10), compute, 3, "test")
    assert calls == [[6, 7, 8], [9]]
    assert info["reused"] == 6 and info["computed"] == 4
    assert frame["value"].tolist() == [i * 10 for i in range(10)]

    calls.clear()
    frame, info = annotate(AnnotationCache(tmp_path, "answers", spec), [9, 2, 4], compute, 3, "test")
    assert calls == [] and info == {"reused": 3, "computed": 0, "cache": str(cache.dir)}
    assert frame.index.tolist() == [9, 2, 4] and frame["value"].tolist() == [90, 20, 40]
    other = AnnotationCache(tmp_path, "answers", {**spec, "model": "other"})
    assert other.dir != cache.dir and other.load().empty


def openai_llm(openai_server, **overrides) -> LLMConfig:
    base_url, model, _ = openai_server
    inference = InferenceConfig(
        backend="openai",
        base_url=base_url,
        served_model=model,
        max_retries=1,
        timeout_s=60,
    )
    return LLMConfig(
        model=ModelConfig(name="tiny", path=model), inference=inference, max_new_tokens=8, **overrides
    )


@pytest.mark.slow
def test_llm_judge_and_labeler_through_a_real_openai_server(openai_server, tmp_path):
    """The tiny model's replies are noise: verdicts and labels are retried, then recorded as unparseable."""
    llm = openai_llm(openai_server, attempts=2)
    backend = load_model(llm.model, llm.inference, str(tmp_path))
    conversations = [[{"role": "user", "content": f"Is {x} the same as {x}? Yes or No."}] for x in ("A", "B")]
    for reply in ask(backend, conversations, parse_verdict, "Reply Yes or No.", llm, seed=0):
        assert reply.text and reply.status != "failed"  # the server's last reply is kept, for inspection
        if reply.status == "unparseable":
            assert reply.value is None and reply.attempts == 2  # asked again with a correction, then given up
        else:  # a reply whose final word is Yes or No, on the first or the corrected attempt
            assert reply.value in ("correct", "incorrect") and reply.attempts in (1, 2)

    rows = judged_rows()
    verdicts = judge_rows(rows, JudgeConfig(method="llm", llm=llm), lambda: backend, seed=0)
    assert verdicts["verdict"].tolist()[2] == "no_answer"
    for verdict, reply in zip(verdicts["verdict"][:2], verdicts["judge_reply"][:2], strict=True):
        assert verdict == (parse_verdict(reply) or "unparseable")  # recorded as parsed, never assumed "hard"
        assert isinstance(reply, str)

    questions = pd.Series(
        ["A child with a barking cough.", "Which nerve supplies the deltoid?"], index=[1, 2]
    )
    labels = label_with_llm(questions, MED_S1_TAXONOMY, SpecialtyConfig(llm=llm), backend, seed=0)
    for label, status, reply in zip(
        labels["specialty"], labels["specialty_status"], labels["specialty_reply"], strict=True
    ):
        parsed = parse_specialty(reply, MED_S1_TAXONOMY, MED_S1.code_pattern)
        assert (label, status) == (parsed, "labeled") or (label, status) == (
            "Unlabeled",
            "unparseable",
        )


def closed_port_llm(attempts: int = 2) -> LLMConfig:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inference = InferenceConfig(
        backend="openai",
        base_url=f"http://127.0.0.1:{port}/v1",
        max_retries=1,
        timeout_s=5,
    )
    return LLMConfig(inference=inference, attempts=attempts)


def test_unreachable_judge_is_recorded_as_failed(tmp_path):
    llm = closed_port_llm()
    backend = load_model(llm.model, llm.inference, str(tmp_path))
    verdicts = judge_rows(judged_rows(), JudgeConfig(method="llm", llm=llm), lambda: backend, 0)
    assert verdicts["verdict"].tolist() == ["failed", "failed", "no_answer"]
    assert "failed after 2 attempts" in verdicts["judge_reply"][0]


def test_a_judge_that_fails_every_request_stops_the_run(tmp_path):
    llm = closed_port_llm()
    backend = load_model(llm.model, llm.inference, str(tmp_path))
    rows = pd.DataFrame(
        {
            "Question": ["q"] * 10,
            "Response": ["r"] * 10,
            "base_answer": ["a"] * 10,
            "base_answer_error": [None] * 10,
        }
    )
    with pytest.raises(
        UserError, match="all 10 requests to the judge failed, e.g. failed after 2 attempts.*api_key"
    ):
        judge_rows(rows, JudgeConfig(method="llm", llm=llm), lambda: backend, 0)


def test_failed_annotations_are_computed_again_by_the_next_run(tmp_path):
    cache = AnnotationCache(tmp_path, "verdicts", {"k": 1})
    cache.write_chunk(pd.DataFrame({"row_id": [0, 1, 2], "verdict": ["correct", "failed", "incorrect"]}))
    computed = []

    def compute(ids):
        computed.extend(ids)
        return pd.DataFrame({"row_id": ids, "verdict": ["incorrect"] * len(ids)})

    frame, info = annotate(cache, [0, 1, 2], compute, 10, "test", final=lambda c: c["verdict"] != "failed")
    assert computed == [1] and (info["reused"], info["computed"]) == (2, 1)
    assert frame["verdict"].tolist() == ["correct", "incorrect", "incorrect"]
