"""The agent's turn as the session streams it (API_WIRE.md §2.4), written event by event.

Each step of a script is one model request: `span.model_request_start`, the agent's text
(previewed as `event_start` + `event_delta` fragments, then the whole `agent.message`), an
`agent.tool_use`, `span.model_request_end`, then the tool really runs in the `Sandbox` and
its output becomes the `agent.tool_result`. The turn ends with `session.usage` and
`session.status_idle`, unless the `Scenario` ends it another way.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .sandbox import Sandbox
from .scenarios import Scenario

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
Delay = int | tuple[int, int]  # milliseconds, fixed or drawn from a range


class Ids:
    """Deterministic ids that look like the API's (`sevt_011C...`)."""

    def __init__(self, seed: str):
        self.seed, self.count = seed, 0

    def __call__(self, prefix: str) -> str:
        self.count += 1
        digest = int.from_bytes(
            hashlib.sha256(f"{self.seed}/{prefix}/{self.count}".encode()).digest()
        )
        tail = "".join(B62[(digest >> (6 * i)) % 62] for i in range(22))
        return f"{prefix}_011C{tail}"


@dataclass
class Clock:
    now: datetime
    rng: random.Random

    def tick(self, delay: Delay) -> int:
        """Advance by a delay (drawn from the range, if one is given) and return it."""
        ms = self.rng.randint(*delay) if isinstance(delay, tuple) else delay
        self.now += timedelta(milliseconds=ms)
        return ms

    def stamp(self) -> str:
        return self.now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.now.microsecond // 1000:03d}Z"


@dataclass
class Turn:
    """What the agent's turn produced: the stream as sent, the persisted history, the ending."""

    stream: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "idle"  # what sessions.retrieve says afterwards
    ended: bool = True  # does the stream carry the end of the turn?


class AgentTurn:
    def __init__(
        self, ids: Ids, clock: Clock, scenario: Scenario, box: Sandbox, system_prompt: str
    ):
        self.ids, self.clock, self.scenario, self.box = ids, clock, scenario, box
        self.turn = Turn()
        self.usage = {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0}
        self.context = [
            len(system_prompt)
        ]  # characters the model has seen, for plausible token counts

    def run(self, steps: list[dict[str, Any]], user_event: dict[str, Any]) -> Turn:
        sc = self.scenario
        self.context.append(len(json.dumps(user_event)))
        self.emit(40, dict(user_event))
        self.emit((80, 200), {"type": "session.status_running"})
        if sc.extra_steps:
            steps = steps[: sc.extra_at] + sc.extra_steps + steps[sc.extra_at :]
        for step_no, step in enumerate(steps):
            if step_no == sc.at and self._end_early(step):
                break
            if step_no == sc.at and sc.unknown_event:
                self.emit((100, 200), dict(sc.unknown_event))
            if step_no == sc.at and sc.ending == "error_retrying":
                self.model_request(None, None, failed=True)
                self.session_error(
                    "model_overloaded_error", "The model is overloaded; retrying.", "retrying"
                )
            tool_use = self.model_request(step.get("say"), step.get("tool"))
            if tool_use is None:
                self.go_idle({"type": "end_turn"})
                break
            self.run_tool(tool_use)
            if step_no == sc.at and sc.ending == "budget_reached":
                self.go_idle({"type": "budget_reached"})
                break
        if sc.stream_cut:
            self._cut()
        return self.turn

    def emit(self, delay: Delay, data: dict[str, Any], persisted: bool = True) -> dict[str, Any]:
        """Add one event to the stream and, unless it is a preview, to the history."""
        gap = self.clock.tick(delay)
        if persisted:
            data = {
                "id": data.pop("id", None) or self.ids("sevt"),
                **data,
                "processed_at": self.clock.stamp(),
            }
            self.turn.history.append(data)
        self.turn.stream.append({"delay_ms": gap, "event": data["type"], "data": data})
        return data

    def model_request(
        self, say: str | None, tool: dict | None, failed=False, ask=False
    ) -> dict | None:
        """One model request; returns its agent.tool_use event, if it asked for a tool."""
        start = self.emit((60, 160), {"type": "span.model_request_start"})
        tool_use = None
        if say:
            self.say(say)
        if tool:
            permission = {"evaluated_permission": "allow", "evaluation": {"type": "always_allow"}}
            if ask:  # a tool that waits for the user's confirmation
                permission = {"evaluated_permission": "ask", "evaluation": {"type": "always_ask"}}
            tool_use = self.emit(
                (400, 900) if say else (2000, 3500),
                {
                    "type": "agent.tool_use",
                    "name": tool["name"],
                    "input": tool["input"],
                    **permission,
                },
            )
        out = 0 if failed else 12 + (len(say or "") + len(json.dumps(tool or {}))) // 4
        inp = 0 if failed else sum(self.context) // 4 + 2200
        self.usage["input_tokens"] += inp
        self.usage["output_tokens"] += out
        model_usage = {
            "input_tokens": inp,
            "output_tokens": out,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        end = {
            "type": "span.model_request_end",
            "model_request_start_id": start["id"],
            "is_error": failed,
        }
        self.emit((15, 40), {**end, "model_usage": model_usage})
        self.context.append(out * 4)
        return tool_use

    def say(self, text: str) -> None:
        """An agent.message, previewed as event_start + event_delta fragments first."""
        message_id = self.ids("sevt")
        start = {"type": "event_start", "event": {"type": "agent.message", "id": message_id}}
        self.emit((2200, 4200), start, persisted=False)
        words = re.findall(r"\S+\s*|\s+", text)
        while words:
            size = self.clock.rng.randint(2, 5)
            fragment, words = "".join(words[:size]), words[size:]
            delta = {
                "type": "content_delta",
                "index": 0,
                "content": {"type": "text", "text": fragment},
            }
            self.emit(
                (35, 80),
                {"type": "event_delta", "event_id": message_id, "delta": delta},
                persisted=False,
            )
        self.emit(
            (20, 50),
            {
                "id": message_id,
                "type": "agent.message",
                "content": [{"type": "text", "text": text}],
            },
        )

    def run_tool(self, tool_use: dict[str, Any]) -> None:
        text, is_error = self.box.run(tool_use["name"], tool_use["input"])
        self.context.append(len(text))
        result = {"type": "agent.tool_result", "tool_use_id": tool_use["id"], "is_error": is_error}
        slow = tool_use["name"] == "bash"
        self.emit(
            (900, 2200) if slow else (60, 180),
            {**result, "content": [{"type": "text", "text": text}]},
        )

    def session_error(self, error_type: str, message: str, retry: str) -> None:
        error = {"type": error_type, "message": message, "retry_status": {"type": retry}}
        self.emit((300, 900), {"type": "session.error", "error": error})

    def go_idle(self, stop_reason: dict, **extra: Any) -> None:
        self.emit((60, 120), {"type": "session.usage", "usage": dict(self.usage)})
        self.emit((10, 30), {"type": "session.status_idle", "stop_reason": stop_reason, **extra})

    def _end_early(self, step: dict[str, Any]) -> bool:
        """Scenario endings that stop the turn before this step's work; True if the turn ended."""
        match self.scenario.ending:
            case "retries_exhausted":
                for retry in ("retrying", "retrying", "exhausted"):
                    self.model_request(None, None, failed=True)
                    self.session_error("model_overloaded_error", "The model is overloaded.", retry)
                self.go_idle({"type": "retries_exhausted"})
            case "requires_action":
                tool_use = self.model_request(step.get("say"), step.get("tool"), ask=True)
                self.go_idle({"type": "requires_action", "event_ids": [tool_use["id"]]})
            case "refusal":
                self.model_request(None, None)
                explanation = "The request was declined by the model."
                self.go_idle(
                    {"type": "refusal"},
                    stop_details={"type": "refusal", "category": None, "explanation": explanation},
                )
            case "terminated":
                self.session_error(
                    "unknown_error", "The session's container stopped unexpectedly.", "terminal"
                )
                self.emit((40, 90), {"type": "session.status_terminated"})
                self.turn.status = "terminated"
            case _:
                return False
        return True

    def _cut(self) -> None:
        """The stream breaks part-way; the history (what events.list returns) stays whole."""
        kind, percent = self.scenario.stream_cut
        stream = self.turn.stream
        at = len(stream) * percent // 100
        self.turn.ended = False
        if kind == "stall":
            for event in stream:
                event["delay_ms"] = 0
            stream[at]["delay_ms"] = 600_000
        else:
            del stream[at:]
        if kind == "error_frame":
            error = {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            stream.append({"delay_ms": 40, "event": "error", "data": error})
