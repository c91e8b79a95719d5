"""The replay server: answers the real SDK from a cassette over loopback HTTP and SSE.

Each exchange answers one request (first unused match wins; a GET whose matches are all
used repeats the last one, so polling more often than recorded is fine). SSE events are
written and flushed one by one at the recorded pace scaled by `speed` (0 = no waiting),
and an event marked `after: N` waits until exchange N, a send, has been answered: that is
what lets "open the stream, then send" and "send, then open the stream" both replay.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .cassette import Cassette, canonical_query, request_body
from .loopback import CLIENT_GONE, LoopbackHandler, LoopbackServer
from .matching import closest, request_key
from .sse import sse_frame

# Response headers that describe the stored body, not the replayed one.
HOP_HEADERS = {"content-length", "transfer-encoding", "content-encoding", "connection"}


def speed_from_env(default: float = 0.0) -> float:
    return float(os.environ.get("REPLAY_SPEED") or default)


class _ReplayHandler(LoopbackHandler):
    owner: ReplayServer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_DELETE = do_GET

    def _serve(self) -> None:
        url = urlsplit(self.path)
        body = self.read_body()
        request = {
            "method": self.command,
            "path": unquote(url.path),
            "query": canonical_query(url.query),
        }
        key = request_key(request | request_body(self.headers.get("content-type", ""), body))
        n, reason = self.owner.match(key)
        entry = {"method": self.command, "path": key["path"], "query": key["query"], "exchange": n}
        self.owner.log.append(entry)
        if n is None:
            entry["status"] = 400
            return self.send_api_error(400, "invalid_request_error", reason)
        response = self.owner.cassette.exchanges[n - 1]["response"]
        entry["status"] = response["status"]
        try:
            if "sse" in response:
                self._send_sse(response)
            else:
                self._send_plain(response)
        except CLIENT_GONE:
            self.close_connection = True  # a client leaving mid-stream is normal
        finally:
            self.owner.mark_answered(n)

    def _send_plain(self, response: dict[str, Any]) -> None:
        if "json" in response:
            data, ctype = json.dumps(response["json"]).encode(), "application/json"
        elif "text" in response:
            data, ctype = response["text"].encode(), "text/plain; charset=utf-8"
        elif "body_b64" in response:
            data, ctype = base64.b64decode(response["body_b64"]), "application/octet-stream"
        else:
            data, ctype = b"", "application/json"
        self.send_response(response["status"])
        self._send_headers(response, ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, response: dict[str, Any]) -> None:
        self.send_response(response["status"])
        self._send_headers(response, "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # headers at once: the SDK's stream() returns only when they arrive
        for event in response["sse"]:
            if "after" in event and not self.owner.wait_for_answer(event["after"]):
                return
            if not self.owner.pause(event["delay_ms"]):
                return
            self.write_chunk(sse_frame(event))
        self.write_chunk(b"")

    def _send_headers(self, response: dict[str, Any], default_type: str) -> None:
        headers = {
            k.lower(): v
            for k, v in response.get("headers", {}).items()
            if k.lower() not in HOP_HEADERS
        }
        headers.setdefault("content-type", default_type)
        for name, value in headers.items():
            self.send_header(name, value)


class ReplayServer(LoopbackServer):
    """`with ReplayServer(cassette) as fake:` serves at `fake.base_url` until the block ends."""

    handler = _ReplayHandler

    def __init__(self, cassette: Cassette | str | Path, port: int = 0, speed: float = 0.0):
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.speed = speed
        self.played: list[int] = []  # exchange numbers (from 1) in the order they were served
        self.log: list[dict[str, Any]] = []  # every request: method, path, query, exchange, status
        self._answered: set[int] = set()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        super().__init__(port)

    def stop(self) -> None:
        self._stopping.set()  # streams waiting on a hold or a delay give up
        with self._lock:
            self._lock.notify_all()
        super().stop()

    def unplayed(self) -> list[int]:
        """Exchange numbers (from 1) that no request used."""
        return [n for n in range(1, len(self.cassette.exchanges) + 1) if n not in self.played]

    def unplayed_report(self) -> str:
        lines = []
        for n in self.unplayed():
            request = self.cassette.exchanges[n - 1]["request"]
            lines.append(f"  exchange {n}: {request['method']} {request['path']}")
        return "Recorded exchanges never played:\n" + "\n".join(lines) if lines else ""

    def unmatched(self) -> list[dict[str, Any]]:
        return [entry for entry in self.log if entry["exchange"] is None]

    def problems(self) -> str:
        """Everything that went wrong with this replay (never-played and unmatched), or ""."""
        unmatched = [f"Unmatched request: {e['method']} {e['path']}" for e in self.unmatched()]
        return "\n".join(filter(None, [self.unplayed_report(), *unmatched]))

    # -- used by the handler ------------------------------------------------------------

    def match(self, key: dict[str, Any]) -> tuple[int | None, str]:
        """The exchange number for a request, or None and the reason it matched nothing."""
        exchanges = self.cassette.exchanges
        with self._lock:
            same = [n for n, ex in enumerate(exchanges, 1) if request_key(ex["request"]) == key]
            fresh = [n for n in same if n not in self.played]
            if fresh:
                self.played.append(fresh[0])
                return fresh[0], ""
            if same and key["method"] == "GET":
                return same[-1], ""
        query = "&".join(f"{k}={v}" for k, values in key["query"].items() for v in values)
        described = f"{key['method']} {key['path']}" + (f"?{query}" if query else "")
        if same:
            return (
                None,
                f"Replay: {described} was already played (exchange {same[-1]}) and is not a GET to repeat.",
            )
        numbered = list(enumerate(exchanges, 1))
        # Prefer what is still to be played: a second, differing send is compared with its own recording.
        near = closest(key, [(n, ex) for n, ex in numbered if n not in self.played]) or closest(
            key, numbered
        )
        if near is None:
            return None, f"Replay: {described} matches nothing; the cassette has no exchanges."
        n, diff = near
        recorded = exchanges[n - 1]["request"]
        return None, (
            f"Replay: no recorded exchange matches {described}. "
            f"Closest is exchange {n} ({recorded['method']} {recorded['path']}); first difference: {diff}."
        )

    def mark_answered(self, n: int) -> None:
        with self._lock:
            self._answered.add(n)
            self._lock.notify_all()

    def wait_for_answer(self, n: int) -> bool:
        with self._lock:
            while n not in self._answered and not self._stopping.is_set():
                self._lock.wait(0.5)
        return not self._stopping.is_set()

    def pause(self, delay_ms: int) -> bool:
        """Sleep the recorded gap scaled by speed; False if the server is stopping."""
        if self.speed > 0 and delay_ms > 0:
            return not self._stopping.wait(delay_ms / 1000 / self.speed)
        return not self._stopping.is_set()
