"""The rules a config must follow that its types cannot state, and the typed config they are checked on.

`to_config` runs them wherever a config is built, so a bad setting fails at compose: in `--cfg job`,
`dry_run=true` and before any job is submitted, not hours later when its stage starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from meds1.config import (
    Config,
    CurationConfig,
    CurationMethod,
    InferenceBackend,
    SpecialtyMethod,
    Stage,
)
from meds1.errors import UserError


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
    if curation.format.assistant_template is not None:
        templates.append(
            ("curation.format.assistant_template", curation.format.assistant_template, ("cot", "response"))
        )


def _eval_problems(config: Config, ranges: list) -> Iterator[str]:
    eval_cfg, tts = config.eval, config.eval.tts
    ranges += [
        ("eval.repeats", eval_cfg.repeats, eval_cfg.repeats >= 1, ">= 1"),
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
