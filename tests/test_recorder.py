"""The recording proxy, tested without a key: the real SDK records through it against the replay server.

What goes in (a scripted cassette served by ReplayServer) must come out of the proxy again,
apart from delays and headers; no credential may reach the written file; SSE must pass
through unbuffered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx2
import pytest

from tests.replay import ROOT, record_command, recorder
from tests.replay.cassette import Cassette, new_header
from tests.replay.loopback import LoopbackHandler, LoopbackServer
from tests.replay.recorder import (
    REDACTED,
    STORED_RESPONSE_HEADERS,
    RecordingProxy,
    is_credential_name,
    response_body,
    scrub,
)
from tests.replay.server import ReplayServer
from tests.replay.sse import SSEParser, frame_entry
from tests.replay_fixtures import SDK

BEARER_SECRET = "sk-ant-test-SECRET123"
HEADER_SECRET = "sk-ant-other-SECRET456"
COOKIE_SECRET = "cookie-SECRET789"

T = "2026-05-01T12:00:00Z"
AGENT_ID = "agent_011CZkYpogX7uDKUyvBTophP"
SESSION_ID = "sesn_011CZkZAtmR3yMPDzynEDxu7"
FILE_ID = "file_011CNha8iCJcU1wXNR6q4V8w"
OUTPUT_FILE_ID = "file_011CNha8iCJcU1wXNR6qOUTP"
UPLOAD = b"print(1)\n"
BINARY = b"\x89PNG\r\n\x1a\n\x00\xff\xfe"
TOOLSET = {
    "type": "agent_toolset_20260401",
    "default_config": {"enabled": True, "permission_policy": {"type": "always_allow"}},
}
AGENT_REQUEST = {
    "model": "claude-sonnet-4-6",
    "name": "cookbook-iterate",
    "system": "Fix the code.",
    "tools": [TOOLSET],
}
AGENT = {
    "id": AGENT_ID,
    "type": "agent",
    "name": "cookbook-iterate",
    "version": 1,
    "model": {"id": "claude-sonnet-4-6"},
    "system": "Fix the code.",
    "description": None,
    "tools": [{**TOOLSET, "configs": []}],
    "mcp_servers": [],
    "skills": [],
    "metadata": {},
    "execution_identity": {"type": "service_account"},
    "created_at": T,
    "updated_at": T,
    "archived_at": None,
}
FILE = {
    "id": FILE_ID,
    "type": "file",
    "filename": "calc.py",
    "mime_type": "text/x-python",
    "size_bytes": len(UPLOAD),
    "created_at": T,
    "downloadable": False,
}
RUN = {"cwd": ROOT, "capture_output": True, "text": True, "timeout": 60}
STREAM_PATH = f"/v1/sessions/{SESSION_ID}/events/stream"
SEND_PATH = f"/v1/sessions/{SESSION_ID}/events"


def user_message(text: str) -> dict:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def sse(event_type: str, delay_ms: int = 0, **fields) -> dict:
    return {"delay_ms": delay_ms, "event": event_type, "data": {"type": event_type, **fields}}


def turn(prefix: str, text: str, *, after: int | None = None, delay_ms: int = 0) -> list[dict]:
    """A short turn: running, a previewed agent.message, idle with end_turn."""
    msg = f"sevt_{prefix}3"
    events = [
        sse("session.status_running", delay_ms, id=f"sevt_{prefix}1", processed_at=T),
        sse(
            "user.message",
            delay_ms,
            id=f"sevt_{prefix}2",
            processed_at=T,
            content=[{"type": "text", "text": "Go"}],
        ),
        sse("event_start", delay_ms, event={"type": "agent.message", "id": msg}),
        sse(
            "event_delta",
            delay_ms,
            event_id=msg,
            delta={
                "type": "content_delta",
                "index": 0,
                "content": {"type": "text", "text": text[:3]},
            },
        ),
        sse(
            "agent.message",
            delay_ms,
            id=msg,
            processed_at=T,
            content=[{"type": "text", "text": text}],
        ),
        sse(
            "session.status_idle",
            delay_ms,
            id=f"sevt_{prefix}4",
            processed_at=T,
            stop_reason={"type": "end_turn"},
        ),
    ]
    if after is not None:
        events[0]["after"] = after
    return events


def exchange(method: str, path: str, response: dict, status: int = 200, **request) -> dict:
    return {
        "request": {"method": method, "path": path, **request},
        "response": {
            "status": status,
            "headers": {"request-id": f"req_{len(path)}{method}"},
            **response,
        },
    }


def source_cassette() -> Cassette:
    """Both ways a turn is driven: stream then send (exchanges 3, 4), send then stream (5, 6)."""
    sha = hashlib.sha256(UPLOAD).hexdigest()
    query = {"event_deltas[]": ["agent.message"]}
    echo = {"data": [{**user_message("Go"), "id": "sevt_echo", "processed_at": None}]}
    exchanges = [
        exchange("POST", "/v1/agents", {"json": AGENT}, json=AGENT_REQUEST),
        exchange(
            "POST",
            "/v1/files",
            {"json": FILE},
            multipart=[
                {
                    "name": "file",
                    "filename": "calc.py",
                    "content_type": "text/x-python",
                    "sha256": sha,
                }
            ],
        ),
        exchange("GET", STREAM_PATH, {"sse": turn("a", "Hello!", after=4)}, query=query),
        exchange("POST", SEND_PATH, {"json": echo}, json={"events": [user_message("Go")]}),
        exchange("POST", SEND_PATH, {"json": echo}, json={"events": [user_message("Again")]}),
        exchange("GET", STREAM_PATH, {"sse": turn("b", "Done again.")}, query=query),
        exchange("GET", f"/v1/files/{FILE_ID}/content", {"text": "print(2)\n"}),
        exchange(
            "GET",
            f"/v1/files/{OUTPUT_FILE_ID}/content",
            {"body_b64": base64.b64encode(BINARY).decode()},
        ),
        exchange("POST", f"/v1/agents/{AGENT_ID}/archive", {"json": {**AGENT, "archived_at": T}}),
    ]
    header = new_header("scripted", created=T, sdk=SDK, description="recorder round trip")
    return Cassette(header, exchanges)


def sdk(base_url: str, **options) -> anthropic.Anthropic:
    """The real SDK, strict, no retries, and a 5 s bound on every read: should SSE stop being
    flushed through, a stream test fails with APITimeoutError instead of waiting 600 s."""
    return anthropic.Anthropic(
        base_url=base_url,
        api_key=BEARER_SECRET,
        max_retries=0,
        timeout=5,
        _strict_response_validation=True,
        **options,
    )


def drain_until_idle(stream) -> list[str]:
    seen = []
    for event in stream:
        seen.append(event.type)
        if event.type == "session.status_idle":
            break
    return seen


def normalised(exchanges: list[dict]) -> list[dict]:
    """Exchanges without response headers and with every delay 0: what a recording must reproduce."""
    out = json.loads(json.dumps(exchanges))
    for ex in out:
        ex["response"].pop("headers", None)
        for event in ex["response"].get("sse", []):
            event["delay_ms"] = 0
    return out


def test_recording_through_the_proxy_reproduces_the_source(tmp_path):
    source_path, out = tmp_path / "source.jsonl", tmp_path / "recorded.jsonl"
    source_cassette().save(source_path)
    source = Cassette.load(source_path)
    with (
        ReplayServer(source_path) as replay,
        RecordingProxy(upstream=replay.base_url, description="rt") as proxy,
    ):
        client = sdk(proxy.base_url)
        client.beta.agents.create(**AGENT_REQUEST)
        uploaded = client.beta.files.upload(file=("calc.py", UPLOAD, "text/x-python"))
        assert uploaded.id == FILE_ID
        with client.beta.sessions.events.stream(
            SESSION_ID, event_deltas=["agent.message"]
        ) as stream:
            client.beta.sessions.events.send(SESSION_ID, events=[user_message("Go")])
            first = drain_until_idle(stream)
        client.beta.sessions.events.send(SESSION_ID, events=[user_message("Again")])
        with client.beta.sessions.events.stream(
            SESSION_ID, event_deltas=["agent.message"]
        ) as stream:
            second = drain_until_idle(stream)
        assert client.beta.files.download(FILE_ID).text() == "print(2)\n"
        assert client.beta.files.download(OUTPUT_FILE_ID).read() == BINARY
        assert client.beta.agents.archive(AGENT_ID).archived_at is not None
        proxy.save(out)
        assert replay.unplayed() == [] and replay.unmatched() == []

    expected = [e["event"] for e in turn("a", "x")]
    assert first == expected and second == expected
    recorded = Cassette.load(out)
    assert recorded.header["provenance"] == "recorded"
    assert recorded.header["sdk"] == f"anthropic {anthropic.__version__}"
    assert recorded.header["description"] == "rt"
    assert recorded.header["created"].endswith("Z")
    assert normalised(recorded.exchanges) == normalised(source.exchanges)
    for got, want in zip(recorded.exchanges, source.exchanges, strict=True):
        assert set(got["response"]["headers"]) <= set(STORED_RESPONSE_HEADERS)
        assert got["response"]["headers"]["request-id"] == want["response"]["headers"]["request-id"]
        assert "content-type" in got["response"]["headers"]


def test_credentials_never_reach_the_cassette(tmp_path):
    source_path, out = tmp_path / "source.jsonl", tmp_path / "recorded.jsonl"
    cassette = source_cassette()
    cassette.exchanges = [cassette.exchanges[0], cassette.exchanges[-1]]
    cassette.save(source_path)
    with ReplayServer(source_path) as replay, RecordingProxy(upstream=replay.base_url) as proxy:
        sdk(proxy.base_url).beta.agents.create(**AGENT_REQUEST)  # Authorization: Bearer
        raw = httpx2.post(
            f"{proxy.base_url}/v1/agents/{AGENT_ID}/archive",
            headers={
                "x-api-key": HEADER_SECRET,
                "cookie": f"session={COOKIE_SECRET}",
                "content-type": "x/y",
            },
        )
        assert raw.status_code == 200, raw.text
        proxy.save(out)
        assert replay.unplayed() == []

    text = out.read_text(encoding="utf-8")
    assert len(Cassette.load(out).exchanges) == 2
    for secret in (
        BEARER_SECRET,
        HEADER_SECRET,
        COOKIE_SECRET,
        "SECRET",
        "authorization",
        "x-api-key",
        "cookie",
    ):
        assert secret.lower() not in text.lower(), f"{secret!r} was written to the cassette"


class EchoUpstream(BaseHTTPRequestHandler):
    """Answers every request with the headers it received; sets a cookie and a server header."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = {
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "got": self.rfile.read(length).decode(),
        }
        body["token"] = "field-SECRET-value"
        data = json.dumps(body).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", f"sid={COOKIE_SECRET}")
        self.send_header("request-id", "req_echo")
        self.send_header("x-should-retry", "false")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_forwards_credentials_upstream_and_scrubs_their_echo(tmp_path):
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoUpstream)
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with RecordingProxy(upstream=f"http://127.0.0.1:{upstream.server_address[1]}") as proxy:
            client = sdk(proxy.base_url, default_headers={"x-api-key": HEADER_SECRET})
            with pytest.raises(anthropic.AuthenticationError) as caught:
                client.post(
                    "/v1/echo",
                    body={"k": "v"},
                    cast_to=object,
                    options={"params": {"beta": "true", "b": "2", "a": "1"}},
                )
            proxy.save(tmp_path / "echo.jsonl")
    finally:
        upstream.shutdown()
        upstream.server_close()

    seen = caught.value.body["headers"]
    assert seen["authorization"] == f"Bearer {BEARER_SECRET}" and seen["x-api-key"] == HEADER_SECRET
    assert seen["accept-encoding"] == "identity"
    assert seen["host"] == f"127.0.0.1:{upstream.server_address[1]}"
    assert caught.value.request_id == "req_echo"
    [recorded] = Cassette.load(tmp_path / "echo.jsonl").exchanges
    assert recorded["request"] == {
        "method": "POST",
        "path": "/v1/echo",
        "query": {"a": ["1"], "b": ["2"]},
        "json": {"k": "v"},
    }
    response = recorded["response"]
    assert response["status"] == 401
    assert response["headers"] == {
        "content-type": "application/json",
        "request-id": "req_echo",
        "x-should-retry": "false",
    }
    assert response["json"]["headers"]["authorization"] == REDACTED
    assert response["json"]["headers"]["x-api-key"] == REDACTED
    assert response["json"]["token"] == REDACTED
    assert "SECRET" not in (tmp_path / "echo.jsonl").read_text()


def test_sse_passes_through_unbuffered(tmp_path):
    events = [
        sse("session.status_running", 0, id="sevt_1", processed_at=T),
        {"delay_ms": 150, "comment": "heartbeat"},
        sse("span.model_request_start", 150, id="sevt_2", processed_at=T),
        sse(
            "agent.message",
            300,
            id="sevt_3",
            processed_at=T,
            content=[{"type": "text", "text": "Hi"}],
        ),
        sse(
            "session.status_idle",
            300,
            id="sevt_4",
            processed_at=T,
            stop_reason={"type": "end_turn"},
        ),
    ]
    cassette = Cassette(
        new_header("scripted", T, SDK, "paced"),
        [exchange("GET", STREAM_PATH, {"sse": events})],
    )
    with (
        ReplayServer(cassette, speed=1) as replay,
        RecordingProxy(upstream=replay.base_url) as proxy,
    ):
        opened = time.monotonic()
        arrivals = []
        with sdk(proxy.base_url).beta.sessions.events.stream(SESSION_ID) as stream:
            for _ in stream:
                arrivals.append(time.monotonic() - opened)
        recorded = proxy.cassette().exchanges[0]["response"]["sse"]

    assert len(arrivals) == 4
    # the stream lasts 0.9 s; a first event well before that was not held back (loose: CI load)
    assert arrivals[0] < 0.6, f"first event only after {arrivals[0]:.2f}s"
    assert arrivals[-1] - arrivals[0] > 0.6, f"events arrived together: {arrivals}"
    assert [e.get("event", e.get("comment")) for e in recorded] == [
        e.get("event", e.get("comment")) for e in events
    ]
    delays = [e["delay_ms"] for e in recorded]
    assert delays[0] < 100 and all(80 <= d < 450 for d in delays[1:]), delays


def test_sse_frames_become_cassette_entries_whatever_the_chunking():
    wire = (
        b": keepalive\r\n\r\n"
        b'event: session.status_running\r\ndata: {"type": "session.status_running",\r\ndata:  "id": "sevt_1"}\r\n\r\n'
        b"id: 7\nevent: ping\ndata: {}\n\n"
        b"event: ping\n\n"
        b'data: {"type": "nameless"}\n\n'
        b"event: agent.message\ndata: not json\n\n"
        b'event: session.status_idle\ndata: {"type": "session.status_idle"}\n\n'
        b"event: lost\ndata: {}\n"
    )
    expected = [
        {"comment": "keepalive"},
        {
            "event": "session.status_running",
            "data": {"type": "session.status_running", "id": "sevt_1"},
        },
        {"event": "ping", "data": {}},
        {"comment": "event: ping"},
        {"comment": 'data: {"type": "nameless"}'},
        {"comment": "unreplayable frame: event: agent.message | data: not json"},
        {"event": "session.status_idle", "data": {"type": "session.status_idle"}},
    ]
    for size in (1, 2, 3, 7, len(wire)):
        parser = SSEParser()
        frames = [f for i in range(0, len(wire), size) for f in parser.feed(wire[i : i + size])]
        assert [frame_entry(f)[0] for f in frames] == expected, size
        assert parser.pending() == ["event: lost", "data: {}"]
    warnings = [frame_entry(f)[1] for f in frames]
    assert [w is not None for w in warnings] == [False] * 5 + [True, False]


def test_events_after_the_client_left_are_not_recorded():
    events = [sse("session.status_running", 0, id="sevt_1", processed_at=T)]
    events += [
        sse("span.model_request_start", 200, id=f"sevt_{i}", processed_at=T) for i in range(2, 5)
    ]
    cassette = Cassette(
        new_header("scripted", T, SDK, "x"),
        [exchange("GET", STREAM_PATH, {"sse": events})],
    )
    with (
        ReplayServer(cassette, speed=1) as replay,
        RecordingProxy(upstream=replay.base_url) as proxy,
    ):
        with sdk(proxy.base_url).beta.sessions.events.stream(SESSION_ID) as stream:
            assert next(iter(stream)).id == "sevt_1"
        time.sleep(0.5)  # the next event arrives at the proxy after the client has gone
        recorded = proxy.cassette().exchanges[0]["response"]["sse"]
    assert [e["data"]["id"] for e in recorded] == ["sevt_1"]


# -- when a turn's events happen: `delay_ms` and `after` ---------------------------------------
#
# The recorder times each event from the previous one, links a turn's first event to the send
# it answers (`after`), and then counts that event's delay from the send's answer, because
# replay starts the pause only then. These tests pace a fake upstream by hand, so each moment
# (the send's arrival, its answer, the event) is known to the test.

HOLD = 0.2  # how long the upstream keeps a send unanswered, in seconds
GAP = 0.05  # how long the test waits between two moments it wants told apart
OTHER_SESSION_ID = "sesn_011CZkZAtmR3yMPDzynEDxu8"


class PacedHandler(LoopbackHandler):
    """A session's stream writes each frame the test pushes (None ends it); a send is answered
    as soon as it arrives, unless the test has closed `owner.answering`."""

    owner: PacedUpstream

    def do_GET(self):
        session = urlsplit(self.path).path.split("/")[3]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        while (frame := self.owner.frames[session].get(timeout=10)) is not None:
            self.write_chunk(frame)
        self.write_chunk(b"")

    def do_POST(self):
        body = json.loads(self.read_body())
        self.owner.arrived.put(urlsplit(self.path).path)
        assert self.owner.answering.wait(timeout=5), "the test never let the send be answered"
        data = json.dumps(
            {"data": [{**e, "id": "sevt_echo", "processed_at": None} for e in body["events"]]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class PacedUpstream(LoopbackServer):
    """`with PacedUpstream() as upstream:` a fake API whose streams and sends the test paces."""

    handler = PacedHandler

    def __init__(self):
        super().__init__()
        self.frames: defaultdict[str, queue.Queue] = defaultdict(queue.Queue)
        self.arrived: queue.Queue = queue.Queue()  # the path of each send, as it arrives
        self.answering = threading.Event()
        self.answering.set()

    def push(self, session: str, event_id: str) -> None:
        """Send one event on the session's stream, now."""
        data = {"type": "span.model_request_start", "id": event_id, "processed_at": T}
        frame = f"event: {data['type']}\ndata: {json.dumps(data)}\n\n"
        self.frames[session].put(frame.encode())

    def stop(self) -> None:
        for frames in list(self.frames.values()):
            frames.put(None)
        super().stop()


def send_in_background(client: anthropic.Anthropic, session: str) -> threading.Thread:
    """The SDK sends a user message from another thread, so the test can act while it waits."""
    thread = threading.Thread(
        target=client.beta.sessions.events.send,
        args=(session,),
        kwargs={"events": [user_message("Go")]},
        daemon=True,
    )
    thread.start()
    return thread


def recorded_events(proxy: RecordingProxy, path: str) -> list[dict]:
    """The SSE entries the proxy recorded on the (one) stream of `path`."""
    [stream] = [ex for ex in proxy.cassette().exchanges if ex["request"]["path"] == path]
    return stream["response"]["sse"]


def test_the_first_event_after_a_send_is_timed_from_the_send_s_answer():
    """The send arrives, is answered HOLD later, and the turn's first event comes GAP after the
    answer: that event carries `after` and a delay of about GAP, counted from the answer (not
    from the send's arrival, HOLD + GAP, nor from the stream's opening); the next event comes
    GAP later and is timed from the first, without `after`."""
    with PacedUpstream() as upstream, RecordingProxy(upstream=upstream.base_url) as proxy:
        client = sdk(proxy.base_url)
        with client.beta.sessions.events.stream(SESSION_ID) as stream:  # exchange 1
            events = iter(stream)
            upstream.answering.clear()
            sending = send_in_background(client, SESSION_ID)  # exchange 2
            assert upstream.arrived.get(timeout=5) == SEND_PATH
            time.sleep(HOLD)
            upstream.answering.set()
            sending.join(timeout=5)
            time.sleep(GAP)
            upstream.push(SESSION_ID, "sevt_1")
            assert next(events).id == "sevt_1"
            time.sleep(GAP)
            upstream.push(SESSION_ID, "sevt_2")
            assert next(events).id == "sevt_2"
            upstream.frames[SESSION_ID].put(None)
        first, second = recorded_events(proxy, STREAM_PATH)

    assert first["after"] == 2 and "after" not in second
    ms = GAP * 1000
    # at least GAP: the answer came before the test waited; well under HOLD + GAP (load allowed)
    assert ms <= first["delay_ms"] < ms + HOLD * 1000, first
    assert ms <= second["delay_ms"] < ms + HOLD * 1000, second


def test_an_event_before_the_send_is_answered_is_linked_with_no_delay():
    """The API may push a turn's first event before the send's answer is back: the event is
    linked to the send all the same (counted from the send's arrival) and gets delay 0, as
    replay pauses only from the answer, which had not come; the next event, after the answer,
    is timed from the first."""
    with PacedUpstream() as upstream, RecordingProxy(upstream=upstream.base_url) as proxy:
        client = sdk(proxy.base_url)
        with client.beta.sessions.events.stream(SESSION_ID) as stream:  # exchange 1
            events = iter(stream)
            time.sleep(GAP)
            upstream.answering.clear()
            sending = send_in_background(client, SESSION_ID)  # exchange 2
            assert upstream.arrived.get(timeout=5) == SEND_PATH
            time.sleep(GAP)
            upstream.push(SESSION_ID, "sevt_1")
            assert next(events).id == "sevt_1"  # recorded by now, the send still unanswered
            upstream.answering.set()
            sending.join(timeout=5)
            time.sleep(GAP)
            upstream.push(SESSION_ID, "sevt_2")
            assert next(events).id == "sevt_2"
            upstream.frames[SESSION_ID].put(None)
        first, second = recorded_events(proxy, STREAM_PATH)

    assert first["after"] == 2 and first["delay_ms"] == 0, first
    assert "after" not in second and second["delay_ms"] >= GAP * 1000, second


def test_an_event_is_linked_to_its_own_session_s_latest_send():
    """Two sessions' streams are open at once; A gets two sends, then B one. An event on A's
    stream is linked to A's latest send, not to B's although it came later; an event on B's
    stream to B's send."""
    other_stream = f"/v1/sessions/{OTHER_SESSION_ID}/events/stream"
    with PacedUpstream() as upstream, RecordingProxy(upstream=upstream.base_url) as proxy:
        client = sdk(proxy.base_url)
        with (
            client.beta.sessions.events.stream(SESSION_ID) as a,  # exchange 1
            client.beta.sessions.events.stream(OTHER_SESSION_ID) as b,  # exchange 2
        ):
            client.beta.sessions.events.send(SESSION_ID, events=[user_message("Go")])  # 3
            client.beta.sessions.events.send(SESSION_ID, events=[user_message("Again")])  # 4
            client.beta.sessions.events.send(OTHER_SESSION_ID, events=[user_message("Go")])  # 5
            upstream.push(SESSION_ID, "sevt_a")
            assert next(iter(a)).id == "sevt_a"
            upstream.push(OTHER_SESSION_ID, "sevt_b")
            assert next(iter(b)).id == "sevt_b"
            upstream.frames[SESSION_ID].put(None)
            upstream.frames[OTHER_SESSION_ID].put(None)
        exchanges = proxy.cassette().exchanges
        [on_a], [on_b] = recorded_events(proxy, STREAM_PATH), recorded_events(proxy, other_stream)

    assert [ex["request"]["path"] for ex in exchanges[2:]] == [
        SEND_PATH,
        SEND_PATH,
        f"/v1/sessions/{OTHER_SESSION_ID}/events",
    ]
    assert on_a["after"] == 4, on_a
    assert on_b["after"] == 5, on_b


def test_record_command_runs_a_command_through_the_proxy(tmp_path):
    source_path, out = tmp_path / "source.jsonl", tmp_path / "rec" / "out.jsonl"
    cassette = source_cassette()
    cassette.exchanges = cassette.exchanges[:1]
    cassette.save(source_path)
    child = (
        "import anthropic; "
        "c = anthropic.Anthropic(max_retries=0, timeout=5, _strict_response_validation=True); "
        f"print(c.beta.agents.create(**{AGENT_REQUEST!r}).id)"
    )
    env = {**os.environ, "ANTHROPIC_API_KEY": BEARER_SECRET}
    with ReplayServer(source_path) as replay:
        done = subprocess.run(
            record_command(out, replay.base_url, sys.executable, "-c", child), **RUN, env=env
        )
        assert done.returncode == 0, done.stderr
        assert replay.unplayed() == []
        failing = (sys.executable, "-c", "raise SystemExit(3)")
        failed = subprocess.run(record_command(out, replay.base_url, *failing), **RUN, env=env)
    base_url, agent_id = done.stdout.split()
    assert base_url.startswith("http://127.0.0.1:") and agent_id == AGENT_ID
    recorded = Cassette.load(out)
    assert normalised(recorded.exchanges) == normalised(cassette.exchanges)
    assert BEARER_SECRET not in out.read_text()
    assert failed.returncode == 3
    assert Cassette.load(out.with_name("out.failed.jsonl")).exchanges == []
    assert (
        Cassette.load(out).exchanges == recorded.exchanges
    )  # a failed run leaves the good cassette alone


# -- credentials: each protection on its own --------------------------------------------------
#
# The recorder keeps credentials out of a cassette in independent ways: request headers are not
# stored; only allowlisted response headers are; the values of credential headers (the token
# after "Bearer", each cookie piece, any header named like a credential) are replaced by
# [REDACTED] in every stored string and JSON key, inside SSE entries and inside decoded
# base64 bodies; JSON fields named like credentials are redacted whoever sent them. Each test
# below fails when its own protection is removed and the others still work.

KEY = "sk-ant-api03-echoKEY_0123456789-abcdef"  # the caller's key, which the upstream echoes
ISSUED = "issued-by-upstream-7f3a9c1e"  # a credential only the upstream knows
# JSON field names (any depth, any case) whose value is a credential, spelled out here on purpose
# rather than imported: each one is checked on its own with a value no header carried.
CREDENTIAL_NAMED = [
    "access_token",
    "api_key",
    "authorization",
    "authorization_token",
    "client_secret",
    "password",
    "refresh_token",
    "secret",
    "secret_value",
    "token",
    "X-Api-Key",
]
PNG = b"\x89PNG\r\n\x1a\n\x00"
VAULT_ID = "vlt_011CZkZpUoPuxVjHv6DJx4Nc"
VAULT_SECRETS = {
    "token": "static-bearer-for-mcp-1a2b3c",
    "access_token": "oauth-access-4d5e6f7a8b",
    "refresh_token": "oauth-refresh-9c0d1e2f3a",
    "client_secret": "oauth-client-4b5c6d7e8f",
    "secret_value": "env-var-secret-0a1b2c3d",
}
CARRIERS = {  # how the caller sends KEY; None: the real SDK (Authorization: Bearer KEY)
    "bearer-via-sdk": None,
    "x-api-key": {"x-api-key": KEY},  # as the API's cURL examples do
    "cookie-piece": {"cookie": f"theme=dark; session={KEY}"},
    "auth-named-header": {"x-custom-auth-token": KEY},
}


def caller_key(headers) -> str:
    """The credential a request carried, however it was sent: what a careless upstream echoes."""
    auth = headers.get("authorization", "")
    cookie = SimpleCookie(headers.get("cookie", ""))
    return (
        headers.get("x-api-key")
        or headers.get("x-custom-auth-token")
        or (auth[len("Bearer ") :] if auth.startswith("Bearer ") else "")
        or (cookie["session"].value if "session" in cookie else "no credential")
    )


def echo_response(path: str, key: str) -> tuple[int, str, bytes]:
    """Status, content type and body the echo upstream answers `path` with, `key` inside."""
    if path == "/v1/echo/note":  # under an innocent name, in free text, as a name
        body = {"note": key, "items": [{"text": f"called with {key} today"}], key: "a name"}
        return 200, "application/json", json.dumps(body).encode()
    if path == "/v1/echo/error":
        error = {"type": "authentication_error", "message": f"invalid x-api-key: {key}"}
        return 401, "application/json", json.dumps({"type": "error", "error": error}).encode()
    if path == "/v1/files/file_text/content":
        return 200, "text/plain; charset=utf-8", f"api_key={key}\n".encode()
    if path == "/v1/files/file_binary/content":
        return 200, "application/octet-stream", PNG + key.encode() + b"\xff\xfe"
    if path == STREAM_PATH:
        message = {
            "type": "agent.message",
            "id": "sevt_1",
            "processed_at": T,
            "content": [{"type": "text", "text": f"Your key is {key}."}],
        }
        idle = {"type": "session.status_idle", "id": "sevt_2", "processed_at": T}
        idle["stop_reason"] = {"type": "end_turn"}
        frames = [
            f": keepalive for {key}",
            "",
            "event: agent.message",
            f"data: {json.dumps(message)}",
        ]
        frames += ["", "event: session.status_idle", f"data: {json.dumps(idle)}", "", ""]
        return 200, "text/event-stream", "\n".join(frames).encode()
    # anything else, such as a vault credential create: credentials the upstream issues
    grants = [{name: issued(name)} for name in CREDENTIAL_NAMED]
    body = {"id": "vcrd_1", "type": "vault_credential", "grants": grants}
    return 200, "application/json", json.dumps(body).encode()


def issued(field: str) -> str:
    return f"issued-{field.lower()}-{ISSUED}"


ECHO_REQUESTS = [
    ("POST", "/v1/echo/note"),
    ("POST", "/v1/echo/error"),
    ("GET", "/v1/files/file_text/content"),
    ("GET", "/v1/files/file_binary/content"),
    ("GET", STREAM_PATH),
]


class CredentialEcho(BaseHTTPRequestHandler):
    """A careless upstream: repeats the caller's credential in its body and in `request-id`, and
    hands out credentials of its own (`ISSUED`) in a cookie and a session header."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        key = caller_key(self.headers)
        status, content_type, data = echo_response(urlsplit(self.path).path, key)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("request-id", f"req_{key}")
        self.send_header("Set-Cookie", f"sid={ISSUED}; HttpOnly")
        self.send_header("x-upstream-session", ISSUED)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET


@pytest.fixture(scope="module")
def echo_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CredentialEcho)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def key_client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url, api_key=KEY, max_retries=0, timeout=5)


def strings_in(value, where: str):
    """Every string in a JSON value, keys included, with where it sits."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{where} key {key!r}", str(key)
            yield from strings_in(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings_in(item, f"{where}[{i}]")
    elif isinstance(value, str):
        yield where, value


BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")


def base64_decodings(text: str):
    """Every way a string, or a run of base64 characters inside it, decodes as base64."""
    for run in BASE64_RUN.findall(text):
        for start in range(4):  # a run need not start where its encoding did
            chunk = run[start:].rstrip("=")
            chunk = chunk[:-1] if len(chunk) % 4 == 1 else chunk  # one char short of a byte
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    yield decode(chunk + "=" * (-len(chunk) % 4))
                except ValueError:
                    pass


def assert_secret_absent(path: Path, secret: str) -> None:
    """`secret` is nowhere in the written cassette: not in its raw bytes, not in any string or
    key at any depth (SSE data and comments included), not inside anything base64 decodes."""
    raw = path.read_bytes()
    found = ["raw bytes"] if secret.encode() in raw else []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        for where, text in strings_in(json.loads(line), f"line {n}"):
            if secret in text:
                found.append(where)
            elif any(secret.encode() in data for data in base64_decodings(text)):
                found.append(f"{where} (base64-decoded)")
    assert not found, f"{secret!r} was written to {path.name}: {found}"


def test_assert_secret_absent_finds_every_hidden_copy(tmp_path):
    """The checker itself: a secret hidden as a key, in a comment or in base64 is found."""
    secret = "sk-ant-hidden-0123456789"
    blob = base64.b64encode(b"\x00\x01" + secret.encode()).decode()
    hiding_places = [
        {"json": {secret: 1}},
        {"sse": [{"delay_ms": 0, "comment": f"ping {secret}"}]},
        {"body_b64": blob},
        {"json": {"note": f"see {blob}."}},
        {"text": base64.urlsafe_b64encode(b"x" + secret.encode()).decode()},
    ]
    header = new_header("recorded", T, SDK, "x")
    for i, body in enumerate(hiding_places):
        path = tmp_path / f"{i}.jsonl"
        Cassette(header, [exchange("GET", "/v1/x", body)]).save(path)
        with pytest.raises(AssertionError, match="was written"):
            assert_secret_absent(path, secret)
    Cassette(header, [exchange("GET", "/v1/x", {"json": {"note": REDACTED}})]).save(path)
    assert_secret_absent(path, secret)


def record_echoes(base_url: str, headers: dict | None) -> None:
    """Every request in ECHO_REQUESTS, by the real SDK (headers None) or raw httpx2."""
    if headers is None:
        client = key_client(base_url)
        client.post("/v1/echo/note", body={"note": KEY}, cast_to=object)  # the key sent in a body
        with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
            client.post("/v1/echo/error", cast_to=object)
        assert client.beta.files.download("file_text").text() == f"api_key={KEY}\n"
        assert client.beta.files.download("file_binary").read() == PNG + KEY.encode() + b"\xff\xfe"
        with client.beta.sessions.events.stream(SESSION_ID) as stream:
            assert [event.type for event in stream] == ["agent.message", "session.status_idle"]
        return
    with httpx2.Client(base_url=base_url, headers=headers, timeout=5) as http:
        for method, path in ECHO_REQUESTS:
            body = {"note": KEY} if method == "POST" else None
            answer = http.request(method, path, json=body, params={"ref": KEY})
            assert KEY.encode() in answer.content, f"{path}: the upstream did not echo the key"


@pytest.mark.parametrize("carrier", list(CARRIERS))
def test_the_key_is_scrubbed_wherever_the_upstream_echoes_it(tmp_path, echo_upstream, carrier):
    """The value of every credential header is collected and replaced by [REDACTED] wherever
    the upstream echoes it: under an innocent name, in free text, as a JSON key, in an error
    message, a text/plain body, a binary body, an SSE comment and data frame, `request-id`.

    The carriers single out how a value is collected: `bearer-via-sdk` the token after
    "Bearer", `cookie-piece` a cookie's value, `auth-named-header` a header named like a
    credential, `x-api-key` the raw header of the cURL examples.
    """
    out = tmp_path / "echo.jsonl"
    with RecordingProxy(upstream=echo_upstream) as proxy:
        record_echoes(proxy.base_url, CARRIERS[carrier])
        proxy.save(out)

    assert_secret_absent(out, KEY)
    recorded = Cassette.load(out).exchanges
    assert [ex["request"]["path"] for ex in recorded] == [path for _, path in ECHO_REQUESTS]
    for ex in recorded:  # each echo is kept, with the key replaced, so the check above is not empty
        status, content_type, data = echo_response(ex["request"]["path"], REDACTED)
        response = {k: v for k, v in ex["response"].items() if k != "headers"}
        if "sse" in response:
            response["sse"] = [
                {k: v for k, v in e.items() if k != "delay_ms"} for e in ex["response"]["sse"]
            ]
            expected = {"sse": [frame_entry(f)[0] for f in SSEParser().feed(data)]}
        else:
            expected = response_body(content_type, data)
        assert response == {"status": status, **expected}, ex["request"]["path"]
        assert ex["response"]["headers"]["request-id"] == f"req_{REDACTED}"
    assert recorded[0]["request"]["json"] == {"note": REDACTED}


def test_request_headers_are_not_stored(tmp_path, echo_upstream):
    """No request header is stored, so a credential in one whose name gives no hint (and which
    the upstream does not echo) cannot reach the cassette either."""
    opaque = "opaque-session-handle-5e8d2b7a"
    out = tmp_path / "headers.jsonl"
    with RecordingProxy(upstream=echo_upstream) as proxy:
        httpx2.post(f"{proxy.base_url}/v1/echo/note", headers={"x-session-handle": opaque}, json={})
        proxy.save(out)

    assert_secret_absent(out, opaque)
    [recorded] = Cassette.load(out).exchanges
    assert recorded["request"] == {"method": "POST", "path": "/v1/echo/note", "json": {}}


def test_only_allowlisted_response_headers_are_stored(tmp_path, echo_upstream):
    """A credential the upstream hands out in a header (Set-Cookie, a session header) is not
    stored: of the response headers only STORED_RESPONSE_HEADERS are kept."""
    out = tmp_path / "response-headers.jsonl"
    with RecordingProxy(upstream=echo_upstream) as proxy:
        answer = httpx2.post(f"{proxy.base_url}/v1/echo/note", json={})
        assert answer.headers["x-upstream-session"] == ISSUED  # passed through to the caller
        proxy.save(out)

    assert_secret_absent(out, ISSUED)
    [recorded] = Cassette.load(out).exchanges
    assert set(recorded["response"]["headers"]) == {"content-type", "request-id"}


def test_json_fields_named_like_credentials_are_redacted(tmp_path, echo_upstream):
    """Credentials no header carried are redacted by field name: the vault credentials a client
    creates (the request's `auth` object, redacted as a whole), and one credential per name in
    CREDENTIAL_NAMED that the upstream hands out (in a list in the response)."""
    auths = [
        {
            "type": "static_bearer",
            "token": VAULT_SECRETS["token"],
            "mcp_server_url": "https://m.example",
        },
        {
            "type": "mcp_oauth",
            "access_token": VAULT_SECRETS["access_token"],
            "mcp_server_url": "https://m.example",
            "refresh": {
                "client_id": "client-id",
                "refresh_token": VAULT_SECRETS["refresh_token"],
                "token_endpoint": "https://auth.example/token",
                "token_endpoint_auth": {
                    "type": "client_secret_post",
                    "client_secret": VAULT_SECRETS["client_secret"],
                },
            },
        },
        {
            "type": "environment_variable",
            "secret_name": "GITHUB_TOKEN",
            "secret_value": VAULT_SECRETS["secret_value"],
            "networking": {"type": "unrestricted"},
        },
    ]
    out = tmp_path / "vault.jsonl"
    with RecordingProxy(upstream=echo_upstream) as proxy:
        client = key_client(proxy.base_url)
        for auth in auths:
            assert client.beta.vaults.credentials.create(VAULT_ID, auth=auth).id == "vcrd_1"
        proxy.save(out)

    for secret in [*VAULT_SECRETS.values(), *map(issued, CREDENTIAL_NAMED)]:
        assert_secret_absent(out, secret)
    recorded = Cassette.load(out).exchanges
    assert [ex["request"]["json"] for ex in recorded] == [{"auth": REDACTED}] * len(auths)
    assert recorded[0]["response"]["json"]["grants"] == [{n: REDACTED} for n in CREDENTIAL_NAMED]


# -- credentials by name: wherever a credential-named value sits ------------------------------
#
# A credential no header carried is found by the name it sits under (is_credential_name): a
# query parameter, a JSON field at any depth of a request or response body or of SSE event
# data, a multipart text field, a response header. Each case below is recorded through the
# proxy from a replay server that answers it, then the written file is searched.

NAMED = "named-cred-7d41c9e2b5"  # a credential only its name gives away
NAMED_TOO = "named-cred-other-3a8f60d1"
NAMED_NUMBER = 918273645
OK = {"json": {"id": "obj_1", "type": "thing"}}


def case(request: dict, response: dict, *secrets) -> tuple[dict, dict, list[str]]:
    """A scripted exchange (200 unless the response says otherwise) and the credentials in it."""
    return (
        {"method": "POST", "path": "/v1/things", **request},
        {"status": 200, "headers": {"request-id": "req_named"}, **response},
        [str(secret) for secret in secrets or (NAMED,)],
    )


NAMED_CASES = {
    "query-api_key": case({"method": "GET", "query": {"api_key": [NAMED]}}, OK),
    "query-token": case({"method": "GET", "query": {"token": [NAMED]}}, OK),
    "query-access_token": case({"method": "GET", "query": {"access_token": [NAMED]}}, OK),
    "request-nested-dict": case({"json": {"api_key": {"primary": NAMED}}}, OK),
    "request-auth-subtree": case({"json": {"auth": {"value": NAMED}}}, OK),
    "request-list": case({"json": {"secret": [NAMED, NAMED_TOO]}}, OK, NAMED, NAMED_TOO),
    "request-number": case({"json": {"secret": NAMED_NUMBER}}, OK, NAMED_NUMBER),
    "request-camelCase": case({"json": {"clientSecret": NAMED}}, OK),
    "request-deeply-nested": case(
        {"json": {"a": [{"b": {"c": [{"password": {"d": [NAMED]}}]}}]}}, OK
    ),
    "multipart-text-field": case(
        {
            "multipart": [
                {"name": "api_key", "value": NAMED},
                {
                    "name": "file",
                    "filename": "calc.py",
                    "content_type": "text/x-python",
                    "sha256": hashlib.sha256(UPLOAD).hexdigest(),
                },
            ]
        },
        OK,
    ),
    "response-body-field": case(
        {"method": "GET"}, {"json": {"data": [{"id": "c_1", "client_secret": {"value": NAMED}}]}}
    ),
    "response-plural-secrets": case({"method": "GET"}, {"json": {"secrets": [NAMED]}}),
    "sse-event-data": case(
        {"method": "GET", "path": STREAM_PATH},
        {
            "sse": [
                sse(
                    "agent.mcp_tool_use",
                    id="sevt_1",
                    processed_at=T,
                    name="fetch",
                    input={"url": "https://api.example", "headers": {"X-Auth-Token": NAMED}},
                )
            ]
        },
    ),
}


def wire_options(request: dict) -> dict:
    """httpx2 keyword arguments that send a scripted request's query and body as recorded."""
    options = {"params": request.get("query")}
    if "json" in request:
        options["json"] = request["json"]
    for part in request.get("multipart", []):
        if "value" in part:
            options.setdefault("data", {})[part["name"]] = part["value"]
        else:
            upload = (part["filename"], UPLOAD, part["content_type"])
            options.setdefault("files", {})[part["name"]] = upload
    return options


def record_scripted(out: Path, request: dict, response: dict, headers: dict | None = None) -> Path:
    """Send `request` by raw httpx2 through the proxy to a replay server that answers it with
    `response`; the proxy writes its cassette to `out`, which is returned."""
    header = new_header("scripted", T, SDK, "named credentials")
    source = Cassette(header, [{"request": request, "response": response}])
    with ReplayServer(source) as replay, RecordingProxy(upstream=replay.base_url) as proxy:
        url = proxy.base_url + request["path"]
        answer = httpx2.request(
            request["method"], url, headers=headers, timeout=5, **wire_options(request)
        )
        assert answer.status_code == response["status"], answer.text
        proxy.save(out)
        assert replay.unplayed() == []
    return out


@pytest.mark.parametrize("name", list(NAMED_CASES))
def test_a_value_under_a_credential_name_is_redacted(tmp_path, name):
    """Whatever sits under a credential name (a string, a number, a list, a nested object) is
    nowhere in the cassette, and `[REDACTED]` stands in its place."""
    request, response, secrets = NAMED_CASES[name]
    out = record_scripted(tmp_path / "named.jsonl", request, response)

    for secret in secrets:
        assert_secret_absent(out, secret)
    assert REDACTED in out.read_text(encoding="utf-8")
    Cassette.load(out)


HEADER_NAMES = [
    "x-session-token",
    "x-client-secret",
    "x-db-password",
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "x-auth-user",
]


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_a_header_named_like_a_credential_is_never_stored(tmp_path, monkeypatch, name):
    """A header named like a credential is not stored even when allowlisted, its value sent in
    a request is scrubbed from any echo, and a body field of that name is redacted."""
    monkeypatch.setattr(recorder, "STORED_RESPONSE_HEADERS", (*STORED_RESPONSE_HEADERS, name))
    sent = f"sent-{name}-5b7c9d1e3f"
    given = f"given-{name}-2e4f6a8c0b"
    request = {"method": "POST", "path": "/v1/echo/headers", "json": {}}
    response = {
        "status": 200,
        "headers": {"request-id": "req_headers", name: given},
        "json": {"received": {name: sent}, "given": {name: [given]}},
    }
    out = record_scripted(tmp_path / "headers.jsonl", request, response, headers={name: sent})

    assert_secret_absent(out, sent)
    assert_secret_absent(out, given)
    [recorded] = Cassette.load(out).exchanges
    assert set(recorded["response"]["headers"]) == {"content-type", "request-id"}
    assert recorded["response"]["json"] == {
        "received": {name: REDACTED},
        "given": {name: [REDACTED]},
    }


HARMLESS_FIELDS = {  # names that only mention a credential word, with values a cassette needs
    "input_tokens": 11,
    "output_tokens": 22,
    "cache_read_input_tokens": 33,
    "cache_creation_input_tokens": 44,
    "max_tokens": 1024,
    "budget_tokens": 512,
    "token_count": 7,
    "token_type": "Bearer",
    "token_endpoint": "https://auth.example/token",
    "secret_name": "GITHUB_TOKEN",
    "key_id": "key_0123",
    "keys": ["alpha", "beta"],
    "author": "ada",
}


@pytest.mark.parametrize("name", list(HARMLESS_FIELDS))
def test_a_field_that_only_mentions_a_credential_word_is_kept(tmp_path, name):
    """Token counts and names that describe a credential reach the cassette unchanged: in a
    request body, a response body, SSE event data and a query."""
    value = HARMLESS_FIELDS[name]
    query = {name: [str(value)]}
    usage = {"usage": {name: value}}
    request = {"method": "POST", "path": "/v1/things", "query": query, "json": {name: value}}
    response = {"status": 200, "headers": {"request-id": "req_kept"}, "json": usage}
    out = record_scripted(tmp_path / "kept.jsonl", request, response)
    event = sse("span.model_request_end", id="sevt_1", processed_at=T, **usage)
    stream = {"method": "GET", "path": STREAM_PATH}
    streamed = record_scripted(tmp_path / "stream.jsonl", stream, {"status": 200, "sse": [event]})

    for path in (out, streamed):
        assert REDACTED not in path.read_text(encoding="utf-8")
    [recorded] = Cassette.load(out).exchanges
    assert recorded["request"]["query"] == query
    assert recorded["request"]["json"] == {name: value}
    assert recorded["response"]["json"] == usage
    [recorded] = Cassette.load(streamed).exchanges
    assert recorded["response"]["sse"][0]["data"] == event["data"]


CREDENTIAL_LIKE = [
    "x-session-token",
    "X-Api-Key",
    "apiKey",
    "APIKey",
    "api_key",
    "authorization",
    "Proxy-Authorization",
    "x-auth-user",
    "x-custom-auth-token",
    "oauth",
    "set-cookie",
    "client_secret",
    "secret_value",
    "passwd",
    "refresh_token",
    "has_refresh_token",  # kept all the same when it holds a boolean (see the scrub test)
]
NOT_CREDENTIAL_LIKE = [
    *HARMLESS_FIELDS,
    "request-id",
    "content-type",
    "retry-after",
    "x-should-retry",
    "api_key_id",
    "partial_key_hint",
    "token_lifetime_seconds",
    "secretary",
    "keyboard",
    "tokenizer",
]


@pytest.mark.parametrize("name", CREDENTIAL_LIKE)
def test_is_credential_name_says_yes(name):
    """A name that holds a credential, whatever its case or separators."""
    assert is_credential_name(name)


@pytest.mark.parametrize("name", NOT_CREDENTIAL_LIKE)
def test_is_credential_name_says_no(name):
    """A name that only mentions a credential word, or describes one, or is no credential at all."""
    assert not is_credential_name(name)


def test_scrub_redacts_the_whole_value_under_a_credential_name():
    """Strings, numbers and objects become the marker, a list keeps its length, and what holds
    no credential (null, "", a boolean) stays; names beside them are untouched."""
    stored = {
        "secret": ["a-credential", "b-credential"],
        "api_key": {"primary": "sk-primary"},
        "auth": {"value": "x"},
        "pin_password": 1234,
        "token": None,
        "password": "",
        "has_refresh_token": True,
        "usage": {"input_tokens": 5},
    }
    assert scrub(stored, []) == {
        "secret": [REDACTED, REDACTED],
        "api_key": REDACTED,
        "auth": REDACTED,
        "pin_password": REDACTED,
        "token": None,
        "password": "",
        "has_refresh_token": True,
        "usage": {"input_tokens": 5},
    }
