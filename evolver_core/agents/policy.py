"""The model policy: an LLM behind the OpenAI API playing the `Agent` protocol.

Its prompt is `contracts.prompt.build_messages` (c_t^clip), the same function the SFT
conversion builds its examples with. `parse_reply` never raises: a reply without an action
yields an empty action text, which the rollout records as invalid and shows the agent as an
error on its next observation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evolver_core.config import SamplingConfig
from evolver_core.contracts.actions import REPLY_REGEX
from evolver_core.contracts.agent import Turn
from evolver_core.contracts.episode import episode_seed
from evolver_core.contracts.observation import Observation
from evolver_core.contracts.prompt import FewShot, PastStep, build_messages
from evolver_core.contracts.reply import parse_reply
from evolver_core.contracts.task import Task
from evolver_core.llm import LLMClient

DEFAULT_MAX_TOKENS = SamplingConfig.policy_max_tokens


class PolicyAgent:
    """The LLM policy; implements `evolver_core.contracts.agent.Agent`."""

    def __init__(self, client: LLMClient, *, history_k: int = 1, few_shot: Sequence[FewShot] = (),
                 temperature: float = 0.0, max_tokens: int = DEFAULT_MAX_TOKENS, seed: int | None = None,
                 name: str | None = None, constrained: bool = False):
        self.client = client
        self.history_k = history_k
        self.few_shot = tuple(few_shot)
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.name = name or f"policy:{client.model}"
        self.constrained = constrained  # decode within REPLY_REGEX where the server can

    @classmethod
    def for_episodes(cls, client: LLMClient, sampling: SamplingConfig,
                     seed_offset: int = 0) -> Callable[[Task, int], PolicyAgent]:
        """`make_agent(task, sample)`: the one way stages build the policy, as the sampling
        section says (temperature, reply length, constrained decoding), seeded per trajectory (`episode_seed`, plus
        `seed_offset`: synthesis asks for other replies than real sampling drew on the same
        first page)."""
        return lambda task, k: cls(client, temperature=sampling.temperature, max_tokens=sampling.policy_max_tokens,
                                   seed=episode_seed(task, k) + seed_offset, constrained=sampling.constrained)

    def start(self, task: Task) -> None:
        """Stateless between steps: the history comes with every `act`."""

    async def act(self, task: Task, obs: Observation, history: list) -> Turn:
        return await self.reply(task.query, obs.text, [PastStep.from_step(s) for s in history],
                                error=obs.error, temperature=self.temperature, seed=self.seed)

    async def reply(self, objective: str, page: str, past: Sequence[PastStep], *, error: str | None = None,
                    temperature: float, seed: int | None, grammar: str = REPLY_REGEX) -> Turn:
        """One reply to the prompt of real rollouts (look-ahead also asks on predicted pages),
        within `grammar` when the policy decodes constrained."""
        messages = build_messages(objective, page, past, self.history_k, self.few_shot, error=error)
        completion = await self.client.chat(messages, temperature=temperature, max_tokens=self.max_tokens, seed=seed,
                                            regex=grammar if self.constrained else None)
        reply = parse_reply(completion.text)
        return Turn(thought=reply.thought, action=reply.action, model=self.client.model, response=completion.text,
                    prompt=messages, sampling=completion.sampling, prompt_tokens=completion.prompt_tokens,
                    completion_tokens=completion.completion_tokens)
