"""The committed cassettes are what the generator makes today: regenerate and compare bytes."""

from __future__ import annotations

import pytest

from tests.replay import FIXTURES, SCENARIO_DIR, SHIPPED_CASSETTE, SHIPPED_SCRIPT
from tests.replay.cassette import Cassette
from tests.replay.scenarios import SCENARIOS
from tests.replay.script import generate
from tests.replay_fixtures import check_cassette_events

STALE = "is stale: regenerate it with `make cassettes` (then `make notebook`) and commit the result"


def test_shipped_cassette_is_current():
    if Cassette.load(SHIPPED_CASSETTE).header["provenance"] == "recorded":
        pytest.skip(
            "the shipped cassette is a live recording (make record): there is no script to regenerate it from"
        )
    assert generate(SHIPPED_SCRIPT, FIXTURES).dumps() == SHIPPED_CASSETTE.read_text(
        encoding="utf-8"
    ), f"{SHIPPED_CASSETTE.name} {STALE}"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_cassette_is_current(name):
    path = SCENARIO_DIR / f"{name}.jsonl"
    assert generate(SHIPPED_SCRIPT, FIXTURES, SCENARIOS[name]).dumps() == path.read_text(
        encoding="utf-8"
    ), f"{path.name} {STALE}"


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


@pytest.mark.parametrize("name", ["shipped", *sorted(SCENARIOS)])
def test_every_event_parses_as_its_own_sdk_type_and_every_turn_ends(name):
    path = SHIPPED_CASSETTE if name == "shipped" else SCENARIO_DIR / f"{name}.jsonl"
    cassette = Cassette.load(path)
    if any(
        "sse" in ex["response"] for ex in cassette.exchanges
    ):  # the HTTP-error scenarios never stream
        check_cassette_events(
            cassette, unknown_types=name in UNKNOWN_TYPES, turns_end=name not in NEVER_ENDS
        )
