"""Cleanup and one-sentence errors (watch_and_verify.wait_until_stopped, stop_if_running,
find_leftovers, sentence_for, show_errors_as_sentences), with the real SDK against the fake."""

from __future__ import annotations

import anthropic
import pytest
import watch_and_verify
from IPython.core.interactiveshell import InteractiveShell
from watch_and_verify import (
    REPLAY_HINT,
    Sentence,
    find_leftovers,
    sentence_for,
    show_errors_as_sentences,
    stop_if_running,
    wait_until_stopped,
)

from tests.replay.server import ReplayServer
from tests.replay_fixtures import (
    AGENT_ID,
    SESSION_ID,
    agent_body,
    environment_body,
    exchange,
    make_cassette,
    make_client,
    session_body,
)

TAG = "claude-cookbooks/iterate-failing-tests"
SESSION = f"/v1/sessions/{SESSION_ID}"
INTERRUPT = {"type": "user.interrupt"}


def retrieve(status: str) -> dict:
    return exchange("GET", SESSION, {"json": session_body(status=status)})


def interrupt() -> dict:
    echo = {"data": [{**INTERRUPT, "id": "sevt_int", "processed_at": None}]}
    return exchange(
        "POST", f"{SESSION}/events", {"json": echo}, body={"json": {"events": [INTERRUPT]}}
    )


def sends(fake) -> int:
    return sum(e["method"] == "POST" and e["path"].endswith("/events") for e in fake.log)


def test_waiting_polls_until_the_session_stops_running():
    cassette = make_cassette([retrieve("running"), retrieve("rescheduling"), retrieve("idle")])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        assert wait_until_stopped(client, SESSION_ID, 5) == "idle"
        assert len(fake.log) == 3


def test_waiting_is_bounded():
    with ReplayServer(make_cassette([retrieve("running")])) as fake, make_client(fake) as client:
        assert wait_until_stopped(client, SESSION_ID, 1.25) == "running"
        assert 3 <= len(fake.log) <= 4, "polled every half second for 1.25 s"


def test_an_idle_session_is_not_interrupted(capsys):
    with ReplayServer(make_cassette([retrieve("idle")])) as fake, make_client(fake) as client:
        stop_if_running(client, SESSION_ID, 5)
        assert sends(fake) == 0 and len(fake.log) == 1
    assert capsys.readouterr().out == ""


def test_a_session_that_still_runs_is_interrupted_and_waited_for(capsys):
    cassette = make_cassette([retrieve("running"), interrupt(), retrieve("idle")])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        stop_if_running(client, SESSION_ID, 0.6)
        assert sends(fake) == 1 and fake.unplayed() == []
    assert (
        capsys.readouterr().out
        == f"Sent user.interrupt to the session {SESSION_ID}; it is now idle.\n"
    )


def test_force_interrupts_a_session_whose_status_says_idle(capsys):
    cassette = make_cassette([interrupt(), retrieve("idle")])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        stop_if_running(client, SESSION_ID, 5, force=True)
        assert sends(fake) == 1
    assert "Sent user.interrupt" in capsys.readouterr().out


def listing(path: str, bodies: list[dict], query: dict | None = None) -> dict:
    return exchange("GET", path, {"json": {"data": bodies, "next_page": None}}, query=query)


def test_leftovers_are_found_by_this_cookbooks_tag_only(capsys):
    mine = {"metadata": {"anthropic_cookbook": TAG}}
    other_tag = {"metadata": {"anthropic_cookbook": "claude-cookbooks/another-cookbook"}}
    agents = [
        agent_body() | mine,
        agent_body() | other_tag | {"id": "agent_other"},
        agent_body() | {"metadata": {}, "id": "agent_untagged"},
    ]
    environments = [environment_body() | other_tag, environment_body() | mine | {"id": "env_x"}]
    cassette = make_cassette(
        [
            listing("/v1/agents", agents, {"limit": ["100"]}),
            listing("/v1/environments", environments, {"limit": ["100"]}),
            listing("/v1/sessions", [session_body()], {"agent_id": [AGENT_ID]}),
        ]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        found = find_leftovers(client, TAG)
        assert fake.unplayed() == [] and fake.unmatched() == []
    assert {kind: [r.id for r in found[kind]] for kind in found} == {
        "session": [SESSION_ID],
        "environment": ["env_x"],
        "agent": [AGENT_ID],
    }
    assert capsys.readouterr().out == (
        "This kernel has created nothing (a restart forgets), so we looked for this cookbook's"
        " tag among the first 100 agents and environments listed: not yet archived are"
        " 1 session(s), 1 environment(s), 1 agent(s).\n"
    )


def test_a_failed_search_for_leftovers_is_one_sentence_and_finds_nothing(capsys):
    error = {"type": "error", "error": {"type": "authentication_error", "message": "invalid key"}}
    cassette = make_cassette(
        [exchange("GET", "/v1/agents", {"json": error}, query={"limit": ["100"]}, status=401)]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        assert find_leftovers(client, TAG) == {}
    assert capsys.readouterr().out == (
        "Could not look for what this cookbook left behind: The API answered 401"
        " (authentication_error): invalid key\n"
    )


def api_error(status: int, error_type: str, message: str) -> anthropic.APIStatusError:
    """The error the SDK raises for a retrieve the fake answers with this status and error."""
    error = {"type": "error", "error": {"type": error_type, "message": message}}
    cassette = make_cassette([exchange("GET", SESSION, {"json": error}, status=status)])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        with pytest.raises(anthropic.APIStatusError) as info:
            client.beta.sessions.retrieve(SESSION_ID)
    return info.value


def test_sentences_for_api_errors_and_a_cell_run_too_early():
    not_found = api_error(404, "not_found_error", "No such session.")
    assert sentence_for(not_found) == "The API answered 404 (not_found_error): No such session."
    with anthropic.Anthropic(base_url="http://127.0.0.1:9/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(anthropic.APIConnectionError) as refused:
            c.beta.sessions.retrieve(SESSION_ID)
    assert sentence_for(refused.value) == (
        "Could not reach the API at http://127.0.0.1:9/ (ConnectError): check your network and"
        f" ANTHROPIC_BASE_URL.{REPLAY_HINT}"
    )
    assert sentence_for(NameError("name 'session' is not defined", name="session")) == (
        "session is not defined yet: run the cells above this one first"
        " (Run › Run All Above Selected Cell)."
    )
    assert sentence_for(RuntimeError("<b>" + "x" * 2000)) == "&lt;b>" + "x" * 997 + (
        "… [1,003 more characters]"
    )
    assert sentence_for(RuntimeError("\n".join("abcdefg"))) == "a\nb\nc\nd\ne\n… [2 more lines]"


def test_a_status_error_without_a_message_shows_its_body():
    response = api_error(400, "api_error", "x").response
    error = anthropic.APIStatusError("raw", response=response, body="not json")
    assert sentence_for(error) == "The API answered 400 (None): not json"


def test_ipython_shows_api_errors_and_early_cells_as_one_sentence(monkeypatch, capsys):
    shell = InteractiveShell.instance()
    monkeypatch.setattr(watch_and_verify, "get_ipython", lambda: shell)
    try:
        show_errors_as_sentences()
        shell.run_cell("print(not_defined_anywhere)")
        shown = capsys.readouterr()
        assert "not_defined_anywhere is not defined yet: run the cells above" in shown.out
        assert "Traceback" not in shown.out + shown.err
        shell.run_cell("raise ValueError('ordinary')")  # other errors keep their traceback
        assert "Traceback" in capsys.readouterr().out
    finally:
        shell.set_custom_exc((), None)
    monkeypatch.setattr(watch_and_verify, "get_ipython", lambda: None)
    show_errors_as_sentences()  # outside IPython: nothing to do, and no error


def test_a_sentence_is_shown_without_a_traceback():
    assert Sentence("No API key: set it.")._render_traceback_() == ["No API key: set it."]
