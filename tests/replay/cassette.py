"""The cassette: one recorded (or scripted) run of HTTP exchanges, as JSON Lines.

Line 1 is a header, every further line one request/response pair in the order the client
made them (see DESIGN.md §3). Loading only parses JSON; nothing in a cassette is executed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

FORMAT_VERSION = 1
PROVENANCES = ("scripted", "recorded")
BODY_KINDS = ("json", "text", "body_b64", "sse")
# Query keys that carry no meaning for matching (the docs' cURL examples add ?beta=true).
IGNORED_QUERY_KEYS = {"beta"}


class CassetteError(ValueError):
    """A cassette file that cannot be used, with the place and the reason."""

    def __init__(self, path: str | Path, line: int, problem: str):
        super().__init__(f"{path}, line {line}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Cassette:
    header: dict[str, Any]
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        return cls.parse(Path(path).read_text(encoding="utf-8"), source=path)

    @classmethod
    def parse(cls, text: str, source: str | Path = "<cassette>") -> Cassette:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            raise CassetteError(source, 1, "the file is empty; expected a header line")
        records = []
        for n, line in lines:
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise CassetteError(
                    source, n, f"not valid JSON ({err.msg} at column {err.colno})"
                ) from None
        (header_line, header), body = records[0], records[1:]
        _check_header(header, source, header_line)
        exchanges = [ex for _, ex in body]
        for index, (n, ex) in enumerate(body, 1):
            _check_exchange(ex, index, exchanges, source, n)
        return cls(header, exchanges)

    def dumps(self) -> str:
        return "".join(dumps_line(obj) + "\n" for obj in [self.header, *self.exchanges])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")


def dumps_line(obj: Any) -> str:
    """One cassette line: keys sorted, UTF-8 kept readable."""
    line = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    try:
        line.encode()
    except UnicodeEncodeError:  # a lone surrogate (a delta split inside a pair) has no UTF-8
        return json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return line


def new_header(provenance: str, created: str, sdk: str, description: str) -> dict[str, Any]:
    return {
        "cassette": FORMAT_VERSION,
        "provenance": provenance,
        "created": created,
        "sdk": sdk,
        "description": description,
    }


def canonical_query(raw: str) -> dict[str, list[str]]:
    """Decode a query string to sorted keys with list values (`event_deltas[]` stays as is)."""
    query: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        if key not in IGNORED_QUERY_KEYS:
            query.setdefault(key, []).append(value)
    return dict(sorted(query.items()))


def describe_multipart(content_type: str, body: bytes) -> list[dict[str, Any]]:
    """The parts of a multipart body as the cassette stores them: no boundary, no raw bytes."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        entry: dict[str, Any] = {"name": part.get_param("name", header="content-disposition")}
        if filename is None:
            entry["value"] = payload.decode("utf-8", "replace")
        else:
            entry.update(
                filename=filename,
                content_type=part.get_content_type(),
                sha256=hashlib.sha256(payload).hexdigest(),
            )
        parts.append(entry)
    return parts


def request_body(content_type: str, body: bytes) -> dict[str, Any]:
    """The `json` / `multipart` / `text` key of a request as stored, from its raw body."""
    if not body:
        return {}
    if content_type.startswith("multipart/"):
        return {"multipart": describe_multipart(content_type, body)}
    try:
        return {"json": json.loads(body)}
    except ValueError:
        return {"text": body.decode("utf-8", "replace")}


def is_send(exchange: dict[str, Any]) -> bool:
    """A `POST /v1/sessions/{id}/events`: the exchanges an SSE event's `after` may name."""
    request = exchange.get("request", {})
    return request.get("method") == "POST" and str(request.get("path", "")).endswith("/events")


def _check_header(header: Any, source: str | Path, line: int) -> None:
    if not isinstance(header, dict) or header.get("cassette") != FORMAT_VERSION:
        raise CassetteError(
            source, line, f'the first line must be a header with "cassette": {FORMAT_VERSION}'
        )
    if header.get("provenance") not in PROVENANCES:
        raise CassetteError(source, line, f"header provenance must be one of {PROVENANCES}")
    for key in ("created", "sdk", "description"):
        if not isinstance(header.get(key), str):
            raise CassetteError(source, line, f'header needs a string "{key}"')


def _check_exchange(
    ex: Any, index: int, all_exchanges: list, source: str | Path, line: int
) -> None:
    def fail(problem: str) -> None:
        raise CassetteError(source, line, f"exchange {index}: {problem}")

    if (
        not isinstance(ex, dict)
        or not isinstance(ex.get("request"), dict)
        or not isinstance(ex.get("response"), dict)
    ):
        fail('expected {"request": {...}, "response": {...}}')
    request, response = ex["request"], ex["response"]
    if not isinstance(request.get("method"), str) or not str(request.get("path", "")).startswith(
        "/"
    ):
        fail("request needs a method and a path starting with /")
    query = request.get("query", {})
    if not isinstance(query, dict) or not all(isinstance(v, list | str) for v in query.values()):
        fail("request query must map each key to a value or a list of values")
    if sum(k in request for k in ("json", "multipart", "text")) > 1:
        fail("request has more than one body")
    if not isinstance(response.get("status"), int):
        fail("response needs an integer status")
    if not isinstance(response.get("headers", {}), dict):
        fail("response headers must be an object")
    kinds = [k for k in BODY_KINDS if k in response]
    if len(kinds) > 1:
        fail(f"response has more than one body: {kinds}")
    for n, event in enumerate(response.get("sse", []), 1):
        _check_event(event, n, all_exchanges, fail)


def _check_event(event: Any, n: int, all_exchanges: list, fail) -> None:
    where = f"SSE event {n}"
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("delay_ms"), int)
        or event["delay_ms"] < 0
    ):
        fail(f"{where} needs a non-negative integer delay_ms")
    if "comment" in event:
        if not isinstance(event["comment"], str):
            fail(f"{where}: a heartbeat comment must be a string")
    elif not isinstance(event.get("event"), str) or not isinstance(event.get("data"), dict):
        fail(f'{where} needs "event" (a name) and "data" (an object), or a "comment"')
    elif not event["event"] or any(c in event["event"] for c in "\r\n"):
        fail(f"{where}: the event name must be one non-empty line")
    if "after" in event:
        after = event["after"]
        if (
            not isinstance(after, int)
            or not 1 <= after <= len(all_exchanges)
            or not is_send(all_exchanges[after - 1])
        ):
            fail(f"{where}: after={after!r} must name a POST .../events exchange (counted from 1)")
