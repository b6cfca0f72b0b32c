"""The RL stage without training: its settings, its questions, its place in the chain and its identity."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from meds1 import pipeline
from meds1.config.cli import check_overrides
from meds1.config.compose import compose
from meds1.config.schema import SlurmLauncherConfig
from meds1.errors import MissingInputError, UserError
from meds1.evaluation.prompts import build_conversation
from meds1.launch.plan import SUBMIT, format_plan, plan
from meds1.rl import data
from meds1.stages import rl as rl_stage
from meds1.store.identity import config_hash, stage_slug
from meds1.store.workspace import MARKER, StageWorkspace, stage_dir

DEMO_RL = "experiment=demo-rl"


def fake_train_output(cfg, model_dir: Path) -> Path:
    """A complete train stage of `cfg` whose model is `model_dir` (the tiny model, untrained)."""
    with StageWorkspace(cfg, "train") as workspace:
        shutil.copytree(model_dir, workspace.path / "model")
        workspace.commit({"model_path": str(workspace.final / "model")})
    return stage_dir(cfg, "train") / "model"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# --- bad input: one line each, before any model loads -----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["stages=[rl,eval]"],
            "rl.init=train starts RL from the experiment's SFT model, but its stages ['rl', 'eval'] have no "
            "train: add it (stages=[curate,train,rl,eval]) or set rl.init=base",
        ),
        (["rl.init=base"], "rl.init=base starts RL from `model`, but the experiment's stages"),
        (
            ["rl.num_generations=3"],
            "rl.num_generations=3 does not divide rl.generation_batch_size=8 (completions per step: "
            "questions x num_generations)",
        ),
        (
            ["rl.rewards.nope=1"],
            "unknown config key 'rl.rewards.nope'; valid keys in rl.rewards: mcq, format, judge, overlong",
        ),
        (
            ["rl.rewards.mcq=0", "rl.rewards.format=0"],
            "rl.rewards pays nothing: give a reward a weight above 0 (rl.rewards.mcq=1)",
        ),
        (["rl.num_generations=1"], "rl.num_generations=1: must be >= 2"),
        (["rl.resources.gpus=3"], "rl.generation_batch_size=8 is not divisible by the world size 3"),
        (["rl.prompt='{question}'"], "rl.prompt has no {options}: the model would be paid for a letter"),
        (["rl.data.kind=open"], "rl.rewards.mcq pays for the right option, but rl.data.kind=open has none"),
        (["rl.rewards.overlong=1"], "rl.rewards.overlong needs rl.overlong_cache_tokens below"),
        (["rl.data.suite=[]"], "rl.data.suite is empty: name the questions RL trains on"),
        (["rl.layout=null", "rl.rewards.format=0.1"], "rl.rewards.format pays for a layout's shape"),
        (["rl.loss_type=ppo"], "rl.loss_type='ppo': valid: grpo, dr_grpo, dapo, bnpo, cispo, sapo"),
    ],
)
def test_bad_settings_are_one_line_at_compose(overrides, message):
    problem = check_overrides([DEMO_RL, *overrides])
    assert problem is not None and message in problem and "\n" not in problem


def test_rl_settings_are_checked_only_where_rl_runs():
    assert check_overrides(["experiment=demo", "rl.num_generations=3"]) is None
    with pytest.raises(UserError) as raised:  # stage=rl of an experiment without it: one line, when run
        data.load_questions(compose(["experiment=demo", "stage=rl"]).rl)
    assert str(raised.value).startswith("rl.data.suite is empty: name at least one")
    assert "rl.num_generations=3 does not divide" in check_overrides([DEMO_RL, "rl.num_generations=3"])


def test_questions_without_options_stop_the_stage_naming_the_file_and_the_mapping(
    make_config, tmp_path, monkeypatch
):
    file = write_jsonl(
        tmp_path / "medqa_train.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer_idx": "A"}] * 3
    )
    cfg = make_config(DEMO_RL, "stage=rl", f"rl.data.suite=[{file}]")
    monkeypatch.setattr("meds1.rl.grpo.load_model", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(UserError) as raised:
        rl_stage.run(cfg)
    message = str(raised.value)
    assert message.startswith("rl.data.suite: medqa_train.jsonl: none of 3 rows usable: no 'options'")
    assert f"map it, e.g. {{path: {file}, options: choices}}" in message and "\n" not in message


def test_open_questions_without_an_answer_column_name_the_file_and_the_keys(make_config, tmp_path):
    file = write_jsonl(tmp_path / "problems.jsonl", [{"Open-ended Verifiable Question": "Q?", "Answer": "x"}])
    mapping = f"{{path: {file}, question: Open-ended Verifiable Question, answer: Ground-True Answer}}"
    cfg = make_config(
        DEMO_RL, "rl.data.kind=open", "rl.rewards.mcq=0", "rl.rewards.judge=1", f"rl.data.suite=[{mapping}]"
    )
    with pytest.raises(
        UserError,
        match="problems.jsonl: none of 1 rows has an open question and a reference answer in columns "
        "'Open-ended Verifiable Question' and 'Ground-True Answer'",
    ):
        data.load_questions(cfg.rl)


# --- the questions ------------------------------------------------------------------------------------


def test_the_demo_questions_are_asked_as_eval_asks_them_options_shuffled_per_epoch(make_config):
    cfg = make_config(DEMO_RL, "rl.num_epochs=3")
    questions, skipped = data.load_questions(cfg.rl)
    assert len(questions) == 173 and not skipped
    rows = data.epoch_rows(questions, cfg.rl, cfg.seed)
    assert len(rows) == 3 * 173 and [r["epoch"] for r in rows[::173]] == [0, 1, 2]
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        by_question.setdefault(row["id"], []).append(row)
    original = {q["id"]: q for q in questions}
    moved = 0
    for qid, shown in by_question.items():
        question = original[qid]
        for row in shown:
            options = data.row_options(row)
            assert (
                options[row["answer_idx"]] == question["options"][question["answer_idx"]]
            )  # the answer follows
            assert sorted(options.values()) == sorted(question["options"].values())
            asked = {**question, "options": options}
            assert row["prompt"] == build_conversation(asked, data.eval_prompting(cfg.rl))  # eval's prompt
            assert all(
                f"{letter}. {text}" in row["prompt"][-1]["content"] for letter, text in options.items()
            )
        moved += len({row["answer_idx"] for row in shown}) > 1
    assert moved > 0.5 * len(by_question)  # the right letter changes between epochs
    letters = Counter(row["answer_idx"] for row in rows)
    assert max(letters[letter] for letter in "ABCD") < 1.5 * min(letters[letter] for letter in "ABCD")
    assert [r["id"] for r in rows[:173]] != [r["id"] for r in rows[173:346]]  # each epoch its own order
    assert data.epoch_rows(questions, cfg.rl, cfg.seed) == rows  # the same seed, the same rows


def test_questions_that_restate_an_eval_question_are_removed(make_config, tmp_path):
    eval_rows = json.loads(Path("meds1/data/demo_eval.json").read_text())
    restated = [{**row, "source": "Leaky"} for row in eval_rows["DemoMedQA"][:5]]
    own = [json.loads(line) for line in Path("meds1/data/demo_rl.jsonl").read_text().splitlines()[:20]]
    file = write_jsonl(tmp_path / "rl.jsonl", restated + own)
    cfg = make_config(DEMO_RL, f"rl.data.suite=[{file}]")
    questions, _ = data.load_questions(cfg.rl)
    kept, removed = data.decontaminate(questions, cfg.rl)
    assert len(kept) == 20 and {r["source"] for r in removed} == {"Leaky"} and len(removed) == 5
    assert all(r["overlap_source"] == "DemoMedQA" and r["overlap_score"] > 0.99 for r in removed)
    off = make_config(DEMO_RL, f"rl.data.suite=[{file}]", "rl.data.decontamination.enabled=false")
    assert len(data.decontaminate(questions, off.rl)[0]) == 25


def test_open_questions_are_asked_with_the_open_prompt(make_config, tmp_path):
    rows = [
        {"Open-ended Verifiable Question": f"Which drug {i}?", "Ground-True Answer": "Thiamine"}
        for i in range(4)
    ]
    file = write_jsonl(tmp_path / "problems.jsonl", rows)
    columns = "question: Open-ended Verifiable Question, answer: Ground-True Answer"
    mapping = f"{{path: {file}, name: verifiable, {columns}}}"
    cfg = make_config(
        DEMO_RL,
        "rl.data.kind=open",
        "rl.rewards.mcq=0",
        "rl.rewards.judge=1",
        f"rl.data.suite=[{mapping}]",
        "rl.data.max_per_source=3",
        "rl.system_prompt=Think first.",
    )
    questions, _ = data.load_questions(cfg.rl)
    assert len(questions) == 3 and {q["reference"] for q in questions} == {"Thiamine"}
    (row, *_) = data.epoch_rows(questions, cfg.rl, 0)
    assert row["prompt"][0] == {"role": "system", "content": "Think first."}
    assert (
        row["prompt"][1]["content"].startswith("Which drug")
        and row["options"] == []
        and row["kind"] == "open"
    )


# --- the chain, the plan and the identity ---------------------------------------------------------------


def test_the_slurm_plan_chains_train_rl_and_eval_with_rls_gpus(make_config):
    cfg = make_config("experiment=med-s1-1k-grpo")
    steps = plan([cfg], SlurmLauncherConfig(partition="gpu"))
    assert [(s.stage, s.slug, s.action) for s in steps] == [
        ("curate", "med-s1-1k-grpo", SUBMIT),
        ("train", "med-s1-1k-grpo", SUBMIT),
        ("rl", "med-s1-1k-grpo", SUBMIT),
        ("eval", "med-s1-1k-grpo", SUBMIT),
        ("eval", "med-s1-1k-grpo-sft", SUBMIT),
    ]
    curate, train, rl, evaluate, sft = steps
    assert rl.after is train and evaluate.after is rl and sft.after is train
    assert rl.parameters["gpus_per_node"] == 8 and rl.parameters["ntasks_per_node"] == 8  # one task per GPU
    assert train.parameters["gpus_per_node"] == 4 and evaluate.parameters["ntasks_per_node"] == 1
    text = format_plan(steps, submitted=False)
    assert "#3 rl     med-s1-1k-grpo: would submit" in text
    assert "after:     #2 (train of med-s1-1k-grpo) succeeds" in text
    assert "after:     #3 (rl of med-s1-1k-grpo) succeeds" in text
    assert pipeline.get("rl").resumable and pipeline.get("rl").task_per_gpu  # requeued and resumed


def test_an_rl_sweep_shares_curation_and_sft_and_evaluates_each_point(make_config):
    configs = [make_config("experiment=med-s1-1k-grpo", f"rl.beta={beta}") for beta in (0, 0.04)]
    steps = plan(configs, None)
    count = Counter(s.stage for s in steps)
    assert count == {"curate": 1, "train": 1, "rl": 2, "eval": 3}  # two RL models and the one SFT model
    assert {stage_slug(c, "rl") for c in configs} == {"med-s1-1k-grpo__rl.beta=0", "med-s1-1k-grpo"}
    plain = make_config("experiment=med-s1-1k")
    assert config_hash(plain, "train") == config_hash(configs[0], "train")  # med-s1-1k's SFT, shared


def test_eval_reads_the_rl_model_and_its_identity_includes_rls(make_config, tiny_model_dir):
    cfg = make_config(DEMO_RL)
    other = make_config(DEMO_RL, "rl.learning_rate=1e-3")
    assert config_hash(cfg, "eval") != config_hash(other, "eval")
    assert config_hash(cfg, "train") == config_hash(other, "train")
    with pytest.raises(
        MissingInputError,
        match=r"RL model not found at .*/demo-rl/rl: run `python run.py experiment=demo-rl stage=rl",
    ):
        pipeline.load("meds1.stages.eval:evaluated_model")(cfg)
    sft = pipeline.sft_variant(cfg)
    fake_train_output(cfg, tiny_model_dir)
    assert pipeline.load("meds1.stages.eval:evaluated_model")(sft).endswith("demo-rl/train/model")


def test_the_sft_models_eval_names_the_train_output_it_read_under_its_own_slug(make_config, tiny_model_dir):
    """`<name>-sft` evaluates its experiment's SFT model, made under `<name>`: its record says so, so the
    report links that eval to the curation the model was trained on."""
    cfg = make_config(DEMO_RL)
    fake_train_output(cfg, tiny_model_dir)
    sft = pipeline.sft_variant(cfg)
    with StageWorkspace(sft, "eval") as workspace:
        workspace.commit(record := {})
    assert record["identity"]["input"] == {
        "stage": "train",
        "slug": "demo-rl",
        "hash": config_hash(cfg, "train"),
    }
    assert record["identity"]["slug"] == "demo-rl-sft"


def test_rl_refuses_a_train_output_made_with_another_config(make_config, tiny_model_dir, monkeypatch):
    cfg = make_config(DEMO_RL, "stage=rl")
    fake_train_output(cfg, tiny_model_dir)
    marker = stage_dir(cfg, "train") / MARKER
    recorded = json.loads(marker.read_text())
    marker.write_text(json.dumps({**recorded, "config_hash": "0123456789abcdef"}))  # another config's output
    monkeypatch.setattr("meds1.rl.grpo.load_model", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(MissingInputError) as raised:
        rl_stage.run(cfg)
    message = str(raised.value)
    assert "trained model at" in message and "was made with another config (hash 0123456789abcdef" in message
    assert (
        "remake it with `python run.py experiment=demo-rl stage=train" in message and "force=true`" in message
    )


def test_the_pass_rate_filter_keeps_questions_strictly_inside_the_range_and_caches_them(
    make_config, monkeypatch
):
    cfg = make_config(DEMO_RL, "rl.data.pass_rate.enabled=true", "rl.data.pass_rate.samples=4")
    questions = data.load_questions(cfg.rl)[0][:30]
    draws = random.Random(0)
    rates = {q["id"]: draws.choice([0.0, 0.25, 0.5, 1.0]) for q in questions}
    calls = []

    def sampled(asked, cfg, model_path):
        calls.append(len(asked))
        return [rates[q["id"]] for q in asked]

    monkeypatch.setattr(data, "sample_pass_rates", sampled)
    kept, stats = data.filter_by_pass_rate(questions, cfg, "model", {"path": "model"})
    assert {q["id"] for q in kept} == {qid for qid, rate in rates.items() if 0.1 < rate < 0.9}
    assert stats["too_easy"] == sum(r >= 0.9 for r in rates.values()) and stats["computed"] == 30
    again, stats = data.filter_by_pass_rate(questions, cfg, "model", {"path": "model"})
    assert again == kept and stats["reused"] == 30 and calls == [30]  # cached, not sampled again
    other_model = data.filter_by_pass_rate(questions, cfg, "model", {"path": "another"})[1]
    assert other_model["computed"] == 30  # another model: its own pass rates


# --- TRL's GRPOConfig from the recipe -------------------------------------------------------------------


def test_each_preset_and_the_vllm_settings_reach_grpo_config(make_config, tmp_path):
    from meds1.rl.grpo import grpo_arguments

    def arguments(*overrides: str) -> dict:
        cfg = make_config("experiment=med-s1-1k-grpo", *overrides)
        per_device, accumulation = cfg.rl.batch_sizes(8)
        return grpo_arguments(cfg.rl, tmp_path, per_device, accumulation, [1.0], cfg.seed)

    grpo = arguments()
    assert (grpo["loss_type"], grpo["beta"], grpo["scale_rewards"]) == ("grpo", 0.04, "group")
    assert grpo["use_vllm"] and grpo["vllm_mode"] == "colocate" and grpo["vllm_gpu_memory_utilization"] == 0.3
    assert grpo["per_device_train_batch_size"] * grpo["gradient_accumulation_steps"] * 8 == 64
    assert not grpo["shuffle_dataset"] and grpo["num_train_epochs"] == 1  # the rows hold every epoch
    dapo = arguments("rl=dapo")
    assert (dapo["loss_type"], dapo["beta"], dapo["epsilon_high"]) == ("dapo", 0.0, 0.28)
    assert dapo["mask_truncated_completions"] and dapo["num_generations"] == 16
    dr = arguments("rl=dr-grpo")
    assert (dr["loss_type"], dr["scale_rewards"], dr["beta"]) == ("dr_grpo", "none", 0.0)
    server = arguments("rl.vllm.mode=server", "rl.vllm.server_base_url=http://node:8000")
    assert server["vllm_mode"] == "server" and server["vllm_server_base_url"] == "http://node:8000"
    fsdp = arguments("rl.fsdp.enabled=true")
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2
    assert not fsdp["gradient_checkpointing"]  # FSDP checkpoints activations itself
    assert "use_vllm" not in arguments("rl.generator=hf")
    assert arguments("+rl.grpo_args.top_entropy_quantile=0.2")["top_entropy_quantile"] == 0.2
