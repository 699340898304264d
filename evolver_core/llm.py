"""One chat client for every model role (policy, world model, judge, scorer).

Why one client: every role talks to an OpenAI-compatible endpoint (our CPU server, vLLM,
or a hosted API), and all of them need the same operational care that the reference
lacked: timeouts, bounded retries with backoff, a concurrency limit, token accounting and
errors that say which endpoint failed.

- Retries: connection errors, timeouts, HTTP 5xx and 429 are retried up to `max_retries`
  times with exponential backoff and jitter; other 4xx are the caller's bug and fail at
  once. After the last try an `LLMError` names the endpoint and model (never the key) and,
  when the client was made by a `ModelServer`, why the server is gone.
- Concurrency: at most `concurrency` requests in flight per event loop (an
  `asyncio.Semaphore`); the openai client and the semaphore are made per event loop, so
  one `LLMClient` can be used from several `asyncio.run` calls.
- Stop strings: the completion text ends before the first stop string, as the OpenAI API
  specifies (the transformers server leaves it in).
- `n`: servers that ignore `n` (the transformers server) get `n` requests instead, one after
  another with seeds `seed, seed+1, ...`, when the client is made with ``supports_n=False``.
  (That server seeds a process-global generator: seeded sampling repeats only while no
  other request overlaps.)
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI

NO_KEY = "EMPTY"  # the openai package insists on a key; local servers ignore it


class LLMError(RuntimeError):
    """A chat request failed for good (after retries, or with a non-retryable 4xx)."""


@dataclass
class Usage:
    """Running totals of one client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0


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

    @property
    def text(self) -> str:
        return self.texts[0]


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    return isinstance(exc, openai.APIStatusError) and (exc.status_code >= 500 or exc.status_code == 429)


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    """`text` up to (not including) the first occurrence of any stop string."""
    cut = min((i for s in stop or () if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


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
    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout_s: float = 120.0,
                 max_retries: int = 3, concurrency: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 supports_n: bool = True, diagnose: Callable[[], str | None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.supports_n = supports_n
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
                   extra_body: dict | None = None) -> Completion:
        """One chat completion (`n` choices). Raises `LLMError` when it cannot be had."""
        messages = [dict(m) for m in messages]
        sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                    "stop": list(stop) if stop else None, "seed": seed, "n": n}
        t0 = time.monotonic()
        if n > 1 and not self.supports_n:  # one after another: the server's seed is process-global
            seeds = [None if seed is None else seed + i for i in range(n)]
            parts = [await self._request(messages, sampling | {"seed": s, "n": 1}, extra_body) for s in seeds]
        else:
            parts = [await self._request(messages, sampling, extra_body)]
        return Completion(texts=[cut_at_stop(c.message.content or "", stop) for p in parts for c in p.choices],
                          finish_reasons=[c.finish_reason or "" for p in parts for c in p.choices],
                          prompt_tokens=sum(p.usage.prompt_tokens if p.usage else 0 for p in parts),
                          completion_tokens=sum(p.usage.completion_tokens if p.usage else 0 for p in parts),
                          messages=messages, model=self.model, latency_s=time.monotonic() - t0, sampling=sampling)

    async def aclose(self) -> None:
        """Close the HTTP connections of the running event loop's client."""
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state[2].aclose()  # runs the closer's `finally`

    # -- internals -------------------------------------------------------------------------
    async def _loop_state(self) -> tuple[AsyncOpenAI, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=0)
            closer = _close_at_loop_end(client)
            await closer.__anext__()
            self._per_loop[loop] = (client, asyncio.Semaphore(self.concurrency), closer)
        client, semaphore, _ = self._per_loop[loop]
        return client, semaphore

    async def _request(self, messages: list[dict], sampling: dict, extra_body: dict | None):
        client, semaphore = await self._loop_state()
        params = {k: v for k, v in sampling.items() if v is not None and not (k == "n" and v == 1)}
        attempt = 0
        while True:
            try:
                async with semaphore:
                    response = await client.chat.completions.create(model=self.model, messages=messages,
                                                                    extra_body=extra_body, **params)
            except (openai.APIConnectionError, openai.APIStatusError) as exc:
                if not _retryable(exc) or attempt == self.max_retries:
                    self.usage.failures += 1
                    raise self._error(exc, attempt + 1) from exc
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                self.usage.retries += 1
                continue
            self.usage.requests += 1
            if response.usage is not None:
                self.usage.prompt_tokens += response.usage.prompt_tokens
                self.usage.completion_tokens += response.usage.completion_tokens
            return response

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return delay / 2 + random.uniform(0, delay / 2)

    def _error(self, exc: Exception, attempts: int) -> LLMError:
        what = f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else type(exc).__name__
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        message = (f"chat request to {self.base_url} (model {self.model!r}) failed after {attempts} "
                   f"attempt(s): {what}: {detail}")
        if self._diagnose is not None and (why := self._diagnose()):
            message += f"\n{why}"
        return LLMError(message)
