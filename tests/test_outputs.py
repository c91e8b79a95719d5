"""Which of the agent's files the notebook takes (watch_and_verify.newest_output): the newest one of
that name, asked for again with growing pauses while the list has none, for a bounded time."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import watch_and_verify
from watch_and_verify import newest_output


def file(name: str, created: str, file_id: str):
    return SimpleNamespace(filename=name, created_at=created, id=file_id)


@pytest.fixture
def pauses(monkeypatch):
    """The pauses newest_output sleeps, recorded instead of slept."""
    slept = []
    monkeypatch.setattr(watch_and_verify.time, "sleep", slept.append)
    return slept


def listings(*lists):
    """A list_outputs() that returns each list in turn, then the last one again."""
    calls = []

    def list_outputs():
        calls.append(1)
        return lists[min(len(calls), len(lists)) - 1]

    return list_outputs, calls


def test_the_newest_file_of_that_name_is_taken(pauses, capsys):
    files = [
        file("calc.py", "2026-11-20T09:31:00Z", "file_old"),
        file("NOTES.md", "2026-11-20T09:35:00Z", "file_notes"),
        file("calc.py", "2026-11-20T09:33:00Z", "file_new"),
        file("calc.py", "2026-11-20T09:32:00Z", "file_mid"),
    ]
    list_outputs, calls = listings(files)
    found, outputs = newest_output(list_outputs, "calc.py", 30)
    assert found.id == "file_new" and outputs == files
    assert calls == [1] and pauses == [] and capsys.readouterr().out == ""


def test_a_late_file_is_waited_for_with_growing_pauses_and_the_wait_is_said(pauses, capsys):
    late = [file("calc.py", "2026-11-20T09:31:00Z", "file_late")]
    list_outputs, calls = listings([], [], [], late)
    found, outputs = newest_output(list_outputs, "calc.py", 30)
    assert found.id == "file_late" and outputs == late
    assert pauses == [0.25, 0.5, 1.0] and len(calls) == 4
    assert capsys.readouterr().out == "Waited 1.8 s for the session's outputs to be listed.\n"


def test_the_wait_is_bounded_and_the_pauses_capped(pauses, capsys):
    list_outputs, calls = listings([file("NOTES.md", "2026-11-20T09:31:00Z", "file_notes")])
    found, outputs = newest_output(list_outputs, "calc.py", 30)
    assert found is None and [f.id for f in outputs] == ["file_notes"]
    assert pauses == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert sum(pauses[:-1]) < 30 <= sum(pauses), "it stops once it has waited the patience"
    assert len(calls) == len(pauses) + 1
    assert capsys.readouterr().out == "Waited 31.8 s for the session's outputs to be listed.\n"


def test_without_patience_the_list_is_read_once(pauses, capsys):
    list_outputs, calls = listings([])
    assert newest_output(list_outputs, "calc.py", 0) == (None, [])
    assert calls == [1] and pauses == [] and capsys.readouterr().out == ""
