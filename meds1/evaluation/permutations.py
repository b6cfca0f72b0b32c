"""Option-order robustness (`eval.shuffle_options=K`): each question is also asked with its options in K
other orders, the answer letter following its option, so a model that learned a letter, not an answer,
shows up as accuracy that moves with the order.

The orders are seeded by the question's stable id alone (`random.Random("shuffle_options:<id>")`, a
string seed hashed with SHA-512, never Python's salted `hash`): the same on any machine, in any process,
for every arm and every `seed`, so arms stay paired question by question and order by order. They are
distinct and never the order the question is asked in; the first K orders for K are those for K - 1 plus
one. A question with m options has m! - 1 other orders, so K may not exceed that for any question
(`expand` says which source holds the smallest one).

Rows carry `permutation` (0: the order the suite gives; 1..K: the others) and `option_order` (the
original option letters, or a shuffled suite's columns, in the order shown). With `eval.repeats`, every
order is asked in every run (K + 1 answers per question and run); `summarize` gives per order the
accuracy (a question's mean over its runs, averaged over questions: the first is the headline accuracy)
and `consistent`: the share of questions right under every order, within a run, averaged over runs.
"""

from __future__ import annotations

import math
import random
import string
from collections import defaultdict

from meds1.errors import UserError

LETTERS = string.ascii_uppercase


def orders(row_id: str, letters: list[str], k: int) -> list[list[str]]:
    """`k` distinct orders of `letters`, none of them `letters` itself, seeded by `row_id`."""
    if k > math.factorial(len(letters)) - 1:
        raise ValueError(
            f"{len(letters)} options have {math.factorial(len(letters)) - 1} other orders, not {k}"
        )
    rng = random.Random(f"shuffle_options:{row_id}")
    seen, found = {tuple(letters)}, []
    while len(found) < k:
        order = list(letters)
        rng.shuffle(order)
        if tuple(order) not in seen:
            seen.add(tuple(order))
            found.append(order)
    return found


def reorder(row: dict, order: list[str], labels: dict[str, str]) -> None:
    """Show `row`'s options in `order` (its current letters) as A, B, ..., in place: `answer_idx` follows
    its option; `option_order` records each shown option's label (`labels`, else its current letter)."""
    options = row["options"]
    row["options"] = {LETTERS[i]: options[key] for i, key in enumerate(order)}
    row["answer_idx"] = LETTERS[order.index(row["answer_idx"])]
    row["option_order"] = [labels.get(key, key) for key in order]


def expand(rows: list[dict], k: int) -> list[dict]:
    """Each row, then its `k` permuted copies (see the module doc); `rows` itself when k is 0. A source
    with a question of too few options for `k` orders is a one-line error naming it."""
    if not k:
        return rows
    fewest: dict[str, int] = {}
    for row in rows:
        fewest[row["source"]] = min(fewest.get(row["source"], len(row["options"])), len(row["options"]))
    source, options = min(fewest.items(), key=lambda item: (item[1], item[0]))
    if k > math.factorial(options) - 1:
        raise UserError(
            f"eval.shuffle_options={k}: source {source} has questions with {options} options, which have "
            f"only {math.factorial(options) - 1} other orders; use at most that"
        )
    expanded = []
    for row in rows:
        letters = list(row["options"])
        labels = dict(zip(letters, row.get("option_order") or letters, strict=True))
        expanded.append({**row, "permutation": 0})
        for index, order in enumerate(orders(row["id"], letters, k), start=1):
            permuted = {**row, "permutation": index}
            reorder(permuted, order, labels)
            expanded.append(permuted)
    return expanded


def original(rows: list[dict]) -> list[dict]:
    """The rows asked in the suite's own order (all of them without eval.shuffle_options)."""
    return [row for row in rows if not row.get("permutation")]


def summarize(rows: list[dict]) -> dict:
    """{n: orders asked, accuracy: [per order, the suite's own first], consistent} of judged rows."""
    by_order: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    by_run: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for row in rows:
        qid, correct = str(row["id"]), bool(row["correct"])
        by_order[int(row.get("permutation") or 0)][qid].append(correct)
        by_run[qid, int(row.get("run", 0))].append(correct)
    per_question: dict[str, list[bool]] = defaultdict(list)
    for (qid, _), marks in by_run.items():
        per_question[qid].append(all(marks))
    return {
        "n": len(by_order),
        "accuracy": [_mean_of_means(by_order[order]) for order in sorted(by_order)],
        "consistent": _mean_of_means(per_question),
    }


def _mean_of_means(marks: dict[str, list[bool]]) -> float:
    return sum(sum(m) / len(m) for m in marks.values()) / len(marks)
