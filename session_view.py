"""How iterate_failing_tests.ipynb shows a session: live in ipywidgets while a turn runs, then
printed as text (what every renderer shows). Presentation only: no API calls. Agent output is
data: escapes are stripped, long output is cut, and no HTML tag can form in any rendering."""

import html
import json
import re
import textwrap
import time
from collections import Counter

import ipywidgets as widgets
from anthropic.lib.sessions import accumulate_managed_agents_event

LINES, CHARS, PROSE = 12, 200, (60, 1_000)  # lines and characters per line: tool result; message
ENTRIES, CARDS, WIDTH = 80, 40, 100  # printed entries per turn, live cards kept, text width
EDIT = (("-", "old_string"), ("+", "new_string"))  # an edit call, shown as -/+ lines
STYLE = "white-space:pre-wrap;margin:2px 0"  # a card keeps the text's line breaks
NOT_SENT = "(a preview of a message that was not sent)"
ESCAPES = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f]"
ENDINGS = {
    "end_turn": "The agent finished its turn (end_turn).",
    "terminated": "The session was terminated: it takes no more work.",
    "stopped": "You stopped watching before the turn ended.",
    None: "We could not see the turn end; the agent may still be working.",
}


def clip(text: str, lines: int = LINES, chars: int = CHARS) -> str:
    """Strip escapes, join surrogate pairs split across deltas, cut long text saying how much."""
    text = re.sub(ESCAPES, "", text).encode("utf-16", "surrogatepass").decode("utf-16", "ignore")
    cut = [(row[:chars], len(row) - chars) for row in text.splitlines()]
    rows = [row + f"… [{more:,} more characters]" * (more > 0) for row, more in cut]
    more = [f"… [{len(rows) - lines:,} more lines]"] if len(rows) > lines else []
    return "\n".join(rows[:lines] + more)


def plain(text: str) -> str:
    """Printed text in which no tag can form, even where a page renders it as HTML or MDX."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def text_of(blocks) -> str:
    return "\n".join(getattr(b, "text", None) or f"[{b.type}]" for b in blocks or [])


def tool_input(given: dict) -> str:  # the command or the path; an edit as -/+ lines
    shown = [str(given.get("command") or given.get("file_path") or json.dumps(given, default=str))]
    edit = [f"{s} {row}" for s, k in EDIT for row in str(given.get(k, "")).splitlines()]
    return "\n".join(shown + edit)


class LiveBox(widgets.VBox):
    def _repr_mimebundle_(self, **kwargs):  # one stable line where widgets do not render
        line = "Live view of the turn (the printed transcript below replaces it when it ends)"
        return {**super()._repr_mimebundle_(**kwargs), "text/plain": line, "text/html": line}


class SessionView:
    """A session's events, shown live per turn and printed per turn; counts cover every turn."""

    def __init__(self, clock=time.monotonic):
        self.seen, self.entries, self.open, self.tools, self.hidden = set(), [], {}, {}, 0
        self.stats, self.cost, self.idle, self.clock = Counter(), None, None, clock

    def live(self, title: str) -> LiveBox:  # a fresh live view for the next turn: display it once
        self.title, self.first, self.state, self.cards = title, len(self.entries), "waiting", {}
        self.dirty, self.flushed, self.hidden = set(), float("-inf"), 0
        self.status = widgets.HTML(_dom_classes=("cma-status",))
        self.shared = {"layout": self.status.layout, "style": self.status.style}  # not one per card
        self.box = LiveBox([self.status], _dom_classes=("cma-live",))
        return self.box

    def add(self, ev, history: bool = False) -> bool:  # once, however often it is delivered
        if (event_id := getattr(ev, "id", None)) in self.seen:
            return False
        self.seen.update({event_id} - {None})  # previews have no id
        tag = " (from history)" if history else ""
        match ev.type:  # events without a card of their own change only the status line
            case "event_start" | "event_delta":
                return self._preview(ev)
            case "agent.message" | "user.message":
                who = "Agent" if ev.type == "agent.message" else "You"
                self._entry(who + tag, text_of(ev.content), True, self.open.pop(ev.id, [None])[0])
            case "agent.tool_use":
                self.tools[ev.id] = ev.name  # also counts the tool calls
                self._entry(ev.name + tag, clip(tool_input(ev.input or {}), 40, PROSE[1]))
            case "agent.tool_result":
                label = f"{self.tools.get(ev.tool_use_id, 'tool')} result{' (error)' * bool(ev.is_error)}"
                self._entry(label + tag, clip(text_of(ev.content)))
            case "span.model_request_end":
                u = ev.model_usage  # each request's tokens; the cost comes with session.usage
                self.stats.update(requests=1, input=u.input_tokens, output=u.output_tokens)
                self.stats.update(read=u.cache_read_input_tokens)  # cache reads and writes
                self.stats.update(write=u.cache_creation_input_tokens)  # are input tokens too
                self._close_previews()  # a request that ended without its message never sent it
            case "session.usage":  # the session's cumulative usage: its list cost, once priced
                self.cost = ev.usage.list_cost or self.cost
            case "session.error":
                retry = getattr(ev.error.retry_status, "type", "?")
                self._entry("error" + tag, clip(f"{ev.error.type}: {ev.error.message} ({retry})"))
            case "session.status_running" | "span.model_request_start" | "agent.thinking":
                self.state = "running"
            case "session.status_idle":
                self.idle, self.state = ev, f"idle ({getattr(ev.stop_reason, 'type', '?')})"
            case "session.status_terminated":
                self.state = "terminated"
            case _:  # newer event types are shown as they are, never dropped
                self._entry(ev.type + tag, clip(json.dumps(ev.to_dict(), default=str)))
        self._flush(force=True)
        return True

    def note(self, sentence: str) -> None:
        self._entry("note", sentence, True)
        self._flush(force=True)

    def finish(self, ended: str | None) -> None:  # the live view gives way to the printed turn
        self._close_previews()
        self.state = self.state if ended in ("end_turn", "terminated") else ended or "unknown"
        for widget in [*self.cards.values(), self.status]:
            widget.close()
        self.box.children = ()
        entries = [e for e in self.entries[self.first :] if e]
        if len(entries) > ENTRIES:
            gap = ("note", f"… {len(entries) - ENTRIES:,} entries not printed", True)
            entries = [*entries[: ENTRIES // 4], gap, *entries[-ENTRIES * 3 // 4 :]]
        print(f"{self.title} · {self.status_line()}\n{plain(self._ending(ended))}\n")
        for label, text, prose in entries:
            pad, rows = " " * (len(label) + 3), text.split("\n")
            wrap = [textwrap.fill(pad + r, WIDTH + len(pad), subsequent_indent=pad) for r in rows]
            rows = [r[len(pad) :] for r in wrap] if prose else rows
            print(plain(f"[{label}] " + f"\n{pad}".join(rows)))

    def status_line(self) -> str:  # all turns so far; input tokens include the cache, as documented
        s, cost = self.stats, self.cost and f" · list cost ${int(self.cost.amount) / 100:,.2f}"
        return (
            f"{self.state} · {s['requests']} model requests · {len(self.tools)} tool calls · "
            f"{s['input'] + s['read'] + s['write']:,} input tokens ({s['read']:,} cache reads, "
            f"{s['write']:,} cache writes) · {s['output']:,} output tokens{cost or ''}"
            + (f" · {self.hidden:,} earlier entries hidden" if self.hidden else "")
        )

    def _ending(self, ended: str | None) -> str:
        if ended == "requires_action" and (reason := getattr(self.idle, "stop_reason", None)):
            tools = ", ".join(f"{self.tools.get(i, 'a tool')} ({i})" for i in reason.event_ids)
            return f"The turn stopped (requires_action): {tools} waits for your confirmation."
        sentence = ENDINGS.get(ended, f"The turn stopped early ({ended}).")
        explanation = getattr(getattr(self.idle, "stop_details", None), "explanation", None)
        return f"{sentence} {clip(explanation, 3)}" if explanation else sentence

    def _preview(self, ev) -> bool:
        message_id = ev.event.id if ev.type == "event_start" else ev.event_id
        if message_id in self.seen:  # its final message is already shown
            return False
        index, snapshot = self.open.get(message_id, (None, None))
        try:  # previews are best effort: a delta the SDK cannot fold changes nothing
            snapshot = accumulate_managed_agents_event(snapshot, ev)
        except Exception:
            return False
        if getattr(snapshot, "type", None) == "agent.message":
            index = self._entry("Agent", text_of(snapshot.content), True, index)
            self.open[message_id] = (index, snapshot)
            self._flush()
        return True

    def _close_previews(self) -> None:  # the transcript holds only the messages that were sent
        for index, _ in self.open.values():
            self.entries[index] = None
            self.dirty.add(index)  # its card says it was not sent
        self.open.clear()

    def _entry(self, label: str, text: str, prose: bool = False, index: int | None = None) -> int:
        if index is None:
            self.entries.append(None)
            index = len(self.entries) - 1
        self.entries[index] = (label, clip(text, *PROSE) if prose else text, prose)
        self.dirty.add(index)
        return index

    def _flush(self, force: bool = False) -> None:  # previews: ~10 updates a second at most
        if not force and self.clock() - self.flushed < 0.1:
            return
        self.flushed, start = self.clock(), self.first + self.hidden  # earlier ones left the page
        for index in sorted(
            i for i in self.dirty if i >= start and (self.entries[i] or i in self.cards)
        ):
            label, text, _ = self.entries[index] or ("Agent", NOT_SENT, True)
            body = html.escape(text).replace("=", "&#61;")  # no attribute survives a loose renderer
            value = f'<b>{html.escape(label)}</b><pre style="{STYLE}">{body}</pre>'
            if index in self.cards:
                self.cards[index].value = value
            else:  # one message opens the card with its text and class
                self.cards[index] = widgets.HTML(value, _dom_classes=("cma-card",), **self.shared)
        self.dirty.clear()
        for index in sorted(self.cards)[:-CARDS]:  # the page keeps CARDS, the transcript all
            self.cards.pop(index).close()
            self.hidden = index + 1 - self.first
        self.status.value = f"<b>{html.escape(self.status_line())}</b>"
        self.box.children = (self.status, *(self.cards[i] for i in sorted(self.cards)))
