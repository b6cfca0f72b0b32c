"""Source presets (conf/curation/source): med-s1's huatuo-sft, s1-gemini and nejmcr mappings on
constructed files in each source's real shape."""

from dataclasses import replace

import pandas as pd
import pytest

from meds1.compose import compose
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
    frame = load_source(preset("nejmcr", path=str(folder)))
    assert frame["Question"].tolist()[0] == "A 40-year-old man...\nWhat is the diagnosis of the patient?"
    assert frame["Response"].tolist() == ["Sarcoidosis", "Lymphoma", "No diagnosis available"]
    assert frame["Complex_CoT"].tolist()[1] == "# Case 2\narticle"
    no_fallback = load_source(preset("nejmcr", path=str(folder), first_of_fallback=None))
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
