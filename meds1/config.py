"""The config schema: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files under `conf/` fill these in; because every group is typed, a misspelt key or a
value of the wrong type in an override fails when Hydra composes the config, naming the key.
Stages receive the composed config as a `Config` object (`OmegaConf.to_object`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

STAGES = ("curate", "train", "eval")
COMMANDS = (*STAGES, "all", "report")


@dataclass
class Resources:
    """What one stage asks a scheduler for (per node); the SLURM launcher reads these."""

    gpus: int = 0
    nodes: int = 1
    cpus: int = 2
    mem_gb: int = 16
    time_min: int = 60


@dataclass
class PathsConfig:
    root: str = "${oc.env:MEDS1_OUTPUT,./outputs}"
    cache: str = "${paths.root}/.cache"


@dataclass
class TinyModelSpec:
    """Architecture of the locally built demo model (a small Llama)."""

    vocab_size: int = 2048
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 192
    max_position_embeddings: int = 2048
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = MISSING
    path: str = MISSING  # hub id or local directory
    revision: str | None = None
    dtype: str = "bfloat16"
    build: str | None = None  # "tiny": built locally under paths.cache, then loaded from there
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)


@dataclass
class SourceConfig:
    """Where curation reads rows: a local file (`path`) or a hub dataset."""

    path: str | None = None  # parquet/json/jsonl; "pkg://meds1/..." for files shipped in the package
    name: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # source column -> Question/Complex_CoT/Response


@dataclass
class QualityConfig:
    # CoTs of exactly these token counts are truncation artifacts in medical-o1-reasoning-SFT.
    truncated_cot_tokens: list[int] = field(default_factory=lambda: [1024])


@dataclass
class FormatConfig:
    """How a curated row becomes a chat conversation."""

    system_prompt: str | None = None
    assistant_template: str = "## Thinking\n\n{cot}\n\n## Final Response\n\n{response}"


@dataclass
class CurationConfig:
    method: str = "s1"  # s1 | random | all
    n_samples: int = 1000
    source: SourceConfig = field(default_factory=SourceConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    specialty_column: str = "specialty"  # column holding each row's specialty label (s1 sampling)
    long_cot_tokens: int = 1000  # s1: rows with CoT at least this long are taken first (never more than n)
    uniform_fraction: float = 0.7  # s1: share of picks that choose a specialty uniformly
    specialty_weights: dict[str, float] = field(default_factory=dict)  # s1: weights for the other picks
    format: FormatConfig = field(default_factory=FormatConfig)
    tokenize_batch_size: int = 1000
    resources: Resources = field(default_factory=Resources)


@dataclass
class TrainerConfig:
    recipe: str = MISSING
    learning_rate: float = MISSING
    num_epochs: float = MISSING
    global_batch_size: int = MISSING
    per_device_batch_size: int = 1
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "cosine"
    block_size: int = MISSING
    bf16: bool = True
    gradient_checkpointing: bool = True
    save_steps: int = 500
    logging_steps: int = 10
    max_steps: int = -1
    resources: Resources = field(default_factory=Resources)


@dataclass
class BudgetForcingConfig:
    """s1 budget forcing (`eval=tts`): cap the thinking, optionally extend it, then force an answer.

    The answer starts with `think_start`; thinking stops at `think_end` (or end of turn) or after
    `budget` tokens. While budget is left, the first `num_ignore` stops are overridden by appending
    `ignore_str` and thinking on. Then `answer_prefix` is appended and the answer generated.
    """

    enabled: bool = False
    budget: int = 1024  # thinking tokens
    num_ignore: int = 0
    ignore_str: str = "Wait"
    think_start: str = "## Thinking\n\n"
    think_end: str = "## Final Response"
    answer_prefix: str = "\n\n## Final Response\n\n"
    answer_max_tokens: int = 256
    chunk_size: int = 1024  # questions per round trip; predictions are saved after each chunk


@dataclass
class EvalConfig:
    suite: list[str] = MISSING  # files, directories or hf://OWNER/NAME?split=... (meds1/evaluation/data.py)
    max_per_source: int | None = None
    prompt: str = "Please answer the following multiple-choice question:\n{question}\n{options}"
    strict: bool = False  # append strict_suffix (HuatuoGPT's --strict_prompt idea)
    strict_suffix: str = (
        "\nEnsure your response concludes with the correct option in the format: 'The answer is A.'."
    )
    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    repeats: int = 1  # independent runs with seeds seed, seed+1, ...; metrics report mean and spread
    max_failures: int = 0  # generations that may still fail after retries (counted wrong) before eval stops
    tts: BudgetForcingConfig = field(default_factory=BudgetForcingConfig)


@dataclass
class InferenceConfig:
    backend: str = MISSING  # hf | openai | vllm
    batch_size: int = 32  # hf: prompts per generate() call
    dtype: str = "auto"
    # openai: any OpenAI-compatible endpoint (a vLLM server, Gemini, transformers serve)
    base_url: str | None = None
    api_key: str | None = None  # from the environment; never written to disk
    served_model: str | None = None  # the request's `model` field; default: the model's path
    max_concurrency: int = 8
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    requests_per_minute: float | None = None
    timeout_s: float = 120.0
    # vllm: offline engines on this node's GPUs (pip install -e ".[vllm]")
    tensor_parallel_size: int = 1  # GPUs per engine
    data_parallel_size: int = 1  # engines, each on its own tensor_parallel_size GPUs, sharing the prompts
    max_model_len: int | None = None  # default: the model's
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    engine_args: dict[str, Any] = field(default_factory=dict)  # any other vllm.LLM keyword argument
    resources: Resources = field(default_factory=Resources)


@dataclass
class Config:
    name: str = MISSING  # the experiment's name, set by conf/experiment/<name>.yaml
    description: str = ""
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    compare_base: bool = False  # stage=all also evaluates the untrained model, as "<name>-base"
    stage: str = "all"
    seed: int = 42
    force: bool = False
    dry_run: bool = False
    overrides: list[str] = field(default_factory=list)  # the command line's overrides; set by run.py
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="meds1_schema", node=Config)
    for group, schema in [
        ("paths", PathsConfig),
        ("model", ModelConfig),
        ("curation", CurationConfig),
        ("trainer", TrainerConfig),
        ("eval", EvalConfig),
        ("inference", InferenceConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=schema)


def to_config(cfg: DictConfig, overrides: list[str] | None = None) -> Config:
    """Resolve a composed DictConfig into a typed `Config`, with absolute output paths."""
    if overrides is not None:
        cfg.overrides = list(overrides)
    config: Config = OmegaConf.to_object(cfg)
    config.paths.root = str(Path(config.paths.root).expanduser().resolve())
    config.paths.cache = str(Path(config.paths.cache).expanduser().resolve())
    return config


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str] = ()) -> Config:
    """Compose the project config the way `run.py` does (for tests, notebooks and benchmarks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return to_config(cfg, overrides=list(overrides))
