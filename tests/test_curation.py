import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from meds1.config.compose import compose
from meds1.config.schema import DecontaminationConfig, DecontaminationMethod, FormatConfig, SourceConfig
from meds1.curation.decontamination import nearest_eval_questions
from meds1.curation.formatting import to_messages
from meds1.curation.quality import quality_filter, token_lengths
from meds1.curation.sampling import select
from meds1.curation.source import MALFORMED_LINES, fingerprint, load_source
from meds1.errors import UserError
from meds1.models import load_tokenizer
from tests.conftest import REPO

DEMO = REPO / "meds1/data/demo_sft.jsonl"


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
        Question=["q1", None, "  ", "q4", "q5", "q6", 7],
        Complex_CoT=["a b c", "x", "y", "", " ".join(["w"] * 1024), ["not", "text"], "z"],
        Response=["r", "r", "r", "r", "r", "r", "r"],
    )
    out = quality_filter(frame, WordTokenizer(), [1024])
    assert out["filter_reason"].tolist() == [
        None,
        "missing_Question",
        "missing_Question",
        "missing_Complex_CoT",
        "cot_truncated",
        "not_text_Complex_CoT",
        "not_text_Question",
    ]
    assert out["filter_status"].tolist() == ["kept"] + ["removed"] * 6
    assert out["cot_tokens"].tolist() == [3, 1, 1, 0, 1024, 0, 1]
    assert len(out) == len(frame)


def bos_word_tokenizer():
    """A real fast tokenizer, one token per word, that puts `<s>` before every text (as Llama's does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["w", "The", "patient", "has", "a", "fever.", "Hemoglobin", "is", "low"]
    vocab = {"<unk>": 0, "<s>": 1, **{word: i for i, word in enumerate(words, 2)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>")


def test_a_cot_of_exactly_1024_tokens_is_truncated_not_counting_special_tokens():
    tokenizer = bos_word_tokenizer()
    cots = [" ".join(["w"] * 1023), " ".join(["w"] * 1024)]
    assert [len(tokenizer(cot)["input_ids"]) for cot in cots] == [1024, 1025]  # <s> is added
    out = quality_filter(
        rows(Question=["q1", "q2"], Complex_CoT=cots, Response=["r", "r"]), tokenizer, [1024]
    )
    assert out["cot_tokens"].tolist() == [1023, 1024]
    assert out["filter_reason"].tolist() == [None, "cot_truncated"]


def test_cot_lengths_exclude_special_tokens_in_every_batch():
    tokenizer = bos_word_tokenizer()
    texts = ["The patient has a fever.", "", "Hemoglobin is low"] * 700
    assert len(tokenizer(texts[0])["input_ids"]) == 6
    lengths = token_lengths(texts, tokenizer, batch_size=256)
    assert lengths.tolist() == [5, 0, 3] * 700


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


def test_source_column_map_and_errors(tmp_path):
    file = tmp_path / "rows.jsonl"
    pd.DataFrame({"q": ["a"], "cot": ["b"], "Response": ["c"]}).to_json(file, orient="records", lines=True)
    frame = load_source(SourceConfig(path=str(file), columns={"q": "Question", "cot": "Complex_CoT"}))
    assert frame[["Question", "Complex_CoT", "Response"]].iloc[0].tolist() == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"lacks column\(s\) Question, Complex_CoT; it has q, cot, Response"):
        load_source(SourceConfig(path=str(file)))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="empty.jsonl has no rows$"):
        load_source(SourceConfig(path=str(empty)))
    with pytest.raises(UserError, match="does not exist"):
        load_source(SourceConfig(path=str(tmp_path / "nope.parquet")))


def test_a_malformed_jsonl_line_is_named_or_skipped(tmp_path):
    good = '{"Question": "q%d", "Complex_CoT": "c", "Response": "r"}\n'
    file = tmp_path / "rows.jsonl"
    file.write_text(good % 1 + good % 2 + good[:30] + "\n" + "[1, 2]\n" + good % 5)
    with pytest.raises(
        UserError, match=rf"{file}:3: malformed line \(.* at column \d+\); .*skip_malformed=true"
    ):
        load_source(SourceConfig(path=str(file)))
    frame = load_source(SourceConfig(path=str(file), skip_malformed=True))
    assert frame["Question"].tolist() == ["q1", "q2", "q5"] and frame["row_id"].tolist() == [0, 1, 2]
    assert frame.attrs[MALFORMED_LINES] == [3, 4]
    file.write_text(good[:30])
    with pytest.raises(UserError, match=r"has no rows \(skipped malformed lines \[1\]\)"):
        load_source(SourceConfig(path=str(file), skip_malformed=True))


def test_fingerprint_changes_with_content():
    a = rows(Question=["q"], Complex_CoT=["c"], Response=["r"])
    b = rows(Question=["q"], Complex_CoT=["c!"], Response=["r"])
    assert fingerprint(a) == fingerprint(a.copy()) != fingerprint(b)


def test_messages_use_the_configured_layout():
    messages = to_messages("Q?", "think", "answer", FormatConfig(system_prompt="sys"))
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[2]["content"] == "## Thinking\n\nthink\n\n## Final Response\n\nanswer"


TRICKY_TEXTS = [
    "Plain words, with punctuation; and (parentheses).",
    "Double  spaces   and\ttabs\nnew lines\n\n  indented text",
    "Numbers 12345 mg/dL, 3.5x10^9/L and 98.6°F — en dashes – and ‘quotes’.",
    "Ünïcödé naïve café β-blockers → α2 agonists",
    "Don't it's we're they'll I'd: contractions",
    "   leading and trailing spaces   ",
    "<|eot_id|> special token text in the middle <|begin_of_text|> here",
    "",
    " one leading space, one trailing space ",
    "line\n next line starts with a space",
    "a word per piece: 1,000 x 2.5 = 2,500.0 (approx.)",
]


def test_token_lengths_match_full_tokenization(model_cache):
    tokenizer = load_tokenizer(compose(["model=tiny"]).model, str(model_cache))  # the shipped tiny model
    demo = pd.read_json(DEMO, lines=True)["Complex_CoT"].dropna().tolist()
    texts = TRICKY_TEXTS * 20 + demo
    expected = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert token_lengths(texts, tokenizer, batch_size=64).tolist() == expected


def test_token_lengths_fall_back_when_pieces_do_not_add_up(caplog):
    """Llama-2's tokenizer.json: spaces become "▁", one is prepended, BPE runs over the whole text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    corpus = pd.read_json(DEMO, lines=True)["Complex_CoT"].dropna().tolist()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>")
    texts = corpus[:50] + TRICKY_TEXTS
    expected = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    with caplog.at_level("INFO", logger="meds1.curation.quality"):
        assert token_lengths(texts, tokenizer).tolist() == expected
    assert "tokenizing every text in full" in caplog.text


def embedded_pool(n_per_cluster: int, centers: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    middles = rng.normal(size=(centers, 8)) * 10
    points = np.concatenate([m + rng.normal(size=(n_per_cluster, 8)) for m in middles])
    return pd.DataFrame({"cot_tokens": np.arange(len(points))}), points.astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 30, 99, 200, 500])
def test_embedding_diversity_returns_min_n_pool_distinct_rows(n):
    frame, vectors = embedded_pool(40, 5)
    chosen = select(frame, "embedding-diversity", n, seed=0, embeddings=vectors)
    assert len(chosen) == min(n, len(frame)) == len(set(chosen.tolist()))


def test_embedding_diversity_spreads_over_clusters_and_takes_outliers_first():
    frame, vectors = embedded_pool(100, 4)  # 4 well separated blobs of 100
    vectors[7] += 50.0  # one far outlier
    chosen = select(
        frame,
        "embedding-diversity",
        40,
        seed=1,
        embeddings=vectors,
        cluster_fraction=0.1,
        outlier_fraction=0.05,
    )
    assert chosen[0] == 7
    blob = chosen // 100
    assert np.bincount(blob, minlength=4).min() >= 8  # round-robin: every blob gets about a quarter
    again = select(
        frame,
        "embedding-diversity",
        40,
        seed=1,
        embeddings=vectors,
        cluster_fraction=0.1,
        outlier_fraction=0.05,
    )
    assert chosen.tolist() == again.tolist()


def test_source_rejects_malformed_files_and_unknown_hub_datasets(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="could not read curation.source.path"):
        load_source(SourceConfig(path=str(broken)))
    with pytest.raises(UserError, match=r"unsupported source file type '\.csv'"):
        (tmp_path / "rows.csv").write_text("a,b\n")
        load_source(SourceConfig(path=str(tmp_path / "rows.csv")))
    hub_failure = r"cannot load '.*no-such-dataset' \(curation.source.name\): .*--revision abc123"
    with pytest.raises(UserError, match=hub_failure):
        load_source(SourceConfig(name=str(tmp_path / "no-such-dataset"), revision="abc123"))
    with pytest.raises(UserError, match="needs a `path`"):
        load_source(SourceConfig())


def test_source_keeps_a_user_row_id_column(tmp_path):
    file = tmp_path / "rows.parquet"
    pd.DataFrame(
        {"row_id": [7, 9], "Question": ["a", "b"], "Complex_CoT": ["c", "d"], "Response": ["e", "f"]}
    ).to_parquet(file)
    frame = load_source(SourceConfig(path=str(file)))
    assert frame["row_id"].tolist() == [0, 1] and frame["source_row_id"].tolist() == [7, 9]


def test_s1_layout_uses_think_answer_markers():
    messages = to_messages("Q?", " think \n", " B. Iron ", FormatConfig(layout="s1"))
    assert messages[-1]["content"] == "<|im_start|>think\nthink\n<|im_start|>answer\nAnswer: B. Iron"
    already = to_messages("Q?", "t", "Answer: C", FormatConfig(layout="s1"))
    assert already[-1]["content"].endswith("<|im_start|>answer\nAnswer: C")
    custom = to_messages(
        "Q?", "t", "r", FormatConfig(layout="s1", assistant_template="<think>{cot}</think>{response}")
    )
    assert custom[-1]["content"] == "<think>t</think>r"


# Two MedMCQA validation questions and the open questions medical-o1-reasoning-SFT made of them
# (HuatuoGPT-o1's demo_data.json), plus an unrelated eval question.
EVAL_QUESTIONS = [
    "Possible conversion to choriocarcinoma after hydatidiform mole is denoted by all of the following, "
    "except:-",
    "A patient is taking drugs for rheumatoid ahritis and has a history of cataract surgery 1 year back, the "
    "patient presented with sudden painless loss of vision, probable diagnosis is?",
    "Drug of choice for absence seizures in a child is",
]
REPHRASED = [
    "What finding is not associated with the possible conversion of a hydatidiform mole into "
    "choriocarcinoma?",
    "A patient with a history of cataract surgery one year ago and who is currently taking medication for "
    "rheumatoid arthritis experiences a sudden painless loss of vision. What is the most probable diagnosis?",
]
UNRELATED = "How does a blood count tell thalassemia trait from iron deficiency in a pale toddler?"


@pytest.fixture
def eval_suite(tmp_path):
    """These questions among the 100 demo eval questions (IDF needs a suite of some size)."""
    file = tmp_path / "suite.json"
    options = {"A": "one", "B": "two"}
    questions = [{"question": q, "options": options, "answer_idx": "A"} for q in EVAL_QUESTIONS]
    file.write_text(json.dumps({"MedMCQA_validation": questions}))
    return str(file)


def suite_of(eval_suite: str) -> list[str]:
    return [eval_suite, "pkg://meds1/data/demo_eval.json"]


def test_tfidf_catches_rephrased_eval_questions_that_ngrams_miss(eval_suite):
    from meds1.evaluation.data import load_suite

    frame = pd.DataFrame({"Question": [*REPHRASED, UNRELATED]}, index=[10, 11, 12])
    config = DecontaminationConfig(suite=suite_of(eval_suite))
    matches, mask = nearest_eval_questions(frame, config)
    assert mask.tolist() == [True, True, False]
    ids = [row["id"] for row in load_suite(suite_of(eval_suite))[0]]
    assert matches.loc[[10, 11], "overlap_id"].tolist() == ids[:2]
    assert (matches.loc[[10, 11], "overlap_source"] == "MedMCQA_validation").all()
    assert (matches.loc[[10, 11], "overlap_score"] >= config.threshold).all()
    assert matches.loc[12, "overlap_score"] < 0.3
    _, by_ngrams = nearest_eval_questions(frame, replace(config, method=DecontaminationMethod.ngram))
    assert not by_ngrams.any()


def test_a_rows_score_does_not_depend_on_the_other_training_rows(eval_suite):
    config = DecontaminationConfig(suite=suite_of(eval_suite))
    alone, _ = nearest_eval_questions(pd.DataFrame({"Question": REPHRASED[:1]}), config)
    crowd = pd.DataFrame({"Question": [REPHRASED[0], *[f"choriocarcinoma mole {i}" for i in range(50)]]})
    among, _ = nearest_eval_questions(crowd, config)
    assert among.loc[0, "overlap_score"] == alone.loc[0, "overlap_score"]


def test_the_closest_of_several_columns_decides_and_empty_texts_match_nothing(eval_suite):
    frame = pd.DataFrame({"Question": [UNRELATED, None], "Response": [REPHRASED[1], ""]})
    config = DecontaminationConfig(suite=suite_of(eval_suite), columns=["Question", "Response"])
    matches, mask = nearest_eval_questions(frame, config)
    assert mask.tolist() == [True, False]
    assert matches["overlap_score"].isna().tolist() == [False, True]


def test_ngram_share_zero_is_s1s_any_shared_ngram_rule(eval_suite):
    copied = (
        "Asked again in the clinic today: drug of choice for absence seizures in a child is what, "
        "in a febrile toddler?"
    )
    frame = pd.DataFrame({"Question": [copied, UNRELATED]})
    ngram = DecontaminationConfig(suite=suite_of(eval_suite), method=DecontaminationMethod.ngram, ngram=4)
    assert nearest_eval_questions(frame, replace(ngram, ngram_share=0.0))[1].tolist() == [True, False]
    matches, mask = nearest_eval_questions(frame, ngram)  # 7 of its 18 4-grams: under half
    assert mask.tolist() == [False, False]
    assert matches.loc[0, "overlap_score"] == pytest.approx(7 / 18, abs=1e-4)


def test_real_rows_rephrased_from_eval_questions_are_caught(shared_data):
    """HuatuoGPT-o1's 198 rows against the real suite: rows 151, 154 and 193 rephrase MedMCQA validation
    questions (their source MCQ is one); row 82's source MCQ is a reworded copy of another."""
    frame = pd.read_json(shared_data / "sft" / "huatuogpt-o1_demo_data.json")[["Question"]]
    config = DecontaminationConfig(suite=[str(shared_data / "eval")])
    matches, mask = nearest_eval_questions(frame, config)
    assert frame.index[mask].tolist() == [82, 151, 154, 193]
    assert matches.loc[~mask, "overlap_score"].max() < 0.62
    s1_rule = replace(config, method=DecontaminationMethod.ngram, ngram_share=0.0)
    _, by_s1_rule = nearest_eval_questions(frame, s1_rule)
    assert by_s1_rule[[151, 154, 193]].tolist() == [False, False, True]


def test_decontamination_compares_against_mapped_suites(tmp_path):
    """A benchmark in another shape (GPQA's columns, a MedXpertQA-like `label`) decontaminates like any."""
    gpqa = tmp_path / "gpqa.jsonl"
    gpqa.write_text(
        json.dumps({"Question": REPHRASED[0], "Correct Answer": "a", "Incorrect Answer 1": "b"}) + "\n"
    )
    medxpert = tmp_path / "MedXpertQA_test.jsonl"
    medxpert.write_text(
        json.dumps({"question": REPHRASED[1], "options": {"A": "x", "B": "y"}, "label": "B"}) + "\n"
    )
    suite = [
        {
            "path": str(gpqa),
            "name": "gpqa-diamond",
            "question": "Question",
            "options": ["Incorrect Answer 1", "Correct Answer"],
            "answer": "Correct Answer",
        },
        {"path": str(medxpert), "answer": "label"},
    ]
    frame = pd.DataFrame({"Question": [*REPHRASED[:2], UNRELATED]})
    matches, mask = nearest_eval_questions(frame, DecontaminationConfig(suite=suite))
    assert mask.tolist() == [True, True, False]
    assert matches["overlap_source"].tolist()[:2] == ["gpqa-diamond", "MedXpertQA_test"]
    with pytest.raises(
        UserError, match=r"^decontamination needs the eval suite: MedXpertQA_test.jsonl: none of 1"
    ):
        nearest_eval_questions(frame, DecontaminationConfig(suite=[str(medxpert)]))


def test_embedding_diversity_can_take_each_clusters_longest_cots_first():
    frame, vectors = embedded_pool(50, 4)  # 4 blobs of 50
    frame["Complex_CoT"] = ["x" * ((i * 37) % 101) for i in range(len(frame))]
    settings = dict(
        embeddings=vectors, cluster_fraction=0.1, outlier_fraction=0.0, cluster_ranking="cot-length"
    )
    chosen = select(frame, "embedding-diversity", 20, seed=3, **settings)
    lengths = frame["Complex_CoT"].str.len().to_numpy()
    for blob in range(4):
        mine = [i for i in chosen if i // 50 == blob]
        members = np.arange(blob * 50, blob * 50 + 50)
        assert (
            sorted(lengths[mine].tolist(), reverse=True)
            == sorted(lengths[members].tolist(), reverse=True)[: len(mine)]
        )
    assert sorted(chosen.tolist()) != sorted(
        select(
            frame,
            "embedding-diversity",
            20,
            seed=3,
            embeddings=vectors,
            cluster_fraction=0.1,
            outlier_fraction=0.0,
        ).tolist()
    )
