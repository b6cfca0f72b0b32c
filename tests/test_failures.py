"""Failure paths that run on CPU without a GPU or a vLLM engine: a data-parallel vLLM engine process that
dies, and rank 0's error reaching every rank of a real gloo process group through `on_main`."""

import multiprocessing
import os
import socket

import pytest

from meds1.errors import UserError
from meds1.inference import Sampling
from meds1.inference import vllm as vllm_backend
from meds1.training import distributed


def parallel_backend(targets, tokenizer=None) -> vllm_backend.VLLMBackend:
    """A VLLMBackend supervising real processes as its data-parallel engines: each runs `targets[rank]`
    (given the rank's job queue) instead of an engine, so a test decides how each one ends."""
    context = multiprocessing.get_context("spawn")
    backend = vllm_backend.VLLMBackend.__new__(vllm_backend.VLLMBackend)
    backend.llm, backend.tokenizer, backend.results = None, tokenizer, context.Queue()
    backend.jobs = [context.Queue() for _ in targets]
    backend.workers = []
    for target, jobs in zip(targets, backend.jobs, strict=True):
        worker = context.Process(target=target, args=(jobs,))
        worker.start()
        backend.workers.append(worker)
    return backend


def take_one_request_and_exit(jobs) -> None:
    """An engine process that receives its requests and ends without answering (killed mid-generation)."""
    jobs.get()


def die_at_once(jobs) -> None:
    """An engine process killed while it starts (exit code 9, as a kill -9 from the OOM killer reads)."""
    os._exit(9)


def test_an_engine_process_that_dies_before_it_is_ready_is_named_with_its_exit_code(monkeypatch):
    monkeypatch.setattr(vllm_backend, "POLL_S", 0.2)
    backend = parallel_backend([take_one_request_and_exit, die_at_once])
    with pytest.raises(RuntimeError, match=r"exited unexpectedly \(engine 1: exit code 9\)"):
        list(backend._messages(expect="ready", engines=2))
    assert backend.workers == []  # closed: the live engine was told to stop and joined


def test_an_engine_process_that_dies_mid_generation_stops_the_call(monkeypatch, tiny_model_dir):
    from meds1.inference.chat import load_chat_tokenizer

    monkeypatch.setattr(vllm_backend, "POLL_S", 0.2)
    backend = parallel_backend([take_one_request_and_exit] * 2, load_chat_tokenizer(str(tiny_model_dir)))
    answered = []
    # Both end without answering; the first found dead stops the call (the other may still be exiting).
    with pytest.raises(RuntimeError, match=r"exited unexpectedly \(engine [01]: exit code 0"):
        backend.complete(
            ["a", "b", "c"], Sampling(max_new_tokens=4), on_result=lambda i, g: answered.append(i)
        )
    assert answered == [] and backend.workers == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, port: int, failure: str, results) -> None:
    """One rank of a 2-process gloo group: rank 0 runs a function that fails; report what each rank saw."""
    env = distributed.DistributedEnv(rank=rank, world_size=2, local_rank=rank, master_port=port)

    def fail():
        if failure == "user":
            raise UserError("curate first: no curated rows")
        raise ValueError("disk full")

    try:
        with distributed.process_group(env, timeout_s=120):
            distributed.on_main(fail, env)
        results.put((rank, "returned", None))
    except BaseException as error:  # noqa: BLE001 (reported to the test)
        results.put((rank, type(error).__name__, str(error)))
    results.put((rank, "group left", distributed.is_initialized()))


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            "user",
            {
                0: ("UserError", "curate first: no curated rows"),
                1: ("UserError", "curate first: no curated rows"),
            },
        ),
        (
            "crash",
            {0: ("ValueError", "disk full"), 1: ("RuntimeError", "rank 0 failed: ValueError('disk full')")},
        ),
    ],
)
def test_rank_0s_error_reaches_every_rank_of_a_real_gloo_group(failure, expected):
    context = multiprocessing.get_context("spawn")
    results, port = context.Queue(), free_port()
    ranks = [context.Process(target=rank_main, args=(rank, port, failure, results)) for rank in (0, 1)]
    for process in ranks:
        process.start()
    seen = [results.get(timeout=180) for _ in range(4)]
    for process in ranks:
        process.join(timeout=60)
    assert [process.exitcode for process in ranks] == [0, 0]
    outcomes = {rank: (kind, message) for rank, kind, message in seen if kind != "group left"}
    assert outcomes == expected
    assert [left for _, kind, left in seen if kind == "group left"] == [
        False,
        False,
    ]  # destroyed on the way out
