"""The committed cassettes are what the generator makes today: regenerate and compare bytes.

The header's `sdk` names the anthropic release that generated a cassette, so the comparison takes
it from the committed file: the bytes must not depend on which supported SDK is installed (`make
test-oldest`, `make sdk-check`). tests/test_sdk_versions.py checks what that header names.
"""

from __future__ import annotations

import re

import pytest
from anthropic._models import validate_type
from anthropic.types.beta import (
    BetaEnvironment,
    BetaFileMetadata,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsSessionEvent,
)

from tests.replay import FIXTURES, SCENARIO_DIR, SHIPPED_CASSETTE, SHIPPED_SCRIPT
from tests.replay.cassette import Cassette
from tests.replay.scenarios import SCENARIOS
from tests.replay.script import generate
from tests.replay_fixtures import STREAM_EVENT_CLASSES, check_cassette_events

STALE = "is stale: regenerate it with `make cassettes` (then `make notebook`) and commit the result"


def regenerated_as(path, scenario=None) -> str:
    """The generator's cassette for `scenario`, with the `sdk` of the committed cassette at `path`."""
    made = generate(SHIPPED_SCRIPT, FIXTURES, scenario)
    made.header["sdk"] = Cassette.load(path).header["sdk"]
    return made.dumps()


def test_shipped_cassette_is_current():
    if Cassette.load(SHIPPED_CASSETTE).header["provenance"] == "recorded":
        pytest.skip(
            "the shipped cassette is a live recording (make record): there is no script to regenerate it from"
        )
    assert regenerated_as(SHIPPED_CASSETTE) == SHIPPED_CASSETTE.read_text(encoding="utf-8"), (
        f"{SHIPPED_CASSETTE.name} {STALE}"
    )


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_cassette_is_current(name):
    path = SCENARIO_DIR / f"{name}.jsonl"
    assert regenerated_as(path, SCENARIOS[name]) == path.read_text(encoding="utf-8"), (
        f"{path.name} {STALE}"
    )


def test_shipped_cassette_states_its_provenance():
    header = Cassette.load(SHIPPED_CASSETTE).header
    if header["provenance"] == "scripted":
        assert "not a live recording" in header["description"]
    else:
        assert header["provenance"] == "recorded" and "Recorded" in header["description"]


def test_generation_is_deterministic():
    assert generate(SHIPPED_SCRIPT, FIXTURES).dumps() == generate(SHIPPED_SCRIPT, FIXTURES).dumps()


UNKNOWN_TYPES = {"hostile", "previews"}  # send event types the SDK does not know, on purpose
NEVER_ENDS = {"endless"}


def path_of(name: str):
    return SHIPPED_CASSETTE if name == "shipped" else SCENARIO_DIR / f"{name}.jsonl"


def cassettes_with(check) -> list[str]:
    """The cassettes (shipped, then scenarios) that hold something `check` is about: a case that
    would assert nothing is not generated."""
    names = ["shipped", *sorted(SCENARIOS)]
    return [name for name in names if check(Cassette.load(path_of(name)).exchanges)]


def streams(exchanges) -> bool:
    return any("sse" in ex["response"] for ex in exchanges)  # the HTTP-error scenarios never stream


def json_bodies(exchanges) -> bool:
    return any(ex["response"]["status"] == 200 and "json" in ex["response"] for ex in exchanges)


def usage_events(exchanges) -> bool:
    return any(
        data.get("type") == "session.usage"
        for ex in exchanges
        for data in [e.get("data", {}) for e in ex["response"].get("sse", [])]
    )


@pytest.mark.parametrize("name", cassettes_with(streams))
def test_every_event_parses_as_its_own_sdk_type_and_every_turn_ends(name):
    check_cassette_events(
        Cassette.load(path_of(name)),
        unknown_types=name in UNKNOWN_TYPES,
        turns_end=name not in NEVER_ENDS,
    )


# Which SDK type each endpoint's 200 body is: (method, path pattern) -> (type, is it a page).
BODIES = [
    ("POST", r"/v1/agents(/[^/]+/archive)?", BetaManagedAgentsAgent, False),
    ("GET", r"/v1/agents", BetaManagedAgentsAgent, True),
    ("POST", r"/v1/environments(/[^/]+/archive)?", BetaEnvironment, False),
    ("GET", r"/v1/environments", BetaEnvironment, True),
    ("POST", r"/v1/files", BetaFileMetadata, False),
    ("GET", r"/v1/files", BetaFileMetadata, True),
    ("POST", r"/v1/sessions(/[^/]+(/archive)?)?", BetaManagedAgentsSession, False),
    ("GET", r"/v1/sessions/[^/]+", BetaManagedAgentsSession, False),
    ("GET", r"/v1/sessions", BetaManagedAgentsSession, True),
    ("POST", r"/v1/sessions/[^/]+/events", BetaManagedAgentsSendSessionEvents, False),
    ("GET", r"/v1/sessions/[^/]+/events", BetaManagedAgentsSessionEvent, True),
]


@pytest.mark.parametrize("name", cassettes_with(json_bodies))
def test_every_resource_body_parses_strictly_as_its_sdk_type(name):
    """The agent, environment, file, session, send and list bodies the generator writes, as the
    SDK would parse them with strict response validation."""
    path = path_of(name)
    for n, ex in enumerate(Cassette.load(path).exchanges, 1):
        request, response = ex["request"], ex["response"]
        if response["status"] != 200 or "json" not in response:
            continue
        [(kind, page)] = [
            (kind, page)
            for method, pattern, kind, page in BODIES
            if method == request["method"] and re.fullmatch(pattern, request["path"])
        ]
        for body in response["json"]["data"] if page else [response["json"]]:
            if name in UNKNOWN_TYPES and page and body.get("type") not in STREAM_EVENT_CLASSES:
                continue  # an event type the SDK does not know, on purpose
            try:
                validate_type(type_=kind, value=body)
            except Exception as err:
                raise AssertionError(
                    f"{path.name}, exchange {n}: not a strict {kind.__name__}: {err}"
                ) from None


@pytest.mark.parametrize("name", cassettes_with(usage_events))
def test_each_usage_snapshot_adds_up_the_requests_before_it(name):
    """session.usage is cumulative: its tokens are the sum of every model request so far."""
    path = path_of(name)
    events = {}  # every persisted event once, from the streams and the history alike
    for ex in Cassette.load(path).exchanges:
        listed = (
            ex["response"].get("json", {}).get("data", [])
            if ex["request"]["path"].endswith("/events")
            else []
        )
        for data in [e.get("data", {}) for e in ex["response"].get("sse", [])] + listed:
            if "id" in data and data.get("processed_at"):
                events[data["id"]] = data
    sums = dict.fromkeys(("input", "output", "read", "write"), 0)
    snapshots = 0
    for data in sorted(events.values(), key=lambda d: d["processed_at"]):
        if data["type"] == "span.model_request_end":
            u = data["model_usage"]
            sums["input"] += u["input_tokens"]
            sums["output"] += u["output_tokens"]
            sums["read"] += u["cache_read_input_tokens"]
            sums["write"] += u["cache_creation_input_tokens"]
        elif data["type"] == "session.usage":
            u, made = data["usage"], data["usage"]["cache_creation"]
            got = {
                "input": u["input_tokens"],
                "output": u["output_tokens"],
                "read": u["cache_read_input_tokens"],
            }
            got["write"] = made["ephemeral_5m_input_tokens"] + made["ephemeral_1h_input_tokens"]
            assert got == sums, (
                f"{path.name}: a usage snapshot that is not the sum of the requests before it"
            )
            snapshots += 1
    assert snapshots, f"{path.name}: no session.usage event was checked"
