"""Compose a command line's config as `run.py` does (for the CLI, tests, notebooks and benchmarks), and
say which of its overrides change it.

Hydra composes in two steps: the defaults list, which only config group choices (`model=tiny`) change,
then the other overrides (`curation.n_samples=5`) applied as values. `Composer` caches the first step
per set of group choices, so a sweep over values composes once, and each point applies its own values
(`SweepComposer` does it on a sweep's config loader: Hydra would compose each point twice, ~0.3 s each).

Slugs are named by value (see meds1.store.identity), so `experiment=demo` and
`experiment=demo curation.n_samples=<demo's own value>` meet in one directory. An override is dropped
when the config composed without it resolves to the same values; one that is kept records which
top-level keys it changes, from that same composition (no compose per stage), so an override names the
slug of every stage whose resolved sections it changes, whatever its key (`model.system_prompt` also
changes the curation's `format.system_prompt: ${model.system_prompt}`). Overrides that cannot change a
result (`stage`, `paths.root`, launcher settings, endpoint settings: `identity.slug_candidate` and
`identity.neutral_key`) are kept as given and name no slug.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from meds1.config.rules import to_config
from meds1.config.schema import CONF_DIR, Config, register_configs
from meds1.store.identity import changed_keys, slug_candidate


class Composer:
    """`compose_groups(group_overrides)` composes the job config (no `hydra` node) for a tuple of group
    and hydra overrides; `is_group(key)` says whether a key names a config group."""

    def __init__(
        self, compose_groups: Callable[[tuple[str, ...]], DictConfig], is_group: Callable[[str], bool]
    ):
        self._compose_groups = compose_groups
        self._is_group = is_group
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def parse(self, overrides: Sequence[str]) -> list:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        return OverridesParser.create().parse_overrides(list(overrides))

    def is_composing(self, override) -> bool:
        """Whether an override changes Hydra's first step: a hydra override or a config group choice."""
        group = self._is_group(override.key_or_group) and not isinstance(override.value(), dict)
        return override.is_hydra_override() or group

    def split(self, parsed: list) -> tuple[list, list]:
        """(group and hydra overrides, value overrides) of parsed Hydra `Override`s."""
        return [o for o in parsed if self.is_composing(o)], [o for o in parsed if not self.is_composing(o)]

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
        return self.apply(*self.split(self.parse(overrides)))

    def resolved(self, parsed: list) -> dict | None:
        """The values composed from parsed overrides, interpolations resolved, without the `overrides`
        record; None if they cannot be composed or resolved (a remaining override may need a removed one)."""
        from hydra.errors import HydraException

        try:
            values = OmegaConf.to_container(self.apply(*self.split(parsed)), resolve=True)
        except (HydraException, OmegaConfBaseException):
            return None
        values.pop("overrides", None)
        return values

    def effective(self, overrides: Sequence[str]) -> dict[str, list[str] | None]:
        """`overrides` without those whose removal leaves the resolved config unchanged, each with the
        top-level keys whose result values it changes (None: unknown, the config does not resolve)."""
        parsed = self.parse(overrides)
        candidates = [
            i for i, o in enumerate(parsed) if slug_candidate(o.input_line) and o.key_or_group != "experiment"
        ]
        target = self.resolved(parsed) if candidates else None
        if candidates and target is None:
            return dict.fromkeys(overrides)
        kept = list(range(len(parsed)))
        scope: dict[int, list[str]] = {}
        for index in candidates:  # one at a time, so the overrides kept still compose to `target`
            trial = [i for i in kept if i != index]
            without = self.resolved([parsed[i] for i in trial])
            if without == target:
                kept = trial
            else:  # a remaining override may need this one (None): it may change anything
                scope[index] = sorted(target) if without is None else changed_keys(without, target)
        return {overrides[i]: scope.get(i, []) for i in kept}


class SweepComposer(Composer):
    """A Composer on the sweep's config loader and master config: `compose(overrides)` is one point's job
    config, `effective(overrides)` the overrides that change it (what its slugs are named from)."""

    def __init__(self, config_loader, master_config: DictConfig):
        def compose_groups(groups: tuple[str, ...]) -> DictConfig:
            config = config_loader.load_sweep_config(master_config, list(groups))
            with open_dict(config):
                del config["hydra"]
            return config

        super().__init__(compose_groups, config_loader.repository.group_exists)


def global_composer(config_name: str = "config") -> Composer:
    """A Composer on the initialized global Hydra (inside `@hydra.main` or `initialize_config_dir`)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    repository = GlobalHydra.instance().config_loader().repository
    return Composer(lambda groups: compose(config_name, overrides=list(groups)), repository.group_exists)


def compose(overrides: list[str] = ()) -> Config:
    """Compose the typed, validated config for these command-line overrides."""
    searchpath = any(o.startswith(("hydra.searchpath=", "+hydra.searchpath=")) for o in overrides)
    composer = conf_composer(() if searchpath else conf_state())
    cfg = composer.compose(overrides)
    return to_config(cfg, overrides=composer.effective(overrides))


def conf_state() -> tuple:
    """Every file of conf/ with its modification time: what a cached composition is valid for."""
    return tuple((str(path), path.stat().st_mtime_ns) for path in sorted(CONF_DIR.rglob("*.yaml")))


@functools.lru_cache(maxsize=1)
def conf_composer(state: tuple) -> Composer:
    """A Composer on conf/ with a config loader of its own (not the global Hydra), kept while conf/ is
    unchanged (`state`; `()`: not kept, for an own search path whose files may change), so that a process
    composing many configs (tests, a report naming experiments by their overrides) composes each set of
    group choices once (~0.3 s each) and applies the values of each command line to a copy."""
    from hydra import version
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    register_configs()
    version.setbase("1.3")
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))

    def compose_groups(groups: tuple[str, ...]) -> DictConfig:
        config = loader.load_configuration("config", list(groups), run_mode=RunMode.RUN, from_shell=False)
        with open_dict(config):
            del config["hydra"]
        return config

    composer = Composer(compose_groups, loader.repository.group_exists)
    if not state:
        conf_composer.cache_clear()  # a composer for an own search path is used once
    return composer


def compose_command(overrides: list[str]) -> Config:
    """`compose`, in the running Hydra app when there is one (so an own `--config-dir` counts), else on
    conf/: what a command line given as a value (`report.baseline`) names."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not GlobalHydra.instance().is_initialized():
        return compose(overrides)
    composer = global_composer(HydraConfig.get().job.config_name if HydraConfig.initialized() else "config")
    return to_config(composer.compose(overrides), overrides=composer.effective(overrides))
