"""The replay server (DESIGN.md §4) with the real SDK as its client, strictly validating every response."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import anthropic
import pytest
from anthropic.lib.sessions import accumulate_managed_agents_event
from anthropic.types.beta import (
    BetaEnvironment,
    BetaFileMetadata,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
)
from watch_and_verify import sentence_for

from tests.replay import FIXTURES, ROOT, SHIPPED_CASSETTE, replay_env
from tests.replay.cassette import Cassette, is_send
from tests.replay.server import ReplayServer
from tests.replay_fixtures import (
    AGENT_ID,
    AGENT_NAME,
    AGENT_SYSTEM,
    BETA,
    CALC_PY,
    ENV_CONFIG_REQUEST,
    ENV_ID,
    ENV_NAME,
    FILE_ID,
    FIXED_CALC_PY,
    FOLLOW_UP,
    MODEL,
    OUTPUT_FILE_ID,
    SESSION_ID,
    STREAM_EVENT_CLASSES,
    TASK,
    TEST_CALC_PY,
    TEST_FILE_ID,
    TITLE,
    TOOLSET_REQUEST,
    TS_ARCHIVED,
    TURN1_TEXT,
    TURN2_TEXT,
    TURN_ENDS,
    agent_body,
    check_cassette_events,
    event,
    exchange,
    file_body,
    make_cassette,
    make_client,
    notebook_flow_cassette,
    sample_events,
    send_exchange,
    serving,
    session_body,
    sse,
    stream_exchange,
    turn_events,
    upload_exchange,
    upload_part,
)

RETRIEVE = exchange("GET", f"/v1/sessions/{SESSION_ID}", {"json": session_body()})


def user_message(text: str) -> list[dict]:
    return [{"type": "user.message", "content": [{"type": "text", "text": text}]}]


def create_agent(client: anthropic.Anthropic, model: str = MODEL) -> BetaManagedAgentsAgent:
    return client.beta.agents.create(
        name=AGENT_NAME, model=model, system=AGENT_SYSTEM, tools=[TOOLSET_REQUEST]
    )


def read_turn(stream) -> list:
    """The notebook's loop: iterate until idle (end_turn) or terminated."""
    events = []
    for ev in stream:
        events.append(ev)
        if ev.type == "session.status_terminated" or (
            ev.type == "session.status_idle" and ev.stop_reason.type == "end_turn"
        ):
            break
    return events


def assert_own_classes(events: list) -> None:
    for ev in events:
        assert type(ev).__name__ == STREAM_EVENT_CLASSES[ev.type], ev.type
        if ev.type != "user.message":
            assert type(ev).__name__ != "BetaManagedAgentsUserMessageEvent", ev.type


def folded_text(events: list) -> str:
    """Deltas folded with the SDK's own accumulator, one snapshot per event id (as the docs show)."""
    snapshots: dict[str, object] = {}
    for ev in events:
        key = {"event_start": lambda e: e.event.id, "event_delta": lambda e: e.event_id}.get(
            ev.type, lambda e: e.id
        )
        if ev.type in ("event_start", "event_delta", "agent.message"):
            snapshots[key(ev)] = accumulate_managed_agents_event(snapshots.get(key(ev)), ev)
    (message,) = snapshots.values()
    return "".join(block.text for block in message.content)


# -- the whole notebook flow ----------------------------------------------------------------------------


def set_up(client: anthropic.Anthropic) -> tuple:
    """Exchanges 1-5 of `notebook_flow_cassette()`: agent, environment, both uploads, session."""
    agent = create_agent(client)
    assert isinstance(agent, BetaManagedAgentsAgent)
    assert (agent.id, agent.version, agent.model.id) == (AGENT_ID, 1, MODEL)
    assert agent._request_id.startswith("req_")  # recorded response headers are replayed

    env = client.beta.environments.create(name=ENV_NAME, config=ENV_CONFIG_REQUEST)
    assert isinstance(env, BetaEnvironment) and env.id == ENV_ID

    calc = client.beta.files.upload(file=("calc.py", CALC_PY, "text/x-python"))
    tests_file = client.beta.files.upload(file=("test_calc.py", TEST_CALC_PY, "text/x-python"))
    assert isinstance(calc, BetaFileMetadata)
    assert (calc.id, tests_file.id, calc.size_bytes) == (FILE_ID, TEST_FILE_ID, len(CALC_PY))

    session = create_session(client)
    assert isinstance(session, BetaManagedAgentsSession) and session.id == SESSION_ID
    return agent, env, session


def create_session(client: anthropic.Anthropic) -> BetaManagedAgentsSession:
    return client.beta.sessions.create(
        environment_id=ENV_ID,
        agent={"type": "agent", "id": AGENT_ID, "version": 1},
        resources=[
            {"type": "file", "file_id": FILE_ID, "mount_path": "calc.py"},
            {"type": "file", "file_id": TEST_FILE_ID, "mount_path": "test_calc.py"},
        ],
        title=TITLE,
    )


def run_flow(client: anthropic.Anthropic) -> None:
    """The cookbook's whole flow against `notebook_flow_cassette()`, checking every answer."""
    agent, env, session = set_up(client)

    # Turn 1, the notebook's way: open the stream, then send inside it.
    with client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        sent = client.beta.sessions.events.send(session.id, events=user_message(TASK))
        turn1 = read_turn(stream)
    assert sent.data[0].type == "user.message"
    assert turn1[-1].type == "session.status_idle" and turn1[-1].stop_reason.type == "end_turn"
    assert_own_classes(turn1)
    assert folded_text(turn1) == TURN1_TEXT

    # Turn 2, the other way round: send, then open the stream. Iterate to its end: the server closes it.
    client.beta.sessions.events.send(session.id, events=user_message(FOLLOW_UP))
    with client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        turn2 = list(stream)
    assert [ev.type for ev in turn2][-1] == "session.status_idle"
    assert_own_classes(turn2)
    assert folded_text(turn2) == TURN2_TEXT

    for _ in range(3):  # recorded once, polled three times
        assert client.beta.sessions.retrieve(session.id).status == "idle"

    history = client.beta.sessions.events.list(session.id)
    assert [ev.id for ev in history.data] == [ev.id for ev in turn1 + turn2 if hasattr(ev, "id")]
    assert history.next_page is None

    outputs = client.beta.files.list(scope_id=session.id, betas=[BETA])
    assert [f.id for f in outputs.data] == [OUTPUT_FILE_ID]
    assert outputs.data[0].scope.id == SESSION_ID
    assert client.beta.files.download(outputs.data[0].id).read() == FIXED_CALC_PY

    assert client.beta.sessions.archive(session.id).archived_at is not None
    assert client.beta.environments.archive(env.id).archived_at is not None
    assert client.beta.agents.archive(agent.id).archived_at is not None


def test_notebook_flow_round_trips_strictly():
    cassette = notebook_flow_cassette()
    check_cassette_events(cassette)
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        run_flow(client)
        assert fake.unplayed() == [], fake.unplayed_report()
        assert fake.unmatched() == []
        assert fake.played == list(range(1, len(cassette.exchanges) + 1))
        retrieves = [entry for entry in fake.log if entry["path"] == f"/v1/sessions/{SESSION_ID}"]
        assert [entry["exchange"] for entry in retrieves] == [10, 10, 10]
        assert {entry["take"] for entry in fake.log} == {1}


def test_stream_first_holds_events_until_the_send_is_answered():
    turn = turn_events("h", "Held.", TASK)
    cassette = make_cassette([stream_exchange(turn, after=2), send_exchange(TASK, turn[1]["id"])])
    arrivals: list[tuple[float, str]] = []
    with ReplayServer(cassette) as fake, make_client(fake, timeout=10) as client:
        with client.beta.sessions.events.stream(
            SESSION_ID, event_deltas=["agent.message"]
        ) as stream:
            reader = threading.Thread(
                target=lambda: arrivals.extend((time.monotonic(), e.type) for e in stream)
            )
            reader.start()
            time.sleep(0.3)
            assert arrivals == [], "events were delivered before the send they wait for"
            sent_at = time.monotonic()
            client.beta.sessions.events.send(SESSION_ID, events=user_message(TASK))
            reader.join(5)
        assert not reader.is_alive()
        assert arrivals[0][0] >= sent_at
        assert [t for _, t in arrivals] == [e["type"] for e in turn]
        assert fake.unplayed() == []


# -- uploads match on filename, content type and bytes ---------------------------------------------------


TRICKY_UPLOADS = {
    "crlf.py": b"x = 1\r\ny = 2\r\n",
    "no-eol.txt": b"no newline at the end",
    "dashes.txt": b"\n\n--\n\n",
    "binary.bin": bytes(range(256)),
    "utf8.txt": "é ✓\n".encode(),
}


def test_uploads_match_their_exact_bytes():
    """The multipart part is matched by its real content: line endings, binary and UTF-8 survive."""
    uploads = [
        upload_exchange(name, content, f"file_{n}", "application/octet-stream")
        for n, (name, content) in enumerate(TRICKY_UPLOADS.items())
    ]
    with ReplayServer(make_cassette(uploads)) as fake, make_client(fake) as client:
        for n, (name, content) in enumerate(TRICKY_UPLOADS.items()):
            # client.files.upload is what the notebook calls; the beta method sends the same bytes.
            upload = client.files.upload if n % 2 else client.beta.files.upload
            assert upload(file=(name, content, "application/octet-stream")).id == f"file_{n}", name
        assert fake.unmatched() == [] and fake.unplayed() == []


def test_upload_of_another_file_does_not_match():
    cassette = make_cassette([upload_exchange("calc.py", CALC_PY, FILE_ID)])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        others = {
            "sha256": ("calc.py", CALC_PY + b"# changed\n", "text/x-python"),
            "filename": ("other.py", CALC_PY, "text/x-python"),
            "content_type": ("calc.py", CALC_PY, "text/plain"),
        }
        for difference, upload in others.items():
            with pytest.raises(anthropic.BadRequestError, match=difference):
                client.beta.files.upload(file=upload)
        assert fake.unplayed() == [1]
        assert len(fake.unmatched()) == len(others)
        assert client.beta.files.upload(file=("calc.py", CALC_PY, "text/x-python")).id == FILE_ID


# -- every SSE event parses to its own class ---------------------------------------------------------------


def test_every_event_type_parses_to_its_own_class():
    samples = sample_events()
    assert {e["type"] for e in samples} == set(STREAM_EVENT_CLASSES)  # all 44 members of the union
    assert STREAM_EVENT_CLASSES["agent.message"] == "BetaManagedAgentsAgentMessageEvent"
    cassette = make_cassette([stream_exchange(samples, after=None, deltas=False)])
    check_cassette_events(cassette)
    with (
        ReplayServer(cassette) as fake,
        make_client(fake) as client,
        client.beta.sessions.events.stream(SESSION_ID) as stream,
    ):
        received = list(stream)
    assert [ev.type for ev in received] == [e["type"] for e in samples]
    assert_own_classes(received)
    assert received[-1].type in TURN_ENDS


def test_check_cassette_events_accepts_the_flow():
    check_cassette_events(notebook_flow_cassette())


def _stream_cassette(events: list[dict]) -> object:
    return make_cassette([stream_exchange(events, after=None, deltas=False)])


IDLE = event("session.status_idle", "sevt_9", stop_reason={"type": "end_turn"})
BROKEN_STREAMS = {
    "unknown type": ([event("agent.telepathy", "sevt_1"), IDLE], "not in the SDK's stream union"),
    "missing required field": (
        [event("agent.message", "sevt_1"), IDLE],
        "strict validation failed",
    ),
    "bad datetime": (
        [{**event("agent.thinking", "sevt_1"), "processed_at": "soon"}, IDLE],
        "strict validation",
    ),
    "does not end the turn": (
        [event("agent.message", "sevt_1", content=[])],
        "not idle/terminated",
    ),
    "idle without stop_reason": (
        [event("session.status_idle", "sevt_1")],
        "strict validation failed",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_STREAMS))
def test_check_cassette_events_rejects(name):
    events, words = BROKEN_STREAMS[name]
    with pytest.raises(AssertionError, match=words):
        check_cassette_events(_stream_cassette(events))


def test_check_cassette_events_rejects_a_misnamed_event():
    cassette = _stream_cassette([IDLE])
    cassette.exchanges[0]["response"]["sse"][0]["event"] = "message"
    with pytest.raises(AssertionError, match="event name differs"):
        check_cassette_events(cassette)


# -- pacing ----------------------------------------------------------------------------------------------------


class PaceWatch(threading.Event):
    """A take's `over` event that notes each pause the server asks for instead of sleeping it,
    and holds the server there until the client has every event sent before it: if the server
    buffered its events instead of flushing each one, a pause would wait for nothing (and say so)."""

    def __init__(self):
        super().__init__()
        self.pauses: list[float] = []
        self.received = 0
        self.stuck: list[int] = []
        self._arrived = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        sent = len(self.pauses)  # events written before this pause
        self.pauses.append(timeout)
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.received >= sent, timeout=2):
                self.stuck.append(sent)
        return False

    def arrived(self) -> None:
        with self._arrived:
            self.received += 1
            self._arrived.notify_all()


def _paced_stream(speed: float, recorded_ms: int, count: int) -> PaceWatch:
    events = [event("agent.thinking", f"sevt_{i:03d}") for i in range(count - 1)] + [IDLE]
    cassette = make_cassette(
        [stream_exchange(events, after=None, deltas=False, delay_ms=recorded_ms)]
    )
    with ReplayServer(cassette, speed=speed) as fake:
        fake.take.over = watch = PaceWatch()
        with (
            make_client(fake, timeout=10) as client,
            client.beta.sessions.events.stream(SESSION_ID) as stream,
        ):
            for _ in stream:
                watch.arrived()
    assert watch.received == count
    return watch


@pytest.mark.parametrize("speed, recorded_ms", [(1, 200), (4, 400)])
def test_recorded_pace_is_reproduced(speed, recorded_ms):
    """Each of five events recorded `recorded_ms` apart is preceded by a pause of `recorded_ms /
    speed`, and written and flushed before the next pause (one by one, not in a burst). The
    pauses are noted, not slept: the suite makes no claim about a loaded machine's clock."""
    watch = _paced_stream(speed, recorded_ms, count=5)
    assert watch.pauses == [recorded_ms / 1000 / speed] * 5
    assert watch.stuck == [], f"events sent before pauses {watch.stuck} had not arrived"


def test_speed_zero_does_not_wait():
    watch = _paced_stream(0, 1000, count=500)
    assert watch.pauses == []


# -- an unmatched request fails at once, readably -----------------------------------------------------------


def test_unmatched_request_is_one_readable_400_never_retried():
    # make_client keeps the SDK's default max_retries=2: the 400 must not be retried.
    with ReplayServer(notebook_flow_cassette()) as fake, make_client(fake) as client:
        with pytest.raises(anthropic.BadRequestError) as info:
            create_agent(client, model="claude-opus-4-1")
    # What the notebook shows of it (its one sentence), not the SDK's wording of str(err),
    # which changed between releases.
    message = sentence_for(info.value)
    assert len(fake.log) == 1 and fake.unmatched() == fake.log, "answered once, never retried"
    assert info.value.status_code == 400
    assert info.value.response.headers["x-should-retry"] == "false"
    assert info.value.body["error"]["type"] == "invalid_request_error"
    for words in ("POST", "/v1/agents", "model", "claude-opus-4-1", MODEL, "exchange 1"):
        assert words in message, message
    assert message.startswith("The API answered 400 (invalid_request_error): The replay has no")
    assert refusal(info) == (
        "The replay has no recording of POST /v1/agents: the closest is exchange 1"
        " (POST /v1/agents), where json.model is 'claude-opus-4-1' (recorded"
        f" '{MODEL}'); run the cell as it was recorded, or run the notebook live (with"
        " ANTHROPIC_API_KEY) to try a change."
    )


def test_other_unmatched_requests():
    cassette = make_cassette(
        [RETRIEVE, exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": {}})]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        client.post("/v1/agents", body={}, cast_to=object)
        with pytest.raises(anthropic.BadRequestError, match="already answered"):  # used once
            client.post("/v1/agents", body={}, cast_to=object)
        with pytest.raises(anthropic.BadRequestError, match="GET /v1/sessions/sesn_other"):
            client.beta.sessions.retrieve("sesn_other")
        # The docs' cURL examples add ?beta=true; it is not part of the match.
        assert (
            client.beta.sessions.retrieve(SESSION_ID, extra_query={"beta": "true"}).id == SESSION_ID
        )
        assert [e["exchange"] for e in fake.log] == [2, None, None, 1]


def test_unmatched_send_is_compared_with_the_unplayed_recording():
    """Two sends recorded; the second one differs. The message compares it with exchange 2, the
    one not yet played, not with exchange 1: both score the same and `closest()` keeps the first
    of equal scores, so the server looks among the unplayed exchanges first and falls back to
    all of them only when none is left."""
    cassette = make_cassette([send_exchange("first", "sevt_1"), send_exchange("second", "sevt_2")])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        client.beta.sessions.events.send(SESSION_ID, events=user_message("first"))
        with pytest.raises(anthropic.BadRequestError) as info:
            client.beta.sessions.events.send(SESSION_ID, events=user_message("secnd"))
    message = info.value.body["error"]["message"]
    assert "the closest is exchange 2" in message, message
    assert "recorded 'second'" in message, message


# -- takes, causal order, refusals in one sentence ------------------------------------------------------------

RESTART = "restart the kernel and run the cells from the top"


def refused(info: pytest.ExceptionInfo) -> str:
    """The message a refused request got, after checking it came as the API's one-shot 400."""
    err = info.value
    assert isinstance(err, anthropic.BadRequestError)
    assert err.response.headers["x-should-retry"] == "false"
    assert err.body["error"]["type"] == "invalid_request_error"
    return err.body["error"]["message"]


def refusal(info: pytest.ExceptionInfo) -> str:
    """The sentence a refused request got, after checking it came as the API's one-shot 400."""
    message = refused(info)
    assert message.endswith(".") and ". " not in message, f"not one sentence: {message}"
    return message


def test_a_second_take_replays_the_whole_flow():
    """Restart Kernel and Run All: the story's first request again plays the recording over."""
    cassette = notebook_flow_cassette()
    with ReplayServer(cassette) as fake, make_client(fake, max_retries=0) as client:
        run_flow(client)
        first = len(fake.log)
        run_flow(client)
        assert fake.take.number == 2
        assert [e["take"] for e in fake.log] == [1] * first + [2] * (len(fake.log) - first)
        assert [e["exchange"] for e in fake.log[first:]] == [
            e["exchange"] for e in fake.log[:first]
        ]
        assert fake.played == list(range(1, len(cassette.exchanges) + 1))
        assert fake.unplayed() == [] and fake.unmatched() == []


def _read_in_background(stream) -> tuple[threading.Thread, list]:
    got: list = []  # event types, or the exception that ended the reading
    thread = threading.Thread(target=lambda: _collect(stream, got), daemon=True)
    thread.start()
    return thread, got


def _collect(stream, got: list) -> None:
    try:
        got.extend(ev.type for ev in stream)
    except Exception as err:  # reported by the test, not lost in the thread
        got.append(err)


@pytest.mark.parametrize("waiting_on", ["hold", "delay"])
def test_a_stream_of_an_old_take_ends_when_a_new_take_starts(waiting_on):
    """A restarted kernel leaves its stream behind: the server must not keep it waiting forever."""
    turn = turn_events("o", "Old.", TASK)
    stream = stream_exchange(turn, after=3 if waiting_on == "hold" else None, delay_ms=60_000)
    agents = exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": {}})
    cassette = make_cassette([agents, stream, send_exchange(TASK, turn[1]["id"])])
    with (
        ReplayServer(cassette, speed=1) as fake,
        make_client(fake, timeout=10, max_retries=0) as client,
    ):
        client.post("/v1/agents", body={}, cast_to=object)
        with client.beta.sessions.events.stream(SESSION_ID, event_deltas=["agent.message"]) as old:
            reader, got = _read_in_background(old)
            time.sleep(0.2)
            assert reader.is_alive(), got
            client.post("/v1/agents", body={}, cast_to=object)  # the story's first request again
            reader.join(10)  # far less than the 60 s the old stream would wait
        assert not reader.is_alive(), f"the old take's stream still waits on its {waiting_on}"
        assert got == [], got  # a clean end: no events, no error
        assert [e["take"] for e in fake.log] == [1, 1, 2]
        assert fake.played == [1]


def test_a_repeated_write_is_refused_in_one_sentence():
    with ReplayServer(notebook_flow_cassette()) as fake, make_client(fake, max_retries=0) as client:
        set_up(client)
        with pytest.raises(anthropic.BadRequestError) as info:
            create_session(client)
    assert refusal(info) == (
        "The replay already answered POST /v1/sessions in this run (recorded exchange 5)"
        f" and plays each recording once: {RESTART}."
    )
    assert fake.take.number == 1 and fake.played == [1, 2, 3, 4, 5]
    assert fake.unmatched()[0]["refusal"] == info.value.body["error"]["message"]


def test_a_get_recorded_after_an_unsent_write_is_refused():
    """The outputs were listed after the task was sent: before that, the replay must not show them."""
    with ReplayServer(notebook_flow_cassette()) as fake, make_client(fake, max_retries=0) as client:
        set_up(client)
        with pytest.raises(anthropic.BadRequestError) as info:
            client.beta.files.list(scope_id=SESSION_ID, betas=[BETA])
    assert refusal(info) == (
        f"The replay cannot answer GET /v1/files?scope_id={SESSION_ID} yet: in the recording it"
        f" comes after POST /v1/sessions/{SESSION_ID}/events (exchange 7), which this run has"
        f" not sent; run the cells above it first, or {RESTART}."
    )
    assert fake.played == [1, 2, 3, 4, 5]


def test_polling_repeats_what_was_true_until_the_recorded_write():
    """`sessions.retrieve` says "running" until the recorded interrupt is sent, then "idle"."""
    interrupt = event("user.interrupt", "sevt_int")
    cassette = make_cassette(
        [
            exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": {}}),  # 1
            exchange("GET", f"/v1/sessions/{SESSION_ID}", {"json": session_body("running")}),
            exchange(  # 3
                "POST",
                f"/v1/sessions/{SESSION_ID}/events",
                {"json": {"data": [interrupt]}},
                body={"json": {"events": [{"type": "user.interrupt"}]}},
            ),
            RETRIEVE,  # 4: idle
        ]
    )
    with ReplayServer(cassette) as fake, make_client(fake, max_retries=0) as client:
        client.post("/v1/agents", body={}, cast_to=object)
        statuses = [client.beta.sessions.retrieve(SESSION_ID).status for _ in range(3)]
        client.beta.sessions.events.send(SESSION_ID, events=[{"type": "user.interrupt"}])
        statuses += [client.beta.sessions.retrieve(SESSION_ID).status for _ in range(2)]
    assert statuses == ["running", "running", "running", "idle", "idle"]
    assert [e["exchange"] for e in fake.log] == [1, 2, 2, 2, 3, 4, 4]
    assert fake.unplayed() == [] and fake.unmatched() == []


def test_a_delta_split_inside_a_surrogate_pair_survives_the_fake(tmp_path):
    """A preview delta may end inside a UTF-16 surrogate pair: both halves reach the SDK as sent."""
    halves = ["\ud83d", "\ude00"]  # 😀 in UTF-16
    turn = turn_events("s", "😀", TASK)
    for ev, half in zip([e for e in turn if e["type"] == "event_delta"], halves, strict=True):
        ev["delta"]["content"]["text"] = half
    path = tmp_path / "surrogates.jsonl"
    make_cassette([stream_exchange(turn, after=None)]).save(path)
    path.read_bytes().decode("utf-8")  # valid UTF-8 on disk
    with (
        ReplayServer(path) as fake,
        make_client(fake) as client,
        client.beta.sessions.events.stream(SESSION_ID, event_deltas=["agent.message"]) as stream,
    ):
        received = list(stream)
    # Compared as ASCII: a failure report holding lone surrogates would crash an xdist worker.
    deltas = [ev.delta.content.text for ev in received if ev.type == "event_delta"]
    assert ascii(deltas) == ascii(halves)
    assert folded_text(received) == "😀"


# -- loopback only --------------------------------------------------------------------------------------------


def _other_local_addresses() -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        found.update(
            info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: nothing is sent, only a route is chosen
            found.add(probe.getsockname()[0])
        except OSError:
            pass
    return {a for a in found if not a.startswith("127.") and a != "0.0.0.0"}


def test_listens_on_loopback_only():
    with ReplayServer(make_cassette([RETRIEVE])) as fake:
        url = urlsplit(fake.base_url)
        assert url.hostname == "127.0.0.1"
        assert fake._httpd.server_address[0] == "127.0.0.1"
        assert fake._httpd.socket.getsockname()[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", url.port), timeout=1):
            pass
        for address in sorted(_other_local_addresses() | {"127.0.0.2"}):
            with pytest.raises(OSError), socket.create_connection((address, url.port), timeout=1):
                pass


# -- a client leaving mid-stream ---------------------------------------------------------------------------


def test_client_disconnect_mid_stream_leaves_server_healthy(capfd):
    """Leave a paced stream after its first event: other requests are still answered at once, no traceback."""
    events = [event("agent.thinking", f"sevt_{i:02d}") for i in range(9)] + [IDLE]
    cassette = make_cassette(
        [stream_exchange(events, after=None, deltas=False, delay_ms=300), RETRIEVE]
    )
    with ReplayServer(cassette, speed=1) as fake, make_client(fake, timeout=10) as client:
        with client.beta.sessions.events.stream(SESSION_ID) as stream:
            for ev in stream:
                assert ev.type == "agent.thinking"
                break  # leave after the first event of a 3-second stream
        for pause_after in (
            0.7,
            0,
        ):  # meanwhile the server writes further events into the closed connection
            started = time.monotonic()
            assert client.beta.sessions.retrieve(SESSION_ID).status == "idle"
            # answered, not queued behind the 3-second stream the client left
            assert time.monotonic() - started < 1.5
            time.sleep(pause_after)
        assert fake.unmatched() == [] and fake.unplayed() == []
    assert "Traceback" not in capfd.readouterr().err


# -- accounting -------------------------------------------------------------------------------------------------


def test_unplayed_exchanges_are_listed_and_named():
    archive = exchange(
        "POST", f"/v1/sessions/{SESSION_ID}/archive", {"json": session_body(archived_at="x")}
    )
    cassette = make_cassette(
        [
            exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": {}}),
            RETRIEVE,
            archive,
        ]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        assert fake.unplayed() == [1, 2, 3]
        client.post("/v1/agents", body={}, cast_to=object)
        assert fake.unplayed() == [2, 3]
        report = fake.unplayed_report()
        assert "exchange 2: GET /v1/sessions/" + SESSION_ID in report
        assert "exchange 3: POST /v1/sessions/" + SESSION_ID + "/archive" in report
        assert "exchange 1" not in report

        with pytest.raises(anthropic.BadRequestError):
            client.beta.agents.retrieve("agent_nope")
        assert [(e["method"], e["path"], e["status"]) for e in fake.unmatched()] == [
            ("GET", "/v1/agents/agent_nope", 400)
        ]

        client.beta.sessions.retrieve(SESSION_ID)
        client.post(f"/v1/sessions/{SESSION_ID}/archive", cast_to=object)
        assert fake.unplayed() == [] and fake.unplayed_report() == ""


def test_heartbeat_comments_are_ignored_by_the_sdk():
    entries = [
        sse(event("agent.thinking", "sevt_1")),
        {"delay_ms": 0, "comment": "ping"},
        sse(IDLE),
    ]
    cassette = make_cassette(
        [exchange("GET", f"/v1/sessions/{SESSION_ID}/events/stream", {"sse": entries})]
    )
    check_cassette_events(cassette)
    with (
        ReplayServer(cassette) as fake,
        make_client(fake) as client,
        client.beta.sessions.events.stream(SESSION_ID) as stream,
    ):
        assert [ev.type for ev in stream] == ["agent.thinking", "session.status_idle"]


def test_a_single_query_value_may_be_stored_bare():
    files = {"json": {"data": [], "next_page": None}}
    cassette = make_cassette([exchange("GET", "/v1/files", files, query={"scope_id": SESSION_ID})])
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        assert list(client.beta.files.list(scope_id=SESSION_ID, betas=[BETA])) == []
    assert fake.unplayed() == [] and fake.unmatched() == []


def test_equivalent_spellings_from_other_recorders_still_match():
    """An archive stored with `"json": null` and an upload part with an extra key both match."""
    part = {**upload_part("calc.py", CALC_PY), "size_bytes": len(CALC_PY)}
    cassette = make_cassette(
        [
            exchange(
                "POST",
                "/v1/files",
                {"json": file_body(FILE_ID, "calc.py", CALC_PY)},
                body={"multipart": [part]},
            ),
            exchange(
                "POST",
                f"/v1/agents/{AGENT_ID}/archive",
                {"json": agent_body(TS_ARCHIVED)},
                body={"json": None},
            ),
        ]
    )
    with ReplayServer(cassette) as fake, make_client(fake) as client:
        client.beta.files.upload(file=("calc.py", CALC_PY, "text/x-python"))
        client.beta.agents.archive(AGENT_ID)
    assert fake.unplayed() == [] and fake.unmatched() == []


def test_files_list_by_session_needs_the_managed_agents_beta_header():
    """scope_id is a Managed Agents parameter: without the beta header the live API rejects it
    (seen by the cookbook), and so does the fake; with it, the listing is played."""
    listing = file_body(OUTPUT_FILE_ID, "calc.py", FIXED_CALC_PY, downloadable=True)
    only = exchange(
        "GET",
        "/v1/files",
        {"json": {"data": [listing], "next_page": None}},
        query={"scope_id": [SESSION_ID]},
    )
    with ReplayServer(make_cassette([only])) as fake:
        client = make_client(fake, max_retries=0)
        with pytest.raises(anthropic.BadRequestError, match="anthropic-beta header managed-agents"):
            client.beta.files.list(scope_id=SESSION_ID)
        listed = client.beta.files.list(scope_id=SESSION_ID, betas=[BETA])
        assert [f.filename for f in listed.data] == ["calc.py"]


# -- interactive mode: what a reader gets after interrupting a turn ---------------------------------------

SHIPPED = Cassette.load(SHIPPED_CASSETTE)


def shipped(method: str, path: str, part: str = "request") -> dict:
    """The first recorded request (or response) body for method and path."""
    return next(
        ex[part]["json"]
        for ex in SHIPPED.exchanges
        if (ex["request"]["method"], ex["request"]["path"]) == (method, path)
    )


def interrupted_turn(client: anthropic.Anthropic) -> tuple:
    """The shipped story's first cells, then turn 1 left after three events: the reader
    interrupts the kernel while it streams (the client closes the stream)."""
    agent = client.beta.agents.create(**shipped("POST", "/v1/agents"))
    env = client.beta.environments.create(**shipped("POST", "/v1/environments"))
    for name in ("calc.py", "test_calc.py"):
        client.beta.files.upload(file=(name, (FIXTURES / name).read_bytes(), "text/x-python"))
    session = client.beta.sessions.create(**shipped("POST", "/v1/sessions"))
    task = shipped("POST", f"/v1/sessions/{session.id}/events")
    read = []
    with client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        client.beta.sessions.events.send(session.id, **task)
        for ev in stream:
            read.append(ev)
            if len(read) == 3:
                break
    assert [ev.type for ev in read] == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
    ]
    return agent, env, session, read


def turn1_ids(session_id: str) -> list[str]:
    """The persisted events of the shipped turn 1 stream, in the recorded order."""
    (stream, *_) = [
        ex["response"]["sse"]
        for ex in SHIPPED.exchanges
        if ex["request"]["path"] == f"/v1/sessions/{session_id}/events/stream"
    ]
    return [e["data"]["id"] for e in stream if "id" in e.get("data", {})]


def test_interactive_mode_answers_what_does_not_depend_on_the_order():
    """After an interrupted turn 1 the cleanup cell and the polling view still get answers:
    the history so far, the session's status, the interrupt, no outputs, the archives. At the
    recorded pace the rest of turn 1 (its end 55 s away) is not written meanwhile."""
    with (
        ReplayServer(SHIPPED, speed=1, interactive=True) as fake,
        make_client(fake, max_retries=0) as client,
    ):
        agent, env, session, read = interrupted_turn(client)
        sid, recorded = session.id, turn1_ids(session.id)

        history = [ev.id for ev in client.beta.sessions.events.list(sid)]
        assert history[:3] == [ev.id for ev in read]  # at least what was read, in order ...
        assert history == recorded[: len(history)]  # ... each once, no previews
        paged = [ev.id for ev in client.beta.sessions.events.list(sid, limit=1)]  # next_page
        assert paged[: len(history)] == history
        newest_first = [ev.id for ev in client.beta.sessions.events.list(sid, order="desc")]
        assert newest_first[::-1] == recorded[: len(newest_first)]

        assert client.beta.sessions.retrieve(sid).status == "running"
        sent = client.beta.sessions.events.send(sid, events=[{"type": "user.interrupt"}])
        assert [ev.type for ev in sent.data] == ["user.interrupt"]
        assert sent.data[0].id.startswith("sevt_") and sent.data[0].processed_at is not None
        after = client.beta.sessions.retrieve(sid)
        assert (after.status, after.archived_at) == ("idle", None)

        assert client.beta.files.list(scope_id=sid, betas=[BETA]).data == []

        for kind, resource_id in (
            ("sessions", sid),
            ("environments", env.id),
            ("agents", agent.id),
        ):
            raw = getattr(client.beta, kind).with_raw_response.archive(resource_id)
            assert raw.json() == shipped("POST", f"/v1/{kind}/{resource_id}/archive", "response")
            assert raw.parse().archived_at is not None
        assert client.beta.sessions.retrieve(sid).archived_at is not None

    answered = [e for e in fake.log if "order_free" in e]
    assert all(e["exchange"] is None and e["status"] == 200 for e in answered)
    reasons = [e["order_free"] for e in answered]
    assert reasons.count("the history so far") >= 3  # one request a page
    assert [r for r in reasons if r != "the history so far"] == [
        "status running",
        "an interrupt",
        "status idle",
        "no outputs yet",
        *["the recorded archive"] * 3,
        "archived in this take",
    ]
    assert fake.unmatched() == []  # order-free answers are no refusals
    assert fake.played == [1, 2, 3, 4, 5, 6, 7]  # ... and play no exchange


def test_strict_mode_refuses_the_same_requests():
    """Strict stays strict: the same reader gets the refusals of old, and the history and the
    outputs as recorded at the end of the whole turn (strict causal order waits on writes, not
    on streams): what interactive mode replaces with what the take itself streamed."""
    with ReplayServer(SHIPPED, speed=1) as fake, make_client(fake, max_retries=0) as client:
        agent, env, session, _ = interrupted_turn(client)
        sid = session.id
        requests = [
            lambda: client.beta.sessions.retrieve(sid),
            lambda: client.beta.sessions.events.send(sid, events=[{"type": "user.interrupt"}]),
            lambda: client.beta.sessions.archive(sid),
            lambda: client.beta.environments.archive(env.id),
            lambda: client.beta.agents.archive(agent.id),
        ]
        sentences = []
        for request in requests:
            with pytest.raises(anthropic.BadRequestError) as info:
                request()
            sentences.append(refused(info))
        history = client.beta.sessions.events.with_raw_response.list(sid).json()
        listed = client.beta.files.with_raw_response.list(scope_id=sid, betas=[BETA]).json()
    follow_up = [n for n, ex in enumerate(SHIPPED.exchanges, 1) if is_send(ex)][1]
    unsent = f"POST /v1/sessions/{sid}/events (exchange {follow_up}), which this run has not sent"
    assert sentences[0] == (
        f"The replay cannot answer GET /v1/sessions/{sid} yet: in the recording it comes after"
        f" {unsent}; run the cells above it first, or {RESTART}."
    )
    assert sentences[1].startswith(f"The replay has no recording of POST /v1/sessions/{sid}/events")
    for sentence in sentences[2:]:
        assert sentence.startswith("The replay cannot answer ") and unsent in sentence
    assert history == shipped("GET", f"/v1/sessions/{sid}/events", "response")
    assert listed == shipped("GET", "/v1/files", "response")
    assert len(fake.unmatched()) == len(requests)
    assert not any("order_free" in e for e in fake.log)


def test_interactive_mode_still_refuses_what_depends_on_the_order():
    """A new resource, a message out of order, a download ahead of the story and anything about
    a resource the cassette never recorded are refused as in strict mode."""
    with (
        ReplayServer(SHIPPED, interactive=True) as fake,
        make_client(fake, max_retries=0) as client,
    ):
        agent_request = shipped("POST", "/v1/agents")
        client.beta.agents.create(**agent_request)
        client.beta.environments.create(**shipped("POST", "/v1/environments"))
        for name in ("calc.py", "test_calc.py"):
            client.beta.files.upload(file=(name, (FIXTURES / name).read_bytes(), "text/x-python"))
        sid = client.beta.sessions.create(**shipped("POST", "/v1/sessions")).id
        sends = [ex["request"]["json"] for ex in SHIPPED.exchanges if is_send(ex)]
        download = next(
            ex for ex in SHIPPED.exchanges if ex["request"]["path"].endswith("/content")
        )
        output = download["request"]["path"].split("/")[3]
        requests = {
            "The replay has no recording of POST /v1/agents": lambda: client.beta.agents.create(
                **{**agent_request, "name": "another agent"}
            ),
            "in the recording it comes after POST": lambda: client.beta.sessions.events.send(
                sid,
                **sends[1],  # the follow-up, before the task
            ),
            f"The replay cannot answer GET /v1/files/{output}/content yet": lambda: (
                client.beta.files.download(output)
            ),
            "GET /v1/sessions/sesn_nope": lambda: client.beta.sessions.retrieve("sesn_nope"),
            "POST /v1/agents/agent_nope/archive": lambda: client.beta.agents.archive("agent_nope"),
            "GET /v1/files?scope_id=sesn_nope": lambda: client.beta.files.list(
                scope_id="sesn_nope", betas=[BETA]
            ),
            "POST /v1/sessions/sesn_nope/events": lambda: client.beta.sessions.events.send(
                "sesn_nope", events=[{"type": "user.interrupt"}]
            ),
        }
        for words, request in requests.items():
            with pytest.raises(anthropic.BadRequestError) as info:
                request()
            assert words in refused(info)
    assert len(fake.unmatched()) == len(requests)
    assert not any("order_free" in e for e in fake.log)


def test_interactive_mode_plays_an_uninterrupted_run_as_recorded():
    cassette = notebook_flow_cassette()
    with ReplayServer(cassette, interactive=True) as fake, make_client(fake) as client:
        run_flow(client)
        assert fake.played == list(range(1, len(cassette.exchanges) + 1))
        assert fake.unmatched() == [] and not any("order_free" in e for e in fake.log)


def test_interactive_mode_prefers_what_the_recording_says():
    """The recorded interrupt echo, the archive that succeeded after a refused one, and the
    session as its archive recorded it when nothing else was (without archived_at until then)."""
    archived = session_body("terminated", archived_at=TS_ARCHIVED)
    still_running = {"type": "error", "error": {"type": "invalid_request_error", "message": "x"}}
    cassette = make_cassette(
        [
            exchange("POST", "/v1/agents", {"json": agent_body()}, body={"json": {}}),  # 1
            send_exchange(TASK, "sevt_task"),  # 2
            exchange(  # 3
                "POST", f"/v1/sessions/{SESSION_ID}/archive", {"json": still_running}, status=400
            ),
            exchange(  # 4
                "POST",
                f"/v1/sessions/{SESSION_ID}/events",
                {"json": {"data": [event("user.interrupt", "sevt_int")]}},
                body={"json": {"events": [{"type": "user.interrupt"}]}},
            ),
            exchange("POST", f"/v1/sessions/{SESSION_ID}/archive", {"json": archived}),  # 5
        ]
    )
    with (
        ReplayServer(cassette, interactive=True) as fake,
        make_client(fake, max_retries=0) as client,
    ):
        client.post("/v1/agents", body={}, cast_to=object)
        before = client.beta.sessions.retrieve(SESSION_ID)
        assert (before.status, before.archived_at) == ("terminated", None)
        sent = client.beta.sessions.events.send(SESSION_ID, events=[{"type": "user.interrupt"}])
        assert [ev.id for ev in sent.data] == ["sevt_int"]
        assert client.beta.sessions.retrieve(SESSION_ID).status == "idle"
        assert client.beta.sessions.archive(SESSION_ID).archived_at is not None
        assert client.beta.sessions.with_raw_response.retrieve(SESSION_ID).json() == archived
    assert [e.get("order_free") for e in fake.log] == [
        None,
        "status terminated",
        "the recorded interrupt echo",
        "status idle",
        "the recorded archive",
        "archived in this take",
    ]
    assert fake.played == [1] and fake.unmatched() == []


# The story's first request, then the agent's archive (recorded last): 200 only interactively.
ARCHIVE_AGENT = (
    "import json, os, urllib.error, urllib.request\n"
    "def post(path, body):\n"
    "    request = urllib.request.Request(os.environ['ANTHROPIC_BASE_URL'] + path, method='POST',"
    " data=json.dumps(body).encode(), headers={'content-type': 'application/json'})\n"
    "    try:\n"
    "        return urllib.request.urlopen(request).status\n"
    "    except urllib.error.HTTPError as err:\n"
    "        return err.code\n"
    f"post('/v1/agents', {shipped('POST', '/v1/agents')!r})\n"
    f"print(post('/v1/agents/{shipped('POST', '/v1/agents', 'response')['id']}/archive', {{}}))\n"
)


def test_the_run_verb_is_interactive():
    """`run`, what `make lab` uses, answers order-free and reports it, for information."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.replay", "run", "--cassette", str(SHIPPED_CASSETTE)]
        + ["--speed", "0", "--", sys.executable, "-c", ARCHIVE_AGENT],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "200"
    assert "Answered out of the recorded order (take 1):" in done.stderr
    assert "/archive: the recorded archive" in done.stderr


@pytest.mark.parametrize("flags, status", [(["--interactive"], "200"), ([], "400")])
def test_serve_is_interactive_only_when_asked(flags, status):
    with serving(SHIPPED_CASSETTE, *flags) as base_url:
        done = subprocess.run(
            [sys.executable, "-c", ARCHIVE_AGENT],
            env={**os.environ, **replay_env(base_url)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.stdout.strip() == status, done.stderr[-2000:]
