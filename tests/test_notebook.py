"""The committed notebook: publishable as stored, checked strictly by nbval, and kind to a reader's
habits (no key, running cleanup twice, interrupting the kernel while a turn streams)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from tests.lab import KERNELSPEC
from tests.notebook_runner import (
    NOTEBOOK,
    PYTEST,
    WIDGET_VIEW,
    client_for,
    nbval,
    outputs_of,
    setup_cells,
)
from tests.replay import ROOT, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette, new_header
from tests.replay_fixtures import SDK

LOCAL_PATH = re.compile(r"(/tmp/|/home/|/root/|/work/|/Users/|/var/folders/|[A-Z]:\\\\)")
SECRET = re.compile(r"sk-ant-[\w-]{6,}|replay-dummy-key|Bearer ", re.I)


@pytest.fixture(scope="module")
def stored():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_outputs_are_clean(stored):
    code = [c for c in stored.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "every code cell was executed"
    for cell in code:
        for out in cell.outputs:
            assert out.output_type != "error", cell.source[:60]
            assert not (out.output_type == "stream" and out.name == "stderr"), cell.source[:60]
            blob = json.dumps(out)
            assert not LOCAL_PATH.search(blob), f"a local path in the output of: {cell.source[:60]}"
            assert not SECRET.search(blob), (
                f"something like a credential in the output of: {cell.source[:60]}"
            )
            assert WIDGET_VIEW not in out.get("data", {}), (
                "widget views without stored state do not publish"
            )
            assert "\\u001b" not in blob, "a terminal escape in a stored output"


def test_execution_counts_in_order_and_standard_kernel(stored):
    counts = [c.execution_count for c in stored.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    assert stored.metadata.kernelspec == {
        "display_name": "Python 3",
        "language": "python",
        "name": "python3",
    }
    assert "widgets" not in stored.metadata
    assert all("execution" not in c.metadata for c in stored.cells), "no timing metadata"


def test_outputs_come_from_the_shipped_cassette(stored):
    exchanges = Cassette.load(SHIPPED_CASSETTE).exchanges
    session_id = next(
        ex["response"]["json"]["id"] for ex in exchanges if ex["request"]["path"] == "/v1/sessions"
    )
    assert session_id in json.dumps([c.get("outputs", []) for c in stored.cells])


def test_the_stored_report_reads_as_promised(stored):
    text, _, _ = outputs_of(stored)
    for line in (
        "Original tests: 6 of 6 pass",
        "Functions changed: add, divide, power",
        "mean(): unchanged",
    ):
        assert f"\n{line}\n" in text
    for line in (
        "Regression tests: 3",
        "Catch the original bugs: 3 of 3",
        "Pass on the fix: 3 of 3",
        "Root causes caught: add (test_add_adds_instead_of_subtracting), divide"
        " (test_divide_is_true_division), power (test_power_multiplies_exponent_times)",
    ):
        assert f"\n{line}\n" in text
    assert "Root causes not caught" not in text
    request = next(
        ex["request"]
        for ex in Cassette.load(SHIPPED_CASSETTE).exchanges
        if ex["request"]["path"] == "/v1/agents"
    )
    toolset = request["json"]["tools"][0]
    assert request["json"]["metadata"] == {
        "anthropic_cookbook": "claude-cookbooks/iterate-failing-tests"
    }
    assert toolset["default_config"] == {"enabled": False}
    assert [c["name"] for c in toolset["configs"] if c["enabled"]] == [
        "bash",
        "read",
        "write",
        "edit",
        "glob",
        "grep",
    ]


@pytest.mark.slow
def test_nbval_runs_the_committed_notebook_strictly():
    """nbval (not --nbval-lax) against the shipped cassette: every output as stored, every
    recorded exchange played, no request refused."""
    done = nbval()
    assert done.returncode == 0, done.stdout[-4000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def broken_cassette(tmp_path) -> tuple:
    """A copy of the shipped cassette that nbval must reject three ways: the first short tool
    result (one the transcript prints whole) and the last agent message end with a marker, in
    the stream and the history alike (so it works for any cassette), and one more exchange is
    never asked for."""
    cassette = Cassette.load(SHIPPED_CASSETTE)
    markers = {"agent.tool_result": " [result changed]", "agent.message": " [message changed]"}
    for event_type, marker in markers.items():
        events = [
            data
            for ex in cassette.exchanges
            for data in [e.get("data") for e in ex["response"].get("sse", [])]
            + ex["response"].get("json", {}).get("data", [])
            if isinstance(data, dict) and data.get("type") == event_type
        ]
        short = [e for e in events if len(e["content"][-1]["text"].splitlines()) < 5]
        target = short[0]["id"] if event_type == "agent.tool_result" else events[-1]["id"]
        for data in events:
            if data["id"] == target:
                data["content"][-1]["text"] += marker
    extra = {
        "request": {"method": "GET", "path": "/v1/agents/agent_never_asked"},
        "response": {"status": 200, "json": {}},
    }
    cassette.exchanges.append(extra)
    cassette.save(tmp_path / "broken.jsonl")
    return tmp_path / "broken.jsonl", [
        *markers.values(),
        "never played",
        "/v1/agents/agent_never_asked",
    ]


@pytest.mark.slow
def test_nbval_fails_when_the_recording_differs_or_is_not_all_played(tmp_path):
    """nbval compares every printed output (a tool result in one cell, a message in another),
    and the replay fails the run when a recorded exchange was never played."""
    cassette, signs = broken_cassette(tmp_path)
    done = nbval(cassette=cassette)
    assert done.returncode != 0, done.stdout[-2000:]
    for sign in signs:
        assert sign in done.stdout, f"{sign!r} is not in nbval's report"


@pytest.mark.slow
def test_an_unplayed_exchange_alone_fails_the_nbval_run(tmp_path):
    """The replay plugin fails the run when a recorded exchange was never played, even when
    every cell's output matches: a one-cell notebook asks for one of two recorded exchanges."""
    answer = {"status": 200, "json": {}}
    asked, never = "/v1/agents/agent_asked", "/v1/agents/agent_never_asked"
    exchanges = [
        {"request": {"method": "GET", "path": path}, "response": answer} for path in (asked, never)
    ]
    Cassette(new_header("scripted", "2026-11-20T09:30:00Z", SDK, "a test"), exchanges).save(
        tmp_path / "two.jsonl"
    )
    source = f"import os, urllib.request\nurllib.request.urlopen(os.environ['ANTHROPIC_BASE_URL'] + '{asked}').close()"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, execution_count=1)])
    nb.metadata.kernelspec = dict(KERNELSPEC)
    nbformat.write(nb, tmp_path / "one_request.ipynb")
    command = [*PYTEST, "-p", "tests.replay.plugin", "--nbval", "one_request.ipynb"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REPLAY_CASSETTE": str(tmp_path / "two.jsonl")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0, done.stdout[-2000:]
    assert "1 passed" in done.stdout and "failed" not in done.stdout, (
        "only the accounting may fail this run"
    )
    assert "never played" in done.stdout and never in done.stdout and asked not in done.stdout


@pytest.mark.slow
def test_without_a_key_the_setup_cell_says_so_in_one_sentence(tmp_path):
    """A reader's kernel: no key, no base URL, a fresh empty HOME, nothing else set."""
    import os

    nb = nbformat.read(NOTEBOOK, as_version=4)
    *imports, setup = setup_cells(nb)
    client = client_for(nb, timeout=60)
    with client.setup_kernel(env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)}):
        for i in imports:
            client.execute_cell(nb.cells[i], i)
        with pytest.raises(CellExecutionError):
            client.execute_cell(nb.cells[setup], setup)
    [error] = [o for o in nb.cells[setup].outputs if o.output_type == "error"]
    assert len(error.traceback) == 1 and error.traceback[0].startswith(
        "No API key: set ANTHROPIC_API_KEY"
    ), error


@pytest.mark.slow
def test_the_shipped_run_needs_no_catch_up_and_its_cleanup_is_safe_to_run_twice(reader):
    nb, fake, failed = reader.run(SHIPPED_CASSETTE, cleanup_again=True)
    text, _, errors = outputs_of(nb)
    assert failed is None and errors == []
    sends = [e for e in fake.log if e["method"] == "POST" and e["path"].endswith("/events")]
    assert len(sends) == 2, "only the two user messages are sent: no user.interrupt was needed"
    assert "Reconnecting" not in text and "Sent user.interrupt" not in text
    second = "".join(o.get("text", "") for o in nb.cells[-2].outputs)
    assert second.count("is already archived") == 3, second
    assert sum(e["path"].endswith("/archive") for e in fake.log) == 3
    assert fake.unmatched() == [] and fake.unplayed() == []


@pytest.mark.slow
def test_an_interrupt_while_a_turn_streams_is_one_note_and_a_transcript(reader):
    """Kernel › Interrupt during the first turn: no traceback, the note says the agent may still
    be working (and costing), and what was seen so far is printed."""
    done = threading.Event()

    def interrupt_once_the_task_is_sent() -> None:
        while not done.wait(0.05):
            log = reader.fake.log if reader.fake else []
            if any(e["method"] == "POST" and e["path"].endswith("/events") for e in log):
                done.wait(0.5)  # a few events into a turn that lasts ~14 s at speed 4
                return reader.interrupt()

    watcher = threading.Thread(target=interrupt_once_the_task_is_sent, daemon=True)
    watcher.start()
    try:
        nb, _, _ = reader.run(SHIPPED_CASSETTE, speed=4, stop_after="view.finish(ended)")
    finally:
        done.set()
        watcher.join()
    turn = next(c for c in nb.cells if "view.finish(ended)" in c.source)
    text = "".join(o.get("text", "") for o in turn.outputs)
    assert not [o for o in turn.outputs if o.output_type == "error"]
    assert (
        "You stopped watching before the turn ended." in text
        and "costing money" in text
        and "[You] The tests of a small" in text
    )
    assert text.startswith("Turn 1: make the tests pass · stopped ·")


@pytest.mark.slow
def test_after_an_interrupt_the_remaining_cells_run_and_cleanup_archives_everything(reader):
    """As a person in `make lab` would: the cells in order, Kernel › Interrupt while the first
    turn streams, then the remaining cells. The interactive replay answers what does not depend
    on the story's order, so the cleanup interrupts the session that still runs and archives
    it, the environment and the agent, each with its own sentence, and the sidebar lists the
    events this take played; nothing is refused."""
    done = threading.Event()

    def interrupt_once_the_task_is_sent() -> None:
        while not done.wait(0.05):
            log = reader.fake.log if reader.fake else []
            if any(e["method"] == "POST" and e["path"].endswith("/events") for e in log):
                done.wait(0.5)
                return reader.interrupt()

    watcher = threading.Thread(target=interrupt_once_the_task_is_sent, daemon=True)
    watcher.start()
    try:
        nb, fake, failed = reader.run(
            SHIPPED_CASSETTE, speed=4, env={"COOKBOOK_SETTLE": "1"}, interactive=True
        )
    finally:
        done.set()
        watcher.join()
    text, _, errors = outputs_of(nb)
    assert failed is None and errors == [], errors
    assert "You stopped watching before the turn ended." in text
    assert "The replay" not in text, "no refusal: " + text[-2000:]
    ids = {
        kind: next(
            ex["response"]["json"]["id"]
            for ex in fake.cassette.exchanges
            if (ex["request"]["method"], ex["request"]["path"]) == ("POST", f"/v1/{kind}s")
        )
        for kind in ("session", "environment", "agent")
    }
    cleanup = "".join(o.get("text", "") for o in nb.cells[-2].outputs)
    assert cleanup.splitlines() == [
        f"Sent user.interrupt to the session {ids['session']}; it is now idle.",
        f"Archived the session {ids['session']}.",
        f"Archived the environment {ids['environment']}.",
        f"Archived the agent {ids['agent']}.",
    ], cleanup
    played = {e["id"] for e in fake.take.events.get(ids["session"], [])}
    sidebar = next(c for c in nb.cells if "events.list(session.id)" in c.source)
    first = "".join(o.get("text", "") for o in sidebar.outputs).splitlines()[0]
    assert played and first == f"{len(played)} events in the session's history so far:"
    assert "The agent saved no calc.py" in text and "Skipped: the first turn did not finish" in text


@pytest.mark.slow
def test_a_failed_archive_is_tried_again_when_the_cleanup_runs_again(reader, tmp_path):
    """The cleanup remembers a resource as archived only once its archive succeeded: the agent's
    archive fails the first time (a 500, retried by the SDK and failing again), and running the
    cleanup cell again archives it, while the session and the environment are already archived."""
    cassette = Cassette.load(SHIPPED_CASSETTE)
    n, archive = next(
        (n, ex)
        for n, ex in enumerate(cassette.exchanges)
        if ex["request"]["path"].startswith("/v1/agents/")
        and ex["request"]["path"].endswith("/archive")
    )
    error = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    failed = {"request": archive["request"], "response": {"status": 500, "json": error}}
    cassette.exchanges[n:n] = [failed] * 3  # the first try and the SDK's two retries
    cassette.save(tmp_path / "archive_fails_once.jsonl")
    nb, fake, stopped = reader.run(tmp_path / "archive_fails_once.jsonl", cleanup_again=True)
    assert stopped is None and fake.unplayed() == [], fake.problems()
    agent_id = archive["response"]["json"]["id"]
    tries = [e["status"] for e in fake.log if e["path"] == f"/v1/agents/{agent_id}/archive"]
    assert tries == [500, 500, 500, 200], "tried again by the second run of the cleanup cell"
    again = "".join(o.get("text", "") for o in nb.cells[-2].outputs).splitlines()  # the second run
    assert [line.split()[1] for line in again[:2]] == ["session", "environment"]
    assert again[0].endswith("is already archived.") and again[1].endswith("is already archived.")
    assert again[2:] == [f"Archived the agent {agent_id}."], again
