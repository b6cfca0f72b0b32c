"""The registry as the report sees it: which experiments exist, which are chosen, and what each one is.

A registry entry is keyed by a stage slug, so one experiment's stages may live in different entries:
an eval-only override shares the trained model's entries, a learning-rate sweep shares one
curation. `Experiment` links an entry to the model it evaluated and the curation that model was trained
on as the records name them (meds1.store.identity.recorded_chain), and reads the `report.group_by` value
from its recorded config.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import shlex
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from meds1.errors import UserError
from meds1.pipeline import RESULT_SECTIONS
from meds1.store import registry
from meds1.store.identity import (
    recorded_chain,
    recorded_eval_overrides,
    recorded_model_slug,
    recorded_sections,
    stage_slug,
)

NO_GROUP = "-"


@dataclass
class Experiment:
    slug: str
    description: str
    config: dict  # the resolved config recorded with the results ({} when unknown)
    group: str  # the value of `report.group_by` ("-" when the experiment has none)
    model: str  # what was evaluated: the trained model's slug, or the base model's experiment slug
    metrics: dict | None  # eval metrics: overall, per_source, optional tts
    curation: dict | None  # stats of the curated set this experiment trained on
    curation_slug: str | None
    predictions: str | None = None  # the eval's predictions.jsonl as recorded
    provenance: dict[str, dict | None] = field(default_factory=dict)  # per stage: what produced it
    rl: dict | None = None  # the RL stage's record (model_path, init_model, metrics_path, metrics) if any
    trained: bool = False  # it evaluated a fine-tuned model (not the base model)
    eval_overrides: list[str] = field(default_factory=list)  # what sets its eval apart from its model's

    @property
    def train_samples(self) -> int | None:
        return (self.curation or {}).get("selected_rows")

    @property
    def tts(self) -> dict | None:
        return (self.metrics or {}).get("tts")


def load_registry(path: Path) -> dict:
    """The registry ({"experiments": {}} when absent); a damaged file is a one-line error."""
    try:
        data = registry.load(path)
    except json.JSONDecodeError as error:
        raise UserError(f"results registry {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiments", {}), dict):
        raise UserError(f"results registry {path} has no 'experiments' object")
    data.setdefault("experiments", {})
    return data


def is_command(text: str) -> bool:
    """Whether a report name is a command line's overrides (`experiment=demo seed=1`), not a slug."""
    try:
        words = shlex.split(text)
    except ValueError:
        return False
    return bool(words) and all("=" in word and "__" not in word for word in words)


def command_slug(text: str, key: str) -> str:
    """The slug of what a command line's overrides run: its last stage's (slugs are named by value, so
    `experiment=med-s1-1k curation.n_samples=1000`, that experiment's own size, is `med-s1-1k`)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from meds1.config.compose import compose_command

    try:
        cfg = compose_command(shlex.split(text))
    except (HydraException, OmegaConfBaseException, UserError) as error:
        reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        problem = f"{key}: {text!r} is neither an experiment nor a command line that composes ({reason})"
        raise UserError(problem) from None
    return stage_slug(cfg, cfg.stages[-1])


def names(value) -> list[str]:
    """`report.experiments` as a list: one name (a string) or a list of them."""
    return [] if value in (None, "") else [str(value)] if isinstance(value, str) else [str(v) for v in value]


def choose(slugs: set[str], patterns: list[str]) -> list[str]:
    """The slugs matching any of `patterns` (exact names, globs or command lines), sorted; all when none."""
    if not patterns:
        return sorted(slugs)
    chosen = set()
    for pattern in patterns:
        matched = {slug for slug in slugs if fnmatchcase(slug, pattern)}
        if not matched and is_command(pattern):
            named = command_slug(pattern, "report.experiments")
            matched = {named} & slugs
            pattern = f"{pattern} (slug {named})"
        if not matched:
            known = ", ".join(sorted(slugs)) or "none"
            raise UserError(f"report.experiments: {pattern!r} matches no experiment; experiments: {known}")
        chosen |= matched
    return sorted(chosen)


def baseline_slug(name: str, evaluated: set[str]) -> str:
    """`report.baseline` as a slug: a slug, or a command line naming one."""
    return command_slug(name, "report.baseline") if name not in evaluated and is_command(name) else name


def config_value(config: dict, key: str):
    """The value at a dotted `key` of a recorded config, or None."""
    value = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_group_by(group_by: str, config: dict, chosen: list[Experiment]) -> None:
    """`report.group_by` is a key of `config` or of some chosen experiment's recorded config."""
    if all(config_value(c, group_by) is None for c in [config, *(e.config for e in chosen)]):
        raise UserError(
            f"report.group_by: unknown config key {group_by!r} (not in this config nor a chosen experiment)"
        )


def group_of(config: dict, group_by: str) -> str:
    """`group_by`'s value; "-" when absent or when it names a section the experiment does not use."""
    sections = recorded_sections(config)
    owner = group_by.split(".")[0]
    if sections is not None and owner in RESULT_SECTIONS and owner not in sections:
        return NO_GROUP
    value = config_value(config, group_by)
    return NO_GROUP if value in (None, {}) else str(value)


def experiment(data: dict, slug: str, group_by: str) -> Experiment:
    entries = data["experiments"]
    entry = entries.get(slug, {})
    config = entry.get("config") or {}
    linked = recorded_chain(entries, slug)
    records = {stage: entries[where]["results"][stage] if where else {} for stage, where in linked.items()}
    evaluation = (entry.get("results") or {}).get("eval") or {}
    named = evaluation.get("identity") or {}
    if "input" in named:  # the eval names the model it evaluated
        trained = named["input"] is not None
        model = named["input"]["slug"] if trained else recorded_model_slug(slug, config)
    else:
        stages = config.get("stages", [])
        trained, model = "train" in stages or "rl" in stages, recorded_model_slug(slug, config)
    return Experiment(
        slug=slug,
        description=entry.get("description", ""),
        config=config,
        group=group_of(config, group_by),
        model=model,
        metrics=evaluation.get("metrics"),
        curation=records["curate"].get("stats") if linked["curate"] else None,
        curation_slug=linked["curate"],
        predictions=evaluation.get("outputs_path"),
        provenance={stage: record.get("provenance") for stage, record in records.items()},
        rl=records["rl"] or None,
        trained=trained,
        eval_overrides=recorded_eval_overrides(config) if trained else [],
    )


def experiments(data: dict, slugs: list[str], group_by: str) -> list[Experiment]:
    """The chosen registry entries, ordered by group, then training rows, then slug."""
    chosen = [experiment(data, slug, group_by) for slug in slugs if slug in data["experiments"]]
    return sorted(chosen, key=lambda e: (e.group, e.train_samples is None, e.train_samples or 0, e.slug))


def predictions_file(exp: Experiment, root: Path) -> Path | None:
    """The eval's predictions.jsonl: where the registry says, else under `root` (a registry copied off
    a cluster keeps its absolute paths); None when neither exists."""
    for candidate in (exp.predictions, Path(root) / exp.slug / "eval" / "predictions.jsonl"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def with_sources(chosen: list[Experiment], patterns: list[str]) -> list[Experiment]:
    """The experiments with only the eval sources matching `patterns` (names or globs; `report.sources`)
    in their per-source metrics and skipped-row counts; `overall` stays as the eval scored it."""
    if not patterns:
        return chosen
    known = sorted({s for e in chosen for s in ((e.metrics or {}).get("per_source") or {})})
    for pattern in patterns:
        if not fnmatch.filter(known, pattern):
            raise UserError(
                f"report.sources: {pattern!r} matches no eval source; valid: {', '.join(known) or 'none yet'}"
            )

    def picked(per_source: dict) -> dict:
        return {s: v for s, v in per_source.items() if any(fnmatchcase(s, p) for p in patterns)}

    narrowed = []
    for exp in chosen:
        metrics = exp.metrics
        if metrics:
            metrics = {**metrics, "per_source": picked(metrics.get("per_source") or {})}
            if isinstance(metrics.get("skipped_rows"), dict):
                metrics["skipped_rows"] = picked(metrics["skipped_rows"])
        narrowed.append(dataclasses.replace(exp, metrics=metrics))
    return narrowed
