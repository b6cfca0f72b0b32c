"""The GPU acceptance run's arithmetic and table, on CPU: how many layers of the 8B fit a machine, the
throughput figures and MFU from a measured rate, and the rows each figure is compared in."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"
BENCH_MODULES = ("accept_gpu", "bench_train_gpu", "bench_eval_gpu", "random_llama", "run")
GIB = 2**30
H200, H100 = 143771 * 2**20, 81559 * 2**20  # total_memory as torch reports it on the lent machines
ROOMY_DISK = 500 * 10**9


@pytest.fixture
def accept_gpu(monkeypatch):
    """bench/accept_gpu.py as a module; its sys.path and module entries are undone after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {name: sys.modules.pop(name) for name in BENCH_MODULES if name in sys.modules}
    spec = importlib.util.spec_from_file_location("accept_gpu", BENCH / "accept_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    for name in BENCH_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def training_state_bytes(accept_gpu, layers: int) -> int:
    llama = accept_gpu.random_llama
    return 16 * (llama.embedding_parameters() + layers * llama.layer_parameters())


def test_layers_that_fit_the_lent_gpus_and_a_node(accept_gpu):
    fit = accept_gpu.layers_that_fit
    assert fit(1, H200, ROOMY_DISK) == 18
    assert fit(1, H100, ROOMY_DISK) == 8
    assert fit(8, H100, ROOMY_DISK) == 32  # the whole 8B: FSDP shards it over 8 GPUs
    assert fit(1, 8 * GIB, ROOMY_DISK) == 1  # never none


@pytest.mark.parametrize("memory", [H100, H200, 48 * GIB, 200 * GIB])
def test_the_chosen_layers_are_the_most_whose_training_state_fits(accept_gpu, memory):
    layers = accept_gpu.layers_that_fit(1, memory, ROOMY_DISK)
    budget = accept_gpu.TRAIN_MEMORY_SHARE * memory
    assert training_state_bytes(accept_gpu, layers) <= budget
    assert layers == 32 or training_state_bytes(accept_gpu, layers + 1) > budget


def test_the_disk_bounds_the_layers_too(accept_gpu):
    """The random model (bf16), the final save (float32) and its bf16 rewrite are on disk together."""
    free = 30 * 10**9
    layers = accept_gpu.layers_that_fit(1, H200, free)
    assert layers < accept_gpu.layers_that_fit(1, H200, ROOMY_DISK)
    parameters = (
        accept_gpu.random_llama.embedding_parameters() + layers * accept_gpu.random_llama.layer_parameters()
    )
    assert 8 * parameters <= 0.8 * free < 8 * (parameters + accept_gpu.random_llama.layer_parameters())


def test_figures_carry_the_measured_flop_rate_over_to_the_full_model(accept_gpu):
    train = accept_gpu.bench_train_gpu
    llama = accept_gpu.random_llama
    per_layer, hidden = llama.layer_parameters(), llama.LLAMA_8B["hidden_size"]
    head = llama.embedding_parameters() // 2  # the output head: non-embedding, as its matmul costs FLOPs

    def non_embedding(layers: int) -> int:
        return layers * per_layer + head

    cut = train.figures(20_000.0, 900.0, 18, hidden, non_embedding(18), per_layer, 32, 989.4e12)
    whole = train.figures(cut["full_model_tokens_per_second_per_gpu"], 900.0, 32, hidden, non_embedding(32),
                          per_layer, 32, 989.4e12)  # fmt: skip
    assert cut["full_model_tokens_per_second_per_gpu"] < cut["tokens_per_second_per_gpu"] == 20_000.0
    assert whole["achieved_tflops"] == pytest.approx(cut["achieved_tflops"], rel=1e-3)
    assert whole["full_model_tokens_per_second_per_gpu"] == whole["tokens_per_second_per_gpu"]
    flops = 6 * non_embedding(18) + 12 * 18 * hidden * 900.0
    assert cut["mfu"] == round(20_000 * flops / 989.4e12, 4) and cut["peak_tflops"] == 989.4


def result(accept_gpu, layers: int = 18, **extra) -> dict:
    llama = accept_gpu.random_llama
    figures = accept_gpu.bench_train_gpu.figures(
        12_000.0,
        850.0,
        layers,
        4096,
        layers * llama.layer_parameters(),
        llama.layer_parameters(),
        32,
        989.4e12,
    )
    setting = {"model": "llama-8b-shape", "gpus": 1, "device": "NVIDIA H200", "block_size": 16384}
    return {**setting, **figures, "attn_implementation": "sdpa", "fsdp": False, **extra}


def test_every_row_says_what_it_is_compared_with(accept_gpu):
    runner = sys.modules["run"]  # bench/run.py, as accept_gpu imported it
    rows = accept_gpu.bench_train_gpu.rows_from(result(accept_gpu, save_s=40.0, saved_dtype="bfloat16"), 20.0)
    checked = runner.check_rows(rows)
    assert [row["unit"] for row in checked] == ["tokens/s/GPU", "tokens/s/GPU", "TFLOP/s", "s"]
    cut, full, mfu, save = checked
    assert "18-layer model as trained" in cut["figure"] and cut["baseline"] is None
    assert "32-layer model at the FLOP/s measured on 18 of them" in full["figure"]
    assert full["baseline"] == 5762.0 and full["ratio"] == round(full["ours"] / 5762.0, 3)
    assert runner.target_met(full) is (full["ours"] >= 6000)
    assert (mfu["baseline"], mfu["ratio"]) == (989.4, result(accept_gpu)["mfu"])
    assert "no sharding" in mfu["figure"] and "NVIDIA H200" in mfu["figure"]
    assert (save["baseline"], save["ratio"]) == (20.0, 2.0) and "written as bfloat16" in save["figure"]


def test_a_full_model_has_one_throughput_row_and_no_save_row_without_a_save(accept_gpu):
    rows = accept_gpu.bench_train_gpu.rows_from(result(accept_gpu, layers=32))
    assert [row["unit"] for row in rows] == ["tokens/s/GPU", "TFLOP/s"]
    assert rows[0]["figure"].startswith("SFT tokens/s per GPU, 32-layer model (")


def test_the_table_shows_the_rows_measured_before_a_failure(accept_gpu, capsys):
    rows = accept_gpu.bench_train_gpu.rows_from(result(accept_gpu))
    for row in rows:
        row["met"] = accept_gpu.target_met(row)
    accept_gpu.print_table(
        [
            {"benchmark": "train (18 of 32 layers)", "rows": rows, "error": "timed out after 240 s"},
            {"benchmark": "eval_vllm", "skipped": "vLLM is not installed: the vLLM figure is owed"},
        ]
    )
    table = capsys.readouterr().out
    assert "failed: timed out after 240 s" in table and "skipped: vLLM is not installed" in table
    assert "18-layer model as trained" in table and "5,762" in table


def test_an_unknown_part_is_one_line_naming_the_parts(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/accept_gpu.py", "--only", "train,evals"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "accept_gpu: --only evals: no such part; parts: train, eval_hf, eval_vllm, rl, tests"
    )


def test_a_part_run_for_its_exit_status_reports_its_last_line(accept_gpu, tmp_path):
    command = [sys.executable, "-c", "print('collected 3 items'); print('2 passed, 1 skipped in 9.1s')"]
    result = accept_gpu.exit_status("tests", "pytest -m gpu", command, 60, tmp_path / "pytest.log")
    [row] = result["rows"]
    assert row["figure"] == "pytest -m gpu: 2 passed, 1 skipped in 9.1s" and row["ours"] == 0.0
    assert accept_gpu.target_met(row) is True
    failing = accept_gpu.exit_status(
        "tests", "pytest", [sys.executable, "-c", "exit(3)"], 60, tmp_path / "f.log"
    )
    assert failing["rows"][0]["figure"] == "pytest: (no output)"
    assert accept_gpu.target_met(failing["rows"][0]) is False


def test_a_timeout_ends_the_whole_process_group(accept_gpu, tmp_path):
    """A torchrun or vLLM worker left running would hold the GPU the next part needs."""
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    result = accept_gpu.exit_status("rl", "run.py", [sys.executable, "-c", script], 2, tmp_path / "rl.log")
    assert result == {"benchmark": "rl", "error": "run.py: timed out after 2 s (see rl.log)"}
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while (
        Path(f"/proc/{grandchild}").exists()
        and "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split()[2]
    ):
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.1)
