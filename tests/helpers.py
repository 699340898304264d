"""Helpers the test modules share (fixtures that set something up live in `conftest.py`):
records with every kind of value, a protocol-level fake of an OpenAI chat endpoint, and the
overrides that make a round tiny."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from evolver_core.contracts.episode import trajectory_id
from evolver_core.data.records import StepRecord, TrajectoryRecord, canonical_json
from evolver_core.llm import CallLimits, LLMClient

# A round's overrides that keep it to seconds: two training steps, two test tasks.
TINY_ROUND = {"training.max_steps": 2, "test_tasks": 2}

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
SAMPLING = canonical_json({"temperature": 0.7, "top_p": 0.95, "seed": 3, "max_tokens": 256})


def make_step(**overrides: object) -> StepRecord:
    """A step record with every kind of value: unicode, newlines, nulls, non-UTC times."""
    fields = dict(
        run_id="run-1",
        round=0,
        stage="sample",
        task_id="login-user",
        suite="miniwob",
        site="miniwob",
        query="Log in as «ünïcode» user\nthen stop",
        trajectory_id=trajectory_id("login-user", 0),
        sample=0,
        step=0,
        url="http://127.0.0.1:8000/miniwob/login-user.html",
        observation="[1] RootWebArea 'Login'\n\t[2] textbox 'Username'",
        thought="I type the user name.",
        action_raw="type [2] [alice] [press_enter_after=0]",
        action="type [2] [alice] [press_enter_after=0]",
        action_valid=True,
        error=None,
        model="smollm2-135m",
        sampling=SAMPLING,
        prompt_tokens=312,
        completion_tokens=29,
        started_at=T0,
        ended_at=T0.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=3),
        prompt=canonical_json([{"role": "user", "content": "..."}]),
        response="Thought: I type the user name.\nAction: type [2] [alice] [press_enter_after=0]",
        screenshot="file:///data/runs/run-1/round=0/sample/screenshots/login-user_0-abc/0.png",
    )
    fields.update(overrides)
    return StepRecord(**fields)  # type: ignore[arg-type]


def make_trajectory(**overrides: object) -> TrajectoryRecord:
    fields = dict(
        run_id="run-1",
        round=0,
        stage="sample",
        trajectory_id=trajectory_id("login-user", 0),
        task_id="login-user",
        suite="miniwob",
        site="miniwob",
        split="train",
        query="Log in as «ünïcode» user",
        sample=0,
        seed=2**40,
        source="real",
        model="smollm2-135m",
        n_steps=2,
        final_answer=None,
        stop_reason="stop",
        judge_verdict=1,
        judge_reasoning="The user is logged in.",
        gold_reward=1.0,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=9),
        prompt_tokens=700,
        completion_tokens=60,
    )
    fields.update(overrides)
    return TrajectoryRecord(**fields)  # type: ignore[arg-type]


Responder = Callable[[list[dict]], str]
# A responder may also give the log-probabilities of the reply's tokens, as vLLM returns them
# when asked (`logprobs`/`top_logprobs`): {"content": str, "logprobs": {"content": [...]}}.


class ChatServer:
    """An OpenAI chat-completions server on 127.0.0.1 whose replies come from `respond(messages)`:
    a protocol-level fake of a remote endpoint. Each reply is computed from its request (so
    concurrent requests get role-appropriate answers in any order); every request body is kept."""

    def __init__(self, respond: Responder, model: str):
        self.bodies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # /v1/models
                self._send({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "test"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.bodies.append(body)
                reply = respond(body["messages"])
                content, logprobs = (reply["content"], reply["logprobs"]) if isinstance(reply, dict) else (reply, None)
                self._send({"id": "x", "object": "chat.completion", "created": 0, "model": model,
                            "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": content},
                                         "logprobs": logprobs if body.get("logprobs") else None}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}})

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.client = LLMClient(f"http://127.0.0.1:{self.httpd.server_address[1]}/v1", model,
                                limits=CallLimits(max_retries=0))

    def texts(self) -> str:
        """Everything the server was sent, as one string."""
        return json.dumps(self.bodies)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def page_number(text: str) -> int:
    """The number of the (last) page shown in `text`, 0 when none is."""
    found = re.findall(r"RootWebArea 'Page (\d+)'", text)
    return int(found[-1]) if found else 0
