"""Which rows selection draws from (`curation.pool`), and so which filters remove rows before it.

- `all`: every source row, as med-s1 drew its random-1k/-5k and med-s1-25k arms
  (som-shahlab/med-s1@92b9b79 `data/curate_med_s1k_new.py`: `random_sample_dataset` samples, and `all`
  selects, every row of the loaded dataset; likewise at d15c393). Only rows that cannot become a training
  example (a missing, empty or non-text field) leave; the truncated-CoT check does not apply.
- `quality`: rows that pass the quality filter, as s1 drew its "1K-random" (s1 paper, section 5.1).
- `filtered`: rows that pass every filter: quality and, with `difficulty.enabled`, difficulty (the s1 arms).
In every pool, rows that overlap the eval suite leave when `decontamination.enabled` (med-s1 checked no arm;
meds1 checks all alike, so that arms differ in their selection only), and rows left unlabeled leave when
the selection uses labels and `specialty.unlabeled=drop` (med-s1: `no_specialty_assigned`).
"""

from __future__ import annotations

from meds1.config.schema import CurationConfig, CurationPool, UnlabeledRows


def pool_filters(curation: CurationConfig) -> list[str]:
    """The filters that remove rows from the pool, in the order stage=curate applies them."""
    pool = CurationPool(curation.pool)
    filters = ["missing_text" if pool == CurationPool.all else "quality"]
    if curation.decontamination.enabled:
        filters.append("decontamination")
    if pool == CurationPool.filtered and curation.difficulty.enabled:
        filters.append("difficulty")
    if curation.specialty.method != "none" and curation.specialty.unlabeled == UnlabeledRows.drop:
        filters.append("specialty")
    return filters
