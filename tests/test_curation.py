import numpy as np
import pandas as pd
import pytest

from meds1.config import FormatConfig, SourceConfig
from meds1.curation.formatting import to_messages
from meds1.curation.quality import quality_filter, token_lengths
from meds1.curation.sampling import select
from meds1.curation.source import fingerprint, load_source
from meds1.errors import UserError


class WordTokenizer:
    """One token per whitespace-separated word: makes exact token counts easy to craft."""

    def __call__(self, texts, add_special_tokens=False, return_attention_mask=False):
        return {"input_ids": [t.split() for t in texts]}


def rows(**columns) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    frame.insert(0, "row_id", range(len(frame)))
    return frame


def test_quality_filter_records_each_reason():
    frame = rows(
        Question=["q1", None, "  ", "q4", "q5"],
        Complex_CoT=["a b c", "x", "y", "", " ".join(["w"] * 1024)],
        Response=["r", "r", "r", "r", "r"],
    )
    out = quality_filter(frame, WordTokenizer(), [1024])
    assert out["filter_reason"].tolist() == [
        None,
        "missing_Question",
        "missing_Question",
        "missing_Complex_CoT",
        "cot_truncated",
    ]
    assert out["filter_status"].tolist() == ["kept", "removed", "removed", "removed", "removed"]
    assert out["cot_tokens"].tolist() == [3, 1, 1, 0, 1024]
    assert len(out) == len(frame)


def test_cot_lengths_exclude_special_tokens(tmp_path, model_cache):
    from meds1.config import ModelConfig
    from meds1.models import load_tokenizer

    tokenizer = load_tokenizer(ModelConfig(name="tiny", path="tiny", build="tiny"), str(model_cache))
    texts = ["The patient has a fever.", "", "Hemoglobin is low"] * 700
    lengths = token_lengths(texts, tokenizer, batch_size=256)
    expected = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[:3]]
    assert lengths[:3].tolist() == expected and len(lengths) == 2100
    assert len(tokenizer("The patient has a fever.")["input_ids"]) >= expected[0]


def pool(n: int, specialties: list[str], lengths=None) -> pd.DataFrame:
    lengths = lengths if lengths is not None else list(range(n))
    return pd.DataFrame(
        {"cot_tokens": lengths, "specialty": [specialties[i % len(specialties)] for i in range(n)]}
    )


@pytest.mark.parametrize("method", ["s1", "random", "all"])
@pytest.mark.parametrize("n", [0, 1, 7, 50, 500])
def test_exactly_min_n_pool_rows_distinct(method, n):
    frame = pool(120, ["a", "b", "c"])
    chosen = select(frame, method, n, seed=0, long_cot_tokens=100)
    expected = len(frame) if method == "all" else min(n, len(frame))
    assert len(chosen) == expected and len(set(chosen.tolist())) == expected


def test_s1_long_rows_never_exceed_n():
    frame = pool(300, ["a", "b"], lengths=[2000] * 300)  # every row is "long"
    assert len(select(frame, "s1", 10, seed=0, long_cot_tokens=1000)) == 10


def test_s1_takes_long_rows_first_then_prefers_long_cots():
    lengths = [5000, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    frame = pool(10, ["a"], lengths=lengths)
    chosen = select(frame, "s1", 3, seed=1, long_cot_tokens=1000)
    assert chosen[0] == 0
    counts = np.zeros(10)
    for seed in range(400):
        counts[select(frame, "s1", 2, seed=seed, long_cot_tokens=1000)[1]] += 1
    assert counts[9] > counts[8] > counts[7]  # 2^-rank: longest left most likely
    assert counts[9] / 400 == pytest.approx(0.5, abs=0.08)


def test_s1_is_deterministic_for_a_seed():
    frame = pool(200, ["a", "b", "c", "d"])
    a = select(frame, "s1", 50, seed=3, long_cot_tokens=190)
    assert a.tolist() == select(frame, "s1", 50, seed=3, long_cot_tokens=190).tolist()
    assert a.tolist() != select(frame, "s1", 50, seed=4, long_cot_tokens=190).tolist()


def test_s1_uniform_phase_balances_specialties():
    frame = pool(900, ["big"] * 8 + ["small"])  # "big" has 8x the rows
    chosen = select(frame, "s1", 60, seed=0, long_cot_tokens=10**9, uniform_fraction=1.0)
    share = (frame.iloc[chosen]["specialty"] == "small").mean()
    assert 0.35 < share < 0.65


def test_s1_weights_are_honoured():
    frame = pool(4000, ["a", "b"])
    chosen = select(
        frame,
        "s1",
        1000,
        seed=0,
        long_cot_tokens=10**9,
        uniform_fraction=0.0,
        specialty_weights={"a": 3.0, "b": 1.0},
    )
    share_a = (frame.iloc[chosen]["specialty"] == "a").mean()
    assert share_a == pytest.approx(0.75, abs=0.04)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="valid: s1, random, all"):
        select(pool(10, ["a"]), "best", 5, seed=0)


def test_source_column_map_and_errors(tmp_path):
    file = tmp_path / "rows.jsonl"
    pd.DataFrame({"q": ["a"], "cot": ["b"], "Response": ["c"]}).to_json(file, orient="records", lines=True)
    frame = load_source(SourceConfig(path=str(file), columns={"q": "Question", "cot": "Complex_CoT"}))
    assert frame[["Question", "Complex_CoT", "Response"]].iloc[0].tolist() == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"lacks column\(s\) Question, Complex_CoT; it has q, cot, Response"):
        load_source(SourceConfig(path=str(file)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(UserError):
        load_source(SourceConfig(path=str(empty)))
    with pytest.raises(UserError, match="does not exist"):
        load_source(SourceConfig(path=str(tmp_path / "nope.parquet")))


def test_fingerprint_changes_with_content():
    a = rows(Question=["q"], Complex_CoT=["c"], Response=["r"])
    b = rows(Question=["q"], Complex_CoT=["c!"], Response=["r"])
    assert fingerprint(a) == fingerprint(a.copy()) != fingerprint(b)


def test_messages_use_the_configured_layout():
    messages = to_messages("Q?", "think", "answer", FormatConfig(system_prompt="sys"))
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "## Thinking\n\nthink\n\n## Final Response\n\nanswer"
