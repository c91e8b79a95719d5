"""Ways a turn can go wrong, as variations of the scripted session (see issue: failure paths).

Each scenario bends the same script: where (`at`, a step number) and how the turn ends,
whether the stream breaks part-way (`stream_cut`: kind and how far in, in percent), an HTTP
error in place of a create call, or extra steps and events with hostile content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOSTILE_TEXT = (
    "Odd output <script>alert('xss')</script> <img src=x onerror=alert(1)> \x1b[31mred\x1b[0m"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    at: int = 2
    ending: str | None = None
    stream_cut: tuple[str, int] | None = None
    http_error: tuple[str, int, str, str] | None = None
    extra_steps: list[dict[str, Any]] = field(default_factory=list)
    extra_at: int = 1
    unknown_event: dict[str, Any] | None = None


SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "error_retrying",
            "a session.error that the platform retries; the turn recovers",
            ending="error_retrying",
        ),
        Scenario(
            "retries_exhausted",
            "session.error until retries are exhausted; idle with stop_reason retries_exhausted",
            ending="retries_exhausted",
        ),
        Scenario(
            "requires_action",
            "a tool call waits for confirmation: idle with requires_action",
            ending="requires_action",
        ),
        Scenario("refusal", "the model refuses: idle with stop_reason refusal", ending="refusal"),
        Scenario(
            "budget_reached",
            "the session's budget runs out: idle with budget_reached",
            ending="budget_reached",
        ),
        Scenario("terminated", "the session is terminated mid-turn", ending="terminated"),
        Scenario("dropped", "the connection drops before the turn ends", stream_cut=("drop", 40)),
        Scenario(
            "error_frame",
            "an `event: error` frame (overloaded_error) inside the stream",
            stream_cut=("error_frame", 40),
        ),
        Scenario(
            "stall", "the stream goes silent for ten minutes part-way", stream_cut=("stall", 40)
        ),
        Scenario(
            "http_401",
            "401 on the first create call",
            http_error=("agents", 401, "authentication_error", "invalid x-api-key"),
        ),
        Scenario(
            "http_404_environment",
            "404 on the environment create",
            http_error=(
                "environments",
                404,
                "not_found_error",
                "Not found: environments are not enabled for this organization.",
            ),
        ),
        Scenario(
            "hostile",
            "hostile and huge content: markup, escapes, 1 MB of output, a 10,000-character line, an unknown event",
            extra_steps=[
                {
                    "say": HOSTILE_TEXT,
                    "tool": {
                        "name": "bash",
                        "input": {
                            "command": "python3 -c \"print('<script>alert(1)</script>' + 'A' * 10000)\"; "
                            "printf '\\033[1;31mFAILED\\033[0m <img src=x onerror=alert(2)>\\n'"
                        },
                    },
                },
                {
                    "tool": {
                        "name": "bash",
                        "input": {
                            "command": "python3 -c \"print('0123456789abcdef <b>bold</b>\\n' * 36000, end='')\""
                        },
                    }
                },
            ],
            unknown_event={
                "type": "agent.hologram_projected",
                "payload": "<script>alert('unknown')</script>",
            },
        ),
    ]
}
