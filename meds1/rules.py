"""The rules a config must follow that its types cannot state, and the typed config they are checked on.

`to_config` runs them wherever a config is built, so a bad setting fails at compose: in `--cfg job`,
`dry_run=true` and before any job is submitted, not hours later when its stage starts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from omegaconf import DictConfig, OmegaConf

from meds1.config import (
    SUITE_HUB_SCHEME,
    AnswerFormat,
    Config,
    CurationConfig,
    CurationMethod,
    InferenceBackend,
    SpecialtyMethod,
    Stage,
    SuiteSpec,
    TraceConfig,
)
from meds1.errors import UserError
from meds1.trace_spec import expand, produces_steps


def to_config(cfg: DictConfig, overrides: dict[str, list[str] | None] | list[str] | None = None) -> Config:
    """Resolve a composed DictConfig into a typed, validated `Config`, with absolute output paths.

    `overrides`: the command line's overrides that change the config, each with the top-level keys it
    changes, or None where that is unknown (`meds1.overrides.Composer.effective`; a list: all unknown).
    """
    if overrides is not None:
        cfg.overrides = list(overrides)
    config: Config = OmegaConf.to_object(cfg)
    if isinstance(overrides, dict):
        config.override_scope = {o: keys for o, keys in overrides.items() if keys is not None}
    config.paths.root = str(Path(config.paths.root).expanduser().resolve())
    config.paths.cache = str(Path(config.paths.cache).expanduser().resolve())
    validate(config)
    return config


def validate(config: Config) -> None:
    """Raise a UserError on the first setting that breaks a rule the types cannot state (a range, a
    template's placeholders, settings that need each other), in the stages the experiment runs.

    `to_config` runs it wherever a config is built, so a bad setting fails at compose: in `--cfg job`,
    `dry_run=true` and before any job is submitted, not hours later when its stage starts.
    """
    problem = next(_problems(config), None)
    if problem:
        raise UserError(problem)


def _problems(config: Config) -> Iterator[str]:
    ranges = []  # (key, value, whether it is valid, what is valid)
    templates = []  # (key, template, its placeholders)
    if Stage.curate in config.stages:
        yield from _curation_problems(config.curation, ranges, templates)
    trainer = config.trainer
    if Stage.train in config.stages:
        ranges.append(
            (
                "trainer.validation_fraction",
                trainer.validation_fraction,
                0 <= trainer.validation_fraction < 1,
                "in [0, 1) (0: none)",
            )
        )
    if Stage.eval in config.stages:
        yield from _eval_problems(config, ranges)
    for key, value, ok, valid in ranges:
        if not ok:
            yield f"{key}={value}: must be {valid}"
    for key, template, fields in templates:
        try:
            template.format(**dict.fromkeys(fields, ""))
        except (KeyError, IndexError, ValueError) as exc:
            yield f"{key} has a bad placeholder ({exc}); valid: {', '.join('{' + f + '}' for f in fields)}"


def _curation_problems(curation: CurationConfig, ranges: list, templates: list) -> Iterator[str]:
    decontamination, difficulty, specialty = curation.decontamination, curation.difficulty, curation.specialty
    if decontamination.enabled:
        yield from _suite_problems(decontamination.suite, "curation.decontamination.suite")
    ranges += [
        ("curation.n_samples", curation.n_samples, curation.n_samples >= 0, ">= 0"),
        *(
            (f"curation.{name}", getattr(curation, name), 0 <= getattr(curation, name) <= 1, "in [0, 1]")
            for name in ("uniform_fraction", "cluster_fraction", "outlier_fraction")
        ),
        (
            "curation.decontamination.threshold",
            decontamination.threshold,
            0 < decontamination.threshold <= 1,
            "in (0, 1]",
        ),
        (
            "curation.decontamination.ngram_share",
            decontamination.ngram_share,
            0 <= decontamination.ngram_share <= 1,
            "in [0, 1]",
        ),
        ("curation.decontamination.ngram", decontamination.ngram, decontamination.ngram >= 1, ">= 1"),
        *(
            (f"curation.{key}.max_unusable_fraction", limit, 0 <= limit <= 1, "in [0, 1]")
            for key, limit in (
                ("difficulty", difficulty.max_unusable_fraction),
                ("difficulty.judge", difficulty.judge.max_unusable_fraction),
                ("specialty", specialty.max_unusable_fraction),
            )
        ),
    ]
    if curation.method == CurationMethod.s1 and specialty.method == SpecialtyMethod.none:
        yield (
            "curation.method=s1 samples across specialties: "
            "set curation.specialty.method to llm, embedding or column"
        )
    if specialty.method == SpecialtyMethod.llm:
        templates.append(("curation.specialty.prompt", specialty.prompt, ("question", "specialties")))
        try:
            groups = re.compile(specialty.code_pattern).groups
        except re.error as exc:
            yield f"curation.specialty.code_pattern is not a regular expression ({exc})"
        else:
            if groups != 1:
                yield (
                    f"curation.specialty.code_pattern {specialty.code_pattern!r} has {groups} groups; "
                    "it needs one, capturing the specialty's number"
                )
    if difficulty.enabled:
        templates.append(("curation.difficulty.prompt", difficulty.prompt, ("question",)))
        templates.append(
            ("curation.difficulty.judge.prompt", difficulty.judge.prompt, ("question", "answer", "reference"))
        )
        ranges += [  # the OpenAI/vLLM ranges
            ("curation.difficulty.temperature", difficulty.temperature, difficulty.temperature >= 0, ">= 0"),
            ("curation.difficulty.top_p", difficulty.top_p, 0 < difficulty.top_p <= 1, "in (0, 1]"),
            (
                "curation.difficulty.frequency_penalty",
                difficulty.frequency_penalty,
                -2 <= difficulty.frequency_penalty <= 2,
                "in [-2, 2]",
            ),
            (
                "curation.difficulty.max_new_tokens",
                difficulty.max_new_tokens,
                difficulty.max_new_tokens >= 1,
                ">= 1",
            ),
        ]
    yield from _trace_problems(curation.trace, ranges)
    if curation.format.assistant_template is not None:
        templates.append(
            ("curation.format.assistant_template", curation.format.assistant_template, ("cot", "response"))
        )


def _trace_problems(trace: TraceConfig, ranges: list) -> Iterator[str]:
    """Transforms that exist and parse, and a perturbation that has steps to perturb."""
    ranges.append(
        (
            "curation.trace.max_failed_fraction",
            trace.max_failed_fraction,
            0 <= trace.max_failed_fraction <= 1,
            "in [0, 1]",
        )
    )
    try:
        expand(trace.transforms)
    except UserError as exc:
        yield str(exc)
        return
    kind = trace.perturbation.type
    if kind is None:
        return
    ranges.append(
        (
            "curation.trace.perturbation.rate",
            trace.perturbation.rate,
            0 < trace.perturbation.rate <= 1,
            "in (0, 1]",
        )
    )
    if not produces_steps(trace.transforms):
        chain = ", ".join(trace.transforms)
        yield (
            f"curation.trace.perturbation.type={kind} perturbs '## Step N:' step traces, but the transform "
            f"chain [{chain}] does not end in one: end curation.trace.transforms with step "
            "(or step-evidence, cot-step)"
        )


def _eval_problems(config: Config, ranges: list) -> Iterator[str]:
    eval_cfg, tts = config.eval, config.eval.tts
    yield from _suite_problems(eval_cfg.suite, "eval.suite")
    ranges += [
        ("eval.repeats", eval_cfg.repeats, eval_cfg.repeats >= 1, ">= 1"),
        *(
            (f"eval.repeats_per_source.{source}", n, n >= 1, ">= 1")
            for source, n in eval_cfg.repeats_per_source.items()
        ),
        ("eval.max_new_tokens", eval_cfg.max_new_tokens, eval_cfg.max_new_tokens >= 1, ">= 1"),
    ]
    if tts.enabled and config.inference.backend == InferenceBackend.openai:
        yield (
            "eval.tts.enabled=true (budget forcing) continues raw text, which inference.backend=openai "
            "cannot: use inference=hf or inference=vllm"
        )
    unset = None in (tts.think_start, tts.think_end, tts.answer_prefix)
    if tts.enabled and Stage.train in config.stages and config.curation.format.assistant_template and unset:
        yield (
            "eval.tts: the model was trained with curation.format.assistant_template; set "
            "eval.tts.think_start, eval.tts.think_end and eval.tts.answer_prefix to that template's markers"
        )


HUB_PARAMETERS = {"split": "split", "config": "config", "revision": "revision", "source": "name"}
SUITE_KEYS = tuple(f.name for f in dataclasses.fields(SuiteSpec))


def _suite_problems(entries: list, key: str) -> Iterator[str]:
    try:
        suite_specs(entries, key)
    except ValueError as problem:
        yield str(problem)


def suite_specs(entries: list, key: str = "eval.suite") -> list[SuiteSpec]:
    """Each suite entry (a path / hf:// URI string, a mapping, or a SuiteSpec) as a SuiteSpec; a bad
    entry raises ValueError naming `key[index]`, the bad key or value, and what is valid."""
    return [_suite_spec(entry, f"{key}[{index}]") for index, entry in enumerate(entries)]


def _suite_spec(entry, where: str) -> SuiteSpec:
    if isinstance(entry, SuiteSpec):
        return entry
    if isinstance(entry, str):
        return _string_spec(entry, where)
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a path, an hf:// URI or a mapping {{path: ..., answer: ...}}")
    unknown = sorted(set(entry) - set(SUITE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(SUITE_KEYS)}")
    if not isinstance(entry.get("path"), str) or not entry["path"].strip():
        raise ValueError(f"{where}: a mapping needs `path` (a file, directory or hf://OWNER/NAME)")
    fields, path = {"keep": [], **entry}, entry["path"]
    if path.startswith(SUITE_HUB_SCHEME):  # the URI's parameters, unless the mapping sets them itself
        fields = {**_hub_query(path, where), **fields, "path": path.split("?")[0]}
    spec = SuiteSpec(**fields)
    _check_spec(spec, where)
    return spec


def _string_spec(entry: str, where: str) -> SuiteSpec:
    if not entry.startswith(SUITE_HUB_SCHEME):
        return SuiteSpec(path=entry)
    return SuiteSpec(path=entry.split("?")[0], **_hub_query(entry, where))


def _hub_query(entry: str, where: str) -> dict:
    parts = urlsplit(entry)
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = sorted(set(query) - set(HUB_PARAMETERS))
    if not (parts.netloc + parts.path).strip() or unknown:
        raise ValueError(
            f"{where}: {entry!r}: expected hf://OWNER/NAME?split=..., with parameters "
            f"{', '.join(HUB_PARAMETERS)}" + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )
    return {HUB_PARAMETERS[name]: value for name, value in query.items()}


def _check_spec(spec: SuiteSpec, where: str) -> None:
    def names(value) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def name_list(value) -> bool:
        return isinstance(value, list) and bool(value) and all(map(names, value))

    checks = [
        ("question", names(spec.question), "a column name"),
        (
            "options",
            names(spec.options) or name_list(spec.options),
            "a column name or a list of column names",
        ),
        ("answer", names(spec.answer), "a column name"),
        ("name", spec.name is None or names(spec.name), "a source name"),
        ("answer_format", spec.answer_format is None or spec.answer_format in set(AnswerFormat), ""),
        ("shuffle", spec.shuffle in (None, True, False), "true, false or null"),
        ("seed", isinstance(spec.seed, int) and not isinstance(spec.seed, bool), "an integer"),
        ("split", names(spec.split), "a split name"),
        ("config", spec.config is None or names(spec.config), "a config name"),
        ("revision", spec.revision is None or names(spec.revision), "a commit sha, tag or branch"),
        (
            "data_files",
            spec.data_files is None or names(spec.data_files) or name_list(spec.data_files),
            "a file name or a list of them",
        ),
        ("keep", spec.keep is None or (isinstance(spec.keep, list) and all(map(names, spec.keep))), "a list"),
    ]
    for field, ok, valid in checks:
        if not ok:
            valid = valid or ", ".join(AnswerFormat)
            raise ValueError(f"{where}.{field}={getattr(spec, field)!r}: must be {valid}")
    if spec.shuffle is False and isinstance(spec.options, list) and spec.answer in spec.options:
        raise ValueError(
            f"{where}: answer {spec.answer!r} is an option column, so unshuffled options would always put "
            "the correct one in the same place; drop shuffle: false"
        )
