"""On the lent GPU machine, in one command: install the carried wheels, then run bench/accept_gpu.py.

    python3 bench/device/accept.py [--budget 420] [accept_gpu's options, e.g. --only train,tests]

From a checkout where `python bench/device/fetch_wheels.py` has filled bench/device/wheels/, the device
tool's call is `run(command="python3 bench/device/accept.py", carry=["bench/device/wheels"], timeout_s=540)`.

It refuses in one line, before installing anything, where torch sees no CUDA GPU or the wheels are not
there. Then it installs the wheels into a folder with pip, offline (--no-index --no-deps), checks meds1's
requirements and those of each carried package against what is installed (a missing package stops it in
one line; a version outside a requirement is printed and the run goes on), and runs accept_gpu.py with the
folder on PYTHONPATH, hubs offline, within --budget seconds. Its table ends the output; results.json and
accept.log go to $OUT (bench/results/device/ where $OUT is unset).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO / "bench")]

from fetch_wheels import meds1_requirements  # noqa: E402  (bench/device/fetch_wheels.py)

from run import run_group  # noqa: E402  (bench/run.py)

BUDGET_S = 420  # accept_gpu's parts: with the install and the grace, under 8 of the call's 10 minutes
GRACE_S = 30  # past the budget, for the table and the last part's clean-up
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def refusal(wheels: Path, cuda: bool) -> str | None:
    """The one line that stops the run before anything is installed, or None."""
    if not cuda:
        return "accept: needs a CUDA GPU (torch sees none here); run it on the lent GPU machine"
    if not list(wheels.glob("*.whl")):
        carry = wheels.relative_to(REPO) if wheels.is_relative_to(REPO) else wheels
        return (
            f"accept: no wheels in {wheels}: run `python bench/device/fetch_wheels.py` in the checkout "
            f"and carry {carry}"
        )
    return None


def install(wheels: Path, target: Path) -> None:
    """Install every wheel in `wheels` into `target`, offline and without resolving dependencies."""
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    command += [
        "--no-cache-dir",
        "--upgrade",
        "--target",
        str(target),
        *map(str, sorted(wheels.glob("*.whl"))),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"accept: installing the wheels into {target} failed: {last}")


def unmet(requirements: list[str], target: Path) -> tuple[list[str], list[str]]:
    """(missing, mismatched): one line per requirement of meds1 (`requirements`) or of a package installed
    in `target` that nothing on sys.path satisfies, as this interpreter evaluates its markers."""
    from packaging.requirements import Requirement

    wanted = [("meds1", line) for line in requirements]
    for dist in metadata.distributions(path=[str(target)]):
        wanted += [(f"{dist.metadata['Name']} {dist.version}", line) for line in dist.requires or []]
    missing, mismatched = [], []
    for who, line in wanted:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            found = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(f"{who} needs {requirement}: not installed")
            continue
        if not requirement.specifier.contains(found, prereleases=True):
            mismatched.append(f"{who} needs {requirement}: {requirement.name} {found} is installed")
    return missing, mismatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 bench/device/accept.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for accept_gpu's parts")
    parser.add_argument("--wheels", type=Path, default=HERE / "wheels")
    parser.add_argument(
        "--target", type=Path, default=Path("/tmp/meds1-site"), help="where they are installed"
    )
    args, rest = parser.parse_known_args(argv)
    import torch

    if line := refusal(args.wheels, torch.cuda.is_available()):
        print(line, file=sys.stderr)
        return 2
    install(args.wheels, args.target)
    sys.path.insert(0, str(args.target))
    missing, mismatched = unmet(meds1_requirements(), args.target)
    for line in mismatched:
        print(f"accept: warning: {line}", flush=True)
    if missing:
        print(
            f"accept: {'; '.join(missing)} (a package the image lacks: take it out of "
            "bench/device/device_packages.txt and fetch the wheels again)",
            file=sys.stderr,
        )
        return 2
    out = Path(os.environ.get("OUT") or REPO / "bench" / "results" / "device")
    out.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(args.target), str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **OFFLINE, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        str(REPO / "bench" / "accept_gpu.py"),
        f"--out={out}",
        f"--budget={args.budget}",
    ]
    try:
        return run_group([*command, *rest], args.budget + GRACE_S, tee=out / "accept.log", cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        print(
            f"accept: accept_gpu.py killed after {args.budget + GRACE_S:.0f} s; its log: {out / 'accept.log'}"
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
