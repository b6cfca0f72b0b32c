"""Specialty labels: one entry of the taxonomy per question.

A taxonomy is a file of names, one a line: med-s1's `specialties_med_s1.txt` (the default: its 147
ABMS specialties and subspecialties plus non-medical buckets such as Math and Law, verbatim from
som-shahlab/med-s1@92b9b79 `data/Medical_Specialties_and_Subspecialties.txt`) or meds1's rewritten
`specialties.txt` (139 names). Labelers:
- `llm`: the taxonomy as a numbered list (001, 002, ...) in `prompt`; the first match of
  `code_pattern` in the reply names a number in the list, else the model is asked again (the same
  prompt, or a `correction` turn); still invalid (or failed) -> `Unlabeled`.
- `embedding`: the specialty whose name is closest (cosine) to the question's embedding.
- `column`: labels the user brings in a source column (`curation.specialty.column`).
- `none`: no labels (selection methods other than s1 need none).
`specialty_status` records how each label came about: labeled, unparseable, failed or missing. What
happens to unlabeled rows (`unlabeled`: drop or domain) is the curate stage's business. The `llm`
labeler stops the stage when its first request fails (`preflight_labeler`), or when it leaves more
rows unlabeled than `curation.specialty.max_unusable_fraction` (meds1/curation/unusable.py).
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np
import pandas as pd

from meds1.config.schema import Config, SpecialtyConfig, SpecialtyMethod
from meds1.curation import QUESTION
from meds1.curation.annotators import Annotator
from meds1.curation.cache import AnnotationCache, annotate
from meds1.curation.embedding import embed, load_embedder, question_embeddings
from meds1.curation.llm import FAILED, OK, ask, llm_spec, load_model, owed_request, preflight
from meds1.curation.unusable import check_usable
from meds1.errors import UserError
from meds1.hub import resolve_data_path

UNLABELED = "Unlabeled"
LABELED, MISSING = "labeled", "missing"
UNLABELED_REASON = "no_specialty_assigned"  # med-s1's filter reason for a row left without a label


def load_taxonomy(path: str) -> list[str]:
    file = resolve_data_path(path)
    if not file.exists():
        raise UserError(f"curation.specialty.taxonomy {path} does not exist")
    names = [line.strip() for line in file.read_text().splitlines() if line.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if not names or duplicates:
        problem = f"repeats {', '.join(duplicates)}" if duplicates else "is empty"
        raise UserError(f"curation.specialty.taxonomy {path} {problem}; it needs one unique name a line")
    if len(names) > 999:
        raise UserError(
            f"curation.specialty.taxonomy {path} has {len(names)} names; at most 999 fit NNN codes"
        )
    return names


def numbered(taxonomy: list[str]) -> str:
    return "\n".join(f"{i:03d}. {name}" for i, name in enumerate(taxonomy, start=1))


def parse_specialty(reply: str, taxonomy: list[str], pattern: str) -> str | None:
    """The taxonomy name numbered by `pattern`'s first match in the reply; None if absent or out of range."""
    match = re.search(pattern, reply)
    if not match or not (match.group(1) or "").isdigit():
        return None
    number = int(match.group(1))
    return taxonomy[number - 1] if 1 <= number <= len(taxonomy) else None


def labels_spec(cfg: Config, taxonomy: list[str], source_fingerprint: str) -> dict:
    specialty = cfg.curation.specialty
    spec = {
        "source": source_fingerprint,
        "method": specialty.method,
        "taxonomy": hashlib.sha256("\n".join(taxonomy).encode()).hexdigest()[:16],
    }
    if specialty.method == "llm":
        spec |= llm_spec(specialty.llm, specialty.prompt)
        spec |= {"code_pattern": specialty.code_pattern, "correction": specialty.correction}
    else:
        spec["embedding"] = cfg.curation.embedding.model
    return spec


KEY = "curation.specialty"


def is_labeled_or_tried(cached: pd.DataFrame) -> pd.Series:
    """Cached labels worth keeping: a failed request is asked again."""
    return cached["specialty_status"] != FAILED


def preflight_labeler(labeler: Annotator, pool: pd.DataFrame, cfg: Config, source_fingerprint: str) -> int:
    """The `llm` labeler's first request, sent alone before any annotation when a pre-flight is owed
    (meds1.curation.llm.owed_request); returns the requests sent."""
    specialty = cfg.curation.specialty
    taxonomy = load_taxonomy(specialty.taxonomy)
    cache = AnnotationCache(cfg.paths.cache, "specialties", labels_spec(cfg, taxonomy, source_fingerprint))
    row = owed_request(labeler, cache, pool["row_id"].tolist(), is_labeled_or_tried)
    if row is None:
        return 0
    reply = preflight(
        labeler,
        labeler_conversation(pool.set_index("row_id").at[row, QUESTION], numbered(taxonomy), specialty),
        lambda text: parse_specialty(text, taxonomy, specialty.code_pattern),
        cfg.paths.cache,
        specialty.correction,
        cfg.seed,
    )
    return reply.attempts


def annotate_specialties(
    pool: pd.DataFrame, cfg: Config, source_fingerprint: str
) -> tuple[pd.DataFrame, dict]:
    """`specialty` and `specialty_status` for every pool row, as columns indexed like `pool`."""
    specialty = cfg.curation.specialty
    if specialty.method == "column":
        return column_labels(pool, specialty.column), {"column": specialty.column}
    taxonomy = load_taxonomy(specialty.taxonomy)
    cache = AnnotationCache(cfg.paths.cache, "specialties", labels_spec(cfg, taxonomy, source_fingerprint))
    by_id = pool.set_index("row_id")

    if specialty.method == "llm":
        backend = functools.cache(
            lambda: load_model(
                specialty.llm.model,
                specialty.llm.inference,
                cfg.paths.cache,
                "curation.specialty.llm.model.path",
            )
        )

        def compute(ids: list[int]) -> pd.DataFrame:
            return label_with_llm(by_id.loc[ids, QUESTION], taxonomy, specialty, backend(), cfg.seed)

    else:
        vectors, _ = question_embeddings(pool, cfg, source_fingerprint)
        position = pd.Series(np.arange(len(pool)), index=by_id.index)
        names = functools.cache(lambda: embed(load_embedder(cfg.curation.embedding.model), taxonomy, 64))

        def compute(ids: list[int]) -> pd.DataFrame:
            return label_with_embeddings(ids, vectors[position.loc[ids].to_numpy()], names(), taxonomy)

    labels, info = annotate(
        cache,
        by_id.index,
        compute,
        cfg.curation.annotation_chunk,
        "specialty labels",
        final=is_labeled_or_tried,
    )
    if specialty.method == SpecialtyMethod.llm:
        check_usable(
            "specialty labeler",
            labels["specialty_status"],
            [LABELED],
            labels["specialty_reply"],
            f"{KEY}.max_unusable_fraction",
            specialty.max_unusable_fraction,
            str(cache.dir),
        )
    labels = labels.loc[pool["row_id"], ["specialty", "specialty_status"]]
    labels.index = pool.index
    return labels, info


def column_labels(pool: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in pool.columns:
        raise UserError(
            f"curation.specialty.column {column!r} is not a source column; "
            f"valid: {', '.join(map(str, pool.columns))}"
        )
    values = pool[column].astype("string").str.strip()
    missing = values.isna() | (values == "")
    return pd.DataFrame(
        {
            "specialty": values.where(~missing, UNLABELED).astype(object),
            "specialty_status": np.where(missing, MISSING, LABELED),
        },
        index=pool.index,
    )


def labeler_conversation(question: str, listing: str, specialty: SpecialtyConfig) -> list[dict[str, str]]:
    return [{"role": "user", "content": specialty.prompt.format(question=question, specialties=listing)}]


def label_with_llm(
    questions: pd.Series, taxonomy: list[str], specialty: SpecialtyConfig, backend, seed: int
) -> pd.DataFrame:
    listing = numbered(taxonomy)
    replies = ask(
        backend,
        [labeler_conversation(q, listing, specialty) for q in questions],
        lambda text: parse_specialty(text, taxonomy, specialty.code_pattern),
        specialty.correction,
        specialty.llm,
        seed,
        "specialty labeler",
        f"{KEY}.llm",
    )
    return pd.DataFrame(
        {
            "row_id": questions.index,
            "specialty": [r.value if r.status == OK else UNLABELED for r in replies],
            "specialty_status": [LABELED if r.status == OK else r.status for r in replies],
            "specialty_reply": [r.text for r in replies],
        }
    )


def label_with_embeddings(
    ids: list[int], questions: np.ndarray, names: np.ndarray, taxonomy: list[str]
) -> pd.DataFrame:
    similarity = questions @ names.T
    best = similarity.argmax(axis=1)
    return pd.DataFrame(
        {
            "row_id": ids,
            "specialty": [taxonomy[i] for i in best],
            "specialty_status": LABELED,
            "specialty_score": similarity[np.arange(len(ids)), best],
        }
    )
