"""The rewards RL pays (`rl.rewards`: name -> weight), each a function of one completion and its question.

A completion is read in the layout the model was trained to write (`rl.layout`, the layouts of
meds1.curation.formatting): its *answer part* is the text after the layout's end of thinking ("## Final
Response", s1's answer marker, `</think>`). It has none when the thinking never ends (an unclosed thinking
block) or opens again after its end.

- `mcq`: 1 exactly when eval's strict extractor (meds1.evaluation.extract), applied to the answer part,
  returns the correct option (the letter after this epoch's shuffle of the options). Nothing for a completion
  without an answer part, an answer only inside the thinking (the answer part names no option), an
  unparseable answer, or an answer part whose statements name several options ("The answer is A or B",
  "the answer is A ... the answer is C", "\\boxed{A, B}").
- `format`: 1 for the layout's whole shape: thinking that ends once, with text in it, then an answer part that
  commits to one option (an open question: any answer). A small optional bonus; a scaffold around no answer
  earns nothing, so the format reward cannot climb while nothing is answered.
- `judge`: 1 when the judge (the difficulty filter's LLM judge over any backend, cached; or `match`,
  offline) says the answer part means the reference answer: open questions such as HuatuoGPT-o1's
  verifiable problems. No answer part: 0, and the judge is not asked.
- `overlong`: DAPO's soft overlong punishment, TRL's `get_soft_overlong_punishment`: 0 up to
  max_completion_length - overlong_cache_tokens tokens, falling linearly to -1 at max_completion_length.

Without a layout (`python -m meds1.rl.reward` with none given), the answer part is eval's own
(`answer_section`: after any layout's marker, else the whole text) and `mcq` is eval's `correct`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from meds1.config.schema import JudgeConfig, JudgeMethod, RLConfig
from meds1.evaluation.extract import (
    BARE_S1_ANSWER,
    BARE_S1_THINK,
    BOXED,
    CUE,
    FINAL_HEADING,
    VERDICT,
    answer_section,
    extract_answer,
)
from meds1.layouts import LAYOUTS, Layout

log = logging.getLogger(__name__)

JUDGE_KEY = "rl.judge.llm"
SPECIAL_START = "<|im_start|>"  # s1's markers lose it when decoded where it is a special token (Qwen)


def opening(layout: Layout) -> re.Pattern:
    """Where `layout`'s thinking opens: its `think_start` (a heading at any level and case; a marker
    also without its special token, as the first line)."""
    marker = layout.think_start.strip()
    if layout.heading:
        words = marker.lstrip("# ").split()
        return re.compile(
            r"^[ \t]*#+[ \t]*" + r"[ \t]+".join(map(re.escape, words)) + r"\b[^\n]*", re.I | re.M
        )
    pattern = re.escape(marker)
    if marker.startswith(SPECIAL_START):
        pattern += r"|\A\s*" + re.escape(marker.removeprefix(SPECIAL_START)) + r"[ \t]*$"
    return re.compile(pattern, re.MULTILINE)


OPENS = {name: opening(layout) for name, layout in LAYOUTS.items()}
# Layouts whose model writes the opening marker itself (a reasoning model's template may prefill <think>).
OPENING_WRITTEN = tuple(
    name for name, layout in LAYOUTS.items() if not layout.think_start.startswith("<think>")
)
# A letter stated after an answer cue, and more letters listed after it ("A or B", "A, C", "A/B").
STATED = re.compile(r"[\s*_\"'`$]*(?:\(([A-Za-z])\)|([A-Z]))(?![\w'’-])")
LISTED = re.compile(r"[ \t*]*(?:,|/|&|\bor\b|\band\b)[ \t*]*(?:option[ \t]+)?\(?([A-Z])\)?(?![\w'’-])")
PRONOUN = re.compile(r"I\s+[a-z]")  # "I think": not option I (as eval's extractor reads it)
BOXED_LETTER = re.compile(r"(?<![\w\\])([A-Z])(?!\w)")


def _ends(text: str, layout: str) -> list[tuple[int, int]]:
    """(start, end) of every end-of-thinking marker of `layout` in `text` (meds1.layouts `think_end`)."""
    chosen = LAYOUTS[layout]
    if chosen.heading:
        found = []
        for heading in FINAL_HEADING.finditer(text):
            line_start = text.rfind("\n", 0, heading.start()) + 1
            if not text[line_start : heading.start()].strip(" \t"):
                found.append(heading.span())
        return found
    tagged = [m.span() for m in re.finditer(re.escape(chosen.think_end), text)]
    if tagged or not chosen.think_end.startswith(SPECIAL_START) or not BARE_S1_THINK.match(text):
        return tagged
    return [m.span() for m in BARE_S1_ANSWER.finditer(text)]  # s1's markers decoded without <|im_start|>


def answer_part(text: str, layout: str) -> str | None:
    """The text after the layout's last end of thinking; None without one, or if thinking reopens after it."""
    ends = _ends(text, layout)
    if not ends:
        return None
    if any(m.start() >= ends[-1][1] for m in OPENS[layout].finditer(text)):
        return None
    return text[ends[-1][1] :].strip() or None


def named_letters(answer: str, options: dict[str, str]) -> set[str]:
    """Every option letter the answer part's statements name: after each answer cue (with a list that
    follows: "A or B"), each option called correct, each \\boxed{}."""
    letters = set()
    for cue in CUE.finditer(answer):
        stated = STATED.match(answer, cue.end())
        if not stated or (letter := (stated.group(1) or stated.group(2)).upper()) not in options:
            continue
        if PRONOUN.match(answer, stated.start(2)) if stated.group(2) == "I" else False:
            continue  # "Answer: I think ..."
        letters.add(letter)
        position = stated.end()
        while (more := LISTED.match(answer, position)) and more.group(1) in options:
            letters.add(more.group(1))
            position = more.end()
    for verdict in VERDICT.finditer(answer):
        letter = next(group for group in verdict.groups() if group).upper()
        letters |= {letter} & options.keys()
    for box in BOXED.finditer(answer):
        letters |= set(BOXED_LETTER.findall(box.group(1))) & options.keys()
    return letters


def chosen_option(answer: str | None, options: dict[str, str]) -> str | None:
    """The one option an answer part commits to (eval's strict extractor), None if it names several."""
    if answer is None:
        return None
    letter = extract_answer(answer, options)
    return letter if letter and named_letters(answer, options) <= {letter} else None


@dataclass
class Completion:
    """One completion to reward: its text, its length in tokens, and its question's row (`options` {letter:
    text}, `answer_idx`, `reference`, `question`, `kind`)."""

    text: str
    tokens: int
    row: dict


def mcq(completion: Completion, layout: str | None) -> float:
    row = completion.row
    options, gold = row["options"], str(row["answer_idx"]).upper()
    if layout is None:  # eval's own reading: meds1.evaluation.scoring.judge
        return float(extract_answer(completion.text, options) == gold)
    return float(chosen_option(answer_part(completion.text, layout), options) == gold)


def format_shape(completion: Completion, layout: str) -> float:
    text = completion.text
    ends, opens = _ends(text, layout), [m.span() for m in OPENS[layout].finditer(text)]
    if len(ends) != 1 or len(opens) > 1 or (layout in OPENING_WRITTEN and not opens):
        return 0.0
    thinking_start = opens[0][1] if opens else 0
    if thinking_start > ends[0][0] or not text[thinking_start : ends[0][0]].strip():
        return 0.0
    answer = answer_part(text, layout)
    if completion.row.get("kind") == "open":
        return float(answer is not None)
    return float(chosen_option(answer, completion.row["options"]) is not None)


def overlong(max_completion_length: int, cache_tokens: int) -> Callable[[Completion], float]:
    from trl.rewards import get_soft_overlong_punishment

    punish = get_soft_overlong_punishment(
        max_completion_len=max_completion_length, soft_punish_cache=cache_tokens
    )
    return lambda completion: punish([range(completion.tokens)])[0]


def verdict_key(question: str, reference: str, answer: str) -> int:
    """A judged answer's row id in the annotation cache (60 bits of its SHA-1: a non-negative int64)."""
    text = "\x1f".join((question, reference, answer))
    return int(hashlib.sha1(text.encode()).hexdigest()[:15], 16)


class Judge:
    """The `judge` reward: each answer part judged against its row's `reference` by the configured judge.

    LLM verdicts are cached under `<cache>/annotations/rl-verdicts/<key>/` (key: the judge's model, prompt and
    sampling), by question, reference and answer, so an answer the policy writes again is not asked twice,
    in this run or the next.
    """

    def __init__(self, judge: JudgeConfig, layout: str | None, cache_dir: str, seed: int):
        from meds1.curation.llm import load_model

        self.judge, self.layout, self.seed = judge, layout, seed
        self.backend = functools.cache(
            lambda: load_model(judge.llm.model, judge.llm.inference, cache_dir, f"{JUDGE_KEY}.model.path")
        )
        self.cache = None
        self.known: dict[int, str] = {}
        if judge.method == JudgeMethod.llm:
            self.cache = verdict_cache(judge, cache_dir)
            cached = self.cache.load()
            self.known = dict(zip(cached.index, cached["verdict"], strict=True)) if len(cached) else {}

    def answer(self, completion: Completion) -> str | None:
        if self.layout is None:
            return answer_section(completion.text).strip() or None
        return answer_part(completion.text, self.layout)

    def __call__(self, completions: list[Completion]) -> list[float]:
        from meds1.curation.difficulty import CORRECT, match_verdict

        answers = [self.answer(c) for c in completions]
        if self.judge.method == JudgeMethod.match:
            return [
                float(a is not None and match_verdict(a, str(c.row["reference"])) == CORRECT)
                for c, a in zip(completions, answers, strict=True)
            ]
        keys = [
            verdict_key(str(c.row["question"]), str(c.row["reference"]), a) if a is not None else None
            for c, a in zip(completions, answers, strict=True)
        ]
        todo = {k: (c, a) for k, c, a in zip(keys, completions, answers, strict=True) if k is not None}
        todo = {k: pair for k, pair in todo.items() if k not in self.known}
        if todo:
            self._ask(todo)
        return [float(k is not None and self.known.get(k) == CORRECT) for k in keys]

    def _ask(self, todo: dict[int, tuple[Completion, str]]) -> None:
        from meds1.curation.difficulty import JUDGE_CORRECTION, judge_conversation, parse_verdict
        from meds1.curation.llm import OK, ask

        conversations = [
            judge_conversation(self.judge, str(c.row["question"]), answer, str(c.row["reference"]))
            for c, answer in todo.values()
        ]
        replies = ask(
            self.backend(),
            conversations,
            parse_verdict,
            JUDGE_CORRECTION,
            self.judge.llm,
            self.seed,
            "judge",
            JUDGE_KEY,
        )
        verdicts = [reply.value if reply.status == OK else reply.status for reply in replies]
        self.known.update(zip(todo, verdicts, strict=True))
        kept = [
            (key, verdict) for key, verdict in zip(todo, verdicts, strict=True) if reply_is_final(verdict)
        ]
        if kept:
            with self.cache.lock:
                self.cache.write_chunk(pd.DataFrame(kept, columns=["row_id", "verdict"]))


def verdict_cache(judge: JudgeConfig, cache_dir: str):
    """The `judge` reward's verdicts: an AnnotationCache keyed by the judge's model, prompt and sampling."""
    from meds1.curation.cache import AnnotationCache
    from meds1.curation.llm import llm_spec

    return AnnotationCache(cache_dir, "rl-verdicts", llm_spec(judge.llm, judge.prompt))


def reply_is_final(verdict: str) -> bool:
    """A verdict worth caching: a failed request is asked again next time."""
    from meds1.curation.llm import FAILED

    return verdict != FAILED


Scorer = Callable[[list[Completion]], list[float]]


def scorer(name: str, rl: RLConfig, layout: str | None, cache_dir: str, seed: int) -> Scorer:
    """The scorer of reward `name` (a field of RewardWeights) for a batch of completions."""

    def each(function: Callable[[Completion], float]) -> Scorer:
        return lambda completions: [function(c) for c in completions]

    if name == "mcq":
        return each(functools.partial(mcq, layout=layout))
    if name == "format":
        return each(functools.partial(format_shape, layout=layout or rl.layout))
    if name == "judge":
        return Judge(rl.judge, layout, cache_dir, seed)
    if name == "overlong":
        return each(overlong(rl.max_completion_length, rl.overlong_cache_tokens))
    raise ValueError(f"unknown reward {name!r}")


def scorers(rl: RLConfig, layout: str | None, cache_dir: str, seed: int) -> dict[str, tuple[float, Scorer]]:
    """name -> (weight, scorer) of the rewards computed: those paid, and `mcq` (on multiple-choice
    questions) and `format` (with a layout) also unpaid, for the record (see RewardWeights)."""
    logged = {"mcq"} if rl.data.kind == "mcq" else set()
    if layout or rl.layout:
        logged.add("format")
    weights = dataclasses.asdict(rl.rewards)
    names = [name for name, weight in weights.items() if weight > 0 or name in logged]
    return {name: (float(weights[name]), scorer(name, rl, layout, cache_dir, seed)) for name in names}


def total(components: dict[str, float], weights: dict[str, float]) -> float:
    """The reward TRL optimizes: the weighted sum of the components."""
    return sum(weights[name] * value for name, value in components.items())
