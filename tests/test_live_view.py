"""The live view (watch_and_verify.SessionView) fed events directly: what nbval cannot see (widgets,
token-by-token text, what reaches the browser) and what a careful view must survive."""

from __future__ import annotations

import comm
import pytest
import watch_and_verify
from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents
from watch_and_verify import PROSE, SessionView, clip, plain

TS = "2026-11-20T09:30:00.000Z"


def ev(data: dict):
    """An event as the SDK builds it from the stream (leniently, as the notebook gets it)."""
    return construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=data)


def start(message_id: str):
    return ev({"type": "event_start", "event": {"type": "agent.message", "id": message_id}})


def delta(message_id: str, text: str, kind: str = "content_delta"):
    body = {"type": kind, "content": {"type": "text", "text": text}}
    return ev({"type": "event_delta", "event_id": message_id, "delta": body})


def message(message_id: str, text: str):
    return ev(
        {
            "type": "agent.message",
            "id": message_id,
            "processed_at": TS,
            "content": [{"type": "text", "text": text}],
        }
    )


def span_end(start_id: str, is_error=False, **usage):
    model_usage = {
        "input_tokens": 3,
        "output_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    data = {
        "type": "span.model_request_end",
        "id": f"{start_id}e",
        "processed_at": TS,
        "is_error": is_error,
    }
    return ev({**data, "model_request_start_id": start_id, "model_usage": {**model_usage, **usage}})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def view(clock):
    view = SessionView(clock=clock)
    view.live("Turn 1")
    return view


@pytest.fixture
def messages(monkeypatch):
    """Every message a widget would send to the browser (open, update, close), counted."""
    sent = []
    monkeypatch.setattr(
        comm.DummyComm, "publish_msg", lambda self, msg_type, **kw: sent.append(msg_type)
    )
    return sent


def cards(view) -> list[str]:
    return [card.value for card in view.box.children[1:]]


def printed(view, capsys, ended="end_turn") -> str:
    view.finish(ended)
    return capsys.readouterr().out


def test_agent_text_grows_in_one_card_then_the_final_message_replaces_it(view, clock):
    view.add(start("sevt_m"))
    clock.now += 0.2
    view.add(delta("sevt_m", "Four tests "))
    assert "Four tests" in cards(view)[0]
    clock.now += 1
    view.add(delta("sevt_m", "fail."))
    assert len(cards(view)) == 1 and "Four tests fail." in cards(view)[0]
    view.add(message("sevt_m", "Done."))
    assert len(cards(view)) == 1 and "Done." in cards(view)[0] and "fail." not in cards(view)[0]


def test_previews_are_sent_to_the_browser_at_most_ten_times_a_second(view, clock, messages):
    view.add(start("sevt_m"))
    messages.clear()
    for n in range(100):  # 100 deltas within 0.5 s
        clock.now += 0.005
        view.add(delta("sevt_m", f"{n} "))
    # The card about five times over the half second (the status line when it changes): never
    # more than a card and a status line six times, and the text must visibly grow.
    assert 4 <= len(messages) <= 2 * 6, messages
    view.add(message("sevt_m", "the whole text"))  # the final message is always sent at once
    assert "the whole text" in cards(view)[0]


def test_the_live_view_keeps_a_bounded_number_of_cards_and_counts_the_rest(view, capsys):
    for n in range(300):
        data = {"type": "agent.tool_use", "id": f"sevt_{n}", "processed_at": TS, "name": "bash"}
        view.add(ev({**data, "input": {"command": f"echo {n}"}}))
    assert len(cards(view)) == watch_and_verify.CARDS
    assert f"{300 - watch_and_verify.CARDS} earlier entries hidden" in view.status.value
    text = printed(view, capsys)
    shown = [int(line.split()[-1]) for line in text.splitlines() if line.startswith("[bash] echo")]
    head, tail = watch_and_verify.ENTRIES // 4, watch_and_verify.ENTRIES * 3 // 4
    assert shown == [*range(head), *range(300 - tail, 300)], "its start and its end, in order"
    assert f"[note] … {300 - watch_and_verify.ENTRIES} entries not printed" in text
    assert view.box.children == ()  # the live view gave way to the printed transcript


def test_an_event_seen_twice_is_shown_once_and_an_orphan_delta_is_ignored(view):
    tool_use = {
        "type": "agent.tool_use",
        "id": "sevt_t",
        "processed_at": TS,
        "name": "bash",
        "input": {"command": "ls"},
    }
    assert view.add(ev(tool_use)) and not view.add(ev(tool_use))
    view.add(delta("sevt_never_started", "lost"))
    assert len([e for e in view.entries if e]) == 1 and len(view.tools) == 1


def test_a_preview_whose_request_fails_is_never_printed_and_is_marked_in_the_live_view(
    view, capsys
):
    view.add(start("sevt_lost"))
    view.add(delta("sevt_lost", "I will rewrite everything"))
    view.add(span_end("sevt_s", is_error=True))
    assert "not sent" in cards(view)[0]
    assert "I will rewrite everything" not in printed(view, capsys)


def test_preview_frames_the_sdk_does_not_know_change_nothing(view, clock):
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "Hello"))
    view.add(
        ev(
            {
                "type": "event_delta",
                "event_id": "sevt_m",
                "delta": {"type": "citation_delta", "index": 0},
            }
        )
    )
    view.add(ev({"type": "event_start", "event": {"type": "agent.hologram", "id": "sevt_h"}}))
    clock.now += 0.2
    view.add(delta("sevt_m", " world"))
    assert "Hello world" in cards(view)[0] and len(cards(view)) == 1


def test_a_character_split_inside_its_surrogate_pair_is_shown_whole_and_never_half(
    view, capsys, clock
):
    view.add(start("sevt_m"))
    clock.now += 0.2
    view.add(delta("sevt_m", "Party \ud83c"))  # the first half of U+1F389
    assert (
        "Party" in cards(view)[0] and "\ud83c" not in cards(view)[0] and "�" not in cards(view)[0]
    )
    clock.now += 0.2
    view.add(delta("sevt_m", "\udf89 time"))
    assert "Party 🎉 time" in cards(view)[0]
    view.add(message("sevt_m", "Party 🎉 time"))
    assert "Party 🎉 time" in printed(view, capsys)


def test_unknown_types_are_shown_generically_and_no_tag_forms_anywhere(view, capsys):
    view.add(
        ev(
            {
                "type": "agent.hologram",
                "id": "sevt_h",
                "processed_at": TS,
                "payload": "<script>x</script>",
            }
        )
    )
    view.add(message("sevt_m", "<img src=x onerror=alert(1)> \x1b[31mred\x1b[0m"))
    assert "agent.hologram" in cards(view)[0]
    assert all(
        "<script" not in card and "<img" not in card and "onerror=" not in card
        for card in cards(view)
    )
    text = printed(view, capsys)
    assert (
        "agent.hologram" in text
        and "<script" not in text
        and "<img" not in text
        and "\x1b" not in text
    )


def test_requires_action_names_the_waiting_tool(view, capsys):
    view.add(
        ev(
            {
                "type": "agent.tool_use",
                "id": "sevt_t",
                "processed_at": TS,
                "name": "edit",
                "input": {},
            }
        )
    )
    idle = {"type": "session.status_idle", "id": "sevt_i", "processed_at": TS}
    view.add(ev({**idle, "stop_reason": {"type": "requires_action", "event_ids": ["sevt_t"]}}))
    assert "edit (sevt_t) waits for your confirmation" in printed(view, capsys, "requires_action")


def test_the_status_line_counts_input_with_the_cache_and_shows_the_list_cost(view):
    view.add(span_end("sevt_a", input_tokens=3, cache_creation_input_tokens=1000))
    view.add(
        span_end(
            "sevt_b", input_tokens=3, cache_read_input_tokens=1000, cache_creation_input_tokens=200
        )
    )
    usage = {
        "input_tokens": 6,
        "output_tokens": 20,
        "list_cost": {"amount": "1234", "currency": "USD"},
    }
    view.add(
        ev(
            {
                "type": "session.usage",
                "id": "sevt_u",
                "processed_at": TS,
                "usage": usage,
                "budget": None,
            }
        )
    )
    line = view.status_line()
    assert (
        "2 model requests" in line
        and "2,206 input tokens (1,000 cache reads, 1,200 cache writes)" in line
    )
    assert "20 output tokens" in line and "list cost $12.34" in line


def test_a_second_turn_counts_both_turns_and_prints_only_its_own_entries(view, capsys):
    view.add(message("sevt_1", "first turn"))
    view.add(span_end("sevt_a"))
    printed(view, capsys)
    view.live("Turn 2")
    view.add(message("sevt_2", "second turn"))
    view.add(span_end("sevt_b"))
    text = printed(view, capsys)
    assert text.startswith("Turn 2 · ") and "2 model requests" in text
    assert "second turn" in text and "first turn" not in text


def test_clip_and_plain():
    assert clip("x" * 250).endswith("… [50 more characters]")
    assert clip("\n".join(map(str, range(20)))).endswith("… [8 more lines]")
    assert plain("a < b and <b>bold</b>") == "a < b and &lt;b>bold&lt;/b>"


def test_a_long_agent_message_is_cut_to_the_message_bound(view, capsys):
    """An agent message keeps at most PROSE lines of PROSE characters, in the live card and the
    printed transcript, saying how much was cut."""
    lines, chars = PROSE
    view.add(message("sevt_m", "x" * (chars + 6_000) + "\nline" * (lines + 10)))
    card = view.box.children[1].value
    assert (
        "x" * (chars + 1) not in card
        and "[6,000 more characters]" in card
        and "[11 more lines]" in card
    )
    printed_text = printed(view, capsys)
    assert printed_text.count("x") == chars and "[11 more lines]" in printed_text


def test_a_failed_tool_call_is_labelled_as_one(view, capsys):
    use = {"type": "agent.tool_use", "id": "sevt_t", "processed_at": TS, "name": "bash"}
    view.add(ev({**use, "input": {"command": "false"}}))
    result = {
        "type": "agent.tool_result",
        "id": "sevt_r",
        "processed_at": TS,
        "tool_use_id": "sevt_t",
    }
    view.add(ev({**result, "is_error": True, "content": [{"type": "text", "text": "exit 1"}]}))
    view.add(ev({**result, "id": "sevt_r2", "is_error": False, "content": []}))
    text = printed(view, capsys)
    assert "[bash result (error)] exit 1" in text
    assert "\n[bash result] \n" in text or text.endswith("[bash result] \n")


def test_a_message_from_the_history_replaces_its_preview_and_no_card_says_not_sent(view, capsys):
    """A reconnect: the stream broke while a message was previewed; the history brings the
    message itself. Its card shows the message, and the request's end closes no preview."""
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "Half a mess"))
    view.add(message("sevt_m", "The whole message."), history=True)
    view.add(span_end("sevt_s"))
    assert len(cards(view)) == 1 and "The whole message." in cards(view)[0]
    assert not any(watch_and_verify.NOT_SENT in card for card in cards(view))
    text = printed(view, capsys)
    assert text.count("The whole message.") == 1 and "(from history)" in text


def event(**data):
    return ev({"processed_at": TS, **data})


def test_every_kind_of_event_prints_as_a_person_reads_it(capsys, clock):
    """One turn with every kind of event the view knows, printed exactly: labels, the bounds of
    a tool call's input, an edit as -/+ lines, an unknown tool, an error, an unknown event type,
    and the status line's counts."""
    view = SessionView(clock=clock)
    view.live("Turn 1: a title")
    view.add(event(type="user.message", id="sevt_u", content=[{"type": "text", "text": "Fix it."}]))
    view.add(event(type="session.status_running", id="sevt_r"))
    assert view.state == "running"
    view.add(event(type="span.model_request_start", id="sevt_s"))
    view.add(event(type="agent.thinking", id="sevt_k"))
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "I will "))
    view.add(message("sevt_m", "I will look first."))
    commands = "\n".join(f"echo {n}" for n in range(45))
    view.add(event(type="agent.tool_use", id="sevt_t1", name="bash", input={"command": commands}))
    result = {"type": "agent.tool_result", "is_error": False}
    text = [{"type": "text", "text": "0\n1"}]
    view.add(event(**result, id="sevt_x1", tool_use_id="sevt_t1", content=text))
    boom = [{"type": "text", "text": "boom"}]
    view.add(event(**result | {"is_error": True}, id="sevt_x2", tool_use_id="sevt_z", content=boom))
    edit = {"file_path": "c.py", "old_string": "a - b", "new_string": "a + b"}
    view.add(event(type="agent.tool_use", id="sevt_t2", name="edit", input=edit))
    error = {"type": "model_overloaded_error", "message": "Overloaded"}
    view.add(
        event(
            type="session.error", id="sevt_e1", error=error | {"retry_status": {"type": "retrying"}}
        )
    )
    view.add(event(type="session.error", id="sevt_e2", error=error))
    usage = {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 100}
    view.add(span_end("sevt_s", **usage, cache_creation_input_tokens=20))
    cost = {"list_cost": {"amount": "123456", "currency": "USD"}}
    view.add(event(type="session.usage", id="sevt_us", usage=cost, budget=None))
    view.add(event(type="agent.hologram", id="sevt_h", payload={"x": 1}))
    view.add(event(type="session.status_idle", id="sevt_i", stop_reason={"type": "end_turn"}))
    assert view.state == "idle (end_turn)"
    assert (
        cards(view)[0] == '<b>You</b><pre style="white-space:pre-wrap;margin:2px 0">Fix it.</pre>'
    )
    status = (
        "idle (end_turn) · 1 model requests · 2 tool calls · 125 input tokens (100 cache reads,"
        " 20 cache writes) · 7 output tokens · list cost $1,234.56"
    )
    assert view.status.value == f"<b>{status}</b>"
    pad = " " * 7
    assert printed(view, capsys) == (
        f"Turn 1: a title · {status}\nThe agent finished its turn (end_turn).\n\n"
        "[You] Fix it.\n"
        "[Agent] I will look first.\n"
        "[bash] echo 0\n"
        + "".join(f"{pad}echo {n}\n" for n in range(1, 40))
        + f"{pad}… [5 more lines]\n"
        "[bash result] 0\n              1\n"
        "[tool result (error)] boom\n"
        "[edit] c.py\n       - a - b\n       + a + b\n"
        "[error] model_overloaded_error: Overloaded (retrying)\n"
        "[error] model_overloaded_error: Overloaded (?)\n"
        '[agent.hologram] {"id": "sevt_h", "type": "agent.hologram", "processed_at":'
        ' "2026-11-20 09:30:00+00:00", "payload": {"x": 1}}\n'
    )


def test_the_live_view_carries_the_classes_the_page_relies_on_and_one_line_elsewhere(view):
    view.add(message("sevt_m", "hello"))
    assert view.box._dom_classes == ("cma-live",) and view.status._dom_classes == ("cma-status",)
    assert [card._dom_classes for card in view.box.children[1:]] == [("cma-card",)]
    bundle = view.box._repr_mimebundle_()
    line = "Live view of the turn (the printed transcript below replaces it when it ends)"
    assert bundle["text/plain"] == line and bundle["text/html"] == line
    assert "application/vnd.jupyter.widget-view+json" in bundle


@pytest.mark.parametrize(
    ("ended", "state", "sentence"),
    [
        ("end_turn", "idle (end_turn)", "The agent finished its turn (end_turn)."),
        ("terminated", "terminated", "The session was terminated: it takes no more work."),
        ("stopped", "stopped", "You stopped watching before the turn ended. The agent may still"
         " be working, and costing money, in the cloud: the cleanup cell at the end interrupts"
         " and archives the session."),
        (None, "unknown", "We could not see the turn end; the agent may still be working."),
        ("refusal", "refusal", "The turn stopped early (refusal)."),
    ],
)  # fmt: skip
def test_each_ending_is_one_sentence_under_the_status_line(view, capsys, ended, state, sentence):
    if ended == "end_turn":
        view.add(event(type="session.status_idle", id="sevt_i", stop_reason={"type": "end_turn"}))
    if ended == "terminated":
        view.add(event(type="session.status_terminated", id="sevt_t"))
    head = printed(view, capsys, ended).split("\n")
    assert head[0].startswith(f"Turn 1 · {state} · 0 model requests") and head[1] == sentence


def test_an_explanation_and_an_unknown_waiting_tool_are_said(view, capsys):
    idle = {"type": "session.status_idle", "id": "sevt_i"}
    details = {"type": "refusal", "explanation": "one\ntwo\nthree\nfour"}
    view.add(event(**idle, stop_reason={"type": "refusal"}, stop_details=details))
    assert printed(view, capsys, "refusal").split("\n")[1:4] == [
        "The turn stopped early (refusal). one",
        "two",
        "three",
    ]
    view.live("Turn 2")
    reason = {"type": "requires_action", "event_ids": ["sevt_z"]}
    view.add(event(**idle | {"id": "sevt_j"}, stop_reason=reason))
    assert printed(view, capsys, "requires_action").split("\n")[1] == (
        "The turn stopped (requires_action): a tool (sevt_z) waits for your confirmation."
    )


def test_long_prose_wraps_under_its_label(view, capsys):
    words = " ".join(f"word{n:02d}" for n in range(30))  # 209 characters
    view.add(message("sevt_m", words))
    rows = printed(view, capsys).split("\n")[3:]
    assert rows[0].startswith("[Agent] word00") and len(rows[0]) <= 8 + 100
    assert rows[1].startswith(" " * 8 + "word") and " ".join(r.strip() for r in rows if r).endswith(
        "word29"
    )


def test_what_the_page_shows_before_and_while_a_turn_runs(view, clock, messages):
    """The status widget is on the page from the start; it says `waiting` until the turn runs;
    cards share one layout and style (one widget each, not three)."""
    assert view.box.children == (view.status,)
    view.add(event(type="user.message", id="sevt_u", content=[{"type": "text", "text": "go"}]))
    assert view.status.value.startswith("<b>waiting · 0 model requests")
    messages.clear()
    for n in range(5):
        view.add(event(type="agent.tool_use", id=f"sevt_{n}", name="bash", input={"command": "ls"}))
    assert messages.count("comm_open") == 5, "one widget per card"
    idle = {"type": "session.status_idle", "id": "sevt_i"}
    view.add(event(**idle))
    assert view.state == "idle (?)", "an idle event without its stop reason"


def test_a_command_line_is_shown_up_to_the_message_bound(view, capsys):
    line = "x" * 900
    view.add(event(type="agent.tool_use", id="sevt_t", name="bash", input={"command": line}))
    assert f"[bash] {line}\n" in printed(view, capsys)


def test_notes_are_sent_at_once_and_wrap_like_prose(view, clock, capsys):
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "one"))  # a preview was just sent: the next one would wait
    long = "A stream broke: " + "and then it broke again " * 6
    view.note(long)
    assert any("A stream broke" in card for card in cards(view)), "a note is never held back"
    rows = printed(view, capsys, "stopped").split("\n")
    first = rows.index(next(r for r in rows if r.startswith("[note] A stream broke")))
    assert rows[first] == "[note] " + (long[:100].rsplit(" ", 1)[0])
    assert rows[first + 1].startswith(" " * 7 + "broke again")


def test_exactly_the_bound_of_entries_is_printed_whole(view, capsys):
    for n in range(watch_and_verify.ENTRIES):
        view.add(
            event(
                type="agent.tool_use", id=f"sevt_{n}", name="bash", input={"command": f"echo {n}"}
            )
        )
    text = printed(view, capsys)
    assert (
        "entries not printed" not in text and text.count("[bash] echo") == watch_and_verify.ENTRIES
    )


def test_prose_wraps_at_the_width_under_its_label(view, capsys):
    words = " ".join(f"word{n:02d}" for n in range(30))
    view.add(message("sevt_m", words))
    rows = printed(view, capsys).split("\n")[3:-1]
    assert rows == [
        "[Agent] " + " ".join(f"word{n:02d}" for n in range(14)),
        " " * 8 + " ".join(f"word{n:02d}" for n in range(14, 28)),
        " " * 8 + "word28 word29",
    ]


def test_the_status_line_keeps_its_counts_when_cards_are_hidden(view):
    for n in range(watch_and_verify.CARDS + 5):
        view.add(event(type="agent.tool_use", id=f"sevt_{n}", name="bash", input={"command": "ls"}))
    assert view.status_line() == (
        f"waiting · 0 model requests · {watch_and_verify.CARDS + 5} tool calls · 0 input tokens"
        " (0 cache reads, 0 cache writes) · 0 output tokens · 5 earlier entries hidden"
    )


def test_a_second_turn_hides_its_own_earlier_cards(view, capsys):
    view.add(message("sevt_a", "turn one"))
    printed(view, capsys)
    view.live("Turn 2")
    for n in range(watch_and_verify.CARDS + 3):
        view.add(event(type="agent.tool_use", id=f"sevt_{n}", name="bash", input={"command": "ls"}))
    assert view.hidden == 3 and len(cards(view)) == watch_and_verify.CARDS


def test_two_waiting_tools_and_a_long_explanation(view, capsys):
    for tool_id, name in (("sevt_a", "edit"), ("sevt_b", "bash")):
        view.add(event(type="agent.tool_use", id=tool_id, name=name, input={}))
    reason = {"type": "requires_action", "event_ids": ["sevt_a", "sevt_b"]}
    view.add(event(type="session.status_idle", id="sevt_i", stop_reason=reason))
    assert printed(view, capsys, "requires_action").split("\n")[1] == (
        "The turn stopped (requires_action): edit (sevt_a), bash (sevt_b) waits for your"
        " confirmation."
    )
    view.live("Turn 2")
    details = {"type": "refusal", "explanation": "1\n2\n3\n4\n5"}
    idle = {"type": "session.status_idle", "id": "sevt_j", "stop_reason": {"type": "refusal"}}
    view.add(event(**idle, stop_details=details))
    assert printed(view, capsys, "refusal").split("\n")[1:5] == [
        "The turn stopped early (refusal). 1",
        "2",
        "3",
        "… [2 more lines]",
    ]


def test_previews_say_whether_they_were_new_and_carry_the_agents_label(view, clock):
    assert view.add(start("sevt_m")) is True
    clock.now += 1
    assert view.add(delta("sevt_m", "a=b")) is True
    assert (
        cards(view)[0] == '<b>Agent</b><pre style="white-space:pre-wrap;margin:2px 0">a&#61;b</pre>'
    )
    view.add(message("sevt_m", "done"))
    assert view.add(delta("sevt_m", "late")) is False, "its message is already shown"


def test_a_card_never_sent_says_so_in_the_agents_name(view):
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "half"))
    view.add(span_end("sevt_s", is_error=True))
    assert cards(view)[0] == (
        '<b>Agent</b><pre style="white-space:pre-wrap;margin:2px 0">'
        f"{watch_and_verify.NOT_SENT}</pre>"
    )


def test_a_preview_is_sent_again_after_a_tenth_of_a_second(view, clock, messages):
    view.add(start("sevt_m"))
    view.add(delta("sevt_m", "one "))
    messages.clear()
    clock.now += 0.1
    view.add(delta("sevt_m", "two"))
    assert messages and "one two" in cards(view)[0]
