"""Matching a free-text answer against a gold answer.

The rule (documented here because it decides rewards):

1. Both texts are turned into tokens: Unicode NFKC, lower case, thousands separators dropped
   ("12,345" -> 12345), then runs of letters and numbers ("1.35", "2.3.1" stay whole); all
   other characters (punctuation, currency signs, quotes) only separate tokens. A plain number
   is written canonically, so "$19.99" == "19.990" and "4.0" == "4".
2. The answer matches when its tokens equal the gold's tokens or one of its aliases', or when
   it contains them as a contiguous run and is not much longer (at most 2 x gold + 15
   tokens), so "The cheapest one costs $19.99." matches "19.99" but a long list of
   guesses does not.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TOKEN = re.compile(r"\d+(?:\.\d+)*|[^\W\d_]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
EXTRA_TOKENS = 15


def tokens(text: str) -> list[str]:
    norm = _THOUSANDS.sub("", unicodedata.normalize("NFKC", text).lower())
    return [_canonical(t) for t in _TOKEN.findall(norm)]


def _canonical(token: str) -> str:
    if not _NUMBER.fullmatch(token):
        return token
    try:
        value = Decimal(token).normalize()
    except InvalidOperation:
        return token
    return format(value, "f")


def _contains(hay: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


def matches(answer: str | None, gold: dict[str, Any]) -> bool:
    """True when `answer` matches gold["answer"] or one of gold["aliases"] (rule above)."""
    if answer is None:
        return False
    said = tokens(answer)
    for expected in [gold["answer"], *gold.get("aliases", [])]:
        want = tokens(expected)
        if not want:
            continue
        if said == want or (len(said) <= 2 * len(want) + EXTRA_TOKENS and _contains(said, want)):
            return True
    return False
