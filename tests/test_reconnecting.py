"""Following a turn (watch_and_verify.reconnecting, run_turn, stream_problem, turn_end) against the
fake's broken streams, with the real SDK as the client: a stream that closes early, an `error`
frame, a stall; the history read once per reconnect; the reconnect limit and the turn deadline."""

from __future__ import annotations

import time

import anthropic
import pytest
from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents
from watch_and_verify import (
    SessionView,
    reconnecting,
    run_turn,
    stream_problem,
    turn_end,
    user_message,
)

from tests.replay.server import ReplayServer
from tests.replay_fixtures import (
    SESSION_ID,
    TASK,
    TS,
    exchange,
    make_cassette,
    make_client,
    send_exchange,
    sse,
    stream_exchange,
    turn_events,
)

TEXT = "I fixed add() in calc.py; all tests pass now."
TURN = turn_events("a", TEXT, TASK)  # running, user.message, span, previews, message, ..., idle
SENT = TURN[1]["id"]  # the user.message: where the turn begins in the history
PERSISTED = [data for data in TURN if "id" in data]
ERROR_FRAME = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def cut_stream(entries: list[dict], after: int | None = None) -> dict:
    """A stream exchange with exactly these SSE entries (the first held until `after`)."""
    streamed = stream_exchange(TURN[:1], after=after)
    if after is not None:
        entries = [{**entries[0], "after": after}, *entries[1:]]
    streamed["response"]["sse"] = entries
    return streamed


def history(events: list[dict]) -> dict:
    body = {"json": {"data": events, "next_page": None}}
    return exchange("GET", f"/v1/sessions/{SESSION_ID}/events", body)


def follow(fake, view, stream_timeout=30.0, turn_timeout=60.0, attempts=3) -> str | None:
    """The notebook's first-turn loop: stream first, then the task; return how the turn ended."""
    view.live("Turn 1")
    with make_client(fake, max_retries=0) as client:
        with client.beta.sessions.events.stream(
            SESSION_ID, event_deltas=["agent.message"], timeout=stream_timeout
        ) as stream:
            sent = client.beta.sessions.events.send(SESSION_ID, events=[user_message(TASK)])
            for ev in reconnecting(
                client, SESSION_ID, stream, sent.data[0].id, view, stream_timeout, turn_timeout,
                attempts,
            ):  # fmt: skip
                view.add(ev)
                if ended := turn_end(ev):
                    return ended
    return None


def opened(client, stream_timeout):
    """The stream a turn's cell opens before it sends its message."""
    return client.beta.sessions.events.stream(
        SESSION_ID, event_deltas=["agent.message"], timeout=stream_timeout
    )


def notes(view) -> list[str]:
    return [
        text for entry in view.entries if entry for label, text, _ in [entry] if label == "note"
    ]


def labels(view) -> list[str]:
    return [entry[0] for entry in view.entries if entry]


def test_a_stream_that_closes_early_is_reopened_and_the_history_fills_the_gap():
    first = [sse(data) for data in TURN[:5]]  # the stream closes after the first preview frames
    later = [sse(data) for data in TURN[7:]]  # the new stream starts at the message
    cassette = make_cassette(
        [
            cut_stream(first, after=2),
            send_exchange(TASK, SENT),
            cut_stream(later),
            history(PERSISTED[:4]),  # what happened while we were away: up to the message
        ]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake:
        assert follow(fake, view) == "end_turn"
        assert fake.unplayed() == [] and fake.unmatched() == []
    assert notes(view) == [
        "The stream closed before the turn ended.",
        "Reconnecting (1 of 3): a new stream, then the history.",
        "The session's history had 1 events the stream missed.",
    ]
    assert labels(view).count("Agent (from history)") == 1, "the message is shown once"
    assert "Agent" not in labels(view)
    assert view.state == "idle (end_turn)"


def test_an_error_frame_is_one_sentence_and_a_reconnect():
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0]), {"delay_ms": 0, "event": "error", "data": ERROR_FRAME}], 2),
            send_exchange(TASK, SENT),
            cut_stream([sse(data) for data in TURN[1:]]),
            history(PERSISTED[:1]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake:
        assert follow(fake, view) == "end_turn"
    assert notes(view)[:2] == [
        "The stream carried an error event (overloaded_error: Overloaded).",
        "Reconnecting (1 of 3): a new stream, then the history.",
    ]
    assert notes(view)[2] == "The session's history had 0 events the stream missed."


def test_a_stall_is_named_as_one_and_the_turn_ended_while_we_were_away():
    silence = {**sse(TURN[1]), "delay_ms": 60_000}  # nothing for a minute
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0]), silence], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(TURN[-1])]),  # opened, then left: the history has the end already
            history(PERSISTED),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette, speed=1) as fake:
        assert follow(fake, view, stream_timeout=0.5) == "end_turn"
        assert fake.unplayed() == []
    assert notes(view) == [
        "No event arrived for 0.5 s (COOKBOOK_STREAM_TIMEOUT).",
        "Reconnecting (1 of 3): a new stream, then the history.",
        f"The session's history had {len(PERSISTED) - 1} events the stream missed.",
    ]
    assert labels(view).count("Agent (from history)") == 1


def test_the_history_of_an_earlier_turn_is_not_shown_again():
    earlier = turn_events("z", "an earlier turn", "first task")
    old = [data for data in earlier if "id" in data]
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0])], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(data) for data in TURN[1:]]),
            history(old + PERSISTED[:1]),
        ]
    )
    view = SessionView()
    for data in old:  # the earlier turn was shown when it ran
        view.seen.add(data["id"])
    with ReplayServer(cassette) as fake:
        assert follow(fake, view) == "end_turn"
    assert "an earlier turn" not in str(view.entries)
    assert notes(view)[2] == "The session's history had 0 events the stream missed."


def test_reconnects_are_bounded():
    broken = [sse(TURN[0])]
    cassette = make_cassette(
        [
            cut_stream(broken, after=2),
            send_exchange(TASK, SENT),
            cut_stream(broken),
            history(PERSISTED[:1]),
            cut_stream(broken),
            history(PERSISTED[:1]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake:
        assert follow(fake, view, attempts=2) is None
        assert fake.unplayed() == []
    assert notes(view) == [
        "The stream closed before the turn ended.",
        "Reconnecting (1 of 2): a new stream, then the history.",
        "The session's history had 0 events the stream missed.",
        "The stream closed before the turn ended.",
        "Reconnecting (2 of 2): a new stream, then the history.",
        "The session's history had 0 events the stream missed.",
        "The stream closed before the turn ended.",
        "The stream broke 3 times; we stopped following it.",
    ]
    streams = [e for e in fake.log if e["path"].endswith("/events/stream")]
    assert len(streams) == 3, "a first stream and two reconnects: no more"


def test_a_turn_that_never_ends_is_given_up_at_its_deadline():
    heartbeats = [{"delay_ms": 100, "comment": "heartbeat"} for _ in range(100)]  # 10 s of them
    cassette = make_cassette(
        [cut_stream([sse(TURN[0]), *heartbeats], after=2), send_exchange(TASK, SENT)]
    )
    view = SessionView()
    with ReplayServer(cassette, speed=1) as fake:
        assert follow(fake, view, stream_timeout=5, turn_timeout=0.5) is None
    assert notes(view) == ["The turn did not end within 0.5 s (COOKBOOK_TURN_TIMEOUT)."]
    streams = [e for e in fake.log if e["path"].endswith("/events/stream")]
    assert len(streams) == 1, "no reconnect after the deadline"


def test_run_turn_is_the_same_loop_and_prints_the_turn(capsys):
    cassette = make_cassette(
        [cut_stream([sse(data) for data in TURN], after=2), send_exchange(TASK, SENT)]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        with opened(client, 30) as stream:
            assert run_turn(client, SESSION_ID, stream, TASK, view, "Turn 2", 30, 60) == "end_turn"
    printed = capsys.readouterr().out
    assert "\nTurn 2 · idle (end_turn) · 1 model requests · 0 tool calls" in printed
    assert f"[Agent] {TEXT}" in printed and "The agent finished its turn (end_turn)." in printed


def test_run_turn_stops_watching_on_an_interrupt(capsys):
    class Interrupted(SessionView):
        def add(self, ev, history=False):
            raise KeyboardInterrupt  # Kernel › Interrupt while the turn streams

    cassette = make_cassette(
        [cut_stream([sse(data) for data in TURN], after=2), send_exchange(TASK, SENT)]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        with opened(client, 30) as stream:
            ended = run_turn(client, SESSION_ID, stream, TASK, Interrupted(), "Turn 2", 30, 60)
        assert ended == "stopped"
    assert "You stopped watching before the turn ended." in capsys.readouterr().out


def test_turn_end():
    def ev(data):
        return construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=data)

    idle = {"type": "session.status_idle", "id": "sevt_i", "processed_at": TS}
    assert turn_end(ev({"type": "session.status_terminated", "id": "sevt_t"})) == "terminated"
    assert turn_end(ev(TURN[1])) is None
    for reason in ("end_turn", "requires_action", "retries_exhausted", "budget_reached"):
        assert turn_end(ev({**idle, "stop_reason": {"type": reason}})) == reason
    assert turn_end(ev(idle)) == "unknown", "an idle without a stop reason still ends the turn"


class HTTPLibraryTimeout(Exception):
    """What SDKs before 2.17 raised mid-stream: their HTTP library's own error, not anthropic's."""


@pytest.fixture(scope="module")
def request_():
    """A real request object, from a connection the SDK could not make."""
    with anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="x", max_retries=0) as client:
        with pytest.raises(anthropic.APIConnectionError) as info:
            client.beta.sessions.retrieve("sesn_x")
    return info.value.request


def test_stream_problem_names_each_kind_of_break(request_):
    stall = "No event arrived for 180 s (COOKBOOK_STREAM_TIMEOUT)."
    timeout = anthropic.APITimeoutError(request=request_)
    dropped = anthropic.APIConnectionError(request=request_)
    assert stream_problem(timeout, 0.1, 180) == stall
    assert (
        stream_problem(dropped, 500, 180)
        == "The connection dropped mid-stream (APIConnectionError)."
    )
    assert stream_problem(HTTPLibraryTimeout(), 180, 180) == stall, "measured silence: a stall"
    assert stream_problem(HTTPLibraryTimeout(), 179.9, 180) == (
        "The connection dropped mid-stream (HTTPLibraryTimeout)."
    )
    assert stream_problem(ValueError("not JSON"), 0, 180) == (
        "The stream sent an event that could not be read (ValueError)."
    )


def endless() -> list[dict]:
    """A minute of heartbeats: a stream that stays open and says nothing."""
    return [{"delay_ms": 100, "comment": "heartbeat"} for _ in range(600)]


def test_the_deadline_closes_a_stream_kept_open_by_heartbeats():
    """The turn's deadline closes the stream: without it a minute of heartbeats would hold it."""
    cassette = make_cassette(
        [cut_stream([sse(TURN[0]), *endless()], after=2), send_exchange(TASK, SENT)]
    )
    view = SessionView()
    started = time.monotonic()
    with ReplayServer(cassette, speed=1) as fake:
        assert follow(fake, view, stream_timeout=5, turn_timeout=0.5) is None
    assert time.monotonic() - started < 10, "given up at the deadline, not after the heartbeats"
    assert notes(view) == ["The turn did not end within 0.5 s (COOKBOOK_TURN_TIMEOUT)."]


def test_the_deadline_closes_the_stream_of_a_reconnect_too():
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0])], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(TURN[1]), *endless()]),
            history(PERSISTED[:1]),
        ]
    )
    view = SessionView()
    started = time.monotonic()
    with ReplayServer(cassette, speed=1) as fake:
        assert follow(fake, view, stream_timeout=5, turn_timeout=1.0) is None
    assert time.monotonic() - started < 10
    assert notes(view)[-1] == "The turn did not end within 1 s (COOKBOOK_TURN_TIMEOUT)."


def test_a_reconnect_stream_is_bounded_by_the_stream_timeout_too():
    silence = {"delay_ms": 60_000, "comment": "nothing for a minute"}
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0]), silence], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(TURN[1]), silence]),
            history(PERSISTED[:1]),
            cut_stream([sse(data) for data in TURN[2:]]),
            history(PERSISTED[:2]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette, speed=1) as fake:
        assert follow(fake, view, stream_timeout=0.3) == "end_turn"
    stalls = [n for n in notes(view) if n.startswith("No event arrived")]
    assert stalls == ["No event arrived for 0.3 s (COOKBOOK_STREAM_TIMEOUT)."] * 2


def test_the_history_before_the_message_sent_is_not_this_turn():
    """A view that never saw the earlier turn (a new kernel, say) still shows only this turn's
    missed events: the history is read from the message this turn sent; without that message
    in it, the whole history is this turn's."""
    earlier = [data for data in turn_events("z", "an earlier turn", "first task") if "id" in data]
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0])], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(data) for data in TURN[1:]]),
            history(earlier + PERSISTED[1:3]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake:
        assert follow(fake, view) == "end_turn"
    assert "an earlier turn" not in str(view.entries) and "first task" not in str(view.entries)
    assert notes(view)[2] == "The session's history had 2 events the stream missed."
    cassette.exchanges[-1] = history(PERSISTED[2:4])  # the sent message is not in it
    view = SessionView()
    with ReplayServer(cassette) as fake:
        assert follow(fake, view) == "end_turn"
    assert notes(view)[2] == "The session's history had 2 events the stream missed."


class OlderSDKStream:
    """A stream as SDKs before 2.17 break it: one event, then (after `silence` seconds) their
    HTTP library's own error, which is no anthropic exception."""

    def __init__(self, silence: float):
        self.silence, self.closed = silence, False

    def __iter__(self):
        yield construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=TURN[0])
        time.sleep(self.silence)
        raise HTTPLibraryTimeout("timed out")

    def close(self):
        self.closed = True


@pytest.mark.parametrize(("silence", "note"), [
    (0.3, "No event arrived for 0.3 s (COOKBOOK_STREAM_TIMEOUT)."),
    (0.0, "The connection dropped mid-stream (HTTPLibraryTimeout)."),
])  # fmt: skip
def test_an_older_sdks_error_is_told_by_the_silence_before_it(silence, note):
    cassette = make_cassette([cut_stream([sse(data) for data in TURN[1:]]), history(PERSISTED[:1])])
    view = SessionView()
    view.live("Turn 1")
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        events = reconnecting(client, SESSION_ID, OlderSDKStream(silence), SENT, view, 0.3, 60)
        assert [turn_end(ev) for ev in events][-1] == "end_turn"
    assert notes(view)[0] == note


def test_the_streams_of_reconnects_are_closed(monkeypatch):
    opened = []
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0])], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(data) for data in TURN[1:]]),
            history(PERSISTED[:1]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette) as fake:
        with make_client(fake, max_retries=0) as client:
            real = client.beta.sessions.events.stream

            def stream(*args, **kwargs):
                opened.append(real(*args, **kwargs))
                return opened[-1]

            monkeypatch.setattr(client.beta.sessions.events, "stream", stream)
            view.live("Turn 1")
            with client.beta.sessions.events.stream(
                SESSION_ID, event_deltas=["agent.message"], timeout=30
            ) as first:
                sent = client.beta.sessions.events.send(SESSION_ID, events=[user_message(TASK)])
                for ev in reconnecting(client, SESSION_ID, first, sent.data[0].id, view, 30, 60):
                    view.add(ev)
                    if turn_end(ev):
                        break
                assert len(opened) == 2 and opened[1].response.is_closed


def test_run_turn_reconnects_with_its_own_arguments_and_says_when_it_saw_no_end(capsys):
    earlier = [data for data in turn_events("z", "an earlier turn", "first task") if "id" in data]
    silence = {"delay_ms": 60_000, "comment": "nothing for a minute"}
    cassette = make_cassette(
        [
            cut_stream([sse(TURN[0]), silence], after=2),
            send_exchange(TASK, SENT),
            cut_stream([sse(TURN[1]), silence]),
            history(earlier + PERSISTED[:2]),
        ]
    )
    view = SessionView()
    with ReplayServer(cassette, speed=1) as fake, make_client(fake) as client:
        with opened(client, 0.3) as stream:
            assert run_turn(client, SESSION_ID, stream, TASK, view, "Turn 2", 0.3, 60) is None
        assert fake.unplayed() == []
    printed = capsys.readouterr().out
    assert "Turn 2 · unknown ·" in printed
    assert "We could not see the turn end; the agent may still be working." in printed
    # The replay plays the last stream and history again to each further reconnect.
    assert printed.count("No event arrived for 0.3 s (COOKBOOK_STREAM_TIMEOUT).") == 4
    assert "The stream broke 4 times; we stopped following it." in printed
    assert "an earlier turn" not in printed
