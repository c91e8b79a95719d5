"""`make mutate`: break the code on purpose, one curated mutation at a time, and check the tests notice.

Each mutation is a small patch to the notebook, session_view.py, tests/replay or the pytest
configuration, described in words, with the tests that must catch it. The working tree is
copied once per worker (two run side by side); each mutation is applied in a copy, its tests
run there (`pytest -x`), and the file is put back. First the chosen tests run unmutated: a
catch means nothing if the test fails anyway. Prints mutation | caught by | seconds and exits
1 if a mutation survived (or its tests could not run). Slow, so not part of `make test`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
NOT_COPIED = (".venv", "build", ".git", "__pycache__", "*.pyc", ".*_cache", ".ipynb_checkpoints")
WORKERS, RUN_LIMIT = 2, 300  # copies run side by side; seconds before a run counts as hung
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-x")

NB, VIEW, PYPROJECT = "iterate_failing_tests.ipynb", "session_view.py", "pyproject.toml"
SERVER, LOOPBACK = "tests/replay/server.py", "tests/replay/loopback.py"
RECORDER, PLUGIN = "tests/replay/recorder.py", "tests/replay/plugin.py"
LIVE, RECORDING = "tests/test_live_view.py::", "tests/test_recorder.py::"
REPLAY, NOTEBOOK = "tests/test_replay_server.py::", "tests/test_notebook.py::"
STOP_REASON = 'return getattr(ev.stop_reason, "type", None) or "unknown"'


def scenario(name: str) -> str:
    return f"tests/test_scenarios.py::test_scenario[{name}]"


def misread(reason: str, wrong: str) -> str:
    """turn_end()'s last line, reading one stop reason as another."""
    return f'return {{"{reason}": "{wrong}"}}.get(r := getattr(ev.stop_reason, "type", None), r) or "unknown"'


@dataclass(frozen=True)
class Mutation:
    name: str  # what is broken, in words
    path: str  # the file it patches
    old: str  # exact text, found exactly once (in the notebook: in its code cells)
    new: str
    tests: str  # pytest node ids (space-separated) that must catch it, the fastest first
    also: tuple[tuple[str, str, str], ...] = ()  # further (path, old, new) edits, if it needs any


M = Mutation
MUTATIONS = [
    # -- the recorder's credential scrubbing, one mechanism at a time
    M("recorder: credential header values not collected as secrets", RECORDER,
      "secrets = sorted(self._secrets, key=len, reverse=True)", "secrets = []",
      RECORDING + "test_the_key_is_scrubbed_wherever_the_upstream_echoes_it"),
    M("recorder: JSON fields named like credentials kept", RECORDER,
      "if str(key).lower() in CREDENTIAL_FIELDS and", "if str(key).lower() in () and",
      RECORDING + "test_json_fields_named_like_credentials_are_redacted"),
    M("recorder: request headers stored", RECORDER,
      '{"method": self.command, "path": unquote(url.path)}',
      '{"method": self.command, "path": unquote(url.path), "headers": dict(self.headers)}',
      RECORDING + "test_request_headers_are_not_stored"),
    M("recorder: every response header stored (no allowlist)", RECORDER,
      "return {name: headers[name] for name in STORED_RESPONSE_HEADERS if name in headers}",
      "return dict(headers)", RECORDING + "test_only_allowlisted_response_headers_are_stored"),
    # -- the replay server
    M("replay: SSE frames buffered, never flushed (writer buffered, write_chunk no flush)",
      LOOPBACK, "    disable_nagle_algorithm = True", "    disable_nagle_algorithm, wbufsize = True, 1 << 16",
      REPLAY + "test_recorded_pace_is_reproduced", also=((LOOPBACK, "        self.wfile.flush()\n", ""),)),
    M("replay: SSE headers and frames never flushed (stream-then-send deadlock: fail, not hang)",
      LOOPBACK, "    disable_nagle_algorithm = True", "    disable_nagle_algorithm, wbufsize = True, 1 << 16",
      REPLAY + "test_a_stream_of_an_old_take_ends_when_a_new_take_starts",
      also=((LOOPBACK, "        self.wfile.flush()\n", ""),
            (SERVER, "        self.wfile.flush()  # headers at once", "        pass  # headers buffered"))),
    M("replay: takes removed (a new agents.create does not restart the story)", SERVER,
      'if n is None and 1 in same and key["method"] not in READS:', "if n is None and 1 in same and False:",
      REPLAY + "test_a_second_take_replays_the_whole_flow"),
    M("replay: causal order removed (reads may run ahead of an unsent write)", SERVER,
      "return n not in self.take.played and self._unsent_before(n) is None",
      "return n not in self.take.played", REPLAY + "test_a_get_recorded_after_an_unsent_write_is_refused"),
    M("replay: unmatched request answered 500, not 400", SERVER,
      'send_api_error(400, "invalid_request_error", refusal)', 'send_api_error(500, "api_error", refusal)',
      REPLAY + "test_unmatched_request_is_one_readable_400_never_retried"),
    M("replay: refusals no longer say x-should-retry: false", LOOPBACK,
      '        self.send_header("x-should-retry", "false")\n', "",
      REPLAY + "test_unmatched_request_is_one_readable_400_never_retried"),
    M("loopback servers bind 0.0.0.0", LOOPBACK, '(("127.0.0.1", port), handler)',
      '(("0.0.0.0", port), handler)', REPLAY + "test_listens_on_loopback_only"),
    # -- the test run itself
    M("nbval lax (--nbval-lax)", PYPROJECT, "--nbval --strict", "--nbval-lax --strict",
      NOTEBOOK + "test_nbval_fails_when_the_recording_differs_or_is_not_all_played"),
    M("plugin: unplayed or refused exchanges do not fail the run", PLUGIN,
      "session.exitstatus = pytest.ExitCode.TESTS_FAILED", "pass",
      NOTEBOOK + "test_an_unplayed_exchange_alone_fails_the_nbval_run"),
    M("plugin: what was never played is not reported", PLUGIN,
      "if problems := fake.problems():", "if problems := None:",
      NOTEBOOK + "test_nbval_fails_when_the_recording_differs_or_is_not_all_played"),
    M("no pytest-timeout limit (a hang stalls CI)", PYPROJECT, "timeout = 120", "timeout = 0",
      "tests/test_hangs.py::test_this_run_has_a_timeout"),
    # -- the notebook: setup and the clean, bounded test runner
    M("notebook: no-key check removed", NB,
      "if not (client.api_key or client.auth_token or client.credentials):", "if False:",
      NOTEBOOK + "test_without_a_key_the_setup_cell_says_so_in_one_sentence"),
    M("notebook: the agent's code gets the reader's environment", NB,
      'env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8"}', "env = dict(os.environ)",
      scenario("reads_env")),
    M("notebook: results trusted from printed text (no random token)", NB,
      "if len(words) == 3 and words[0] == token and words[2] in names:\n"
      "            results.setdefault(words[2], words[1])",
      "if len(words) >= 2 and words[-1] in names:\n"
      "            results.setdefault(words[-1], words[-2])", scenario("spoofing")),
    M("notebook: only the test process killed, not its group", NB,
      "os.killpg(run.pid, signal.SIGKILL)", "run.kill()", scenario("background_child")),
    M("notebook: test run not bounded in time", NB,
      'run.communicate(f"{token}\\n".encode(), timeout=RUN_TIMEOUT)',
      'run.communicate(f"{token}\\n".encode())', scenario("infinite_loop")),
    # -- the notebook: following a turn
    M("notebook: session.status_terminated does not end the turn", NB,
      '    if ev.type == "session.status_terminated":\n        return "terminated"\n', "",
      scenario("terminated")),
    M("notebook: end_turn read as refusal", NB, STOP_REASON, misread("end_turn", "refusal"),
      scenario("error_retrying")),
    M("notebook: requires_action read as refusal", NB, STOP_REASON,
      misread("requires_action", "refusal"), scenario("requires_action")),
    M("notebook: retries_exhausted read as budget_reached", NB, STOP_REASON,
      misread("retries_exhausted", "budget_reached"), scenario("retries_exhausted")),
    M("notebook: budget_reached read as refusal", NB, STOP_REASON,
      misread("budget_reached", "refusal"), scenario("budget_reached")),
    M("notebook: refusal read as retries_exhausted", NB, STOP_REASON,
      misread("refusal", "retries_exhausted"), scenario("refusal")),
    M("notebook: terminated read as end_turn", NB, 'return "terminated"', 'return "end_turn"',
      scenario("terminated")),
    M("notebook: reconnect does not reopen the stream", NB,
      "current[0], ended = reconnect(sent_id, view, attempt)",
      "_, ended = reconnect(sent_id, view, attempt)", scenario("dropped")),
    M("notebook: turn deadline watchdog never started (endless heartbeats)", NB,
      "    watchdog.start()\n", "", scenario("endless")),
    # -- the notebook: verification
    M("notebook: only the first definition of a name compared", NB,
      'found.setdefault(node.name, []).append("\\n".join(lines[start - 1 : node.end_lineno]))',
      'found.setdefault(node.name, ["\\n".join(lines[start - 1 : node.end_lineno])])',
      scenario("shadowed_mean")),
    M('notebook: "mean(): changed" never said', NB,
      "report.append(f\"mean(): {'changed' if 'mean' in changed else 'unchanged'}\")",
      'report.append("mean(): unchanged")', scenario("shadowed_mean")),
    M("notebook: CRLF not normalised", NB, 'return text.replace("\\r\\n", "\\n").replace("\\r", "\\n")',
      "return text", "tests/test_scenarios.py::test_a_crlf_copy_of_the_original_is_reported_as_the_original"),
    M("notebook: input copies not excluded from the outputs", NB,
      "[f for f in listed if f.id not in mounted and f.downloadable]",
      "[f for f in listed if f.downloadable]",
      scenario("input_copies")),
    M("notebook: the output listing not retried", NB, "if found or waited >= patience:", "if True:",
      scenario("late_output")),
    # -- the notebook: cleanup
    M("notebook: cleanup archives a running session without interrupting it", NB,
      '    if kind == "session" and wait_for_stop(resource_id) in ("running", "rescheduling"):\n'
      "        stop(resource_id)\n", "", scenario("endless")),
    M("notebook: stop() sends no user.interrupt", NB,
      'client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])', "pass",
      scenario("archive_refused")),
    M("notebook: cleanup does not look for tagged leftovers after a restart", NB,
      "created = created or tagged_leftovers()", "created = created or {}", scenario("restart")),
    # -- session_view.py: escaping, clipping, bounds, the live view
    M("view: terminal escapes kept (ESCAPES not applied)", VIEW, 're.sub(ESCAPES, "", text).encode(',
      "text.encode(", LIVE + "test_unknown_types_are_shown_generically_and_no_tag_forms_anywhere"),
    M("view: surrogate pairs split across deltas not joined", VIEW,
      '.encode("utf-16", "surrogatepass").decode("utf-16", "ignore")', "",
      LIVE + "test_a_character_split_inside_its_surrogate_pair_is_shown_whole_and_never_half"),
    M("view: plain() lets tags form", VIEW, 'return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)',
      "return text", LIVE + "test_clip_and_plain"),
    M("view: cards not HTML-escaped", VIEW, 'body = html.escape(text).replace("=", "&#61;")',
      "body = text", LIVE + "test_unknown_types_are_shown_generically_and_no_tag_forms_anywhere"),
    M('view: "=" left in cards (attributes can form)', VIEW, '.replace("=", "&#61;")', "",
      LIVE + "test_unknown_types_are_shown_generically_and_no_tag_forms_anywhere"),
    M("view: long lines not cut", VIEW, "cut = [(row[:chars], len(row) - chars) for row in",
      "cut = [(row, 0) for row in", LIVE + "test_clip_and_plain"),
    M("view: long output not cut to its first lines", VIEW, 'return "\\n".join(rows[:lines] + more)',
      'return "\\n".join(rows)', LIVE + "test_clip_and_plain"),
    M("view: tool results not clipped", VIEW, "self._entry(label + tag, clip(text_of(ev.content)))",
      "self._entry(label + tag, text_of(ev.content))", scenario("hostile")),
    M("view: messages not bounded (lines and characters)", VIEW,
      "clip(text, *PROSE) if prose else text", "clip(text, 10**9, 10**9) if prose else text",
      LIVE + "test_a_long_agent_message_is_cut_to_the_message_bound"),
    M("view: printed transcript not bounded to ENTRIES", VIEW, "if len(entries) > ENTRIES:",
      "if False:", LIVE + "test_the_live_view_keeps_a_bounded_number_of_cards_and_counts_the_rest"),
    M("view: live cards not bounded to CARDS", VIEW, "sorted(self.cards)[:-CARDS]", "sorted(self.cards)[:0]",
      LIVE + "test_the_live_view_keeps_a_bounded_number_of_cards_and_counts_the_rest"),
    M("view: previews not coalesced (every delta sent to the browser)", VIEW,
      "if not force and self.clock() - self.flushed < 0.1:", "if False:",
      LIVE + "test_previews_are_sent_to_the_browser_at_most_ten_times_a_second"),
    M("view: a failed request's preview stays in the transcript", VIEW,
      "            self.entries[index] = None\n", "",
      LIVE + "test_a_preview_whose_request_fails_is_never_printed_and_is_marked_in_the_live_view"),
    M("view: events not deduplicated by id (a reconnect shows them twice)", VIEW,
      'if (event_id := getattr(ev, "id", None)) in self.seen:',
      'if (event_id := getattr(ev, "id", None)) in ():',
      LIVE + "test_an_event_seen_twice_is_shown_once_and_an_orphan_delta_is_ignored "
      + scenario("dropped")),
    M("view: requires_action does not name the waiting tool", VIEW, 'if ended == "requires_action" and',
      'if ended == "requires_actions" and', LIVE + "test_requires_action_names_the_waiting_tool"),
]  # fmt: skip


def mutated(path: Path, text: str, old: str, new: str, name: str) -> str:
    """`text` (the file at `path`) with `old` replaced by `new`; `old` must occur exactly once."""
    if path.suffix != ".ipynb":
        if (found := text.count(old)) == 1:
            return text.replace(old, new)
    else:  # the notebook is JSON: edit the source of the code cell that holds `old`
        nb = nbformat.reads(text, as_version=4)
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        if (found := sum(c.source.count(old) for c in cells)) == 1:
            cells[0].source = cells[0].source.replace(old, new)
            return nbformat.writes(nb)
    raise SystemExit(f"stale mutation {name!r}: {old!r} occurs {found} times in {path.name}")


def apply(root: Path, m: Mutation) -> dict[Path, str]:
    """Apply every edit of `m` in the copy at `root`; return the original texts, to put back."""
    originals: dict[Path, str] = {}
    for path, old, new in [(m.path, m.old, m.new), *m.also]:
        file = root / path
        originals.setdefault(file, file.read_text(encoding="utf-8"))
        file.write_text(mutated(file, file.read_text(encoding="utf-8"), old, new, m.name), "utf-8")
    return originals


def restore(originals: dict[Path, str]) -> None:
    for file, text in originals.items():
        file.write_text(text, encoding="utf-8")


def pytest(root: Path, tests: str, *options: str) -> tuple[str | None, float]:
    """Run `tests` in the copy at `root`: None if all pass, else the first failing test's id
    (or why the run gave no verdict), and the seconds it took."""
    drop = ("ANTHROPIC_", "REPLAY_", "COOKBOOK_", "PYTEST_")  # a key or a cassette of the caller's
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["TMPDIR"] = str(root.with_name(f"{root.name}-tmp"))  # what the run starts works there
    python = str(PYTHON if PYTHON.exists() else sys.executable)
    command = [python, *PYTEST, *options, *tests.split()]
    started, out = time.monotonic(), None
    run = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = run.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)  # kernels and servers the run left behind
        run.wait()
        end_strays(root, Path(env["TMPDIR"]))
    took = time.monotonic() - started
    if out is None:
        return f"HUNG (no verdict after {RUN_LIMIT} s)", took
    if run.returncode == 0:
        return None, took
    if run.returncode == 1 and (failed := re.search(r"^(?:FAILED|ERROR) (\S+)", out, re.M)):
        return failed[1], took
    return f"BROKEN (pytest exit {run.returncode}): {out.strip().splitlines()[-1:]}", took


def end_strays(*places: Path) -> None:
    """Kill what a finished run left working in its copy or its TMPDIR (only our runs work
    there), such as the `sleep 75` that the group-kill mutation leaves in a deleted temp dir."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cwd = os.readlink(proc / "cwd")
            if any(cwd == str(p) or cwd.startswith(f"{p}/") for p in places):
                os.kill(int(proc.name), signal.SIGKILL)


def main(only: list[str]) -> int:
    """Run the mutations whose names contain one of `only` (all of them if none is given)."""
    started = time.monotonic()
    chosen = [m for m in MUTATIONS if not only or any(word in m.name for word in only)]
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for n in range(WORKERS):
            root = Path(tmp, f"tree{n}")
            shutil.copytree(REPO, root, ignore=shutil.ignore_patterns(*NOT_COPIED))
            Path(tmp, f"tree{n}-tmp").mkdir()
            copies.put(root)
        root = Path(tmp, "tree0")
        for m in MUTATIONS:  # a stale mutation stops everything before any test runs
            restore(apply(root, m))
        selected = " ".join(dict.fromkeys(t for m in chosen for t in m.tests.split()))
        failing, took = pytest(root, selected, "-n", str(WORKERS))
        print(f"The chosen tests, unmutated: {failing or 'all pass'} ({took:.0f} s)", flush=True)
        if failing:
            return 1

        def run(m: Mutation) -> tuple[str | None, float]:
            root = copies.get()
            originals = apply(root, m)
            try:
                return pytest(root, m.tests)
            finally:
                restore(originals)
                copies.put(root)

        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(run, chosen))
    rows = [(m.name, caught or "SURVIVED", f"{took:.1f}") for m, (caught, took) in zip(chosen, results, strict=True)]  # fmt: skip
    print()
    print_table([("mutation", "caught by", "seconds"), *rows])
    missed = [name for name, caught, _ in rows if not caught.startswith("tests/")]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} mutations caught", end="")
    print(f"; total {time.monotonic() - started:.0f} s")
    print("".join(f"NOT CAUGHT: {name}\n" for name in missed), end="")
    return 1 if missed else 0


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    for row in [rows[0], tuple("-" * w for w in widths), *rows[1:]]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
