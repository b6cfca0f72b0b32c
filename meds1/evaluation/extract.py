"""Extract the chosen option letter from a model's free-text answer.

The text after the last "## Final Response" heading (when present) is searched with patterns in
order of confidence; the first pattern that finds a valid option letter decides. When no letter is
found, an option's text quoted on its own (without its letter) is accepted if exactly one option's
text appears. Otherwise the answer is unparseable (None).
"""

from __future__ import annotations

import re

FINAL_HEADING = re.compile(r"#+\s*final\s+response", re.IGNORECASE)
LETTER_PATTERNS = [
    re.compile(r"answer\s+is\s*:?\s*\**\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"answer\s*:\s*\**\s*\(?([A-Za-z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"\\boxed\{\s*\(?([A-Za-z])\)?\s*\}"),
    re.compile(r"^\s*\**\s*\(?([A-Z])[.):]", re.MULTILINE),
    re.compile(r"\(([A-Za-z])\)"),
]


def final_section(text: str) -> str:
    headings = list(FINAL_HEADING.finditer(text))
    return text[headings[-1].end() :] if headings else text


def extract_answer(text: str, options: dict[str, str]) -> str | None:
    """The option letter the text commits to, or None when it cannot be told."""
    if not text or not text.strip():
        return None
    focus = final_section(text)
    letters = {letter.upper() for letter in options}
    for pattern in LETTER_PATTERNS:
        for match in pattern.finditer(focus):
            letter = match.group(1).upper()
            if letter in letters:
                return letter
    named = [
        letter
        for letter, option in options.items()
        if option.strip() and re.search(rf"(?<!\w){re.escape(option.strip())}(?!\w)", focus, re.IGNORECASE)
    ]
    if len(named) == 1:
        return named[0].upper()
    return None
