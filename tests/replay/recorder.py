"""The recording proxy: forwards the real SDK to the live API and writes what it saw as a cassette.

`with RecordingProxy() as proxy:` listens on 127.0.0.1 at `proxy.base_url`, forwards every
request upstream with the caller's own credentials, passes SSE through unbuffered while
timing each event, and `proxy.save(path)` writes a cassette with provenance `recorded`.

- Upstream HTTP uses `httpx2`, the client the SDK itself depends on: same TLS and proxy
  handling, and `iter_bytes()` hands over each network read as it arrives.
- Credentials are never stored: request headers are not kept at all, response headers only
  from an allowlist and never one named like a credential, and any echo of a credential the
  request carried is replaced by `[REDACTED]`. So is every value under a name that
  `is_credential_name` calls a credential: a query parameter, a JSON field at any depth in a
  request or response body or SSE event data (the whole subtree), a multipart text field.
- `after: N` links an event to the most recent send (`POST .../events` of the same session)
  that reached the proxy before the event did and was still unanswered when the stream
  opened. Counting from the send's arrival, not its answer, is deliberate: the API may push
  a turn's first events before the POST's response is back. Only the first event per send
  carries the link; replay holds the rest behind it.
- `delay_ms` is the gap since the previous event (or the response headers), counted from the
  send's answer for an event that carries `after`, as replay starts the pause only then.
- Frames the SDK skips without a word (no `event:` line, `ping`, empty data) are kept as
  heartbeat comments with their timing; a named frame whose data is not a JSON object
  cannot be replayed and is kept as a visible comment plus a warning.
- A request the upstream never answered gets a 502 and is left out; numbers are closed up.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx2

from .cassette import Cassette, canonical_query, is_send, new_header, request_body
from .loopback import CLIENT_GONE, LoopbackHandler, LoopbackServer
from .sse import SSEParser, frame_entry

DEFAULT_UPSTREAM = "https://api.anthropic.com"
DEFAULT_DESCRIPTION = "Recorded through tests.replay.recorder against the live API."
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
# Not passed upstream: httpx2 sets Host and Content-Length itself; Accept-Encoding becomes
# identity so stored bodies are plain; Expect was already answered by http.server.
NOT_FORWARDED = HOP_BY_HOP | {"host", "accept-encoding", "content-length", "expect"}
# Not passed back: the proxy frames the (decoded) body itself.
NOT_RETURNED = HOP_BY_HOP | {"content-length", "content-encoding"}
STORED_RESPONSE_HEADERS = (
    "content-type",
    "request-id",
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
)
# A word of a name ending in one of these makes the name a credential's (see is_credential_name).
CREDENTIAL_WORDS = (
    "auth",
    "authorization",
    "cookie",
    "cookies",
    "key",
    "passwd",
    "password",
    "passwords",
    "secret",
    "secrets",
    "token",
)
# A name whose last word is one of these describes a credential, it does not hold one.
DESCRIBING_WORDS = {
    "count",
    "endpoint",
    "hint",
    "id",
    "ids",
    "name",
    "scope",
    "seconds",
    "type",
    "url",
}
CAMEL_CASE_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
NOT_A_LETTER_OR_DIGIT = re.compile(r"[^a-z0-9]+")
REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 8  # shorter header values are not searched for (they would hit ordinary text)
NO_BODY_STATUSES = {204, 304}


def rfc3339_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class _Send:
    """A `POST .../events` as the proxy saw it (monotonic times)."""

    path: str
    arrived: float
    answered: float | None = None


@dataclass
class _Stream:
    """One SSE connection being recorded."""

    sends_path: (
        str | None
    )  # the path of the sends its events may wait for, or None (not a session stream)
    arrived: float  # when the stream request reached the proxy
    last: float  # when the previous event (or the response headers) arrived
    events: list[dict[str, Any]] = field(default_factory=list)
    linked: int = 0  # the send the latest `after` named


def name_words(name: str) -> list[str]:
    """The lower-cased words of a name split at `-`, `_`, any other separator and camelCase."""
    spaced = CAMEL_CASE_BOUNDARY.sub(" ", name)
    return [word for word in NOT_A_LETTER_OR_DIGIT.split(spaced.lower()) if word]


def is_credential_name(name: str) -> bool:
    """Whether a header, query parameter or JSON field of this name holds a credential.

    The one rule for all of them: some word of the name ends in a CREDENTIAL_WORDS entry
    (`x-api-key`, `apiKey`, `x-session-token`, `client_secret`, `proxy-authorization`,
    `x-auth-user`, `oauth`, `set-cookie`, `secret_value`, `has_refresh_token`), unless the last
    word says the name describes a credential rather than holds one (DESCRIBING_WORDS:
    `key_id`, `secret_name`, `token_type`, `token_endpoint`, `token_count`).
    The plurals `tokens` and `keys` are not credential words: they are the API's token counts
    (`input_tokens`, `max_tokens`, `cache_read_input_tokens`) and lists of names.
    """
    words = name_words(name)
    if not words or words[-1] in DESCRIBING_WORDS:
        return False
    return any(word.endswith(CREDENTIAL_WORDS) for word in words)


def redacted(value: Any) -> Any:
    """A value under a credential name as stored: `[REDACTED]`, the whole of it.

    A list keeps its length (a repeated query parameter stays a list) with each item redacted.
    What cannot hold a credential stays as it is: `null`, `""`, `true` and `false`.
    """
    if value is None or isinstance(value, bool) or value == "":
        return value
    if isinstance(value, list):
        return [redacted(item) for item in value]
    return REDACTED


def _redact_part(part: Any) -> Any:
    """A stored multipart part with its text value redacted if the part is named like a credential."""
    if isinstance(part, dict) and "value" in part and is_credential_name(str(part.get("name"))):
        return {**part, "value": redacted(part["value"])}
    return part


def _secret_parts(name: str, value: str) -> set[str]:
    """A credential header's value and the pieces of it that could be echoed on their own."""
    parts = {value.strip()}
    if name in ("authorization", "proxy-authorization") and " " in value.strip():
        parts.add(value.strip().split(None, 1)[1])  # the token after "Bearer"
    if name == "cookie":
        for pair in value.split(";"):
            parts.add(pair.strip())
            parts.add(pair.partition("=")[2].strip())
    return parts


def scrub(value: Any, secrets: list[str]) -> Any:
    """A copy of a stored value with credential fields and known credential strings redacted.

    At any depth (an exchange's query, headers, JSON bodies, SSE event data), whatever sits
    under a key that `is_credential_name` calls a credential is `redacted`; multipart text
    parts are judged by their `name`; every string, key and base64 body has each of `secrets`
    replaced by `[REDACTED]` (a key is judged as stored, after that replacement).
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            stored_key = scrub(key, secrets)  # an echo may use the credential itself as a name
            if is_credential_name(str(stored_key)):
                out[stored_key] = redacted(item)
            elif key == "body_b64" and isinstance(item, str) and _is_base64(item):
                raw = base64.b64decode(item)
                for secret in secrets:
                    raw = raw.replace(secret.encode(), REDACTED.encode())
                out[stored_key] = base64.b64encode(raw).decode("ascii")
            elif key == "multipart" and isinstance(item, list):
                out[stored_key] = scrub([_redact_part(part) for part in item], secrets)
            else:
                out[stored_key] = scrub(item, secrets)
        return out
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
    return value


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def stored_headers(headers: httpx2.Headers) -> dict[str, str]:
    """The response headers a cassette keeps: the allowlisted ones, never one named like a credential."""
    kept = [name for name in STORED_RESPONSE_HEADERS if not is_credential_name(name)]
    return {name: headers[name] for name in kept if name in headers}


def response_body(content_type: str, data: bytes) -> dict[str, Any]:
    """The body key of a stored response: JSON as data when it is JSON, else text, else base64."""
    if not data:
        return {}
    if not content_type or "json" in content_type.lower():
        try:
            return {"json": json.loads(data)}
        except ValueError:
            pass
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_b64": base64.b64encode(data).decode("ascii")}


def is_sse(path: str, response: httpx2.Response) -> bool:
    content_type = response.headers.get("content-type", "").lower()
    if content_type.startswith("text/event-stream"):
        return True
    return path.endswith("/events/stream") and response.is_success and "json" not in content_type


def _peer_closed(sock: socket.socket) -> bool:
    """Whether the client has closed its end (checked before forwarding each chunk)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _ProxyHandler(LoopbackHandler):
    owner: RecordingProxy

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _proxy(self) -> None:
        arrived = time.monotonic()
        url = urlsplit(self.path)
        body = self.read_body()
        request: dict[str, Any] = {"method": self.command, "path": unquote(url.path)}
        if query := canonical_query(url.query):
            request["query"] = query
        request.update(request_body(self.headers.get("content-type", ""), body))
        n = self.owner._open(request, self.headers, arrived)

        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED]
        headers.append(("Accept-Encoding", "identity"))
        outgoing = httpx2.Request(
            self.command, self.owner.upstream + self.path, headers=headers, content=body
        )
        try:
            upstream = self.owner._http.send(outgoing, stream=True)
        except httpx2.HTTPError as err:
            self.owner._fail(n)
            return self._bad_gateway(f"{type(err).__name__}: {err}")
        try:
            if is_sse(request["path"], upstream):
                self._relay_sse(n, request, arrived, upstream)
            else:
                self._relay_plain(n, request, upstream)
        except CLIENT_GONE:
            self.close_connection = True
        finally:
            upstream.close()
            self.owner._http.cookies.clear()  # cookies pass through as headers, never via the client's jar

    def _relay_plain(self, n: int, request: dict[str, Any], upstream: httpx2.Response) -> None:
        try:
            data = upstream.read()  # decoded, should the upstream compress despite "identity"
        except httpx2.HTTPError as err:
            self.owner._fail(n)
            return self._bad_gateway(f"{type(err).__name__} while reading the response: {err}")
        response = {"status": upstream.status_code, "headers": stored_headers(upstream.headers)}
        response.update(response_body(upstream.headers.get("content-type", ""), data))
        self.owner._answer(n, request, response, time.monotonic())
        self.send_response_only(upstream.status_code, upstream.reason_phrase or None)
        self._copy_headers(upstream)
        if self.command == "HEAD":
            if "content-length" in upstream.headers:
                self.send_header("Content-Length", upstream.headers["content-length"])
            data = b""
        elif upstream.status_code not in NO_BODY_STATUSES:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _relay_sse(
        self, n: int, request: dict[str, Any], arrived: float, upstream: httpx2.Response
    ) -> None:
        response = {"status": upstream.status_code, "headers": stored_headers(upstream.headers)}
        stream = self.owner._open_stream(n, request, response, arrived)
        # Status and headers at once: the SDK's stream() returns only when they arrive.
        self.send_response_only(upstream.status_code, upstream.reason_phrase or None)
        self._copy_headers(upstream)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        parser = SSEParser()
        try:
            for chunk in upstream.iter_bytes():
                if not chunk:
                    continue
                frames, now = parser.feed(chunk), time.monotonic()
                if _peer_closed(self.connection):  # the client left: what follows it never saw
                    self.close_connection = True
                    return
                entries = []
                for frame in frames:
                    entry, warning = frame_entry(frame)
                    entries.append(entry)
                    if warning:
                        self.owner._warn(f"exchange {n}: {warning}")
                self.owner._add_events(stream, entries, now)  # recorded before the client sees it
                self.write_chunk(chunk)
        except (
            httpx2.HTTPError
        ) as err:  # the upstream broke off: end the client's stream the same way
            self.owner._warn(
                f"exchange {n}: the upstream stream ended with {type(err).__name__}: {err}"
            )
            self.close_connection = True
            return
        if pending := parser.pending():
            self.owner._warn(
                f"exchange {n}: the stream ended inside a frame, not stored: {pending!r}"
            )
        self.write_chunk(b"")

    def _copy_headers(self, upstream: httpx2.Response) -> None:
        for name, value in upstream.headers.multi_items():
            if name.lower() not in NOT_RETURNED:
                self.send_header(name, value)

    def _bad_gateway(self, detail: str) -> None:
        """The upstream gave no answer: tell the client plainly; nothing is recorded."""
        message = f"Recording proxy: no answer from {self.owner.upstream} for {self.command} {self.path}: {detail}"
        self.send_api_error(502, "api_error", message)


class RecordingProxy(LoopbackServer):
    """`with RecordingProxy(upstream) as proxy:` records at `proxy.base_url`; then `proxy.save(path)`."""

    handler = _ProxyHandler

    def __init__(
        self,
        upstream: str = DEFAULT_UPSTREAM,
        port: int = 0,
        description: str = DEFAULT_DESCRIPTION,
    ):
        self.upstream = upstream.rstrip("/")
        self.description = description
        self.warnings: list[str] = []
        self._exchanges: list[
            dict[str, Any] | None
        ] = []  # per request in arrival order; None = no answer
        self._sends: dict[int, _Send] = {}
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        # The SDK's own timeouts: 5 s to connect, 600 s for each read (also between SSE chunks).
        self._http = httpx2.Client(
            timeout=httpx2.Timeout(600.0, connect=5.0), follow_redirects=False
        )
        super().__init__(port)

    def stop(self) -> None:
        super().stop()
        self._http.close()  # streams still open end here; what they recorded so far is kept

    def cassette(self) -> Cassette:
        """What has been recorded so far, with provenance `recorded` and credentials scrubbed."""
        with self._lock:
            slots = copy.deepcopy(self._exchanges)
            secrets = sorted(self._secrets, key=len, reverse=True)
        numbers = {
            old: new for new, old in enumerate((n for n, ex in enumerate(slots, 1) if ex), 1)
        }
        exchanges = []
        for ex in filter(None, slots):
            for event in ex["response"].get("sse", []):
                if "after" in event:
                    if event["after"] in numbers:
                        event["after"] = numbers[event["after"]]
                    else:  # the send was never answered upstream, so it is not in the cassette
                        del event["after"]
            exchanges.append(scrub(ex, secrets))
        header = new_header(
            "recorded",
            created=rfc3339_now(),
            sdk=f"anthropic {version('anthropic')}",
            description=self.description,
        )
        return Cassette(header, exchanges)

    def save(self, path: str | Path) -> Cassette:
        """Write the cassette, then load it back so a contract violation is reported at once."""
        cassette = self.cassette()
        cassette.save(path)
        Cassette.load(path)
        return cassette

    # -- used by the handler ------------------------------------------------------------

    def _open(self, request: dict[str, Any], headers: Any, arrived: float) -> int:
        """Reserve the next exchange number for a request that has just arrived."""
        secrets = set()
        for name, value in headers.items():
            if is_credential_name(name):
                secrets.update(_secret_parts(name.lower(), value))
        with self._lock:
            self._exchanges.append(None)
            n = len(self._exchanges)
            self._secrets.update(s for s in secrets if len(s) >= MIN_SECRET_LENGTH)
            if is_send({"request": request}):
                self._sends[n] = _Send(request["path"], arrived)
        return n

    def _answer(
        self, n: int, request: dict[str, Any], response: dict[str, Any], answered: float
    ) -> None:
        with self._lock:
            self._exchanges[n - 1] = {"request": request, "response": response}
            if n in self._sends:
                self._sends[n].answered = answered

    def _open_stream(
        self, n: int, request: dict[str, Any], response: dict[str, Any], arrived: float
    ) -> _Stream:
        path = request["path"]
        sends_path = path.removesuffix("/stream") if path.endswith("/events/stream") else None
        stream = _Stream(sends_path, arrived, last=time.monotonic())
        response["sse"] = stream.events  # the stored exchange grows as events arrive
        self._answer(n, request, response, stream.last)
        return stream

    def _add_events(self, stream: _Stream, entries: list[dict[str, Any]], now: float) -> None:
        with self._lock:
            for entry in entries:
                since = stream.last
                if stream.sends_path is not None:
                    waiting = [
                        m
                        for m, send in self._sends.items()
                        if send.path == stream.sends_path
                        and send.arrived < now
                        and (send.answered is None or send.answered > stream.arrived)
                    ]
                    if waiting and max(waiting) > stream.linked:
                        stream.linked = entry["after"] = max(waiting)
                        answered = self._sends[stream.linked].answered
                        since = max(since, now if answered is None else answered)
                entry["delay_ms"] = max(0, round((now - since) * 1000))
                stream.last = now
                stream.events.append(entry)

    def _fail(self, n: int) -> None:
        """No answer came from the upstream: the exchange is left out, a send waits for nothing."""
        with self._lock:
            self._sends.pop(n, None)

    def _warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def recording_env(base_url: str) -> dict[str, str]:
    """The environment for a command recorded through the proxy: its own key, the proxy's URL."""
    no_proxy = ",".join(
        filter(
            None, [os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1,localhost"]
        )
    )
    return {
        **os.environ,
        "ANTHROPIC_BASE_URL": base_url,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


def record(
    out: str | Path,
    upstream: str = DEFAULT_UPSTREAM,
    port: int = 0,
    command: Sequence[str] | None = None,
    description: str = DEFAULT_DESCRIPTION,
) -> int:
    """`record --out PATH [--upstream URL] [--port N] [-- COMMAND ...]`; returns the exit code.

    Prints the proxy's base URL, then either runs COMMAND with ANTHROPIC_BASE_URL pointing at
    the proxy (its ANTHROPIC_API_KEY untouched) or, without one, records until Ctrl-C or
    SIGTERM. The cassette goes to PATH; if COMMAND fails or is interrupted it goes next to
    it as `<name>.failed.jsonl` instead, so a broken run never replaces a good cassette.
    """
    out = Path(out)
    proxy = RecordingProxy(upstream, port, description)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    code = 0
    try:
        with proxy:
            print(proxy.base_url, flush=True)
            try:
                if command:
                    print(
                        f"Recording {proxy.upstream} while running: {' '.join(command)}",
                        file=sys.stderr,
                    )
                    code = subprocess.run(
                        list(command), env=recording_env(proxy.base_url)
                    ).returncode
                else:
                    print(
                        f"Recording {proxy.upstream} into {out}; press Ctrl-C to stop and write.",
                        file=sys.stderr,
                    )
                    while True:
                        time.sleep(3600)
            except KeyboardInterrupt:
                code = 130 if command else 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    target = out if code == 0 else out.with_name(f"{out.stem}.failed{out.suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    cassette = proxy.save(target)
    for warning in proxy.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Wrote {len(cassette.exchanges)} exchanges to {target}", file=sys.stderr)
    if code:
        print(
            f"The command ended with exit code {code}; {out} was left as it was.", file=sys.stderr
        )
    return code
