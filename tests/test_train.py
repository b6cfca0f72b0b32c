"""Training settings: batch arithmetic, process placement, SFT/FSDP arguments, and bad input."""

import json
import logging
import os
import signal
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from meds1 import pipeline
from meds1.config.compose import compose
from meds1.config.schema import Resources, TrainerConfig
from meds1.errors import MissingInputError, UserError
from meds1.stages import train
from meds1.store.workspace import stage_dir
from meds1.training import distributed
from meds1.training.distributed import DistributedEnv, detect
from meds1.training.preemption import Preempted, PreemptionGuard
from meds1.training.sft import SEGMENTS, check_options, last_checkpoint, log_start, sft_arguments


def batch_sizes(global_batch: int, per_device: int, world: int) -> tuple[int, int]:
    return TrainerConfig(global_batch_size=global_batch, per_device_batch_size=per_device).batch_sizes(world)


@pytest.mark.parametrize(
    ("global_batch", "per_device", "world", "expected"),
    [(16, 1, 8, (1, 2)), (16, 4, 1, (4, 4)), (128, 2, 8, (2, 8)), (4, 4, 2, (2, 1)), (16, 1, 16, (1, 1))],
)
def test_derived_batch_keeps_the_global_batch(global_batch, per_device, world, expected):
    per, accumulation = batch_sizes(global_batch, per_device, world)
    assert (per, accumulation) == expected
    assert per * accumulation * world == global_batch


def test_med_s1_batch_4_runs_on_4_gpus_and_batch_2_is_refused_there():
    assert batch_sizes(4, 1, 4) == (1, 1)
    # med-s1's sft_carina.sh computes accumulation 2 // 4 = 0 here; meds1 refuses it.
    with pytest.raises(UserError, match="global_batch_size=2 is not divisible by the world size 4"):
        batch_sizes(2, 1, 4)


def test_batch_that_does_not_divide_is_refused():
    with pytest.raises(UserError, match="global_batch_size=16 is not divisible by the world size 3"):
        batch_sizes(16, 1, 3)
    with pytest.raises(UserError, match="per_device_batch_size=3 does not divide"):
        batch_sizes(16, 3, 2)


def set_environment(monkeypatch, variables: dict) -> None:
    """Exactly `variables` of the launcher variables `detect` reads (the test's own launcher's removed)."""
    for name in list(os.environ):
        if name.startswith(("SLURM_", "SUBMITIT_")) or name in (
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
        ):
            monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_torchrun_variables_win(monkeypatch):
    variables = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "SLURM_PROCID": "0",
    }
    set_environment(monkeypatch, variables)
    env = detect()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 4, 1, 2)
    assert env.launcher == "torchrun" and not env.is_main and env.is_distributed


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("gpu[07-08]", "gpu07"),
        ("gpu[07-09,12],cpu1", "gpu07"),
        ("r[1-2]-n[03-04]", "r1-n03"),
        ("a,b[1-2]", "a"),
    ],
)
def test_slurm_tasks_on_several_nodes(monkeypatch, nodelist, host):
    slurm = {"SLURM_PROCID": "9", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2"}
    set_environment(monkeypatch, {**slurm, "SLURM_JOB_NODELIST": nodelist, "SLURM_JOB_ID": "123456"})
    env = detect()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (9, 16, 1, 8)
    assert env.master_addr == host and env.master_port == 29500 + 123456 % 20000
    assert env.launcher == "slurm"


def test_an_unreadable_node_list_names_it(monkeypatch):
    slurm = {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "1"}
    set_environment(monkeypatch, {**slurm, "SLURM_JOB_NODELIST": "gpu[07-"})
    with pytest.raises(
        UserError, match=r"cannot read the first host of the SLURM node list 'gpu\[07-'; set MASTER_ADDR"
    ):
        detect()


def test_slurm_single_node_and_overrides(monkeypatch):
    base = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0", "SLURM_JOB_NUM_NODES": "1"}
    set_environment(monkeypatch, {**base, "SLURM_JOB_NODELIST": "gpu07", "SLURM_JOB_ID": "7"})
    assert detect().master_addr == "127.0.0.1" and detect().is_main
    set_environment(monkeypatch, {**base, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "40000"})
    pinned = detect()
    assert (pinned.master_addr, pinned.master_port) == ("10.0.0.5", 40000)


def test_single_process_outside_a_launcher(monkeypatch):
    set_environment(monkeypatch, {})
    assert detect() == DistributedEnv()
    # A batch script's own shell (one task) is not a distributed run.
    set_environment(monkeypatch, {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert not detect().is_distributed


def test_world_size_is_one_process_per_gpu_and_the_global_batch_is_checked_at_compose():
    assert pipeline.processes("train", Resources(gpus=8, nodes=2)) == 16
    assert pipeline.processes("train", Resources(gpus=0, nodes=1)) == 1
    assert pipeline.processes("eval", Resources(gpus=8, nodes=1)) == 1  # one task; the backend spreads
    cfg = compose(["experiment=med-s1-1k", "trainer.resources.gpus=8", "trainer.global_batch_size=16"])
    world = pipeline.processes("train", cfg.trainer.resources)
    # 8 GPU processes of 1 sequence each reach the global batch of 16 in 2 accumulation steps.
    assert cfg.trainer.batch_sizes(world) == (1, 2)
    # med-s1-25k's batch 2 on 4 GPUs: refused when the config is built, before anything is queued.
    with pytest.raises(
        UserError, match=r"^trainer.global_batch_size=2 is not divisible by the world size 4: "
    ):
        compose(["experiment=med-s1-25k", "trainer.resources.gpus=4"])
    assert compose(["experiment=med-s1-25k", "trainer.resources.gpus=4", "stages=[eval]"]).stages == ["eval"]


def test_on_main_without_a_process_group_just_runs():
    assert distributed.on_main(lambda: 7, DistributedEnv()) == 7
    with pytest.raises(UserError, match="boom"):
        distributed.on_main(lambda: (_ for _ in ()).throw(UserError("boom")), DistributedEnv())


def test_sft_arguments_from_a_gpu_recipe():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from trl import SFTConfig

    cfg = compose(["experiment=med-s1-1k", "trainer.fsdp.layer_classes=[LlamaDecoderLayer]"])
    arguments = sft_arguments(cfg.trainer, Path("/tmp/ckpt"), 1, 2, seed=1)
    args = SFTConfig(**arguments, use_cpu=True)
    assert args.per_device_train_batch_size == 1 and args.gradient_accumulation_steps == 2
    assert args.bf16 and not args.gradient_checkpointing  # FSDP checkpoints activations itself
    assert args.learning_rate == 1e-5 and args.max_length == 32768 and args.report_to == []
    assert (args.adam_beta1, args.adam_beta2, args.weight_decay) == (0.9, 0.95, 1e-4)
    plugin_args = args.fsdp_plugin_args
    assert plugin_args["fsdp_version"] == 2 and plugin_args["reshard_after_forward"] is True
    assert plugin_args["activation_checkpointing"] is True
    assert plugin_args["state_dict_type"] == "SHARDED_STATE_DICT"
    plugin = FullyShardedDataParallelPlugin(**plugin_args)  # accelerate accepts every key
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.auto_wrap_policy is not None


def test_sft_arguments_for_packing_and_validation():
    cfg = compose(["experiment=demo", "trainer.packing=true", "trainer.validation_fraction=0.1"])
    arguments = sft_arguments(cfg.trainer, Path("/tmp/ckpt"), 4, 1, seed=1)
    assert arguments["packing"] and arguments["packing_strategy"] == "bfd"
    assert arguments["eval_strategy"] == "steps" and arguments["eval_steps"] == cfg.trainer.save_steps
    assert "fsdp" not in arguments and arguments["gradient_checkpointing"] is False


def test_adam_betas_reach_the_optimizer(make_config, tiny_model_dir):
    """The betas of the optimizer the Trainer builds are the recipe's, not transformers' defaults."""
    from datasets import Dataset

    from meds1.training.sft import build_trainer, load_model, split_validation
    from tests.test_train_masking import conversations

    cfg = make_config("experiment=demo", "trainer.adam_beta1=0.8", "trainer.adam_beta2=0.95")
    model, tokenizer = load_model(str(tiny_model_dir), None, "float32", None)
    rows, _ = split_validation(Dataset.from_dict({"messages": conversations("huatuo", None, n=4)}), 0, 1)
    trainer = build_trainer(cfg.trainer, model, tokenizer, rows, None, Path(cfg.paths.root) / "ckpt", seed=1)
    optimizer = trainer.create_optimizer()
    assert {group["betas"] for group in optimizer.param_groups} == {(0.8, 0.95)}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.liger_kernel=true", "liger_kernel=true needs CUDA GPUs and `pip install liger-kernel`"),
        ("trainer.fsdp.enabled=true", "fsdp.enabled=true needs CUDA GPUs"),
    ],
)
def test_unusable_options_are_refused(override, message):
    import torch

    if torch.cuda.is_available() and ("liger" in override or "fsdp.enabled" in override):
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match=message):
        check_options(compose(["experiment=demo", override]).trainer, world_size=2)


@pytest.mark.skipif(find_spec("wandb") is not None, reason="wandb is installed")
def test_missing_reporter_package_is_named():
    with pytest.raises(UserError, match="report_to=wandb needs `pip install wandb`"):
        check_options(compose(["experiment=demo", "trainer.report_to=[wandb]"]).trainer, world_size=1)


def test_guard_records_a_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR2)
    with PreemptionGuard() as guard:
        assert guard.agreed_signal() == 0
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.01)  # Python runs the handler between bytecodes
        assert guard.agreed_signal() == signal.SIGUSR2
    assert signal.getsignal(signal.SIGUSR2) is before


def test_ctrl_c_while_training_checkpoints_first_and_a_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)
        assert guard.agreed_signal() == signal.SIGINT  # recorded: the step ends, a checkpoint is saved
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGINT) is before


def test_a_run_without_a_checkpoint_to_resume_says_it_starts_over_and_why(tmp_path, caplog):
    (tmp_path / SEGMENTS).write_text('{"from_step": 0, "to_step": 7, "runtime_s": 3.0}\n')
    with caplog.at_level(logging.INFO, logger="meds1.training.sft"):
        log_start(None, tmp_path, save_steps=100)
    assert caplog.messages == [
        "train: starting over from step 0: the 1 earlier run(s) here stopped at step 7, before any "
        "checkpoint was saved (every trainer.save_steps=100 steps)"
    ]


def test_hand_over_calls_the_previous_handler_or_exits_with_128_plus_the_signal():
    calls = []
    with pytest.raises(SystemExit) as stop:
        Preempted(signal.SIGUSR2, 6, lambda signum, frame: calls.append(signum)).hand_over()
    assert calls == [signal.SIGUSR2] and stop.value.code == 128 + signal.SIGUSR2
    with pytest.raises(SystemExit) as stop:
        Preempted(signal.SIGTERM, 6, signal.SIG_DFL).hand_over()
    assert stop.value.code == 143


def test_last_checkpoint_ignores_incomplete_ones(tmp_path):
    for step, complete in [(3, True), (6, True), (9, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path).name == "checkpoint-6"
    assert last_checkpoint(tmp_path / "none") is None


def test_world_size_that_does_not_divide_fails_before_anything(make_config, monkeypatch):
    import torch.distributed

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = make_config("experiment=demo", "stage=train")  # global batch 4; curate never ran
    with pytest.raises(UserError, match="not divisible by the world size 3"):
        train.run(cfg)
    assert not torch.distributed.is_initialized()
    assert not (Path(cfg.paths.root) / "demo").exists()


def test_missing_curated_dataset_names_the_curate_command(make_config):
    cfg = make_config("experiment=demo", "stage=train", "seed=3")
    with pytest.raises(MissingInputError, match=r"run `python run.py experiment=demo stage=curate seed=3"):
        train.run(cfg)


def fake_curate_output(cfg, rows: list) -> None:
    """A complete curate stage whose formatted dataset has `rows` conversations."""
    from datasets import Dataset, Features, Value

    from meds1.store.workspace import StageWorkspace

    features = Features({"messages": [{"role": Value("string"), "content": Value("string")}]})
    with StageWorkspace(cfg, "curate") as workspace:
        Dataset.from_dict({"messages": rows}, features=features).save_to_disk(
            str(workspace.path / "formatted")
        )
        workspace.commit({"stats": {"selected_rows": len(rows)}})


def test_empty_curated_dataset_names_the_curate_command(make_config):
    cfg = make_config("experiment=demo", "stage=train")
    fake_curate_output(cfg, [])
    with pytest.raises(UserError, match=r"no rows: change curation settings, run `python run.py experiment"):
        train.run(cfg)


def test_a_curated_set_smaller_than_one_batch_names_the_curation(make_config):
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    cfg = make_config("experiment=demo", "stage=train", "curation.n_samples=3")
    fake_curate_output(cfg, [chat] * 3)
    with pytest.raises(
        UserError,
        match=r"demo.*/curate/formatted has 3 rows, fewer than one batch \(trainer.global_batch_size=4\): "
        r"change curation settings \(curation.n_samples=3\), run `python run.py experiment=demo stage=curate "
        r"curation.n_samples=3 .*force=true`",
    ):
        train.run(cfg)


def test_model_that_cannot_be_loaded_is_named(make_config, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    cfg = make_config("experiment=demo", "stage=train", "model.build=null", f"model.path={not_a_model}")
    fake_curate_output(cfg, [chat] * 4)  # exactly one batch: trained on
    unrecognized = f"^cannot load '{not_a_model}' \\(model.path\\): ValueError: Unrecognized model"
    with pytest.raises(UserError, match=unrecognized) as error:
        train.run(cfg)
    assert "hf download" not in str(error.value)  # a local directory: nothing to download
    missing = make_config("experiment=demo", "stage=train", "model.build=null", "model.path=/no/such/model")
    fake_curate_output(missing, [chat] * 4)
    with pytest.raises(UserError, match="model path /no/such/model does not exist"):
        train.run(missing)


@pytest.mark.slow
def test_validation_split_reports_an_eval_loss_to_tensorboard(make_config):
    import torch

    from tests.test_train_masking import conversations

    overrides = ["trainer.validation_fraction=0.2", "trainer.max_steps=2", "trainer.eval_steps=1"]
    overrides.append("trainer.report_to=[tensorboard]")
    cfg = make_config("experiment=demo", "stage=train", "trainer.logging_steps=1", *overrides)
    fake_curate_output(cfg, conversations("huatuo", None, n=10))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = train.run(cfg)["metrics"]
    finally:
        torch.set_num_threads(threads)
    assert (metrics["rows"], metrics["validation_rows"]) == (8, 2)
    assert metrics["global_step"] == 2 and 0 < metrics["eval_loss"] < 20
    assert list((stage_dir(cfg, "train") / "reports").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_keep_best_eval_loss_saves_the_checkpoint_of_lowest_eval_loss(make_config, tiny_model_dir):
    """med-s1 kept the model of lowest eval loss; a learning rate that overshoots makes it an early one."""
    import torch
    from datasets import Dataset
    from safetensors.torch import load_file

    from meds1.training.sft import train_sft
    from tests.test_train_masking import conversations

    overrides = ["trainer.validation_fraction=0.2", "trainer.max_steps=4", "trainer.eval_steps=1"]
    cfg = make_config(
        "experiment=demo", "trainer.keep=best_eval_loss", "trainer.learning_rate=0.05", *overrides
    )
    out = Path(cfg.paths.root) / "train"
    dataset = Dataset.from_dict({"messages": conversations("huatuo", None, n=10)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = train_sft(cfg.trainer, str(tiny_model_dir), None, "float32", dataset, out, seed=1)
    finally:
        torch.set_num_threads(threads)
    losses = metrics["eval_losses"]
    best_step = min(losses, key=losses.get)
    assert sorted(losses) == [1, 2, 3, 4] and metrics["kept"] == "best_eval_loss"
    assert (metrics["kept_step"], metrics["kept_eval_loss"]) == (best_step, losses[best_step])
    assert best_step < 4 and metrics["eval_loss"] == losses[4]  # the last step's was not the best
    saved = load_file(out / "model" / "model.safetensors")
    best = load_file(out / "checkpoints" / f"checkpoint-{best_step}" / "model.safetensors")
    assert all(torch.equal(saved[name], best[name]) for name in best)


def test_keep_best_eval_loss_needs_held_out_rows():
    with pytest.raises(UserError, match="trainer.keep=best_eval_loss .* needs held-out rows"):
        compose(["experiment=demo", "stage=train", "trainer.keep=best_eval_loss"])


@pytest.mark.slow
def test_fp32_trained_weights_are_saved_in_the_model_dtype(make_config):
    """The optimizer updates float32 weights; the saved model is in model.dtype, as vLLM will serve it."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from tests.test_train_masking import conversations

    cfg = make_config("experiment=demo", "stage=train", "model.dtype=bfloat16", "trainer.max_steps=2")
    assert cfg.trainer.weights_dtype == "float32"
    fake_curate_output(cfg, conversations("huatuo", None, n=4))
    saved = Path(train.run(cfg)["model_path"])
    assert json.loads((saved / "config.json").read_text())["dtype"] == "bfloat16"
    [weights] = saved.glob("*.safetensors")
    with safe_open(str(weights), "pt") as tensors:
        dtypes = {str(tensors.get_tensor(name).dtype) for name in tensors.keys()}  # noqa: SIM118 (not a dict)
    assert dtypes == {"torch.bfloat16"}
    assert not list(saved.parent.glob("*.cast")) and (saved / "tokenizer_config.json").exists()
    assert AutoModelForCausalLM.from_pretrained(saved, dtype="auto").dtype == torch.bfloat16


@pytest.mark.slow
def test_a_run_shorter_than_the_logging_interval_logs_the_loss_its_record_holds(make_config, caplog):
    from tests.test_train_masking import conversations

    cfg = make_config("experiment=demo", "stage=train", "trainer.max_steps=2")
    assert cfg.trainer.logging_steps > 2
    fake_curate_output(cfg, conversations("huatuo", None, n=4))
    with caplog.at_level(logging.INFO, logger="meds1.stages.train"):
        metrics = train.run(cfg)["metrics"]
    assert metrics["first_loss"] is None and metrics["last_loss"] is None  # no step was logged
    [line] = [message for message in caplog.messages if message.startswith("train: 2 steps")]
    assert line.startswith(
        f"train: 2 steps, mean loss {metrics['train_loss']:.3f} (no step logged: the run is shorter than "
        f"trainer.logging_steps={cfg.trainer.logging_steps}), "
    )
