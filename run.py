"""meds1 entry point: python run.py [experiment=NAME] [stage=curate|train|eval|all|report] [key=value ...]

The flow: check the command line (one line per mistake), let Hydra compose the config, then
`dispatch` builds the typed config and submits it to SLURM, prints its plan, or runs the stage here.
"""

import sys

import hydra
from omegaconf import DictConfig

from meds1.config.cli import check_command_line, quote_names
from meds1.config.schema import register_configs
from meds1.launch.dispatch import dispatch

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    dispatch(cfg)


if __name__ == "__main__":
    sys.argv[1:] = quote_names(sys.argv[1:])  # slugs with "=" in report.experiments / report.baseline
    check_command_line()
    main()
