"""stage=report on a registry with several experiments, sweeps and test-time-scaling runs."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil
import subprocess

import pytest
from PIL import Image

from meds1.config.compose import compose
from meds1.errors import MissingInputError, UserError
from meds1.evaluation import harnesses
from meds1.report import plots, provenance
from meds1.report.experiments import experiments, load_registry
from meds1.report.status import statuses
from meds1.stages import report
from tests.report_registry import DECODING, SOURCES, SWEEP, TTS


@pytest.fixture
def root(report_registry, tmp_path):
    shutil.copytree(report_registry, tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture(scope="module")
def full_report(report_registry, tmp_path_factory, model_cache):
    """stage=report with default options, run once on a copy of the fixture registry."""
    root = tmp_path_factory.mktemp("full") / "out"
    shutil.copytree(report_registry, root)
    result = report.run(compose(["stage=report", f"paths.root={root}", f"paths.cache={model_cache}"]))
    return root, result


@pytest.fixture
def data(report_registry):
    return load_registry(report_registry / "results.json")


def run_report(make_config, *overrides):
    return report.run(make_config("stage=report", *overrides))


def chosen(data, *slugs, group_by="curation.method"):
    return experiments(data, list(slugs or data["experiments"]), group_by)


def test_csv_numbers_are_the_registry_metrics(full_report, data):
    root, _ = full_report
    rows = list(csv.DictReader((root / "report" / "results.csv").open()))
    with_eval = {s for s, e in data["experiments"].items() if "eval" in e["results"]}
    assert {r["experiment"] for r in rows} == with_eval
    assert len(rows) == len(with_eval) * (len(SOURCES) + 1)
    for row in rows:
        metrics = data["experiments"][row["experiment"]]["results"]["eval"]["metrics"]
        summary = metrics["overall"] if row["source"] == "overall" else metrics["per_source"][row["source"]]
        assert int(row["n"]) == summary["n"]
        assert float(row["accuracy"]) == summary["accuracy"]
        if "accuracy_huatuo" in summary:
            assert float(row["accuracy_huatuo"]) == summary["accuracy_huatuo"]
            assert [float(row["ci_low"]), float(row["ci_high"])] == summary["ci95"]
        else:  # metrics from before the schema had these fields
            assert row["accuracy_huatuo"] == row["ci_low"] == ""


def test_overall_is_the_question_weighted_average(data):
    for exp in chosen(data):
        if exp.metrics:
            per_source = exp.metrics["per_source"].values()
            weighted = sum(s["accuracy"] * s["n"] for s in per_source) / sum(s["n"] for s in per_source)
            assert exp.metrics["overall"]["accuracy"] == pytest.approx(weighted)


def test_markdown_tables(full_report, data):
    root, _ = full_report
    text = (root / "report" / "results.md").read_text()
    strict, huatuo, counts = text.split("\n## ")[1:4]
    slug = "med-s1-1k__curation.n_samples=5000"
    metrics = data["experiments"][slug]["results"]["eval"]["metrics"]
    row = next(line for line in strict.splitlines() if line.startswith(f"| {slug} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = [c.strip() for c in strict.splitlines()[2].strip("|").split("|")]
    assert header == ["experiment", "curation.method", "decoding", *sorted(SOURCES), "overall"]
    overall = metrics["overall"]
    low, high = overall["ci95"]
    assert cells[1:3] == ["s1", DECODING]
    assert cells[-1] == f"{100 * overall['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    medqa = metrics["per_source"]["MedQA_USLME_test"]
    assert f"| {slug} | s1 | {DECODING} |" in huatuo and f"{100 * medqa['accuracy_huatuo']:.1f}" in huatuo
    old = next(
        line for line in huatuo.splitlines() if line.startswith("| random-1k__curation.n_samples=5000 |")
    )
    assert old.count("| -") == len(SOURCES) + 1  # no HuatuoGPT-compatible numbers in the old schema
    assert f"| {slug} | 5000 | 400 (5%) | 200 (5%) | 100 (5%) | 700 (5%) |" in counts


def test_linked_curation_and_groups(data):
    by_slug = {e.slug: e for e in chosen(data)}
    lr = by_slug["med-s1-1k__trainer.learning_rate=2e-05"]
    assert lr.curation_slug == "med-s1-1k" and lr.train_samples == 1000 and lr.group == "s1"
    assert by_slug["base"].group == "-" and by_slug["base"].curation is None
    assert by_slug["med-s1-25k"].group == "all" and by_slug["med-s1-25k"].train_samples == 16000
    assert by_slug["med-s1-1k__eval.max_new_tokens=512"].model == "med-s1-1k"


def test_sample_efficiency_series(data):
    sweep = [f"{e}__curation.n_samples={n}" for e, n, _, _ in SWEEP]
    chart = plots.sample_efficiency(chosen(data, *sweep, "base"), "accuracy")
    expected = {}
    for (experiment, n, _, _), slug in zip(SWEEP, sweep, strict=True):
        overall = data["experiments"][slug]["results"]["eval"]["metrics"]["overall"]
        expected.setdefault("s1" if experiment == "med-s1-1k" else "random", []).append(
            (n, 100 * overall["accuracy"])
        )
    base = 100 * data["experiments"]["base"]["results"]["eval"]["metrics"]["overall"]["accuracy"]
    assert {k: v for k, v in chart.series.items() if "base" not in k} == expected
    assert [y for _, y in chart.series["base (not fine-tuned)"]] == [base, base]
    assert_png(chart.png)


def test_huatuo_metric_leaves_out_experiments_without_it(data):
    chart = plots.sample_efficiency(chosen(data), "accuracy_huatuo")
    assert [x for x, _ in chart.series["random"]] == [1000]  # the 5000-row point has old metrics only
    assert [x for x, _ in chart.series["s1"]] == [1000, 1000, 5000]


def test_thinking_tokens_series(data):
    chart = plots.thinking_tokens(chosen(data), "accuracy")
    slugs = [f"med-s1-1k__eval.max_new_tokens={budget}" for budget, _, _ in TTS]
    overall = [data["experiments"][s]["results"]["eval"]["metrics"]["overall"]["accuracy"] for s in slugs]
    assert chart.series == {"med-s1-1k": [(t, 100 * a) for (_, _, t), a in zip(TTS, overall, strict=True)]}


def test_per_source_bars(data):
    chart = plots.per_source(chosen(data, "base", "med-s1-25k"), "accuracy")
    for slug in ("base", "med-s1-25k"):
        metrics = data["experiments"][slug]["results"]["eval"]["metrics"]
        expected = [(s, 100 * metrics["per_source"][s]["accuracy"]) for s in sorted(SOURCES)]
        assert chart.series[slug] == [*expected, ("overall", 100 * metrics["overall"]["accuracy"])]


def test_curation_funnel_and_specialties(data):
    funnel = plots.curation_funnel(chosen(data, "med-s1-1k__curation.n_samples=1000", "med-s1-25k"))
    assert funnel.series["med-s1-1k__curation.n_samples=1000"] == [
        ("all rows", 25371),
        ("quality/cot_truncated", 25010),
        ("quality/missing_Response", 25000),
        ("difficulty/base_model_correct", 16000),
        ("selection/not_selected", 1000),
    ]
    assert funnel.series["med-s1-25k"][-1] == ("selection/not_selected", 16000)  # "all": nothing unselected
    shares = plots.specialties(chosen(data, "med-s1-1k__curation.n_samples=1000")).series
    assert shares == {
        "med-s1-1k__curation.n_samples=1000": [
            ("Cardiology", 50.0),
            ("Neurology", 49.0),
            ("Dermatology", 1.0),
        ]
    }


def assert_png(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    image.verify()
    assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200
    return image.size


UNTRACED_CHARTS = [n for n in plots.CHART_NAMES if n not in plots.TRACE_CHARTS + plots.RL_CHARTS]  # none here


def test_stage_writes_every_output(full_report):
    root, result = full_report
    out = root / "report"
    names = sorted(p.name for p in out.iterdir())
    drawn = UNTRACED_CHARTS
    assert names == sorted(["results.md", "results.csv", "index.html", *(f"{n}.png" for n in drawn)])
    assert sorted(result["files"]) == sorted(str(out / n) for n in names)
    for name in drawn:
        assert_png((out / f"{name}.png").read_bytes())
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == len(drawn)
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_selection_grouping_and_outputs(make_config, root, data, capsys):
    result = run_report(
        make_config,
        "report.experiments=[med-s1-1k__curation*,base]",
        "report.group_by=model.name",
        "report.outputs=[csv]",
    )
    assert result["experiments"] == 3
    rows = list(csv.DictReader((root / "report" / "results.csv").open()))
    assert {r["experiment"] for r in rows} == {
        "base",
        *(f"med-s1-1k__curation.n_samples={n}" for n in (1000, 5000)),
    }
    assert {r["group"] for r in rows} == {"llama3.1-8b"}
    assert not (root / "report" / "index.html").exists()
    shown = capsys.readouterr().out
    assert "model.name" in shown and "Stage status" in shown and "random-1k" not in shown


def test_stale_plots_are_removed(make_config, root):
    (root / "report").mkdir()
    for name in plots.CHART_NAMES:
        (root / "report" / f"{name}.png").write_bytes(b"from an earlier report")
    run_report(make_config, "report.experiments=[base]", "report.outputs=[plots]")
    assert sorted(p.name for p in (root / "report").glob("*.png")) == ["per_source.png"]
    assert_png((root / "report" / "per_source.png").read_bytes())


def test_experiments_named_as_on_the_command_line(make_config, root):
    typed = "report.experiments='experiment=med-s1-1k curation.n_samples=5000'"  # one string: one experiment
    assert run_report(make_config, typed, "report.outputs=[csv]")["experiments"] == 1
    rows = list(csv.DictReader((root / "report" / "results.csv").open()))
    assert {r["experiment"] for r in rows} == {"med-s1-1k__curation.n_samples=5000"}
    assert run_report(make_config, "report.experiments=base", "report.outputs=[csv]")["experiments"] == 1


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("report.experiments=[nope*]", "'nope*' matches no experiment"),
        (
            "report.experiments='experiment=random-1k seed=5'",
            "'experiment=random-1k seed=5 (slug random-1k__seed=5)' matches no experiment",
        ),
        ("report.experiments='experiment=nope'", "'experiment=nope' is neither an experiment nor a command"),
        ("report.group_by=curation.nope", "unknown config key 'curation.nope'"),
    ],
)
def test_bad_options_are_named(make_config, root, override, named):
    with pytest.raises(UserError, match=re.escape(named)):
        run_report(make_config, override)


def test_empty_root_says_what_to_run(make_config):
    with pytest.raises(MissingInputError, match="run an experiment first"):
        run_report(make_config)


def test_damaged_registry_is_one_line(make_config, root):
    (root / "results.json").write_text('{"experiments": ')
    with pytest.raises(UserError, match="is not valid JSON"):
        run_report(make_config)


def test_registry_with_only_old_metrics_still_reports(make_config, tmp_path):
    cfg = make_config("stage=report")
    (tmp_path / "out").mkdir()
    old = {
        "overall": {"n": 2, "accuracy": 0.5, "unparseable": 0.0},
        "per_source": {"S": {"n": 2, "accuracy": 0.5}},
    }
    (tmp_path / "out" / "results.json").write_text(
        json.dumps({"experiments": {"x": {"results": {"eval": {"metrics": old}}}}})
    )
    result = report.run(cfg)
    assert result["experiments"] == 1
    assert "| x | - | - | 50.0 | 50.0 |" in (tmp_path / "out" / "report" / "results.md").read_text()


def test_registry_from_an_older_meds1_reports_the_same(root, data):
    """Older meds1 kept the curate and train records under med-s1's names (`curation`, `training`)."""
    file = root / "results.json"
    old = json.loads(file.read_text())
    renamed = {"curate": "curation", "train": "training"}
    for entry in old["experiments"].values():
        entry["results"] = {renamed.get(stage, stage): record for stage, record in entry["results"].items()}
    file.write_text(json.dumps(old))
    slugs = sorted(data["experiments"])
    then = experiments(load_registry(file), slugs, "curation.method")
    assert then == experiments(data, slugs, "curation.method")
    assert {e.slug for e in then if e.curation and e.provenance.get("train")} >= {"med-s1-1k"}
    assert statuses(root, load_registry(file), slugs) == statuses(root, data, slugs)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map((img) => ({
    alt: img.alt, complete: img.complete, width: img.naturalWidth, shown: img.getBoundingClientRect().width,
  }));
  const rows = [...document.querySelectorAll("tr.result")].map((tr) => tr.cells[0].textContent);
  const status = document.querySelectorAll("tr.status").length;
  const check = document.createElement("pre");
  check.id = "check";
  check.textContent = JSON.stringify({ images, rows, status });
  document.body.appendChild(check);
});
</script>"""


def chromium(profile, *args: str) -> subprocess.CompletedProcess:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # a page that fetched anything would break
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install chromium)"
)
def test_index_html_renders_in_headless_chromium(full_report, data, tmp_path):
    root, _ = full_report
    page = (root / "report" / "index.html").read_text()
    checked = tmp_path / "checked.html"  # the page as written, plus a script that reports what it shows
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    dumped = chromium(tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="check">(.*?)</pre>', dumped.stdout, re.S)
    assert found, dumped.stderr[-2000:]
    shown = json.loads(html.unescape(found.group(1)))

    assert len(shown["images"]) == len(UNTRACED_CHARTS)
    for image in shown["images"]:
        assert image["complete"] and image["width"] > 0 and image["shown"] > 0, image
    with_eval = {s for s, e in data["experiments"].items() if "eval" in e["results"]}
    provenance_rows = [row[0] for row in provenance.rows(chosen(data))]
    per_experiment = 2 + len(harnesses.LABELS)  # strict, one row per harness, question counts
    assert sorted(shown["rows"]) == sorted([*with_eval] * per_experiment + provenance_rows)
    assert shown["status"] == sum(len(e["config"]["stages"]) for e in data["experiments"].values())

    screenshot = tmp_path / "page.png"
    chromium(
        tmp_path / "profile-png",
        "--window-size=1280,3000",
        f"--screenshot={screenshot}",
        (root / "report" / "index.html").as_uri(),
    )
    image = Image.open(screenshot).convert("L")
    low, high = image.getextrema()
    assert image.size == (1280, 3000) and high - low > 100  # something was drawn, not a blank page


M1_SOURCES = [
    "GPQA_Medical_test",
    "HumanityLastExam",
    "Lancet",
    "MMLU-Pro_Medical_test",
    "MedBullets_op4",
    "MedBullets_op5",
    "MedMCQA_validation",
    "MedQA_USLME_test",
    "MedXpertQA",
    "NEJM",
    "PubMedQA_test",
]


def m1_registry(root, skipped):
    """Two evals on m1's eleven sources, one of them with rows skipped when its suite was loaded."""
    root.mkdir()
    experiments = {}
    for slug, rate in (("m1-a", 0.5), ("m1-b", 0.75)):
        per_source = {
            s: {"n": 4 * (i + 1), "accuracy": rate, "ci95": [0.1, 0.9]} for i, s in enumerate(M1_SOURCES)
        }
        metrics = {"overall": {"n": 264, "accuracy": rate}, "per_source": per_source}
        if slug == "m1-b":
            metrics["skipped_rows"] = skipped
        experiments[slug] = {"results": {"eval": {"metrics": metrics}}}
    (root / "results.json").write_text(json.dumps({"experiments": experiments}))


def test_eleven_sources_are_transposed_and_skipped_rows_reported(make_config, tmp_path, capsys):
    m1_registry(tmp_path / "out", {"MedXpertQA": {"answer_not_an_option": 3, "missing_question": 1}})
    report.run(make_config("stage=report", "report.outputs=[markdown,csv,plots]"))
    text = (tmp_path / "out" / "report" / "results.md").read_text()
    assert "| experiment | m1-a | m1-b |" in text  # sources down, experiments across
    assert "| Lancet | 50.0 [10.0, 90.0] | 75.0 [10.0, 90.0] |" in text
    assert "| NEJM | 40 | 40 |" in text  # the questions table, transposed too
    assert "| m1-b | MedXpertQA | 4 | answer_not_an_option 3, missing_question 1 |" in text
    assert "Skipped eval rows" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "out" / "report" / "results.csv").open()))
    assert len(rows) == 2 * 12  # the tidy csv keeps one line per experiment and source
    assert_png((tmp_path / "out" / "report" / "per_source.png").read_bytes())


def test_report_sources_picks_sources_everywhere(make_config, tmp_path):
    m1_registry(tmp_path / "out", {"MedXpertQA": {"answer_not_an_option": 3}})
    report.run(make_config("stage=report", "report.sources=[Med*,NEJM]", "report.outputs=[markdown,csv]"))
    text = (tmp_path / "out" / "report" / "results.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| experiment | curation.method"))
    assert header.split(" | ")[3:] == [
        "MedBullets_op4",
        "MedBullets_op5",
        "MedMCQA_validation",
        "MedQA_USLME_test",
        "MedXpertQA",
        "NEJM",
        "overall |",
    ]  # six sources: read across again
    rows = list(csv.DictReader((tmp_path / "out" / "report" / "results.csv").open()))
    assert {r["source"] for r in rows} == {*header.split(" | ")[3:-1], "overall"}
    assert "| m1-b | MedXpertQA | 3 |" in text
    with pytest.raises(UserError, match=r"report.sources: 'Lancte' matches no eval source; valid: GPQA_"):
        report.run(make_config("stage=report", "report.sources=[Lancte]"))
