"""Every way a session can go wrong, run through the whole notebook against a scenario cassette.

Each cassette in tests/scenarios/ comes from the scripted-session generator (see
tests/replay/scenarios.py). The notebook runs cell by cell as a reader's "Run All" would; where
a cell fails on purpose (the HTTP-error scenarios) the cleanup cell runs next. Each scenario
checks what the reader is told, what must not happen, that every created resource was
archived, that every recorded exchange was played, and that agent output stays harmless.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.notebook_runner import outputs_of
from tests.replay import FIXTURES, SCENARIO_DIR
from tests.replay.cassette import Cassette

# What the reader is told: scenario -> sentences that must appear in the printed outputs.
MUST = {
    "error_retrying": ["model_overloaded_error", "The agent finished its turn (end_turn).", "Original tests: 6 of 6 pass"],
    "retries_exhausted": ["The turn stopped early (retries_exhausted).", "The agent saved no calc.py", "Skipped: the first turn did not finish (retries_exhausted)"],
    "requires_action": ["The turn stopped (requires_action): edit (sevt_", "waits for your confirmation"],
    "refusal": ["The turn stopped early (refusal). The request was declined by the model.", "The agent saved no calc.py"],
    "budget_reached": ["The turn stopped early (budget_reached).", "The agent saved no calc.py"],
    "terminated": ["The session was terminated", "Archived the session"],
    "dropped": ["The stream closed before the turn ended.", "Reconnecting (1 of 3)", "(from history)", "The agent finished its turn (end_turn).", "Original tests: 6 of 6 pass"],
    "error_frame": ["The stream carried an error event (overloaded_error: Overloaded).", "Reconnecting (1 of 3)", "Original tests: 6 of 6 pass"],
    "stall": ["No event arrived for 2 s (COOKBOOK_STREAM_TIMEOUT).", "Reconnecting (1 of 3)", "Original tests: 6 of 6 pass"],
    "endless": ["The turn did not end within 2 s (COOKBOOK_TURN_TIMEOUT).", "The agent saved no calc.py", "Sent user.interrupt to the session", "Archived the session"],
    "previews": ["First `add` 🎉, which must add:", "Original tests: 6 of 6 pass"],
    "archive_refused": ["Archiving the session was refused (Session sesn_", "cannot be archived while its status is running.)", "Sent user.interrupt to the session", "Archived the session"],
    "restart": ["not yet archived are 1 session(s), 1 environment(s), 1 agent(s).", "Archived the session", "Archived the environment", "Archived the agent"],
    "http_401": ["The API answered 401 (authentication_error): invalid x-api-key", "Could not look for what this cookbook left behind: The API answered 401"],
    "http_404_environment": ["not enabled for this organization", "Archived the agent"],
    "hostile": ["more characters]", "more lines]", "agent.hologram_projected", "Original tests: 6 of 6 pass"],
    "shadowed_mean": ["Original tests: 6 of 6 pass", "Functions changed: add, divide, power, mean", "mean(): changed", "Verdict: the tests pass, but mean() was changed"],
    "spoofing": ["Original tests: 0 of 6 pass; did not run: test_add, test_subtract, test_multiply, test_divide, test_power, test_mean (the test process ended early, exit status 0)", "Verdict: not verified: 6 of 6 original tests did not run."],
    "background_child": ["Original tests: 6 of 6 pass", "Functions changed: add, divide, power"],
    "infinite_loop": ["Original tests: 5 of 6 pass; did not run: test_power (timed out after 2 s)", "Verdict: not verified: 1 of 6"],
    "syntax_error": ["calc.py does not parse: SyntaxError on line 5", "Verdict: not fixed: the agent's calc.py does not parse."],
    "crlf": ["Original tests: 6 of 6 pass", "Functions changed: add, divide, power\nmean(): unchanged"],
    "extra_outputs": ["Other files the agent saved: NOTES.md, test_calc.py"],
    "input_copies": ["Original tests: 6 of 6 pass", "Functions changed: add, divide, power"],
    "late_output": ["Waited 1.8 s for the session's outputs to be listed.", "Original tests: 6 of 6 pass"],
    "reads_env": ["Original tests: 6 of 6 pass"],
    "extra_change": ["Functions changed: add, subtract, divide, power", "Verdict: the tests pass, but the agent also changed subtract()"],
    "unchanged": ["Functions changed: none", "mean(): unchanged", "Verdict: nothing was fixed"],
    "regression_blind": ["Regression tests: 3", "Catch the original bugs: 2 of 3; not: test_divide_is_true_division", "Pass on the fix: 3 of 3", "Root causes caught: add (test_add_adds_instead_of_subtracting), power (test_power_multiplies_exponent_times)", "Root causes not caught: divide", "Verdict: not every root cause is guarded: no test catches divide."],
    "regression_unsaved": ["The agent saved no test_regressions.py", "Waited"],
    "turn2_budget": ["Turn 2: regression tests · budget_reached ·", "The turn stopped early (budget_reached).", "The agent saved no test_regressions.py"],
}  # fmt: skip
# ...and what must not be said.
MUST_NOT = {
    "syntax_error": ["Functions changed:", "mean():"],
    "spoofing": ["\nPASS test_add"],
    "previews": ["I will now rewrite the whole module"],
    "turn2_budget": ["Waited"],
    "input_copies": [
        "Other files the agent saved"
    ],  # the session's copies of the inputs are not outputs
}
RECONNECTING = {"dropped", "error_frame", "stall"}
FAILING_CELL = {  # the one sentence the failing create cell shows instead of a traceback
    "http_401": "The API answered 401 (authentication_error): invalid x-api-key",
    "http_404_environment": "The API answered 404 (not_found_error): Not found: environments",
}
PACED = {"stall", "endless"}  # replayed at the recorded pace: their silence is the point
LIMITS = {  # the cookbook's own limits, shortened where a scenario would wait them out
    "stall": {"COOKBOOK_STREAM_TIMEOUT": "2"},
    "endless": {"COOKBOOK_TURN_TIMEOUT": "2", "COOKBOOK_SETTLE": "1"},
    "infinite_loop": {"COOKBOOK_RUN_TIMEOUT": "2"},
    "regression_unsaved": {"COOKBOOK_OUTPUT_WAIT": "1"},
    "archive_refused": {"COOKBOOK_SETTLE": "1"},
    "budget_reached": {"COOKBOOK_BUDGET": "0.02"},  # the cap the scenario's session reaches
    "turn2_budget": {"COOKBOOK_BUDGET": "0.04"},
}
NOTEBOOK_BOUND_BYTES = 150_000  # the stored notebook stays small, whatever the agent printed


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUST))
def test_scenario(name, reader):
    path = SCENARIO_DIR / f"{name}.jsonl"
    speed = 1 if name in PACED else 0
    nb, fake, failed = reader.run(
        path, speed, LIMITS.get(name), restart_before_cleanup=name == "restart"
    )
    text, html, errors = outputs_of(nb)

    for sentence in MUST[name]:
        assert sentence in text, f"{name}: expected {sentence!r} in the outputs:\n{text[-3000:]}"
    for sentence in MUST_NOT.get(name, []):
        assert sentence not in text, f"{name}: {sentence!r} must not be said"
    if name in FAILING_CELL:
        [(cell, error)] = errors
        assert cell == failed and ".create(" in nb.cells[failed].source
        assert len(error.traceback) == 1 and error.traceback[0].startswith(FAILING_CELL[name])
    else:
        assert failed is None and errors == [], errors

    assert fake.unmatched() == [], fake.problems()
    assert fake.unplayed() == [], fake.problems()
    for kind, resource_id in created(fake):
        archive = f"/v1/{kind}/{resource_id}/archive"
        assert any(
            e["method"] == "POST" and e["path"] == archive and e["status"] == 200 for e in fake.log
        ), f"{name}: {kind} {resource_id} was created but never archived"

    if name not in RECONNECTING:  # a stream that delivers the ending is never reconnected
        assert "Reconnecting" not in text and "The stream closed before the turn ended" not in text
        reads = [e for e in fake.log if e["method"] == "GET" and e["path"].endswith("/events")]
        assert len(reads) <= 1, f"{name}: the history was read besides the polling sidebar"
    else:
        assert_each_message_once(text, path)

    stored = json.dumps(nb)
    assert "\x1b" not in stored and "\\u001b" not in stored, (
        f"{name}: a terminal escape reached the notebook"
    )
    for rendering in (html, text):  # agent text is escaped: no tag can form in any rendering
        assert not re.search(r"<(script|img|b>)", rendering, re.I), (
            f"{name}: markup from the agent got through"
        )
    assert "onerror=" not in html.lower()
    assert len(stored) < NOTEBOOK_BOUND_BYTES
    if name == "background_child":  # the process group went down with everything calc.py started
        assert subprocess.run(["pgrep", "-f", "sleep 75"], capture_output=True).returncode == 1


@pytest.mark.slow
def test_a_crlf_copy_of_the_original_is_reported_as_the_original(reader, tmp_path):
    """CRLF is not a change: the original calc.py saved back with CRLF line endings gets the
    verdict "nothing was fixed" (the crlf scenario's fix never reaches that comparison)."""
    cassette = Cassette.load(SCENARIO_DIR / "unchanged.jsonl")
    original = (FIXTURES / "calc.py").read_text()
    [download] = [
        ex["response"] for ex in cassette.exchanges if ex["response"].get("text") == original
    ]
    download["text"] = original.replace("\n", "\r\n")
    cassette.save(tmp_path / "unchanged_crlf.jsonl")
    nb, fake, failed = reader.run(tmp_path / "unchanged_crlf.jsonl")
    text, _, _ = outputs_of(nb)
    assert failed is None and fake.unplayed() == [], fake.problems()
    assert "Verdict: nothing was fixed: the agent's calc.py is the original." in text, text[-2000:]


def assert_each_message_once(text: str, path) -> None:
    """After a reconnect, every agent message of the first turn is printed exactly once."""
    turn_one, messages = " ".join(text.split("Turn 2:")[0].split()), []
    for exchange in Cassette.load(path).exchanges:
        if exchange["request"] == {**exchange["request"], "method": "GET", "path": "/v1/files"}:
            break  # the first verification: the first turn is over
        for entry in exchange["response"].get("sse", []):
            if entry.get("event") == "agent.message" and entry["data"]["id"] not in {
                m for m, _ in messages
            }:
                messages.append((entry["data"]["id"], entry["data"]["content"][0]["text"]))
    assert messages
    for _, message in messages:
        opening = " ".join(message.split()[:6])
        assert turn_one.count(opening) == 1, f"{opening!r} is not printed exactly once"


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
            exchange = fake.cassette.exchanges[entry["exchange"] - 1]
            found.append((kind, exchange["response"]["json"]["id"]))
    return found
