"""The replay server: answers the real SDK from a cassette over loopback HTTP and SSE.

A cassette is one run of the notebook, and the server plays it in takes. Within a take each
exchange answers one request (first unplayed match wins) and obeys causal order: an exchange
recorded after a write (any request but GET/HEAD) is not played before that write was, so the
replay never shows the fixed file before the task was sent. A GET that cannot be answered
afresh, because its matches are all played or the next one waits on an unsent write, repeats
its last played match: polling `sessions.retrieve` keeps saying what was true then.

When the story's first request (one matching exchange 1, a write such as POST /v1/agents)
comes again and the take cannot answer it afresh, a reader has restarted the kernel and run
the cells from the top: a new take begins with nothing played, and streams of the old take
that still wait on a hold or a delay end at once. Anything else that repeats a write, runs
ahead of the recording or matches nothing gets a 400 whose message is one sentence saying
what happened and what to do. The request log numbers each entry's take; the accounting
(never played, refused) is of the last take.

SSE events are written and flushed one by one at the recorded pace scaled by `speed`
(0 = no waiting), and an event marked `after: N` waits until exchange N, a send, has been
answered in the same take: that is what lets "open the stream, then send" and "send, then
open the stream" both replay.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .cassette import Cassette, canonical_query, request_body
from .loopback import CLIENT_GONE, LoopbackHandler, LoopbackServer
from .matching import closest, request_key
from .sse import sse_frame

MANAGED_AGENTS_BETA = "managed-agents-2026-04-01"
# Response headers that describe the stored body, not the replayed one.
HOP_HEADERS = {"content-length", "transfer-encoding", "content-encoding", "connection"}
READS = ("GET", "HEAD")
RESTART = "restart the kernel and run the cells from the top"


def speed_from_env(default: float = 0.0) -> float:
    return float(os.environ.get("REPLAY_SPEED") or default)


@dataclass
class Take:
    """One run of the story: what it has played and answered, and whether it is over."""

    number: int
    played: list[int] = field(default_factory=list)  # exchange numbers in the order served
    answered: set[int] = field(default_factory=set)  # exchanges whose response was written
    over: threading.Event = field(default_factory=threading.Event)  # a new take or stop()


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
        if "scope_id" in request["query"] and MANAGED_AGENTS_BETA not in self.headers.get(
            "anthropic-beta", ""
        ):
            # As the live API does (seen by the cookbook): scope_id is a Managed Agents parameter.
            message = (
                f"scope_id: unknown field; send the anthropic-beta header {MANAGED_AGENTS_BETA}"
            )
            refused = {
                "take": self.owner.take.number,
                "exchange": None,
                "status": 400,
                "refusal": message,
            }
            self.owner.log.append(
                {"method": self.command, "path": key["path"], "query": key["query"], **refused}
            )
            return self.send_api_error(400, "invalid_request_error", message)
        take, n, refusal = self.owner.match(key)
        entry = {
            "take": take.number,
            "method": self.command,
            "path": key["path"],
            "query": key["query"],
            "exchange": n,
        }
        self.owner.log.append(entry)
        if n is None:
            entry |= {"status": 400, "refusal": refusal}
            return self.send_api_error(400, "invalid_request_error", refusal)
        response = self.owner.cassette.exchanges[n - 1]["response"]
        entry["status"] = response["status"]
        try:
            if "sse" in response:
                self._send_sse(response, take)
            else:
                self._send_plain(response)
        except CLIENT_GONE:
            self.close_connection = True  # a client leaving mid-stream is normal
        finally:
            self.owner.mark_answered(take, n)

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

    def _send_sse(self, response: dict[str, Any], take: Take) -> None:
        self.send_response(response["status"])
        self._send_headers(response, "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # headers at once: the SDK's stream() returns only when they arrive
        for event in response["sse"]:
            if "after" in event and not self.owner.wait_for_answer(take, event["after"]):
                break  # the take is over: end this stream cleanly
            if not self.owner.pause(take, event["delay_ms"]):
                break
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
        self.take = Take(1)
        # Every request: take, method, path, query, exchange, status (and a refusal's sentence).
        self.log: list[dict[str, Any]] = []
        self._keys = [request_key(ex["request"]) for ex in self.cassette.exchanges]
        self._writes = [n for n, key in enumerate(self._keys, 1) if key["method"] not in READS]
        self._lock = threading.Condition()
        super().__init__(port)

    @property
    def played(self) -> list[int]:
        """Exchange numbers (from 1) the last take served, in order."""
        return self.take.played

    def stop(self) -> None:
        with self._lock:
            self.take.over.set()  # streams waiting on a hold or a delay give up
            self._lock.notify_all()
        super().stop()

    def unplayed(self) -> list[int]:
        """Exchange numbers (from 1) that no request of the last take used."""
        return [n for n in range(1, len(self._keys) + 1) if n not in self.take.played]

    def unplayed_report(self) -> str:
        lines = [f"  exchange {n}: {self._describe(n)}" for n in self.unplayed()]
        if not lines:
            return ""
        return f"Recorded exchanges never played (take {self.take.number}):\n" + "\n".join(lines)

    def unmatched(self) -> list[dict[str, Any]]:
        """Log entries of the last take that were refused (HTTP 400)."""
        return [e for e in self.log if e["exchange"] is None and e["take"] == self.take.number]

    def problems(self) -> str:
        """Everything that went wrong with the last take (never played, refused), or ""."""
        refused = [f"Refused {e['method']} {e['path']}: {e['refusal']}" for e in self.unmatched()]
        return "\n".join(filter(None, [self.unplayed_report(), *refused]))

    # -- used by the handler ------------------------------------------------------------

    def match(self, key: dict[str, Any]) -> tuple[Take, int | None, str]:
        """The take and the exchange number that answer a request, or None and the refusal."""
        with self._lock:
            same = [n for n, recorded in enumerate(self._keys, 1) if recorded == key]
            n = next((m for m in same if self._playable(m)), None)
            if n is None and 1 in same and key["method"] not in READS:
                self._new_take()  # a GET is repeated instead: polling is not a restart
                n = 1
            take = self.take
            if n is not None:
                take.played.append(n)
                return take, n, ""
            played = [m for m in take.played if m in same]
            if key["method"] in READS and played:
                return take, played[-1], ""
            return take, None, self._refusal(key, same, played)

    def mark_answered(self, take: Take, n: int) -> None:
        with self._lock:
            take.answered.add(n)
            self._lock.notify_all()

    def wait_for_answer(self, take: Take, n: int) -> bool:
        """Wait until exchange n was answered in this take; False if the take ended first."""
        with self._lock:
            while n not in take.answered and not take.over.is_set():
                self._lock.wait()
        return not take.over.is_set()

    def pause(self, take: Take, delay_ms: int) -> bool:
        """Sleep the recorded gap scaled by speed; False if the take ended meanwhile."""
        if self.speed > 0 and delay_ms > 0:
            return not take.over.wait(delay_ms / 1000 / self.speed)
        return not take.over.is_set()

    # -- takes and causal order (called with the lock held) -------------------------------

    def _playable(self, n: int) -> bool:
        """Not yet played in this take, and every write recorded before it has been."""
        return n not in self.take.played and self._unsent_before(n) is None

    def _unsent_before(self, n: int) -> int | None:
        return next((m for m in self._writes if m < n and m not in self.take.played), None)

    def _new_take(self) -> None:
        self.take.over.set()
        self.take = Take(self.take.number + 1)
        self._lock.notify_all()

    def _refusal(self, key: dict[str, Any], same: list[int], played: list[int]) -> str:
        query = "&".join(f"{k}={v}" for k, values in key["query"].items() for v in values)
        asked = f"{key['method']} {key['path']}" + (f"?{query}" if query else "")
        if waiting := [n for n in same if n not in played]:
            m = self._unsent_before(waiting[0])
            return (
                f"The replay cannot answer {asked} yet: in the recording it comes after"
                f" {self._describe(m)} (exchange {m}), which this run has not sent;"
                f" run the cells above it first, or {RESTART}."
            )
        if played:
            return (
                f"The replay already answered {asked} in this run (recorded exchange"
                f" {played[-1]}) and plays each recording once: {RESTART}."
            )
        numbered = list(enumerate(self.cassette.exchanges, 1))
        # Prefer what is still to be played: a second, differing send is compared with its own recording.
        near = closest(key, [(n, ex) for n, ex in numbered if n not in self.take.played])
        near = near or closest(key, numbered)
        if near is None:
            return f"The replay cannot answer {asked}: the cassette has no exchanges; record one first."
        n, diff = near
        return (
            f"The replay has no recording of {asked}: the closest is exchange {n}"
            f" ({self._describe(n)}),"
            f" where {diff}; run the cell as it was recorded, or run the notebook live (with"
            " ANTHROPIC_API_KEY) to try a change."
        )

    def _describe(self, n: int) -> str:
        return f"{self._keys[n - 1]['method']} {self._keys[n - 1]['path']}"
