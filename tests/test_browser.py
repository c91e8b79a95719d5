"""A person in JupyterLab (Chromium, driven by Playwright) against the replay of the recorded
session, as `make lab` serves it:

3. Run › Run All Cells, then Kernel › Interrupt Kernel mid-turn: the streaming cell says you
   stopped watching, with no traceback wall; Run All goes on, and the cleanup cell interrupts
   the session still running and archives the session, the environment and the agent, nothing
   refused (`make lab`'s replay answers what does not depend on the story's order).
4. Kernel › Restart Kernel and Run All Cells: the whole story replays (a new take); the live
   view appears and grows, each turn ends in a static transcript, the verification report and
   the cleanup lines appear, no cell shows an error.
5. File › Save Notebook: the saved notebook equals the committed one (the launcher's
   pre-save hook drops what only a live lab has: widget views, the running kernel's name).
6. Then, in the same browser, a plain `jupyter lab` (started with the other) in a reader's
   environment (no key, empty HOME): Shift+Enter through the setup cells says "No API key ..."
   in one sentence, not a traceback.

The interrupted run comes first so that the saved notebook is that of a complete run (a person
saves after a run that worked), and so that Restart and Run All is proven after an interrupted
turn, on a second take of the story (one more full run would prove little and cost ~8 s).
Every step is checked even when an earlier one failed; the failure lists each failed step with
the cell it concerns and a screenshot under build/browser/.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.browser import (
    JUPYTER,
    NOTEBOOK,
    PYTHON,
    SCREENSHOTS,
    WIDGET_MIME,
    Failed,
    LabServer,
    Notebook,
    copy_repository,
    launch_chromium,
    reader_env,
    settings_dir,
)

# Fast enough for the suite, slow enough that the live view visibly grows between polls and that
# an interrupt sent through the menu on a loaded machine still lands mid-turn (turn 1: ~2.7 s).
REPLAY_SPEED = "20"
VIEWPORT = {"width": 1280, "height": 900}
REPORT = re.compile(r"Original tests: 6 of 6 pass")
CLEANUP = "Archived the session"
STOPPED = "You stopped watching"
# A static transcript entry of the agent: `[Agent] text` printed, or an `Agent` label in HTML.
TRANSCRIPT_AGENT = re.compile(r"^(\[Agent\]|Agent$)", re.M)
NUMBERED = re.compile(r"^\[\d+\]:$")
MISSING_BROWSER = (
    "Chromium not found: install it (apt-get install chromium) to run the browser test."
)


def require_chromium() -> None:
    if shutil.which("chromium"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{MISSING_BROWSER} (CI=true: a missing browser fails the run.)")
    pytest.skip(MISSING_BROWSER)


class Steps:
    """Each step runs, and a failed one is recorded with a screenshot; the test fails at the end
    with all of them, so one missing piece does not hide the state of the others."""

    def __init__(self, clock: float):
        self.clock = clock  # the test's start
        self.failures: list[str] = []
        self.timings: list[tuple[str, float, float, str]] = []

    @contextmanager
    def step(self, name: str, notebook: Notebook | None = None):
        """`with steps.step(name, nb) as where:` set `where["cell"]` (and `where["notebook"]`)
        to say which cell a screenshot should show."""
        from playwright.sync_api import Error as PlaywrightError

        where: dict = {"notebook": notebook, "cell": None, "note": ""}
        start = time.monotonic()
        try:
            yield where
        except (AssertionError, PlaywrightError) as err:
            nb = where["notebook"]
            slug = re.sub(r"\W+", "-", name).strip("-")
            shot = f"\n  (screenshot: {nb.screenshot(slug, where['cell'])})" if nb else ""
            self.failures.append(f"STEP {name}: {err}{shot}")
        finally:
            self.timings.append((name, start - self.clock, time.monotonic() - start, where["note"]))

    def report(self) -> str:
        return "\n".join(
            f"  {name}: {took:.1f} s (from {at:.1f} s){note and '; ' + note}"
            for name, at, took, note in sorted(self.timings, key=lambda t: t[1])
        )


def check_complete_run(nb: Notebook, cells: list[dict], entries: list[int]) -> None:
    """What a person sees after a Run All that worked."""
    not_run = [i for i in nb.code if not NUMBERED.match(cells[i]["prompt"])]
    if not_run:
        raise Failed(
            f"{len(not_run)} code cells did not run (prompts "
            f"{', '.join(cells[i]['prompt'] or '[ ]' for i in not_run[:5])}).\n"
            f"{nb.first_error() or nb.describe(not_run[0])}"
        )
    if error := nb.first_error():
        raise Failed(f"A cell shows an error or stderr output:\n{error}")
    counts = sorted({n for n in entries if n > 0})
    live = nb.live_cells(cells)
    if len(counts) < 3:
        raise Failed(
            f"The live view did not visibly grow: over {len(entries)} polls it showed "
            f"{counts or 'no'} entries (at least 3 different counts expected).\n"
            + "\n".join(nb.describe(i) for i in live)
        )
    for i in live:
        if not TRANSCRIPT_AGENT.search(nb.text(i, widgets=False)):
            raise Failed(f"The turn ended without a printed transcript:\n{nb.describe(i)}")
    shown = nb.all_text()
    if not REPORT.search(shown):
        raise Failed(
            f"The verification report does not say the 6 original tests pass ({REPORT.pattern}):\n"
            + "\n".join(
                nb.describe(i) for i in nb.code if "run_tests(" in nb.sources[i] and nb.outputs(i)
            )
        )
    if CLEANUP not in shown:
        raise Failed(f"The cleanup did not say {CLEANUP!r}:\n{nb.describe(nb.code[-1])}")


def run_all(nb: Notebook) -> str:
    """Kernel › Restart Kernel and Run All Cells, and what a person sees when it is done."""
    nb.before_run()
    nb.menu("Kernel", "Restart Kernel and Run All Cells.*")
    nb.accept_dialog()
    cells, entries, _ = nb.wait_run()
    check_complete_run(nb, cells, entries)
    return f"live view entry counts seen: {sorted({n for n in entries if n > 0})}"


def interrupt_mid_turn(nb: Notebook) -> str:
    start = time.monotonic()
    nb.before_run()
    nb.menu("Run", "Run All Cells")
    _, _, cell = nb.wait_run(watch=3)
    seen = time.monotonic() - start
    if cell is None:
        raise Failed(
            "The run ended before a streaming cell showed 3 entries, so there was nothing to "
            f"interrupt.\n{nb.first_error() or nb.describe((nb.live_cells() or nb.code)[0])}"
        )
    nb.menu("Kernel", "Interrupt Kernel")
    interrupted = time.monotonic()
    deadline = interrupted + 15
    while nb.progress()[cell]["prompt"] == "[*]:":
        if time.monotonic() > deadline:
            raise Failed(
                f"The cell was still running 15 s after the interrupt:\n{nb.describe(cell)}"
            )
        time.sleep(0.1)
    note = (
        f"3 entries {seen:.1f} s after Run All; the cell ended "
        f"{time.monotonic() - interrupted:.1f} s after the interrupt"
    )
    walls = [e for e in nb.errors(cell) if len(e.splitlines()) > 3]
    if walls:
        raise Failed(
            f"({note}) After Interrupt Kernel the streaming cell shows a traceback of "
            f"{len(walls[0].splitlines())} lines:\n{nb.describe(cell)}"
        )
    if STOPPED not in nb.text(cell):
        raise Failed(f"After Interrupt Kernel no sentence says {STOPPED!r}:\n{nb.describe(cell)}")
    return note + "; " + rest_of_the_run(nb)


def rest_of_the_run(nb: Notebook) -> str:
    """Run All goes on after the interrupted cell: the interactive replay answers what does not
    depend on the story's order, so the cleanup interrupts the session that still runs and
    archives it, the environment and the agent, and nothing is refused."""
    cleanup = nb.code[-1]
    start = time.monotonic()
    deadline = start + 60
    while nb.progress()[cleanup]["prompt"] in ("[*]:", "[ ]:", "") or any(
        c["prompt"] == "[*]:" for c in nb.progress()
    ):
        if time.monotonic() > deadline:
            raise Failed(
                f"The cleanup had not run 60 s after the interrupt:\n{nb.describe(cleanup)}"
            )
        time.sleep(0.2)
    shown = nb.text(cleanup)
    archived = [line for line in shown.splitlines() if line.startswith("Archived the ")]
    if [line.split()[2] for line in archived] != ["session", "environment", "agent"]:
        raise Failed(
            "After the interrupt, the cleanup should archive the session, the environment and "
            f"the agent, one sentence each:\n{nb.describe(cleanup)}"
        )
    if "Sent user.interrupt to the session" not in shown:
        raise Failed(f"The cleanup did not interrupt the running session:\n{nb.describe(cleanup)}")
    if "The replay" in nb.all_text():
        refused = next(i for i in nb.code if "The replay" in nb.text(i))
        raise Failed(
            f"A cell was refused by the replay after the interrupt:\n{nb.describe(refused)}"
        )
    return f"the cleanup ran {time.monotonic() - start:.1f} s later"


def no_key_sentence(plain: Notebook) -> None:
    """Shift+Enter through the setup, from the first code cell to the one that creates the
    client (`Anthropic(`), as a reader without a key would."""
    client_cell = next((i for i in plain.code if "Anthropic(" in plain.sources[i]), plain.code[0])
    setup = [i for i in plain.code if i <= client_cell]
    for i in setup:
        plain.run_cell(i)
        deadline = time.monotonic() + 20
        while not NUMBERED.match(plain.progress()[i]["prompt"]):
            if time.monotonic() > deadline:
                raise Failed(f"A setup cell did not finish within 20 s:\n{plain.describe(i)}")
            time.sleep(0.1)
    deadline = time.monotonic() + 2  # outputs arrive just before the prompt's number
    while not plain.outputs(client_cell) and time.monotonic() < deadline:
        time.sleep(0.1)
    shown = "\n".join(plain.text(i) for i in setup)
    if shown.count("No API key") != 1 or not re.search(r"(^|: )No API key", shown, re.M):
        raise Failed(
            "Without a key the setup should say one sentence starting with 'No API key':\n"
            + "\n".join(plain.describe(i) for i in setup if plain.outputs(i) or i == client_cell)
        )
    for i in setup:
        if walls := [e for e in plain.errors(i) if len(e.splitlines()) > 3]:
            raise Failed(
                f"Without a key the setup shows a traceback of {len(walls[0].splitlines())} "
                f"lines:\n{plain.describe(i)}"
            )


def save_keeps_the_notebook(nb: Notebook, path: Path, committed: bytes) -> None:
    before = path.stat().st_mtime_ns
    nb.menu("File", "Save Notebook")
    nb.page.wait_for_function(
        "() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')",
        timeout=10_000,
        polling=100,
    )
    deadline = time.monotonic() + 10
    while path.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise Failed("File › Save Notebook did not write the notebook within 10 s.")
        time.sleep(0.1)
    saved = path.read_bytes()
    if saved != committed:
        raise Failed(
            "Saving after a run changed the notebook, though the person changed nothing:\n"
            + notebook_changes(committed, saved)
        )


def notebook_changes(old: bytes, new: bytes, limit: int = 12) -> str:
    """Like `git diff --stat`, then what changed, cell by cell, in a person's words."""
    diff = list(difflib.unified_diff(old.decode().splitlines(), new.decode().splitlines(), n=0))
    added = sum(1 for line in diff if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff if line.startswith("-") and not line.startswith("---"))
    stat = f"{'+' * min(added, 30)}{'-' * min(removed, 30)}"
    lines = [f"  {NOTEBOOK} | {added + removed} {stat} ({added} lines added, {removed} removed)"]
    if WIDGET_MIME in new.decode() and WIDGET_MIME not in old.decode():
        lines.append(f"  the saved notebook holds widget views ({WIDGET_MIME})")
    before, after = json.loads(old), json.loads(new)
    for key in sorted({*before["metadata"], *after["metadata"]}):
        was, now = before["metadata"].get(key), after["metadata"].get(key)
        if was != now:
            lines.append(f"  metadata.{key}: {json.dumps(was)[:70]} -> {json.dumps(now)[:70]}")
    if len(before["cells"]) != len(after["cells"]):
        lines.append(f"  {len(before['cells'])} cells -> {len(after['cells'])} cells")
    for n, (x, y) in enumerate(zip(before["cells"], after["cells"], strict=False), 1):
        what = []
        if x.get("source") != y.get("source"):
            what.append("source")
        if x.get("metadata") != y.get("metadata"):
            what.append(
                f"metadata {json.dumps(x.get('metadata'))} -> {json.dumps(y.get('metadata'))}"
            )
        if x.get("execution_count") != y.get("execution_count"):
            what.append(f"execution count {x.get('execution_count')} -> {y.get('execution_count')}")
        if x.get("outputs") != y.get("outputs"):
            kinds = [
                [o.get("name") or "+".join(o.get("data", {})) or o["output_type"] for o in c]
                for c in (x.get("outputs", []), y.get("outputs", []))
            ]
            what.append(
                f"outputs {kinds[0]} -> {kinds[1]}" if kinds[0] != kinds[1] else "output text"
            )
        if what:
            source = y.get("source") or ""
            head = ("".join(source) if isinstance(source, list) else source).split("\n", 1)[0][:40]
            lines.append(f"  cell {n} ({head}): {'; '.join(what)}")
    more = [f"  … {len(lines) - limit - 1} more"] if len(lines) > limit + 1 else []
    return "\n".join(lines[: limit + 1] + more)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_person_runs_the_notebook_in_jupyterlab(tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    shutil.rmtree(SCREENSHOTS, ignore_errors=True)  # only this run's failures
    clock = time.monotonic()
    steps = Steps(clock)
    replay_copy, plain_copy = tmp_path / "replay", tmp_path / "plain"
    copy_repository(replay_copy)
    copy_repository(plain_copy)
    committed = (replay_copy / NOTEBOOK).read_bytes()
    settings = settings_dir(tmp_path / "settings")
    (tmp_path / "home-replay").mkdir()
    (tmp_path / "home-plain").mkdir()
    launcher = [PYTHON, "-m", "tests.lab"]  # what `make lab` runs
    lab = LabServer(
        "replay",
        replay_copy,
        launcher,
        reader_env(tmp_path / "home-replay", settings, REPLAY_SPEED=REPLAY_SPEED),
        tmp_path / "lab-replay.log",
    )
    plain_lab = LabServer(
        "plain",
        plain_copy,
        [JUPYTER, "lab"],
        reader_env(tmp_path / "home-plain", settings),
        tmp_path / "lab-plain.log",
    )
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            nb = Notebook(browser.new_page(viewport=VIEWPORT), lab, replay_copy / NOTEBOOK)
            with steps.step("1-2 start the lab, open the notebook, kernel idle", nb):
                lab.wait_ready()
                nb.goto()
                nb.wait_ready()
            if not steps.failures:
                with steps.step("3 Run All, Interrupt mid-turn", nb) as where:
                    where["note"] = interrupt_mid_turn(nb)
                with steps.step("4 Restart Kernel and Run All", nb) as where:
                    where["note"] = run_all(nb)
                with steps.step("5 Save: the notebook stays as committed", nb):
                    save_keeps_the_notebook(nb, replay_copy / NOTEBOOK, committed)
            lab.terminate()
            with steps.step("6 no-key sentence in a plain lab") as where:
                plain_lab.wait_ready()
                plain = Notebook(
                    browser.new_page(viewport=VIEWPORT), plain_lab, plain_copy / NOTEBOOK
                )
                where.update(notebook=plain, cell=plain.code[0])  # scrolled to: the setup
                plain.goto()
                plain.wait_ready()
                no_key_sentence(plain)
            browser.close()
    finally:
        for server in (lab, plain_lab):
            server.terminate()
            server.wait_stopped()
    timings = f"{steps.report()}\n  total: {time.monotonic() - clock:.1f} s"
    print(f"browser test timings:\n{timings}")
    logs = f"Lab logs: {lab.log}, {plain_lab.log}"
    assert not steps.failures, "\n\n".join([*steps.failures, f"Timings:\n{timings}", logs])
