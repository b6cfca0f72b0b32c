"""Perturbations of step traces ("## Step N: ..."), as med-s1 counted them, seeded per row.

som-shahlab/med-s1@d2913a0 data/curation_methods/perturbation.py. How many steps change per rate is
med-s1's (`int(rate * k)`, so 0.33 of a 3-step trace is 0); which ones is drawn from
`numpy.random.default_rng([seed, row_id])`, so a row's perturbation does not depend on the other rows or
on request retries (med-s1 drew from Python's global `random`, which its retry jitter also consumed).
The LLM perturbations (collapse_consecutive, answer) choose here what the LLM is asked; the prompts are
data (meds1/curation/traces/perturbation/*.yaml) and the requests go through the trace LLM's cache.
"""

from __future__ import annotations

import numpy as np

from meds1.curation.traces.spec import STEP_HEADER

ANSWER_STREAM = 0xA  # the answer perturbation's row draw: its own stream, not any row's


def row_rng(seed: int, row_id: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(row_id)])


def parse_steps(trace: str) -> list[str]:
    """The steps' texts (title line included), split at each "## Step N:" header (med-s1 parse_steps)."""
    return [step.strip() for step in STEP_HEADER.split(trace) if step.strip()]


def renumber(steps: list[str]) -> str:
    """med-s1 renumber_steps: "## Step i: ..." for i = 1, 2, ..., blank-line separated."""
    return "\n\n".join(f"## Step {i}: {step}" for i, step in enumerate(steps, 1))


def skip(steps: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Drop int(rate * k) steps at random, always keeping one (med-s1 skip_steps)."""
    k = len(steps)
    n = min(int(rate * k), k - 1)
    keep = sorted(rng.choice(k, size=k - n, replace=False).tolist())
    return [steps[i] for i in keep]


def shuffle(steps: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    """Permute int(rate * k) randomly chosen steps among their own positions (med-s1 shuffle_steps)."""
    n = min(int(rate * len(steps)), len(steps))
    positions = rng.choice(len(steps), size=n, replace=False).tolist()
    moved = [steps[i] for i in positions]
    rng.shuffle(moved)
    out = list(steps)
    for position, step in zip(positions, moved, strict=True):
        out[position] = step
    return out


def add_irrelevant(
    steps: list[str], rate: float, rng: np.random.Generator, pool: list[tuple[int, str]], owner: int
) -> list[str]:
    """Insert int(rate * k) steps drawn from other rows' traces at random positions (med-s1
    add_irrelevant_steps). `pool` holds (trace group, step) of every row; steps of `owner`'s group (rows
    with this very trace) are never drawn, as med-s1 excluded traces equal to this one."""
    n = int(rate * len(steps))
    if not any(group != owner for group, _ in pool):
        return list(steps)
    out = list(steps)
    for _ in range(n):
        group, step = pool[rng.integers(len(pool))]
        while group == owner:  # rejection: uniform over the other rows' steps
            group, step = pool[rng.integers(len(pool))]
        out.insert(int(rng.integers(len(out) + 1)), step)
    return out


def collapse_pairs(k: int, rate: float, rng: np.random.Generator, overlapping: bool = False) -> list[int]:
    """The first index of each consecutive pair to merge.

    rate < 1: med-s1's int(min(rate + 0.01, 1) * (k - 1)) non-overlapping pairs, drawn one by one among
    those left (an index and its neighbours leave after each draw, so there may be fewer). rate 1: every
    pair, (1,2), (3,4), ...; `overlapping` takes med-s1's (1,2), (2,3), ..., which its merge loop turned
    into one step, the merge of steps 1 and 2.
    """
    if k <= 1:
        return []
    if rate >= 1:
        return list(range(k - 1)) if overlapping else list(range(0, k - 1, 2))
    wanted = int(min(rate + 0.01, 1.0) * (k - 1))
    available = list(range(k - 1))
    chosen: list[int] = []
    while len(chosen) < wanted and available:
        index = available[int(rng.integers(len(available)))]
        chosen.append(index)
        available = [i for i in available if abs(i - index) > 1]
    return chosen


def merge(steps: list[str], merged: dict[int, str]) -> list[str]:
    """Replace each pair (i, i+1) by merged[i], from the last pair back, as med-s1 did (an empty merge
    leaves its pair)."""
    for index in sorted(merged, reverse=True):
        if merged[index]:
            steps = steps[:index] + [merged[index]] + steps[index + 2 :]
    return steps


def words(text: str) -> int:
    return len(text.split())


def answer_rows(row_ids: list[int], rate: float, seed: int) -> set[int]:
    """The int(rate * N) rows whose answer is made wrong (med-s1 wrong_answer's row sample)."""
    rng = np.random.default_rng([seed, ANSWER_STREAM])
    ordered = sorted(int(r) for r in row_ids)
    n = int(rate * len(ordered))
    return {ordered[i] for i in rng.choice(len(ordered), size=n, replace=False).tolist()}


def replace_last_step(steps: list[str], new_last: str) -> list[str]:
    """med-s1 wrong_answer: the last step's text (its title included) becomes the LLM's STEP text."""
    return [*steps[:-1], new_last]
