"""Server-Sent Events on the wire, both ways: frames the replay server writes, and the parser
the recording proxy reads a live stream with (API_WIRE.md §2.1 has the framing the SDK needs).
"""

from __future__ import annotations

import json
from typing import Any


def sse_frame(event: dict[str, Any]) -> bytes:
    """One event on the wire: `event:` + `data:` lines and the blank line that ends it."""
    if "comment" in event:  # one `:` line per line, so a comment can never inject a field
        lines = "".join(f": {line}\n" for line in event["comment"].split("\n"))
        return lines.encode(errors="replace") + b"\n"  # the SDK never reads a comment
    try:
        data = json.dumps(event["data"], ensure_ascii=False)
        return f"event: {event['event']}\ndata: {data}\n\n".encode()
    except UnicodeEncodeError:  # a lone surrogate (a delta split inside a pair) has no UTF-8
        return f"event: {event['event']}\ndata: {json.dumps(event['data'])}\n\n".encode()


class SSEParser:
    """Splits an SSE byte stream into frames (lists of lines), whatever the chunking."""

    def __init__(self) -> None:
        self._buffer = b""
        self._lines: list[str] = []
        self._skip_lf = False  # the previous chunk ended in \r: a leading \n belongs to it

    def feed(self, data: bytes) -> list[list[str]]:
        if self._skip_lf and data.startswith(b"\n"):
            data = data[1:]
        self._skip_lf = False
        self._buffer += data
        frames = []
        while True:
            ends = [i for i in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if i >= 0]
            if not ends:
                break
            i = min(ends)
            line, rest = self._buffer[:i], self._buffer[i + 1 :]
            if self._buffer[i : i + 1] == b"\r":
                if rest.startswith(b"\n"):
                    rest = rest[1:]
                elif not rest:
                    self._skip_lf = True
            self._buffer = rest
            if line:
                self._lines.append(line.decode("utf-8", "replace"))
            elif self._lines:
                frames.append(self._lines)
                self._lines = []
        return frames

    def pending(self) -> list[str]:
        """Lines of a frame the stream ended in the middle of (the SDK drops such a frame)."""
        tail = [self._buffer.decode("utf-8", "replace")] if self._buffer else []
        return self._lines + tail


def frame_entry(lines: list[str]) -> tuple[dict[str, Any], str | None]:
    """A frame as a cassette entry (without delay_ms), and a warning when it cannot be replayed."""
    name, data, comments = None, [], []
    for line in lines:
        if line.startswith(":"):
            comments.append(line[1:].removeprefix(" "))
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        # id:, retry: and unknown fields: the SDK ignores them, so they are not stored
    text = "\n".join(data)
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        parsed = None
    if name is not None and isinstance(parsed, dict):
        return {"event": name, "data": parsed}, None
    if name is None and not data and comments:
        return {"comment": " ".join(comments)}, None  # a plain heartbeat
    raw = " | ".join(lines)
    if name is None or name == "ping" or (not text and name != "error"):
        return {"comment": raw}, None  # a frame the SDK skips without a word
    return {
        "comment": f"unreplayable frame: {raw}"
    }, f"SSE frame {raw!r}: data is not a JSON object"
