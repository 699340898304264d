"""Text helpers every layer shares."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


def cap_text(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the cut marked (`…[cut N chars]`)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[cut {len(text) - limit} chars]"


def html_templates(package: str) -> "jinja2.Environment":
    """The Jinja2 templates in `package`'s `templates/` folder, as every HTML page of the
    project is rendered (the sandbox sites, the trajectory viewer): autoescaped, and a
    missing value is an error rather than an empty string."""
    import jinja2  # only the callers that render HTML pay for it

    return jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
