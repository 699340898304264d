"""The one parser of model verdicts: the LAST verdict word of a reply decides (the reasoning
before it may mention the words), upper case and whole words only ("SUCCESSFUL" or a
lower-case "success" in the reasoning is no verdict). The judge says SUCCESS / NOT SUCCESS,
the fidelity judge EQUIVALENT / NOT EQUIVALENT."""

from __future__ import annotations

import re
from functools import cache


@cache
def _pattern(word: str) -> re.Pattern:
    return re.compile(rf"\b(NOT\s+{word}|{word})\b")


def last_verdict(text: str | None, word: str) -> tuple[int | None, int]:
    """(1 for `word`, 0 for `NOT word`, None without either; where the deciding word starts,
    or the text's length when there is none)."""
    matches = list(_pattern(word).finditer(text or ""))
    if not matches:
        return None, len(text or "")
    last = matches[-1]
    return (0 if last.group(1).startswith("NOT") else 1), last.start()
