"""Experiment slugs and stage directories.

A stage's outputs live in `<root>/<slug>/<stage>/`. The slug is the experiment name plus the
command-line overrides that can change *that stage's* result, counting only those that change the
composed config (`Config.overrides` holds those: meds1.overrides drops an override that sets a value
the experiment already has), so:

- `stage=curate` and a later `stage=train` with the same overrides meet in the same place;
- `-m curation.n_samples=1000,5000` gives separate slugs for every stage;
- `-m trainer.learning_rate=1e-5,2e-5` shares one curate output and trains twice;
- `stage=eval eval.max_new_tokens=512` evaluates the already-trained model into a new slug;
- `curation.n_samples=<the experiment's own value>` changes nothing, so adds nothing to the slug.

Overrides of settings that cannot change results (stage, force, paths, launcher, a stage's scheduler
`resources`, ...) never enter a slug.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from meds1 import pipeline
from meds1.config import Config
from meds1.pipeline import PIPELINE, STAGES

# Top-level keys whose overrides never change what a stage computes.
RESULT_NEUTRAL = frozenset(
    {
        "name",
        "description",
        "compare_base",
        "stage",
        "force",
        "dry_run",
        "wait",
        "overrides",
        "paths",
        "hydra",
        "experiment",
        "report",
    }
)
# The config sections each stage reads, in addition to those of the stages before it.
STAGE_SECTIONS = {stage.name: stage.reads for stage in PIPELINE}
MAX_SLUG_LEN = 120


def override_key(override: str) -> str:
    """`+curation.n_samples=5` -> `curation.n_samples`; `hydra/launcher=slurm` -> `hydra/launcher`."""
    return override.lstrip("+~").split("=", 1)[0]


def override_section(override: str) -> str:
    return re.split(r"[./]", override_key(override), maxsplit=1)[0]


def stage_sections(stages: list[str], stage: str) -> set[str]:
    """Config sections that can change `stage`'s result, given which stages the experiment runs.

    An experiment without a train stage evaluates the base model, so its eval does not depend on
    curation or trainer settings.
    """
    pipeline.get(stage)  # an unknown stage fails here, naming the valid ones
    if stage == "eval" and "train" not in stages:
        return {"model", "seed", *STAGE_SECTIONS["eval"]}
    upstream = STAGES[: STAGES.index(stage) + 1]
    return {section for s in upstream for section in STAGE_SECTIONS[s]}


def slug_candidate(override: str) -> bool:
    """Whether an override can change some stage's result (and so can enter a slug)."""
    neutral = override_section(override) in RESULT_NEUTRAL
    return not neutral and ".resources" not in override_key(override)  # scheduler requests


def result_overrides(overrides: list[str], sections: set[str]) -> list[str]:
    """Overrides that can change a result scoped to `sections`; unknown sections count everywhere."""
    known = {section for names in STAGE_SECTIONS.values() for section in names}
    kept = []
    for override in overrides:
        section = override_section(override)
        if slug_candidate(override) and (section in sections or section not in known):
            kept.append(override)
    return sorted(kept)


def safe_name(text: str) -> str:
    """A single directory name: no separators, no `..`, nothing a shell or filesystem trips on."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "-", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip(".-")
    if not cleaned:
        cleaned = "x"
    if len(cleaned) > MAX_SLUG_LEN:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        cleaned = f"{cleaned[: MAX_SLUG_LEN - 11]}-{digest}"
    return cleaned


def make_slug(name: str, overrides: list[str]) -> str:
    return safe_name("__".join([name, *overrides]))


def stage_slug(cfg: Config, stage: str) -> str:
    return make_slug(cfg.name, result_overrides(cfg.overrides, stage_sections(cfg.stages, stage)))


def stage_dir(cfg: Config, stage: str) -> Path:
    return Path(cfg.paths.root) / stage_slug(cfg, stage) / stage


def registry_path(cfg: Config) -> Path:
    return Path(cfg.paths.root) / "results.json"


PACKAGE_SCHEME = "pkg://"


def resolve_data_path(path: str) -> Path:
    """A data file path; `pkg://meds1/data/x.json` names a file shipped inside an installed package."""
    if path.startswith(PACKAGE_SCHEME):
        from importlib.resources import files

        package, _, relative = path[len(PACKAGE_SCHEME) :].partition("/")
        return Path(str(files(package).joinpath(relative)))
    return Path(path).expanduser()
