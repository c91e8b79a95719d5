"""A stream that never ends, or a server that never flushes, fails a test instead of hanging.

Two bounds keep a hang from reaching CI: pytest-timeout (`timeout` in pyproject.toml) ends any
test, and the SDK's own `timeout=` bounds each read of a stream test that sets one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import anthropic
import pytest

from tests.replay.cassette import Cassette, new_header
from tests.replay.recorder import RecordingProxy
from tests.replay.server import ReplayServer
from tests.replay_fixtures import SDK

SESSION_ID = "sesn_011CZkZAtmR3yMPDzynEDxu7"
T = "2026-05-01T12:00:00Z"

# A test file run in a child pytest: it reads event streams that never end.
NEVER_ENDING = """
import socket
import threading

import httpx2

HELD = []  # connections kept open so the client waits, as it would on a stuck server


def serve(reply: bytes) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    HELD.append(listener)

    def answer():
        connection, _ = listener.accept()
        HELD.append(connection)
        connection.recv(65536)
        connection.sendall(reply)

    threading.Thread(target=answer, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def read_stream(base_url: str) -> None:
    # httpx2 is what the SDK streams with (importing the SDK itself would cost the child seconds)
    with httpx2.stream("GET", f"{base_url}/v1/sessions/sesn_1/events/stream", timeout=60) as response:
        for _ in response.iter_bytes():
            pass


def test_headers_then_silence():
    read_stream(serve(
        b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\n"
        b"transfer-encoding: chunked\\r\\n\\r\\n"
    ))


def test_nothing_ever_flushed():
    read_stream(serve(b""))
"""


def test_a_stream_that_never_ends_fails_with_a_timeout(tmp_path):
    """pytest-timeout turns an SDK stream read that never returns into a failure with a message.

    The child runs outside this repository's configuration (its own ini, plugin autoload off)
    with only pytest-timeout loaded and a 0.5 s limit; both of its tests must fail with
    "Timeout", within seconds.
    """
    (tmp_path / "test_never_ending.py").write_text(textwrap.dedent(NEVER_ENDING))
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 0.5\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_timeout", "-p", "no:cacheprovider"]
        + ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-q", "-rf", "--tb=line"]
        + ["test_never_ending.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    output = child.stdout + child.stderr
    assert child.returncode == 1, output
    assert "2 failed" in output, output
    for name in ("test_headers_then_silence", "test_nothing_ever_flushed"):
        assert f"FAILED test_never_ending.py::{name} - Failed: Timeout" in output, output
    assert took < 20, f"the child took {took:.1f}s"


def test_this_run_has_a_timeout(pytestconfig):
    """This very run has pytest-timeout loaded with a finite limit (pyproject: timeout = 120)."""
    assert 0 < float(pytestconfig.getini("timeout")) <= 600


class _NeverFlushed:
    """A buffered socket writer whose flush() does nothing: bytes leave only when it closes."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, data):
        return self._inner.write(data)

    def flush(self):
        pass

    def close(self):
        self._inner.close()  # BufferedWriter.close() flushes: all of it at the very end

    @property
    def closed(self):
        return self._inner.closed


def never_flushing(server_class):
    """`server_class` with an SSE writer that buffers and never flushes: the regression."""

    class Handler(server_class.handler):
        wbufsize = 1 << 16

        def setup(self):
            super().setup()
            self.wfile = _NeverFlushed(self.wfile)

    return type(f"NeverFlushing{server_class.__name__}", (server_class,), {"handler": Handler})


def stream_first_cassette() -> Cassette:
    """Open the stream, then send: the events wait for the send (exchange 2)."""
    path = f"/v1/sessions/{SESSION_ID}/events"
    idle = {"type": "session.status_idle", "id": "sevt_1", "processed_at": T}
    idle["stop_reason"] = {"type": "end_turn"}
    send = {"type": "user.message", "content": [{"type": "text", "text": "Go"}]}
    exchanges = [
        {
            "request": {"method": "GET", "path": f"{path}/stream"},
            "response": {
                "status": 200,
                "sse": [{"delay_ms": 0, "after": 2, "event": idle["type"], "data": idle}],
            },
        },
        {
            "request": {"method": "POST", "path": path, "json": {"events": [send]}},
            "response": {"status": 200, "json": {"data": [{**send, "id": "sevt_0"}]}},
        },
    ]
    return Cassette(new_header("scripted", T, SDK, "stream first"), exchanges)


@pytest.mark.parametrize("buffered", ["replay server", "recording proxy"])
def test_an_sse_writer_that_never_flushes_fails_a_bounded_stream_test_fast(buffered):
    """With SSE stuck in a buffer, stream-then-send deadlocks: `stream()` waits for headers
    that the server only writes after the send. A stream test with an SDK read timeout
    (`timeout=` on `.stream(...)`, or on the client) gets APITimeoutError within that bound."""
    replay_class = never_flushing(ReplayServer) if buffered == "replay server" else ReplayServer
    proxy_class = (
        never_flushing(RecordingProxy) if buffered == "recording proxy" else RecordingProxy
    )
    with (
        replay_class(stream_first_cassette()) as replay,
        proxy_class(upstream=replay.base_url) as proxy,
    ):
        client = anthropic.Anthropic(base_url=proxy.base_url, api_key="test", max_retries=0)
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):  # stream() waits for the headers in vain
            with client.beta.sessions.events.stream(SESSION_ID, timeout=0.5):
                pass
        assert time.monotonic() - started < 2
