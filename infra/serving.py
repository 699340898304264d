"""Start the server a `ModelSpec` names (see `infra.model_server` for the backends)."""

from __future__ import annotations

from evolver_core.config import ModelSpec
from evolver_core.models import resolve_model
from infra.model_server import ModelServer


def serve(spec: ModelSpec) -> ModelServer:
    """A not-yet-started server for `spec` (use it as a context manager)."""
    ref = resolve_model(spec.model, adapter=spec.adapter)
    if spec.backend == "openai":
        if not spec.base_url:
            raise ValueError("the openai backend needs --base-url (e.g. https://api.openai.com/v1)")
        return ModelServer.for_backend("openai", ref, base_url=spec.base_url, api_key_env=spec.api_key_env)
    return ModelServer.for_backend(spec.backend, ref)
