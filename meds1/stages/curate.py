"""stage=curate: load rows, filter (quality, eval overlap, difficulty), label, select, transform the
selected rows' traces (meds1/curation/traces), format.

`curation.pool` decides which filters define the rows selection draws from (`meds1/curation/pool.py`).
Before any annotation, each annotator that asks an endpoint sends its first request alone when a
pre-flight is owed (`meds1/curation/preflight.py`: a broken endpoint stops the stage in seconds); an
annotator that leaves too many rows unusable stops it before selection (`meds1/curation/unusable.py`),
and so does a selection of 0 rows.

Writes `filtered.parquet` (every row with `filter_status/filter_stage/filter_reason` and its
annotations; selected rows also with their trace after each `curation.trace` stage and its status),
`curated.parquet` (the selected rows, as trained on) and `formatted/` (chat dataset for training).
Expensive annotations come from the annotation cache (`meds1/curation/cache.py`), so reruns,
sweeps and other experiments over the same source only compute what is missing.
"""

from __future__ import annotations

import logging

from meds1.config.schema import Config
from meds1.curation.decontamination import nearest_eval_questions
from meds1.curation.difficulty import CORRECT, UNJUDGED, annotate_difficulty
from meds1.curation.embedding import question_embeddings
from meds1.curation.formatting import format_rows
from meds1.curation.pool import pool_filters
from meds1.curation.preflight import preflight_annotators
from meds1.curation.quality import KEPT, quality_filter, remove
from meds1.curation.sampling import select
from meds1.curation.source import COMMIT, DROPPED_ROWS, MALFORMED_LINES, fingerprint, load_source
from meds1.curation.specialty import LABELED, UNLABELED_REASON, annotate_specialties
from meds1.curation.stats import curation_stats, log_summary, nothing_selected
from meds1.curation.traces import chain as traces
from meds1.models import load_tokenizer
from meds1.stages import completed, record_result
from meds1.store.workspace import StageWorkspace

log = logging.getLogger(__name__)


def run(cfg: Config) -> dict:
    workspace = StageWorkspace(cfg, "curate")
    if (record := completed(cfg, workspace)) is not None:
        return record
    curation = cfg.curation
    filters = pool_filters(curation)
    annotations: dict[str, dict] = {}
    with workspace:
        rows = load_source(curation.source)
        malformed_lines, source_dropped = rows.attrs[MALFORMED_LINES], rows.attrs[DROPPED_ROWS]
        source_commit = rows.attrs[COMMIT]
        source = fingerprint(rows)
        tokenizer = load_tokenizer(cfg.model, cfg.paths.cache)
        truncated = curation.quality.truncated_cot_tokens if "quality" in filters else []
        rows = quality_filter(rows, tokenizer, truncated, curation.tokenize_batch_size)

        if curation.decontamination.enabled:
            kept = rows.index[rows["filter_status"] == KEPT]
            matches, overlap = nearest_eval_questions(rows.loc[kept], curation.decontamination)
            rows = rows.join(matches)
            remove(rows, kept[overlap], "decontamination", "eval_overlap")

        trace_llm = traces.trace_llm(cfg)
        preflights = preflight_annotators(rows[rows["filter_status"] == KEPT], cfg, source, trace_llm)
        if preflights:
            log.info("curate: %d annotator(s) answered their first request; annotating", len(preflights))

        if "difficulty" in filters:
            judged, annotations["difficulty"] = annotate_difficulty(
                rows[rows["filter_status"] == KEPT], cfg, source
            )
            rows = rows.drop(columns=[c for c in judged.columns if c in rows.columns]).join(judged)
            remove(rows, judged.index[judged["verdict"] == CORRECT], "difficulty", "base_model_correct")
            if curation.difficulty.drop_unjudged:
                for verdict in UNJUDGED:
                    remove(
                        rows, judged.index[judged["verdict"] == verdict], "difficulty", f"verdict_{verdict}"
                    )

        pool = rows[rows["filter_status"] == KEPT]
        if curation.specialty.method != "none":
            labels, annotations["specialty"] = annotate_specialties(pool, cfg, source)
            rows = rows.drop(columns=[c for c in labels.columns if c in rows.columns]).join(labels)
            if "specialty" in filters:
                unlabeled = labels.index[labels["specialty_status"] != LABELED]
                remove(rows, unlabeled, "specialty", UNLABELED_REASON)
            pool = rows[rows["filter_status"] == KEPT]

        embeddings = None
        if curation.method == "embedding-diversity":
            embeddings, annotations["embeddings"] = question_embeddings(pool, cfg, source)
        chosen = select(
            pool,
            curation.method,
            curation.n_samples,
            cfg.seed,
            long_cot_tokens=curation.long_cot_tokens,
            uniform_fraction=curation.uniform_fraction,
            specialty_weights=dict(curation.specialty_weights),
            embeddings=embeddings,
            cluster_fraction=curation.cluster_fraction,
            outlier_fraction=curation.outlier_fraction,
            cluster_ranking=curation.cluster_ranking,
        )
        remove(rows, pool.index.difference(pool.index[chosen]), "selection", "not_selected")
        curated = pool.iloc[chosen]
        trace_stats = None
        if traces.requested(curation.trace):
            traced = traces.transform_traces(curated, cfg, trace_llm)
            rows = rows.join(traced.records)
            for reason, index in traced.dropped.items():
                remove(rows, index, "trace", reason)
            curated, trace_stats = traced.curated, traced.stats

        out = workspace.path
        rows.to_parquet(out / "filtered.parquet", index=False)
        if not len(curated):
            raise nothing_selected(rows, out / "filtered.parquet")
        curated.to_parquet(out / "curated.parquet", index=False)
        format_rows(
            curated, curation.format, tokenizer, thinking="none" not in curation.trace.transforms
        ).save_to_disk(str(out / "formatted"))

        stats = curation_stats(rows, curated, cfg, filters, annotations)
        stats["source_malformed_lines"] = malformed_lines
        stats["source_dropped"] = source_dropped
        stats["preflights"] = preflights
        if trace_stats is not None:
            stats["traces"] = trace_stats
        final = workspace.final
        record = {
            "dataset_path": str(final / "formatted"),
            "filtered_path": str(final / "filtered.parquet"),
            "curated_path": str(final / "curated.parquet"),
            "source_fingerprint": source,
            "stats": stats,
        }
        workspace.commit(record, source={"revision": source_commit, "fingerprint": source})
    record_result(cfg, "curate", record)
    log_summary(stats)
    return record
