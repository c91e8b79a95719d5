"""The committed notebook: publishable as stored, checked strictly by nbval, helpful without a key."""

from __future__ import annotations

import json
import os
import re

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from tests.notebook_runner import NOTEBOOK, WIDGET_VIEW, client_for, execute_like_a_reader, nbval
from tests.replay import SHIPPED_CASSETTE
from tests.replay.cassette import Cassette

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
    session_id = next(
        ex["response"]["json"]["id"]
        for ex in Cassette.load(SHIPPED_CASSETTE).exchanges
        if ex["request"]["path"] == "/v1/sessions"
    )
    assert session_id in json.dumps([c.get("outputs", []) for c in stored.cells])


def changed_cassette(tmp_path, event_type: str, marker: str):
    """A copy of the shipped cassette whose last `event_type` event ends with `marker`, in the
    stream and in the history alike (so it works for any cassette, scripted or recorded)."""
    cassette = Cassette.load(SHIPPED_CASSETTE)
    events = [
        data
        for ex in cassette.exchanges
        for data in [e.get("data") for e in ex["response"].get("sse", [])]
        + ex["response"].get("json", {}).get("data", [])
        if isinstance(data, dict) and data.get("type") == event_type
    ]
    assert events, f"the cassette has no {event_type}"
    target = events[-1]["id"]
    for data in events:
        if data["id"] == target:
            data["content"][-1]["text"] += marker
    path = tmp_path / "changed.jsonl"
    cassette.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("event_type", ["agent.message", "agent.tool_result"])
def test_nbval_fails_when_agent_output_changes(tmp_path, event_type):
    marker = " [changed by the test]"
    done = nbval(cassette=changed_cassette(tmp_path, event_type, marker))
    assert done.returncode != 0, done.stdout[-2000:]
    assert marker in done.stdout, "nbval's report shows the changed text"


@pytest.mark.slow
def test_without_a_key_the_setup_cell_says_so_in_one_sentence(stored, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["ANTHROPIC_CONFIG_DIR"] = str(tmp_path)  # no profile on disk either
    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup = next(i for i, c in enumerate(nb.cells) if "Anthropic()" in c.source)
    client = client_for(nb, timeout=60)
    with client.setup_kernel(env=env), pytest.raises(CellExecutionError):
        client.execute_cell(nb.cells[setup], setup)
    [error] = [o for o in nb.cells[setup].outputs if o.output_type == "error"]
    assert error.ename == "SystemExit" and error.evalue.startswith(
        "No API key: set ANTHROPIC_API_KEY"
    )
    assert "CredentialsError" not in json.dumps(error) and len(error.traceback) <= 2


@pytest.mark.slow
def test_cleanup_is_safe_to_run_twice():
    nb, fake, failed = execute_like_a_reader(SHIPPED_CASSETTE, cleanup_again=True)
    second = "".join(o.get("text", "") for o in nb.cells[-2].outputs)
    assert failed is None
    assert second.count("is already archived") == 3, second
    assert sum(e["path"].endswith("/archive") for e in fake.log) == 3
    assert fake.unmatched() == [] and fake.unplayed() == []
