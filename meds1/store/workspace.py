"""Atomic stage outputs: work in a partial directory, rename it into place when complete.

A stage writes into `<slug>/.<stage>.partial/` while it runs, under a file lock so two processes
never run the same stage of the same experiment. Resumable work (checkpoints, prediction chunks)
survives a crash there and is picked up by the next run with the same config; a run with another
config (or `force=true`) starts that directory afresh. When the stage finishes, a marker holding the
config hash, the experiment and the stage's record is written and the directory is renamed to
`<slug>/<stage>/`, so an output directory with a marker is always complete. The record gains
`provenance` there (meds1/store/provenance.py), so every stage's marker and results.json entry say what
produced them.

`StageDir` is the one notion of "done" (complete for a config hash, finished since a job's submission,
running) that the workspace, dispatch, the SLURM planner and jobs, and both status views ask.
Nothing is replaced or mixed: a stage reads an upstream output only if it was made with the config it
runs with, from the same content of the files it reads (meds1.store.identity.StageIdentity), and a run
stops rather than replace a complete output made with another config or other file content, in one line
naming what changed (`force=true` replaces it). A marker written before markers recorded the files'
digests counts when its hash is this config's by the rule it was made under; the first run that uses
it records the digests of the files as they are then (it says so), so a later edit is caught.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from datetime import datetime
from pathlib import Path

from filelock import FileLock, Timeout

from meds1.config.schema import Config
from meds1.errors import Interrupted, MissingInputError, OutputConflictError, StageBusyError
from meds1.store import provenance
from meds1.store.identity import (
    INPUTS,
    StageIdentity,
    override_section,
    reading_stage,
    slug_overrides,
    stage_slug,
)
from meds1.store.registry import now, write_json_atomic

log = logging.getLogger(__name__)

MARKER = "_COMPLETE.json"
PARTIAL_HASH = "_CONFIG_HASH"


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


def parse_time(stamp: str | datetime | None) -> datetime | None:
    """An ISO 8601 time (as the registry and markers write them), or None when absent or unreadable."""
    if isinstance(stamp, datetime) or stamp is None:
        return stamp
    try:
        return datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None


class StageDir:
    """One stage's place under `<root>/<slug>/`: its final output, partial output, lock and marker."""

    def __init__(self, root: Path, slug: str, stage: str):
        self.stage = stage
        self.slug = slug
        self.experiment = Path(root) / slug
        self.final = self.experiment / stage
        self.partial = self.experiment / f".{stage}.partial"
        self.lock = self.experiment / f".{stage}.lock"

    @classmethod
    def of(cls, cfg: Config, stage: str) -> StageDir:
        return cls(Path(cfg.paths.root), stage_slug(cfg, stage), stage)

    def marker(self) -> dict | None:
        """The completion marker: config_hash, finished_at, experiment, record (None: not complete)."""
        return read_marker(self.final)

    def complete(self, identity: StageIdentity | None = None) -> bool:
        """Whether the output is complete (made as `identity` says, when given)."""
        marker = self.marker()
        return marker is not None and (identity is None or identity.made(marker))

    def finished_since(self, when: str | datetime | None, config_hash: str | None = None) -> bool:
        """Whether the output is complete (for `config_hash`, when given) and finished at or after `when`,
        e.g. a job's submission; an unknown time on either side trusts the marker."""
        marker = self.marker()
        if marker is None or config_hash not in (None, marker.get("config_hash")):
            return False
        finished, since = parse_time(marker.get("finished_at")), parse_time(when)
        return finished is None or since is None or finished >= since

    @property
    def running(self) -> bool:
        """Whether a live process holds the stage's lock over its partial output (on this machine)."""
        return self.partial.exists() and lock_is_held(self.lock)

    @property
    def interrupted(self) -> bool:
        """A partial output nobody works on: the run that made it ended before committing."""
        return self.partial.exists() and not lock_is_held(self.lock)


def find_complete(root: Path, stage: str, identity: StageIdentity) -> Path | None:
    """A finished output of `stage` under any slug of `root` made as `identity` says."""
    for marker in sorted(Path(root).glob(f"*/{stage}/{MARKER}")):
        if identity.made(json.loads(marker.read_text())):
            return marker.parent.resolve()
    return None


def complete_output(cfg: Config, stage: str, adopt: bool = False) -> Path | None:
    """The finished output of `stage` made with this experiment's config and files: its own directory,
    else one made so under another slug; None when neither. With `adopt`, an older meds1's marker there
    records the files' digests from now on (`adopt_marker`)."""
    identity = StageIdentity(cfg, stage)
    directory = StageDir(Path(cfg.paths.root), identity.slug, stage)
    found = directory.final if directory.complete(identity) else None
    found = found or find_complete(Path(cfg.paths.root), stage, identity)
    if found is not None and adopt:
        adopt_marker(found, read_marker(found), identity)
    return found


def adopt_marker(directory: Path, marker: dict, identity: StageIdentity) -> dict:
    """`marker` (of `directory`), rewritten with the digests of the files as they are now when an older
    meds1 wrote it without them (`StageIdentity.adopted`); others are returned as they are."""
    if INPUTS in marker:
        return marker
    adopted = identity.adopted(marker)
    write_json_atomic(Path(directory) / MARKER, adopted)
    log.info(
        "%s: %s was made by an older meds1 that did not record the files it read; its config is this "
        "one's, so it stands for the files as they are now (force=true remakes it)",
        identity.stage,
        directory,
    )
    return adopted


def changed_files(identity: StageIdentity, keys: list[str]) -> str:
    """`curation.source.path (rows.jsonl), ...`: the changed files as configured."""
    return ", ".join(f"{key} ({identity.paths[key]})" if key in identity.paths else key for key in keys)


def made_by(marker: dict) -> str:
    """What a marker says made it: `hash H, finished T, by experiment=NAME OVERRIDES`."""
    experiment = marker.get("experiment") or {}
    who = "an unrecorded experiment"
    if experiment.get("name"):
        arguments = [f"experiment={experiment['name']}", *experiment.get("overrides", [])]
        who = " ".join(shlex.quote(a) for a in arguments)
    finished = marker.get("finished_at", "at an unknown time")
    return f"hash {marker.get('config_hash')}, finished {finished}, by {who}"


class StageWorkspace:
    """Where one stage of one experiment writes, and whether it has already finished."""

    def __init__(self, cfg: Config, stage: str):
        self.cfg = cfg
        self.stage = stage
        self.identity = StageIdentity(cfg, stage)
        self.dir = StageDir(Path(cfg.paths.root), self.identity.slug, stage)
        self.slug = self.dir.slug
        self.final = self.dir.final
        self.partial = self.dir.partial
        self.hash = self.identity.hash
        self.force = cfg.force
        self.reused_from: Path | None = None  # set when completed_record linked another slug's output
        self._lock = FileLock(str(self.dir.lock))

    def completed_record(self, link: bool = True) -> dict | None:
        """The stage's record if it finished with this config and files (and `force` is off), else None.

        An output made so under another slug (the same config reached through other overrides) counts
        too; with `link`, `<slug>/<stage>` becomes a symlink to it, so later stages, status and the report
        find it here, and an older meds1's marker is adopted (`adopt_marker`). A complete output made with
        another config or from other files where this one would go is an OutputConflictError: it is never
        replaced without `force=true`.
        """
        if self.force:
            return None
        marker = self.dir.marker()
        if marker is not None:
            self.check_not_replacing(marker)
            return (adopt_marker(self.final, marker, self.identity) if link else marker)["record"]
        elsewhere = find_complete(self.final.parent.parent, self.stage, self.identity)
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
            return adopt_marker(elsewhere, read_marker(elsewhere), self.identity)["record"]
        return read_marker(elsewhere)["record"]

    def check_not_replacing(self, marker: dict | None) -> None:
        """Refuse (without `force`) to go where a complete output made with another config or from other
        files is."""
        if self.force or marker is None or self.identity.made(marker):
            return
        changed = self.identity.changed_inputs(marker)
        if changed:
            first = reading_stage(self.cfg.stages, self.stage, changed)
            remake_first = stage_command(self.cfg, first, "force=true")
            before = f"; stage {first} read it first: remake it with `{remake_first}`, then this one"
            raise OutputConflictError(
                f"stage {self.stage}: {self.final} was made from another version of "
                f"{changed_files(self.identity, changed)} ({made_by(marker)})"
                f"{before if first != self.stage else ''}. To remake it from the files as they are now "
                f"add force=true; to keep both, give this run another name (name={self.cfg.name}-2)"
            )
        raise OutputConflictError(
            f"stage {self.stage}: {self.final} holds a complete output made with another config "
            f"({made_by(marker)}); this run's config hashes to {self.hash}. To replace it add force=true; "
            f"to keep both, give this run another name (name={self.cfg.name}-2)"
        )

    def __enter__(self) -> StageWorkspace:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StageBusyError(
                f"stage {self.stage} of {self.slug} is being run by another process "
                f"(lock {self._lock.lock_file})"
            ) from None
        try:
            self.check_not_replacing(self.dir.marker())
        except OutputConflictError:
            self._lock.release()
            raise
        hash_file = self.partial / PARTIAL_HASH
        stale = self.partial.exists() and (
            self.force or not hash_file.exists() or not self.identity.accepts_partial(hash_file.read_text())
        )
        if stale:
            log.info(
                "Discarding partial %s output from a different config, other files or force=true", self.stage
            )
            shutil.rmtree(self.partial)
        elif self.holds_work():
            log.info("%s: continuing with the work an earlier run kept in %s", self.stage, self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        hash_file.write_text(self.hash)
        return self

    def __exit__(self, kind, error, trace) -> None:
        """Release the lock; a run that ends early leaves its partial output only if it holds work (so no
        stage looks interrupted that never started), and Ctrl-C becomes one line saying what was kept."""
        kept = kind is None or self.holds_work()
        if not kept:
            shutil.rmtree(self.partial, ignore_errors=True)
        self._lock.release()
        if kind is not None and issubclass(kind, KeyboardInterrupt) and not issubclass(kind, Interrupted):
            command = stage_command(self.cfg, self.cfg.stage)
            if kept:
                raise Interrupted(
                    f"{self.stage}: interrupted (Ctrl-C); the work it kept is in {self.partial}, and "
                    f"`{command}` continues from it"
                ) from None
            raise Interrupted(
                f"{self.stage}: interrupted (Ctrl-C) before it kept any work; `{command}` reruns it"
            ) from None

    def holds_work(self) -> bool:
        """Whether the partial directory holds anything a rerun can use (more than its config hash)."""
        return self.partial.is_dir() and any(
            path.is_file() and path.name != PARTIAL_HASH for path in self.partial.rglob("*")
        )

    @property
    def path(self) -> Path:
        """The directory to write into while the stage runs."""
        return self.partial

    def commit(self, record: dict, source: dict | None = None) -> Path:
        """Mark the work complete and move it into place; returns the final directory.

        Adds `record["provenance"]` (`meds1.store.provenance.collect(source)`) and `record["identity"]`
        (`StageIdentity.record`: slug, hash and the output it read), so the marker and the results.json
        entry made from the same record say what produced it and from what.
        """
        record["provenance"] = provenance.collect(source)
        record["identity"] = self.identity.record()
        read = record["identity"]["input"]
        if read is not None and (found := complete_output(self.cfg, read["stage"])) is not None:
            read["slug"] = found.parent.name  # where it was read: another slug's output made so (a variant's)
        experiment = {"name": self.cfg.name, "overrides": slug_overrides(self.cfg, self.stage)}
        marker = {
            "config_hash": self.hash,
            INPUTS: self.identity.inputs,
            "finished_at": now(),
            "experiment": experiment,
            "record": record,
        }
        write_json_atomic(self.partial / MARKER, marker)
        (self.partial / PARTIAL_HASH).unlink()
        if self.final.is_symlink():  # another slug's output, linked here: leave that output alone
            self.final.unlink()
        if self.final.exists():  # force=true, or an earlier output with this same config
            trash = self.final.with_name(f".{self.stage}.old")
            shutil.rmtree(trash, ignore_errors=True)
            self.final.rename(trash)
            self.partial.rename(self.final)
            shutil.rmtree(trash)
        else:
            self.partial.rename(self.final)
        return self.final


def config_dir_arguments() -> list[str]:
    """`--config-dir DIR` when this process was started with one (an own experiment), else nothing."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    sources = HydraConfig.get().runtime.config_sources
    return [f"--config-dir={s.path.removeprefix('file://')}" for s in sources if s.provider == "command-line"]


def stage_command(cfg: Config, stage: str, *extra: str) -> str:
    """The command line that runs `stage` of this experiment with the same overrides (and `extra`),
    shell-quoted so it survives copy and paste (`'eval.suite=[a.json,b.json]'`, values with spaces); it
    runs the stage, so a dry run's `dry_run=true` is left out."""
    # The experiment as typed (its file), which may set another name than the file's.
    typed = [o for o in cfg.overrides if override_section(o) == "experiment"]
    experiment = typed[-1] if typed else f"experiment={cfg.name}"
    dropped = ("stage", "experiment", "force", "dry_run")
    kept = [o for o in cfg.overrides if override_section(o) not in dropped]
    arguments = [*config_dir_arguments(), experiment, f"stage={stage}", *kept, *extra]
    return " ".join(["python run.py", *(shlex.quote(a) for a in arguments)])


def missing_input(cfg: Config, stage: str, what: str) -> MissingInputError:
    """Why `stage`'s output cannot be read by this experiment, and the command that makes it."""
    identity = StageIdentity(cfg, stage)
    directory = StageDir(Path(cfg.paths.root), identity.slug, stage)
    marker = directory.marker()
    if marker is None:
        return MissingInputError(
            f"{what} not found at {directory.final}: run `{stage_command(cfg, stage)}` first"
        )
    changed = identity.changed_inputs(marker)
    if changed:
        remake = stage_command(cfg, reading_stage(cfg.stages, stage, changed), "force=true")
        files = changed_files(identity, changed)
        return MissingInputError(
            f"{what} at {directory.final} was made from another version of {files} ({made_by(marker)}): "
            f"remake it with `{remake}`"
        )
    remake = stage_command(cfg, stage, "force=true")
    return MissingInputError(
        f"{what} at {directory.final} was made with another config ({made_by(marker)}), not this "
        f"experiment's (hash {identity.hash}): remake it with `{remake}`"
    )


def require_complete(cfg: Config, stage: str, what: str) -> Path:
    """The finished output directory of `stage` made with this config and files, or an error saying which
    command makes it."""
    directory = complete_output(cfg, stage, adopt=True)
    if directory is None:
        raise missing_input(cfg, stage, what)
    return directory


def stage_dir(cfg: Config, stage: str) -> Path:
    return Path(cfg.paths.root) / stage_slug(cfg, stage) / stage
