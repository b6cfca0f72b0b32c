"""Contract tests for the vLLM backend: run with `pytest -m gpu` on a CUDA machine with `.[vllm]` installed.

They check what every backend promises (order, token counts, limits, stop strings, streamed
results, the chat template's generation prompt) plus data parallelism and budget forcing, on a
small random Llama whose head size vLLM's attention kernels accept.
"""

import pytest

from meds1.config import BudgetForcingConfig, InferenceConfig, ModelConfig, TinyModelSpec
from meds1.evaluation.budget_forcing import MARKERS, budget_force
from meds1.inference import Sampling, load_backend
from meds1.models import ensure_tiny_model

pytestmark = pytest.mark.gpu

vllm = pytest.importorskip(
    "vllm", reason="vLLM is not installed (pip install -e '.[vllm]' on a CUDA machine)"
)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a CUDA GPU", allow_module_level=True)

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    spec = TinyModelSpec(hidden_size=256, num_heads=4, intermediate_size=512, num_layers=2)
    return str(ensure_tiny_model(spec, tmp_path_factory.mktemp("models")))


def _backend(model_dir, **settings):
    inference = InferenceConfig(backend="vllm", gpu_memory_utilization=0.3, max_model_len=1024, **settings)
    return load_backend(inference, ModelConfig(name="tiny", path=model_dir, dtype="float32"), model_dir)


@pytest.fixture(scope="module")
def backend(model_dir):
    backend = _backend(model_dir)
    yield backend
    backend.close()


def conversations(n):
    return [
        [{"role": "user", "content": f"Question {i}: which drug causes optic neuritis?"}] for i in range(n)
    ]


def test_generate_keeps_order_counts_tokens_and_streams_results(backend):
    seen = []
    generations = backend.generate(
        conversations(20), Sampling(max_new_tokens=16), on_result=lambda i, g: seen.append(i)
    )
    assert sorted(seen) == list(range(20))
    rendered = backend.render(conversations(1)[0])
    assert rendered.endswith(ASSISTANT_HEADER)  # the generation prompt is there
    expected_prompt = len(backend.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert generations[0].prompt_tokens == expected_prompt  # token ids sent as rendered: no second BOS
    for generation in generations:
        assert generation.error is None and 0 < generation.output_tokens <= 16
        assert generation.finish_reason in ("stop", "length")


def test_complete_honours_per_prompt_limits_and_stop_strings(backend):
    prompt = backend.render(conversations(1)[0])
    [free] = backend.complete([prompt], Sampling(max_new_tokens=24))
    stop = free.text[len(free.text) // 2 :][:3]
    stopped, short = backend.complete(
        [prompt, prompt], Sampling(max_new_tokens=24, stop=[stop]), max_new_tokens=[24, 3]
    )
    assert stopped.finish_reason == "stop" and stop not in stopped.text and free.text.startswith(stopped.text)
    assert short.output_tokens == 3 and short.finish_reason == "length"


def test_too_long_prompts_fail_alone(backend):
    long = [{"role": "user", "content": "word " * 3000}]
    bad, good = backend.generate([long, conversations(1)[0]], Sampling(max_new_tokens=4))
    assert "max_model_len" in bad.error and good.error is None


def test_budget_forcing_runs_on_vllm(backend):
    config = BudgetForcingConfig(enabled=True, budget=32, num_ignore=1, answer_max_tokens=8)
    forced = budget_force(backend, conversations(4), Sampling(max_new_tokens=64), config)
    for generation in forced:
        assert generation.thinking_tokens <= 32
        huatuo = MARKERS["huatuo"]
        assert generation.text.startswith(huatuo.think_start) and huatuo.answer_prefix in generation.text


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="data parallelism needs two GPUs")
def test_data_parallel_engines_answer_like_one(backend, model_dir):
    sampling = Sampling(max_new_tokens=12)
    single = backend.generate(conversations(16), sampling)
    parallel = _backend(model_dir, data_parallel_size=2)
    try:
        assert [g.text for g in parallel.generate(conversations(16), sampling)] == [g.text for g in single]
    finally:
        parallel.close()


def test_complete_raw_encodes_by_default_and_applies_the_frequency_penalty(backend):
    prompt = "Question: which drug causes optic neuritis?\n\nThink through this step-by-step:\n1."
    [free] = backend.complete_raw([prompt], Sampling(max_new_tokens=24))
    [penalized] = backend.complete_raw([prompt], Sampling(max_new_tokens=24, frequency_penalty=2.0))
    assert free.prompt_tokens == len(backend.tokenizer(prompt)["input_ids"])  # as LLM.generate(str) encodes
    assert penalized.text != free.text  # the tiny model repeats itself without the penalty
