"""What a launch will do: for each experiment of a command (one, or every point of a sweep), which stages
run as jobs, which are already complete, and which job each waits for.

A stage appears once per slug, so sweep points that share a stage's result (a learning-rate sweep shares
one curation) share its job. A stage whose marker matches its config is complete and not resubmitted; one
whose job from an earlier submission is still in the queue is waited for instead of submitted again. The
plan refuses what a job would refuse (meds1.store.workspace): replacing a complete output made with another
config, or reading one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meds1 import pipeline
from meds1.config.rules import VLLM_INSTALL, missing_backends
from meds1.config.schema import Config, SlurmLauncherConfig
from meds1.launch.resources import describe, sbatch_parameters, submitit_folder
from meds1.store import registry
from meds1.store.identity import config_hash, stage_slug
from meds1.store.registry import job_state, registry_path
from meds1.store.workspace import StageWorkspace, complete_output, missing_input, stage_dir

SUBMIT = "submit"  # becomes a job (or, run locally: runs)
COMPLETE = "complete"  # its marker matches this config: skipped
QUEUED = "queued"  # a job from an earlier submission is still pending or running: waited for


@dataclass
class Step:
    """One stage of one experiment."""

    cfg: Config
    stage: str
    slug: str
    action: str
    config_hash: str
    after: Step | None = None  # the step whose job this one waits for (afterok)
    parameters: dict[str, Any] = field(default_factory=dict)  # sbatch parameters (SUBMIT only)
    folder: Path | None = None  # submitit folder (`%j` = job id)
    job_id: str | None = None
    log_path: str | None = None
    state: str | None = None  # once waited for: done or failed (see launch.queue)
    error: str | None = None
    not_installed: list[str] = field(default_factory=list)  # keys of the vLLM backends this machine lacks

    @property
    def output(self) -> Path:
        return stage_dir(self.cfg, self.stage)

    @property
    def registry(self) -> Path:
        return registry_path(self.cfg)


class Planner:
    """Builds the steps of one or more experiments (see `plan`)."""

    def __init__(self, launcher: SlurmLauncherConfig | None, active_jobs: set[str] | None):
        self.launcher = launcher
        self.active_jobs = active_jobs or set()
        self.steps: dict[tuple[str, str], Step] = {}
        self._registries: dict[Path, dict] = {}

    def add(self, cfg: Config, stage: str) -> Step:
        key = (stage_slug(cfg, stage), stage)
        if key in self.steps:
            return self.steps[key]
        workspace = StageWorkspace(cfg, stage)
        step = Step(cfg, stage, workspace.slug, SUBMIT, workspace.hash)
        if workspace.completed_record(link=False) is not None:
            step.action = COMPLETE
        elif (job_id := self._queued_job(step)) is not None:
            step.action, step.job_id = QUEUED, job_id
        else:
            step.after = self._dependency(cfg, stage)
            step.not_installed = missing_backends(cfg, {stage})
            if self.launcher is not None:
                step.parameters = sbatch_parameters(cfg, stage, self.launcher)
                step.folder = submitit_folder(cfg, self.launcher)
        self.steps[key] = step
        return step

    def _same_config(self, stage: str, config_hash: str) -> Step | None:
        """A planned step of `stage` with this config hash under another slug: a variant's input (the SFT
        model an experiment's `<name>-sft` eval reads is its own experiment's train step)."""
        return next(
            (s for s in self.steps.values() if (s.stage, s.config_hash) == (stage, config_hash)), None
        )

    def _queued_job(self, step: Step) -> str | None:
        """The id of this stage's job from an earlier submission if it is still queued or running."""
        if step.cfg.force:
            return None
        path = step.registry
        if path not in self._registries:
            self._registries[path] = registry.load(path)
        experiment = self._registries[path].get("experiments", {}).get(step.slug, {})
        job = experiment.get("jobs", {}).get(step.stage)
        state = job_state(job)
        if (
            state is not None
            and state.active
            and job.get("config_hash") == step.config_hash
            and job.get("job_id") in self.active_jobs
        ):
            return job["job_id"]
        return None

    def _dependency(self, cfg: Config, stage: str) -> Step | None:
        """The step that must finish before `stage` can start, or None when its input is ready."""
        before = pipeline.upstream(cfg, stage)
        if before is None:
            return None
        key = (stage_slug(cfg, before), before)
        planned = self.steps.get(key) or self._same_config(before, config_hash(cfg, before))
        if planned is None:
            if complete_output(cfg, before) is not None:
                return None
            planned = Step(cfg, before, key[0], QUEUED, config_hash(cfg, before))
            planned.job_id = self._queued_job(planned)
            if planned.job_id is None:  # neither complete for this config nor queued
                what = f"stage {before}'s output for {stage} of {stage_slug(cfg, stage)} (done or queued)"
                raise missing_input(cfg, before, what)
            self.steps[key] = planned
        return None if planned.action == COMPLETE else planned


def plan(
    configs: list[Config], launcher: SlurmLauncherConfig | None, active_jobs: set[str] | None = None
) -> list[Step]:
    """The steps of every experiment in `configs`, in run order (each after the step it waits for)."""
    planner = Planner(launcher, active_jobs)
    for cfg in configs:
        for variant, stage in pipeline.command_steps(cfg):
            planner.add(variant, stage)
    return list(planner.steps.values())


def format_plan(steps: list[Step], *, submitted: bool) -> str:
    """The plan as a table: job (or what happens), stage, experiment, what it waits for, resources, paths."""
    numbers = {id(step): f"#{n}" for n, step in enumerate(steps, 1)}
    lines = []
    for step in steps:
        if step.action == COMPLETE:
            what = "complete, skipped"
        elif step.action == QUEUED:
            what = f"job {step.job_id} (already queued)"
        elif submitted:
            what = f"job {step.job_id}"
        else:
            what = "would submit" if step.parameters else "would run"
        lines.append(f"{numbers[id(step)]:>4} {step.stage:<6} {step.slug}: {what}")
        if step.action == SUBMIT and step.after is not None:
            after = step.after
            waits = f"job {after.job_id}" if after.job_id else numbers[id(after)]
            lines.append(f"       after:     {waits} ({after.stage} of {after.slug}) succeeds")
        for key in step.not_installed if step.action == SUBMIT else ():
            lines.append(f"       needs:     vLLM ({key}=vllm): not installed here; {VLLM_INSTALL}")
        if step.action == SUBMIT and step.parameters:
            lines.append(f"       resources: {describe(step.parameters)}")
            if step.log_path:
                lines.append(f"       log:       {step.log_path}")
            else:
                lines.append(f"       log:       {step.folder}/%j_0_log.out")
        lines.append(f"       output:    {step.output}")
    return "\n".join(lines)
