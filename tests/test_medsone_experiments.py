"""`python -m meds1.medsone experiments`: med-s1's experiment configs as meds1 experiment files
that compose and plan, on a constructed results.json with representative entries of med-s1@d15c393's
(and on the real file when a copy is at hand)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meds1.config.compose import compose
from meds1.config.schema import SlurmLauncherConfig
from meds1.launch.plan import plan
from meds1.medsone.experiments import import_experiments
from meds1.medsone.results import main
from tests.conftest import REPO

TRAINING = {
    "learning_rate": 5e-06,
    "batch_size": 2,
    "num_epochs": 8,
    "weight_decay": 0.1,
    "warmup_ratio": 0.05,
    "optimizer": {
        "no_decay_params": ["bias", "LayerNorm.weight"],
        "adam_beta1": 0.9,
        "adam_beta2": 0.95,
        "adam_epsilon": 1e-08,
    },
    "gradient_accumulation_steps": 16,
}
SAME = "same as base-step-prompt"
EXPERIMENTS = {  # entries shaped as in med-s1@d15c393 results.json (names and values from it)
    "base": {"model_key": "llama3.1:8b", "curation": None, "training_params": None,
             "datasets": {"curate": None, "eval": "huatuo-eval"}},
    "base-qwen": {"model_key": "qwen2.5:7b", "curation": None, "training_params": None,
                  "datasets": "same as base", "format": "qwen"},
    "base-step-prompt": {"model_key": "llama3.1:8b", "prompting": "step",
                         "datasets": {"curate": "huatuo-sft", "eval": "huatuo-eval"}},
    "medqa-1k-embedding-difficulty-diversity-question-cluster-10-outlier-5": {
        "model_key": "llama3.1:8b",
        "curation": {"method": "embedding-diversity", "format": "huatuo", "n_samples": 1000,
                     "column": "Question", "cluster_percentage": 10, "outlier_percentage": 5,
                     "intra_group_ranking": "cot-length"},
        "training_params": TRAINING, "datasets": SAME},
    "medqa-1k-random-step-extract": {
        "model_key": "llama3.1:8b", "curation": {"method": "random", "format": "huatuo", "n_samples": 1000,
                                                 "extract": "step"},
        "training_params": "same as medqa-1k-embedding-difficulty-diversity-question-cluster-10-outlier-5",
        "datasets": SAME},
    "medqa-1k-step-extract-qwen": {  # training_params: two hops
        "model_key": "qwen2.5:7b", "curation": {"method": "random", "format": "qwen", "n_samples": 1000,
                                                "extract": "step"},
        "training_params": "same as medqa-1k-random-step-extract", "datasets": SAME},
    "medqa-1k-random-collapse-100-restore": {
        "model_key": "llama3.1:8b",
        "curation": {"method": "random", "format": "huatuo", "n_samples": 1000, "extract": "step",
                     "perturbation": {"type": "collapse_consecutive", "rate": 1.0}, "restore": True},
        "training_params": "same as medqa-1k-random-step-extract", "datasets": SAME},
    "medqa-1k-step-extract-nemotron": {
        "model_key": "nemotron:8b", "curation": {"method": "random", "format": "nemotron", "n_samples": 1000,
                                                 "extract": "step"},
        "training_params": "same as medqa-1k-random-step-extract", "datasets": SAME},
    "medqa-25k-no-cot": {
        "model_key": "llama3.1:8b", "curation": {"method": "all", "format": "huatuo", "n_samples": 25371,
                                                 "extract": "none"},
        "training_params": {**TRAINING, "learning_rate": 2e-06, "num_epochs": 3}, "datasets": SAME},
    "medqa-nejmcr-1k-random-nejmcr-qa-reason-qwen-tuned": {
        "model_key": "qwen2.5:7b",
        "curation": {"method": "random", "format": "qwen", "n_samples": 1000,
                     "extract": ["nejmcr-qa", "nejmcr-reason", "nejmcr-clean"]},
        "training_params": {**TRAINING, "gradient_accumulation_steps": 2, "total_batch_size": 16},
        "datasets": {"curate": "nejmcr", "eval": "huatuo-eval"}},
    "s1-1k-random-no-cot": {
        "model_key": "llama3.1:8b", "curation": {"method": "random", "format": "huatuo", "n_samples": 1000,
                                                 "extract": "none"},
        "datasets": {"curate": "s1-gemini-raw", "eval": "gpqa-diamond"}, "training_params": TRAINING},
    "qwen-32b-test": {
        "model_key": "qwq:32B",
        "curation": {"method": "random", "huatuo_format": True, "n_samples": 1000, "extract": "step",
                     "perturbation": {"type": "shuffle", "rate": 1.0}, "restore": True},
        "training_params": "same as medqa-1k-embedding-difficulty-diversity-question-cluster-10-outlier-5",
        "datasets": SAME},
    "broken-reference": {"model_key": "llama3.1:8b", "curation": {"method": "random", "n_samples": 10},
                         "training_params": "same as nowhere", "datasets": SAME},
    "odd-keys": {"model_key": "llama3.1:8b", "prompting": "cot", "datasets": SAME,
                 "curation": {"method": "embedding-diversity", "n_samples": 100, "column": "Complex_CoT",
                              "weird": 1},
                 "training_params": {**TRAINING, "max_grad_norm": 1.0}},
    "unknown-model": {"model_key": "gpt9", "curation": None, "training_params": None,
                      "datasets": "same as base"},
}  # fmt: skip
NOT_WRITTEN = {"broken-reference", "unknown-model"}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("medsone")
    results = folder / "results.json"
    results.write_text(
        json.dumps(
            {"experiments": {n: {"description": f"d {n}", "config": c} for n, c in EXPERIMENTS.items()}}
        )
    )
    out = folder / "conf"
    return results, out, {t.name: t for t in import_experiments(results, out, source="med-s1@d15c393")}


def compose_imported(out: Path, name: str, *extra: str):
    return compose([f"hydra.searchpath=[file://{out}]", f"experiment={name}", *extra])


def test_every_experiment_is_written_or_reported(imported):
    _, out, translations = imported
    written = {p.stem for p in (out / "experiment").glob("*.yaml")}
    assert written == set(EXPERIMENTS) - NOT_WRITTEN
    assert translations["broken-reference"].problems == [
        "not written: broken-reference: training_params is 'same as nowhere', "
        "which results.json does not hold"
    ]
    assert (
        translations["unknown-model"].problems[0].startswith('model_key="gpt9": unknown; known: llama3.1:8b')
    )
    text = (out / "experiment" / "medqa-1k-random-step-extract.yaml").read_text()
    assert text.startswith(
        "# @package _global_\n# Imported from med-s1 experiment 'medqa-1k-random-step-extract'"
    )
    assert "of med-s1@d15c393" in text.splitlines()[1]


def test_untranslatable_keys_are_reported_one_line_each(imported):
    _, _, translations = imported
    assert translations["base-qwen"].problems == [
        'format="qwen": a top-level format is ignored by med-s1 (it reads curation.format)'
    ]
    assert translations["qwen-32b-test"].problems == [
        "curation.huatuo_format=true: legacy key med-s1 ignores (layout huatuo)"
    ]
    assert translations["medqa-1k-random-step-extract"].problems == []
    assert translations["odd-keys"].problems == [
        'curation.column="Complex_CoT": meds1 embeds the Question only',
        "curation.weird=1: no meds1 equivalent: not applied",
        "training_params.max_grad_norm=1.0: no meds1 equivalent: not applied",
        'prompting="cot": unknown; known: step',
    ]
    text = (imported[1] / "experiment" / "odd-keys.yaml").read_text()
    assert "# Not translated: curation.weird=1: no meds1 equivalent: not applied" in text


def test_resolution_training_and_curation_settings(imported):
    _, out, _ = imported
    cfg = compose_imported(out, "medqa-1k-step-extract-qwen")  # training_params two hops away
    assert cfg.stages == ["curate", "train", "eval"] and cfg.model.path == "Qwen/Qwen2.5-7B-Instruct"
    trainer = cfg.trainer
    assert (trainer.learning_rate, trainer.num_epochs, trainer.global_batch_size) == (5e-06, 8, 128)
    assert (trainer.weight_decay, trainer.warmup_ratio, trainer.adam_beta1, trainer.adam_beta2) == (
        0.1,
        0.05,
        0.9,
        0.95,
    )
    assert (trainer.adam_epsilon, trainer.block_size, trainer.validation_fraction) == (1e-08, 8192, 0.1)
    assert trainer.keep == "best_eval_loss"  # med-s1 kept its state of lowest eval loss
    assert (cfg.curation.method, cfg.curation.pool, cfg.curation.n_samples) == ("random", "all", 1000)
    assert cfg.curation.format.layout == "s1" and cfg.curation.format.clean_text
    assert cfg.curation.trace.transforms == ["step"] and cfg.curation.trace.perturbation.type is None
    assert cfg.curation.source.name == "FreedomIntelligence/medical-o1-reasoning-SFT"
    assert cfg.eval.aggregate == "majority" and cfg.eval.repeats_per_source["GPQA_Medical_test"] == 5

    restore = compose_imported(out, "medqa-1k-random-collapse-100-restore").curation.trace
    assert restore.transforms == ["step"] and restore.restore
    assert (restore.perturbation.type, restore.perturbation.rate) == ("collapse_consecutive", 1.0)

    nejmcr = compose_imported(out, "medqa-nejmcr-1k-random-nejmcr-qa-reason-qwen-tuned")
    assert nejmcr.curation.trace.transforms == ["nejmcr-qa", "nejmcr-reason", "nejmcr-clean"]
    assert nejmcr.curation.source.path.endswith("nejmcr") and nejmcr.trainer.global_batch_size == 16

    nemotron = compose_imported(out, "medqa-1k-step-extract-nemotron")
    assert nemotron.curation.format.layout == "nemotron"
    assert nemotron.curation.format.system_prompt == nemotron.eval.system_prompt == "detailed thinking on"

    embedding = compose_imported(out, "medqa-1k-embedding-difficulty-diversity-question-cluster-10-outlier-5")
    assert (
        embedding.curation.method == "embedding-diversity"
        and embedding.curation.cluster_ranking == "cot-length"
    )
    assert (embedding.curation.cluster_fraction, embedding.curation.outlier_fraction) == (0.1, 0.05)

    no_cot = compose_imported(out, "medqa-25k-no-cot")
    assert no_cot.curation.method == "all" and no_cot.curation.trace.transforms == ["none"]
    assert no_cot.trainer.learning_rate == 2e-06

    qwq = compose_imported(out, "qwen-32b-test")
    assert qwq.model.path == "Qwen/QwQ-32B" and qwq.curation.format.layout == "huatuo"
    assert qwq.curation.trace.perturbation.type == "shuffle" and qwq.curation.trace.restore


def test_eval_only_experiments(imported):
    _, out, _ = imported
    step = compose_imported(out, "base-step-prompt")
    assert step.stages == ["eval"] and step.eval.prompting == "step" and step.eval.temperature == 0.0
    qwen = compose_imported(out, "base-qwen")
    assert qwen.stages == ["eval"] and qwen.model.name == "qwen2.5-7b" and qwen.eval.prompting == "plain"


def test_s1_gemini_experiment_names_the_gpqa_diamond_suite(imported):
    _, out, _ = imported
    text = (out / "experiment" / "s1-1k-random-no-cot.yaml").read_text()
    assert "override /eval: gpqa-diamond" in text and "override /curation/source: s1-gemini" in text
    cfg = compose_imported(out, "s1-1k-random-no-cot")
    assert cfg.curation.source.name == "qfq/geminiall_nona" and cfg.eval.temperature == 0.0


def test_every_written_experiment_plans(imported, tmp_path):
    _, out, _ = imported
    for path in sorted((out / "experiment").glob("*.yaml")):
        cfg = compose_imported(out, path.stem, f"paths.root={tmp_path}")
        steps = plan([cfg], SlurmLauncherConfig())
        assert [step.stage for step in steps] == list(cfg.stages)


def test_command_line_reports_each_problem_on_its_own_line(imported, tmp_path, capsys):
    results, _, _ = imported
    assert main(["experiments", str(results), "--out", str(tmp_path / "conf")]) == 1  # two not written
    captured = capsys.readouterr()
    problems = captured.err.splitlines()
    assert (
        'base-qwen: format="qwen": a top-level format is ignored by med-s1 (it reads curation.format)'
        in problems
    )
    assert len(problems) == 8
    assert captured.out.startswith(f"wrote {len(EXPERIMENTS) - 2} of {len(EXPERIMENTS)} experiments")


@pytest.mark.slow
def test_run_py_plans_an_imported_experiment_on_slurm(imported, tmp_path):
    _, out, _ = imported
    result = subprocess.run(
        [sys.executable, "run.py", "--config-dir", str(out),
         "experiment=medqa-1k-random-collapse-100-restore", "stage=all", "hydra/launcher=slurm",
         "dry_run=true", f"paths.root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "#2 train  medqa-1k-random-collapse-100-restore: would submit" in result.stdout


MEDSONE_RESULTS = Path(os.environ.get("MEDSONE_RESULTS", "/work/.mirror/som-shahlab+med-s1/repo"))


@pytest.mark.slow
def test_all_75_experiments_of_medsone_head_compose_and_plan(tmp_path):
    """med-s1@d15c393's own results.json (MEDSONE_RESULTS: the file, or a git dir holding it at HEAD)."""
    if MEDSONE_RESULTS.is_file():
        results = MEDSONE_RESULTS
    elif MEDSONE_RESULTS.is_dir():
        results = tmp_path / "results.json"
        shown = subprocess.run(
            ["git", "--git-dir", str(MEDSONE_RESULTS), "show", "d15c393:results.json"], capture_output=True
        )
        if shown.returncode:
            pytest.skip(f"no med-s1 results.json at d15c393 in {MEDSONE_RESULTS}")
        results.write_bytes(shown.stdout)
    else:
        pytest.skip("set MEDSONE_RESULTS to med-s1's results.json")
    translations = import_experiments(results, tmp_path / "conf")
    assert len(translations) == 75 and all(t.text is not None for t in translations)
    reported = sorted(p for t in translations for p in t.problems)
    assert len(reported) == 2  # a top-level format, the legacy huatuo_format
    for translation in translations:
        cfg = compose_imported(tmp_path / "conf", translation.name, f"paths.root={tmp_path / 'out'}")
        assert plan([cfg], SlurmLauncherConfig())
