"""Every private or undocumented symbol meds1 uses from Hydra, its submitit plugin, submitit and vLLM, in
one place: an upgrade that moves or renames one fails here, loudly, instead of deep inside a run.

pyproject.toml pins the ranges these hold in (hydra-core 1.3.x, hydra-submitit-launcher 1.2.x, submitit 1.x,
vLLM's V1 engine up to the 0.32 tested here); widen a pin only after this file passes on the new version.
"""

import inspect

import pytest


def assigns(cls: type, *attributes: str) -> list[str]:
    """The instance `attributes` that `cls.__init__` does not assign (they have no class attribute)."""
    source = inspect.getsource(cls.__init__)
    return [name for name in attributes if f"self.{name} =" not in source and f"self.{name}:" not in source]


def test_hydra_internals_meds1_uses():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl  # meds1/config/compose.py
    from hydra._internal.config_repository import IConfigRepository
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # cli.py, the sweeper plugin
    from hydra._internal.hydra import Hydra  # cli.py
    from hydra._internal.utils import create_config_search_path, get_args_parser  # cli.py
    from hydra.core.config_loader import ConfigLoader
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.errors import MissingConfigException
    from hydra.types import RunMode

    assert callable(create_config_search_path) and callable(get_args_parser)
    assert all(hasattr(Hydra, name) for name in ("create_main_hydra2", "compose_config"))
    assert hasattr(ConfigLoaderImpl, "_apply_overrides_to_config")
    assert assigns(ConfigLoaderImpl, "repository") == []
    assert hasattr(IConfigRepository, "group_exists") and hasattr(ConfigLoader, "load_sweep_config")
    assert hasattr(BasicSweeper, "split_arguments") and hasattr(BasicSweeper, "validate_batch_is_legal")
    assert hasattr(GlobalHydra, "config_loader") and hasattr(OverridesParser, "create")
    assert {"missing_cfg_file", "options"} <= set(inspect.signature(MissingConfigException).parameters)
    assert (
        (RunMode.RUN, JobStatus.COMPLETED) and JobReturn and SearchPathQuery and ConfigStore and HydraConfig
    )


def test_submitit_plugin_and_submitit_internals():
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher, SlurmLauncher
    from submitit.slurm.slurm import SlurmJobEnvironment, SlurmParseException  # training/distributed.py

    assert issubclass(SlurmLauncher, BaseSubmititLauncher)
    assert assigns(BaseSubmititLauncher, "params", "config", "hydra_context") == []
    names = ("global_rank", "num_tasks", "local_rank", "num_nodes", "hostnames")
    assert all(hasattr(SlurmJobEnvironment, name) for name in names)
    assert issubclass(SlurmParseException, Exception)


@pytest.mark.slow  # importing vLLM takes 10-50 s
def test_vllm_internals_meds1_uses():
    pytest.importorskip("vllm", reason="vLLM is not installed")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.platforms import current_platform
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.llm_engine import LLMEngine

    assert assigns(LLM, "llm_engine") == []  # meds1/inference/vllm.py drives the engine itself
    assert all(hasattr(LLMEngine, name) for name in ("add_request", "step", "has_unfinished_requests"))
    assert assigns(LLMEngine, "model_config", "engine_core") == []
    assert RequestOutputKind.FINAL_ONLY and callable(current_platform.is_cpu)
    assert "output_kind" in inspect.signature(SamplingParams).parameters
    assert TokensPrompt(prompt_token_ids=[1])["prompt_token_ids"] == [1]
