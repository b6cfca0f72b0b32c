"""When an annotator fails, the stage says so: a share of unusable annotations above its limit stops curate.

A difficulty filter whose judge could not read a single verdict, or s1 sampling over rows none of which
got a specialty, is not the experiment that was asked for; each annotator's `max_unusable_fraction`
(share of rows without a usable annotation, default 0.05) says how much of that a run may accept. Above
it the stage stops before selection with one line: the annotator, the counts by reason, one example of
what came back and the key that accepts it. At or below it the counts are recorded and a warning logged.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import pandas as pd

from meds1.errors import UserError


def cut(text: str | None, limit: int = 160) -> str:
    """`text` on one line (repr), cut to `limit` characters."""
    text = "" if text is None else str(text)
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def check_usable(
    what: str,
    statuses: pd.Series,
    usable: Collection[str],
    replies: pd.Series,
    key: str,
    limit: float,
    kept_in: str | None = None,
) -> None:
    """Stop when the share of `statuses` outside `usable` exceeds `limit` (the value of `key`).

    `replies` (indexed like `statuses`) holds what came back for each row: the reply, or the error.
    """
    unusable = statuses[~statuses.isin(usable)]
    total = len(statuses)
    if not total or len(unusable) / total <= limit:
        return
    counts = unusable.value_counts()
    example_rows = replies.loc[unusable.index[unusable == counts.index[0]]].dropna()
    example = cut(example_rows.iloc[0]) if len(example_rows) else "nothing"
    accept = math.ceil(len(unusable) / total * 100) / 100
    where = f"; all replies are kept in {kept_in}" if kept_in else ""
    raise UserError(
        f"{what}: {len(unusable)} of {total} rows unusable "
        f"({', '.join(f'{reason} {n}' for reason, n in counts.items())}), above {key}={limit}; "
        f"e.g. {counts.index[0]}: {example}{where}; fix the {what} or accept this: {key}={accept}"
    )
