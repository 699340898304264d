"""What a stage's identity records of a model: its name and the digest of its contents
(base folder and adapter, resolved as the serving layer resolves them). Here, not in
`data.identity`, because resolving a model name is `models/`' business and `data/` sits
below `models/`."""

from __future__ import annotations

import os

from evolver_core.config import ModelSpec
from evolver_core.data.identity import fingerprint, folder_content_digest
from evolver_core.models.refs import resolve_model


def model_digest(spec: ModelSpec | None) -> str | None:
    """Content digest of the model a spec names (base and adapter); remote models (the openai
    backend) by endpoint and name, which is all that can be known of them. None: no model
    (the scripted solver)."""
    if spec is None:
        return None
    if spec.backend == "openai":
        return fingerprint({"endpoint": spec.base_url, "model": spec.model})
    ref = resolve_model(spec.model, adapter=spec.adapter)
    parts = {"backend": spec.backend}
    for role, where in (("base", ref.base), ("adapter", ref.adapter)):
        if where is not None:
            parts[role] = folder_content_digest(where) if os.path.isdir(where) else where
    return fingerprint(parts)


def model_identity(spec: ModelSpec | None) -> dict | None:
    """What a stage's identity records of a model: its name and its content digest."""
    if spec is None:
        return None
    return {"model": spec.model, "adapter": spec.adapter, "backend": spec.backend, "digest": model_digest(spec)}
