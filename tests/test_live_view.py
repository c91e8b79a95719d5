"""The notebook's live view, fed events directly: what nbval cannot see (widgets, token-by-token
text) and what a careful view must survive (duplicates, orphan deltas, unknown types, markup)."""

from __future__ import annotations

import pytest
from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from tests.notebook_runner import live_view_cell

TS = "2026-11-20T09:30:00.000Z"


def ev(data: dict):
    """An event as the SDK builds it from the stream (leniently, as the notebook gets it)."""
    return construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=data)


def delta(message_id: str, text: str):
    content = {"type": "text", "text": text}
    return ev(
        {
            "type": "event_delta",
            "event_id": message_id,
            "delta": {"type": "content_delta", "content": content},
        }
    )


@pytest.fixture
def shown():
    return []


@pytest.fixture
def view(shown):
    return live_view_cell(shown)["LiveView"]()


def card_values(view) -> list[str]:
    return [card.value for page in view.pages.children for card in page.children]


def test_agent_text_grows_token_by_token_in_one_card_then_the_final_message_replaces_it(view):
    view.add(ev({"type": "event_start", "event": {"type": "agent.message", "id": "sevt_m"}}))
    view.add(delta("sevt_m", "Four tests "))
    assert "Four tests" in card_values(view)[0]
    view.add(delta("sevt_m", "fail."))
    assert len(card_values(view)) == 1 and "Four tests fail." in card_values(view)[0]
    final = {
        "type": "agent.message",
        "id": "sevt_m",
        "processed_at": TS,
        "content": [{"type": "text", "text": "Done."}],
    }
    view.add(ev(final))
    assert (
        len(card_values(view)) == 1
        and "Done." in card_values(view)[0]
        and "fail." not in card_values(view)[0]
    )


def test_an_event_seen_twice_is_shown_once_and_an_orphan_delta_is_ignored(view):
    tool_use = {
        "type": "agent.tool_use",
        "id": "sevt_t",
        "processed_at": TS,
        "name": "bash",
        "input": {"command": "ls"},
    }
    view.add(ev(tool_use))
    view.add(ev(tool_use))
    view.add(delta("sevt_never_started", "lost"))
    assert len(view.entries) == 1 and view.stats["tool calls"] == 1


def test_unknown_types_are_shown_generically_and_markup_is_escaped(view, shown):
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
    view.finish("end_turn")
    [transcript] = shown
    bundle = transcript._repr_mimebundle_()
    assert "agent.hologram" in bundle["text/plain"] and "agent.hologram" in bundle["text/html"]
    assert "<script" not in bundle["text/html"] and "<script" not in bundle["text/plain"]
    assert "<script" not in card_values(view)[0]


def test_requires_action_names_the_waiting_tool(view, shown):
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
    view.finish("requires_action")
    assert (
        "edit (sevt_t) waits for your confirmation" in shown[0].text
        and "always_allow" in shown[0].text
    )


def test_a_long_turn_keeps_its_start_and_end_in_the_static_transcript(view, shown):
    for n in range(500):
        view.add(
            ev(
                {
                    "type": "agent.tool_use",
                    "id": f"sevt_{n}",
                    "processed_at": TS,
                    "name": "bash",
                    "input": {"command": f"echo {n}"},
                }
            )
        )
    view.finish("end_turn")
    text = shown[0].text
    assert "echo 0\n" in text and "echo 499" in text and "echo 250\n" not in text
    assert "420 entries in the middle are not shown" in text
    assert len(card_values(view)) == 500  # the live view keeps them all
