"""What a curation did, in numbers: the stats recorded with the curated set (rows per filter and reason,
the pool, the selection, CoT lengths, specialties, verdicts, annotations, warnings), their summary in the
log, and the one line a selection of 0 rows stops with."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from meds1.config.schema import Config, CurationPool
from meds1.curation.difficulty import UNJUDGED
from meds1.curation.quality import KEPT, REMOVED
from meds1.curation.specialty import LABELED
from meds1.errors import UserError

log = logging.getLogger(__name__)


def nothing_selected(rows: pd.DataFrame, filtered: Path) -> UserError:
    removed = rows[rows["filter_status"] == REMOVED].groupby(["filter_stage", "filter_reason"]).size()
    reasons = ", ".join(f"{stage}/{reason} {n}" for (stage, reason), n in removed.items()) or "none"
    return UserError(
        f"curate selected 0 of {len(rows)} rows (removed: {reasons}); each row's reason is in {filtered}; "
        "change the curation settings (curation.n_samples, curation.pool, the filters) or curation.source"
    )


STATS_COLUMNS = (
    "filter_status",
    "filter_stage",
    "filter_reason",
    "cot_tokens",
    "verdict",
    "specialty_status",
)


def curation_stats(
    rows: pd.DataFrame, curated: pd.DataFrame, cfg: Config, filters: list[str], annotations: dict
) -> dict:
    curation = cfg.curation
    rows = rows[[c for c in STATS_COLUMNS if c in rows]]  # no long texts: cheap to filter
    removed = rows[rows["filter_status"] == REMOVED]
    reasons = removed.groupby(["filter_stage", "filter_reason"]).size()
    pool = rows[(rows["filter_status"] == KEPT) | (rows["filter_stage"] == "selection")]
    warnings = []
    if curation.method != "all" and curation.n_samples > len(pool):
        warnings.append(
            f"n_samples={curation.n_samples} exceeds the {len(pool)} rows that passed the filters; "
            "selected all"
        )
    stats = {
        "total_rows": len(rows),
        "pool_rows": len(pool),
        "selected_rows": len(curated),
        "n_requested": curation.n_samples,
        "method": curation.method,
        "pool": CurationPool(curation.pool).value,
        "pool_filters": filters,
        "removed": {f"{stage}/{reason}": int(n) for (stage, reason), n in reasons.items()},
        "cot_tokens": _summary(curated["cot_tokens"].to_numpy()),
        "pool_cot_tokens": _summary(pool["cot_tokens"].to_numpy()),
        "specialties": curated["specialty"].value_counts().to_dict() if "specialty" in curated else {},
        "annotations": annotations,
        "warnings": warnings,
    }
    if "verdict" in rows:
        verdicts = rows["verdict"].dropna().value_counts().to_dict()
        stats["verdicts"] = verdicts
        unjudged = {v: verdicts[v] for v in UNJUDGED if verdicts.get(v)}
        if unjudged:
            action = "dropped" if curation.difficulty.drop_unjudged else "kept in the pool"
            warnings.append(f"difficulty: {unjudged} rows have no usable verdict; {action}")
    if "specialty_status" in rows:
        statuses = rows["specialty_status"].dropna().value_counts().to_dict()
        stats["specialty_status"] = statuses
        unlabeled = sum(n for status, n in statuses.items() if status != LABELED)
        if unlabeled:
            action = "dropped" if "specialty" in filters else "kept as one more domain"
            warnings.append(
                f"specialty: {unlabeled} of {sum(statuses.values())} rows got no label ({statuses}); {action}"
            )
    return stats


def _summary(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "mean": round(float(values.mean()), 1),
        "max": int(values.max()),
    }


def log_summary(stats: dict) -> None:
    log.info(
        "curate: %d rows -> %d in the %s pool (%s) -> %d selected (%s)",
        stats["total_rows"],
        stats["pool_rows"],
        stats["pool"],
        ", ".join(stats["pool_filters"]),
        stats["selected_rows"],
        stats["method"],
    )
    for reason, count in stats["removed"].items():
        log.info("  removed %-32s %d", reason, count)
    if "verdicts" in stats:
        log.info("  base-model verdicts: %s", stats["verdicts"])
    for kind, info in stats["annotations"].items():
        log.info("  %s annotations: %s", kind, info)
    if stats["specialties"]:
        top = sorted(stats["specialties"].items(), key=lambda item: -item[1])[:5]
        log.info("  %d specialties selected; most: %s", len(stats["specialties"]), top)
    if stats["cot_tokens"]:
        log.info("  selected CoT tokens: %s", stats["cot_tokens"])
    if "traces" in stats:
        t = stats["traces"]
        log.info(
            "  traces: chain %s, perturbation %s, restore %s; %d of %d rows not ok (%d dropped); "
            "stages %s; requests %s",
            t["chain"],
            t["perturbation"],
            t["restore"],
            t["not_ok"],
            t["rows"],
            t["dropped"],
            t["stages"],
            t["requests"],
        )
    for warning in stats["warnings"]:
        log.warning("curate: %s", warning)
