"""Prompt templates, one file each, so prompts are reviewed and changed apart from code.

Templates use `string.Template` placeholders (``$name``; a literal dollar is ``$$``), so the
braces and brackets of observations and the action grammar need no escaping. The final
newline of a file is not part of its prompt.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).parent


@cache
def _template(name: str) -> Template:
    path = PROMPT_DIR / (name if name.endswith(".txt") else f"{name}.txt")
    text = path.read_text(encoding="utf-8")
    return Template(text[:-1] if text.endswith("\n") else text)


def load_prompt(name: str, **values: object) -> str:
    """The prompt `name` (file ``<name>.txt`` here) with `values` substituted; every
    placeholder must be given."""
    return _template(name).substitute({k: str(v) for k, v in values.items()})
