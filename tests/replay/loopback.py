"""What the replay server and the recording proxy share: a threaded HTTP/1.1 server on
127.0.0.1 that runs in the background, and a handler that speaks to the SDK the way it expects.
"""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class LoopbackHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes leave at once, not after the peer's delayed ACK
    owner: Any  # the LoopbackServer this handler answers for

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the owner keeps the record
        pass

    def handle(self) -> None:
        with contextlib.suppress(
            *CLIENT_GONE
        ):  # a client dropping a kept-alive connection is normal
            super().handle()

    def read_body(self) -> bytes:
        """The request body, whether sized by Content-Length or sent chunked."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def send_api_error(self, status: int, error_type: str, message: str) -> None:
        """An error in the API's shape; `x-should-retry: false` so the SDK reports it at once."""
        data = json.dumps(
            {"type": "error", "error": {"type": error_type, "message": message}}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-should-retry", "false")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def write_chunk(self, data: bytes) -> None:
        """One chunk of a chunked body, flushed: SSE frames must reach the client as they happen."""
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


class LoopbackServer:
    """`with Subclass(...) as server:` serves at `server.base_url` until the block ends."""

    handler: type[LoopbackHandler]

    def __init__(self, port: int = 0):
        handler = type("Handler", (self.handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for a serve loop, so only when one runs
            self._httpd.shutdown()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
