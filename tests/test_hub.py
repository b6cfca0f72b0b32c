"""Every hub read (an eval suite entry, a curation source, a model, its tokenizer, the token_limit
tokenizer, the embedding model) that cannot reach the hub is one line naming the key, the environment
variable the shipped config reads it from, and how to make and use a local copy; and that copy works."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from meds1.config.compose import compose
from meds1.config.schema import SourceConfig
from meds1.curation.source import load_source
from meds1.errors import UserError
from meds1.evaluation.data import load_suite
from meds1.hub import HubReadError, reading, shipped_env_variable
from tests.conftest import REPO

GPQA_COLUMNS = [
    "Question",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
    "Correct Answer",
]
OFFLINE_LINE = "offline (HF_HUB_OFFLINE=1) and no copy is cached here"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """The hub libraries in offline mode with empty caches, as HF_HUB_OFFLINE=1 at start-up would set
    them (they read it on import, so this process sets what they read)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def gpqa_entry(path: str) -> dict:
    """conf/eval/gpqa-diamond.yaml's entry, read from `path`."""
    [entry] = compose(["eval=gpqa-diamond"]).eval.suite
    return {**entry, "path": path}


def test_the_shipped_config_names_the_variable_that_points_at_a_local_copy():
    assert shipped_env_variable("hf://Idavidrein/gpqa") == ("MEDS1_GPQA_DIAMOND", "hf://Idavidrein/gpqa")
    assert shipped_env_variable("hf://ReasoningEval/Benchmark_Lancet") == (
        "MEDS1_M1_DATA",
        "hf://ReasoningEval",
    )
    assert shipped_env_variable("meta-llama/Llama-3.1-8B-Instruct") == (None, "")
    assert shipped_env_variable("hf://ReasoningEvalX/y") == (None, "")  # a prefix of a name is not its folder


def test_a_hub_benchmark_offline_is_one_line_naming_its_variable(offline):
    with pytest.raises(HubReadError) as error:
        load_suite([gpqa_entry("hf://Idavidrein/gpqa")])
    assert str(error.value) == (
        f"cannot load 'hf://Idavidrein/gpqa' (eval.suite[0].path): {OFFLINE_LINE}. To run without the hub, "
        "download it where the hub is reachable (`hf download Idavidrein/gpqa --repo-type dataset --revision "
        "633f5ee89ab8ad4522a9f850766b73f62147ffdd --local-dir DIR`) and set MEDS1_GPQA_DIAMOND=hf://DIR "
        "(or eval.suite[0].path=hf://DIR)"
    )


def test_a_benchmark_under_a_shared_folder_names_the_folder_and_its_own_place(offline):
    """m1's entries read $MEDS1_M1_DATA/Benchmark_X: the copy goes to DIR/Benchmark_X; a string entry
    keeps its parameters; the decontamination suite names its own key."""
    entries = [
        "pkg://meds1/data/demo_eval.json",
        {"path": "hf://ReasoningEval/Benchmark_Lancet", "data_files": "midium.jsonl", "split": "train"},
    ]
    with pytest.raises(HubReadError, match=r"\(eval.suite\[1\].path\)") as error:
        load_suite(entries)
    assert str(error.value).endswith(
        "(`hf download ReasoningEval/Benchmark_Lancet midium.jsonl --repo-type dataset --local-dir "
        "DIR/Benchmark_Lancet`) and set MEDS1_M1_DATA=hf://DIR (or eval.suite[1].path=hf://DIR/Benchmark_Lancet)"
    )
    with pytest.raises(HubReadError) as error:
        load_suite(["hf://owner/bench?split=dev"], key="curation.decontamination.suite")
    assert str(error.value).endswith("and set curation.decontamination.suite[0]=hf://DIR?split=dev")


def test_the_local_copy_the_line_advises_is_read_as_the_hub_reads_it(tmp_path):
    """`hf download` leaves the repo's files and its README's configs: hf://DIR reads the entry's config
    (gpqa_diamond.csv, not the folder's other tables), as the hub would."""
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: gpqa_diamond\n  data_files: gpqa_diamond.csv\n"
        "- config_name: gpqa_main\n  data_files: gpqa_main.csv\n---\n"
    )
    for name, count in (("gpqa_diamond", 2), ("gpqa_main", 3)):
        with (tmp_path / f"{name}.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(GPQA_COLUMNS)
            writer.writerows([f"{name} {i}?", "a", "b", "c", "d"] for i in range(count))
    rows, _ = load_suite([gpqa_entry(f"hf://{tmp_path}")])
    assert sorted(row["question"] for row in rows) == ["gpqa_diamond 0?", "gpqa_diamond 1?"]


def test_a_hub_source_offline_names_the_download_and_its_local_copy_works(offline, tmp_path, shared_data):
    source = compose(["experiment=random-1k", "curation/source=huatuo-sft"]).curation.source
    with pytest.raises(HubReadError) as error:
        load_source(source)
    assert str(error.value) == (
        "cannot load 'FreedomIntelligence/medical-o1-reasoning-SFT' (curation.source.name): "
        f"{OFFLINE_LINE}. To run without the hub, download it where the hub is reachable (`hf download "
        "FreedomIntelligence/medical-o1-reasoning-SFT medical_o1_sft_mix.json --repo-type dataset --revision "
        "fc2c9e8a37b38f38da6d449564a8c350b244aef4 --local-dir DIR`) and set curation.source.name=DIR"
    )
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "medical_o1_sft_mix.json").write_bytes(
        (shared_data / "sft" / "huatuogpt-o1_demo_data.json").read_bytes()
    )
    local = SourceConfig(**{**source.__dict__, "name": str(tmp_path / "copy")})
    assert len(load_source(local)) == 198


@pytest.mark.slow  # sentence-transformers takes long to import
def test_the_embedding_model_offline_is_one_line(offline):
    from meds1.curation.embedding import load_embedder

    with pytest.raises(HubReadError) as error:
        load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert str(error.value).startswith(
        f"cannot load 'sentence-transformers/all-MiniLM-L6-v2' (curation.embedding.model): {OFFLINE_LINE}."
    )
    assert str(error.value).endswith("and set curation.embedding.model=DIR")


def test_a_refusal_is_its_first_line_and_a_local_path_gets_no_download_advice(tmp_path):
    with pytest.raises(HubReadError) as error, reading("owner/gated", "model.path"):
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it.")
    assert str(error.value).startswith(
        "cannot load 'owner/gated' (model.path): OSError: You are trying to access a gated repo. To run"
    )
    with pytest.raises(HubReadError) as error, reading(str(tmp_path), "model.path"):
        raise ValueError("Unrecognized model")
    assert str(error.value) == f"cannot load '{tmp_path}' (model.path): ValueError: Unrecognized model"
    assert isinstance(error.value, UserError)
    with pytest.raises(KeyError), reading("owner/name", "model.path"):  # not a hub failure: left as is
        raise KeyError("a bug")


@pytest.mark.slow
def test_a_model_its_tokenizer_and_the_token_limit_tokenizer_offline_are_one_line_each(offline):
    """The model and tokenizer every stage loads (model.path), a curation LLM's (its own key), and the
    token_limit tokenizer."""
    from transformers import AutoTokenizer

    from meds1.curation.llm import load_llm
    from meds1.curation.source import drop_long_rows
    from meds1.models import from_pretrained

    cfg = compose(["experiment=base", "curation.difficulty.judge.llm.inference.backend=hf"])
    with pytest.raises(HubReadError) as error:
        from_pretrained(AutoTokenizer, cfg.model.path, revision=cfg.model.revision)
    assert str(error.value).startswith(f"cannot load '{cfg.model.path}' (model.path): {OFFLINE_LINE}.")
    assert str(error.value).endswith("--local-dir DIR`) and set model.path=DIR")
    llm = cfg.curation.difficulty.judge.llm
    llm.model.path = "Qwen/Qwen2.5-0.5B-Instruct"
    key = "curation.difficulty.judge.llm"
    with pytest.raises(HubReadError, match=rf"\({key}.model.path\): .* and set {key}.model.path=DIR$"):
        load_llm(llm, cfg.paths.cache, key)
    limit = compose(["experiment=random-1k", "curation/source=nejmcr"]).curation.source.token_limit
    with pytest.raises(HubReadError) as error:
        drop_long_rows(None, limit)
    assert str(error.value).endswith(
        "(`hf download Qwen/QwQ-32B --revision 976055f8c83f394f35dbd3ab09a285a984907bd0 --local-dir DIR`) "
        "and set curation.source.token_limit.tokenizer=DIR"
    )


def run_py(env: dict, tmp_path, *overrides: str) -> tuple[int, list[str]]:
    command = [
        sys.executable,
        "run.py",
        "experiment=demo",
        "stage=eval",
        *overrides,
        f"paths.root={tmp_path}",
    ]
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **env}
    env.pop("MEDS1_GPQA_DIAMOND", None)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return result.returncode, (result.stdout + result.stderr).splitlines()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, OFFLINE_LINE),
        (  # online, but nothing answers: a closed port
            {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
            "the hub (http://127.0.0.1:9) is unreachable and no copy is cached here",
        ),
    ],
    ids=["offline", "unreachable"],
)
def test_the_readme_hub_benchmark_without_the_hub_is_one_line(tmp_path, env, reason):
    code, lines = run_py(env, tmp_path, "eval=gpqa-diamond")
    assert code == 1
    assert not [
        line for line in lines if "Traceback" in line or line.startswith(("ConnectionError", "  File"))
    ]
    [error] = [line for line in lines if "[ERROR]" in line]
    assert f"cannot load 'hf://Idavidrein/gpqa' (eval.suite[0].path): {reason}." in error
    assert error.endswith("and set MEDS1_GPQA_DIAMOND=hf://DIR (or eval.suite[0].path=hf://DIR)")
