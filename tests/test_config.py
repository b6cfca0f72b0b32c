import dataclasses
import json
import pickle
import subprocess
import sys

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from meds1.cli import group_options
from meds1.config import COMMANDS, Choice, CurationMethod, compose
from meds1.errors import UserError
from meds1.registry import redacted
from meds1.workspace import config_hash
from tests.conftest import REPO

EXPERIMENTS = group_options("experiment")


def test_seed_experiments_exist():
    assert {"med-s1-1k", "med-s1-5k", "med-s1-25k", "random-1k", "random-5k", "base", "demo"} <= set(
        EXPERIMENTS
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("stage", COMMANDS)
def test_every_experiment_composes_for_every_stage(experiment, stage):
    cfg = compose([f"experiment={experiment}", f"stage={stage}"])
    assert cfg.name == experiment
    assert cfg.stage == stage
    assert set(cfg.stages) <= {"curate", "train", "eval"}
    assert cfg.trainer.global_batch_size > 0 and cfg.trainer.learning_rate > 0


def test_seed_experiments_use_llama_and_their_recipe():
    for name, method, n in [
        ("med-s1-1k", "s1", 1000),
        ("med-s1-5k", "s1", 5000),
        ("random-1k", "random", 1000),
    ]:
        cfg = compose([f"experiment={name}"])
        assert cfg.model.path == "meta-llama/Llama-3.1-8B-Instruct"
        assert (cfg.curation.method, cfg.curation.n_samples) == (method, n)
    assert compose(["experiment=med-s1-25k"]).curation.method == "all"
    assert compose(["experiment=base"]).stages == ["eval"]


def test_default_is_the_demo():
    cfg = compose([])
    assert cfg.name == "demo" and cfg.stage == "all" and cfg.model.build == "tiny"


def test_command_line_group_choice_beats_the_experiment():
    cfg = compose(["experiment=med-s1-1k", "model=tiny"])
    assert cfg.model.name == "tiny"
    assert cfg.curation.n_samples == 1000 and cfg.trainer.recipe == "s1"


def test_overrides_reach_the_typed_config():
    cfg = compose(["experiment=random-1k", "curation.n_samples=500", "seed=1"])
    assert cfg.curation.n_samples == 500 and cfg.seed == 1
    assert cfg.overrides == ["experiment=random-1k", "curation.n_samples=500", "seed=1"]


def test_output_root_from_env_and_command_line(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDS1_OUTPUT", str(tmp_path / "env"))
    assert compose([]).paths.root == str(tmp_path / "env")
    assert compose([f"paths.root={tmp_path / 'cli'}"]).paths.root == str(tmp_path / "cli")
    monkeypatch.delenv("MEDS1_OUTPUT")
    assert compose([]).paths.root.endswith("outputs")


@pytest.mark.parametrize(
    "override",
    ["curation.n_sample=3", "curation.n_samples=abc", "trainer.learning_rate=fast", "nosuchkey=1", "stage=x"],
)
def test_wrong_key_or_type_fails_at_compose_time(override):
    with pytest.raises(ConfigCompositionException):
        compose([override])


def test_rules_are_checked_where_the_config_is_built():
    with pytest.raises(UserError, match=r"^curation.n_samples=-1: must be >= 0$"):
        compose(["curation.n_samples=-1"])
    assert compose(["experiment=base", "curation.n_samples=-1"]).stages == ["eval"]  # base does not curate


def _plain(obj):
    """`obj` with every Choice member replaced by its plain string."""
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(
            obj, **{f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        )
    if isinstance(obj, list):
        return [_plain(value) for value in obj]
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    return str(obj) if isinstance(obj, Choice) else obj


def test_choices_are_typed_but_serialize_as_their_strings():
    cfg = compose(["curation.method=embedding-diversity", "trainer.report_to=[tensorboard]"])
    assert isinstance(cfg.curation.method, CurationMethod) and cfg.curation.method == "embedding-diversity"
    data = json.loads(json.dumps(redacted(cfg)))
    assert data["curation"]["method"] == "embedding-diversity" and data["trainer"]["report_to"] == [
        "tensorboard"
    ]
    assert f"{cfg.stage}-{cfg.curation.method}" == "all-embedding-diversity" and repr(cfg.stage) == "'all'"
    assert "  method: embedding-diversity" in OmegaConf.to_yaml(OmegaConf.structured(cfg)).splitlines()
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # submitit pickles configs into SLURM jobs
    plain = _plain(cfg)
    assert type(plain.curation.method) is str
    assert all(config_hash(cfg, stage) == config_hash(plain, stage) for stage in cfg.stages)


def test_print_config_does_not_import_torch():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "run.py", "experiment=med-s1-1k", "stage=train", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "name: med-s1-1k" in result.stdout and "global_batch_size: 16" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformers", "trl", "datasets"} & imported
