"""Hydra's basic sweeper, checking a sweep's points with one compose per set of group choices
(`SweepComposer`) instead of a full compose per point; it is meds1's default sweeper."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from meds1.config.compose import SweepComposer


class ComposeOnceSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        assert self.hydra_context is not None and self.config is not None
        composer = SweepComposer(self.hydra_context.config_loader, self.config)
        for overrides in batch:
            composer.compose(overrides)
