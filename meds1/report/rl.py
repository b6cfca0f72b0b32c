"""RL in the report: each RL run's reward curve, and each RL model against the model it started from.

The curve comes from the RL stage's metrics.json (`history`: one entry per logged step). The comparison
pairs the RL model's eval with the eval of the model RL started from (its SFT model, `<name>-sft` with
`compare_sft`, or the untrained model, `<name>-base`), found in the registry by the model each eval
recorded (`metrics.model`), on the questions both answered (meds1.report.paired).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from meds1.report import experiments as registry_view
from meds1.report import multiplicity, paired, tables

log = logging.getLogger(__name__)


def history(exp: registry_view.Experiment) -> list[dict]:
    """The RL run's history (one entry per logged step), [] when it has none or its file is gone."""
    path = (exp.rl or {}).get("metrics_path")
    if not path or not Path(path).is_file():
        return []
    return json.loads(Path(path).read_text()).get("history") or []


def runs(experiments: list[registry_view.Experiment]) -> dict[str, list[dict]]:
    """label -> history of each RL run among the experiments, once each (evals of one RL model share it)."""
    found: dict[str, list[dict]] = {}
    seen = set()
    for exp in experiments:
        path = (exp.rl or {}).get("metrics_path")
        if path and path not in seen and (steps := history(exp)):
            seen.add(path)
            found[exp.slug] = steps
    return found


def same_model(a: str | None, b: str | None) -> bool:
    return bool(a and b) and (a == b or os.path.realpath(a) == os.path.realpath(b))


def starting_eval(
    data: dict, exp: registry_view.Experiment, group_by: str
) -> registry_view.Experiment | None:
    """The eval of the model RL started from, asked as `exp`'s eval was (the same eval and inference
    settings) where the registry holds one, else any eval of that model (None: none)."""
    evals = [
        slug
        for slug, entry in sorted(data["experiments"].items())
        if same_model(
            ((entry.get("results") or {}).get("eval") or {}).get("metrics", {}).get("model"),
            exp.rl.get("init_model"),
        )
    ]

    def asked(config: dict) -> tuple:
        return tuple(json.dumps(config.get(key), sort_keys=True) for key in ("eval", "inference"))

    entries = data["experiments"]
    alike = [slug for slug in evals if asked(entries[slug].get("config") or {}) == asked(exp.config)]
    chosen = (alike or evals)[:1]
    return registry_view.experiment(data, chosen[0], group_by) if chosen else None


def start_comparison(
    data: dict, chosen: list[registry_view.Experiment], root: Path, group_by: str, adjust: str = "holm"
) -> tables.Pivot | None:
    """Each chosen RL model paired with the model it started from, per source and overall (None when no
    chosen experiment has both evals)."""
    rows, decodings, unmatched = [], {}, []
    for exp in chosen:
        if (
            not exp.rl
            or not exp.metrics
            or not same_model(exp.metrics.get("model"), exp.rl.get("model_path"))
        ):
            continue
        start = starting_eval(data, exp, group_by)
        files = [registry_view.predictions_file(e, root) if e else None for e in (exp, start)]
        if start is None or None in files:
            unmatched.append(exp.slug)
            continue
        found = paired.compare(
            exp.slug, paired.read_answers(files[0]), start.slug, paired.read_answers(files[1])
        )
        rows += found
        decodings |= {exp.slug: tables.decoding(exp), start.slug: tables.decoding(start)}
    if unmatched:
        log.info("report: no eval of the model RL started from for %s", ", ".join(unmatched))
    if not rows:
        return None
    multiplicity.adjust(rows, adjust)
    return tables.start_pivot(rows, decodings, unmatched, adjust)
