"""Fetch here the wheels that meds1 needs on the lent GPU machine beyond what that machine's image holds.

    python bench/device/fetch_wheels.py      # -> bench/device/wheels/ (git-ignored), at most 40 MiB

The device tool's GPU machines (nvidia-h100-x1, nvidia-h200) run Python 3.12 with torch, transformers,
accelerate, pandas, pyarrow and more (device_packages.txt), reach no network, and take at most 64 MiB of
files per call, the working tree included. Starting from meds1's requirements (pyproject.toml), a package
on the image is taken from there (where its version there is known, it must satisfy the requirement);
any other is downloaded as a CPython 3.12 manylinux x86-64 wheel without its dependencies, at the version
installed here when that one fits (the version meds1's tests run), and its own requirements are followed
in turn. A package published only as source (antlr4-python3-runtime 4.9.3, under hydra-core) is built
into a wheel here, which must be pure Python. bench/device/accept.py installs the folder there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
WHEELS = HERE / "wheels"
DEVICE_PACKAGES = HERE / "device_packages.txt"
LIMIT_MIB = 40  # a call carries 64 MiB in all, the working tree included
PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def device_packages(path: Path = DEVICE_PACKAGES) -> dict[str, str | None]:
    """Canonical name -> version (None where unknown) of each package on the GPU machine's image."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version or None
    return found


def meds1_requirements(repo: Path = REPO) -> list[str]:
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]


def target_environment(python: str) -> dict[str, str]:
    """The values that requirement markers are evaluated with on the GPU machine."""
    return {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(archive.read(name).decode())
    return headers.get_all("Requires-Dist") or []


def wheel_version(wheel: Path) -> str:
    return str(parse_wheel_filename(wheel.name)[1])


def walk(
    requirements: list[str],
    device: dict[str, str | None],
    fetch: Callable[[str], Path],
    python: str = PYTHON,
) -> tuple[dict[str, Path], list[str]]:
    """(the wheels to carry by name, the problems found): `requirements` followed through every package
    that the image lacks. `fetch(spec)` returns one wheel for a spec such as "trl==1.16.0"."""
    environment = target_environment(python)
    carried: dict[str, Path] = {}
    problems: list[str] = []
    followed: set[tuple[str, frozenset[str]]] = set()
    pending = [(Requirement(line), "meds1") for line in requirements]
    while pending:
        requirement, wanted_by = pending.pop(0)
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in device:
            there = device[name]
            if there and not requirement.specifier.contains(there, prereleases=True):
                problems.append(f"{wanted_by} needs {requirement}; the GPU machine has {name} {there}")
            continue
        if name not in carried:
            carried[name] = fetch(f"{name}{pinned(requirement)}")
        version = wheel_version(carried[name])
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{wanted_by} needs {requirement}; the wheel carried is {name} {version}")
        if (name, frozenset(requirement.extras)) in followed:
            continue
        followed.add((name, frozenset(requirement.extras)))
        for line in wheel_requirements(carried[name]):
            needed = Requirement(line)
            extras = ["", *requirement.extras]
            if needed.marker is None or any(
                needed.marker.evaluate({**environment, "extra": e}) for e in extras
            ):
                needed.marker = None
                pending.append((needed, f"{name} {version}"))
    return carried, problems


def pinned(requirement: Requirement) -> str:
    """The version installed here when it satisfies `requirement` (what meds1's tests run), else the
    requirement's own specifier (pip takes the newest that fits)."""
    try:
        here = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        here = None
    if here and requirement.specifier.contains(here, prereleases=True):
        return f"=={here}"
    return str(requirement.specifier)


def download(spec: str, dest: Path, python: str = PYTHON) -> Path:
    """One wheel of `spec` for CPython `python` on manylinux x86-64, without its dependencies, into `dest`;
    built here from its source distribution when no such wheel is published (it must be pure Python)."""
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    target = ["--python-version", python, "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}"]
    pip = [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory() as tmp:
        command = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", *target, *platforms, "-d", tmp]
        got = subprocess.run([*command, spec], capture_output=True, text=True)
        built = got.returncode != 0
        if built:
            name = Requirement(spec).name
            command = [*pip, "wheel", "-q", "--no-deps", "--no-binary", name, "-w", tmp, spec]
            got = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or len(wheels) != 1:
            last = (got.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(
                f"fetch_wheels: no wheel of {spec} for CPython {python} manylinux x86-64: {last}"
            )
        [wheel] = wheels
        pure = all(tag.abi == "none" and tag.platform == "any" for tag in parse_wheel_filename(wheel.name)[3])
        if built and not pure:
            raise SystemExit(f"fetch_wheels: {wheel.name}, built here from source, is not pure Python")
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.move(wheel, dest / wheel.name))


def size_problem(wheels: list[Path], limit_mib: float = LIMIT_MIB) -> str | None:
    """One line when the wheels together exceed `limit_mib`, naming the largest; else None."""
    total = sum(w.stat().st_size for w in wheels)
    if total <= limit_mib * 2**20:
        return None
    largest = sorted(wheels, key=lambda w: -w.stat().st_size)[:3]
    names = ", ".join(f"{w.name} ({w.stat().st_size / 2**20:.1f} MiB)" for w in largest)
    return f"the wheels take {total / 2**20:.1f} MiB, over the {limit_mib:g} MiB limit; the largest: {names}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/device/fetch_wheels.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dest", type=Path, default=WHEELS, help="where the wheels go (emptied first)")
    parser.add_argument("--python", default=PYTHON, help="the GPU machine's Python version (default 3.12)")
    parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="the most the wheels may take")
    args = parser.parse_args(argv)
    for old in args.dest.glob("*.whl"):  # one version of each: two stop the install there
        old.unlink()
    carried, problems = walk(
        meds1_requirements(),
        device_packages(),
        lambda spec: download(spec, args.dest, args.python),
        args.python,
    )
    wheels = [carried[name] for name in sorted(carried)]
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    total = sum(w.stat().st_size for w in wheels)
    print(f"{total / 2**20:7.2f} MiB  in all, {len(wheels)} wheels in {args.dest}")
    problems += filter(None, [size_problem(wheels, args.limit_mib)])
    for problem in problems:
        print(f"fetch_wheels: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
