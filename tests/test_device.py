"""The lent GPU machine's preparation, on CPU: which wheels travel (bench/device/fetch_wheels.py), their
offline install there, the requirement check and the refusals (bench/device/accept.py)."""

from __future__ import annotations

import importlib.util
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

DEVICE = REPO / "bench" / "device"
BENCH_MODULES = ("fetch_wheels", "accept", "run")


@pytest.fixture
def load(monkeypatch):
    """Import a file of bench/device/ as a module; its sys.path and module entries are undone after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {name: sys.modules.pop(name) for name in BENCH_MODULES if name in sys.modules}

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(name, DEVICE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield _load
    for name in BENCH_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def make_wheel(
    directory: Path, name: str, version: str, requires: list[str] = (), tag="py3-none-any"
) -> Path:
    """A pure-Python wheel holding one empty module, with these Requires-Dist lines."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    files = {
        f"{name.replace('-', '_')}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {line}\n" for line in requires),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    path = directory / f"{dist}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
    return path


def test_the_walk_carries_what_the_image_lacks_and_stops_at_what_it_has(load, tmp_path):
    fetch_wheels = load("fetch_wheels")
    published = {
        "trl": ["datasets>=4", "numpy>=1.2", "pandas", 'importlib-resources; python_version < "3.9"',
                'rich; extra == "cli"'],
        "datasets": ["dill", "numpy<2", "fsspec[http]>=2023"],
        "dill": ["datasets"],  # a cycle
        "fsspec": ['aiohttp; extra == "http"', 'requests; extra == "full"'],
    }  # fmt: skip
    asked = []

    def fetch(spec: str) -> Path:
        asked.append(spec)
        name = spec.split("=")[0].split(">")[0]
        return make_wheel(tmp_path, name, "5.0" if name == "datasets" else "2026.1", published[name])

    device = {"numpy": "2.5.2", "pandas": None, "aiohttp": None, "requests": None}
    carried, problems = fetch_wheels.walk(["trl>=1.0"], device, fetch)
    assert sorted(carried) == ["datasets", "dill", "fsspec", "trl"]  # not importlib-resources, not rich
    assert len(asked) == 4 and asked[0] == f"trl=={metadata.version('trl')}"  # the version tested here
    assert problems == ["datasets 5.0 needs numpy<2; the GPU machine has numpy 2.5.2"]


def test_a_carried_wheel_outside_a_later_requirement_is_a_problem(load, tmp_path):
    fetch_wheels = load("fetch_wheels")
    wheels = {
        "a": make_wheel(tmp_path, "a", "1.0", ["b-pkg<1"]),
        "b-pkg>=2": make_wheel(tmp_path, "b-pkg", "2.0"),
    }
    carried, problems = fetch_wheels.walk(["a", "b-pkg>=2"], {}, wheels.__getitem__)
    assert set(carried) == {"a", "b-pkg"}
    assert problems == ["a 1.0 needs b-pkg<1; the wheel carried is b-pkg 2.0"]


def test_the_wheel_limit_names_the_largest(load, tmp_path):
    fetch_wheels = load("fetch_wheels")
    sizes = {"small.whl": 100_000, "big.whl": 900_000, "mid.whl": 200_000}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"0" * size)
    wheels = [tmp_path / name for name in sizes]
    assert fetch_wheels.size_problem(wheels, limit_mib=2) is None
    problem = fetch_wheels.size_problem(wheels, limit_mib=1)
    assert problem.startswith("the wheels take 1.1 MiB, over the 1 MiB limit; the largest: big.whl (0.9 MiB)")


def test_the_image_list_holds_the_versions_that_meds1_requires(load):
    fetch_wheels = load("fetch_wheels")
    device = fetch_wheels.device_packages()
    assert device["torch"] == "2.11.0" and device["transformers"] == "5.17.0" and device["pandas"] is None
    assert not {"trl", "datasets", "hydra-core", "omegaconf", "submitit", "vllm"} & set(device)
    on_the_image = [line for line in fetch_wheels.meds1_requirements() if Requirement(line).name in device]
    assert "torch>=2.6" in on_the_image
    assert fetch_wheels.walk(on_the_image, device, fetch=None) == ({}, [])


def test_refusals_come_before_any_install(load, tmp_path):
    accept = load("accept")
    assert accept.refusal(tmp_path, cuda=False).startswith("accept: needs a CUDA GPU (torch sees none here)")
    assert "run `python bench/device/fetch_wheels.py`" in accept.refusal(tmp_path, cuda=True)
    make_wheel(tmp_path, "probe", "1.0")
    assert accept.refusal(tmp_path, cuda=True) is None


@pytest.mark.slow
def test_the_wheels_install_offline_and_unmet_requirements_are_named(load, tmp_path, monkeypatch):
    accept = load("accept")
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    wheels.mkdir()
    needs = [
        "packaging>=1",
        "packaging<1",
        "meds1-absent-package",
        'absent-elsewhere; sys_platform == "win32"',
    ]
    make_wheel(wheels, "meds1-probe", "1.0", needs)
    accept.install(wheels, target)
    accept.install(wheels, target)  # again over the same folder: a warm machine's second call
    assert (target / "meds1_probe" / "__init__.py").exists()
    monkeypatch.syspath_prepend(str(target))
    missing, mismatched = accept.unmet(["pytest>=1"], target)
    assert missing == ["meds1-probe 1.0 needs meds1-absent-package: not installed"]
    assert mismatched == [
        f"meds1-probe 1.0 needs packaging<1: packaging {metadata.version('packaging')} is installed"
    ]


def test_meds1s_requirements_are_met_here(load, tmp_path):
    accept = load("accept")
    assert accept.unmet(accept.meds1_requirements(), tmp_path) == ([], [])


@pytest.mark.slow
def test_a_broken_wheel_stops_the_install_in_one_line(load, tmp_path):
    accept = load("accept")
    (tmp_path / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match=r"^accept: installing the wheels into .* failed: "):
        accept.install(tmp_path, tmp_path / "site")
