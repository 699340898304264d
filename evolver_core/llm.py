"""One chat client for every model role (policy, world model, judge, scorer).

Why one client: every role talks to an OpenAI-compatible endpoint (our CPU server, vLLM,
or a hosted API), and all of them need the same operational care that the reference
lacked: bounded cost, a concurrency limit, token accounting and errors that say which
endpoint failed.

- Bounded cost (`CallLimits`): each HTTP request times out after `request_timeout_s`; the
  openai client itself retries connection errors, timeouts, HTTP 408/409/429 and 5xx up to
  `max_retries` times with exponential backoff and jitter; a reply that is not a chat
  completion (not JSON, wrong shape) is asked for again as often; and every attempt of a
  request together is cut at `step_deadline_s`. Other 4xx are the caller's bug and fail at
  once. The defaults keep a dead endpoint (accepts, never answers) to about a minute per
  episode: the first failing request ends it with an `LLMError`.
- Errors: an `LLMError` names the endpoint and model (never the key) and, when the client
  was made by a `ModelServer`, why the server is gone.
- Replies are capped at `max_reply_chars` (cut marked `…[cut N chars]`, `cap_text`) before
  they reach a prompt or a record: a server that ignores `max_tokens` cannot flood either.
- Concurrency: at most `concurrency` requests in flight per event loop (an
  `asyncio.Semaphore`); the openai client and the semaphore are made per event loop, so
  one `LLMClient` can be used from several `asyncio.run` calls. Time spent waiting for a
  slot is not the endpoint's and does not count against the deadline.
- Stop strings: the completion text ends before the first stop string, as the OpenAI API
  specifies (the transformers server leaves it in).
- `n`: servers that ignore `n` (the transformers server) get `n` requests instead, one after
  another with seeds `seed, seed+1, ...`, when the client is made with ``supports_n=False``.
  (That server seeds a process-global generator: seeded sampling repeats only while no
  other request overlaps.)
- `regex`: a reply's grammar (the policy's action, the world model's changes) goes to
  servers that constrain decoding to it (vLLM's ``structured_outputs``; the client is made
  with ``structured=True``); other servers get the request without it, and the caller's
  parser still checks the reply.
- `top_logprobs`: the first choice's tokens with their log-probabilities and the k likeliest
  alternatives at each (`Completion.token_logprobs`), from servers that return them (vLLM,
  OpenAI; the client is made with ``logprobs=True``); others get the request without and the
  completion has none. The world model's outcome probability is read from them.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from evolver_core.config import CallLimits
from evolver_core.contracts.errors import WebEvolverError
from evolver_core.contracts.text import cap_text

NO_KEY = "EMPTY"  # the openai package insists on a key; local servers ignore it
BAD_REPLY_ECHO_CHARS = 200  # how much of a reply that is not a chat completion an error repeats


_limits = CallLimits()  # the process's defaults: a round or a command sets them (`use_limits`)


def current_limits() -> CallLimits:
    """The limits new clients get unless given their own."""
    return _limits


@contextmanager
def use_limits(limits: CallLimits) -> Iterator[CallLimits]:
    """Make `limits` the default of every client made inside (process-wide: the stages of a
    round run in the flow's threads), and of the rollout's episode and page-step deadlines."""
    global _limits
    previous, _limits = _limits, limits
    try:
        yield limits
    finally:
        _limits = previous


class LLMError(WebEvolverError, RuntimeError):
    """A chat request failed for good (after retries, past its deadline, or a non-retryable 4xx)."""


class _BadReply(Exception):
    """The endpoint answered 2xx with something that is not a chat completion."""


@dataclass
class Usage:
    """Running totals of one client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token, its log-probability and the likeliest alternatives at its place
    (token text -> log-probability; the token itself among them)."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int
    completion_tokens: int
    messages: list[dict]  # what was sent
    model: str
    latency_s: float
    sampling: dict = field(default_factory=dict)  # temperature, top_p, max_tokens, stop, seed, n
    token_logprobs: tuple[TokenLogprob, ...] = ()  # of the first choice, when asked for and served

    @property
    def text(self) -> str:
        return self.texts[0]


def _retryable(exc: Exception) -> bool:
    """What the openai client retries by itself (its `_should_retry`, less the headers)."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code >= 500 or exc.status_code in (408, 409, 429))


def _describe(exc: Exception) -> str:
    what = f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else type(exc).__name__
    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{what}: {detail}"


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """`text` up to (not including) the first occurrence of any stop string."""
    cut = min((i for s in stop or () if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def _token_logprobs(choice: Any) -> tuple[TokenLogprob, ...]:
    """The tokens of a choice with their log-probabilities; () when the reply has none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None) or ()
    return tuple(TokenLogprob(token=t.token, logprob=t.logprob,
                              top={a.token: a.logprob for a in (t.top_logprobs or ())}) for t in content)


def _chat_completion(raw: Any) -> ChatCompletion:
    """The parsed reply of a raw openai response; `_BadReply` when it is not a chat completion
    (the openai client hands back the text of a non-JSON reply, or raises on broken JSON)."""
    try:
        reply = raw.parse()
    except ValueError as exc:  # JSONDecodeError
        raise _BadReply(f"invalid JSON ({exc})") from None
    choices = getattr(reply, "choices", None)
    if not isinstance(reply, ChatCompletion) or not isinstance(choices, list) or not choices \
            or not all(hasattr(c, "message") for c in choices):
        body = " ".join(raw.http_response.text[:BAD_REPLY_ECHO_CHARS].split())
        raise _BadReply(f"not a chat completion: {body!r}")
    return reply


def _backoff(attempt: int) -> float:
    """Before asking again after a bad reply: the openai client's schedule (0.5 s doubling, at
    most 8 s, up to 25% jitter off)."""
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


async def _close_at_loop_end(client: AsyncOpenAI) -> AsyncIterator[None]:
    """Closes `client` when its event loop shuts down: `asyncio.run` finalizes every live async
    generator (`loop.shutdown_asyncgens`) before closing the loop. Without it the client is
    garbage-collected later and schedules its close on whatever loop runs then, which fails
    with "Event loop is closed" in the middle of the next stage's log."""
    try:
        yield
    finally:
        await client.close()


class LLMClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 limits: CallLimits | None = None, concurrency: int = 4, supports_n: bool = True,
                 structured: bool = False, logprobs: bool = False, diagnose: Callable[[], str | None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.limits = limits or current_limits()
        self.concurrency = concurrency
        self.supports_n = supports_n
        self.structured = structured
        self.logprobs = logprobs  # the server returns token log-probabilities
        self.usage = Usage()
        self._api_key = api_key or NO_KEY
        self._diagnose = diagnose
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                  tuple[AsyncOpenAI, asyncio.Semaphore, AsyncIterator[None]]]
        self._per_loop = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.base_url!r}, model={self.model!r})"

    async def chat(self, messages: Sequence[dict], *, temperature: float = 0.0, top_p: float = 1.0,
                   max_tokens: int = 256, stop: Sequence[str] | None = None, seed: int | None = None, n: int = 1,
                   extra_body: dict | None = None, regex: str | None = None, top_logprobs: int = 0) -> Completion:
        """One chat completion (`n` choices), decoded within `regex` where the server can,
        with the `top_logprobs` likeliest alternatives of each token where the server gives
        them (module docstring). Raises `LLMError` when it cannot be had."""
        messages = [dict(m) for m in messages]
        if regex is not None and self.structured:
            extra_body = (extra_body or {}) | {"structured_outputs": {"regex": regex}}
        sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                    "stop": list(stop) if stop else None, "seed": seed, "n": n}
        if top_logprobs and self.logprobs:
            sampling |= {"logprobs": True, "top_logprobs": top_logprobs}
        t0 = time.monotonic()
        if n > 1 and not self.supports_n:  # one after another: the server's seed is process-global
            seeds = [None if seed is None else seed + i for i in range(n)]
            parts = [await self._request(messages, sampling | {"seed": s, "n": 1}, extra_body) for s in seeds]
        else:
            parts = [await self._request(messages, sampling, extra_body)]
        limit = self.limits.max_reply_chars
        return Completion(texts=[cap_text(cut_at_stop(c.message.content or "", stop), limit)
                                 for p in parts for c in p.choices],
                          finish_reasons=[c.finish_reason or "" for p in parts for c in p.choices],
                          prompt_tokens=sum(p.usage.prompt_tokens if p.usage else 0 for p in parts),
                          completion_tokens=sum(p.usage.completion_tokens if p.usage else 0 for p in parts),
                          messages=messages, model=self.model, latency_s=time.monotonic() - t0, sampling=sampling,
                          token_logprobs=_token_logprobs(parts[0].choices[0]))

    async def aclose(self) -> None:
        """Close the HTTP connections of the running event loop's client."""
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[2].aclose()  # runs the closer's `finally`

    # -- internals -------------------------------------------------------------------------
    async def _loop_state(self) -> tuple[AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key,
                                 timeout=self.limits.request_timeout_s, max_retries=self.limits.max_retries)
            closer = _close_at_loop_end(client)
            await closer.__anext__()
            self._per_loop[loop] = (client, asyncio.Semaphore(self.concurrency), closer)
        client, semaphore, _ = self._per_loop[loop]
        return client, semaphore

    async def _request(self, messages: list[dict], sampling: dict, extra_body: dict | None) -> ChatCompletion:
        """One request: the openai client's retries, ours for bad replies, all within the deadline."""
        client, semaphore = await self._loop_state()
        params = {k: v for k, v in sampling.items() if v is not None and not (k == "n" and v == 1)}
        sent = [0]  # HTTP requests answered so far (a counter `_attempts` adds to), for the error message
        async with semaphore:
            try:
                async with asyncio.timeout(self.limits.step_deadline_s):
                    response = await self._attempts(client, messages, params, extra_body, sent)
            except TimeoutError:
                raise self._error(f"no reply within the deadline of {self.limits.step_deadline_s:g} s "
                                  f"(request timeout {self.limits.request_timeout_s:g} s, "
                                  f"{self.limits.max_retries} retries)") from None
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                retried = self.limits.max_retries if _retryable(exc) else 0
                self.usage.retries += retried
                raise self._error(_describe(exc), sent[0] + retried + 1) from exc
        self.usage.requests += 1
        if response.usage is not None:
            self.usage.prompt_tokens += response.usage.prompt_tokens
            self.usage.completion_tokens += response.usage.completion_tokens
        return response

    async def _attempts(self, client: AsyncOpenAI, messages: list[dict], params: dict, extra_body: dict | None,
                        sent: list[int]) -> ChatCompletion:
        """Ask until the reply is a chat completion, at most 1 + `max_retries` times."""
        for attempt in range(self.limits.max_retries + 1):
            raw = await client.chat.completions.with_raw_response.create(model=self.model, messages=messages,
                                                                         extra_body=extra_body, **params)
            sent[0] += raw.retries_taken + 1
            self.usage.retries += raw.retries_taken
            try:
                return _chat_completion(raw)
            except _BadReply as exc:
                bad = exc
            if attempt < self.limits.max_retries:
                self.usage.retries += 1
                await asyncio.sleep(_backoff(attempt))
        raise self._error(f"the reply is {bad}", sent[0])

    def _error(self, what: str, attempts: int | None = None) -> LLMError:
        self.usage.failures += 1
        after = f" after {attempts} attempt(s)" if attempts else ""
        message = f"chat request to {self.base_url} (model {self.model!r}) failed{after}: {what}"
        if self._diagnose is not None and (why := self._diagnose()):
            message += f"\n{why}"
        return LLMError(message)
