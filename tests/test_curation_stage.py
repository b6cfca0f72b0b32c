"""stage=curate end to end: filters, annotation cache reuse and resume, bad config, resources, real rows."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException

from meds1.config.compose import compose
from meds1.curation.cache import AnnotationCache
from meds1.curation.difficulty import answers_spec, verdicts_spec
from meds1.curation.resources import curate_resources
from meds1.curation.source import fingerprint, load_source
from meds1.errors import UserError
from meds1.evaluation.data import load_suite
from meds1.stages import curate
from meds1.store.identity import stage_slug
from meds1.store.registry import registry_path
from meds1.store.workspace import StageDir, read_marker
from tests.conftest import REPO

DEMO = REPO / "meds1/data/demo_sft.jsonl"


@pytest.fixture
def small_source(tmp_path):
    """The first 9 complete demo rows, as a local jsonl source of its own (the annotation cache is
    shared by the session, and a source's annotations are found by its content)."""
    rows = pd.read_json(DEMO, lines=True).dropna().head(9)
    rows["Question"] += f" ({tmp_path.name})"
    file = tmp_path / "rows.jsonl"
    rows.to_json(file, orient="records", lines=True)
    return file


def difficulty_overrides(source) -> list[str]:
    return [
        "experiment=demo",
        f"curation.source.path={source}",
        "curation.difficulty.enabled=true",
        "curation.difficulty.max_new_tokens=3",
        "curation.annotation_chunk=4",
        "curation.long_cot_tokens=100000",
    ]


def test_decontamination_removes_near_duplicates_of_eval_questions(tmp_path, make_config):
    evals = [r for r in load_suite(["pkg://meds1/data/demo_eval.json"])[0] if r["source"] == "DemoMedQA"]
    rows = pd.read_json(DEMO, lines=True).dropna().head(6).reset_index(drop=True)
    rows.loc[0, "Question"] = evals[3]["question"].upper().replace(",", " ;")  # same words, other surface
    rows.loc[1, "Question"] = "Which of the following is the most likely diagnosis in this patient?"
    file = tmp_path / "rows.jsonl"
    rows.to_json(file, orient="records", lines=True)
    cfg = make_config("experiment=demo", f"curation.source.path={file}", "curation.n_samples=3")
    record = curate.run(cfg)
    filtered = pd.read_parquet(record["filtered_path"])
    assert filtered.loc[filtered["filter_stage"] == "decontamination", "row_id"].tolist() == [0]
    assert set(filtered["filter_reason"].dropna()) == {"eval_overlap", "not_selected"}
    assert record["stats"]["removed"]["decontamination/eval_overlap"] == 1
    provenance = record["provenance"]
    assert provenance["source"] == {"revision": None, "fingerprint": record["source_fingerprint"]}
    assert read_marker(Path(record["filtered_path"]).parent)["record"]["provenance"] == provenance
    entry = json.loads(registry_path(cfg).read_text())["experiments"][stage_slug(cfg, "curate")]
    assert entry["results"]["curate"]["provenance"] == provenance
    match = filtered.loc[0, ["overlap_score", "overlap_source", "overlap_id"]].tolist()
    assert match == [1.0, "DemoMedQA", evals[3]["id"]]
    assert filtered["overlap_score"].notna().all() and filtered.loc[1:, "overlap_score"].lt(0.65).all()


def test_n_larger_than_the_pool_selects_all_with_a_warning(small_source, make_config):
    record = curate.run(
        make_config("experiment=demo", f"curation.source.path={small_source}", "curation.n_samples=50")
    )
    stats = record["stats"]
    assert stats["selected_rows"] == stats["pool_rows"] == 9
    assert stats["warnings"] == ["n_samples=50 exceeds the 9 rows that passed the filters; selected all"]
    assert stats["specialty_status"] == {"labeled": 9}


def test_malformed_source_lines_fail_by_line_or_are_skipped_into_the_record(small_source, make_config):
    lines = small_source.read_text().splitlines(keepends=True)
    lines.insert(4, lines[4][: len(lines[4]) // 2] + "\n")  # line 5: a truncated copy of line 5
    small_source.write_text("".join(lines))
    overrides = ["experiment=demo", f"curation.source.path={small_source}", "curation.n_samples=3"]
    with pytest.raises(UserError, match=f"{small_source}:5: malformed line"):
        curate.run(make_config(*overrides))
    record = curate.run(make_config(*overrides, "curation.source.skip_malformed=true"))
    assert record["stats"]["source_malformed_lines"] == [5] and record["stats"]["total_rows"] == 9


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["curation.specialty.column=hint"], "curation.specialty.column 'hint' is not a source column"),
        (["curation.decontamination.columns=[nope]"], r"curation.decontamination.columns \['nope'\] are not"),
        (["curation.source.path=nope.jsonl"], r"^curation.source.path nope.jsonl does not exist$"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, message, make_config):
    cfg = make_config("experiment=demo", *overrides)
    with pytest.raises(UserError, match=message):
        curate.run(cfg)
    assert not StageDir.of(cfg, "curate").partial.exists()  # no work kept: nothing looks interrupted


def test_decontamination_without_the_eval_suite_says_how_to_fix_it(make_config, tmp_path):
    cfg = make_config("experiment=demo", f"curation.decontamination.suite=[{tmp_path}/missing.json]")
    with pytest.raises(UserError, match="decontamination.enabled=false"):
        curate.run(cfg)


def test_curate_asks_for_the_gpus_of_the_models_it_runs_locally(make_config):
    remote = make_config("experiment=med-s1-1k", "inference=openai")
    assert curate_resources(remote).gpus == 0  # base model, judge and labeler all behind endpoints
    local = make_config(
        "experiment=med-s1-1k",
        "inference=openai",
        "curation.difficulty.judge.llm.inference.backend=vllm",
        "curation.difficulty.judge.llm.inference.resources.gpus=4",
        "curation.difficulty.judge.llm.inference.resources.time_min=90",
    )
    resources = curate_resources(local)
    assert (resources.gpus, resources.time_min) == (4, local.curation.resources.time_min + 90)
    base_on_gpu = make_config("experiment=med-s1-1k", "inference.resources.gpus=1")
    assert curate_resources(base_on_gpu).gpus == 1  # the hf base model runs inside the job
    random_arm = make_config("experiment=random-1k", "inference.resources.gpus=1")
    assert curate_resources(random_arm).gpus == 0  # its pool has no difficulty filter: no base model runs
    off = make_config(
        "experiment=med-s1-1k", "curation.difficulty.enabled=false", "curation.specialty.method=column"
    )
    assert curate_resources(off) == off.curation.resources


@pytest.mark.slow
def test_annotations_are_reused_across_experiments_and_judged_rows_removed(small_source, make_config):
    base = difficulty_overrides(small_source)
    cfg = make_config(*base, "curation.n_samples=4")
    # Seed the verdict cache: rows 2 and 5 "answered correctly" by the base model (the tiny model never is).
    rows = load_source(cfg.curation.source)
    answers_key = AnnotationCache(cfg.paths.cache, "answers", answers_spec(cfg, fingerprint(rows))).key
    verdicts = AnnotationCache(
        cfg.paths.cache, "verdicts", verdicts_spec(cfg.curation.difficulty.judge, answers_key)
    )
    verdicts.write_chunk(
        pd.DataFrame({"row_id": [2, 5], "verdict": ["correct"] * 2, "judge_reply": [None] * 2})
    )

    first = curate.run(cfg)["stats"]
    assert first["annotations"]["difficulty"]["answers"]["computed"] == 9
    assert first["annotations"]["difficulty"]["verdicts"] == {
        **first["annotations"]["difficulty"]["verdicts"],
        "reused": 2,
        "computed": 7,
    }
    assert first["removed"]["difficulty/base_model_correct"] == 2
    assert first["pool_rows"] == 7 and first["selected_rows"] == 4
    assert sum(first["verdicts"].values()) == 9 and first["verdicts"]["correct"] == 2

    # Another n, then another experiment (random selection): annotations reused, only selection reruns.
    for extra in (
        ["curation.n_samples=6"],
        ["curation.n_samples=3", "curation.method=random", "curation.specialty.method=none"],
    ):
        stats = curate.run(make_config(*base, *extra))["stats"]
        for kind in ("answers", "verdicts"):
            assert stats["annotations"]["difficulty"][kind]["computed"] == 0
            assert stats["annotations"]["difficulty"][kind]["reused"] == 9
        assert stats["pool_rows"] == 7


@pytest.mark.slow
def test_an_interrupted_annotation_run_resumes_where_it_stopped(small_source, make_config, monkeypatch):
    from meds1.inference.hf import HFBackend

    complete_raw = HFBackend.complete_raw  # the base model's raw completions (med-s1's protocol)
    calls = []

    def crash_on_second_chunk(self, prompts, sampling):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return complete_raw(self, prompts, sampling)

    monkeypatch.setattr(HFBackend, "complete_raw", crash_on_second_chunk)
    cfg = make_config(*difficulty_overrides(small_source), "curation.n_samples=4")
    with pytest.raises(KeyboardInterrupt):
        curate.run(cfg)
    monkeypatch.setattr(HFBackend, "complete_raw", complete_raw)
    stats = curate.run(cfg)["stats"]
    assert calls == [4, 4]
    assert stats["annotations"]["difficulty"]["answers"]["reused"] == 4  # the first chunk survived the crash
    assert stats["annotations"]["difficulty"]["answers"]["computed"] == 5
    assert stats["selected_rows"] == 4


@pytest.mark.slow
def test_real_rows_end_to_end(shared_data, make_config):
    """The 198 real HuatuoGPT-o1 rows: tiny base model (hf), match judge on the short gold answer,
    embedding labels, decontamination against the real eval files, s1 layout."""
    suite = ",".join(str(p) for p in sorted((shared_data / "eval").glob("*.json")))
    common = [
        "experiment=demo",
        f"curation.source.path={shared_data / 'sft' / 'huatuogpt-o1_demo_data.json'}",
        f"curation.decontamination.suite=[{suite}]",
        "curation.difficulty.enabled=true",
        "curation.difficulty.max_new_tokens=8",
        "curation.difficulty.judge.reference_column=Ground-True Answer",
        "curation.specialty.method=embedding",
        "curation.format.layout=s1",
        "curation.long_cot_tokens=600",
        "inference.batch_size=64",
    ]
    record = curate.run(make_config(*common, "curation.n_samples=50"))
    stats = record["stats"]
    filtered = pd.read_parquet(record["filtered_path"])
    curated = pd.read_parquet(record["curated_path"])
    assert stats["total_rows"] == len(filtered) == 198
    # Rows 151, 154, 193 are rephrased MedMCQA validation questions (their source MCQ is one, word for
    # word); row 82's source MCQ is a reworded copy of one (MedMCQA train repeats validation questions).
    removed = filtered[filtered["filter_stage"] == "decontamination"].set_index("row_id")
    assert removed.index.tolist() == [82, 151, 154, 193]
    assert (removed["overlap_source"] == "MedMCQA_validation").all()
    assert removed.loc[82, "overlap_id"] == "3804c102e5139df7"
    kept = filtered[filtered["overlap_score"].notna() & (filtered["filter_stage"] != "decontamination")]
    assert kept["overlap_score"].max() < 0.62 and len(kept) > 150
    assert stats["selected_rows"] == len(curated) == 50
    assert (
        stats["pool_rows"] + sum(n for r, n in stats["removed"].items() if not r.startswith("selection"))
        == 198
    )
    judged = filtered["verdict"].notna()
    assert sum(stats["verdicts"].values()) == judged.sum() > 150
    assert (filtered.loc[filtered["filter_reason"] == "base_model_correct", "verdict"] == "correct").all()
    taxonomy = set((REPO / "meds1/curation/specialties_med_s1.txt").read_text().splitlines())  # default
    assert set(curated["specialty"]) <= taxonomy and len(set(curated["specialty"])) >= 5
    assert (curated["filter_status"] == "kept").all() and curated["row_id"].is_unique
    from datasets import load_from_disk

    formatted = load_from_disk(record["dataset_path"])
    assert len(formatted) == 50
    assert formatted[0]["messages"][-1]["content"].startswith("<|im_start|>think\n")

    again = curate.run(make_config(*common, "curation.n_samples=20", "curation.method=embedding-diversity"))
    assert again["stats"]["selected_rows"] == 20
    assert again["stats"]["annotations"]["embeddings"]["computed"] == 0  # the labeler's embeddings, reused


def seed_difficulty(cfg, correct: list[int]) -> None:
    """Cached base answers for every row and verdicts saying the base model got `correct` right, so the
    difficulty filter runs from the cache (no model, no judge)."""
    rows = load_source(cfg.curation.source)
    ids = rows["row_id"].tolist()
    answers = AnnotationCache(cfg.paths.cache, "answers", answers_spec(cfg, fingerprint(rows)))
    answers.write_chunk(pd.DataFrame({"row_id": ids, "base_answer": "x", "base_answer_error": None}))
    verdicts = AnnotationCache(
        cfg.paths.cache, "verdicts", verdicts_spec(cfg.curation.difficulty.judge, answers.key)
    )
    verdict = ["correct" if i in correct else "incorrect" for i in ids]
    verdicts.write_chunk(pd.DataFrame({"row_id": ids, "verdict": verdict, "judge_reply": "x"}))


@pytest.fixture
def arm_source(tmp_path, model_cache):
    """9 demo rows; row 0's CoT length is declared a truncation artifact; rows 2 and 5 are "easy"."""
    from meds1.curation.quality import token_lengths
    from meds1.models import load_tokenizer

    rows = pd.read_json(DEMO, lines=True).dropna().head(9)
    rows["Question"] += f" ({tmp_path.name})"
    file = tmp_path / "rows.jsonl"
    rows.to_json(file, orient="records", lines=True)
    tokenizer = load_tokenizer(compose(["experiment=demo"]).model, str(model_cache))
    truncated = int(token_lengths([rows["Complex_CoT"].iloc[0]], tokenizer)[0])
    return [f"curation.source.path={file}", f"curation.quality.truncated_cot_tokens=[{truncated}]"]


@pytest.mark.parametrize(
    ("arm", "pool", "filters", "ids"),
    [
        (
            ["curation=random", "curation.n_samples=9"],
            "all",
            ["missing_text", "decontamination"],
            set(range(9)),
        ),
        (
            ["curation=random", "curation.n_samples=8", "curation.pool=quality"],
            "quality",
            ["quality", "decontamination"],
            set(range(1, 9)),
        ),
        (
            ["curation=random", "curation.n_samples=6", "curation.pool=filtered"],
            "filtered",
            ["quality", "decontamination", "difficulty"],
            {1, 3, 4, 6, 7, 8},
        ),
        (["curation=all", "curation.n_samples=3"], "all", ["missing_text", "decontamination"], set(range(9))),
    ],
)
def test_each_arm_draws_from_its_pool(arm, pool, filters, ids, arm_source, make_config):
    """random/all draw from every row (med-s1), incl. the truncated row and the rows the difficulty filter
    drops; `quality` is s1's 1K-random pool; `filtered` the s1 arms' pool. `all` ignores n."""
    cfg = make_config("experiment=demo", *arm_source, *arm)
    seed_difficulty(cfg, correct=[2, 5])
    record = curate.run(cfg)
    stats = record["stats"]
    curated = pd.read_parquet(record["curated_path"])
    assert set(curated["row_id"]) == ids
    assert (stats["pool"], stats["pool_filters"], stats["pool_rows"]) == (pool, filters, len(ids))
    assert stats["selected_rows"] == len(ids) and stats["warnings"] == []
    assert ("verdicts" in stats) == (pool == "filtered")  # the difficulty filter runs for that pool only
    filtered = pd.read_parquet(record["filtered_path"])
    removed = filtered[filtered["filter_stage"] != "selection"].dropna(subset=["filter_stage"])
    assert set(removed["row_id"]) == set(range(9)) - ids


def test_random_draws_a_seeded_sample_of_every_row(arm_source, make_config):
    cfg = make_config("experiment=demo", "curation=random", *arm_source, "curation.n_samples=4")
    seed_difficulty(cfg, correct=[2, 5])
    stats = curate.run(cfg)["stats"]
    assert (stats["pool_rows"], stats["selected_rows"]) == (9, 4)
    assert stats["removed"] == {"selection/not_selected": 5}


@pytest.mark.parametrize("unlabeled", ["drop", "domain"])
def test_unlabeled_rows_leave_the_pool_unless_kept_as_a_domain(unlabeled, tmp_path, make_config):
    rows = pd.read_json(DEMO, lines=True).dropna().head(9)
    rows["Question"] += f" ({tmp_path.name})"
    rows.loc[rows.index[[1, 4]], "specialty"] = None
    file = tmp_path / "rows.jsonl"
    rows.to_json(file, orient="records", lines=True)
    record = curate.run(
        make_config(
            "experiment=demo",
            f"curation.source.path={file}",
            "curation.n_samples=20",
            f"curation.specialty.unlabeled={unlabeled}",
        )
    )
    stats = record["stats"]
    filtered = pd.read_parquet(record["filtered_path"])
    curated = pd.read_parquet(record["curated_path"])
    assert stats["specialty_status"] == {"labeled": 7, "missing": 2}
    if unlabeled == "drop":
        gone = filtered[filtered["filter_stage"] == "specialty"]
        assert gone["row_id"].tolist() == [1, 4]
        assert set(gone["filter_reason"]) == {"no_specialty_assigned"}
        assert stats["removed"]["specialty/no_specialty_assigned"] == 2
        assert stats["pool_rows"] == 7 and "Unlabeled" not in set(curated["specialty"])
        assert stats["pool_filters"][-1] == "specialty"
    else:
        assert stats["pool_rows"] == 9 and stats["specialties"]["Unlabeled"] == 2
        assert "specialty" not in stats["pool_filters"]
    assert stats["warnings"][-1].endswith("dropped" if unlabeled == "drop" else "kept as one more domain")


@pytest.mark.parametrize(
    ("override", "valid"),
    [
        ("curation.pool=hard", "[all, quality, filtered]"),
        ("curation.specialty.unlabeled=keep", "[drop, domain]"),
    ],
)
def test_unknown_pool_or_unlabeled_policy_fails_at_compose_time(override, valid):
    with pytest.raises(ConfigCompositionException) as error:
        compose(["experiment=med-s1-1k", override])
    assert f"expected one of {valid}" in str(error.value.__cause__)
