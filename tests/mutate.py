"""`make mutate`'s first half: break the code on purpose, one curated mutation at a time, and check
the tests notice.

Each mutation is a small patch to the notebook's cells, the fake (tests/replay), the pytest
configuration or CI, described in words, with the tests that must catch it. (The helper module,
watch_and_verify.py, is broken by a real mutation tool instead: tests/mutation_score.py.) The working tree is
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
NOT_COPIED = (
    ".venv",
    ".venv-oldest",
    "mutants",
    "build",
    ".git",
    "__pycache__",
    "*.pyc",
    ".*_cache",
    ".ipynb_checkpoints",
)
WORKERS, RUN_LIMIT = 2, 300  # copies run side by side; seconds before a run counts as hung
PYTEST = ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-x")

NB, PYPROJECT, CI_RUN = "iterate_failing_tests.ipynb", "pyproject.toml", ".ci/run"
SERVER, LOOPBACK = "tests/replay/server.py", "tests/replay/loopback.py"
RECORDER, PLUGIN = "tests/replay/recorder.py", "tests/replay/plugin.py"
MAIN = "tests/replay/__main__.py"
RECORDING, REPLAY = "tests/test_recorder.py::", "tests/test_replay_server.py::"
NOTEBOOK, SUITE = "tests/test_notebook.py::", "tests/test_suite.py::"
STOP_REASON = 'ended = getattr(ev.stop_reason, "type", "unknown")'
LOOP = (
    "reconnecting(\n"
    "            client, session.id, stream, sent.data[0].id, view, STREAM_TIMEOUT, TURN_TIMEOUT\n"
    "        )"
)
ADDOPTS = 'addopts = "-p tests.replay.plugin --nbval --strict-markers"'


def scenario(name: str) -> str:
    return f"tests/test_scenarios.py::test_scenario[{name}]"


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
      "if is_credential_name(str(stored_key)):", "if False:",
      RECORDING + "test_json_fields_named_like_credentials_are_redacted"),
    M("recorder: request headers stored", RECORDER,
      '{"method": self.command, "path": unquote(url.path)}',
      '{"method": self.command, "path": unquote(url.path), "headers": dict(self.headers)}',
      RECORDING + "test_request_headers_are_not_stored"),
    M("recorder: every response header stored (no allowlist)", RECORDER,
      "return {name: headers[name] for name in kept if name in headers}",
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
      "and self._unsent_before(n) is None", "and True",
      REPLAY + "test_a_get_recorded_after_an_unsent_write_is_refused"),
    M("replay: unmatched request answered 500, not 400", SERVER,
      'send_api_error(400, "invalid_request_error", refusal)', 'send_api_error(500, "api_error", refusal)',
      REPLAY + "test_unmatched_request_is_one_readable_400_never_retried"),
    M("replay: refusals no longer say x-should-retry: false", LOOPBACK,
      '        self.send_header("x-should-retry", "false")\n', "",
      REPLAY + "test_unmatched_request_is_one_readable_400_never_retried"),
    M("loopback servers bind 0.0.0.0", LOOPBACK, '(("127.0.0.1", port), handler)',
      '(("0.0.0.0", port), handler)', REPLAY + "test_listens_on_loopback_only"),
    M("replay: order-free answers in strict mode too (make test would not be strict)", SERVER,
      "        if not self.interactive:\n            return None\n        with self._lock:\n            answer",
      "        with self._lock:\n            answer",
      REPLAY + "test_strict_mode_refuses_the_same_requests"),
    M("replay: make lab's replay strict (an interrupted reader's cleanup refused)", MAIN,
      "speed=_speed(args), interactive=True)", "speed=_speed(args), interactive=False)",
      REPLAY + "test_the_run_verb_is_interactive"),
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
    M("config: a marker deselects the scenario runs and nbval", PYPROJECT, ADDOPTS,
      'addopts = "-p tests.replay.plugin --nbval --strict-markers -m \'not slow\'"',
      SUITE + "test_the_config_collects_every_scenario_nbval_and_the_browser_test"),
    M("config: --ignore drops the scenario runs", PYPROJECT, ADDOPTS,
      'addopts = "-p tests.replay.plugin --nbval --strict-markers --ignore=tests/test_scenarios.py"',
      SUITE + "test_the_config_collects_every_scenario_nbval_and_the_browser_test"),
    M("CI: .ci/run without CI=true (a missing Chromium would skip the browser test)", CI_RUN,
      "export CI=true\n", "", SUITE + "test_ci_runs_every_check_with_ci_true"),
    M("make test does not check what ran", "Makefile", "\t$(PY) -m tests.ran build/test-results.xml\n",
      "", SUITE + "test_make_test_checks_what_ran"),
    # -- the helper's runner, as a whole (mutmut breaks it one expression at a time)
    M("helper: one test that runs out of time stops the tests after it (no per-test isolation)",
      "watch_and_verify.py",
      "    return {name: run_test(calc, tests, module, name, timeout) for name in names}",
      "    results = {}\n    for name in names:\n"
      "        results[name] = run_test(calc, tests, module, name, timeout)\n"
      "        if results[name].startswith('timed out'):\n"
      "            return {n: results.get(n, results[name]) for n in names}\n    return results",
      f"{scenario('infinite_loop')} {scenario('regression_hangs')}"),
    # -- the notebook: setup and the first turn
    M("notebook: no-key check removed", NB,
      "if not (client.api_key or client.auth_token or client.credentials):", "if False:",
      NOTEBOOK + "test_without_a_key_the_setup_cell_says_so_in_one_sentence"),
    M("notebook: the session's budget ignores COOKBOOK_BUDGET", NB,
      '"amount": str(round(BUDGET_USD * 100))', '"amount": "100"', scenario("budget_reached")),
    M("notebook: session.status_terminated does not end the turn", NB,
      '            if ev.type == "session.status_terminated":\n                ended = "terminated"\n                break\n',
      "", scenario("terminated")),
    M("notebook: every idle read as end_turn", NB, STOP_REASON, 'ended = "end_turn"',
      f"{scenario('refusal')} {scenario('budget_reached')}"),
    M("notebook: the stream read without the reconnecting iterator", NB, LOOP, "stream",
      scenario("dropped")),
    M("notebook: an interrupt of the kernel not caught (a traceback, not a note)", NB,
      'except KeyboardInterrupt:  # Kernel › Interrupt\n    ended = "stopped"',
      "except ZeroDivisionError:\n    pass",
      NOTEBOOK + "test_an_interrupt_while_a_turn_streams_is_one_note_and_a_transcript"),
    # -- the notebook: verification
    M("notebook: input copies not excluded from the outputs", NB,
      "[f for f in listed if f.id not in mounted and f.downloadable]",
      "[f for f in listed if f.downloadable]", scenario("input_copies")),
    M("notebook: the output listing not retried", NB,
      'wait = OUTPUT_WAIT if ended == "end_turn" else 0', "wait = 0", scenario("late_output")),
    M("notebook: every changed function taken for a root cause", NB,
      "roots = root_causes(after, {n: run_tests(v, TESTS, RUN_TIMEOUT) for n, v in versions.items()})",
      "roots = list(versions)", scenario("extra_change")),
    M("notebook: the regression tests not run on the single-bug versions", NB,
      '    calcs = {"original": ORIGINAL, "fix": fixed} | {n: versions[n] for n in roots}',
      '    calcs = {"original": ORIGINAL, "fix": fixed} | {n: fixed for n in roots}',
      scenario("regression_one_cause")),
    # -- the notebook: cleanup
    M("notebook: cleanup archives a running session without interrupting it", NB,
      '            if kind == "session":\n                stop_if_running(client, resource.id, SETTLE)\n', "",
      scenario("endless")),
    M("notebook: a refused archive is not retried after an interrupt", NB,
      "                stop_if_running(client, resource.id, SETTLE, force=True)\n                archive(resource.id)",
      "                raise", scenario("archive_refused")),
    M("notebook: cleanup does not look for tagged leftovers after a restart", NB,
      "(mine or find_leftovers(client, TAG))", "(mine or {})", scenario("restart")),
    M("notebook: a resource remembered as archived before its archive succeeded", NB,
      '        try:\n            if kind == "session":',
      '        archived.add(resource.id)\n        try:\n            if kind == "session":',
      NOTEBOOK + "test_a_failed_archive_is_tried_again_when_the_cleanup_runs_again"),
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
