"""Model references: what to serve (`ModelRef`), and the one way to turn a model name into
one (`resolve_model`: a built-in model, a folder, an adapter folder on its base, or a remote
name)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evolver_core.models.embedded import smollm2_model_dir, tiny_model_dir


@dataclass(frozen=True)
class ModelRef:
    """What to serve: a base model (local folder or remote name), optionally a LoRA adapter.

    `served_name` is the name clients should know the model by; a backend may have to
    serve it under another (the server's `model`).
    """

    base: str
    adapter: str | None = None
    served_name: str = ""

    def __post_init__(self) -> None:
        if not self.served_name:
            object.__setattr__(self, "served_name", Path(self.adapter).name if self.adapter else self.base)

    @property
    def is_local(self) -> bool:
        return Path(self.base).is_dir()


BUILTIN_MODELS: dict[str, Callable[[Path | str | None], Path]] = {
    "tiny": tiny_model_dir,
    "smollm2": smollm2_model_dir,
}


def resolve_model(name: str, *, adapter: str | Path | None = None, served_name: str | None = None,
                  cache_dir: Path | str | None = None) -> ModelRef:
    """Turn a model name into a `ModelRef`.

    - "tiny" / "smollm2": the built-in models (built on first use), served as that name;
    - a folder holding a PEFT adapter (``adapter_config.json``): the adapter on its base
      (the base named in the adapter config, itself resolved by this function);
    - any other folder: that model;
    - anything else: a remote model name (for the openai backend), passed through.
    """
    if name in BUILTIN_MODELS:
        ref = ModelRef(base=str(BUILTIN_MODELS[name](cache_dir)), served_name=name)
    elif (Path(name) / "adapter_config.json").is_file():
        base = json.loads((Path(name) / "adapter_config.json").read_text())["base_model_name_or_path"]
        ref = ModelRef(base=resolve_model(base, cache_dir=cache_dir).base, adapter=str(Path(name).resolve()))
    elif Path(name).is_dir():
        ref = ModelRef(base=str(Path(name).resolve()), served_name=Path(name).resolve().name)
    else:
        ref = ModelRef(base=name)
    if adapter is not None:
        ref = ModelRef(base=ref.base, adapter=str(Path(adapter).resolve()), served_name=served_name or "")
    elif served_name:
        ref = ModelRef(base=ref.base, adapter=ref.adapter, served_name=served_name)
    return ref
