"""`-m ... hydra/launcher=slurm`: every sweep point's chain goes to SLURM through meds1's own submission
path, and the command returns once the jobs are queued.

It extends hydra-submitit-launcher's `SlurmLauncher` (same config names, same submitit underneath) but
replaces `launch`, which in the plugin runs each sweep point as one job and waits for all of them.
Hydra imports every plugin module at start-up, so only the light meds1.config.compose is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from meds1.config.compose import SweepComposer


class ChainedSlurmLauncher(SlurmLauncher):
    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.composer: SweepComposer | None = None

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from meds1.config.rules import to_config
        from meds1.config.schema import SlurmLauncherConfig
        from meds1.launch.dispatch import exit_on_user_error
        from meds1.launch.submit import launch

        assert self.config is not None and self.hydra_context is not None
        self.composer = self.composer or SweepComposer(self.hydra_context.config_loader, self.config)
        composer = self.composer

        def submit() -> list:
            configs = [to_config(composer.compose(o), overrides=composer.effective(o)) for o in job_overrides]
            return launch(configs, SlurmLauncherConfig(**self.params))

        steps = exit_on_user_error(submit)
        jobs = [{"stage": s.stage, "slug": s.slug, "action": s.action, "job_id": s.job_id} for s in steps]
        return [
            JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=jobs)
            for overrides in job_overrides
        ]
