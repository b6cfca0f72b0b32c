"""The annotation cache: expensive per-row annotations, stored once and reused across experiments.

Base-model answers, judge verdicts, specialty labels and embeddings are keyed by everything that
determines them -- the source fingerprint plus the model, prompt and settings that produced them --
never by the experiment. So a sweep over `n_samples`, or `random-1k` after `med-s1-1k`, finds the
annotations already there and only selection reruns.

Each key is a directory under `<paths.cache>/annotations/<kind>/<key>/` holding `spec.json` (what the
key stands for) and parquet chunks of `row_id` + annotation columns. A chunk is written to a temp file
and renamed, so a crash loses at most the chunk being computed; the next run annotates only the rows
still missing, plus those whose request failed last time. A file lock per key makes concurrent jobs
of a sweep wait for one annotator instead of repeating its work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def cache_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


class AnnotationCache:
    """Annotations of one kind for one key, addressed by `row_id`."""

    def __init__(self, root: str | Path, kind: str, spec: dict):
        self.kind = kind
        self.spec = spec
        self.key = cache_key(spec)
        self.dir = Path(root) / "annotations" / kind / self.key
        self.lock = FileLock(str(self.dir) + ".lock")

    def chunks(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.parquet"))

    def load(self) -> pd.DataFrame:
        """Every cached row (indexed by row_id; a row written twice keeps its latest value)."""
        files = self.chunks()
        if not files:
            return pd.DataFrame(index=pd.Index([], name="row_id"))
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        return frame.drop_duplicates("row_id", keep="last").set_index("row_id")

    def write_chunk(self, frame: pd.DataFrame) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / "spec.json"
        if not spec_file.exists():
            spec_file.write_text(json.dumps(self.spec, indent=2, sort_keys=True, default=str))
        files = self.chunks()
        number = int(files[-1].stem.split("-")[1]) + 1 if files else 0
        target = self.dir / f"chunk-{number:05d}.parquet"
        tmp = self.dir / f".{target.name}.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)


def kept(cached: pd.DataFrame, final: Callable[[pd.DataFrame], pd.Series] | None) -> pd.DataFrame:
    """The cached rows worth keeping: all, or those `final` marks (a failed request is asked again)."""
    if final is None or not len(cached):
        return cached
    return cached[final(cached).to_numpy(dtype=bool)]


def missing(
    cache: AnnotationCache, row_ids: Sequence[int], final: Callable[[pd.DataFrame], pd.Series] | None = None
) -> list[int]:
    """The rows of `row_ids` that `annotate` would compute now (read without waiting for the lock)."""
    return [int(r) for r in pd.Index(row_ids).difference(kept(cache.load(), final).index)]


def annotate(
    cache: AnnotationCache,
    row_ids: Sequence[int],
    compute: Callable[[list[int]], pd.DataFrame],
    chunk_rows: int,
    desc: str,
    final: Callable[[pd.DataFrame], pd.Series] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Annotations for `row_ids` (in that order), computing only those not cached yet.

    `compute(ids)` returns a frame with a `row_id` column and the annotation columns for `ids`.
    `final(cached)` marks the cached rows worth keeping; the others (e.g. a request that failed)
    are computed again. Returns the annotations and counts of rows reused and computed now.
    """
    wanted = pd.Index(row_ids, name="row_id")
    try:
        cache.lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another job is annotating into %s; waiting for it", desc, cache.dir)
        cache.lock.acquire()
    try:
        cached = kept(cache.load(), final)
        todo = [int(r) for r in wanted.difference(cached.index)]
        reused = len(wanted) - len(todo)
        if todo:
            log.info(
                "%s: %d of %d rows cached in %s; annotating %d",
                desc,
                reused,
                len(wanted),
                cache.dir,
                len(todo),
            )
            with tqdm(total=len(todo), desc=desc, unit="row") as bar:
                for start in range(0, len(todo), chunk_rows):
                    ids = todo[start : start + chunk_rows]
                    cache.write_chunk(compute(ids))
                    bar.update(len(ids))
            cached = cache.load()
        elif len(wanted):
            log.info("%s: all %d rows reused from %s", desc, len(wanted), cache.dir)
    finally:
        cache.lock.release()
    return cached.loc[wanted], {"reused": reused, "computed": len(todo), "cache": str(cache.dir)}
