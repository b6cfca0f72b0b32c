"""Selection of the training subset from the rows that passed the filters.

`s1` diversity sampling, as med-s1 used it, with its defects fixed:
1. take the rows whose CoT is at least `long_cot_tokens` long -- a seeded random n of them if there
   are more than n (the original added them all, so more than n rows could come out);
2. until n rows are chosen: pick a specialty (uniformly while fewer than `uniform_fraction * n` rows
   are chosen, then in proportion to `specialty_weights`, default weight 1), and within it an
   unchosen row with probability proportional to 2^-rank, rank 0 = the longest CoT left; a
   specialty is dropped once empty. Rows without a label form one more specialty, `Unlabeled` (with
   `curation.specialty.unlabeled=domain`; by default they have left the pool, as in med-s1, whose
   domains are the labels only).
`embedding-diversity` (med-s1's variant): k-means over the question embeddings with
`cluster_fraction * n` clusters; the `outlier_fraction * n` rows farthest from their centroid are
taken first, then the clusters are visited round-robin (in a seeded random order each round),
taking a random unchosen row from each until n rows are chosen (`cluster_ranking="cot-length"`: the
unchosen row with the longest CoT in characters, med-s1's `intra_group_ranking`, som-shahlab/med-s1@d15c393
data/curation_methods/advanced.py).

Every method returns exactly min(n, pool) positions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from meds1.errors import UserError

UNLABELED = "Unlabeled"


def select(
    pool: pd.DataFrame,
    method: str,
    n: int,
    seed: int,
    *,
    specialty_column: str = "specialty",
    long_cot_tokens: int = 1000,
    uniform_fraction: float = 0.7,
    specialty_weights: dict[str, float] | None = None,
    embeddings: np.ndarray | None = None,
    cluster_fraction: float = 0.1,
    outlier_fraction: float = 0.1,
    cluster_ranking: str = "random",
) -> np.ndarray:
    """Positions (0..len(pool)-1) of the chosen rows, in the order they were chosen."""
    rng = np.random.default_rng(seed)
    if method == "all" or n >= len(pool):
        return np.arange(len(pool))
    if method == "random":
        return rng.choice(len(pool), size=n, replace=False)
    if method == "s1":
        specialties = pool[specialty_column].fillna(UNLABELED).astype(str).to_numpy()
        return s1_sample(
            pool["cot_tokens"].to_numpy(),
            specialties,
            n,
            rng,
            long_cot_tokens,
            uniform_fraction,
            specialty_weights,
        )
    if embeddings is None or len(embeddings) != len(pool):
        raise ValueError("embedding-diversity needs one embedding per pool row")
    lengths = pool["Complex_CoT"].fillna("").str.len().to_numpy() if cluster_ranking == "cot-length" else None
    return diversity_sample(embeddings, n, rng, cluster_fraction, outlier_fraction, seed, lengths)


def s1_sample(
    cot_tokens: np.ndarray,
    specialties: np.ndarray,
    n: int,
    rng: np.random.Generator,
    long_cot_tokens: int,
    uniform_fraction: float,
    specialty_weights: dict[str, float] | None,
) -> np.ndarray:
    long_rows = np.flatnonzero(cot_tokens >= long_cot_tokens)
    if len(long_rows) > n:
        long_rows = rng.choice(long_rows, size=n, replace=False)
    chosen = list(long_rows)
    taken = np.zeros(len(cot_tokens), dtype=bool)
    taken[long_rows] = True

    # Per specialty, unchosen rows sorted by CoT length ascending: rank r is at position len-1-r.
    groups: dict[str, list[int]] = {}
    for position in np.argsort(cot_tokens, kind="stable"):
        if not taken[position]:
            groups.setdefault(specialties[position], []).append(int(position))
    names = sorted(groups)
    weights = specialty_weights or {}
    uniform_picks = int(uniform_fraction * n)

    while len(chosen) < n and names:
        if len(chosen) < uniform_picks:
            name = names[rng.integers(len(names))]
        else:
            w = np.array([weights.get(s, 1.0) for s in names], dtype=float)
            name = (
                names[rng.choice(len(names), p=w / w.sum())]
                if w.sum() > 0
                else names[rng.integers(len(names))]
            )
        rows = groups[name]
        rank = _rank_by_halving(rng, len(rows))
        chosen.append(rows.pop(len(rows) - 1 - rank))
        if not rows:
            names.remove(name)
    return np.asarray(chosen, dtype=np.int64)


def _rank_by_halving(rng: np.random.Generator, size: int) -> int:
    """A rank in [0, size) with P(r) proportional to 2^-r (geometric draws, rejected past the end)."""
    while True:
        rank = int(rng.geometric(0.5)) - 1
        if rank < size:
            return rank


def diversity_sample(
    embeddings: np.ndarray,
    n: int,
    rng: np.random.Generator,
    cluster_fraction: float,
    outlier_fraction: float,
    seed: int,
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise UserError("embedding-diversity needs scikit-learn: pip install 'meds1[embed]'") from None
    k = min(len(embeddings), max(1, round(cluster_fraction * n)))
    kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(embeddings)
    labels = kmeans.labels_
    distance = np.linalg.norm(embeddings - kmeans.cluster_centers_[labels], axis=1)
    outliers = np.argsort(-distance, kind="stable")[: min(n, int(outlier_fraction * n))]
    taken = np.zeros(len(embeddings), dtype=bool)
    taken[outliers] = True
    chosen = [int(i) for i in outliers]

    members = [np.flatnonzero((labels == c) & ~taken) for c in range(k)]
    if lengths is None:  # a random row of each cluster; else its longest CoT first
        members = [rng.permutation(rows) for rows in members]
    else:
        members = [rows[np.argsort(-lengths[rows], kind="stable")] for rows in members]
    next_member = np.zeros(k, dtype=np.int64)
    while len(chosen) < n:
        active = [c for c in range(k) if next_member[c] < len(members[c])]
        for c in rng.permutation(active)[: n - len(chosen)]:
            chosen.append(int(members[c][next_member[c]]))
            next_member[c] += 1
    return np.asarray(chosen, dtype=np.int64)
