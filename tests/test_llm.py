"""The LLM client against a real server (the tiny model) and a scripted fake endpoint:
completions and usage, stop strings, n, retries (also across a killed server), errors."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from evolver_core.llm import CallLimits, LLMClient, LLMError, cut_at_stop
from evolver_core.models.refs import ModelRef
from fixtures_models import FakeEndpoint, gone
from infra.model_server import ModelServer, TransformersServer, free_port

HELLO = [{"role": "user", "content": "hello"}]


async def test_real_completion_with_usage(tiny_server: ModelServer) -> None:
    client = tiny_server.client()
    reply = await client.chat(HELLO, max_tokens=12, temperature=0.0)
    assert reply.completion_tokens == 12 and reply.prompt_tokens > 0
    assert reply.finish_reasons == ["length"]
    assert reply.messages == HELLO and reply.model == tiny_server.model and reply.latency_s > 0
    assert reply.sampling == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 12, "stop": None, "seed": None, "n": 1}
    again = await client.chat(HELLO, max_tokens=12, temperature=0.0)
    assert again.text == reply.text  # greedy is deterministic
    assert (client.usage.requests, client.usage.completion_tokens) == (2, 24)
    assert client.usage.prompt_tokens == 2 * reply.prompt_tokens


async def test_stop_strings_are_cut_like_the_openai_api(tiny_server: ModelServer) -> None:
    client = tiny_server.client()
    full = (await client.chat(HELLO, max_tokens=40)).text
    stop = full.strip()[:3]
    assert stop, full
    cut = await client.chat(HELLO, max_tokens=40, stop=[stop])
    assert cut.text == full[:full.index(stop)]
    assert cut_at_stop("abcXYdefXY", ["XY", "d"]) == "abc" and cut_at_stop("abc", None) == "abc"


async def test_n_is_fanned_out_with_distinct_seeds(tiny_server: ModelServer) -> None:
    client = tiny_server.client()  # the transformers server ignores n: the client asks n times
    reply = await client.chat(HELLO, max_tokens=8, temperature=1.0, seed=3, n=3)
    assert len(reply.texts) == 3 and len(set(reply.texts)) > 1
    assert reply.completion_tokens == 24
    same = await client.chat(HELLO, max_tokens=8, temperature=1.0, seed=3, n=3)
    assert same.texts == reply.texts  # seeded sampling repeats


async def test_native_n_is_sent_to_servers_that_support_it(fake_endpoint: FakeEndpoint) -> None:
    client = LLMClient(fake_endpoint.base_url, "m")
    await client.chat(HELLO, n=2, seed=1, stop=["\n"], extra_body={"guided_regex": "x"})
    (request,) = fake_endpoint.requests
    assert request.body["n"] == 2 and request.body["seed"] == 1 and request.body["stop"] == ["\n"]
    assert request.body["guided_regex"] == "x"
    await client.chat(HELLO)
    assert "n" not in fake_endpoint.requests[-1].body and "seed" not in fake_endpoint.requests[-1].body


async def test_a_regex_reaches_only_servers_with_structured_outputs(fake_endpoint: FakeEndpoint) -> None:
    await LLMClient(fake_endpoint.base_url, "m", structured=True).chat(HELLO, regex="a+")
    await LLMClient(fake_endpoint.base_url, "m").chat(HELLO, regex="a+")
    constrained, free = fake_endpoint.requests
    assert constrained.body["structured_outputs"] == {"regex": "a+"} and "structured_outputs" not in free.body


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_retries_server_errors_and_rate_limits(fake_endpoint: FakeEndpoint, status: int) -> None:
    fake_endpoint.script += [(status, {"error": "busy"})] * 2
    client = LLMClient(fake_endpoint.base_url, "m", limits=CallLimits(max_retries=3))
    reply = await client.chat(HELLO)
    assert reply.text == "Thought: ok\nAction: wait"
    assert len(fake_endpoint.requests) == 3
    assert (client.usage.retries, client.usage.requests, client.usage.failures) == (2, 1, 0)


async def test_no_retry_on_client_errors(tiny_server: ModelServer) -> None:
    client = tiny_server.client(model="not-the-served-model")
    with pytest.raises(LLMError, match="HTTP 400") as info:
        await client.chat(HELLO, max_tokens=4)
    assert "after 1 attempt" in str(info.value)
    assert (client.usage.retries, client.usage.failures) == (0, 1)


async def test_clear_error_after_max_retries_never_showing_the_key() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    secret = "sk-never-print-me-42"
    client = LLMClient(base_url, "m", api_key=secret, limits=CallLimits(max_retries=2, request_timeout_s=2))
    with pytest.raises(LLMError) as info:
        await client.chat(HELLO)
    message = str(info.value)
    assert base_url in message and "after 3 attempt(s)" in message and "APIConnectionError" in message
    assert secret not in message + repr(client)
    assert client.usage.retries == 2


async def test_concurrency_is_bounded(fake_endpoint: FakeEndpoint) -> None:
    fake_endpoint.delay_s = 0.2
    client = LLMClient(fake_endpoint.base_url, "m", concurrency=2)
    await asyncio.gather(*(client.chat(HELLO) for _ in range(6)))
    assert fake_endpoint.max_in_flight == 2
    assert client.usage.requests == 6 and client.usage.prompt_tokens == 6 * 7


def test_one_client_serves_several_event_loops(fake_endpoint: FakeEndpoint) -> None:
    client = LLMClient(fake_endpoint.base_url, "m")
    for _ in range(2):
        assert asyncio.run(client.chat(HELLO)).text == "Thought: ok\nAction: wait"


async def test_retry_survives_a_server_killed_mid_request(tiny_ref: ModelRef, models_cache: Path,
                                                          server_logs: Path) -> None:
    """SIGKILL the server while a request is in flight, start a new one on the same port:
    the client's retries reach the new server and the request succeeds."""
    port = free_port()
    first = TransformersServer(tiny_ref, cache_dir=models_cache, log_dir=server_logs, port=port).start()
    first_pid = first.pid
    client = first.client(limits=CallLimits(max_retries=30, request_timeout_s=60, step_deadline_s=600))
    try:
        request = asyncio.create_task(client.chat(HELLO, max_tokens=800))
        while "Request received" not in first.log_path.read_text():  # the request is being generated
            await asyncio.sleep(0.02)
        assert not request.done()
        os.killpg(first_pid, signal.SIGKILL)
        t0 = time.monotonic()
        while first.failure() is None and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.1)
        assert "exited with code -9" in (first.failure() or "")
        second = TransformersServer(tiny_ref, cache_dir=models_cache, log_dir=server_logs, port=port)
        with await asyncio.to_thread(second.start):
            second_pid = second.pid
            reply = await asyncio.wait_for(request, timeout=120)
    finally:
        first.stop()
    assert all(gone(pid) for pid in (first_pid, second_pid))  # no orphans
    assert reply.completion_tokens == 800
    assert client.usage.retries >= 1 and client.usage.failures == 0


async def test_a_server_that_dies_later_is_reported(tiny_ref: ModelRef, models_cache: Path,
                                                    server_logs: Path) -> None:
    with TransformersServer(tiny_ref, cache_dir=models_cache, log_dir=server_logs) as server:
        client = server.client(limits=CallLimits(max_retries=1))
        pid = server.pid
        os.killpg(pid, signal.SIGKILL)
        server.process.wait()
        why = server.failure()
        assert why is not None and "exited with code -9" in why and "Uvicorn running" in why  # log tail
        with pytest.raises(LLMError) as info:
            await client.chat(HELLO, max_tokens=4)
    assert why in str(info.value)  # the client's error says why the server is gone
    assert gone(pid)
