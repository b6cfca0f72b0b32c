"""The identity of a stage's result, in one place: which config values make it, the slug that names its
directory, the hash its completion marker holds, and what its record keeps of the config.

A stage's outputs live in `<root>/<slug>/<stage>/`. `identity_keys` is the one rule that says which
top-level config keys a stage's result depends on: the sections it reads (`meds1.pipeline`: the model
and seed, its own sections, and those of the stage whose output it reads), and for eval and RL the stage
list (which model they read depends on it). Both names derive from those keys:

- the slug is the experiment name plus the command-line overrides that change them, by value:
  `Config.override_scope` holds, for each override that changes the composed config, the top-level keys
  whose resolved values it changes (meds1.config.compose composes without each override and compares,
  judging by `result_view`);
- the config hash is taken over `result_view` of the same keys' resolved values.

So:

- `stage=curate` and a later `stage=train` with the same overrides meet in the same place;
- `-m curation.n_samples=1000,5000` gives separate slugs for every stage;
- `-m trainer.learning_rate=1e-5,2e-5` shares one curate output and trains twice;
- `stage=eval eval.max_new_tokens=512` evaluates the already-trained model into a new slug;
- an override names the slug of every stage whose resolved sections it changes, whatever its key (a
  curation that sets `decontamination.suite: ${eval.suite}` curates anew for another `eval.suite`);
- `curation.n_samples=<the experiment's own value>` changes nothing, so adds nothing to the slug.

Overrides of settings that cannot change results (stage, force, paths, launcher, a stage's scheduler
`resources`, ...) never enter a slug, and secrets are redacted wherever a config is kept. Slugs are
injective: where making one safe directory name changed the text (`/`, spaces, quotes, brackets), a
digest of the text is appended. The report reads the slugs of recorded stages through the `recorded_*`
functions here, so it names them by the same rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

from meds1 import pipeline
from meds1.config.schema import Config
from meds1.curation.traces.spec import file_digests

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
MAX_SLUG_LEN = 120
DIGEST_LEN = 10
# Names like api_key, hf_token, client_secret, db_password (but not max_new_tokens).
SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
REDACTED = "<redacted>"


# Which values make a stage's result


def stage_sections(stages: list[str], stage: str) -> set[str]:
    """Config sections that can change `stage`'s result, given which stages the experiment runs: the model
    and seed, the stage's own sections and those of the stage whose output it reads (`meds1.pipeline`).

    An experiment without a train stage evaluates the base model, so its eval does not depend on
    curation or trainer settings; an eval after RL depends on the RL settings too.
    """
    before = pipeline.input_stage(stages, stage)  # an unknown stage fails here, naming the valid ones
    upstream = stage_sections(stages, before) if before else set(pipeline.COMMON_SECTIONS)
    return upstream | set(pipeline.get(stage).reads)


def identity_keys(stages: list[str], stage: str) -> set[str]:
    """Top-level config keys whose values make `stage`'s result: the sections it reads, and for the stages
    that read a model (eval, rl) the stage list too (which model they read depends on it). Its slug names
    the overrides that change them; its hash is taken over them."""
    keys = stage_sections(stages, stage)
    return keys | {"stages"} if stage in ("eval", "rl") else keys


def redacted(obj: Any) -> Any:
    """A JSON-ready copy of `obj` (dataclass, dict, list) with every secret-named value replaced."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {
            key: (REDACTED if SECRET_KEY.search(str(key)) and value is not None else redacted(value))
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [redacted(value) for value in obj]
    return obj


def result_view(value):
    """What of a config value can change a result: secrets redacted, scheduler `resources` left out."""
    value = redacted(value)
    if isinstance(value, dict):
        return {k: result_view(v) for k, v in value.items() if k != "resources"}
    if isinstance(value, list):
        return [result_view(v) for v in value]
    return value


def result_differs(before, after, key: str = "") -> bool:
    """Whether two config values (under `key`) differ as `result_view` sees them, descending only into
    what differs (cheap: it runs for every override on every command line)."""
    if key == "resources" or before == after:
        return False
    if SECRET_KEY.search(key):
        return (before is None) != (after is None)
    if isinstance(before, dict) and isinstance(after, dict):
        if any(k != "resources" for k in before.keys() ^ after.keys()):
            return True
        return any(result_differs(before[k], after[k], str(k)) for k in before.keys() & after.keys())
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return any(result_differs(a, b) for a, b in zip(before, after, strict=True))
    return True


def changed_keys(before: dict, after: dict) -> list[str]:
    """The top-level keys whose result values differ between two resolved configs."""
    return sorted(k for k in before.keys() | after.keys() if result_differs(before.get(k), after.get(k), k))


# Slugs


def override_key(override: str) -> str:
    """`+curation.n_samples=5` -> `curation.n_samples`; `hydra/launcher=slurm` -> `hydra/launcher`."""
    return override.lstrip("+~").split("=", 1)[0]


def override_section(override: str) -> str:
    return re.split(r"[./]", override_key(override), maxsplit=1)[0]


def slug_candidate(override: str) -> bool:
    """Whether an override can change some stage's result (and so can enter a slug)."""
    neutral = override_section(override) in RESULT_NEUTRAL
    return not neutral and ".resources" not in override_key(override)  # scheduler requests


def result_overrides(overrides: list[str], sections: set[str]) -> list[str]:
    """Overrides that can change a result scoped to `sections`, judged by their key's text (unknown
    sections count everywhere): how slugs were named before `override_scope`, for older records."""
    kept = []
    for override in overrides:
        section = override_section(override)
        if slug_candidate(override) and (section in sections or section not in pipeline.RESULT_SECTIONS):
            kept.append(override)
    return sorted(kept)


def scoped_overrides(overrides: list[str], scope: dict[str, list[str]], keys: set[str]) -> list[str]:
    """The overrides that change any of `keys` by value (`scope`: override -> the keys it changes); one
    without a scope (a config built without meds1.config.compose, an older record) is judged by its text."""
    sections = keys - {"stages"}
    return sorted(
        override
        for override in overrides
        if (keys & set(scope[override]) if override in scope else result_overrides([override], sections))
    )


def safe_name(text: str, identity: str | None = None) -> str:
    """A single directory name: no separators, no `..`, nothing a shell or filesystem trips on. Where the
    text had to change (or be shortened), or `identity` is given, a digest of `identity` (default: the
    text) is appended, so distinct texts stay distinct."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "-", text)
    cleaned = re.sub(r"\.{2,}", ".", cleaned).strip(".-") or "x"
    if cleaned == text and len(cleaned) <= MAX_SLUG_LEN and identity is None:
        return cleaned
    digest = hashlib.sha1((identity or text).encode()).hexdigest()[:DIGEST_LEN]
    return f"{cleaned[: MAX_SLUG_LEN - DIGEST_LEN - 1]}-{digest}"


def make_slug(name: str, overrides: list[str]) -> str:
    """`name__override__override`; where a part could blur the `__` between parts (`a=1__b=2` is one
    override or two), the digest is of the parts themselves."""
    parts = [name, *overrides]
    blurred = any("__" in part or part.startswith("_") or part.endswith("_") for part in parts)
    return safe_name("__".join(parts), json.dumps(parts) if blurred else None)


def slug_overrides(cfg: Config, stage: str) -> list[str]:
    """The overrides that name `stage`'s slug: those that change what it reads."""
    return scoped_overrides(cfg.overrides, cfg.override_scope, identity_keys(cfg.stages, stage))


def stage_slug(cfg: Config, stage: str) -> str:
    return make_slug(cfg.name, slug_overrides(cfg, stage))


# Hashes and records


def config_hash(cfg: Config, stage: str) -> str:
    """Hash of the resolved config sections `stage` reads (`result_view`: scheduler resources left out,
    secrets redacted): the same values whose changes name its slug."""
    sections = sorted(stage_sections(cfg.stages, stage))
    payload = {name: result_view(getattr(cfg, name)) for name in sections}
    payload["stage"] = stage
    if "curation" in sections and (files := file_digests(cfg.curation.trace)):  # an edited file counts
        payload["trace_files"] = files
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_config(cfg: Config, stage: str) -> dict:
    """What a stage's record keeps of the config: the experiment's name and stages, the overrides that
    name its slug (with the keys each changes), and the sections it reads; so a curation a sweep shares
    does not carry one sweep point's trainer settings."""
    overrides = slug_overrides(cfg, stage)
    config = {
        "name": cfg.name,
        "stages": [str(s) for s in cfg.stages],
        "overrides": overrides,
        "override_scope": {o: cfg.override_scope[o] for o in overrides if o in cfg.override_scope},
    }
    for section in sorted(stage_sections(cfg.stages, stage)):
        config[section] = redacted(getattr(cfg, section))
    return config


# Recorded configs (`stage_config`, as results.json keeps them): the report and the status view read the
# slugs of an experiment's stages through these, by the rules above.


def recorded_sections(config: dict) -> set[str] | None:
    """Config sections that can change a recorded experiment's final result (None: the config is unknown)."""
    stages = config.get("stages")
    if not config.get("name") or not stages or stages[-1] not in pipeline.STAGES:
        return None
    return stage_sections(stages, stages[-1])


def recorded_slug(config: dict, keys: set[str]) -> str:
    """The slug a recorded config names from the overrides that change `keys` (by value when the record
    says what each override changes, else by the override's key, as older meds1 named slugs)."""
    overrides = config.get("overrides", [])
    return make_slug(config["name"], scoped_overrides(overrides, config.get("override_scope") or {}, keys))


def recorded_stage_slug(config: dict, stage: str) -> str | None:
    """Where a recorded config puts `stage`'s outputs, or None when the config is unknown."""
    if recorded_sections(config) is None:
        return None
    return recorded_slug(config, identity_keys(config["stages"], stage))


def recorded_model_slug(slug: str, config: dict) -> str:
    """The slug of the model a recorded eval evaluated: the experiment's without eval and inference
    overrides (its name when the config is unknown)."""
    sections = recorded_sections(config)
    if sections is None:
        return config.get("name") or slug
    return recorded_slug(config, sections - {"eval", "inference"})
