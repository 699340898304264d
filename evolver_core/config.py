"""Plain configuration records shared by the CLI, the Prefect layer and `infra/`.

`ModelSpec` says which model serves a role and through which backend; `infra.serving.serve`
turns it into a running OpenAI-compatible endpoint. Keys are never stored here: only the
name of the environment variable that holds one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    model: str = "smollm2"  # "tiny", "smollm2", a model folder, an adapter folder, or a remote model name
    backend: str = "transformers"  # transformers (CPU default) | vllm (GPUs) | openai (any external endpoint)
    adapter: str | None = None  # a LoRA adapter folder to serve on top of `model`
    base_url: str | None = None  # for backend=openai
    api_key_env: str | None = "OPENAI_API_KEY"  # for backend=openai; None: no key

    def same_server(self, other: "ModelSpec") -> bool:
        return self == other
