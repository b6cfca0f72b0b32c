"""vLLM data parallelism on a real engine pair (`pytest -m vllm`): two engine processes, each on its own
GPU or, with the CPU build, its own cores, share the prompts round robin and answer like one engine."""

import pytest

from meds1.inference import Sampling
from tests import vllm_engine
from tests.vllm_engine import conversations

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    vllm_engine.require_vllm()
    import torch

    from meds1.inference.vllm import on_cpu_build

    if not on_cpu_build() and torch.cuda.device_count() < 2:
        pytest.skip("data parallelism on CUDA needs two GPUs")
    backend = vllm_engine.start(vllm_engine.model_dir(tmp_path_factory), data_parallel_size=2)
    yield backend
    backend.close()


def test_both_engines_answer_the_same_prompt_alike_and_results_stream(parallel):
    """Each prompt twice in a row: round robin sends the copies to different engines, and greedy decoding
    on the same weights must give the same answer on both."""
    prompts = [c for c in conversations(8) for _ in range(2)]
    seen = []
    sampling = Sampling(max_new_tokens=12)
    generations = parallel.generate(prompts, sampling, on_result=lambda i, g: seen.append(i))
    assert sorted(seen) == list(range(16))
    assert all(g.error is None and 0 < g.output_tokens <= 12 for g in generations)
    texts = [g.text for g in generations]
    assert texts[0::2] == texts[1::2]
    assert len(set(texts[0::2])) > 1  # the engines answered their prompts, not one answer for all
