"""Compose the project config the way `run.py` does (for tests, notebooks, benchmarks and the CLI)."""

from __future__ import annotations

from pathlib import Path

from meds1.config import Config, register_configs
from meds1.rules import to_config

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def compose(overrides: list[str] = ()) -> Config:
    """Compose the typed, validated config for these command-line overrides."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from meds1.overrides import global_composer

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        composer = global_composer()
        cfg = composer.compose(overrides)
        effective = composer.effective(overrides)
    return to_config(cfg, overrides=effective)


def compose_command(overrides: list[str]) -> Config:
    """`compose`, in the running Hydra app when there is one (so an own `--config-dir` counts), else on
    conf/: what a command line given as a value (`report.baseline`) names."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from meds1.overrides import global_composer

    if not GlobalHydra.instance().is_initialized():
        return compose(overrides)
    composer = global_composer(HydraConfig.get().job.config_name if HydraConfig.initialized() else "config")
    return to_config(composer.compose(overrides), overrides=composer.effective(overrides))
