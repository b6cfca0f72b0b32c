"""Bring experiments from med-s1's results.json into the meds1 registry, and write them back out.

med-s1 (github.com/som-shahlab/med-s1) kept one results.json::

    {"experiments": {name: {"description": ..., "config": {"model_key", "curation": {"method",
        "n_samples", ...} | null, "training_params": {...} | null},
      "results": {"curation": {"dataset_path", "timestamp", "stats_file"} | null,
                  "training": {"model_path", "timestamp", "metrics"} | null,
                  "eval": {"outputs_path", "metrics_path", "timestamp", "summary" | "summary_file"}}}}}

An eval summary is `{source: {accuracy, accuracy_ci, num_correct, total_examples, num_answered}}`;
its accuracy comes from HuatuoGPT's scorer (the better of the first and last matched option), so it
is imported as `accuracy_huatuo` and strict accuracy stays unknown. (med-s1's `num_correct` counts
first matches only and `num_answered` last matches, so the overall figure is built from the per-source
accuracies, as meds1 builds its own: their question-weighted mean.) A curation stats file holds
`total_examples, selected_examples, filter_reasons, specialty_distribution`. A test-time-scaling eval
has `test_time_scaling`, `reasoning_tokens` {approach: mean thinking tokens} and one summary per
approach; each approach becomes its own experiment `<name>__eval.approach=<approach>`.
Files named by `summary_file`/`stats_file` are read where they are, else beside the results file
(`results/<file name>`, as in the med-s1 repository).

med-s1 keys each stage's record by its own name (`curation`, `training`, `eval`); meds1 by the stage's
name (`curate`, `train`, `eval`). Import and export translate; nothing else in meds1 uses med-s1's names.

Export writes the same shape, summaries inline (accuracy = HuatuoGPT-compatible where known, with
`scorer` saying which), plus each meds1 record under `meds1` so that importing it back is lossless.

    python -m meds1.medsone import path/to/med-s1/results.json [--root DIR] [--prefix P] [--replace]
    python -m meds1.medsone export [--root DIR] [--out FILE] [--experiments GLOB ...]
    python -m meds1.medsone experiments path/to/med-s1/results.json --out DIR [--prefix P]

`experiments` writes each med-s1 experiment's config as a meds1 experiment file (DIR/experiment/NAME.yaml,
run with `python run.py --config-dir DIR experiment=NAME`): meds1/medsone/experiments.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from meds1.errors import UserError
from meds1.medsone.experiments import import_experiments, read_experiments
from meds1.report.experiments import choose, load_registry
from meds1.store import registry
from meds1.store.identity import make_slug, safe_name

# med-s1 filter reasons with a meds1 equivalent; others are kept as `medsone/<reason>`.
REASONS = {"not_selected_in_sampling": "selection/not_selected"}
# The stage whose record med-s1 keeps under each of its results keys.
STAGE_OF = {"curation": "curate", "training": "train", "eval": "eval"}


# --- import -------------------------------------------------------------------------------------


def _read_referenced(reference: str | None, results_file: Path, warnings: list[str]) -> dict | None:
    if not reference:
        return None
    name = Path(reference).name
    for candidate in (Path(reference), results_file.parent / "results" / name, results_file.parent / name):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except json.JSONDecodeError as error:
                warnings.append(f"{candidate} is not valid JSON ({error})")
                return None
    warnings.append(f"{reference} not found (nor {name} beside {results_file})")
    return None


def summary_from_medsone(summary: dict) -> dict:
    return {
        "n": summary.get("total_examples"),
        "accuracy": None,
        "accuracy_huatuo": summary.get("accuracy"),
        "ci95_huatuo": summary.get("accuracy_ci"),
        "unparseable": None,
    }


def metrics_from_medsone(summary: dict) -> dict:
    sources = {s: v for s, v in summary.items() if isinstance(v, dict) and v.get("total_examples")}
    total = sum(v["total_examples"] for v in sources.values())
    known = [v for v in sources.values() if v.get("accuracy") is not None]
    weighted = sum(v["accuracy"] * v["total_examples"] for v in known)
    overall = {
        "n": total,
        "accuracy": None,
        # meds1's overall (meds1.evaluation.scoring.huatuo_accuracy): the question-weighted mean per source
        "accuracy_huatuo": weighted / total if total and len(known) == len(sources) else None,
        "unparseable": None,
    }
    return {
        "overall": overall,
        "per_source": {s: summary_from_medsone(v) for s, v in sorted(sources.items())},
    }


def stats_from_medsone(stats: dict | None, curation_config: dict) -> dict | None:
    if stats is None:
        if not curation_config.get("n_samples"):
            return None
        return {
            "selected_rows": curation_config["n_samples"],
            "n_requested": curation_config["n_samples"],
            "method": curation_config.get("method"),
            "note": "selected_rows taken from the config's n_samples: no med-s1 stats file was found",
        }
    return {
        "total_rows": stats.get("total_examples"),
        "selected_rows": stats.get("selected_examples"),
        "n_requested": curation_config.get("n_samples"),
        "method": curation_config.get("method"),
        "removed": {
            REASONS.get(k, f"medsone/{k}"): v for k, v in (stats.get("filter_reasons") or {}).items()
        },
        "specialties": stats.get("specialty_distribution") or {},
    }


def _budget(approach: str) -> int | None:
    digits = re.search(r"\d+", approach)
    return int(digits.group()) if digits else None


def eval_records(name: str, evaluation: dict, results_file: Path, warnings: list[str]) -> dict:
    """A med-s1 eval as meds1 eval records: one, or one per test-time-scaling approach (by approach)."""
    summary = evaluation.get("summary") or (
        _read_referenced(evaluation.get("summary_file"), results_file, warnings) or {}
    ).get("summary")
    if not summary:
        warnings.append(f"{name}: eval has no summary; imported without eval metrics")
        return {None: dict(evaluation)}
    if not evaluation.get("test_time_scaling"):
        return {None: {**evaluation, "metrics": metrics_from_medsone(summary)}}
    tokens = evaluation.get("reasoning_tokens") or {}
    return {
        approach: {
            **evaluation,
            "metrics": {
                **metrics_from_medsone(approach_summary),
                "tts": {
                    "budget": _budget(approach),
                    "mean_thinking_tokens": tokens.get(approach),
                    "approach": approach,
                },
            },
        }
        for approach, approach_summary in summary.items()
    }


def entries_from_medsone(name: str, entry: dict, results_file: Path, warnings: list[str]) -> dict[str, dict]:
    """meds1 registry entries (by slug) for one med-s1 experiment."""
    config = entry.get("config") or {}
    results = entry.get("results") or {}
    if isinstance(config.get("meds1"), dict):  # exported by meds1: take its own records back
        own = {
            STAGE_OF[s]: r["meds1"]
            for s, r in results.items()
            if s in STAGE_OF and isinstance(r, dict) and "meds1" in r
        }
        return {
            name: {"description": entry.get("description", ""), "config": config["meds1"], "results": own}
        }
    curation_config = config.get("curation") if isinstance(config.get("curation"), dict) else {}
    training_params = config.get("training_params") if isinstance(config.get("training_params"), dict) else {}
    stages = [*(["curate"] if curation_config else []), *(["train"] if training_params else []), "eval"]
    ours = {
        "name": name,
        "stages": stages,
        "model": {"name": config.get("model_key")},
        "curation": curation_config,
        "trainer": training_params,
        "medsone": config,
    }
    converted: dict = {}
    if curation := results.get("curation"):
        stats = curation.get("stats") or _read_referenced(curation.get("stats_file"), results_file, warnings)
        converted["curate"] = {**curation, "stats": stats_from_medsone(stats, curation_config)}
    if training := results.get("training"):
        converted["train"] = dict(training)
    base = {"description": entry.get("description", ""), "config": ours, "results": converted}
    if not results.get("eval"):
        return {name: base}
    records = eval_records(name, results["eval"], results_file, warnings)
    if len(records) == 1:
        return {name: {**base, "results": {**converted, "eval": next(iter(records.values()))}}}
    split = {name: base} if converted else {}
    for approach, record in records.items():
        override = f"eval.approach={approach}"
        split[make_slug(name, [override])] = {
            "description": f"{entry.get('description', '')} ({approach})".strip(),
            "config": {**ours, "overrides": [override]},
            "results": {"eval": record},
        }
    return split


def import_medsone(
    results_file: Path, registry_file: Path, *, prefix: str = "", replace: bool = False
) -> dict:
    """Add every experiment of a med-s1 results.json to the registry; returns {slugs, warnings}."""
    experiments = read_experiments(results_file)
    warnings: list[str] = []
    entries: dict[str, dict] = {}
    for name, entry in experiments.items():
        if not isinstance(entry, dict):
            warnings.append(f"{name}: not an object; skipped")
            continue
        for slug, converted in entries_from_medsone(
            safe_name(prefix + name), entry, results_file, warnings
        ).items():
            entries[slug] = {**converted, "imported_from": str(results_file.resolve())}
    registry.add_experiments(registry_file, entries, replace=replace)
    return {"slugs": sorted(entries), "warnings": warnings}


# --- export -------------------------------------------------------------------------------------


def summary_to_medsone(summary: dict) -> dict:
    huatuo = summary.get("accuracy_huatuo")
    scorer = "huatuo" if huatuo is not None else "strict"
    accuracy = huatuo if huatuo is not None else summary.get("accuracy")
    interval = summary.get("ci95_huatuo" if huatuo is not None else "ci95")
    n, unparseable = summary.get("n"), summary.get("unparseable")
    return {
        "accuracy": accuracy,
        "accuracy_ci": interval,
        "num_correct": round(accuracy * n) if accuracy is not None and n else None,
        "total_examples": n,
        "num_answered": round((1 - unparseable) * n) if unparseable is not None and n else None,
        "scorer": scorer,
    }


def stats_to_medsone(stats: dict) -> dict:
    renamed = {ours: theirs for theirs, ours in REASONS.items()}
    selected, total = stats.get("selected_rows"), stats.get("total_rows")
    return {
        "total_examples": total,
        "selected_examples": selected,
        "filtered_examples": total - selected if total is not None and selected is not None else None,
        "filter_reasons": {
            renamed.get(k, k.removeprefix("medsone/")): v for k, v in (stats.get("removed") or {}).items()
        },
        "specialty_distribution": stats.get("specialties") or {},
    }


def config_to_medsone(config: dict) -> dict:
    if isinstance(config.get("medsone"), dict):
        return config["medsone"]
    stages = config.get("stages") or []
    curation, trainer = config.get("curation") or {}, config.get("trainer") or {}
    training_keys = ("learning_rate", "num_epochs", "global_batch_size", "weight_decay", "warmup_ratio")
    return {
        "model_key": (config.get("model") or {}).get("name"),
        "curation": {k: curation.get(k) for k in ("method", "n_samples")} if "curate" in stages else None,
        "training_params": {k: trainer.get(k) for k in training_keys} if "train" in stages else None,
        "meds1": config,
    }


def entry_to_medsone(entry: dict) -> dict:
    results = entry.get("results") or {}
    out: dict = {"curation": None, "training": None, "eval": None}
    if curation := results.get("curate"):
        out["curation"] = {
            "dataset_path": curation.get("dataset_path"),
            "timestamp": curation.get("timestamp"),
            "stats": stats_to_medsone(curation.get("stats") or {}),
            "meds1": curation,
        }
    if training := results.get("train"):
        keep = ("model_path", "timestamp", "metrics")
        out["training"] = {**{k: training.get(k) for k in keep}, "meds1": training}
    if evaluation := results.get("eval"):
        metrics = evaluation.get("metrics") or {}
        summary = {s: summary_to_medsone(v) for s, v in (metrics.get("per_source") or {}).items()}
        keep = ("outputs_path", "metrics_path", "timestamp")
        out["eval"] = {**{k: evaluation.get(k) for k in keep}, "summary": summary, "meds1": evaluation}
        if tts := metrics.get("tts"):
            approach = tts.get("approach") or f"budget-{tts.get('budget')}"
            out["eval"].update(
                test_time_scaling=True,
                reasoning_tokens={approach: tts.get("mean_thinking_tokens")},
                summary={approach: summary},
            )
    return {
        "description": entry.get("description", ""),
        "config": config_to_medsone(entry.get("config") or {}),
        "results": out,
    }


def export_medsone(registry_file: Path, patterns: list[str] = ()) -> dict:
    """The registry (or the experiments matching `patterns`) in med-s1's results.json shape."""
    data = load_registry(registry_file)
    slugs = choose(set(data["experiments"]), list(patterns))
    return {"experiments": {slug: entry_to_medsone(data["experiments"][slug]) for slug in slugs}}


# --- command line -------------------------------------------------------------------------------


def _registry_file(root: str | None) -> Path:
    from meds1.config.compose import compose
    from meds1.store.registry import registry_path

    return registry_path(compose([f"paths.root={root}"] if root else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meds1.medsone", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="add a med-s1 results.json's experiments to the registry")
    importing.add_argument("file", type=Path, help="med-s1 results.json")
    importing.add_argument("--prefix", default="", help="prepended to every imported experiment name")
    importing.add_argument("--replace", action="store_true", help="overwrite experiments with the same name")
    exporting = commands.add_parser("export", help="write the registry in med-s1's results.json shape")
    exporting.add_argument("--out", type=Path, help="output file (default: stdout)")
    exporting.add_argument("--experiments", nargs="*", default=[], help="names or globs (default: all)")
    for command in (importing, exporting):
        command.add_argument("--root", help="meds1 output root (default: $MEDS1_OUTPUT or ./outputs)")
    configs = commands.add_parser("experiments", help="write med-s1's experiments as meds1 experiment files")
    configs.add_argument("file", type=Path, help="med-s1 results.json")
    configs.add_argument("--out", type=Path, required=True, help="config dir: files go to OUT/experiment/")
    configs.add_argument("--prefix", default="", help="prepended to every experiment name")
    configs.add_argument(
        "--source", help="how file headers name results.json, e.g. som-shahlab/med-s1@d15c393"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "experiments":
            return _write_experiments(args.file, args.out, args.prefix, args.source)
        registry_file = _registry_file(args.root)
        if args.command == "import":
            done = import_medsone(args.file, registry_file, prefix=args.prefix, replace=args.replace)
            for warning in done["warnings"]:
                print(f"warning: {warning}", file=sys.stderr)
            print(
                f"imported {len(done['slugs'])} experiments into {registry_file}: {', '.join(done['slugs'])}"
            )
        else:
            text = json.dumps(export_medsone(registry_file, args.experiments), indent=2)
            if args.out:
                args.out.write_text(text + "\n")
                print(f"wrote {args.out}", file=sys.stderr)
            else:
                print(text)
    except UserError as error:
        print(f"meds1: {error}", file=sys.stderr)
        return 1
    return 0


def _write_experiments(results_file: Path, out: Path, prefix: str, source: str | None) -> int:
    translations = import_experiments(results_file, out, prefix, source)
    for translation in translations:
        for problem in translation.problems:
            print(f"{translation.name}: {problem}", file=sys.stderr)
    written = [t for t in translations if t.text is not None]
    print(
        f"wrote {len(written)} of {len(translations)} experiments to {out / 'experiment'}; run one with: "
        f"python run.py --config-dir {out} experiment=<name>"
    )
    return 0 if len(written) == len(translations) else 1
