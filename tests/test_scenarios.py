"""Every way a session can go wrong, run through the whole notebook against a scenario cassette.

Each cassette in tests/scenarios/ comes from the scripted-session generator (see
tests/replay/scenarios.py). The notebook runs cell by cell as a reader's "Run All" would; where
a cell fails on purpose (the HTTP-error scenarios) the cleanup cell runs next. Each scenario
checks what the reader is told (the verification reports as whole lines, block by block), what
must not be said, what the notebook did in time (streams opened, output listings, the cleanup's
polls), that every created resource was archived, that every recorded exchange was played, and
that agent output stays harmless.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.notebook_runner import outputs_of
from tests.replay import FIXTURES, SCENARIO_DIR, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette
from tests.replay.scenarios import SCENARIOS

# What the reader is told: scenario -> phrases that must appear in the printed outputs.
MUST = {
    "error_retrying": ["model_overloaded_error", "The agent finished its turn (end_turn)."],
    "retries_exhausted": ["The turn stopped early (retries_exhausted)."],
    "requires_action": ["The turn stopped (requires_action): edit (sevt_", "waits for your confirmation"],
    "refusal": ["The turn stopped early (refusal). The request was declined by the model."],
    "budget_reached": ["The turn stopped early (budget_reached)."],
    "terminated": ["The session was terminated"],
    "dropped": ["The stream closed before the turn ended.", "(from history)", "The agent finished its turn (end_turn)."],
    "error_frame": ["The stream carried an error event (overloaded_error: Overloaded)."],
    "stall": ["No event arrived for 2 s (COOKBOOK_STREAM_TIMEOUT)."],
    "endless": ["The turn did not end within 2 s (COOKBOOK_TURN_TIMEOUT)."],
    "previews": ["First `add` 🎉, which must add:"],
    "archive_refused": ["Archiving the session was refused (Session sesn_", "cannot be archived while its status is running.)"],
    "restart": ["not yet archived are 1 session(s), 1 environment(s), 1 agent(s)."],
    "http_401": ["The API answered 401 (authentication_error): invalid x-api-key", "Could not look for what this cookbook left behind: The API answered 401"],
    "http_404_environment": ["not enabled for this organization"],
    "hostile": ["more characters]", "more lines]", "agent.hologram_projected"],
    "syntax_error": ["calc.py does not parse: SyntaxError on line 5 (invalid syntax), so nothing is claimed about its functions."],
    "turn2_budget": ["Turn 2: regression tests · budget_reached ·", "The turn stopped early (budget_reached)."],
}  # fmt: skip
# ...and what must not be said.
MUST_NOT = {
    "syntax_error": ["Functions changed:", "mean():"],
    "spoofing": ["\nPASS test_add"],
    "previews": ["I will now rewrite the whole module"],
    "input_copies": ["Other files the agent saved"],  # the session's copies of the inputs are not outputs
    "regression_one_cause": ["Verdict: every root cause is guarded"],
    "regression_syntax": ["Regression tests:", "Catch the original bugs", "Root causes", "defines no test functions"],
    "regression_testcase": ["defines no test functions"],
}  # fmt: skip

# The reports of the two verifications (the cells that run the tests), whole lines each: the
# first turn's block, from "Original tests" to its verdict, and, where a second turn is
# verified, the second's, from "Regression tests" to its verdict. Each block must be printed as
# it stands, line after line, and no other "Verdict:" line may be printed.
T_ADD, T_DIVIDE, T_POWER = (
    "test_add_adds_instead_of_subtracting",
    "test_divide_is_true_division",
    "test_power_multiplies_exponent_times",
)
ALL_SIX = "test_add, test_subtract, test_multiply, test_divide, test_power, test_mean"
FIXED = [
    "Original tests: 6 of 6 pass",
    "Functions changed: add, divide, power",
    "mean(): unchanged",
    "Verdict: fixed at the root: every original test passes and only the buggy functions changed.",
]
GUARDED = [
    "Regression tests: 3",
    "Catch the original bugs: 3 of 3",
    "Pass on the fix: 3 of 3",
    f"Root causes caught: add ({T_ADD}), divide ({T_DIVIDE}), power ({T_POWER})",
    "Verdict: every root cause is guarded by a test that fails without its fix and passes with it.",
]
NOT_ON_THE_FIX = "Verdict: not proven: 3 of 3 regression tests do not pass on the fix."
REPORTS = {
    **{
        name: [FIXED, GUARDED]
        for name in (
            "error_retrying", "dropped", "error_frame", "stall", "previews", "archive_refused",
            "restart", "hostile", "background_child", "crlf", "input_copies", "late_output",
            "reads_env",
        )
    },
    "shadowed_mean": [
        [
            "Original tests: 6 of 6 pass",
            "Functions changed: add, divide, power, mean",
            "mean(): changed",
            "Verdict: the tests pass, but mean() was changed although it was correct: review the diff.",
        ],
        GUARDED,
    ],
    "spoofing": [
        [
            f"Original tests: 0 of 6 pass; did not run: {ALL_SIX} (the test process ended early, exit status 0)",
            "Functions changed: none",  # the code that spoofs runs at import, in no function
            "mean(): unchanged",
            "Verdict: not verified: 6 of 6 original tests did not run.",
        ],
        [
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            f"Pass on the fix: 0 of 3; did not run: {T_ADD}, {T_DIVIDE}, {T_POWER} (the test process ended early, exit status 0)",
            NOT_ON_THE_FIX,
        ],
    ],
    "infinite_loop": [
        [
            "Original tests: 5 of 6 pass; did not run: test_power (timed out after 2 s)",  # test_mean runs
            "Functions changed: add, divide, power",
            "mean(): unchanged",
            "Verdict: not verified: 1 of 6 original tests did not run.",
        ],
        [  # power() is no root cause: test_power did not pass on the fix
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            f"Pass on the fix: 2 of 3; failing: {T_POWER}",
            f"Root causes caught: add ({T_ADD}), divide ({T_DIVIDE})",
            "Verdict: not proven: 1 of 3 regression tests do not pass on the fix.",
        ],
    ],
    "syntax_error": [
        [
            f"Original tests: 0 of 6 pass; did not run: {ALL_SIX} (the test process ended early, exit status 1)",
            "calc.py does not parse: SyntaxError on line 5 (invalid syntax)",
            "Verdict: not fixed: the agent's calc.py does not parse.",
        ],
        [
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            f"Pass on the fix: 0 of 3; did not run: {T_ADD}, {T_DIVIDE}, {T_POWER} (the test process ended early, exit status 1)",
            NOT_ON_THE_FIX,
        ],
    ],
    "extra_outputs": [
        [*FIXED[:3], "Other files the agent saved: NOTES.md, test_calc.py", FIXED[3]],
        GUARDED,
    ],
    "extra_change": [
        [
            "Original tests: 6 of 6 pass",
            "Functions changed: add, subtract, divide, power",
            "mean(): unchanged",
            "Verdict: the tests pass, but the agent also changed subtract(): review the diff.",
        ],
        GUARDED,
    ],
    "unchanged": [
        [
            "Original tests: 2 of 6 pass; failing: test_add, test_divide, test_power, test_mean",
            "Functions changed: none",
            "mean(): unchanged",
            "Verdict: nothing was fixed: the agent's calc.py is the original.",
        ],
        [
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            f"Pass on the fix: 0 of 3; failing: {T_ADD}, {T_DIVIDE}, {T_POWER}",
            NOT_ON_THE_FIX,
        ],
    ],
    "regression_blind": [
        FIXED,
        [
            "Regression tests: 3",
            f"Catch the original bugs: 2 of 3; not: {T_DIVIDE}",
            "Pass on the fix: 3 of 3",
            f"Root causes caught: add ({T_ADD}), power ({T_POWER})",
            "Root causes not caught: divide",
            "Verdict: not every root cause is guarded: no test catches divide.",
        ],
    ],
    "regression_one_cause": [
        FIXED,
        [
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            "Pass on the fix: 3 of 3",
            "Root causes caught: add (test_add_small_numbers, test_add_negative_numbers, test_add_to_zero)",
            "Root causes not caught: divide, power",
            "Verdict: not every root cause is guarded: no test catches divide, power.",
        ],
    ],
    "regression_duplicate": [
        FIXED,
        [  # the first test_add would catch nothing: the last one is what runs
            "Regression tests: 3",
            "test_add is defined twice; the last definition counts",
            "Catch the original bugs: 3 of 3",
            "Pass on the fix: 3 of 3",
            "Root causes caught: add (test_add), divide (test_divide), power (test_power)",
            GUARDED[-1],
        ],
    ],
    "regression_testcase": [
        FIXED,
        [
            "Regression tests: 3",
            "Catch the original bugs: 3 of 3",
            "Pass on the fix: 3 of 3",
            "Root causes caught: add (TestRegressions.test_add), divide (TestRegressions.test_divide), power (TestRegressions.test_power)",
            GUARDED[-1],
        ],
    ],
    "regression_hangs": [  # the test that hangs costs its own result only
        FIXED,
        [
            "Regression tests: 3",
            f"Catch the original bugs: 2 of 3; did not run: {T_DIVIDE} (timed out after 2 s)",
            "Pass on the fix: 3 of 3",
            f"Root causes caught: add ({T_ADD}), power ({T_POWER})",
            f"Root causes not caught: divide (did not run: {T_DIVIDE} (timed out after 2 s))",
            "Verdict: not every root cause is guarded: no test catches divide.",
        ],
    ],
    "regression_syntax": [FIXED],  # and the one sentence below instead of a second report
    "regression_unsaved": [FIXED],
    "turn2_budget": [FIXED],
}  # fmt: skip


def unverified(ended: str) -> list[str]:
    """What the verification cells print when the first turn ended early with `ended`."""
    return [
        "The agent saved no calc.py in /mnt/session/outputs/: there is nothing to verify.",
        "Nothing ran: there is no calc.py from the agent.",
        f"Skipped: the first turn did not finish ({ended}).",
        "There is no second turn to check (see above).",
        "Nothing ran: there are no regression tests and fixed calc.py to run them against.",
    ]


NO_REGRESSIONS = [
    "The agent saved no test_regressions.py in /mnt/session/outputs/: nothing to check.",
    "Nothing ran: there are no regression tests and fixed calc.py to run them against.",
]
WAITED = "Waited 1.8 s for the session's outputs to be listed."  # 0.25 + 0.5 + 1 s of pauses
INTERRUPTED = "Sent user.interrupt to the session {session}; it is now idle."
# Other whole lines the reader must be told ({session}: the session's id).
LINES = {
    **{
        name: unverified(name)
        for name in ("retries_exhausted", "requires_action", "refusal", "budget_reached", "terminated")
    },
    "endless": [*unverified("no end seen"), INTERRUPTED],  # the watch gave up: no stop reason
    "archive_refused": [INTERRUPTED],
    "late_output": [WAITED],
    "regression_unsaved": [WAITED, *NO_REGRESSIONS],
    "turn2_budget": NO_REGRESSIONS,
    "regression_syntax": ["test_regressions.py does not parse: SyntaxError on line 19 (expected ':')"],
}  # fmt: skip
# The wait for the outputs (COOKBOOK_OUTPUT_WAIT): files.list is asked once per verification,
# and again only after a turn that ended (end_turn) without the file listed yet.
ONE_TURN = {"retries_exhausted", "requires_action", "refusal", "budget_reached", "terminated", "endless"}  # fmt: skip
LISTINGS = {"late_output": 3 + 1 + 1, "regression_unsaved": 1 + 4}  # else one per turn
RECONNECTS = {"dropped": 1, "error_frame": 1, "stall": 1}  # streams reopened in the first turn
RECONNECTING = set(RECONNECTS)
FAILING_CELL = {  # the one sentence the failing create cell shows instead of a traceback
    "http_401": "The API answered 401 (authentication_error): invalid x-api-key",
    "http_404_environment": "The API answered 404 (not_found_error): Not found: environments",
}
CREATED = {"http_401": [], "http_404_environment": ["agents"]}  # else all three
STILL_RUNNING = {"endless"}  # at cleanup: the wait for it to stop (COOKBOOK_SETTLE) is used up
POLL = 0.5  # seconds between two sessions.retrieve of the cleanup's wait (wait_until_stopped)
PACED = {"stall", "endless"}  # replayed at the recorded pace: their silence is the point
LIMITS = {  # the cookbook's own limits, shortened where a scenario would wait them out
    "stall": {"COOKBOOK_STREAM_TIMEOUT": "2"},
    "endless": {"COOKBOOK_TURN_TIMEOUT": "2", "COOKBOOK_SETTLE": "1"},
    "infinite_loop": {"COOKBOOK_RUN_TIMEOUT": "2"},
    "regression_hangs": {"COOKBOOK_RUN_TIMEOUT": "2"},
    "regression_unsaved": {"COOKBOOK_OUTPUT_WAIT": "1"},
    "archive_refused": {"COOKBOOK_SETTLE": "1"},
    "budget_reached": {"COOKBOOK_BUDGET": "0.02"},  # the cap the scenario's session reaches
    "turn2_budget": {"COOKBOOK_BUDGET": "0.04"},
}
NOTEBOOK_BOUND_BYTES = 150_000  # the stored notebook stays small, whatever the agent printed


def test_every_scenario_has_a_case_and_each_case_checks_what_the_reader_is_told():
    """Each generated scenario runs below (none is left out), and each states what the reader
    must be told: a report block, whole lines, or phrases; no table names a scenario that is gone."""
    assert SCENARIOS.keys() - REPORTS.keys() - LINES.keys() - MUST.keys() == set()
    tables = (MUST, MUST_NOT, REPORTS, LINES, LIMITS, LISTINGS, RECONNECTS, CREATED, FAILING_CELL)
    stale = {key for table in tables for key in table} | ONE_TURN | STILL_RUNNING | PACED
    assert stale - SCENARIOS.keys() == set()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario(name, reader):
    path = SCENARIO_DIR / f"{name}.jsonl"
    speed = 1 if name in PACED else 0
    nb, fake, failed = reader.run(
        path, speed, LIMITS.get(name), restart_before_cleanup=name == "restart"
    )
    text, html, errors = outputs_of(nb)
    lines = text.splitlines()
    sessions = [resource_id for kind, resource_id in created(fake) if kind == "sessions"]

    for sentence in MUST.get(name, []):
        assert sentence in text, f"{name}: expected {sentence!r} in the outputs:\n{text[-3000:]}"
    for sentence in MUST_NOT.get(name, []):
        assert sentence not in text, f"{name}: {sentence!r} must not be said"
    for line in LINES.get(name, []):
        line = line.format(session=sessions[0] if sessions else None)
        assert line in lines, f"{name}: expected the line {line!r} in the outputs:\n{text[-3000:]}"
    blocks = REPORTS.get(name, [])
    for block in blocks:
        assert_printed_block(lines, block, name)
    verdicts = [line for line in lines if line.startswith("Verdict:")]
    assert len(verdicts) == len(blocks), f"{name}: verdicts besides the expected: {verdicts}"
    if name in FAILING_CELL:
        [(cell, error)] = errors
        assert cell == failed and ".create(" in nb.cells[failed].source
        assert len(error.traceback) == 1 and error.traceback[0].startswith(FAILING_CELL[name])
    else:
        assert failed is None and errors == [], errors

    assert fake.unmatched() == [], fake.problems()
    assert fake.unplayed() == [], fake.problems()
    kinds = CREATED.get(name, ["agents", "environments", "sessions"])
    assert sorted(kind for kind, _ in created(fake)) == kinds, f"{name}: {created(fake)}"
    for kind, resource_id in created(fake):
        archive = f"/v1/{kind}/{resource_id}/archive"
        assert any(
            e["method"] == "POST" and e["path"] == archive and e["status"] == 200 for e in fake.log
        ), f"{name}: {kind} {resource_id} was created but never archived"
        said = f"Archived the {kind[:-1]} {resource_id}."
        assert said in lines, f"{name}: expected the line {said!r} in the outputs"

    # Timing promises, on what the notebook did. Turns, and the streams they opened: one per
    # turn, and one per reconnect.
    turns = 0 if name in FAILING_CELL else 1 if name in ONE_TURN else 2
    reconnects = RECONNECTS.get(name, 0)
    streams = [e for e in fake.log if e["path"].endswith("/events/stream")]
    assert len(streams) == turns + reconnects, f"{name}: {len(streams)} streams opened"
    notes = [line for line in lines if line.startswith("[note] Reconnecting (")]
    assert notes == [
        f"[note] Reconnecting ({n} of 3): a new stream, then the history."
        for n in range(1, reconnects + 1)
    ]
    if name not in RECONNECTING:  # a stream that delivers the ending is never reconnected
        assert "The stream closed before the turn ended" not in text
        reads = [e for e in fake.log if e["method"] == "GET" and e["path"].endswith("/events")]
        assert len(reads) <= 1, f"{name}: the history was read besides the polling sidebar"
    else:
        assert_each_message_once(text, path)
    # The outputs are listed once per verification, and asked for again (a bounded wait, with
    # a "Waited" line) only after a turn that ended and did not list the file yet.
    listings = [e for e in fake.log if e["method"] == "GET" and e["path"] == "/v1/files"]
    assert len(listings) == LISTINGS.get(name, turns), f"{name}: {len(listings)} listings"
    waits = [line for line in lines if line.startswith("Waited")]
    assert waits == ([WAITED] if name in LISTINGS else []), f"{name}: {waits}"
    # Cleanup: a session that stopped is retrieved once; one still running is polled until
    # COOKBOOK_SETTLE seconds are up (and interrupted), not longer.
    polls = cleanup_polls(fake, sessions[0]) if sessions else 0
    if name in STILL_RUNNING:
        settle = float(LIMITS[name]["COOKBOOK_SETTLE"])
        assert 1 < polls <= 1 + settle / POLL, f"{name}: {polls} polls in {settle:g} s"
    else:
        assert polls == (1 if sessions else 0), f"{name}: a stopped session polled {polls} times"

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
def test_the_shipped_run_reports_every_root_cause_caught(reader):
    """The run whose outputs the notebook stores: both reports as promised, whole, and no root
    cause left uncaught."""
    nb, fake, failed = reader.run(SHIPPED_CASSETTE)
    text, _, _ = outputs_of(nb)
    assert failed is None and fake.unplayed() == [], fake.problems()
    lines = text.splitlines()
    for block in (FIXED, GUARDED):
        assert_printed_block(lines, block, "shipped")
    assert not [line for line in lines if line.startswith("Root causes not caught")]


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


def assert_printed_block(lines: list[str], block: list[str], name: str) -> None:
    """`block` is printed as it stands: its lines, whole, one after the other."""
    starts = [i for i, line in enumerate(lines) if line == block[0]]
    if any(lines[i : i + len(block)] == block for i in starts):
        return
    head = block[0].split(":")[0] + ":"
    near = [i for i, line in enumerate(lines) if line.startswith(head)]
    printed = "\n".join(lines[near[0] : near[0] + len(block) + 1]) if near else "(nothing)"
    expected = "\n".join(block)
    raise AssertionError(f"{name}: expected the lines\n{expected}\nbut the outputs have\n{printed}")


def cleanup_polls(fake, session_id: str) -> int:
    """How often the cleanup retrieved the session before it first interrupted or archived it."""
    entries = [e for e in fake.log if e["path"].startswith(f"/v1/sessions/{session_id}")]
    retrieve = f"/v1/sessions/{session_id}"
    first = next((n for n, e in enumerate(entries) if e["path"] == retrieve), len(entries))
    polls = 0
    for entry in entries[first:]:
        if entry["method"] != "GET" or entry["path"] != retrieve:
            break
        polls += 1
    return polls


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
