"""The chores of iterate_failing_tests.ipynb, so that its cells can show the Managed Agents API.

- One-sentence errors: an API error, a missing key or a cell run too early is shown as one
  sentence, not a traceback (`Sentence`, `show_errors_as_sentences`).
- Watching a turn: `SessionView` shows the events live in ipywidgets and prints the turn as
  text when it ends; `reconnecting` yields a turn's events and reopens the stream when it
  breaks; `run_turn` is the notebook's first-turn loop as one call, for the second turn.
- Verifying the work: `newest_output` waits for the agent's file to be listed; `run_tests`
  runs each test alone in a clean, bounded process; `describe_changes`, `single_bug_versions`
  and `root_causes` compare the agent's code with the original; `results_table`, `fix_report`
  and `regression_report` write what the notebook prints.
- Cleanup: `stop_if_running` interrupts a session that still runs; `find_leftovers` finds what
  the cookbook created after a kernel restart.

Agent output is data: terminal escapes are stripped, long output is cut, and no HTML tag can
form in any rendering. Agent code is untrusted: see `run_tests` for what the runner guarantees.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import html
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import ipywidgets as widgets
from anthropic.lib.sessions import accumulate_managed_agents_event
from IPython import get_ipython
from IPython.display import display

# Appended to the no-key and no-connection sentences; the cookbook repository's copy of this
# module has no replay, so `make site` writes it empty there.
REPLAY_HINT = " Without a key, `make lab` replays the recorded session offline."

# --- one-sentence errors ------------------------------------------------------------------------


class Sentence(Exception):
    """An error that IPython shows as its message alone, with no traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython's hook for exceptions that draw their own traceback.
        return [str(self)]


def sentence_for(err: BaseException) -> str:
    """One sentence for an API error, a refused connection or a name a cell needs too early."""
    if isinstance(err, anthropic.APIConnectionError):
        url = urlsplit(str(err.request.url))
        cause = type(err.__cause__ or err).__name__
        text = (
            f"Could not reach the API at {url.scheme}://{url.netloc}/ ({cause}): check your"
            f" network and ANTHROPIC_BASE_URL.{REPLAY_HINT}"
        )
    elif isinstance(err, anthropic.APIStatusError):
        text = f"The API answered {err.status_code} ({err.type}): {err.api_message or err.body}"
    elif isinstance(err, NameError):
        text = (
            f"{err.name} is not defined yet: run the cells above this one first"
            " (Run › Run All Above Selected Cell)."
        )
    else:
        text = str(err)
    return plain(clip(text, lines=5, chars=1000))


def show_errors_as_sentences() -> None:
    """Have IPython show API errors, and names used before the cell that defines them, as one
    sentence (`sentence_for`) instead of a traceback. Outside IPython this does nothing."""
    shell = get_ipython()
    if shell is None:
        return

    def one_sentence(shell, etype, err, tb, tb_offset=None):
        shell.showtraceback((Sentence, Sentence(sentence_for(err)), None))

    shell.set_custom_exc((anthropic.AnthropicError, NameError), one_sentence)


# --- the live view and the printed transcript ---------------------------------------------------

TOOL_LINES, TOOL_CHARS = 12, 200  # a tool result: lines shown, characters per line
PROSE = (60, 1_000)  # a message: lines shown, characters per line
ENTRIES = 80  # entries printed per turn (its start and its end)
CARDS = 40  # cards the live view keeps
WIDTH = 100  # printed text width
EDIT = (("-", "old_string"), ("+", "new_string"))  # an edit call, shown as -/+ lines
STYLE = "white-space:pre-wrap;margin:2px 0"  # a card keeps the text's line breaks
NOT_SENT = "(a preview of a message that was not sent)"
ESCAPES = r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f]"
ENDINGS = {
    "end_turn": "The agent finished its turn (end_turn).",
    "terminated": "The session was terminated: it takes no more work.",
    "stopped": (
        "You stopped watching before the turn ended. The agent may still be working, and costing"
        " money, in the cloud: the cleanup cell at the end interrupts and archives the session."
    ),
    None: "We could not see the turn end; the agent may still be working.",
}


def clip(text: str, lines: int = TOOL_LINES, chars: int = TOOL_CHARS) -> str:
    """Strip escapes, join surrogate pairs split across deltas, cut long text saying how much."""
    text = re.sub(ESCAPES, "", text)
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "ignore")
    rows = []
    for row in text.splitlines():
        more = len(row) - chars
        rows.append(row[:chars] + (f"… [{more:,} more characters]" if more > 0 else ""))
    if len(rows) > lines:
        rows = rows[:lines] + [f"… [{len(rows) - lines:,} more lines]"]
    return "\n".join(rows)


def plain(text: str) -> str:
    """Printed text in which no tag can form, even where a page renders it as HTML or MDX."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


def text_of(blocks) -> str:
    """The text of content blocks; other blocks as their type in brackets."""
    return "\n".join(getattr(b, "text", None) or f"[{b.type}]" for b in blocks or [])


def tool_input(given: dict) -> str:
    """A tool call's input as shown: the command or the path; an edit as -/+ lines."""
    shown = given.get("command") or given.get("file_path") or json.dumps(given)
    rows = [str(shown)]
    for sign, key in EDIT:
        rows += [f"{sign} {row}" for row in str(given.get(key, "")).splitlines()]
    return "\n".join(rows)


class LiveBox(widgets.VBox):
    """The live view: one stable line of text where widgets do not render (nbval, the site)."""

    def _repr_mimebundle_(self, **kwargs):
        line = "Live view of the turn (the printed transcript below replaces it when it ends)"
        return {**super()._repr_mimebundle_(**kwargs), "text/plain": line, "text/html": line}


class SessionView:
    """A session's events, shown live per turn and printed per turn; counts cover every turn."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seen = set()  # event ids shown: an event delivered twice is shown once
        self.entries = []  # (label, text, prose) per card, or None for a preview never sent
        self.open = {}  # message id -> (entry index, snapshot) of a preview being written
        self.tools = {}  # tool_use id -> tool name
        self.stats = Counter()  # model requests and tokens
        self.cost = None  # the session's list cost, once priced
        self.idle = None  # the last session.status_idle event

    def live(self, title: str) -> LiveBox:
        """A fresh live view for the next turn: display it once."""
        self.title = title
        self.first = len(self.entries)  # this turn's first entry
        self.state = "waiting"
        self.cards = {}  # entry index -> its widget, for the cards on the page
        self.dirty = set()  # entries changed since the last update of the page
        self.flushed = float("-inf")
        self.hidden = 0  # this turn's entries that left the page
        self.status = widgets.HTML(_dom_classes=("cma-status",))
        # Cards share the status line's layout and style: one widget model each, not one per card.
        self.shared = {"layout": self.status.layout, "style": self.status.style}
        self.box = LiveBox([self.status], _dom_classes=("cma-live",))
        return self.box

    def add(self, ev, history: bool = False) -> bool:
        """Show an event once, however often it is delivered; True if it was new."""
        event_id = getattr(ev, "id", None)
        if event_id in self.seen:
            return False
        if event_id is not None:  # previews have no id
            self.seen.add(event_id)
        tag = " (from history)" if history else ""
        match ev.type:  # events without a card of their own change only the status line
            case "event_start" | "event_delta":
                return self._preview(ev)
            case "agent.message" | "user.message":
                who = "Agent" if ev.type == "agent.message" else "You"
                index = self.open.pop(ev.id, [None])[0]
                self._entry(who + tag, text_of(ev.content), True, index)
            case "agent.tool_use":
                self.tools[ev.id] = ev.name  # also counts the tool calls
                self._entry(ev.name + tag, clip(tool_input(ev.input or {}), 40, PROSE[1]))
            case "agent.tool_result":
                label = self.tools.get(ev.tool_use_id, "tool") + " result"
                if ev.is_error:
                    label += " (error)"
                self._entry(label + tag, clip(text_of(ev.content)))
            case "span.model_request_end":
                usage = ev.model_usage  # each request's tokens; the cost comes with session.usage
                self.stats.update(requests=1, input=usage.input_tokens, output=usage.output_tokens)
                # Cache reads and writes are input tokens too.
                self.stats.update(read=usage.cache_read_input_tokens)
                self.stats.update(write=usage.cache_creation_input_tokens)
                self._close_previews()  # a request that ended without its message never sent it
            case "session.usage":  # the session's cumulative usage: its list cost, once priced
                self.cost = ev.usage.list_cost or self.cost
            case "session.error":
                retry = getattr(ev.error.retry_status, "type", "?")
                self._entry("error" + tag, clip(f"{ev.error.type}: {ev.error.message} ({retry})"))
            case "session.status_running" | "span.model_request_start" | "agent.thinking":
                self.state = "running"
            case "session.status_idle":
                self.idle = ev
                self.state = f"idle ({getattr(ev.stop_reason, 'type', '?')})"
            case "session.status_terminated":
                self.state = "terminated"
            case _:  # newer event types are shown as they are, never dropped
                self._entry(ev.type + tag, clip(json.dumps(ev.to_dict(), default=str)))
        self._flush(force=True)
        return True

    def note(self, sentence: str) -> None:
        """A line of our own in the transcript (a reconnect, a broken stream)."""
        self._entry("note", sentence, True)
        self._flush(force=True)

    def finish(self, ended: str | None) -> None:
        """The live view gives way to the printed turn: status line, ending, transcript."""
        self._close_previews()
        if ended not in ("end_turn", "terminated"):
            self.state = ended or "unknown"
        for widget in [*self.cards.values(), self.status]:
            widget.close()
        self.box.children = ()
        entries = [e for e in self.entries[self.first :] if e]
        if len(entries) > ENTRIES:
            gap = ("note", f"… {len(entries) - ENTRIES:,} entries not printed", True)
            entries = [*entries[: ENTRIES // 4], gap, *entries[-ENTRIES * 3 // 4 :]]
        print(f"{self.title} · {self.status_line()}\n{plain(self._ending(ended))}\n")
        for label, text, prose in entries:
            pad = " " * (len(label) + 3)
            rows = text.split("\n")
            if prose:  # wrapped to the width, under the label
                wrapped = [
                    textwrap.fill(pad + r, WIDTH + len(pad), subsequent_indent=pad) for r in rows
                ]
                rows = [r[len(pad) :] for r in wrapped]
            print(plain(f"[{label}] " + f"\n{pad}".join(rows)))

    def status_line(self) -> str:
        """All turns so far; input tokens include the cache reads and writes, as documented."""
        s = self.stats
        line = (
            f"{self.state} · {s['requests']} model requests · {len(self.tools)} tool calls · "
            f"{s['input'] + s['read'] + s['write']:,} input tokens ({s['read']:,} cache reads, "
            f"{s['write']:,} cache writes) · {s['output']:,} output tokens"
        )
        if self.cost:
            line += f" · list cost ${int(self.cost.amount) / 100:,.2f}"
        if self.hidden:
            line += f" · {self.hidden:,} earlier entries hidden"
        return line

    def _ending(self, ended: str | None) -> str:
        """One sentence for how the turn ended."""
        reason = getattr(self.idle, "stop_reason", None)
        if ended == "requires_action" and reason:
            tools = ", ".join(f"{self.tools.get(i, 'a tool')} ({i})" for i in reason.event_ids)
            return f"The turn stopped (requires_action): {tools} waits for your confirmation."
        sentence = ENDINGS.get(ended, f"The turn stopped early ({ended}).")
        explanation = getattr(getattr(self.idle, "stop_details", None), "explanation", None)
        return f"{sentence} {clip(explanation, 3)}" if explanation else sentence

    def _preview(self, ev) -> bool:
        """Fold a preview fragment into its message's card, as the text grows."""
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

    def _close_previews(self) -> None:
        """The transcript holds only the messages that were sent."""
        for index, _ in self.open.values():
            self.entries[index] = None
            self.dirty.add(index)  # its card says it was not sent
        self.open.clear()

    def _entry(self, label: str, text: str, prose: bool = False, index: int | None = None) -> int:
        """Add an entry (or replace entry `index`); return its index."""
        if index is None:
            self.entries.append(None)
            index = len(self.entries) - 1
        self.entries[index] = (label, clip(text, *PROSE) if prose else text, prose)
        self.dirty.add(index)
        return index

    def _flush(self, force: bool = False) -> None:
        """Send what changed to the page; previews at most about ten times a second."""
        if not force and self.clock() - self.flushed < 0.1:
            return
        self.flushed = self.clock()
        start = self.first + self.hidden  # earlier entries left the page
        for index in sorted(self.dirty):
            if index < start or not (self.entries[index] or index in self.cards):
                continue
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


# --- following a turn ---------------------------------------------------------------------------

RECONNECTS = 3  # how often a broken stream is reopened in one turn


def user_message(text: str) -> dict:
    """A user.message event with one text block."""
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


def turn_end(ev) -> str | None:
    """How an event ends a turn: its stop reason, or "terminated"; None if it does not."""
    if ev.type == "session.status_terminated":
        return "terminated"
    if ev.type == "session.status_idle":
        return getattr(ev.stop_reason, "type", None) or "unknown"
    return None


def stream_problem(err: Exception, silent: float, stream_timeout: float) -> str:
    """One sentence for a stream that broke, after `silent` seconds without an event."""
    if isinstance(err, anthropic.APIStatusError):  # an `error` event on the stream
        return f"The stream carried an error event ({err.type}: {err.api_message})."
    if isinstance(err, anthropic.APITimeoutError):
        return f"No event arrived for {stream_timeout:g} s (COOKBOOK_STREAM_TIMEOUT)."
    if isinstance(err, ValueError):  # a frame whose data is not JSON
        return f"The stream sent an event that could not be read ({type(err).__name__})."
    if not isinstance(err, anthropic.APIError) and silent >= stream_timeout:
        # SDKs before 2.17 raise their HTTP library's own errors mid-stream; we do not import
        # that library, so a stall is recognised by the silence itself.
        return f"No event arrived for {stream_timeout:g} s (COOKBOOK_STREAM_TIMEOUT)."
    return f"The connection dropped mid-stream ({type(err).__name__})."


def reconnecting(
    client, session_id, stream, after, view, stream_timeout, turn_timeout, attempts=RECONNECTS
):
    """Yield the events of the turn that began with the event `after` (the message we sent),
    first from `stream`, then, each time it breaks, from a new one.

    A stream breaks when the connection drops, an `error` event arrives, or nothing comes for
    `stream_timeout` seconds. Then (at most `attempts` times) this opens a new stream first and
    reads the history with `events.list` second, so nothing can fall in between, shows the
    events the view has not seen (`view.add` skips an event it has) and yields them, and goes
    on with the new stream. Whatever happens, the turn is given up after `turn_timeout` seconds:
    heartbeats could keep a stream open forever, so a timer closes it then (the next read fails).
    """
    deadline = time.monotonic() + turn_timeout
    streams = [stream]
    watchdog = threading.Timer(turn_timeout, lambda: streams[-1].close())
    watchdog.daemon = True
    watchdog.start()
    try:
        for attempt in range(attempts + 1):
            if attempt:
                view.note(
                    f"Reconnecting ({attempt} of {attempts}): a new stream, then the history."
                )
                streams.append(
                    client.beta.sessions.events.stream(
                        session_id, event_deltas=["agent.message"], timeout=stream_timeout
                    )
                )
                history = list(client.beta.sessions.events.list(session_id))
                start = next((i for i, ev in enumerate(history) if ev.id == after), 0)
                missed = [ev for ev in history[start:] if view.add(ev, history=True)]
                view.note(f"The session's history had {len(missed)} events the stream missed.")
                yield from missed
                if any(turn_end(ev) for ev in missed):  # it ended while we were away
                    return
            waiting = time.monotonic()
            try:
                for ev in streams[-1]:
                    yield ev
                    waiting = time.monotonic()  # the next read starts now
                problem = "The stream closed before the turn ended."
            except Exception as err:  # whatever the SDK raises while reading: the stream broke
                problem = stream_problem(err, time.monotonic() - waiting, stream_timeout)
            if time.monotonic() >= deadline:
                view.note(
                    f"The turn did not end within {turn_timeout:g} s (COOKBOOK_TURN_TIMEOUT)."
                )
                return
            view.note(problem)
        view.note(f"The stream broke {attempts + 1} times; we stopped following it.")
    finally:
        watchdog.cancel()
        for opened in streams[1:]:
            opened.close()


def run_turn(client, session_id, stream, text, view, title, stream_timeout, turn_timeout):
    """The first turn's cell as one call, for later turns, on a `stream` the caller opened (first
    the stream, then the message): show a fresh live view, send `text`, follow the turn until it
    ends and print it. Returns how it ended (a stop reason, "terminated", "stopped" after a
    kernel interrupt, or None)."""
    display(view.live(title))
    ended = None
    try:
        sent = client.beta.sessions.events.send(session_id, events=[user_message(text)])
        first = sent.data[0].id
        for ev in reconnecting(
            client, session_id, stream, first, view, stream_timeout, turn_timeout
        ):
            view.add(ev)
            ended = turn_end(ev)
            if ended:
                break
    except KeyboardInterrupt:
        ended = "stopped"
    view.finish(ended)
    return ended


# --- the agent's files --------------------------------------------------------------------------


def newest_output(list_outputs, name: str, patience: float):
    """The newest file called `name` in `list_outputs()` (or None), and that whole list.

    Outputs can be listed a little after a turn ends, so the list is asked for again, with
    growing pauses, for up to `patience` seconds.
    """
    waited = 0.0
    pause = 0.25
    while True:
        outputs = list_outputs()
        found = [f for f in outputs if f.filename == name]
        if found or waited >= patience:
            break
        time.sleep(pause)
        waited += pause
        pause = min(pause * 2, 8.0)
    if waited:
        print(f"Waited {waited:.1f} s for the session's outputs to be listed.")
    return max(found, key=lambda f: f.created_at, default=None), outputs


def decoded(data: bytes) -> str:
    """A downloaded text file, with its line endings normalised (CRLF is not a change)."""
    text = data.decode(errors="replace")  # UTF-8
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- the bounded test runner --------------------------------------------------------------------

# Runs one test in the test process: `python -I -c HARNESS <module> <test> <fd>`. The code under
# test runs from the import on. Only when the import is over does the harness say so on file
# descriptor <fd>; only then is the token sent, on stdin, so that code could not know it while
# it was imported.
HARNESS = """import asyncio, inspect, os, sys, unittest
sys.path.insert(0, ".")
module = __import__(sys.argv[1])
os.write(int(sys.argv[3]), b"imported")
os.close(int(sys.argv[3]))


def run(owner, name):
    if not owner:
        outcome = getattr(module, name)()
        if inspect.iscoroutine(outcome):
            asyncio.run(outcome)
        return True
    cls = getattr(module, owner)
    if issubclass(cls, unittest.TestCase):
        result = unittest.TestResult()
        cls(name).run(result)
        return result.wasSuccessful() and not result.skipped
    getattr(cls(), name)()
    return True


def main():
    token = sys.stdin.readline().strip()
    owner, _, name = sys.argv[2].rpartition(".")
    try:
        passed = run(owner, name)
    except Exception:
        passed = False
    print(token, "PASS" if passed else "FAIL", sys.argv[2], flush=True)


main()
"""


def find_tests(source: str) -> tuple[list[str], list[str]]:
    """The tests a test file defines, in file order (read, not run), and the names it defines
    twice. Tests are top-level `test*` functions, and the `test*` methods of a class that
    subclasses a TestCase or is named `Test*` (as `Class.method`). A name defined twice is one
    test: the last definition counts, as Python sees it. Raises SyntaxError."""
    names = []
    twice = []

    def found(name):
        if name in names:
            twice.append(name)
        else:
            names.append(name)

    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test"
        ):
            found(node.name)
        elif isinstance(node, ast.ClassDef) and (
            node.name.startswith("Test") or any("TestCase" in ast.unparse(b) for b in node.bases)
        ):
            for item in node.body:
                if isinstance(
                    item, ast.FunctionDef | ast.AsyncFunctionDef
                ) and item.name.startswith("test"):
                    found(f"{node.name}.{item.name}")
    return names, list(dict.fromkeys(twice))


def parses(source: str) -> bool:
    """Whether `source` is Python that parses."""
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def parse_problem(source: str, filename: str) -> str | None:
    """One sentence if `source` does not parse, else None."""
    try:
        ast.parse(source)
    except SyntaxError as err:
        return f"{filename} does not parse: SyntaxError on line {err.lineno} ({err.msg})"
    return None


def run_test(calc: str, tests: str, module: str, name: str, timeout: float) -> str:
    """Run one test of `tests` (saved as `module`.py) against `calc` (saved as calc.py).

    Returns "PASS", "FAIL", or why it did not run. It runs in a fresh temporary directory that
    holds only the two files, in a Python process started with -I (no PYTHON* variables, no
    user site-packages) and an environment built from scratch (none of your variables, your
    API key included, reaches it), in its own process group, which is killed with whatever it
    started when the test ends or after `timeout` seconds. A result counts only when the
    harness prints it with a random token, which the process gets only after it imported the
    code under test: printed text cannot pass for a result. This protects you from mistakes
    and careless agents, not from a malicious one: the code still runs on your machine, as you.
    """
    token = secrets.token_hex()
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as out:
        # The output goes to a file, not a pipe: a child the code starts cannot hold it open.
        Path(tmp, "calc.py").write_text(calc)
        Path(tmp, f"{module}.py").write_text(tests)
        env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8"}  # nothing of yours
        imported, says_imported = os.pipe()  # the harness writes to it once the import is over
        command = [sys.executable, "-I", "-c", HARNESS, module, name, str(says_imported)]
        run = subprocess.Popen(  # noqa: S603 (a fixed command; the harness is ours)
            command,
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(says_imported,),
        )
        os.close(says_imported)
        try:
            # An import that ends the process (or hangs) never gets the token.
            ready = select.select([imported], [], [], timeout)[0] and os.read(imported, 8)
            sent = f"{token}\n".encode() if ready == b"imported" else None
            run.communicate(sent, timeout=max(0.0, deadline - time.monotonic()))
            problem = f"the test process ended early, exit status {run.returncode}"
        except subprocess.TimeoutExpired:
            problem = f"timed out after {timeout:g} s"
        finally:
            os.close(imported)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # the whole group: whatever the code started
        run.wait()
        out.seek(0)
        for line in out:
            words = line.split()
            if len(words) == 3 and words[0] == token and words[2] == name:
                return words[1]
    return problem


def run_tests(calc: str, tests: str, timeout: float, module: str = "test_calc") -> dict[str, str]:
    """Every test of `tests` against `calc`, each alone (see `run_test`): name -> result."""
    names, _ = find_tests(tests)
    return {name: run_test(calc, tests, module, name, timeout) for name in names}


# --- comparing the agent's code with the original -----------------------------------------------


def spans(source: str) -> dict[str, list[tuple[int, int]]]:
    """The first and last line (from 1) of every top-level def and class, decorators included,
    by name; every definition of a name, in order. Raises SyntaxError."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            found.setdefault(node.name, []).append((first, node.end_lineno))
    return found


def definitions(source: str) -> dict[str, list[str]]:
    """The source text of every top-level definition, by name (all of them, in order)."""
    lines = source.splitlines()
    return {
        name: ["\n".join(lines[first - 1 : last]) for first, last in places]
        for name, places in spans(source).items()
    }


def describe_changes(original: str, fixed: str) -> tuple[str, list[str] | None]:
    """The diff and every top-level definition compared, as text; and the names of the changed
    definitions (a second `def` that shadows the first counts), or None if `fixed` does not
    parse."""
    diff = difflib.unified_diff(
        original.splitlines(),
        fixed.splitlines(),
        "calc.py (original)",
        "calc.py (agent)",
        lineterm="",
    )
    text = plain(clip("\n".join(diff), lines=80))
    changed = changed_definitions(original, fixed)
    if changed is None:
        problem = parse_problem(fixed, "calc.py")
        return f"{text}\n\n{problem}, so nothing is claimed about its functions.", None
    rows = ["Top-level definitions, compared with the original:"]
    for name in dict.fromkeys([*definitions(original), *definitions(fixed)]):
        rows.append(f"  {name:<12} {'changed' if name in changed else 'unchanged'}")
    return f"{text}\n\n" + plain("\n".join(rows)), changed


def changed_definitions(original: str, fixed: str) -> list[str] | None:
    """The names whose top-level definitions differ (a second `def` that shadows the first
    counts), in the order of `fixed`, then those only the original has; None if `fixed` does
    not parse."""
    if not parses(fixed):
        return None
    old, new = definitions(original), definitions(fixed)
    return [name for name in dict.fromkeys([*new, *old]) if old.get(name) != new.get(name)]


def with_original(fixed: str, original: str, name: str) -> str:
    """`fixed` with the definition of `name` put back as it is in `original`: the agent's code
    with that one change undone. Every definition of `name` in `fixed` is replaced."""
    lines = fixed.splitlines()
    old = "\n\n\n".join(definitions(original)[name])
    places = spans(fixed)[name]
    for n in reversed(range(len(places))):
        first, last = places[n]
        lines[first - 1 : last] = [old] if n == 0 else []
    return "\n".join(lines) + "\n"


def single_bug_versions(original: str, fixed: str, changed: list[str]) -> dict[str, str]:
    """For each changed definition that both files have: the agent's code with only that one
    put back as it was (so it holds that one bug, if the change fixed one)."""
    if not parses(fixed):
        return {}
    both = spans(original).keys() & spans(fixed).keys()
    return {name: with_original(fixed, original, name) for name in changed if name in both}


def root_causes(after: dict[str, str], on_versions: dict[str, dict[str, str]]) -> list[str]:
    """The changes the fix needs: those whose single-bug version fails a test that passes on
    the fix (`after`). `on_versions` maps each change to its version's results."""
    return [
        name
        for name, results in on_versions.items()
        if any(result == "PASS" and results.get(test) != "PASS" for test, result in after.items())
    ]


# --- what the notebook prints -------------------------------------------------------------------


def shown(result: str | None) -> str:
    """A result as a table shows it."""
    return result if result in ("PASS", "FAIL") else "did not run"


def results_table(columns: dict[str, dict[str, str]]) -> str:
    """Tests down, runs across (each a label and its results): PASS, FAIL or did not run."""
    names = list(next(iter(columns.values())))
    rows = [["test", *columns]]
    rows += [[plain(n), *(shown(r.get(n)) for r in columns.values())] for n in names]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(len(row))) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def not_run(names: list[str], results: dict[str, str]) -> str:
    """`; did not run: a, b (why), c (why)` for the tests without a result, else ""."""
    reasons = {}
    for name in names:
        if results.get(name) not in ("PASS", "FAIL"):
            reasons.setdefault(results.get(name, "not run"), []).append(name)
    if not reasons:
        return ""
    return "; did not run: " + ", ".join(f"{', '.join(n)} ({why})" for why, n in reasons.items())


def results_line(label: str, results: dict[str, str]) -> str:
    """`Original tests: 4 of 6 pass; failing: a, b; did not run: c (timed out after 60 s)`."""
    names = list(results)
    failing = [n for n in names if results[n] == "FAIL"]
    line = f"{label}: {sum(r == 'PASS' for r in results.values())} of {len(names)} pass"
    if failing:
        line += f"; failing: {', '.join(failing)}"
    return line + not_run(names, results)


def fix_report(
    original: str, fixed: str, after: dict[str, str], roots: list[str], others: list[str]
) -> list[str]:
    """The report on the first turn's fix, one line each, ending with the verdict: the original
    tests on the agent's calc.py (`after`), its changed definitions, the changes the fix needs
    (`roots`), and the names of the other files the agent saved (`others`)."""
    changed = changed_definitions(original, fixed)
    lines = [results_line("Original tests", after)]
    if changed is None:
        lines.append(parse_problem(fixed, "calc.py"))
    else:
        lines.append(f"Functions changed: {', '.join(changed) or 'none'}")
        # mean() is the trap: it is correct, and fails only because it calls add() and divide().
        lines.append(f"mean(): {'changed' if 'mean' in changed else 'unchanged'}")
    if others:
        lines.append(f"Other files the agent saved: {plain(', '.join(others))}")
    ran = [r for r in after.values() if r in ("PASS", "FAIL")]
    failing = len(ran) - ran.count("PASS")
    if changed is None:
        verdict = "not fixed: the agent's calc.py does not parse."
    elif fixed == original:
        verdict = "nothing was fixed: the agent's calc.py is the original."
    elif len(ran) < len(after):
        verdict = (
            f"not verified: {len(after) - len(ran)} of {len(after)} original tests did not run."
        )
    elif failing:
        verdict = f"not fixed: {failing} of {len(after)} original tests still fail."
    elif "mean" in changed:
        verdict = "the tests pass, but mean() was changed although it was correct: review the diff."
    elif extra := [f"{name}()" for name in changed if name not in roots]:
        verdict = f"the tests pass, but the agent also changed {', '.join(extra)}: review the diff."
    else:
        verdict = (
            "fixed at the root: every original test passes and only the buggy functions changed."
        )
    return [*lines, f"Verdict: {verdict}"]


def regression_report(
    runs: dict[str, dict[str, str]], twice: list[str], roots: list[str]
) -> list[str]:
    """The report on the regression tests, one line each, ending with the verdict. `runs` holds
    the results on the original calc.py ("original"), on the fix ("fix") and on each root
    cause's single-bug version (keyed by its name); `twice` the names defined twice.

    A test catches a root cause when it passes on the fix and fails on that root cause's
    single-bug version; a test that did not run there catches nothing."""
    original = runs["original"]
    fix = runs["fix"]
    names = list(fix)
    lines = [f"Regression tests: {len(names)}"]
    lines += [f"{name} is defined twice; the last definition counts" for name in twice]
    blind = [n for n in names if original.get(n) == "PASS"]  # they pass on the buggy code
    caught = [n for n in names if original.get(n) == "FAIL"]
    line = f"Catch the original bugs: {len(caught)} of {len(names)}"
    lines.append(line + (f"; not: {', '.join(blind)}" if blind else "") + not_run(names, original))
    passing = [n for n in names if fix.get(n) == "PASS"]
    failing = [n for n in names if fix.get(n) == "FAIL"]
    line = f"Pass on the fix: {len(passing)} of {len(names)}"
    lines.append(
        line + (f"; failing: {', '.join(failing)}" if failing else "") + not_run(names, fix)
    )
    guards = {root: [n for n in passing if runs[root].get(n) == "FAIL"] for root in roots}
    if covered := [f"{root} ({', '.join(tests)})" for root, tests in guards.items() if tests]:
        lines.append(f"Root causes caught: {', '.join(covered)}")
    uncaught = [root for root, tests in guards.items() if not tests]
    if uncaught:
        why = [
            f"{root} ({not_run(names, runs[root])[2:]})" if not_run(names, runs[root]) else root
            for root in uncaught
        ]
        lines.append(f"Root causes not caught: {', '.join(why)}")
    if not names:
        verdict = "the file defines no test functions."
    elif len(passing) < len(names):
        verdict = f"not proven: {len(names) - len(passing)} of {len(names)} regression tests do not pass on the fix."
    elif uncaught:
        verdict = f"not every root cause is guarded: no test catches {', '.join(uncaught)}."
    elif not roots:
        verdict = (
            "there is no root cause to guard: no single change of the fix is needed by the tests."
        )
    else:
        verdict = (
            "every root cause is guarded by a test that fails without its fix and passes with it."
        )
    return [*lines, f"Verdict: {verdict}"]


# --- cleanup ------------------------------------------------------------------------------------

RUNNING = ("running", "rescheduling")
TAG_KEY = "anthropic_cookbook"  # the metadata key of what this cookbook creates


def wait_until_stopped(client, session_id: str, settle: float) -> str:
    """Poll the session (bounded by `settle` seconds) until it does not run; return its status."""
    deadline = time.monotonic() + settle
    status = client.beta.sessions.retrieve(session_id).status
    while status in RUNNING and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.beta.sessions.retrieve(session_id).status
    return status


def stop_if_running(client, session_id: str, settle: float, force: bool = False) -> None:
    """Wait up to `settle` seconds for the session to stop running; if it still runs (or if
    `force`), send a `user.interrupt` event, which stops the agent's work, and wait again."""
    if force or wait_until_stopped(client, session_id, settle) in RUNNING:
        client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])
        status = wait_until_stopped(client, session_id, settle)
        print(f"Sent user.interrupt to the session {session_id}; it is now {status}.")


def find_leftovers(client, tag: str) -> dict[str, list]:
    """What carries this cookbook's `tag` and is not archived yet, for a kernel that forgot what
    it created: by kind ("session", "environment", "agent"); {} if the search failed."""

    def tagged(resources):
        return [r for r in resources if (r.metadata or {}).get(TAG_KEY) == tag]

    try:
        agents = tagged(client.beta.agents.list(limit=100).data)
        environments = tagged(client.beta.environments.list(limit=100).data)
        sessions = [s for a in agents for s in client.beta.sessions.list(agent_id=a.id).data]
    except anthropic.APIError as err:
        print(f"Could not look for what this cookbook left behind: {sentence_for(err)}")
        return {}
    found = (
        f"{len(sessions)} session(s), {len(environments)} environment(s), {len(agents)} agent(s)"
    )
    print(
        "This kernel has created nothing (a restart forgets), so we looked for this cookbook's tag"
        f" among the first 100 agents and environments listed: not yet archived are {found}."
    )
    return {"session": sessions, "environment": environments, "agent": agents}
