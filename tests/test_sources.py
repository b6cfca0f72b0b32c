"""Source presets (conf/curation/source): med-s1's huatuo-sft, s1-gemini and nejmcr mappings on
constructed files in each source's real shape."""

from dataclasses import replace

import pandas as pd
import pytest

from meds1.config.compose import compose
from meds1.config.schema import TokenLimit
from meds1.curation.source import DROPPED_ROWS, load_source
from meds1.errors import UserError


def preset(preset_name: str, **changes):
    source = compose(["experiment=random-1k", f"curation/source={preset_name}"]).curation.source
    return replace(source, **changes)


def test_huatuo_sft_is_the_default_source():
    source = compose(["experiment=med-s1-1k"]).curation.source
    assert source == preset("huatuo-sft")
    assert (source.name, source.data_files) == (
        "FreedomIntelligence/medical-o1-reasoning-SFT",
        "medical_o1_sft_mix.json",
    )


def test_s1_gemini_maps_and_unwraps_thinking_trajectories(tmp_path):
    file = tmp_path / "gemini.parquet"
    pd.DataFrame(
        {
            "question": ["q1", "q2", "q3"],
            "solution": ["s1", "s2", "s3"],
            "thinking_trajectories": [["t1"], ["t2a", "t2b"], ["t3"]],
            "attempt": ["a1", "a2", "a3"],
        }
    ).to_parquet(file)
    source = preset("s1-gemini", name=None, path=str(file))
    assert source.name is None and source.unwrap == ["Complex_CoT"]
    frame = load_source(source)
    assert frame[["Question", "Complex_CoT", "Response"]].values.tolist() == [
        ["q1", "t1", "s1"],
        ["q3", "t3", "s3"],
    ]
    assert frame.attrs[DROPPED_ROWS] == {"source/Complex_CoT_not_one_element": 1}
    assert frame["row_id"].tolist() == [0, 1] and "attempt" in frame


def nejmcr_rows():
    return {
        "question": ["A 40-year-old man...", "A 7-year-old girl...", "A 60-year-old woman..."],
        "thinking": ["# Case 1\nwhole article", "# Case 2\narticle", "# Case 3\narticle"],
        "diagnosis_final": ["Sarcoidosis", None, None],
        "diagnosis_clinical_and_final": [None, None, None],
        "diagnosis_pathological": ["ignored", "Lymphoma", None],
        **{
            f"diagnosis_{k}": [None, None, None]
            for k in (
                "anatomical",
                "diagnosis_and_management",
                "diagnosis",
                "clinical",
                "laboratory",
                "psychiatric",
            )
        },
    }


def test_nejmcr_reads_a_saved_dataset_folder_as_medsone_mapped_it(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "nejmcr"
    Dataset.from_dict(nejmcr_rows()).save_to_disk(str(folder))
    frame = load_source(preset("nejmcr", path=str(folder), token_limit=TokenLimit()))
    assert frame["Question"].tolist()[0] == "A 40-year-old man...\nWhat is the diagnosis of the patient?"
    assert frame["Response"].tolist() == ["Sarcoidosis", "Lymphoma", "No diagnosis available"]
    assert frame["Complex_CoT"].tolist()[1] == "# Case 2\narticle"
    no_fallback = load_source(
        preset("nejmcr", path=str(folder), first_of_fallback=None, token_limit=TokenLimit())
    )
    assert len(no_fallback) == 2 and no_fallback.attrs[DROPPED_ROWS] == {"source/no_Response": 1}


def test_a_missing_dataset_or_column_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^curation.source.path .*nowhere does not exist$"):
        load_source(preset("nejmcr", path=str(tmp_path / "nowhere")))
    file = tmp_path / "rows.parquet"
    pd.DataFrame({"question": ["q"], "thinking": ["t"]}).to_parquet(file)
    with pytest.raises(
        UserError, match=r"curation.source.first_of.Response names column\(s\) diagnosis_final"
    ):
        load_source(preset("nejmcr", path=str(file)))
    with pytest.raises(UserError, match=r"curation.source.templates.Question names column\(s\) case"):
        load_source(preset("nejmcr", path=str(file), templates={"Question": "{case}?"}))


def test_nejmcr_keeps_rows_within_medsone_token_limit(tmp_path, tiny_model_dir):
    """med-s1 kept NEJM-CR rows of <= 8192 QwQ-32B tokens of "Question Complex_CoT Response"; the
    same count with the tiny model's tokenizer (no hub here) at a limit between the rows' lengths."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    limit = preset("nejmcr").token_limit
    assert (limit.max_tokens, limit.tokenizer) == (8192, "Qwen/QwQ-32B") and len(limit.revision) == 40
    rows = nejmcr_rows()
    rows["thinking"][1] = "a much longer article, " * 40
    folder = tmp_path / "nejmcr"
    Dataset.from_dict(rows).save_to_disk(str(folder))
    unlimited = load_source(preset("nejmcr", path=str(folder), token_limit=TokenLimit()))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = [
        len(tokenizer(f"{q} {c} {r}").input_ids)
        for q, c, r in unlimited[["Question", "Complex_CoT", "Response"]].values
    ]
    longest_kept = sorted(lengths)[1]
    source = preset("nejmcr", path=str(folder), token_limit=TokenLimit(longest_kept, str(tiny_model_dir)))
    frame = load_source(source)
    assert frame["Response"].tolist() == ["Sarcoidosis", "No diagnosis available"]  # the long one left
    assert frame["row_id"].tolist() == [0, 1]
    assert frame.attrs[DROPPED_ROWS] == {"source/over_max_tokens": 1}
    at_longest = replace(source, token_limit=TokenLimit(max(lengths), str(tiny_model_dir)))
    assert len(load_source(at_longest)) == 3  # "at most": a row of exactly the limit stays


def test_a_token_limit_needs_its_tokenizer(tmp_path):
    from datasets import Dataset

    with pytest.raises(UserError, match=r"token_limit.max_tokens needs the tokenizer that counts"):
        compose(["experiment=random-1k", "curation.source.token_limit.max_tokens=10"])
    Dataset.from_dict(nejmcr_rows()).save_to_disk(str(tmp_path / "n"))
    unreadable = preset("nejmcr", path=str(tmp_path / "n"), token_limit=TokenLimit(5, "/nowhere"))
    with pytest.raises(UserError, match=r"^cannot load '/nowhere' \(curation.source.token_limit.tokenizer\)"):
        load_source(unreadable)
