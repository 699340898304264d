"""The base of the errors a person sees.

A `WebEvolverError`'s message says what failed, where, and what to do, so the command line
prints it as it is (`cli.errors`), with no traceback and no type name. Each such error also
keeps the built-in class it is (a `ValueError`, an `OSError`, ...), so code that catches
those still does. Errors the code handles itself (a malformed action the agent reads back,
a solver giving up) do not derive from it.
"""

from __future__ import annotations


class WebEvolverError(Exception):
    """An error whose message is all a person needs to act on it."""
