"""Plain configuration records shared by the CLI, the Prefect layer and `infra/`.

`ModelSpec` says which model serves a role and through which backend; `infra.serving.serve`
turns it into a running OpenAI-compatible endpoint. `LookaheadSpec` says how the policy looks
ahead with a world model (`evolver_core.agents.lookahead`). Keys are never stored here: only the
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


@dataclass(frozen=True)
class LookaheadSpec:
    """World-model look-ahead (WMLA) at inference: `depth` simulated steps per candidate."""

    world_model: ModelSpec
    scorer: ModelSpec  # rates each simulation 0 / 0.5 / 1
    depth: int = 1
    candidates: int = 3
    wm_max_tokens: int = 1024  # one predicted page
    scorer_max_tokens: int = 256
    candidate_temperature: float = 0.7  # the paper's, for the non-greedy candidates
