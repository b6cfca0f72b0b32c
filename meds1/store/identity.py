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
`resources`, where and how fast an inference endpoint is asked: `neutral_key`) never enter a slug, and
secrets are redacted wherever a config is kept. Slugs are injective: where making one safe directory name
changed the text (`/`, spaces, quotes, brackets), a digest of the text is appended; one too long for a
name keeps what varies readable (`readable_slug`).

The hash also covers the content of the local files those keys make the stage read (`read_paths`:
sources, suites (RL's questions among them), the taxonomy, transform files, local model folders; digests
by meds1.store.content), so an edited file never lets an old output stand in. A stage's record names its
identity and the output it read (`StageIdentity.record`); the report and the status view read recorded
slugs through the `recorded_*` functions here, so they name them by the same rules.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meds1 import pipeline
from meds1.config.schema import Config, CurationConfig, ModelConfig, RLConfig, SpecialtyMethod
from meds1.curation.traces.spec import trace_files
from meds1.evaluation.suite_spec import SUITE_FILE_SUFFIXES, SUITE_HUB_SCHEME
from meds1.hub import PACKAGE_SCHEME, resolve_data_path
from meds1.store import content

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
LONG_VALUE = 24  # characters of an override's value beyond which a long slug shows its end and a digest
# Names like api_key, hf_token, client_secret, db_password (but not max_new_tokens).
SECRET_KEY = re.compile(r"(^|[_-])(api[_-]?key|token|secret|password|passwd|credentials?)$", re.IGNORECASE)
REDACTED = "<redacted>"
# How to reach an inference endpoint, not which model answers: `*.inference` settings outside identity.
ENDPOINT_KEYS = frozenset({"base_url", "max_concurrency", "max_retries", "requests_per_minute", "timeout_s"})


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


def reading_stage(stages: list[str], stage: str, keys: list[str]) -> str:
    """The earliest stage of `stage`'s chain (itself and the stages whose output it reads) whose result
    depends on one of the config `keys`: the one to remake first when the files they name changed."""
    sections = {re.split(r"[.\[/]", key, maxsplit=1)[0] for key in keys}
    chain = [stage]
    while (before := pipeline.input_stage(stages, chain[-1])) is not None:
        chain.append(before)
    return next((s for s in reversed(chain) if sections & stage_sections(stages, s)), stage)


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


def neutral_key(parent: str, key: str) -> bool:
    """Whether a config key says how a result is reached rather than what it is: a stage's scheduler
    `resources`, and where and how fast an inference endpoint is asked (`ENDPOINT_KEYS` of any
    `inference`), like paths and launcher settings. What a model is asked and how it answers stays."""
    return key == "resources" or (parent == "inference" and key in ENDPOINT_KEYS)


def result_view(value, key: str = ""):
    """What of a config value (under `key`) can change a result: secrets redacted, `neutral_key`s left
    out."""
    if SECRET_KEY.search(key) and value is not None:
        return REDACTED
    return _view(redacted(value), key)


def _view(value, key: str):
    if isinstance(value, dict):
        return {k: _view(v, str(k)) for k, v in value.items() if not neutral_key(key, str(k))}
    if isinstance(value, list):
        return [_view(v, "") for v in value]
    return value


def result_differs(before, after, key: str = "") -> bool:
    """Whether two config values (under `key`) differ as `result_view` sees them (what names a slug is
    what is hashed)."""
    return before != after and result_view(before, key) != result_view(after, key)


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


def _cleaned(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._=,+-]+", "-", text)
    return re.sub(r"\.{2,}", ".", cleaned).strip(".-") or "x"


def _fits(text: str, identity: str | None) -> bool:
    """Whether `safe_name` keeps all of `text` (its cleaned form, and the digest when one is due)."""
    cleaned = _cleaned(text)
    plain = cleaned == text and identity is None
    return len(cleaned) <= (MAX_SLUG_LEN if plain else MAX_SLUG_LEN - DIGEST_LEN - 1)


def safe_name(text: str, identity: str | None = None) -> str:
    """A single directory name: no separators, no `..`, nothing a shell or filesystem trips on. Where the
    text had to change (or be shortened), or `identity` is given, a digest of `identity` (default: the
    text) is appended, so distinct texts stay distinct."""
    cleaned = _cleaned(text)
    if cleaned == text and len(cleaned) <= MAX_SLUG_LEN and identity is None:
        return cleaned
    digest = hashlib.sha1((identity or text).encode()).hexdigest()[:DIGEST_LEN]
    return f"{cleaned[: MAX_SLUG_LEN - DIGEST_LEN - 1]}-{digest}"


def make_slug(name: str, overrides: list[str]) -> str:
    """`name__override__override`; where a part could blur the `__` between parts (`a=1__b=2` is one
    override or two), the digest is of the parts themselves. One too long for a directory name is
    `readable_slug`."""
    parts = [name, *overrides]
    blurred = any("__" in part or part.startswith("_") or part.endswith("_") for part in parts)
    text, identity = "__".join(parts), json.dumps(parts) if blurred else None
    return safe_name(text, identity) if _fits(text, identity) else readable_slug(name, overrides)


def readable_slug(name: str, overrides: list[str]) -> str:
    """A long slug that still says what varies in a sweep: each key by its shortest unambiguous name
    (`perturbation.type=skip`), each long value by its end (a path's file name) and a digest of it, then
    a digest of the whole (so it stays injective)."""
    parts = [name]
    for override in overrides:
        key, equals, value = override.partition("=")
        if len(_cleaned(value)) > LONG_VALUE:
            end = _cleaned(value.rstrip("/").rsplit("/", 1)[-1])[-LONG_VALUE:].strip(".-")
            value = f"{end}-{hashlib.sha1(value.encode()).hexdigest()[:6]}"
        parts.append(f"{short_key(key)}{equals}{value}")
    return safe_name("__".join(parts), json.dumps([name, *overrides]))


@functools.cache
def schema_keys() -> tuple[str, ...]:
    """Every dotted key of the config schema that is not a section (`curation.trace.perturbation.type`)."""
    keys, pending = [], [("", Config)]
    while pending:
        prefix, schema = pending.pop()
        for name, hint in typing.get_type_hints(schema).items():
            if dataclasses.is_dataclass(hint):
                pending.append((f"{prefix}{name}.", hint))
            else:
                keys.append(prefix + name)
    return tuple(keys)


def short_key(key: str) -> str:
    """The shortest ending of a schema key, of two names at least, that no other key shares
    (`curation.trace.perturbation.type` -> `perturbation.type`); other keys (a group choice, `+key`, a list
    item, a dict entry) as they are."""
    if key not in schema_keys():
        return key
    parts = key.split(".")
    for length in range(min(2, len(parts)), len(parts)):
        ending = ".".join(parts[-length:])
        if sum(k == ending or k.endswith(f".{ending}") for k in schema_keys()) == 1:
            return ending
    return key


def slug_overrides(cfg: Config, stage: str) -> list[str]:
    """The overrides that name `stage`'s slug: those that change what it reads."""
    return scoped_overrides(cfg.overrides, cfg.override_scope, identity_keys(cfg.stages, stage))


def stage_slug(cfg: Config, stage: str) -> str:
    return make_slug(cfg.name, slug_overrides(cfg, stage))


# Hashes and records

INPUTS = "inputs"  # a completion marker's digests of the files its stage read (absent: an older meds1)
DATA, SUITE, MODEL = "data", "suite", "model"  # how a read path is digested (meds1.store.content)


def read_paths(cfg: Config, keys: set[str]) -> list[tuple[str, str, str]]:
    """(config key, path as configured, how it is digested) of every local file or folder that the
    config `keys` (sections) make a stage read: the curation source, the eval, RL and decontamination suites,
    the specialty taxonomy, transform and perturbation files, and local model, tokenizer and embedding
    folders. Hub datasets and models are identified by their revision, which is part of the config."""
    found = []
    if "model" in keys:
        found += _model_path("model.path", cfg.model)
    if "curation" in keys:
        found += _curation_paths(cfg.curation)
    if "rl" in keys:
        found += _rl_paths(cfg.rl)
    if "eval" in keys:
        found += _suite_paths(cfg.eval.suite, "eval.suite")
    return found


def _local(path: str | None) -> bool:
    return bool(path) and (path.startswith(PACKAGE_SCHEME) or resolve_data_path(path).exists())


def _model_path(key: str, model: ModelConfig) -> list[tuple[str, str, str]]:
    local = model.build is None and _local(model.path)  # else the hub's, at model.revision
    return [(key, model.path, MODEL)] if local else []


def _curation_paths(curation: CurationConfig) -> list[tuple[str, str, str]]:
    source, specialty = curation.source, curation.specialty
    found = []
    if source.path:
        found.append(("curation.source.path", source.path, DATA))
    elif _local(source.name):  # a hub repository's layout in a local folder
        found.append(("curation.source.name", source.name, DATA))
    if source.token_limit.max_tokens is not None and _local(source.token_limit.tokenizer):
        found.append(("curation.source.token_limit.tokenizer", source.token_limit.tokenizer, MODEL))
    if curation.decontamination.enabled:
        found += _suite_paths(curation.decontamination.suite, "curation.decontamination.suite")
    if specialty.method in (SpecialtyMethod.llm, SpecialtyMethod.embedding):
        found.append(("curation.specialty.taxonomy", specialty.taxonomy, DATA))
    embeds = curation.method == "embedding-diversity" or specialty.method == SpecialtyMethod.embedding
    if embeds and _local(curation.embedding.model):
        found.append(("curation.embedding.model", curation.embedding.model, MODEL))
    for key, llm in (
        ("curation.difficulty.judge.llm", curation.difficulty.judge.llm),
        ("curation.specialty.llm", specialty.llm),
        ("curation.trace.llm", curation.trace.llm),
    ):
        found += _model_path(f"{key}.model.path", llm.model)
    for name, path in trace_files(curation.trace).items():
        spec = name.removeprefix("perturbation/")
        key = f"curation.trace.perturbation[{spec}]" if spec != name else f"curation.trace.transforms[{name}]"
        found.append((key, str(path), DATA))
    return found


def _rl_paths(rl: RLConfig) -> list[tuple[str, str, str]]:
    """RL's questions, the suite they are decontaminated against, and a local judge model."""
    found = _suite_paths(rl.data.suite, "rl.data.suite")
    if rl.data.decontamination.enabled:
        found += _suite_paths(rl.data.decontamination.suite, "rl.data.decontamination.suite")
    return found + _model_path("rl.judge.llm.model.path", rl.judge.llm.model)


def _suite_paths(entries: list, key: str) -> list[tuple[str, str, str]]:
    """The local files of suite entries (a path, or a mapping with `path` and maybe `data_files`)."""
    found = []
    for index, entry in enumerate(entries):
        path = entry.get("path") if isinstance(entry, Mapping) else entry
        if not isinstance(path, str) or path.startswith(SUITE_HUB_SCHEME):
            continue
        data_files = entry.get("data_files") if isinstance(entry, Mapping) else None
        if data_files:
            names = [data_files] if isinstance(data_files, str) else list(data_files)
            found += [(f"{key}[{index}]/{name}", f"{path}/{name}", DATA) for name in names]
        else:
            found.append((f"{key}[{index}]", path, SUITE))
    return found


def _digest(path: str, how: str, cache: Path) -> str:
    local = resolve_data_path(path)
    if how == MODEL:
        return content.model_fingerprint(local, cache)
    return content.path_digest(local, cache, SUITE_FILE_SUFFIXES if how == SUITE else None)


class StageIdentity:
    """What makes one stage's result: the result view of its `identity_keys` (what its slug is named
    from), the digests of the files those make it read, and the hash of both (its marker's)."""

    def __init__(self, cfg: Config, stage: str):
        self.stage = stage
        keys = identity_keys(cfg.stages, stage)
        self.slug = make_slug(cfg.name, scoped_overrides(cfg.overrides, cfg.override_scope, keys))
        self.view = {key: result_view(getattr(cfg, key), key) for key in sorted(keys)}
        read = read_paths(cfg, keys)
        cache = Path(cfg.paths.cache)
        self.paths = {key: path for key, path, _ in read}
        self.inputs = {key: _digest(path, how, cache) for key, path, how in read}
        self.hash = self.hash_with(self.inputs)
        self._cfg = cfg

    def record(self) -> dict:
        """What the stage's record says of its identity: its slug and hash, and the output it read
        (`input`: the stage, slug and hash of the curation a model was trained on, of the model an eval
        evaluated; None for none, as the base model's eval), so the report follows what was read."""
        cfg, before = self._cfg, pipeline.input_stage(self._cfg.stages, self.stage)
        source = None
        if before is not None:
            source = {
                "stage": before,
                "slug": stage_slug(cfg, before),
                "hash": StageIdentity(cfg, before).hash,
            }
        return {"slug": self.slug, "hash": self.hash, "input": source}

    def hash_with(self, inputs: dict[str, str]) -> str:
        """The hash of this stage's config values read with files of these digests."""
        payload = {"config": self.view, "stage": self.stage, INPUTS: inputs}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @functools.cached_property
    def legacy_hash(self) -> str:
        """The hash meds1 gave this config before a stage's identity covered the files it reads (see
        `made`): the resolved sections (endpoint settings included), transform and perturbation files."""
        cfg, sections = self._cfg, sorted(stage_sections(self._cfg.stages, self.stage))
        payload = {name: _legacy_view(getattr(cfg, name)) for name in sections}
        payload["stage"] = self.stage
        files = trace_files(cfg.curation.trace) if "curation" in sections else {}
        if files:
            cache = Path(cfg.paths.cache)
            payload["trace_files"] = {name: content.file_digest(p, cache)[:16] for name, p in files.items()}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def made(self, marker: dict) -> bool:
        """Whether a completion marker is of an output made with this config from these files. A marker an
        older meds1 wrote records no file digests: it counts when its hash is this config's by the rule it
        was made under (the files it read cannot be checked; `adopted` records them from then on)."""
        if INPUTS in marker:
            return marker.get("config_hash") == self.hash
        return marker.get("config_hash") == self.legacy_hash

    def accepts_partial(self, config_hash: str) -> bool:
        """Whether a partial output hashed `config_hash` was started with this config (or by an older meds1
        with it), so a rerun resumes it."""
        return config_hash == self.hash or config_hash == self.legacy_hash

    def changed_inputs(self, marker: dict) -> list[str] | None:
        """The keys of the files whose content changed since a marker's output was made with this same
        config; None when its config differed too (or it records no file digests)."""
        recorded = marker.get(INPUTS)
        if recorded is None or self.hash_with(recorded) != marker.get("config_hash"):
            return None
        return sorted(
            key for key in recorded.keys() | self.inputs.keys() if recorded.get(key) != self.inputs.get(key)
        )

    def adopted(self, marker: dict) -> dict:
        """An older meds1's marker that `made` accepts, rewritten under this hash with the digests of the
        files as they are now, so a later edit of one of them is caught."""
        return {
            **marker,
            "config_hash": self.hash,
            INPUTS: self.inputs,
            "adopted": {"from": marker.get("config_hash")},
        }


def _legacy_view(value):
    """The result view of meds1 before `StageIdentity` (secrets redacted, `resources` left out)."""
    value = redacted(value)
    if isinstance(value, dict):
        return {k: _legacy_view(v) for k, v in value.items() if k != "resources"}
    if isinstance(value, list):
        return [_legacy_view(v) for v in value]
    return value


def config_hash(cfg: Config, stage: str) -> str:
    """The hash of `stage`'s identity: its config values and the content of the files it reads."""
    return StageIdentity(cfg, stage).hash


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


def _recorded(entries: dict, slug: str | None, stage: str) -> dict:
    return ((entries.get(slug) or {}).get("results") or {}).get(stage) or {} if slug else {}


def _configured(entries: dict, slug: str, config: dict, stage: str) -> str | None:
    """The entry holding `stage`'s record: this one, or where the recorded config puts that stage."""
    if _recorded(entries, slug, stage):
        return slug
    if stage in config.get("stages", []):
        linked = recorded_stage_slug(config, stage)
        if linked and _recorded(entries, linked, stage):
            return linked
    return None


def recorded_chain(entries: dict, slug: str) -> dict[str, str | None]:
    """Which registry entry holds each stage's record for the experiment of entry `slug` (None: none):
    its own records, then the outputs they read as they name them (`identity.input`: the model an eval
    evaluated, the curation it was trained on), where a record there is still that output (the same
    hash); a record that names none (an older meds1's) is looked up where the entry's config puts it."""
    config = (entries.get(slug) or {}).get("config") or {}
    chain: dict[str, str | None] = {}
    for stage in reversed(pipeline.STAGES):
        if stage not in chain:
            chain[stage] = _configured(entries, slug, config, stage)
        named = _recorded(entries, chain[stage], stage).get("identity") or {}
        if "input" not in named:
            continue
        source = named["input"]
        held = _recorded(entries, source["slug"], source["stage"]) if source else {}
        if held and (held.get("identity") or {}).get("hash", source["hash"]) == source["hash"]:
            chain[source["stage"]] = source["slug"]
        else:  # it read no stage's output (the base model's eval), or that output was made again since
            for before in pipeline.STAGES[: pipeline.STAGES.index(stage)]:
                chain.setdefault(before, None)
    return chain


def recorded_eval_overrides(config: dict) -> list[str]:
    """The overrides that name a recorded eval's slug but not its trained model's (the SFT or RL model):
    what sets the eval apart from the other evals of that model ([] when the config is unknown)."""
    if recorded_sections(config) is None:
        return []
    made_by = pipeline.input_stage(config["stages"], "eval")
    if made_by is None:
        return []
    overrides, scope = config.get("overrides", []), config.get("override_scope") or {}
    model = scoped_overrides(overrides, scope, identity_keys(config["stages"], made_by))
    return [
        o
        for o in scoped_overrides(overrides, scope, identity_keys(config["stages"], "eval"))
        if o not in model
    ]


def recorded_model_slug(slug: str, config: dict) -> str:
    """The slug of the model a recorded eval evaluated: the experiment's without eval and inference
    overrides (its name when the config is unknown)."""
    sections = recorded_sections(config)
    if sections is None:
        return config.get("name") or slug
    return recorded_slug(config, sections - {"eval", "inference"})
