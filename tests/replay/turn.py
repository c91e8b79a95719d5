"""The agent's turns as the session streams them (API_WIRE.md §2.4), written event by event.

Each step of a script is one model request: `span.model_request_start`, an `agent.thinking`
when the step thinks, the agent's text (previewed as `event_start` + `event_delta` fragments,
then the whole `agent.message`), an `agent.tool_use` and `span.model_request_end`; then the
tool really runs in the `Sandbox` and its output becomes the `agent.tool_result`, with
heartbeat comments while a long run is silent. A turn ends with a `session.usage` snapshot
(cumulative over the session) and `session.status_idle`, unless the `Scenario` ends it another
way. Token counts follow the prompt cache: each request reads what earlier ones cached.
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
HEARTBEAT_MS = 5_000  # a comment on the stream every 5 s of silence (the bytes are undocumented)
ENDLESS_MS = 500  # the heartbeats of a turn that never ends
TOOLSET_TOKENS = 2_200  # what the tool definitions add to every request, roughly
# Scripted list prices (USD per million tokens, and per session-hour), for a plausible list_cost.
PRICES = {"input": 3.0, "cache_write": 3.75, "cache_read": 0.30, "output": 15.0, "hour": 0.08}


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
    """What one turn produced: the stream as sent, the events it persisted, how it ended."""

    stream: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "idle"  # what sessions.retrieve says afterwards
    ending: str = "end_turn"  # the stop reason, "terminated", or "open" (the turn never ends)


class Agent:
    """The scripted agent of one session, across its turns: its context, usage and sandbox."""

    def __init__(
        self, ids: Ids, clock: Clock, scenario: Scenario, box: Sandbox, system: str, budget: dict
    ):
        self.ids, self.clock, self.scenario, self.box = ids, clock, scenario, box
        self.budget = budget  # the session's, echoed by every session.usage
        self.context, self.cached = len(system) // 4 + TOOLSET_TOKENS, 0  # tokens
        self.usage = {"input": 0, "cache_write": 0, "cache_read": 0, "output": 0, "ms": 0}
        self.turn = Turn()

    def run(self, steps: list[dict[str, Any]], user_event: dict[str, Any], last: bool) -> Turn:
        """One turn; `last` is whether the scenario's ending (if any) belongs to this turn."""
        sc, self.turn = self.scenario, Turn()
        started = self.clock.now
        self.context += len(json.dumps(user_event)) // 4
        self.emit(40, dict(user_event))
        self.emit((80, 200), {"type": "session.status_running"})
        for step_no, step in enumerate(steps):
            if last and step_no == sc.at:
                if self._end_early(step):
                    break
                if sc.unknown_event:
                    self.emit((100, 200), dict(sc.unknown_event))
                if (
                    sc.ending == "error_retrying" or sc.lost_preview
                ):  # a request fails; the platform retries
                    self.model_request(sc.lost_preview, None, failed=True)
                    self.session_error(
                        "model_overloaded_error", "The model is overloaded; retrying.", "retrying"
                    )
            tool_use = self.model_request(
                step.get("say"), step.get("tool"), think=step.get("think", False)
            )
            if tool_use is None:
                self.go_idle({"type": "end_turn"}, started)
                break
            self.run_tool(tool_use, step.get("seconds"))
            if last and step_no == sc.at and sc.ending == "budget_reached":
                self.go_idle({"type": "budget_reached"}, started)
                break
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
        self, say: str | None, tool: dict | None, failed=False, ask=False, think=False
    ) -> dict | None:
        """One model request; returns its agent.tool_use event, if it asked for a tool."""
        start = self.emit((60, 160), {"type": "span.model_request_start"})
        if think:
            self.emit((900, 1800), {"type": "agent.thinking"})
        tool_use = None
        if say:
            self.say(say, sent=not failed)
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
        write = 0 if failed else self.context - self.cached
        model_usage = {
            "input_tokens": 0 if failed else 3,
            "output_tokens": out,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": 0 if failed else self.cached,
        }
        self._count(model_usage)
        end = {
            "type": "span.model_request_end",
            "model_request_start_id": start["id"],
            "is_error": failed,
        }
        self.emit((15, 40), {**end, "model_usage": model_usage})
        if not failed:
            self.cached = self.context
            self.context += out
        return tool_use

    def say(self, text: str, sent: bool = True) -> None:
        """An agent.message previewed as event_start + event_delta fragments first; a request
        that fails after its preview (`sent=False`) never sends the message itself."""
        message_id = self.ids("sevt")
        start = {"type": "event_start", "event": {"type": "agent.message", "id": message_id}}
        self.emit((2200, 4200), start, persisted=False)
        for n, fragment in enumerate(self._fragments(text)):
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
            if n == 0 and self.scenario.odd_deltas:
                self._odd_previews(message_id)
        if sent:
            self.emit(
                (20, 50),
                {
                    "id": message_id,
                    "type": "agent.message",
                    "content": [{"type": "text", "text": text}],
                },
            )

    def run_tool(self, tool_use: dict[str, Any], seconds: float | None = None) -> None:
        text, is_error = self.box.run(tool_use["name"], tool_use["input"])
        self.context += len(text) // 4
        if seconds:  # a long run: the stream stays open with heartbeats until the result
            for _ in range(int(seconds * 1000) // HEARTBEAT_MS):
                self.clock.tick(HEARTBEAT_MS)
                self.turn.stream.append({"delay_ms": HEARTBEAT_MS, "comment": "heartbeat"})
        result = {"type": "agent.tool_result", "tool_use_id": tool_use["id"], "is_error": is_error}
        slow = tool_use["name"] == "bash"
        self.emit(
            (900, 2200) if slow else (60, 180),
            {**result, "content": [{"type": "text", "text": text}]},
        )

    def session_error(self, error_type: str, message: str, retry: str) -> None:
        error = {"type": error_type, "message": message, "retry_status": {"type": retry}}
        self.emit((300, 900), {"type": "session.error", "error": error})

    def go_idle(self, stop_reason: dict, started: datetime, **extra: Any) -> None:
        self.usage["ms"] += int((self.clock.now - started).total_seconds() * 1000)
        usage = self.snapshot()
        if stop_reason["type"] == "budget_reached":  # the scenario's cap must really be reached
            spent, cap = (
                int(usage["list_cost"]["amount"]),
                int(self.budget["max_list_cost"]["amount"]),
            )
            assert spent >= cap, f"budget_reached at {spent} cents, below the {cap}-cent budget"
        self.emit((60, 120), {"type": "session.usage", "usage": usage, "budget": self.budget})
        self.emit((10, 30), {"type": "session.status_idle", "stop_reason": stop_reason, **extra})
        self.turn.ending = stop_reason["type"]

    def snapshot(self) -> dict[str, Any]:
        """The session's cumulative usage, as `session.usage` and `sessions.retrieve` show it."""
        u, hours = self.usage, self.usage["ms"] / 3_600_000
        cost = sum(u[k] * PRICES[k] for k in ("input", "cache_write", "cache_read", "output")) / 1e6
        cents = round((cost + hours * PRICES["hour"]) * 100)
        return {
            "input_tokens": u["input"],
            "output_tokens": u["output"],
            "cache_read_input_tokens": u["cache_read"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": u["cache_write"],
                "ephemeral_1h_input_tokens": 0,
            },
            "list_cost": {"amount": str(cents), "currency": "USD"},
            "active_seconds": round(u["ms"] / 1000, 3),
        }

    def _count(self, model_usage: dict[str, int]) -> None:
        self.usage["input"] += model_usage["input_tokens"]
        self.usage["output"] += model_usage["output_tokens"]
        self.usage["cache_write"] += model_usage["cache_creation_input_tokens"]
        self.usage["cache_read"] += model_usage["cache_read_input_tokens"]

    def _fragments(self, text: str) -> list[str]:
        """The text in fragments of 2-5 words; with odd deltas, a surrogate pair split in two."""
        words = re.findall(r"\S+\s*|\s+", text)
        fragments = []
        while words:
            size = self.clock.rng.randint(2, 5)
            fragments.append("".join(words[:size]))
            words = words[size:]
        if self.scenario.odd_deltas:  # each astral character cut inside its surrogate pair
            fragments = [piece for f in fragments for piece in _split_astral(f)]
        return fragments

    def _odd_previews(self, message_id: str) -> None:
        """Preview frames the SDK does not know: a delta of another type, a preview of another event."""
        odd = {"type": "citation_delta", "index": 0, "citation": {"title": "x"}}
        self.emit(
            30, {"type": "event_delta", "event_id": message_id, "delta": odd}, persisted=False
        )
        other = {"type": "event_start", "event": {"type": "agent.hologram", "id": self.ids("sevt")}}
        self.emit(30, other, persisted=False)

    def _end_early(self, step: dict[str, Any]) -> bool:
        """Scenario endings that stop the turn before this step's work; True if the turn ended."""
        started = self.clock.now
        match self.scenario.ending:
            case "retries_exhausted":
                for retry in ("retrying", "retrying", "exhausted"):
                    self.model_request(None, None, failed=True)
                    self.session_error("model_overloaded_error", "The model is overloaded.", retry)
                self.go_idle({"type": "retries_exhausted"}, started)
            case "requires_action":
                tool_use = self.model_request(step.get("say"), step.get("tool"), ask=True)
                self.go_idle({"type": "requires_action", "event_ids": [tool_use["id"]]}, started)
            case "refusal":
                self.model_request(None, None)
                explanation = "The request was declined by the model."
                details = {"type": "refusal", "category": None, "explanation": explanation}
                self.go_idle({"type": "refusal"}, started, stop_details=details)
            case "terminated":
                self.session_error(
                    "unknown_error", "The session's container stopped unexpectedly.", "terminal"
                )
                self.emit((40, 90), {"type": "session.status_terminated"})
                self.turn.status, self.turn.ending = "terminated", "terminated"
            case "open":  # the agent is still at work: a minute of heartbeats, and no end
                self.turn.stream += [
                    {"delay_ms": ENDLESS_MS, "comment": "heartbeat"} for _ in range(120)
                ]
                self.turn.status, self.turn.ending = "running", "open"
            case _:
                return False
        return True


def _split_astral(fragment: str) -> list[str]:
    """A fragment cut inside each surrogate pair: the two halves travel in two deltas."""
    pieces, current = [], ""
    for char in fragment:
        if ord(char) > 0xFFFF:
            high, low = char.encode("utf-16-le")[:2], char.encode("utf-16-le")[2:]
            pieces.append(current + high.decode("utf-16-le", "surrogatepass"))
            current = low.decode("utf-16-le", "surrogatepass")
        else:
            current += char
    return [*pieces, current] if current or not pieces else pieces
