"""Composing a command line's config in Hydra's two steps, and which of its overrides change it.

Hydra composes in two steps: the defaults list, which only config group choices (`model=tiny`) change,
then the other overrides (`curation.n_samples=5`) applied as values. `Composer` caches the first step
per set of group choices, so a sweep over values composes once, and each point applies its own values.

Slugs are named from the overrides that change the config (see meds1.paths), so `experiment=demo` and
`experiment=demo curation.n_samples=<demo's own value>` meet in one directory. An override is dropped
when the config composed without it resolves to the same values. Overrides that cannot change a result
(`stage`, `paths.root`, launcher settings: `paths.slug_candidate`) are kept as given and cost nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from meds1.paths import slug_candidate


class Composer:
    """`compose_groups(group_overrides)` composes the job config (no `hydra` node) for a tuple of group
    and hydra overrides; `is_group(key)` says whether a key names a config group."""

    def __init__(
        self, compose_groups: Callable[[tuple[str, ...]], DictConfig], is_group: Callable[[str], bool]
    ):
        self._compose_groups = compose_groups
        self._is_group = is_group
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def split(self, overrides: Sequence[str]) -> tuple[list, list]:
        """(group and hydra overrides, value overrides), as parsed Hydra `Override`s."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        groups, values = [], []
        for override in OverridesParser.create().parse_overrides(list(overrides)):
            is_group = self._is_group(override.key_or_group) and not isinstance(override.value(), dict)
            (groups if override.is_hydra_override() or is_group else values).append(override)
        return groups, values

    def groups_config(self, groups: list) -> DictConfig:
        key = tuple(override.input_line for override in groups)
        if key not in self._composed:
            self._composed[key] = self._compose_groups(key)
        return self._composed[key]

    def apply(self, groups: list, values: list) -> DictConfig:
        """The config composed from `groups`, with `values` applied (a copy; the cache is untouched)."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        config = copy.deepcopy(self.groups_config(groups))
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        return config

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """One command line's job config (without its `hydra` node), as Hydra would compose it."""
        return self.apply(*self.split(overrides))

    def effective(self, overrides: Sequence[str]) -> list[str]:
        """`overrides` without those whose removal leaves the resolved config unchanged."""
        groups, values = self.split(overrides)
        candidates = [
            o for o in [*values, *groups] if slug_candidate(o.input_line) and o.key_or_group != "experiment"
        ]
        if not candidates:
            return list(overrides)
        target = _resolved(self.apply(groups, values))
        if target is None:
            return list(overrides)
        dropped = set()
        for override in candidates:  # one at a time, so the overrides kept still compose to `target`
            trial_groups = [o for o in groups if o is not override and id(o) not in dropped]
            trial_values = [o for o in values if o is not override and id(o) not in dropped]
            if _resolved(self.apply(trial_groups, trial_values)) == target:
                dropped.add(id(override))
        parsed = {o.input_line: o for o in [*groups, *values]}
        return [line for line in overrides if id(parsed[line]) not in dropped]


def _resolved(config: DictConfig) -> dict | None:
    """The config's values with interpolations resolved, without the `overrides` record; None if it
    cannot be resolved (then every override is kept)."""
    try:
        values = OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException:
        return None
    values.pop("overrides", None)
    return values


def global_composer() -> Composer:
    """A Composer on the initialized global Hydra (inside `@hydra.main` or `initialize_config_dir`)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    repository = GlobalHydra.instance().config_loader().repository
    return Composer(
        lambda groups: compose(config_name="config", overrides=list(groups)), repository.group_exists
    )
