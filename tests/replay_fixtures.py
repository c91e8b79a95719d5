"""Small, valid cassettes built in code, and checks any cassette's SSE events must pass.

The bodies are the minimal ones of API_WIRE.md §3 (each passes strict validation in every
supported anthropic release). `notebook_flow_cassette()` scripts the cookbook's whole flow;
`check_cassette_events()` is meant for every cassette, the shipped one included.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import subprocess
import sys
import typing
from collections.abc import Iterator
from typing import Any

import anthropic
from anthropic._models import validate_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from tests.replay import ROOT
from tests.replay.cassette import Cassette, is_send, new_header

TS = "2026-05-01T12:00:00Z"
TS_ARCHIVED = "2026-05-01T12:05:00Z"
SDK = f"anthropic {anthropic.__version__}"  # what a header made today says
BETA = "managed-agents-2026-04-01"

MODEL = "claude-sonnet-4-6"
AGENT_ID = "agent_011CZkYpogX7uDKUyvBTophP"
ENV_ID = "env_011CZkZ9X2dpNyB7HsEFoRfW"
FILE_ID = "file_011CNha8iCJcU1wXNR6q4V8w"
TEST_FILE_ID = "file_011CNha8iCJcU1wXNR6q4V8x"
OUTPUT_FILE_ID = "file_011CNha8iCJcU1wXNR6q4V8y"
SESSION_ID = "sesn_011CZkZAtmR3yMPDzynEDxu7"
RESOURCE_ID = "sesrsc_011CZkZBJq5dWxk9fVLNcPht"

AGENT_NAME = "cookbook-iterate"
AGENT_SYSTEM = "You fix failing tests."
ENV_NAME = "cookbook-iterate-env"
TITLE = "Get the tests green"
TASK = "Make the tests in test_calc.py pass."
FOLLOW_UP = "Summarise what you changed."

CALC_PY = b"def add(a, b):\n    return a - b\n"
TEST_CALC_PY = b"from calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n"
FIXED_CALC_PY = b"def add(a, b):\n    return a + b\n"

TOOLSET_REQUEST = {
    "type": "agent_toolset_20260401",
    "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
}
ENV_CONFIG_REQUEST = {"type": "cloud", "networking": {"type": "limited"}}


# -- response bodies (API_WIRE.md §3) ------------------------------------------------------


def agent_body(archived_at: str | None = None) -> dict[str, Any]:
    return {
        "id": AGENT_ID,
        "type": "agent",
        "name": AGENT_NAME,
        "version": 1,
        "model": {"id": MODEL},
        "system": AGENT_SYSTEM,
        "description": None,
        "tools": [{**copy.deepcopy(TOOLSET_REQUEST), "configs": []}],
        "mcp_servers": [],
        "skills": [],
        "metadata": {},
        "execution_identity": {"type": "service_account"},
        "created_at": TS,
        "updated_at": TS,
        "archived_at": archived_at,
    }


def environment_body(archived_at: str | None = None) -> dict[str, Any]:
    return {
        "id": ENV_ID,
        "type": "environment",
        "name": ENV_NAME,
        "metadata": {},
        "config": {
            "type": "cloud",
            "networking": {
                "type": "limited",
                "allowed_hosts": [],
                "allow_mcp_servers": False,
                "allow_package_managers": False,
            },
            "packages": {"apt": [], "cargo": [], "gem": [], "go": [], "npm": [], "pip": []},
        },
        "created_at": TS,
        "updated_at": TS,
        "archived_at": archived_at,
    }


def file_body(file_id: str, filename: str, content: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "id": file_id,
        "type": "file",
        "filename": filename,
        "mime_type": "text/x-python",
        "size_bytes": len(content),
        "created_at": TS,
        "downloadable": False,
        **extra,
    }


def session_body(status: str = "idle", archived_at: str | None = None) -> dict[str, Any]:
    agent = agent_body()
    session_agent = {
        k: agent[k] for k in ("id", "type", "name", "version", "model", "system", "description")
    }
    session_agent.update(
        {k: agent[k] for k in ("tools", "mcp_servers", "skills", "execution_identity")}
    )
    return {
        "id": SESSION_ID,
        "type": "session",
        "status": status,
        "title": TITLE,
        "agent": session_agent,
        "environment_id": ENV_ID,
        "resources": [
            {
                "type": "file",
                "id": RESOURCE_ID,
                "file_id": FILE_ID,
                "mount_path": "/mnt/session/uploads/calc.py",
                "created_at": TS,
                "updated_at": TS,
            }
        ],
        "metadata": {},
        "vault_ids": [],
        "outcome_evaluations": [],
        "stats": {},
        "usage": {},
        "created_at": TS,
        "updated_at": TS,
        "archived_at": archived_at,
    }


# -- SSE events -------------------------------------------------------------------------------


def event(type_: str, id_: str | None, **fields: Any) -> dict[str, Any]:
    """An event's `data`: `processed_at` is added for every event that has an id."""
    data: dict[str, Any] = {"type": type_}
    if id_ is not None:
        data.update(id=id_, processed_at=TS)
    data.update(fields)
    return data


def sse(data: dict[str, Any], delay_ms: int = 0, after: int | None = None) -> dict[str, Any]:
    """One cassette SSE entry whose `event:` name is the payload's type."""
    entry: dict[str, Any] = {"delay_ms": delay_ms, "event": data["type"], "data": data}
    if after is not None:
        entry["after"] = after
    return entry


def turn_events(
    prefix: str, text: str, user_text: str, deltas: bool = True
) -> list[dict[str, Any]]:
    """The `data` of one short turn (API_WIRE.md §2.4), ending idle with end_turn."""
    ids = {
        name: f"sevt_{prefix}{n:03d}"
        for n, name in enumerate(("user", "run", "span", "msg", "end", "use", "idle"))
    }
    events = [
        event("session.status_running", ids["run"]),
        event("user.message", ids["user"], content=[{"type": "text", "text": user_text}]),
        event("span.model_request_start", ids["span"]),
    ]
    if deltas:
        half = len(text) // 2
        events += [
            {"type": "event_start", "event": {"type": "agent.message", "id": ids["msg"]}},
            {
                "type": "event_delta",
                "event_id": ids["msg"],
                "delta": {
                    "type": "content_delta",
                    "index": 0,
                    "content": {"type": "text", "text": text[:half]},
                },
            },
            {
                "type": "event_delta",
                "event_id": ids["msg"],
                "delta": {
                    "type": "content_delta",
                    "content": {"type": "text", "text": text[half:]},
                },
            },
        ]
    events += [
        event("agent.message", ids["msg"], content=[{"type": "text", "text": text}]),
        event(
            "span.model_request_end",
            ids["end"],
            model_request_start_id=ids["span"],
            is_error=False,
            model_usage={
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        ),
        event("session.usage", ids["use"], usage={"input_tokens": 10, "output_tokens": 5}),
        event("session.status_idle", ids["idle"], stop_reason={"type": "end_turn"}),
    ]
    return events


def sample_events() -> list[dict[str, Any]]:
    """One minimal, strictly valid `data` for every type of the stream union (44 of them)."""
    usage4 = {
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    text = [{"type": "text", "text": "hi"}]
    thread = {"agent_name": "helper", "session_thread_id": "sthr_001"}
    wf = {"workflow_run_id": "wfr_001"}
    return [
        event("user.message", "sevt_s01", content=text),
        event("user.interrupt", "sevt_s02"),
        event("user.tool_confirmation", "sevt_s03", tool_use_id="sevt_s10", result="allow"),
        event("user.custom_tool_result", "sevt_s04", custom_tool_use_id="sevt_s05"),
        event("agent.custom_tool_use", "sevt_s05", name="lookup", input={}),
        event("agent.message", "sevt_s06", content=text),
        event("agent.thinking", "sevt_s07"),
        event("agent.mcp_tool_use", "sevt_s08", name="search", input={}, mcp_server_name="docs"),
        event("agent.mcp_tool_result", "sevt_s09", mcp_tool_use_id="sevt_s08"),
        event("agent.tool_use", "sevt_s10", name="bash", input={"command": "ls"}),
        event("agent.tool_result", "sevt_s11", tool_use_id="sevt_s10"),
        event(
            "agent.thread_message_received",
            "sevt_s12",
            content=text,
            from_session_thread_id="sthr_001",
        ),
        event(
            "agent.thread_message_sent", "sevt_s13", content=text, to_session_thread_id="sthr_001"
        ),
        event("agent.thread_context_compacted", "sevt_s14"),
        event(
            "session.error",
            "sevt_s15",
            error={
                "type": "unknown_error",
                "message": "boom",
                "retry_status": {"type": "retrying"},
            },
        ),
        event("session.status_rescheduled", "sevt_s16"),
        event("session.status_running", "sevt_s17"),
        event("session.thread_created", "sevt_s19", **thread),
        event("span.outcome_evaluation_start", "sevt_s20", iteration=0, outcome_id="outc_001"),
        event(
            "span.outcome_evaluation_end",
            "sevt_s21",
            explanation="ok",
            iteration=0,
            outcome_evaluation_start_id="sevt_s20",
            outcome_id="outc_001",
            result="satisfied",
            usage=usage4,
        ),
        event("span.model_request_start", "sevt_s22"),
        event(
            "span.model_request_end",
            "sevt_s23",
            model_request_start_id="sevt_s22",
            model_usage=usage4,
        ),
        event("span.outcome_evaluation_ongoing", "sevt_s24", iteration=0, outcome_id="outc_001"),
        event(
            "user.define_outcome",
            "sevt_s25",
            description="green tests",
            outcome_id="outc_001",
            rubric={"type": "text", "content": "all tests pass"},
        ),
        event("session.deleted", "sevt_s26"),
        event("session.thread_status_running", "sevt_s27", **thread),
        event("session.thread_status_idle", "sevt_s28", stop_reason={"type": "end_turn"}, **thread),
        event("session.thread_status_terminated", "sevt_s29", **thread),
        event("user.tool_result", "sevt_s30", tool_use_id="sevt_s10"),
        event("session.thread_status_rescheduled", "sevt_s31", **thread),
        event("session.updated", "sevt_s32"),
        {"type": "event_start", "event": {"type": "agent.message", "id": "sevt_s33"}},
        {
            "type": "event_delta",
            "event_id": "sevt_s33",
            "delta": {"type": "content_delta", "content": {"type": "text", "text": "hi"}},
        },
        event("system.message", "sevt_s34", content=text),
        event("session.usage", "sevt_s35", usage={}),
        event(
            "workflow_run.created",
            "sevt_s36",
            name="fix",
            phases=[{"id": "wfp_001", "name": "one"}],
            **wf,
        ),
        event("workflow_run.status_ended", "sevt_s37", result={"type": "completed"}, **wf),
        event("workflow_run.phase_started", "sevt_s38", workflow_run_phase_id="wfp_001", **wf),
        event(
            "workflow_run.phase_ended",
            "sevt_s39",
            workflow_run_phase_id="wfp_001",
            phase_started_id="sevt_s38",
            **wf,
        ),
        event("workflow_run.status_running", "sevt_s40", **wf),
        event("workflow_run.status_idle", "sevt_s41", **wf),
        event("workflow_run.error", "sevt_s42", error={"type": "unknown_error", "message": "boom"}),
        event("session.status_terminated", "sevt_s43"),
        event("session.status_idle", "sevt_s44", stop_reason={"type": "end_turn"}),
    ]


# -- exchanges and cassettes ----------------------------------------------------------------------


def exchange(
    method: str,
    path: str,
    response_body: dict[str, Any],
    *,
    query: dict[str, list[str]] | None = None,
    body: dict[str, Any] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    """One cassette line. `body` is the stored request body, e.g. {"json": {...}} or {"multipart": [...]}."""
    request: dict[str, Any] = {"method": method, "path": path, "query": query or {}}
    request.update(body or {})
    request_id = "req_" + hashlib.sha256(f"{method} {path}".encode()).hexdigest()[:24]
    response = {"status": status, "headers": {"request-id": request_id}}
    response.update(response_body)
    return {"request": request, "response": response}


def upload_part(
    filename: str, content: bytes, content_type: str = "text/x-python"
) -> dict[str, Any]:
    return {
        "name": "file",
        "filename": filename,
        "content_type": content_type,
        "sha256": hashlib.sha256(content).hexdigest(),
    }


def upload_exchange(
    filename: str, content: bytes, file_id: str, content_type: str = "text/x-python"
) -> dict:
    return exchange(
        "POST",
        "/v1/files",
        {"json": {**file_body(file_id, filename, content), "mime_type": content_type}},
        body={"multipart": [upload_part(filename, content, content_type)]},
    )


def send_exchange(text: str, echo_id: str) -> dict[str, Any]:
    sent = {"type": "user.message", "content": [{"type": "text", "text": text}]}
    echo = {**sent, "id": echo_id, "processed_at": None}
    return exchange(
        "POST",
        f"/v1/sessions/{SESSION_ID}/events",
        {"json": {"data": [echo]}},
        body={"json": {"events": [sent]}},
    )


def stream_exchange(
    events: list[dict[str, Any]], after: int | None, deltas: bool = True, delay_ms: int = 0
) -> dict:
    entries = [sse(data, delay_ms=delay_ms) for data in events]
    if after is not None:
        entries[0]["after"] = after
    query = {"event_deltas[]": ["agent.message"]} if deltas else {}
    return exchange(
        "GET", f"/v1/sessions/{SESSION_ID}/events/stream", {"sse": entries}, query=query
    )


def make_cassette(
    exchanges: list[dict[str, Any]], description: str = "built by a test"
) -> Cassette:
    return Cassette(header=new_header("scripted", TS, SDK, description), exchanges=exchanges)


TURN1_TEXT = "I fixed add() in calc.py; all tests pass now."
TURN2_TEXT = "I changed one operator in add()."


def notebook_flow_cassette() -> Cassette:
    """The cookbook's flow. Turn 1 is "stream, then send"; turn 2 is "send, then stream"."""
    turn1, turn2 = turn_events("a", TURN1_TEXT, TASK), turn_events("b", TURN2_TEXT, FOLLOW_UP)
    history = [data for data in turn1 + turn2 if "id" in data]
    output = file_body(
        OUTPUT_FILE_ID,
        "calc.py",
        FIXED_CALC_PY,
        downloadable=True,
        scope={"type": "session", "id": SESSION_ID},
    )
    agent_request = {
        "name": AGENT_NAME,
        "model": MODEL,
        "system": AGENT_SYSTEM,
        "tools": [TOOLSET_REQUEST],
    }
    session_request = {
        "environment_id": ENV_ID,
        "agent": {"type": "agent", "id": AGENT_ID, "version": 1},
        "resources": [
            {"type": "file", "file_id": FILE_ID, "mount_path": "calc.py"},
            {"type": "file", "file_id": TEST_FILE_ID, "mount_path": "test_calc.py"},
        ],
        "title": TITLE,
    }
    sid = SESSION_ID
    exchanges = [
        exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": agent_request}),  # 1
        exchange(  # 2
            "POST",
            "/v1/environments",
            {"json": environment_body()},
            body={"json": {"name": ENV_NAME, "config": ENV_CONFIG_REQUEST}},
        ),
        upload_exchange("calc.py", CALC_PY, FILE_ID),  # 3
        upload_exchange("test_calc.py", TEST_CALC_PY, TEST_FILE_ID),  # 4
        exchange(
            "POST", "/v1/sessions", {"json": session_body()}, body={"json": session_request}
        ),  # 5
        stream_exchange(turn1, after=7),  # 6: opened first, held until the send (7) is answered
        send_exchange(TASK, turn1[1]["id"]),  # 7
        send_exchange(FOLLOW_UP, turn2[1]["id"]),  # 8: sent first ...
        stream_exchange(turn2, after=8),  # 9: ... then the stream is opened
        exchange("GET", f"/v1/sessions/{sid}", {"json": session_body()}),  # 10, polled more often
        exchange(
            "GET", f"/v1/sessions/{sid}/events", {"json": {"data": history, "next_page": None}}
        ),  # 11
        exchange(  # 12
            "GET",
            "/v1/files",
            {"json": {"data": [output], "next_page": None}},
            query={"scope_id": [sid]},
        ),
        exchange(  # 13
            "GET",
            f"/v1/files/{OUTPUT_FILE_ID}/content",
            {
                "body_b64": base64.b64encode(FIXED_CALC_PY).decode(),
                "headers": {"content-type": "text/x-python"},
            },
        ),
        exchange(
            "POST", f"/v1/sessions/{sid}/archive", {"json": session_body(archived_at=TS_ARCHIVED)}
        ),  # 14
        exchange(
            "POST",
            f"/v1/environments/{ENV_ID}/archive",
            {"json": environment_body(archived_at=TS_ARCHIVED)},
        ),
        exchange(
            "POST", f"/v1/agents/{AGENT_ID}/archive", {"json": agent_body(archived_at=TS_ARCHIVED)}
        ),  # 16
    ]
    return make_cassette(exchanges, "the cookbook flow, scripted by tests/replay_fixtures.py")


@contextlib.contextmanager
def serving(cassette, *flags: str) -> Iterator[str]:
    """`python -m tests.replay serve --cassette CASSETTE --speed 0 FLAGS` in a process of its own,
    as a reader starts it: yields the base URL it prints; stops it afterwards."""
    command = [sys.executable, "-m", "tests.replay", "serve", "--cassette", str(cassette)]
    server = subprocess.Popen(
        [*command, "--speed", "0", *flags],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield server.stdout.readline().strip()
    finally:
        server.terminate()
        server.wait(timeout=10)


def make_client(fake: Any, **options: Any) -> anthropic.Anthropic:
    """The real SDK, strict, with its default retries unless a test says otherwise."""
    return anthropic.Anthropic(
        base_url=fake.base_url, api_key="test", _strict_response_validation=True, **options
    )


# -- checks for any cassette ------------------------------------------------------------------------

_UNION_MEMBERS = typing.get_args(typing.get_args(BetaManagedAgentsStreamSessionEvents)[0])
# "agent.message" -> "BetaManagedAgentsAgentMessageEvent", read from the SDK's own union.
STREAM_EVENT_CLASSES: dict[str, str] = {
    typing.get_args(member.model_fields["type"].annotation)[0]: member.__name__
    for member in _UNION_MEMBERS
}
TURN_ENDS = ("session.status_idle", "session.status_terminated")


def check_cassette_events(
    cassette: Cassette, unknown_types: bool = False, turns_end: bool = True
) -> None:
    """Every SSE event validates strictly as the SDK class its `type` names; each turn ends.

    A turn's streams are the one whose first event waits for a send (`after`) and any
    reconnects that follow it; the last of them must end with idle or terminated (unless
    `turns_end` is False: a turn that never ends). `unknown_types` lets types the SDK does not
    know pass (hostile and odd-preview scenarios); an `event: error` frame is the API's error
    envelope, not a session event. Raises AssertionError naming the exchange and the event.
    """
    turns: list[list[tuple[int, list]]] = []
    for n, ex in enumerate(cassette.exchanges, 1):
        entries = ex["response"].get("sse")
        if entries is None:
            continue
        events = [entry for entry in entries if "comment" not in entry]
        assert events, f"exchange {n}: an SSE response without events"
        if not turns or "after" in entries[0]:
            turns.append([])
        turns[-1].append((n, events))
        for i, entry in enumerate(events, 1):
            _check_event(
                cassette,
                f"exchange {n}, SSE event {i} ({entry.get('event')!r})",
                entry,
                unknown_types,
            )
    assert turns, "the cassette has no SSE exchange"
    for streams in turns if turns_end else []:
        n, events = streams[-1]
        last = events[-1]["data"]
        assert last["type"] in TURN_ENDS, (
            f"exchange {n}: the turn ends with {last['type']!r}, not idle/terminated"
        )
        if last["type"] == "session.status_idle":
            assert last["stop_reason"].get("type"), (
                f"exchange {n}: the final idle event has no stop_reason.type"
            )


def _check_event(cassette: Cassette, where: str, entry: dict, unknown_types: bool) -> None:
    data = entry["data"]
    if entry["event"] == "error":
        assert set(data["error"]) >= {"type", "message"}, (
            f"{where}: an error frame without type and message"
        )
        return
    assert entry["event"] == data.get("type"), (
        f"{where}: event name differs from data.type {data.get('type')!r}"
    )
    expected = STREAM_EVENT_CLASSES.get(data.get("type"))
    if expected is None and unknown_types:
        return
    assert expected is not None, (
        f"{where}: type {data.get('type')!r} is not in the SDK's stream union"
    )
    if unknown_types and data["type"] in ("event_start", "event_delta"):
        return  # previews of kinds the SDK does not know, on purpose
    try:
        parsed = validate_type(type_=BetaManagedAgentsStreamSessionEvents, value=data)
    except Exception as err:  # pydantic's ValidationError, shown with the place
        raise AssertionError(f"{where}: strict validation failed: {err}") from None
    got = type(parsed).__name__
    assert got == expected, f"{where}: parsed as {got}, expected {expected}"
    if "after" in entry:
        after = entry["after"]
        assert is_send(cassette.exchanges[after - 1]), f"{where}: after={after} is not a send"
