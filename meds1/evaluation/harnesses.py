"""The field's scorers, each reproduced from its own code, so that one predictions file gives every number.

- `huatuo` (`accuracy_huatuo`): the text after the last "## Final Response\n\n"; per source, the better
  of first-match and last-match accuracy. FreedomIntelligence/HuatuoGPT-o1@2c8d7fc evaluation/scorer.py
  (match_choice, score).
- `medreason` (`accuracy_medreason`): HuatuoGPT's, but without that heading the text after
  "## Final Answer\n\n". UCSC-VLAA/MedReason@02b51f1 src/evaluation/scorer.py (match_choice, score).
- `m1` (`accuracy_m1`): the last `\\boxed{}` (else the whole answer) is right when it is the answer's
  text, "X. text" or the letter; else HuatuoGPT's matcher, last match only ("We remove the trick from
  HuatuoGPT-o1"). UCSC-VLAA/m1@c65dfc6 src/eval/extract_format.py (extract_answer), src/eval/score.py
  (score, huatuo_match_choice).
- `medsone` (`accuracy_medsone`): the text after the last llama answer header, "Answer:",
  "## Final Response\n\n" and "</think>" in turn; the first match; a question is right when at least
  half its runs are. som-shahlab/med-s1@d15c393 eval/scorer.py (match_choice, score).

All four end in HuatuoGPT's matcher (`match_choice`), which never abstains: "answer is X", else a letter
standing between non-word characters, else the option text found latest, else the option most similar
to the text (difflib). Its quirks are kept, since they move published numbers: the loose letter rule
reads "Vitamin C" as C; its "first" option-text match is also the latest-starting one; and an empty or
markerless answer falls to difflib, where every similarity is 0 and `>=` keeps the *last* option, so an
empty answer scores as the last option (right whenever that is the answer). meds1's strict `accuracy`
scores it wrong. (HuatuoGPT's and MedReason's eval.py drop a generation that is empty before scoring;
meds1 keeps every question in the denominator, as med-s1 and m1 do.)

meds1's one addition, for every harness: an s1- or think-tag-layout answer is first cut to its answer
part (`layout_answer_start`), as m1's pipeline does (it scores only the text after `<|im_start|>answer`)
and meds1's HuatuoGPT port always has; a HuatuoGPT-layout answer is cut by each scorer's own rule.

Overall, each as its authors aggregate: HuatuoGPT and MedReason report per source only, so their overall
is the question-weighted mean of the per-source figures (never one max over the pooled rows); m1's Table
1 averages its sources unweighted ("Avg."), so `accuracy_m1` overall is the plain mean of the sources;
med-s1's overall is the share of questions right by majority, pooled. With repeats (`run`), HuatuoGPT's,
MedReason's and m1's per-source figures are means over runs; med-s1's is its own majority vote.
"""

from __future__ import annotations

import difflib
import re
import statistics
from collections import Counter, defaultdict
from typing import NamedTuple

from meds1.evaluation.extract import layout_answer_start

HARNESSES = ("huatuo", "medreason", "m1", "medsone")
LABELS = {"huatuo": "HuatuoGPT-o1", "medreason": "MedReason", "m1": "m1", "medsone": "med-s1"}  # in tables
FINAL_RESPONSE = "## Final Response\n\n"
FINAL_ANSWER = "## Final Answer\n\n"  # MedReason's own layout
MEDSONE_CUTS = ("<|start_header_id|>answer<|end_header_id|>", "Answer:", FINAL_RESPONSE, "</think>")
STRICT = re.compile(r"(answer is\s*?)([A-N])", re.S)


def metric(harness: str) -> str:
    return f"accuracy_{harness}"


METRICS = tuple(metric(name) for name in HARNESSES)  # accuracy_huatuo, ... beside meds1's strict `accuracy`


class Marks(NamedTuple):
    """One prediction's correctness under each harness."""

    huatuo: tuple[bool, bool]  # (first match right, last match right)
    medreason: tuple[bool, bool]
    m1: bool
    medsone: bool  # first match right, in this run


class Scorer:
    """Marks predictions under every harness; HuatuoGPT's matcher runs once per distinct (text, options)."""

    def __init__(self):
        self._matches: dict[tuple, tuple[str, str]] = {}

    def match(self, text: str, options: dict[str, str]) -> tuple[str, str]:
        key = (text, tuple(options.items()))
        if key not in self._matches:
            self._matches[key] = match_choice(text, options)
        return self._matches[key]

    def marks(self, row: dict) -> Marks:
        output = row.get("output") or ""
        text = output[layout_answer_start(output) :]
        options, answer = row["options"], str(row["answer_idx"])
        huatuo = self.match(_after_last(text, FINAL_RESPONSE), options)
        if FINAL_RESPONSE not in text and FINAL_ANSWER in text:
            medreason = self.match(_after_last(text, FINAL_ANSWER), options)
        else:
            medreason = huatuo
        medsone_text = text
        for cut in MEDSONE_CUTS:
            medsone_text = _after_last(medsone_text, cut)
        return Marks(
            _right(huatuo, answer),
            _right(medreason, answer),
            self._m1_right(text, options, answer),
            self.match(medsone_text, options)[0].lower() == answer.lower(),
        )

    def _m1_right(self, text: str, options: dict[str, str], answer: str) -> bool:
        """m1's `_map_correct`: the extracted answer as text, "X. text" or letter, else its matcher."""
        extracted = m1_extract(text)
        answer_text = options[answer].lower()  # m1's `answer` field: the option's text (its data fix-ups)
        lowered = extracted.lower()
        if lowered in (answer_text, f"{answer}. {answer_text}".lower()):
            return True
        if len(extracted) == 1 and lowered == answer.lower():
            return True
        last = self.match(_after_last(extracted, FINAL_RESPONSE), m1_options(options))[1]
        return last.lower() == answer.lower()


def _after_last(text: str, marker: str) -> str:
    """`text.split(marker)[-1]`, as every one of these scorers cuts."""
    found = text.rfind(marker)
    return text if found == -1 else text[found + len(marker) :]


def _right(choice: tuple[str, str], answer: str) -> tuple[bool, bool]:
    return choice[0].lower() == answer.lower(), choice[1].lower() == answer.lower()


def m1_extract(text: str) -> str:
    """m1's extract_answer: the content of the last `\\boxed{}` (after any "="), then of a `\\text{}` wrapping
    all of it; without a box, the whole text. (Its second pass looks for `\\boxed` again, not `\\text`, as
    theirs does: `last_boxed_only_string` ignores its `left` argument.)"""
    return _unwrap(_last_boxed(_unwrap(_last_boxed(text), "\\boxed")), "\\text")


def _last_boxed(text: str) -> str:
    """m1's last_boxed_only_string: the last `\\boxed{...}` (else `\\fbox{...}`) with balanced braces."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return text
    depth = 0
    for position in range(start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[start : position + 1]
    return text


def _unwrap(text: str, command: str) -> str:
    """m1's remove_boxed: the inside of `command{...}` spanning all of `text` (after any "="), else text."""
    prefix = command + "{"
    if not (text.startswith(prefix) and text.endswith("}")):
        return text
    inside = text[len(prefix) : -1]
    return inside.split("=")[-1].lstrip(" ") if "=" in inside else inside


def m1_options(options: dict[str, str]) -> dict[str, str]:
    """The options as m1's matcher sees them: parsed back from its prompt's "X. text" lines (split on the
    first ". "; a line without one is skipped), so an option with a line break loses its tail."""
    lines = "\n".join(f"{letter}. {text}" for letter, text in options.items()).split("\n")
    return dict(line.strip().split(". ", 1) for line in lines if ". " in line.strip())


# --- HuatuoGPT-o1's matcher (evaluation/scorer.py: match_choice, after its cut) ---------------------


def match_choice(text: str, options: dict[str, str]) -> tuple[str, str]:
    """(first, last) option letters as HuatuoGPT-o1's match_choice reads `text`; it never abstains."""
    matches = list(STRICT.finditer(text))
    if matches:
        return matches[0].group(2), matches[-1].group(2)
    # Theirs: ([\u4e00-\u9fff]|is |是|项|\*|\W|\ |\(|为|^|'|\"|#)(?![aA] )([A..])(\W|[\u4e00-\u9fff]|$).
    # Every alternative before the letter is a CJK or non-word character ("is " ends in one), so
    # this equivalent class finds the same letters at the same ends, twice as fast.
    letters = "ABCDEFGHIJKLMN"[: len(options)]
    loose = re.compile(r"(?:[\W\u4e00-\u9fff]|^)(?![aA] )([" + letters + r"])(?:\W|[\u4e00-\u9fff]|$)", re.S)
    matches = list(loose.finditer(text))
    if matches:
        return matches[0].group(1), matches[-1].group(1)
    lowered = text.lower()
    present = [opt for opt in options if options[opt].lower() in lowered]
    if present:
        last = max(present, key=lambda opt: lowered.rindex(options[opt].lower()))
        # Their "first" also sorts by position descending; kept as is for comparability.
        first = max(present, key=lambda opt: lowered.index(options[opt].lower()))
        return first, last
    matcher = _TextMatcher(None, "", lowered)  # the text's index is built once, reused per option
    similarity = []
    for option in options.values():
        matcher.set_seq1(option.lower())
        similarity.append(matcher.ratio())
    best = max(range(len(similarity)), key=lambda i: (similarity[i], i))  # ties: the last, as theirs
    letter = list(options)[best]
    return letter, letter


def huatuo_match(text: str, options: dict[str, str]) -> tuple[str, str]:
    """(first, last) letters of HuatuoGPT-o1's scorer on a whole output (see the module doc for layouts)."""
    text = text[layout_answer_start(text) :]
    return match_choice(_after_last(text, FINAL_RESPONSE), options)


class _TextMatcher(difflib.SequenceMatcher):
    """`difflib.SequenceMatcher` whose index of the second sequence is built from character counts.

    Gives exactly difflib's ratios (same `b2j`, `bjunk`, `bpopular`) in a fraction of the time for
    long texts: with autojunk most characters of a long text are "popular" and left out of the
    index, so only the rare ones need their positions listed.
    """

    def _SequenceMatcher__chain_b(self):  # overrides difflib's private index builder
        b = self.b
        counts = Counter(b)
        self.bjunk = set()
        self.bpopular = set()
        if self.autojunk and len(b) >= 200:
            limit = len(b) // 100 + 1
            self.bpopular = {char for char, count in counts.items() if count > limit}
        self.b2j = {char: _positions(b, char) for char in counts if char not in self.bpopular}


def _positions(text: str, char: str) -> list[int]:
    found = []
    position = text.find(char)
    while position != -1:
        found.append(position)
        position = text.find(char, position + 1)
    return found


# --- each harness's accuracy ------------------------------------------------------------------------

Marked = list[tuple[dict, Marks]]


def accuracies(marked: Marked) -> dict[str, float]:
    """{metric: accuracy} of marked rows under every harness, each aggregated by its own rule (module doc)."""
    by_source: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for row, marks in marked:
        by_source[row["source"]][int(row.get("run", 0))].append((row, marks))
    sizes = {source: len(_questions(runs)) for source, runs in by_source.items()}
    total = sum(sizes.values())
    huatuo, medreason, m1, medsone = {}, {}, {}, {}
    for source, runs in by_source.items():
        huatuo[source] = statistics.fmean(better_match(run, "huatuo") for run in runs.values())
        medreason[source] = statistics.fmean(better_match(run, "medreason") for run in runs.values())
        m1[source] = statistics.fmean(statistics.fmean(m.m1 for _, m in run) for run in runs.values())
        medsone[source] = majority(runs)
    return {
        "accuracy_huatuo": sum(huatuo[s] * sizes[s] for s in sizes) / total,
        "accuracy_medreason": sum(medreason[s] * sizes[s] for s in sizes) / total,
        "accuracy_m1": statistics.fmean(m1.values()),
        "accuracy_medsone": sum(medsone[s] * sizes[s] for s in sizes) / total,
    }


def better_match(rows: Marked, harness: str) -> float:
    """HuatuoGPT's (and MedReason's) accuracy of one source's rows: the better of first and last match."""
    first = sum(getattr(marks, harness)[0] for _, marks in rows)
    last = sum(getattr(marks, harness)[1] for _, marks in rows)
    return max(first, last) / len(rows)


def per_run_better_match(marked: Marked, harness: str) -> float:
    """One run's HuatuoGPT-style accuracy over several sources: the question-weighted mean per source."""
    by_source: dict[str, Marked] = defaultdict(list)
    for row, marks in marked:
        by_source[row["source"]].append((row, marks))
    return sum(better_match(rows, harness) * len(rows) for rows in by_source.values()) / len(marked)


def majority(runs: dict[int, Marked]) -> float:
    """med-s1's `score`: a question is right when its first match is right in at least half its runs."""
    votes: dict[str, list[bool]] = defaultdict(list)
    for run in runs.values():
        for position, (row, marks) in enumerate(run):
            votes[str(row.get("id", position))].append(marks.medsone)
    return statistics.fmean(sum(v) / len(v) >= 0.5 for v in votes.values())


def _questions(runs: dict[int, Marked]) -> set[str]:
    return {str(row.get("id", position)) for run in runs.values() for position, (row, _) in enumerate(run)}
