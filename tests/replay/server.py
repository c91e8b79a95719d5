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

Interactive mode (`interactive=True`: the `run` verb, and so `make lab`; `serve --interactive`)
is for a reader, who may stop a cell anywhere and run the ones below it. Interrupting the kernel
while turn 1 streams leaves the story's later writes unsent, so the causal order refuses every
request recorded after them, the cleanup cell's included. Some requests, though, have an answer
that does not depend on the story's order: what the live API would say about a resource the
cassette recorded, given what this take has played. In interactive mode a request that strict
matching refuses is answered when it is one of these order-free requests (ids are the
cassette's):

- `GET /v1/sessions/{id}`: the session's last recorded retrieve (else its create response) with
  the status this take implies: the last of the session's status events written to a stream and
  user.interrupt sends received, whichever came later (an interrupt leaves it idle, a later
  `session.status_running`, a new turn, makes it running again); the recorded status when the
  take has implied none. Once archived in this take: the archive's body.
- `POST /v1/sessions/{id}/events` whose events are all `user.interrupt`: the recorded echo of
  the same request if the cassette has one, else a fresh echo (new id, processed now); the
  session is idle from then on.
- `POST /v1/{sessions|environments|agents}/{id}/archive`: the last recorded 200 archive of that
  id. A 400 recorded before it (the live API refusing a session still running) is not repeated:
  the cleanup cell interrupts a running session before it archives.
- `GET /v1/sessions/{id}/events`: the persisted events this take has written to the session's
  streams, in order, each id once (`order` and `limit` honoured, other filters ignored);
  previews (`event_start`, `event_delta`) and `error` frames are not persisted. An event counts
  from the moment it is written, so one written as the client left counts (TCP cannot tell).
- `GET /v1/files?scope_id={session}`: an empty page, for nothing this take has played says the
  agent saved a file yet.

Causal order alone would play a read recorded after the task was sent (a stream is no write) as
soon as it was sent: the history and the outputs of the whole turn, though the reader cut it
short. So in interactive mode a recorded read of a session's state (retrieve, events.list, the
files it scopes) also waits until every stream of that session recorded before it was written
to its last event in this take; until then the read repeats its last played match, if any, as in
strict mode, or gets the order-free answer from what the take has written.

Everything else keeps its one-sentence refusal. An order-free answer plays no exchange: it
neither moves the causal order on nor counts in the accounting (a later strict match still plays
the recorded exchange), and it is no refusal: the log has it with `exchange: None`, `status: 200`
and an `order_free` reason. Strict mode (the default, for the pytest plugin, nbval, `make run`
and `make test`) never answers out of order.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
# A session's status after each status event, as `sessions.retrieve` says it.
STATUS_AFTER = {
    "session.status_running": "running",
    "session.status_idle": "idle",
    "session.status_terminated": "terminated",
    "session.status_rescheduled": "rescheduling",
}
PREVIEWS = ("event_start", "event_delta")  # streamed, never persisted in the history
SESSION_PATH = re.compile(r"/v1/sessions/([^/]+)(/.*)?")
ARCHIVE_PATH = re.compile(r"/v1/(?:sessions|environments|agents)/([^/]+)/archive")


def speed_from_env(default: float = 0.0) -> float:
    return float(os.environ.get("REPLAY_SPEED") or default)


@dataclass
class Take:
    """One run of the story: what it has played and answered, and whether it is over."""

    number: int
    played: list[int] = field(default_factory=list)  # exchange numbers in the order served
    answered: set[int] = field(default_factory=set)  # exchanges whose response was written
    over: threading.Event = field(default_factory=threading.Event)  # a new take or stop()
    # What the live API would now say, for interactive mode's order-free answers:
    events: dict[str, list[dict]] = field(default_factory=dict)  # session: persisted events written
    status: dict[str, str] = field(default_factory=dict)  # session: status implied by this take
    archived: dict[str, dict] = field(default_factory=dict)  # resource id: its archive body
    ended: set[int] = field(default_factory=set)  # streams written to their last event


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
        order_free = self.owner.order_free(key, take) if n is None else None
        entry = {
            "take": take.number,
            "method": self.command,
            "path": key["path"],
            "query": key["query"],
            "exchange": n,
        }
        if order_free is not None:
            entry |= {"status": 200, "order_free": order_free[0]}
        self.owner.log.append(entry)
        if order_free is not None:
            return self._send_plain(order_free[1])
        if n is None:
            entry |= {"status": 400, "refusal": refusal}
            return self.send_api_error(400, "invalid_request_error", refusal)
        response = self.owner.cassette.exchanges[n - 1]["response"]
        entry["status"] = response["status"]
        self.owner.note_answer(take, key, response)
        try:
            if "sse" in response:
                self._send_sse(response, take, n, session_of(key["path"]))
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

    def _send_sse(self, response: dict[str, Any], take: Take, n: int, session: str | None) -> None:
        self.send_response(response["status"])
        self._send_headers(response, "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # headers at once: the SDK's stream() returns only when they arrive
        events = response["sse"]
        for i, event in enumerate(events, 1):
            if "after" in event and not self.owner.wait_for_answer(take, event["after"]):
                break  # the take is over: end this stream cleanly
            if not self.owner.pause(take, event["delay_ms"]):
                break
            # Noted as it is written, just before: a client that reads it and asks at once
            # (retrieve, events.list) finds the take knows it.
            self.owner.note_written(take, session, event, ended=n if i == len(events) else None)
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

    def __init__(
        self,
        cassette: Cassette | str | Path,
        port: int = 0,
        speed: float = 0.0,
        interactive: bool = False,
    ):
        self.cassette = cassette if isinstance(cassette, Cassette) else Cassette.load(cassette)
        self.speed = speed
        self.interactive = interactive  # answer order-free requests strict order refuses
        self.take = Take(1)
        # Every request: take, method, path, query, exchange, status, and a refusal's sentence
        # or an order-free answer's reason.
        self.log: list[dict[str, Any]] = []
        self._keys = [request_key(ex["request"]) for ex in self.cassette.exchanges]
        self._writes = [n for n, key in enumerate(self._keys, 1) if key["method"] not in READS]
        self._sessions = {  # the recorded session ids: in paths, and as created
            *(m[1] for key in self._keys if (m := SESSION_PATH.fullmatch(key["path"]))),
            *(body["id"] for body in self._bodies("POST", "/v1/sessions")),
        }
        # Interactive mode: a recorded read of a session's state waits for its streams before it.
        self._turn_reads = {
            n: [
                m
                for m in range(1, n)
                if "sse" in self.cassette.exchanges[m - 1]["response"]
                and session_of(self._keys[m - 1]["path"]) == sid
            ]
            for n, key in enumerate(self._keys, 1)
            if (sid := _state_read(key)) in self._sessions
        }
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
        """Log entries of the last take that were refused (HTTP 400); order-free answers were not."""
        return [
            e
            for e in self.log
            if e["exchange"] is None and "order_free" not in e and e["take"] == self.take.number
        ]

    def order_free_report(self) -> str:
        """What interactive mode answered out of the recorded order in the last take, or ""."""
        answers = Counter(
            f"{e['method']} {e['path']}: {e['order_free']}"
            for e in self.log
            if "order_free" in e and e["take"] == self.take.number
        )  # a polling view asks often: each answer once, with its count
        lines = [f"  {line}" + (f" ({n} times)" if n > 1 else "") for line, n in answers.items()]
        if not lines:
            return ""
        return f"Answered out of the recorded order (take {self.take.number}):\n" + "\n".join(lines)

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

    def order_free(self, key: dict[str, Any], take: Take) -> tuple[str, dict[str, Any]] | None:
        """In interactive mode, the answer to a refused request that does not depend on the
        story's order, as (reason, response); None when there is none (or the mode is strict)."""
        if not self.interactive:
            return None
        with self._lock:
            answer = self._order_free(key, take)
            if answer is not None:
                self._note(take, key, answer[1])
            return answer

    def note_answer(self, take: Take, key: dict[str, Any], response: dict[str, Any]) -> None:
        """What a played exchange tells the take: an interrupt received, a resource archived."""
        with self._lock:
            self._note(take, key, response)

    def note_written(
        self, take: Take, session: str | None, event: dict[str, Any], ended: int | None
    ) -> None:
        """An SSE entry written to a stream of the session: the event joins the session's
        history in this take and may change its status; `ended`, the stream's exchange number
        when this is its last entry: the turn that stream shows is over in this take."""
        data = event.get("data") if event.get("event") != "error" else None  # error: no event
        with self._lock:
            if session is not None and isinstance(data, dict):
                if "id" in data and data.get("type") not in PREVIEWS:
                    take.events.setdefault(session, []).append(data)
                if status := STATUS_AFTER.get(data.get("type")):
                    take.status[session] = status
            if ended is not None:
                take.ended.add(ended)

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
        """Not yet played in this take, and every write recorded before it has been (and in
        interactive mode, for a read of a session's state, every stream of the session too)."""
        return (
            n not in self.take.played
            and self._unsent_before(n) is None
            and self._unended_before(n) is None
        )

    def _unsent_before(self, n: int) -> int | None:
        return next((m for m in self._writes if m < n and m not in self.take.played), None)

    def _unended_before(self, n: int) -> int | None:
        """Interactive mode: a stream recorded before n, a read of its session's state, that
        this take has not written to its end. Such a read says how that turn ended (its
        history, the files the agent saved, the status); after a turn cut short it is not
        what the live API would say, and the order-free answer from the take is."""
        if not self.interactive:
            return None
        return next((m for m in self._turn_reads.get(n, []) if m not in self.take.ended), None)

    def _new_take(self) -> None:
        self.take.over.set()
        self.take = Take(self.take.number + 1)
        self._lock.notify_all()

    def _refusal(self, key: dict[str, Any], same: list[int], played: list[int]) -> str:
        query = "&".join(f"{k}={v}" for k, values in key["query"].items() for v in values)
        asked = f"{key['method']} {key['path']}" + (f"?{query}" if query else "")
        if waiting := [n for n in same if n not in played]:
            m = self._unsent_before(waiting[0])
            if m is None:  # a read of a session's state in interactive mode: order-free instead
                m = self._unended_before(waiting[0])
                return (
                    f"The replay cannot answer {asked} yet: in the recording it comes after"
                    f" the end of {self._describe(m)} (exchange {m}), which this run has not"
                    f" read to its end; run that cell to its end, or {RESTART}."
                )
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

    # -- interactive mode's order-free answers (called with the lock held) ----------------------

    def _order_free(self, key: dict[str, Any], take: Take) -> tuple[str, dict[str, Any]] | None:
        method, path, query = key["method"], key["path"], key["query"]
        if method == "POST" and ARCHIVE_PATH.fullmatch(path):
            # The last 200 recorded: a refused archive (400) before it is not an answer to repeat.
            if recorded := self._recorded({"method": "POST", "path": path, "query": {}}):
                return "the recorded archive", recorded
            return None
        if method == "GET" and path == "/v1/files":
            if query.get("scope_id", [None])[0] in self._sessions:
                return "no outputs yet", _json({"data": [], "next_page": None})
            return None
        session = SESSION_PATH.fullmatch(path)
        if session is None or session[1] not in self._sessions:
            return None
        sid, rest = session[1], session[2] or ""
        if method == "GET" and rest == "":
            return self._session_now(sid, take)
        if method == "GET" and rest == "/events":
            return "the history so far", _json(self._history(take.events.get(sid, []), query))
        if method == "POST" and rest == "/events" and _interrupts(key):
            if echo := self._recorded(key):
                return "the recorded interrupt echo", echo
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            fresh = [
                {**ev, "id": f"sevt_replay{uuid.uuid4().hex[:20]}", "processed_at": now}
                for ev in key["json"]["events"]
            ]
            return "an interrupt", _json({"data": fresh})
        return None

    def _session_now(self, sid: str, take: Take) -> tuple[str, dict[str, Any]] | None:
        """The session as retrieved now: recorded, with the status this take implies."""
        if sid in take.archived:
            return "archived in this take", _json(take.archived[sid])
        path = f"/v1/sessions/{sid}"
        if recorded := self._recorded({"method": "GET", "path": path, "query": {}}):
            body = recorded["json"]
        elif created := [b for b in self._bodies("POST", "/v1/sessions") if b["id"] == sid]:
            recorded, body = None, created[-1]
        elif recorded := self._recorded({"method": "POST", "path": f"{path}/archive", "query": {}}):
            body = recorded["json"]  # its archived_at is not this take's
        else:
            return None
        body = body | {"archived_at": None, "status": take.status.get(sid, body.get("status"))}
        headers = (recorded or {}).get("headers", {})
        return f"status {body['status']}", {"status": 200, "headers": headers, "json": body}

    @staticmethod
    def _history(events: list[dict], query: dict[str, list[str]]) -> dict[str, Any]:
        """A page of the persisted events written so far, each id once. `order` and `limit`
        are honoured, with the offset as the `page` cursor; the other filters (`types`,
        `created_at_*`) are ignored: the cookbook reads the whole history."""
        first: dict[str, dict] = {}  # a reconnect writes events again: each id once, in order
        for ev in events:
            first.setdefault(ev["id"], ev)
        history = list(first.values())
        if query.get("order") == ["desc"]:
            history.reverse()
        page = query.get("page", ["0"])[0]
        start = int(page) if page.isdigit() else 0
        limit = query.get("limit", [""])[0]
        end = start + int(limit) if limit.isdigit() and int(limit) > 0 else len(history)
        return {"data": history[start:end], "next_page": str(end) if end < len(history) else None}

    def _note(self, take: Take, key: dict[str, Any], response: dict[str, Any]) -> None:
        if response.get("status") != 200:
            return
        session = SESSION_PATH.fullmatch(key["path"])
        if key["method"] == "POST" and session and session[2] == "/events" and _interrupts(key):
            take.status[session[1]] = "idle"
        archive = ARCHIVE_PATH.fullmatch(key["path"])
        if key["method"] == "POST" and archive and isinstance(response.get("json"), dict):
            take.archived[archive[1]] = response["json"]

    def _recorded(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The last recorded 200 JSON response to a request like `key`, or None."""
        return next(
            (
                response
                for recorded, ex in reversed(
                    list(zip(self._keys, self.cassette.exchanges, strict=True))
                )
                if recorded == key
                and (response := ex["response"]).get("status") == 200
                and isinstance(response.get("json"), dict)
            ),
            None,
        )

    def _bodies(self, method: str, path: str) -> list[dict[str, Any]]:
        """The recorded 200 JSON bodies (with an id) answering method and path, in order."""
        return [
            ex["response"]["json"]
            for key, ex in zip(self._keys, self.cassette.exchanges, strict=True)
            if (key["method"], key["path"]) == (method, path)
            and ex["response"].get("status") == 200
            and isinstance(ex["response"].get("json"), dict)
            and "id" in ex["response"]["json"]
        ]


def session_of(path: str) -> str | None:
    """The session a `/v1/sessions/{id}/...` path is about, or None."""
    match = SESSION_PATH.fullmatch(path)
    return match[1] if match else None


def _state_read(key: dict[str, Any]) -> str | None:
    """The session a read of its state is about (retrieve, events.list, its files), or None."""
    if key["method"] != "GET":
        return None
    if key["path"] == "/v1/files":
        return key["query"].get("scope_id", [None])[0]
    session = SESSION_PATH.fullmatch(key["path"])
    return session[1] if session and session[2] in (None, "/events") else None


def _interrupts(key: dict[str, Any]) -> bool:
    """A send whose events are all user.interrupt (and at least one)."""
    events = key.get("json", {}).get("events") if isinstance(key.get("json"), dict) else None
    return bool(events) and all(
        isinstance(ev, dict) and ev.get("type") == "user.interrupt" for ev in events
    )


def _json(body: dict[str, Any]) -> dict[str, Any]:
    """An answer of interactive mode's own making, as a stored response."""
    return {"status": 200, "json": body}
