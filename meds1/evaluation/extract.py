"""Which option a model's free-text answer commits to.

`extract_answer` is meds1's strict extractor. It reads the answer section of every layout meds1
trains on or meets (`answer_section`: the text after the last "## Final Response" heading, s1's
`<|im_start|>answer` marker, or a reasoning model's `</think>`; else the whole text) and takes the
first confident statement, trying in order:

1. an answer statement: a cue followed by a letter or an option's text ("The answer is C",
   "Answer: (c)", "The correct answer is **C. Ethambutol**", "The answer is yes"), or an option
   named correct ("Option C is correct", "(C) is the right answer"), whichever comes first;
2. `\\boxed{C}` (or `\\boxed{Ethambutol}`);
3. option lines such as "**C. Ethambutol**" or "(C)", when every such line names the same letter;
4. an answer section that opens with exactly one option's text ("Yes, ..." / "Ethambutol.");
5. exactly one option's text mentioned in the answer section (a mention inside a longer option's
   text does not count, so "Rifampin and isoniazid" is not also "Rifampin").

A letter must stand alone: the "C" in "Vitamin C" or "Anti C" is never read as option C, a
lowercase "a"/"i" followed by a word is an English word, and "I think" is a pronoun. Anything else
is unparseable (None) and scores as wrong.

The field's own scorers (HuatuoGPT-o1's, MedReason's, m1's, med-s1's), which always guess, are
reproduced in `meds1.evaluation.harnesses`.
"""

from __future__ import annotations

import re

from meds1.layouts import LAYOUTS

# Where each layout's answer part starts (meds1.layouts): after its `think_end`, the last one in the text.
# A heading (huatuo's "## Final Response") is also read at any level, in any case, with more on its line.
ANSWER_MARKERS = tuple(dict.fromkeys(layout.think_end for layout in LAYOUTS.values() if not layout.heading))
HEADING_WORDS = [layout.think_end.lstrip("# ").split() for layout in LAYOUTS.values() if layout.heading]
(FINAL_HEADING,) = (  # the answer section's scan below looks for a markdown heading's "#"
    re.compile(r"#+[ \t]*" + r"[ \t]+".join(map(re.escape, words)) + r"\b[^\n]*", re.IGNORECASE)
    for words in HEADING_WORDS
)
# The s1 markers decoded without their special token (`<|im_start|>` is one in Qwen's vocabulary):
# an answer that opens with a "think" line has its answer after the last line reading "answer".
BARE_S1_THINK = re.compile(r"\s*think[ \t]*\n")
BARE_S1_ANSWER = re.compile(r"^answer[ \t]*$", re.MULTILINE)
CUE = re.compile(
    r"\b(?:final\s+answer|correct\s+answer|best\s+answer|answer|correct\s+(?:option|choice)|"
    r"best\s+(?:option|choice))\b\**\s*(?:(?:is|would\s+be|should\s+be)\s*:?|:|=)\s*\**\s*"
    r"(?:(?:therefore|thus|likely|probably|clearly|definitely)\s*,?\s*)?(?:(?:option|choice)\s+)?",
    re.IGNORECASE,
)
# "Option C is correct", "(C) is the right answer": a letter named as an option, then the verdict.
VERDICT = re.compile(
    r"(?:\b(?:option|choice)\s+\(?([A-Z])\)?|\(([A-Z])\)|^[ \t*]*([A-Z])\b[*]*)[ \t]+is[ \t]+(?:the[ \t]+)?"
    r"(?:correct|right|best)\b",
    re.IGNORECASE | re.MULTILINE,
)
MARKUP = " \t*_\"'`$"
# A standalone letter: optionally bracketed, not followed by more word characters.
LETTER = re.compile(r"(?P<open>[(\[{]?)(?P<letter>[A-Za-z])(?P<close>[)\]}]?)(?![\w'’-])")
BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")
OPTION_LINE = re.compile(
    r"^[ \t>*#-]*[*_]*[ \t]*(?:[Oo]ption[ \t]+)?[(\[]?([A-Z])(?:[)\].:]|[*_]*[ \t]*$)(.*)$", re.M
)


def layout_answer_start(text: str) -> int:
    """Where the answer part of an s1-layout or think-tag answer starts (0 when there is neither)."""
    starts = [0]
    for marker in ANSWER_MARKERS:
        found = text.rfind(marker)
        if found != -1:
            starts.append(found + len(marker))
    if BARE_S1_THINK.match(text):
        bare = [match.end() for match in BARE_S1_ANSWER.finditer(text)]
        starts.extend(bare[-1:])
    return max(starts)


def answer_section(text: str) -> str:
    """The text after the last "## Final Response" heading, `<|im_start|>answer` or `</think>`."""
    start = layout_answer_start(text)
    hash_mark = text.find("#")  # scanning from each "#" is ~20x faster than a regex search
    while hash_mark != -1:
        heading = FINAL_HEADING.match(text, hash_mark)
        line_start = text.rfind("\n", 0, hash_mark) + 1
        if heading and not text[line_start:hash_mark].strip(" \t"):
            start = max(start, heading.end())
        hash_mark = text.find("#", heading.end() if heading else hash_mark + 1)
    return text[start:]


def extract_answer(text: str | None, options: dict[str, str]) -> str | None:
    """The option letter the text commits to, or None when it cannot be told."""
    if not text or not text.strip():
        return None
    section = answer_section(text)
    letters = {letter.upper(): option for letter, option in options.items()}
    for rule in (_from_cues, _from_boxed, _from_option_lines, _from_opening, _from_unique_mention):
        found = rule(section, letters)
        if found:
            return found
    return None


def _letter_at(text: str, start: int, letters: dict[str, str]) -> str | None:
    """A standalone valid option letter at `text[start:]` (after markup), else None."""
    while start < len(text) and text[start] in MARKUP:
        start += 1
    match = LETTER.match(text, start)
    if not match:
        return None
    letter, after = match.group("letter"), text[match.end() : match.end() + 3]
    bracketed = bool(match.group("open") or match.group("close"))
    if not bracketed:
        if letter.islower() and not (after[:1] in ".,;:*" or after.strip() == "" or letter not in "ai"):
            return None
        if letter == "I" and re.match(r"\s+[a-z]", after):
            return None  # "I think ..."
    letter = letter.upper()
    return letter if letter in letters else None


def _option_at(text: str, start: int, letters: dict[str, str]) -> str | None:
    """The option whose text starts at `text[start:]` (after markup), longest text first."""
    rest = text[start:].lstrip(MARKUP).lower()
    for letter, option in sorted(letters.items(), key=lambda item: -len(item[1])):
        body = option.strip().lower()
        if len(body) > 1 and rest.startswith(body) and not rest[len(body) : len(body) + 1].isalnum():
            return letter
    return None


def _from_cues(section: str, letters: dict[str, str]) -> str | None:
    """The first answer statement: "answer is X" (letter or option text) or "option X is correct"."""
    statements = []
    for cue in CUE.finditer(section):
        found = _letter_at(section, cue.end(), letters) or _option_at(section, cue.end(), letters)
        if found:
            statements.append((cue.start(), found))
            break
    for verdict in VERDICT.finditer(section):
        letter = next(group for group in verdict.groups() if group).upper()
        if letter in letters:
            statements.append((verdict.start(), letter))
            break
    return min(statements)[1] if statements else None


def _from_boxed(section: str, letters: dict[str, str]) -> str | None:
    for box in BOXED.finditer(section):
        content = TEXT_WRAPPER.sub(r"\1", box.group(1)).strip()
        found = _letter_at(content, 0, letters) or _option_at(content, 0, letters)
        if found:
            return found
    return None


def _from_option_lines(section: str, letters: dict[str, str]) -> str | None:
    named = set()
    for line in OPTION_LINE.finditer(section):
        letter, rest = line.group(1), line.group(2).strip(MARKUP)
        if letter not in letters:
            continue
        # "E. coli ..." is a sentence, not option E: accept a bare letter, a capitalised
        # continuation, or the option's own text.
        if not rest or not rest[0].islower() or _option_at(rest, 0, {letter: letters[letter]}):
            named.add(letter)
    return named.pop() if len(named) == 1 else None


def _from_opening(section: str, letters: dict[str, str]) -> str | None:
    rest = section.lstrip(MARKUP + "\n#")
    letter = _option_at(rest, 0, letters)
    if letter is None:
        return None
    tail = rest.lstrip(MARKUP)[len(letters[letter].strip()) :]
    # "Yes, ...", "Ethambutol." or "**Ethambutol** is ...": the opening is the answer itself.
    return letter if tail[:1] in ("", ".", ",", ";", ":", "!", "\n", "*", "_", '"', "'", "`") else None


def _from_unique_mention(section: str, letters: dict[str, str]) -> str | None:
    lowered = section.lower()
    spans = {letter: _mentions(lowered, option.strip().lower()) for letter, option in letters.items()}
    inside = [s for found in spans.values() for s in found]

    def standalone(span: tuple[int, int]) -> bool:
        return not any(o != span and o[0] <= span[0] and span[1] <= o[1] for o in inside)

    named = [letter for letter, found in spans.items() if any(standalone(s) for s in found)]
    return named[0] if len(named) == 1 else None


def _mentions(text: str, body: str) -> list[tuple[int, int]]:
    """Spans of `body` in `text` as a whole phrase (not inside a longer word)."""
    spans = []
    if len(body) < 2:
        return spans
    start = text.find(body)
    while start != -1:
        end = start + len(body)
        if not (start and text[start - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            spans.append((start, end))
        start = text.find(body, start + 1)
    return spans
