"""stage=curate: load rows, filter, select, format; write filtered/curated parquet and formatted/."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from meds1 import registry
from meds1.config import Config
from meds1.curation.formatting import format_rows
from meds1.curation.quality import KEPT, REMOVED, quality_filter
from meds1.curation.sampling import select
from meds1.curation.source import fingerprint, load_source
from meds1.models import load_tokenizer
from meds1.paths import registry_path
from meds1.workspace import StageWorkspace

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "curate")
    if (record := workspace.completed_record()) is not None:
        log.info("curate: %s is complete for this config; skipping (force=true reruns it)", workspace.final)
        return record
    curation = cfg.curation
    with workspace:
        rows = load_source(curation.source)
        tokenizer = load_tokenizer(cfg.model, cfg.paths.cache)
        rows = quality_filter(
            rows, tokenizer, curation.quality.truncated_cot_tokens, curation.tokenize_batch_size
        )

        pool = rows[rows["filter_status"] == KEPT]
        chosen = select(
            pool,
            curation.method,
            curation.n_samples,
            cfg.seed,
            specialty_column=curation.specialty_column,
            long_cot_tokens=curation.long_cot_tokens,
            uniform_fraction=curation.uniform_fraction,
            specialty_weights=dict(curation.specialty_weights),
        )
        not_chosen = pool.index.difference(pool.index[chosen])
        rows.loc[not_chosen, ["filter_status", "filter_stage", "filter_reason"]] = [
            REMOVED,
            "selection",
            "not_selected",
        ]
        curated = pool.iloc[chosen]

        out = workspace.path
        rows.to_parquet(out / "filtered.parquet", index=False)
        curated.to_parquet(out / "curated.parquet", index=False)
        format_rows(curated, curation.format, tokenizer).save_to_disk(str(out / "formatted"))

        stats = curation_stats(rows, curated, cfg)
        final = workspace.final
        record = {
            "dataset_path": str(final / "formatted"),
            "filtered_path": str(final / "filtered.parquet"),
            "curated_path": str(final / "curated.parquet"),
            "source_fingerprint": fingerprint(rows),
            "stats": stats,
        }
        workspace.commit(record)
    registry.update(
        registry_path(cfg), workspace.slug, "curation", record, description=cfg.description, config=cfg
    )
    log_summary(stats)
    return record


def curation_stats(rows: pd.DataFrame, curated: pd.DataFrame, cfg: Config) -> dict:
    removed = rows[rows["filter_status"] == REMOVED]
    reasons = removed.groupby(["filter_stage", "filter_reason"]).size()
    pool_size = int((rows["filter_stage"] != "quality").sum())
    warnings = []
    if cfg.curation.method != "all" and cfg.curation.n_samples > pool_size:
        warnings.append(
            f"n_samples={cfg.curation.n_samples} exceeds the {pool_size} rows that passed the filters; "
            "selected all"
        )
    lengths = curated["cot_tokens"].to_numpy()
    specialty = cfg.curation.specialty_column
    return {
        "total_rows": len(rows),
        "pool_rows": pool_size,
        "selected_rows": len(curated),
        "n_requested": cfg.curation.n_samples,
        "method": cfg.curation.method,
        "removed": {f"{stage}/{reason}": int(n) for (stage, reason), n in reasons.items()},
        "cot_tokens": _summary(lengths),
        "specialties": curated[specialty].value_counts().to_dict() if specialty in curated else {},
        "warnings": warnings,
    }


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
        "curate: %d rows -> %d passed filters -> %d selected (%s)",
        stats["total_rows"],
        stats["pool_rows"],
        stats["selected_rows"],
        stats["method"],
    )
    for reason, count in stats["removed"].items():
        log.info("  removed %-28s %d", reason, count)
    for warning in stats["warnings"]:
        log.warning("curate: %s", warning)
