"""Command-line options read from the configuration's fields: their default and their help,
written once where the field is declared (`evolver_core.config.setting`)."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

import typer


def config_option(record: type, name: str, *param_decls: str, **options: Any) -> Any:
    """A typer option for the field `name` of the config dataclass `record`: the field's
    default and help; `param_decls` and `options` as `typer.Option` takes them."""
    field = next(f for f in fields(record) if f.name == name)
    default = field.default if field.default_factory is MISSING else field.default_factory()
    return typer.Option(default, *param_decls, help=field.metadata["help"], **options)
