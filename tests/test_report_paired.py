"""Paired comparisons against a baseline (meds1.report.paired and `report.baseline`), the decoding
column and provenance in the report, checked against values worked out by hand."""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import shutil

import numpy as np
import pytest

from meds1.errors import MissingInputError, UserError
from meds1.evaluation.scoring import bootstrap_ci
from meds1.report import paired, provenance, tables
from meds1.report.experiments import Experiment, load_registry
from meds1.report.paired import compare, mcnemar_exact, read_answers
from meds1.stages import report
from tests.report_registry import DECODING, OTHER_VLLM, SOURCES

BASELINE = "med-s1-1k__curation.n_samples=1000"


@pytest.fixture
def root(report_registry, tmp_path):
    shutil.copytree(report_registry, tmp_path / "out")
    return tmp_path / "out"


def answers(source: str, *runs: list[int], start: int = 0) -> paired.Answers:
    """Questions `source/start..`, each run a list of 0/1 correctness, one entry per question."""
    questions = enumerate(zip(*runs, strict=True))
    return {f"{source}/{start + i}": (source, dict(enumerate(marks))) for i, marks in questions}


def only(rows: list[paired.Paired], source: str = "overall") -> paired.Paired:
    return next(row for row in rows if row.source == source)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 6, 0.125),  # 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
        (6, 1, 0.125),
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
        (0, 3, 0.25),  # 2 / 8
        (0, 10, 2 / 1024),
        (5, 5, 1.0),  # the doubled tail passes 1 and is capped
        (2, 3, 1.0),
    ],
)
def test_mcnemar_exact_by_hand(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_exact_large_counts_stay_finite():
    assert mcnemar_exact(2056, 2109) == pytest.approx(0.42039506, rel=1e-6)


def test_discordant_counts_difference_and_p():
    # 10 questions: 1 only the baseline gets right, 6 only the experiment, 3 both, 0 neither.
    base = answers("S", [1, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    other = answers("S", [0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    row = only(compare("x", other, "base", base))
    assert (row.baseline_better, row.experiment_better, row.n, row.unpaired) == (1, 6, 10, 0)
    assert row.p_value == pytest.approx(0.125)
    assert (row.baseline_accuracy, row.accuracy, row.difference) == pytest.approx((0.4, 0.9, 0.5))
    assert row.ci_low <= 0.5 <= row.ci_high


def test_bootstrap_interval_bounds_reasoned_by_hand():
    # d = (+1, 0): a resample of 2 questions has mean 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so the
    # 2.5th and 97.5th percentiles are the extremes.
    row = only(compare("x", answers("S", [1, 1]), "base", answers("S", [0, 1])))
    assert (row.difference, row.ci_low, row.ci_high) == (0.5, 0.0, 1.0)
    # d = (0, 0, +1, 0): P(mean = 0) = (3/4)^4 = 0.32 > 2.5%, so the low bound is 0; P(mean >= 3/4) =
    # 13/256 = 5.1% > 2.5% but P(mean = 1) = 1/256 < 2.5%, so the high bound is 3/4.
    row = only(compare("x", answers("S", [1, 1, 1, 0]), "base", answers("S", [1, 1, 0, 0])))
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (0.25, 0.0, 0.75, 1.0)
    # Every question flips the same way: the interval collapses on the difference.
    row = only(compare("x", answers("S", [1, 1, 1]), "base", answers("S", [0, 0, 0])))
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (1.0, 1.0, 1.0, 0.25)


def test_identical_arms_have_no_discordant_pairs():
    same = answers("S", [1, 0, 1, 1, 0])
    row = only(compare("x", same, "base", same))
    assert (row.difference, row.ci_low, row.ci_high, row.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert row.baseline_better == row.experiment_better == 0


def test_only_questions_both_answered_count():
    base = answers("S", [1, 1, 1, 1, 1])  # S/0..S/4
    other = answers("S", [0, 0, 0, 0, 0], start=2)  # S/2..S/6
    row = only(compare("x", other, "base", base))
    assert (row.n, row.unpaired, row.difference, row.baseline_better) == (3, 4, -1.0, 3)
    assert compare("x", answers("T", [1]), "base", base) == []  # nothing in common: no rows


def test_per_source_and_overall():
    base = {**answers("A", [1, 1, 0, 0]), **answers("B", [0, 0])}
    other = {**answers("A", [1, 1, 1, 1]), **answers("B", [0, 1])}
    rows = compare("x", other, "base", base)
    assert [r.source for r in rows] == ["A", "B", "overall"]
    assert only(rows, "A").difference == 0.5 and only(rows, "B").difference == 0.5
    overall = only(rows, "overall")
    assert (overall.n, overall.experiment_better, overall.difference) == (6, 3, pytest.approx(0.5))
    assert overall.p_value == 0.25


def test_repeats_are_paired_by_run():
    # The baseline ran twice, the experiment three times: only runs 0 and 1 are paired.
    base = answers("S", [1, 0, 1], [0, 0, 1])
    other = answers("S", [1, 1, 1], [1, 0, 1], [0, 0, 0])
    row = only(compare("x", other, "base", base))
    # d per question: (1+1)/2 - (1+0)/2 = +0.5, (1+0)/2 - 0 = +0.5, 1 - 1 = 0
    assert (row.runs, row.n, row.difference) == (2, 3, pytest.approx(1 / 3))
    assert (row.baseline_accuracy, row.accuracy) == pytest.approx((0.5, 5 / 6))
    assert (row.baseline_better, row.experiment_better, row.p_value) == (0, 2, 0.5)
    # A question whose baseline run 1 is missing is paired on run 0 alone.
    del base["S/0"][1][1]
    row = only(compare("x", other, "base", base))
    assert row.n == 3 and row.difference == pytest.approx((0 + 0.5 + 0) / 3)


def pairs_of(*questions: tuple[int, ...]) -> list[paired.Pair]:
    """Pairs from each question's per-run differences d (-1, 0, +1)."""
    return [
        paired.Pair(d.count(-1) / len(d), d.count(1) / len(d), len(d), d.count(-1), d.count(1))
        for d in questions
    ]


def test_one_run_per_question_is_exactly_the_question_bootstrap():
    rng = random.Random(3)
    questions = [(rng.choice((-1, 0, 0, 1, 1)),) for _ in range(500)]
    d = np.array([q[0] for q in questions], dtype=float)
    assert paired.hierarchical_paired_ci(pairs_of(*questions)) == bootstrap_ci(d)


def test_runs_that_agree_add_no_width():
    # Each question's two runs differ the same way: redrawing runs changes nothing, so the interval is
    # the question bootstrap of the per-question differences, to the bit.
    questions = [(1, 1)] * 30 + [(0, 0)] * 50 + [(-1, -1)] * 20
    d = np.array([q[0] for q in questions], dtype=float)
    assert paired.hierarchical_paired_ci(pairs_of(*questions)) == bootstrap_ci(d)


def test_runs_that_disagree_widen_the_interval_by_hand():
    # One question whose runs went +1 and -1: a redraw of its two runs has mean -1 (1/4), 0 (1/2) or
    # +1 (1/4), so the percentiles are the extremes.
    assert paired.hierarchical_paired_ci(pairs_of((1, -1))) == [-1.0, 1.0]
    # 50 such questions: the resample's mean is X / 50 - 1 with X ~ Binomial(100, 1/2) (every question
    # is alike, so only the 100 run redraws vary), whose 2.5% and 97.5% points are 40 and 60.
    low, high = paired.hierarchical_paired_ci(pairs_of(*[(1, -1)] * 50))
    assert low == pytest.approx(-0.2, abs=0.03) and high == pytest.approx(0.2, abs=0.03)
    # Runs (+1, 0) on every question: each question's mean difference is 0.5, so resampling only the
    # means gives [0.5, 0.5]; redrawing runs gives X / 100 with X ~ Binomial(100, 1/2): [0.40, 0.60].
    assert bootstrap_ci(np.full(50, 0.5)) == [0.5, 0.5]
    low, high = paired.hierarchical_paired_ci(pairs_of(*[(1, 0)] * 50))
    assert low == pytest.approx(0.4, abs=0.03) and high == pytest.approx(0.6, abs=0.03)


def test_compared_arms_with_repeats_get_the_hierarchical_interval():
    # Two runs of 40 questions: in run 0 the experiment alone is right, in run 1 the baseline alone.
    base = answers("S", [0] * 40, [1] * 40)
    other = answers("S", [1] * 40, [0] * 40)
    row = only(compare("x", other, "base", base))
    assert (row.runs, row.difference, row.baseline_better, row.experiment_better) == (2, 0.0, 0, 0)
    assert row.ci_low < -0.1 and row.ci_high > 0.1  # the per-question means alone would say [0, 0]
    assert [row.ci_low, row.ci_high] == paired.hierarchical_paired_ci(pairs_of(*[(1, -1)] * 40))


def test_read_answers_leaves_a_torn_file_alone(tmp_path):
    file = tmp_path / "predictions.jsonl"
    lines = [
        {"id": "q1", "source": "S", "run": 0, "correct": True, "output": "The answer is A."},
        {"id": "q1", "source": "S", "run": 1, "correct": False},
        {"id": 7, "source": "T", "correct": True},  # no run: run 0; numeric id: its text
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines) + '{"id": "q2", "sou'
    file.write_text(data)
    assert read_answers(file) == {"q1": ("S", {0: True, 1: False}), "7": ("T", {0: True})}
    assert file.read_text() == data


def experiment(metrics=None, eval_config=None, provenance_by_stage=None) -> Experiment:
    config = {"eval": eval_config} if eval_config else {}
    return Experiment("x", "", config, "-", "x", metrics, None, None, None, provenance_by_stage or {})


def test_decoding_labels():
    sampled = {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 2000}
    assert tables.decoding(experiment(eval_config=sampled)) == "T=0.5 p=0.9 2000"
    greedy = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 2048}
    assert tables.decoding(experiment(eval_config=greedy)) == "greedy 2048"
    # what the eval recorded in its metrics wins over the experiment's config
    assert tables.decoding(experiment({"decoding": sampled}, eval_config=greedy)) == "T=0.5 p=0.9 2000"
    assert tables.decoding(experiment()) == "-"
    long = {"temperature": 1, "top_p": None, "max_new_tokens": 1_000_000}
    assert tables.decoding(experiment(eval_config=long)) == "T=1 p=- 1000000"


def run_report(make_config, *overrides):
    return report.run(make_config("stage=report", "report.status=false", *overrides))


def test_report_with_baseline_writes_paired_comparisons(make_config, root, capsys):
    run_report(make_config, f'report.baseline="{BASELINE}"')
    out = root / "report"
    data = load_registry(root / "results.json")["experiments"]
    base = read_answers(data[BASELINE]["results"]["eval"]["outputs_path"])
    rows = list(csv.DictReader((out / "paired.csv").open()))
    compared = {r["experiment"] for r in rows}
    assert compared == {
        "base",
        "med-s1-25k",
        "random-1k__curation.n_samples=1000",
        "med-s1-1k__curation.n_samples=5000",
        "med-s1-1k__trainer.learning_rate=2e-05",
    }
    for slug in compared:
        expected = compare(slug, read_answers(data[slug]["results"]["eval"]["outputs_path"]), BASELINE, base)
        got = [r for r in rows if r["experiment"] == slug]
        assert [r["source"] for r in got] == [*sorted(SOURCES), "overall"]
        for row, want in zip(got, expected, strict=True):
            assert float(row["difference"]) == want.difference and float(row["p_value"]) == want.p_value
            assert [float(row["ci_low"]), float(row["ci_high"])] == [want.ci_low, want.ci_high]
            assert int(row["n"]) == want.n and row["decoding"] == row["baseline_decoding"] == DECODING
        # every question is shared, so the paired difference is the difference of the registry accuracies
        overall = {s: data[s]["results"]["eval"]["metrics"]["overall"]["accuracy"] for s in (slug, BASELINE)}
        assert float(got[-1]["difference"]) == pytest.approx(overall[slug] - overall[BASELINE])
        assert int(got[-1]["n"]) == 700 and got[-1]["unpaired"] == "0"

    text = (out / "results.md").read_text()
    section = text.split(f"## Paired with baseline {BASELINE} ({DECODING})")[1].split("\n## ")[0]
    base_row = next(r for r in rows if r["experiment"] == "base" and r["source"] == "overall")
    low, high = (100 * float(base_row[k]) for k in ("ci_low", "ci_high"))
    expected_cells = f"| {100 * float(base_row['difference']):+.1f} [{low:+.1f}, {high:+.1f}] |"
    assert f"| base | overall | {DECODING} | 700 | 0 | 1 |" in section and expected_cells in section
    # the old-schema eval and the test-time-scaling runs left no predictions: named, not compared
    assert re.search(r"Not compared .*random-1k__curation.n_samples=5000", section)
    page = (out / "index.html").read_text()
    assert f"Paired with baseline {BASELINE}" in page and "McNemar p" in page
    assert "McNemar p" in capsys.readouterr().out

    run_report(make_config)  # a later report without a baseline removes the stale paired.csv
    assert not (out / "paired.csv").exists()


def test_report_without_baseline_reads_no_predictions(make_config, root, monkeypatch):
    def fail(path):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(paired, "read_answers", fail)
    run_report(make_config)
    assert "Paired with baseline" not in (root / "report" / "results.md").read_text()


@pytest.mark.parametrize("baseline", ["nope", "med-s1-1k"])  # unknown; curated and trained, never evaluated
def test_baseline_without_eval_is_one_line(make_config, root, baseline):
    with pytest.raises(
        UserError, match=r"report.baseline: '.*' is not an experiment with eval results; valid: "
    ) as e:
        run_report(make_config, f"report.baseline={baseline}")
    assert "base, med-s1-1k__curation.n_samples=1000" in str(e.value) and "\n" not in str(e.value)


def test_baseline_named_as_on_the_command_line(make_config, root):
    typed = "report.baseline='experiment=med-s1-1k curation.n_samples=5000'"
    run_report(make_config, typed)
    rows = list(csv.DictReader((root / "report" / "paired.csv").open()))
    assert {r["baseline"] for r in rows} == {"med-s1-1k__curation.n_samples=5000"}
    assert "med-s1-1k__curation.n_samples=5000" not in {r["experiment"] for r in rows}


def test_baseline_without_predictions_says_so(make_config, root):
    with pytest.raises(
        MissingInputError, match="no predictions.jsonl for random-1k__curation.n_samples=5000"
    ):
        run_report(make_config, 'report.baseline="random-1k__curation.n_samples=5000"')


def test_predictions_found_under_root_when_recorded_paths_are_gone(make_config, root):
    """A registry copied off a cluster keeps the cluster's absolute paths."""
    registry = root / "results.json"
    registry.write_text(registry.read_text().replace(str(root), "/cluster/scratch/out"))
    run_report(make_config, f'report.baseline="{BASELINE}"')
    assert (root / "report" / "paired.csv").read_text().count("\n") == 1 + 5 * (len(SOURCES) + 1)


def test_provenance_table_and_warning(make_config, root, caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="meds1.stages.report"):
        run_report(make_config)
    shown = capsys.readouterr().out.splitlines()
    assert "base: -" in shown
    line = next(line for line in shown if line.startswith(f"{BASELINE}: "))
    assert line.startswith(f"{BASELINE}: meds1 0.1.0 b971d66a0c | python 3.11.9 | torch 2.6.0 ")
    assert "curate cpu AMD EPYC 7763, train 4x NVIDIA H100 80GB HBM3 (CUDA 12.4), eval 1x" in line
    warnings = [r.getMessage() for r in caplog.records if "provenance" in r.getMessage()]
    assert len(warnings) == 1 and "eval vllm differs: 0.8.5" in warnings[0]
    assert f"{OTHER_VLLM} (random-1k__curation.n_samples=1000)" in warnings[0]
    text = (root / "report" / "results.md").read_text()
    assert "## Note: compared experiments differ in provenance" in text and OTHER_VLLM in text
    table = text.split("## Provenance\n")[1]
    assert "| base | - | - |" in table  # recorded before provenance existed
    row = next(line for line in table.splitlines() if line.startswith(f"| {BASELINE} | train |"))
    assert "| 0.1.0 b971d66a0c | 3.11.9 | 2.6.0 |" in row and "4x NVIDIA H100 80GB HBM3 (CUDA 12.4)" in row
    assert "| 1001 on gpu-a01 | fc0a5d1 3f8e2a9c41d0 |" in row
    assert "Compared experiments differ in provenance" in (root / "report" / "index.html").read_text()


def test_same_provenance_but_job_ids_is_no_warning(make_config, root, caplog):
    with caplog.at_level(logging.WARNING, logger="meds1.stages.report"):
        run_report(
            make_config,
            "report.experiments=[med-s1-1k__curation*]",
            f'report.baseline="{BASELINE}"',
        )
    assert not [r for r in caplog.records if "provenance" in r.getMessage()]
    assert "differ in provenance" not in (root / "report" / "results.md").read_text()


def test_provenance_differences_name_each_field():
    record = {
        "meds1": {"version": "0.1.0", "commit": "abc", "dirty": False},
        "python": "3.11.9",
        "packages": dict.fromkeys(provenance.PACKAGES, "1.0"),
        "device": {"kind": "cuda", "name": "H100", "count": 1, "cuda": "12.4"},
        "slurm": {"job_id": "1", "nodes": "n1"},
        "source": {"revision": "r1", "fingerprint": "f1"},
    }
    changed = json.loads(json.dumps(record))
    changed["meds1"]["dirty"] = True
    changed["device"] |= {"count": 8, "cuda": "12.1"}
    changed["slurm"] = None
    changed["source"]["fingerprint"] = "f2"
    a = experiment(provenance_by_stage={"eval": record})
    b = experiment(provenance_by_stage={"eval": changed})
    b.slug = "y"
    old = experiment()
    old.slug = "old"
    lines = provenance.differences([a, b, old])
    assert [line.split(" differs")[0] for line in lines] == [
        "eval meds1 dirty",
        "eval CUDA",
        "eval source fingerprint",
    ]
    assert lines[0] == "eval meds1 dirty differs: False (x); True (y)"
    assert provenance.differences([a, old]) == []
    assert provenance.cells(None) == ["-"] * (len(provenance.HEADER) - 2)


def test_experiments_that_saw_other_questions_of_a_source_are_flagged():
    suite = {"MedQA": {"questions": 3, "fingerprint": "f1"}, "PubMedQA": {"questions": 2, "fingerprint": "p"}}
    a, b, c = experiment({"suite": suite}), experiment({"suite": suite}), experiment()
    b.slug, c.slug = "y", "z"  # c: recorded before metrics kept the suite
    assert provenance.suite_differences([a, b, c]) == []
    b.metrics = {"suite": {**suite, "MedQA": {"questions": 4, "fingerprint": "f2"}}}
    assert provenance.suite_differences([a, b, c]) == [
        "eval questions of MedQA differ: f1 (3 questions) (x); f2 (4 questions) (y)"
    ]
