"""Which recorded exchange answers a request, and, when none does, why not.

A request is matched on method, path, canonical query and body (JSON as data, multipart
by part name/filename/content type/sha256). Headers never take part (DESIGN.md §4).
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any

BODY_KEYS = ("json", "multipart", "text")
PART_KEYS = ("name", "filename", "content_type", "sha256", "value")


def request_key(request: dict[str, Any]) -> dict[str, Any]:
    """The parts of a stored or incoming request that matching compares.

    Equivalent spellings compare equal, so a cassette written by another tool still matches:
    a single query value bare or in a list, an empty body absent, `null` or `{}`, and
    multipart parts with extra keys beside the ones that identify them.
    """
    query = {k: v if isinstance(v, list) else [v] for k, v in (request.get("query") or {}).items()}
    key = {"method": request["method"].upper(), "path": request["path"], "query": query}
    for name in BODY_KEYS:
        if request.get(name) not in (None, {}, ""):
            key[name] = request[name]
    if "multipart" in key:
        key["multipart"] = [
            {k: part[k] for k in PART_KEYS if k in part} for part in key["multipart"]
        ]
    return key


def first_difference(recorded: Any, got: Any, where: str = "") -> str | None:
    """A readable account of the first place two JSON values differ, or None if equal."""
    if isinstance(recorded, dict) and isinstance(got, dict):
        for k in sorted(set(recorded) | set(got), key=str):
            here = f"{where}.{k}" if where else str(k)
            if k not in got:
                return f"{here} is missing (recorded {_short(recorded[k])})"
            if k not in recorded:
                return f"{here} was not recorded (got {_short(got[k])})"
            diff = first_difference(recorded[k], got[k], here)
            if diff:
                return diff
        return None
    if isinstance(recorded, list) and isinstance(got, list):
        for i, (r, g) in enumerate(zip(recorded, got, strict=False)):
            diff = first_difference(r, g, f"{where}[{i}]")
            if diff:
                return diff
        if len(recorded) != len(got):
            return f"{where} has {len(got)} items (recorded {len(recorded)})"
        return None
    if recorded != got:
        return f"{where or 'value'} is {_short(got)} (recorded {_short(recorded)})"
    return None


def closest(
    key: dict[str, Any], candidates: list[tuple[int, dict[str, Any]]]
) -> tuple[int, str] | None:
    """The recorded exchange nearest to an unmatched request, and the first difference."""
    best = None
    for index, exchange in candidates:
        recorded = request_key(exchange["request"])
        score = (
            recorded["method"] == key["method"],
            SequenceMatcher(None, recorded["path"], key["path"]).ratio(),
            recorded.get("query") == key.get("query"),
        )
        if best is None or score > best[0]:
            best = (score, index, recorded)
    if best is None:
        return None
    _, index, recorded = best
    return index, first_difference(recorded, key) or "nothing differs"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
