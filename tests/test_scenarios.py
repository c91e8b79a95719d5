"""Every way a turn can go wrong, run through the whole notebook against a scenario cassette.

Each cassette in tests/scenarios/ comes from the scripted-session generator (see
tests/replay/scenarios.py). The notebook runs cell by cell as a reader's "Run All" would;
where a cell fails on purpose (the HTTP-error scenarios) the cleanup cell runs next.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.notebook_runner import execute_like_a_reader
from tests.replay import SCENARIO_DIR

# scenario -> (sentences that must appear in the outputs, the failing cell's error name or None)
EXPECTED = {
    "error_retrying": (
        ["model_overloaded_error", "finished its turn (end_turn)", "All 6 original"],
        None,
    ),
    "retries_exhausted": (
        ["stopped early (retries_exhausted)", "No output file", "Archived the agent"],
        None,
    ),
    "requires_action": (
        ["(requires_action): edit", "waits for your confirmation", "always_allow"],
        None,
    ),
    "refusal": (["The turn stopped early (refusal)", "No output file"], None),
    "budget_reached": (["The turn stopped early (budget_reached)", "No output file"], None),
    "terminated": (
        ["The session was terminated", "events in the session's history", "Archived the session"],
        None,
    ),
    "dropped": (
        [
            "The stream stopped before the turn ended",
            "(from history)",
            "end_turn",
            "All 6 original",
        ],
        None,
    ),
    "error_frame": (
        ["The stream carried an error event (overloaded_error: Overloaded)", "All 6 original"],
        None,
    ),
    "stall": (["No event arrived for 2 s", "(from history)", "All 6 original"], None),
    "http_401": (
        ["invalid x-api-key", "No agent was created, so none to archive."],
        "AuthenticationError",
    ),
    "http_404_environment": (
        ["not enabled for this organization", "Archived the agent", "No environment was created"],
        "NotFoundError",
    ),
    "hostile": (
        ["more characters]", "more lines]", "agent.hologram_projected", "All 6 original"],
        None,
    ),
}
TIME_BOUND_S = 60
NOTEBOOK_BOUND_BYTES = 150_000  # the stored notebook stays small, whatever the agent printed


def outputs_of(nb) -> tuple[str, str, list[tuple[int, dict]]]:
    """All plain text and all HTML the notebook shows, and its error outputs by cell."""
    text, html, errors = [], [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type == "error":
                errors.append((i, out))
                text.append(f"{out.ename}: {out.evalue}")
            else:
                text.append(out.data.get("text/plain", ""))
                html.append(out.data.get("text/html", ""))
    return "\n".join(text), "\n".join(html), errors


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scenario(name):
    sentences, failing_error = EXPECTED[name]
    stall = name == "stall"  # the only one that needs real time: the stream's silence
    started = time.monotonic()
    nb, fake, failed_cell = execute_like_a_reader(
        SCENARIO_DIR / f"{name}.jsonl",
        env={"COOKBOOK_STREAM_TIMEOUT": "2"} if stall else None,
        speed=1 if stall else 0,
    )
    assert time.monotonic() - started < TIME_BOUND_S
    text, html, errors = outputs_of(nb)
    for sentence in sentences:
        assert sentence in text, f"{name}: expected {sentence!r} in the outputs"

    if failing_error:
        assert [(i, e.ename) for i, e in errors] == [(failed_cell, failing_error)]
        assert ".create(" in nb.cells[failed_cell].source
    else:
        assert failed_cell is None and errors == []

    assert fake.unmatched() == [], fake.unmatched()
    assert fake.unplayed() == [], fake.unplayed_report()
    for kind, resource_id in created(fake):
        assert any(
            e["method"] == "POST" and e["path"] == f"/v1/{kind}/{resource_id}/archive"
            for e in fake.log
        ), f"{name}: {kind} {resource_id} was created but never archived"

    # Agent text is escaped in both renderings: no tag can form, not even in a viewer that
    # renders text/plain as HTML, and no event-handler attribute survives in the HTML.
    for rendering in (html, text):
        assert not re.search(r"<\s*(script|img)", rendering, re.I), (
            f"{name}: markup from the agent got through"
        )
    assert "onerror=" not in html.lower()
    assert len(json.dumps(nb)) < NOTEBOOK_BOUND_BYTES


def created(fake) -> list[tuple[str, str]]:
    """(kind, id) of every agent, environment and session the notebook created."""
    found = []
    for entry in fake.log:
        kind = entry["path"].removeprefix("/v1/")
        if (
            entry["method"] == "POST"
            and kind in ("agents", "environments", "sessions")
            and entry["status"] == 200
        ):
            found.append(
                (kind, fake.cassette.exchanges[entry["exchange"] - 1]["response"]["json"]["id"])
            )
    return found
