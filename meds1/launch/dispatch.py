"""What `python run.py ...` does once Hydra has composed the config: build the typed config, then
submit it to SLURM (hydra/launcher=slurm), print its plan (dry_run=true) or run the stage here."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig

from meds1 import pipeline
from meds1.config.rules import check_installed, to_config
from meds1.config.schema import Config, SlurmLauncherConfig
from meds1.errors import Interrupted, UserError

log = logging.getLogger("meds1")

SUBMITIT_SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def dispatch(cfg: DictConfig) -> dict | list:
    """Run the stage named by `cfg.stage` here, or submit it (hydra/launcher=slurm); exits on a UserError."""
    from hydra.core.hydra_config import HydraConfig

    from meds1.config.compose import global_composer

    hydra = HydraConfig.get()

    def build_and_run() -> dict | list:
        overrides = global_composer(hydra.job.config_name).effective(list(hydra.overrides.task))
        return run_command(to_config(cfg, overrides=overrides), hydra)

    return exit_on_user_error(build_and_run)


def exit_on_user_error(function, *args):
    """`function(*args)`; a UserError (a bad setting, a missing input) becomes one logged line and exit
    status 1, Ctrl-C one line and 130 (a stage's workspace says what it kept: `Interrupted`)."""
    try:
        return function(*args)
    except UserError as error:
        log.error("%s", error)
        sys.exit(1)
    except KeyboardInterrupt as error:
        if not isinstance(error, Interrupted):
            error = "interrupted (Ctrl-C) while no stage was working: nothing partial was kept"
        log.error("%s", error)
        sys.exit(130)


def run_command(config: Config, hydra) -> dict | list:
    """Submit | plan | run: the one place that decides where a command's stages run."""
    launcher = slurm_launcher(hydra)
    if config.stage == "report":
        from meds1.launch.queue import refresh
        from meds1.store.registry import registry_path

        if config.dry_run:
            outputs = ", ".join(config.report.outputs) or "no files"
            print(
                f"meds1 dry run: nothing written. stage=report would read {registry_path(config)}, settle "
                f"the jobs SLURM no longer lists, and write {outputs} under {config.report.out_dir}"
            )
            return []
        refresh(registry_path(config))  # settle jobs that ended without reporting (cancelled, killed)
    elif launcher is not None:
        from meds1.launch.submit import launch

        return launch([config], launcher)
    elif config.dry_run:
        from meds1.launch.plan import format_plan, plan

        steps = plan([config], None)
        print(
            f"meds1 dry run: nothing run. Plan ({len(steps)} steps):\n{format_plan(steps, submitted=False)}"
        )
        return steps
    distributed = [stage.name for stage in pipeline.PIPELINE if stage.task_per_gpu]
    if config.stage not in distributed and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            f"stage={config.stage} runs in one process, but torchrun started {os.environ['WORLD_SIZE']}: "
            f"run only stage={' or stage='.join(distributed)} under torchrun (every process would repeat "
            "the other stages)"
        )
    check_installed(config)
    return pipeline.run(config, config.stage)


def slurm_launcher(hydra) -> SlurmLauncherConfig | None:
    """meds1's SLURM launcher settings when it is the chosen launcher, else None (run here).

    Hydra applies a launcher only with -m; without it, `hydra/launcher=slurm` still submits (meds1 does
    it here), and hydra-submitit-launcher's `submitit_slurm` stops with a line saying what to use instead.
    """
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    target = hydra.launcher.get("_target_")
    if target == SlurmLauncherConfig._target_:
        return SlurmLauncherConfig(**OmegaConf.to_container(hydra.launcher, resolve=True))
    if target == SUBMITIT_SLURM_TARGET and hydra.mode == RunMode.RUN:
        raise UserError(
            "hydra/launcher=submitit_slurm applies only with -m (without it this would run here); "
            "use hydra/launcher=slurm, which submits with or without -m"
        )
    return None
