"""Atomic stage outputs: work in a partial directory, rename it into place when complete.

A stage writes into `<slug>/.<stage>.partial/` while it runs, under a file lock so two processes
never run the same stage of the same experiment. Resumable work (checkpoints, prediction chunks)
survives a crash there and is picked up by the next run with the same config; a run with another
config (or `force=true`) starts that directory afresh. When the stage finishes, a marker holding the
config hash and the stage's record is written and the directory is renamed to `<slug>/<stage>/`,
so an output directory with a marker is always complete. The record gains `provenance` there
(meds1/provenance.py), so every stage's marker and results.json entry say what produced them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from meds1 import provenance
from meds1.config import Config
from meds1.errors import MissingInputError, StageBusyError
from meds1.paths import override_section, stage_dir, stage_sections, stage_slug
from meds1.registry import now, redacted, write_json_atomic
from meds1.trace_spec import file_digests

log = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"
PARTIAL_HASH = "_CONFIG_HASH"


def config_hash(cfg: Config, stage: str) -> str:
    """Hash of every config section that can change `stage`'s result (scheduler resources excluded)."""

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "resources"}
        return obj

    sections = sorted(stage_sections(cfg.stages, stage))
    payload = {name: strip(redacted(getattr(cfg, name))) for name in sections}
    payload["stage"] = stage
    if "curation" in sections and (files := file_digests(cfg.curation.trace)):  # an edited file counts
        payload["trace_files"] = files
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lock_path(experiment_dir: Path, stage: str) -> Path:
    """The lock a process holds while it runs `stage` in `experiment_dir` (`<root>/<slug>`)."""
    return Path(experiment_dir) / f".{stage}.lock"


def lock_is_held(lock_file: Path) -> bool:
    """Whether some process (this one included) holds `lock_file`: a non-blocking acquire, released at once.
    A missing lock file is not held (and the probe does not create one)."""
    if not Path(lock_file).exists():
        return False
    probe = FileLock(str(lock_file))
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    probe.release()
    return False


def read_marker(directory: Path) -> dict | None:
    marker = Path(directory) / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def find_complete(root: Path, stage: str, config_hash: str) -> Path | None:
    """A finished output of `stage` under any slug of `root` whose marker holds `config_hash`."""
    for marker in sorted(Path(root).glob(f"*/{stage}/{MARKER}")):
        if json.loads(marker.read_text()).get("config_hash") == config_hash:
            return marker.parent.resolve()
    return None


def complete_output(cfg: Config, stage: str) -> Path | None:
    """The finished output `stage` left for this experiment: its own directory, or one with the same
    config hash under another slug; None when there is neither."""
    directory = stage_dir(cfg, stage)
    if read_marker(directory) is not None:
        return directory
    return find_complete(Path(cfg.paths.root), stage, config_hash(cfg, stage))


class StageWorkspace:
    """Where one stage of one experiment writes, and whether it has already finished."""

    def __init__(self, cfg: Config, stage: str):
        self.stage = stage
        self.slug = stage_slug(cfg, stage)
        self.final = stage_dir(cfg, stage)
        self.partial = self.final.parent / f".{stage}.partial"
        self.hash = config_hash(cfg, stage)
        self.force = cfg.force
        self.reused_from: Path | None = None  # set when completed_record linked another slug's output
        self._lock = FileLock(str(lock_path(self.final.parent, stage)))

    def completed_record(self, link: bool = True) -> dict | None:
        """The stage's record if it finished with this config (and `force` is off), else None.

        An output with the same config hash under another slug (the same config reached through other
        overrides) counts too; with `link`, `<slug>/<stage>` becomes a symlink to it, so later stages,
        status and the report find it here.
        """
        if self.force:
            return None
        marker = read_marker(self.final)
        if marker is not None:
            return marker["record"] if marker.get("config_hash") == self.hash else None
        elsewhere = find_complete(self.final.parent.parent, self.stage, self.hash)
        if elsewhere is None:
            return None
        if link:
            log.info(
                "%s: the same config finished in %s; linking it as %s", self.stage, elsewhere, self.final
            )
            self.final.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.final.with_name(f".{self.stage}.link-{os.getpid()}")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(os.path.relpath(elsewhere, self.final.parent))
            temporary.replace(self.final)  # atomic: ranks of one job may link at once
            self.reused_from = elsewhere
        return read_marker(elsewhere)["record"]

    def __enter__(self) -> StageWorkspace:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StageBusyError(
                f"stage {self.stage} of {self.slug} is being run by another process "
                f"(lock {self._lock.lock_file})"
            ) from None
        hash_file = self.partial / PARTIAL_HASH
        stale = self.partial.exists() and (
            self.force or not hash_file.exists() or hash_file.read_text() != self.hash
        )
        if stale:
            log.info("Discarding partial %s output from a different config or force=true", self.stage)
            shutil.rmtree(self.partial)
        elif self.partial.exists():
            log.info("Resuming %s from %s", self.stage, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        hash_file.write_text(self.hash)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    @property
    def path(self) -> Path:
        """The directory to write into while the stage runs."""
        return self.partial

    def commit(self, record: dict, source: dict | None = None) -> Path:
        """Mark the work complete and move it into place; returns the final directory.

        Adds `record["provenance"]` (`meds1.provenance.collect(source)`), so the marker and the
        results.json entry made from the same record say what produced it.
        """
        record["provenance"] = provenance.collect(source)
        write_json_atomic(
            self.partial / MARKER, {"config_hash": self.hash, "finished_at": now(), "record": record}
        )
        (self.partial / PARTIAL_HASH).unlink()
        if self.final.is_symlink():  # another slug's output, linked here: leave that output alone
            self.final.unlink()
        if self.final.exists():
            trash = self.final.with_name(f".{self.stage}.old")
            shutil.rmtree(trash, ignore_errors=True)
            self.final.rename(trash)
            self.partial.rename(self.final)
            shutil.rmtree(trash)
        else:
            self.partial.rename(self.final)
        return self.final


def stage_command(cfg: Config, stage: str) -> str:
    """The command line that runs `stage` of this experiment with the same overrides."""
    kept = [o for o in cfg.overrides if override_section(o) not in ("stage", "experiment", "force")]
    return " ".join(["python run.py", f"experiment={cfg.name}", f"stage={stage}", *kept])


def require_complete(cfg: Config, stage: str, what: str) -> Path:
    """The finished output directory of `stage`, or an error saying which command produces it."""
    directory = complete_output(cfg, stage)
    if directory is None:
        missing = stage_dir(cfg, stage)
        raise MissingInputError(f"{what} not found at {missing}: run `{stage_command(cfg, stage)}` first")
    return directory
