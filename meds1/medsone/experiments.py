"""Translate med-s1's experiments (its results.json `config`s) into meds1 experiment files.

    python -m meds1.medsone experiments path/to/med-s1/results.json --out DIR [--prefix P]
    python run.py --config-dir DIR experiment=<name> stage=all hydra/launcher=slurm

Each med-s1 experiment becomes `DIR/experiment/<name>.yaml`, headed by a comment naming its source. Its
config is first resolved as med-s1 resolved it (som-shahlab/med-s1@d15c393
data/curate_med_s1k_new.py:resolve_config_reference): for `curation`, `training_params` and `datasets`
only, a value "same as <exp>" is replaced by that experiment's whole value of the same key (recursively;
a missing reference or a cycle is an error); every other key is the experiment's own.

What each key becomes:
- `model_key` -> `model` (MODELS); `datasets.curate` -> `curation/source` (SOURCES; null: no curate
  stage); `datasets.eval` -> `eval` (EVALS); `prompting: step` -> `eval.prompting=step`;
- `curation.method` -> the curation preset (METHODS), `n_samples`, `cluster_percentage` and
  `outlier_percentage` -> `cluster_fraction` and `outlier_fraction`; `format` -> `curation.format.layout`
  (FORMATS, with med-s1's `clean_text`); `extract` (a name or a chain) -> `curation.trace.transforms`,
  with "step" appended when a perturbation follows a chain that does not end in it (med-s1's rule);
  `perturbation` -> `curation.trace.perturbation.{type,rate}`; `restore` -> `curation.trace.restore`;
- `training_params` -> the `med-s1` trainer with its learning rate, epochs, weight decay, warmup, Adam
  settings and a global batch of batch_size x gradient_accumulation_steps x 4 (med-s1's
  train/resolve_config.py scales accumulation so that this product holds on its 4 GPUs), block 8192,
  a 10% validation split (train/sft_carina.sh, data/utils/formatting.py:format_for_training) and the
  checkpoint of lowest eval loss kept (sft_carina.sh's early stopping with patience 999999:
  train/trainer.py keeps the best state and saves it as the final model).
A key with no meds1 equivalent is reported, one line each (`name: key=value: why`), never dropped
silently; an experiment that cannot be written at all (an unknown model, a broken reference) is reported
and skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from meds1.errors import UserError
from meds1.store.identity import safe_name

RESOLVED_KEYS = ("curation", "training_params", "datasets")  # the keys "same as" resolves (med-s1)
MODELS = {
    "llama3.1:8b": "llama3.1-8b",
    "qwen2.5:7b": "qwen2.5-7b",
    "nemotron:8b": "nemotron-nano-8b",
    "huatuo:8b": "huatuo-o1-8b",
    "qwq:32B": "qwq-32b",
}
SOURCES = {"huatuo-sft": "huatuo-sft", "s1-gemini-raw": "s1-gemini", "nejmcr": "nejmcr"}
EVALS = {"huatuo-eval": "medsone", "gpqa-diamond": "gpqa-diamond"}
METHODS = {"random": "random", "all": "all", "embedding-diversity": "embedding"}
FORMATS = {"huatuo": "huatuo", "qwen": "s1", "nemotron": "nemotron"}
MEDSONE_GPUS = 4  # med-s1's training node (train/sft_carina.sh --gres=gpu:4)
# med-s1's eval decoding (eval/model.py): set beside eval=gpqa-diamond, which is not eval=medsone.
MEDSONE_DECODING = {"temperature": 0.0, "top_p": 0.9, "max_new_tokens": 8192}
KNOWN = {*RESOLVED_KEYS, "model_key", "prompting", "eval", "description"}  # a config's keys meds1 reads
IGNORED = {"format": "a top-level format is ignored by med-s1 (it reads curation.format)"}  # reported


@dataclass
class Translation:
    name: str
    text: str | None  # the experiment file, or None when it cannot be written
    problems: list[str] = field(default_factory=list)  # "key=value: why" lines


def resolve(name: str, experiments: dict, key: str, seen: tuple[str, ...] = ()) -> object:
    """`experiments[name][config][key]` with "same as <exp>" followed as med-s1 follows it."""
    if name in seen:
        raise UserError(f"{name}: {key} refers back to itself ({' -> '.join([*seen, name])})")
    if name not in experiments:
        raise UserError(f"{seen[-1]}: {key} is 'same as {name}', which results.json does not hold")
    value = (experiments[name].get("config") or {}).get(key)
    if isinstance(value, str) and value.startswith("same as "):
        return resolve(value.removeprefix("same as ").strip(), experiments, key, (*seen, name))
    return value


def _shown(value: object) -> str:
    """A value as a problem line shows it (JSON: strings quoted, booleans lower case)."""
    return json.dumps(value)


class _Experiment:
    """The pieces of one experiment file, gathered while its keys are translated."""

    def __init__(self, name: str):
        self.name = name
        self.defaults: dict[str, str] = {}
        self.body: dict = {"name": name}
        self.problems: list[str] = []  # "key=value: why" for each key not translated

    def set(self, dotted: str, value: object) -> None:
        node = self.body
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def cannot(self, key: str, value: object, why: str) -> None:
        self.problems.append(f"{key}={_shown(value)}: {why}")


def translate(name: str, experiments: dict, source: str, out_name: str | None = None) -> Translation:
    """One med-s1 experiment as a meds1 experiment file (see the module doc)."""
    entry = experiments[name]
    config = entry.get("config") or {}
    experiment = _Experiment(out_name or safe_name(name))
    try:
        resolved = {key: resolve(name, experiments, key) for key in RESOLVED_KEYS}
    except UserError as error:
        return Translation(name, None, [f"not written: {error}"])
    model = MODELS.get(config.get("model_key"))
    if model is None:
        return Translation(
            name,
            None,
            [f"model_key={_shown(config.get('model_key'))}: unknown; known: {', '.join(MODELS)}"],
        )
    experiment.defaults["model"] = model
    for key, value in config.items():
        if key in IGNORED:
            experiment.cannot(key, value, IGNORED[key])
        elif key not in KNOWN:
            experiment.cannot(key, value, "not a med-s1 experiment key meds1 knows")
    datasets = resolved["datasets"] if isinstance(resolved["datasets"], dict) else {}
    curation = resolved["curation"] if isinstance(resolved["curation"], dict) else None
    training = resolved["training_params"] if isinstance(resolved["training_params"], dict) else None
    stages = [*(["curate"] if curation else []), *(["train"] if training else []), "eval"]
    if training and not curation:
        experiment.cannot("training_params", training, "training without curation has no rows: not trained")
        stages.remove("train")
    experiment.set("stages", stages)
    description = entry.get("description") or f"med-s1 experiment {name}"
    experiment.set("description", description.replace("${", "\\${"))  # literal text, not interpolation
    _datasets(experiment, datasets, curation is not None)
    if curation:
        _curation(experiment, curation)
    if training:
        _training(experiment, training)
    _eval(experiment, config)
    experiment.defaults.setdefault("inference", "vllm")
    return Translation(name, _render(experiment, name, source), experiment.problems)


def _datasets(experiment: _Experiment, datasets: dict, curates: bool) -> None:
    curate, evaluate = datasets.get("curate"), datasets.get("eval", "huatuo-eval")
    for key in sorted(set(datasets) - {"curate", "eval"}):
        experiment.cannot(f"datasets.{key}", datasets[key], "not a med-s1 dataset role")
    if curates:
        if curate in SOURCES:
            experiment.defaults["curation/source"] = SOURCES[curate]
        else:
            experiment.cannot("datasets.curate", curate, f"unknown source; known: {', '.join(SOURCES)}")
    if evaluate in EVALS:
        experiment.defaults["eval"] = EVALS[evaluate]
        if evaluate != "huatuo-eval":
            for key, value in MEDSONE_DECODING.items():
                experiment.set(f"eval.{key}", value)
    else:
        experiment.cannot("datasets.eval", evaluate, f"unknown eval set; known: {', '.join(EVALS)}")
        experiment.defaults["eval"] = "medsone"


def _curation(experiment: _Experiment, curation: dict) -> None:
    method = curation.get("method")
    experiment.defaults["curation"] = METHODS.get(method, "random")
    if method not in METHODS:
        experiment.cannot("curation.method", method, f"unknown; known: {', '.join(METHODS)}; random used")
    handled = {"method", "n_samples", "format", "extract", "perturbation", "restore"}
    if "n_samples" in curation:
        experiment.set("curation.n_samples", curation["n_samples"])
    layout = FORMATS.get(curation.get("format", "huatuo"))
    if layout is None:
        experiment.cannot("curation.format", curation["format"], f"unknown; known: {', '.join(FORMATS)}")
        layout = "huatuo"
    experiment.set("curation.format.layout", layout)
    experiment.set("curation.format.clean_text", True)  # med-s1's preprocess_text, on every format
    extract = curation.get("extract")
    chain = [] if extract is None else [extract] if isinstance(extract, str) else list(extract)
    perturbation = curation.get("perturbation")
    if perturbation and chain and chain[-1] != "step":
        chain.append("step")  # med-s1 (step_extraction.py:apply_step_extraction) appends it too
    if chain:
        experiment.set("curation.trace.transforms", chain)
    if perturbation:
        if not chain:
            experiment.cannot(
                "curation.perturbation",
                perturbation,
                "med-s1 never perturbs without `extract`: not perturbed",
            )
        else:
            experiment.set("curation.trace.perturbation.type", perturbation.get("type"))
            experiment.set("curation.trace.perturbation.rate", perturbation.get("rate"))
    if curation.get("restore"):
        experiment.set("curation.trace.restore", True)
    if method == "embedding-diversity":
        handled |= {"column", "cluster_percentage", "outlier_percentage"}
        if "cluster_percentage" in curation:
            experiment.set("curation.cluster_fraction", curation["cluster_percentage"] / 100)
        if "outlier_percentage" in curation:
            experiment.set("curation.outlier_fraction", curation["outlier_percentage"] / 100)
        if curation.get("intra_group_ranking") in ("cot-length", "random"):
            handled.add("intra_group_ranking")
            experiment.set("curation.cluster_ranking", curation["intra_group_ranking"])
        if curation.get("column", "Question") != "Question":
            experiment.cannot("curation.column", curation["column"], "meds1 embeds the Question only")
    if "huatuo_format" in curation:
        handled.add("huatuo_format")
        experiment.cannot(
            "curation.huatuo_format", curation["huatuo_format"], "legacy key med-s1 ignores (layout huatuo)"
        )
    for key in sorted(set(curation) - handled):
        experiment.cannot(f"curation.{key}", curation[key], "no meds1 equivalent: not applied")


def _training(experiment: _Experiment, training: dict) -> None:
    experiment.defaults["trainer"] = "med-s1"
    optimizer = training.get("optimizer") or {}
    accumulation = training.get("gradient_accumulation_steps", 1)
    batch = training.get("batch_size", 1) * accumulation * MEDSONE_GPUS
    settings = {
        "learning_rate": training.get("learning_rate"),
        "num_epochs": training.get("num_epochs"),
        "global_batch_size": batch,
        "weight_decay": training.get("weight_decay"),
        "warmup_ratio": training.get("warmup_ratio"),
        "adam_beta1": optimizer.get("adam_beta1"),
        "adam_beta2": optimizer.get("adam_beta2"),
        "adam_epsilon": optimizer.get("adam_epsilon"),
        "block_size": 8192,  # train/sft_carina.sh --block_size=8192
        "validation_fraction": 0.1,  # format_for_training's 10% split: med-s1 trained on 90% of the rows
        "keep": "best_eval_loss",  # sft_carina.sh: early stopping that never stops, keeping the best state
    }
    for key, value in settings.items():
        if value is not None:
            experiment.set(f"trainer.{key}", value)
    if training.get("total_batch_size") not in (None, batch):
        experiment.cannot(
            "training_params.total_batch_size",
            training["total_batch_size"],
            f"not batch_size x gradient_accumulation_steps x {MEDSONE_GPUS} = {batch}, which is used",
        )
    no_decay = optimizer.get("no_decay_params")
    if no_decay is not None and sorted(no_decay) != ["LayerNorm.weight", "bias"]:
        experiment.cannot(
            "training_params.optimizer.no_decay_params", no_decay, "meds1 exempts biases and norms only"
        )
    known = {"learning_rate", "num_epochs", "batch_size", "gradient_accumulation_steps", "weight_decay"}
    known |= {"warmup_ratio", "optimizer", "total_batch_size"}
    for key in sorted(set(training) - known):
        experiment.cannot(f"training_params.{key}", training[key], "no meds1 equivalent: not applied")
    for key in sorted(set(optimizer) - {"no_decay_params", "adam_beta1", "adam_beta2", "adam_epsilon"}):
        experiment.cannot(f"training_params.optimizer.{key}", optimizer[key], "no meds1 equivalent")


def _eval(experiment: _Experiment, config: dict) -> None:
    prompting = config.get("prompting")
    if prompting == "step":
        experiment.set("eval.prompting", "step")
    elif prompting is not None:
        experiment.cannot("prompting", prompting, "unknown; known: step")
    options = config.get("eval")
    if not isinstance(options, dict):
        if options is not None:
            experiment.cannot("eval", options, "expected an object")
        return
    if repetitions := options.get("repetitions"):
        experiment.set("eval.repeats_per_source", dict(repetitions))
    if (multiplier := options.get("repetition_multiplier")) and multiplier > 1:
        experiment.cannot("eval.repetition_multiplier", multiplier, "set eval.repeats_per_source instead")
    for key in sorted(set(options) - {"repetitions", "repetition_multiplier"}):
        experiment.cannot(f"eval.{key}", options[key], "no meds1 equivalent")


def _render(experiment: _Experiment, name: str, source: str) -> str:
    lines = [
        "# @package _global_",
        f"# Imported from med-s1 experiment {name!r} of {source}",
        "# by `python -m meds1.medsone experiments` (meds1/medsone/experiments.py).",
        *(f"# Not translated: {problem}" for problem in experiment.problems),
        "defaults:",
        *(f"  - override /{group}: {option}" for group, option in experiment.defaults.items()),
        "",
    ]
    body = yaml.safe_dump(experiment.body, sort_keys=False, width=110, allow_unicode=True)
    return "\n".join(lines) + body


def read_experiments(results_file: Path) -> dict:
    """The `experiments` object of a med-s1 results.json (else a UserError saying what is wrong)."""
    try:
        data = json.loads(results_file.read_text())
    except FileNotFoundError:
        raise UserError(f"med-s1 results file {results_file} does not exist") from None
    except json.JSONDecodeError as error:
        raise UserError(f"med-s1 results file {results_file} is not valid JSON ({error})") from None
    experiments = data.get("experiments") if isinstance(data, dict) else None
    if not isinstance(experiments, dict):
        raise UserError(f"{results_file} is not in med-s1's shape: no top-level 'experiments' object")
    return experiments


def import_experiments(
    results_file: Path, out: Path, prefix: str = "", source: str | None = None
) -> list[Translation]:
    """Write one experiment file per med-s1 experiment under `out/experiment/`; returns every translation.

    `source` names the results file in each file's header (default: its path)."""
    experiments = read_experiments(results_file)
    folder = out / "experiment"
    folder.mkdir(parents=True, exist_ok=True)
    translations = []
    for name in experiments:
        if not isinstance(experiments[name], dict):
            translations.append(Translation(name, None, ["not written: not an object"]))
            continue
        translation = translate(name, experiments, source or str(results_file), safe_name(prefix + name))
        if translation.text is not None:
            (folder / f"{safe_name(prefix + name)}.yaml").write_text(translation.text)
        translations.append(translation)
    return translations
