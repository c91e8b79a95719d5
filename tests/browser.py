"""A person in JupyterLab, for `tests/test_browser.py`: lab servers on copies of the repository,
Debian's Chromium driven by Playwright, and what a person sees in a notebook (prompts, outputs,
the live view's entries), read from the page.

Nothing here changes JupyterLab's settings except `windowingMode: none` (JupyterLab otherwise
renders only the cells in view, and the test reads every cell). Servers run in a fresh `HOME`
with nothing of the caller's environment but `PATH`, so a developer's key, base URL or Jupyter
config cannot leak in, and the committed notebook is never the one being edited.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.replay import ROOT

NOTEBOOK = "iterate_failing_tests.ipynb"
PYTHON = sys.executable  # the repository's venv: pytest runs in it
JUPYTER = str(Path(sys.executable).with_name("jupyter"))
CHROMIUM_FLAGS = [
    "--no-sandbox",  # the test may run as root
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # A closed network refuses Chromium's own background connections; don't make any.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "build" / "browser"
STDERR_MIME = "application/vnd.jupyter.stderr"  # stderr streams and error tracebacks alike
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class Failed(AssertionError):
    """A check failed; the message says what a person would have seen."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_repository(dest: Path) -> None:
    """The repository's files as they are now (tracked and new, not ignored) copied into `dest`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = ROOT / name
        if source.is_file():  # a tracked file someone just deleted is simply not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def settings_dir(dest: Path) -> Path:
    """A JUPYTERLAB_SETTINGS_DIR whose one setting renders every cell, not only those in view."""
    tracker = dest / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    return dest


class LabServer:
    """One JupyterLab server process (and whatever wraps it), in its own process group."""

    def __init__(self, name: str, cwd: Path, command: list[str], env: dict[str, str], log: Path):
        self.name, self.cwd, self.log = name, cwd, log
        self.port, self.token = free_port(), secrets.token_hex(16)
        args = [
            "--no-browser",
            f"--port={self.port}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.open_browser=False",
            *(["--allow-root"] if os.geteuid() == 0 else []),
            NOTEBOOK,
        ]
        self.command = [*command, *args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = f"lab/tree/{NOTEBOOK}") -> str:
        return f"{self.base}/{path}?token={self.token}"

    def log_tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise Failed(
                    f"The {self.name} lab exited ({self.process.returncode}) before it answered:\n"
                    f"$ {' '.join(self.command)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2) as reply:  # noqa: S310 (loopback)
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise Failed(
            f"The {self.name} lab did not answer {self.base}/api/status within {timeout:g} s:\n"
            f"$ {' '.join(self.command)}\n{self.log_tail()}"
        )

    def terminate(self) -> None:
        """SIGTERM to its process group: Jupyter shuts its kernels down (the replay wrapper
        passes the signal on, too)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait_stopped(self, timeout: float = 10) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(5)


def reader_env(home: Path, settings: Path, **extra: str) -> dict[str, str]:
    """A reader's environment: their PATH, an empty HOME, and nothing else (no ANTHROPIC_*)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        **extra,
    }


def launch_chromium(playwright) -> Any:
    """Debian's Chromium (Playwright's own browser download is not used); Playwright gives each
    launch a fresh temporary profile."""
    return playwright.chromium.launch(
        executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_FLAGS
    )


# -- what a person sees ------------------------------------------------------------------------

# Per cell, cheap enough to run ten times a second: its prompt, how many outputs it shows that
# are not from before the run (see `_BEFORE_RUN`), and how many entries its live view shows
# (the notebook's DOM contract: `.cma-live .cma-card`).
_PROGRESS = """() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')]
.map((cell, i) => {
  const outputs = [...cell.querySelectorAll('.jp-OutputArea-output')];
  const live = [...cell.querySelectorAll('.cma-live')];
  const cards = live.reduce((n, view) => n + view.querySelectorAll('.cma-card').length, 0);
  return {
    code: cell.classList.contains('jp-CodeCell'),
    prompt: (cell.querySelector('.jp-InputArea-prompt')?.textContent || '').trim(),
    fresh: outputs.filter(o => o.dataset.browserTestStale !== '1').length,
    live: live.length > 0,
    cards,
  };
})"""

# Per output: its MIME type and the text a person sees (innerText: collapsed details stay hidden).
_OUTPUTS = """(i) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];
  return [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => ({
    mime: o.getAttribute('data-mime-type') || '',
    text: o.innerText,
  }));
}"""

# Before a run: tag the outputs on screen (so the run's own outputs can be told from them) and
# start a new record of the run for `_WAIT_RUN`.
_BEFORE_RUN = """() => {
  document.querySelectorAll('.jp-OutputArea-output')
    .forEach(o => { o.dataset.browserTestStale = '1'; });
  window.__browserTestRun = {started: false, entries: []};
}"""

# Polled in the page during a run: true-ish once the run has ended, or once a running cell's
# live view shows `watch` entries ({watched: index}).
_WAIT_RUN = f"""({{first, watch}}) => {{
  const run = window.__browserTestRun;
  const cells = ({_PROGRESS})();
  run.entries.push(cells.reduce((n, c) => n + c.cards, 0));
  run.started = run.started || cells[first].prompt === '[*]:' || cells[first].fresh > 0;
  if (!run.started) return false;
  const watched = cells.findIndex(c => watch && c.cards >= watch && c.prompt === '[*]:');
  if (watched >= 0) return {{watched}};
  return cells.some(c => c.prompt === '[*]:') ? false : {{ended: true}};
}}"""


class Notebook:
    """The notebook open in one browser tab, with its cells' sources from the file it opened."""

    def __init__(self, page, lab: LabServer, path: Path):
        self.page, self.lab = page, lab
        self.cells = json.loads(path.read_text())["cells"]
        self.sources = ["".join(c["source"]) for c in self.cells]
        self.code = [i for i, c in enumerate(self.cells) if c["cell_type"] == "code"]
        self.streaming = [i for i in self.code if "events.stream(" in self.sources[i]]

    # -- opening -----------------------------------------------------------------------------
    def goto(self) -> None:
        self.page.goto(self.lab.url(), wait_until="commit")

    def wait_ready(self, timeout: float = 40) -> None:
        """Every cell rendered, and the kernel says Idle in the status bar."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

        try:
            self.page.wait_for_function(
                """(n) => document.querySelectorAll('.jp-Notebook .jp-Cell').length === n
                  && [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                       .some(e => /\\| Idle$/.test(e.textContent.trim()))""",
                arg=len(self.cells),
                timeout=timeout * 1000,
                polling=100,
            )
        except PlaywrightTimeoutError:
            shown = self.page.evaluate(
                """() => [document.querySelectorAll('.jp-Notebook .jp-Cell').length,
                  [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                    .map(e => e.textContent.trim()).filter(Boolean).join(' · ')]"""
            )
            raise Failed(
                f"The notebook did not open with an idle kernel within {timeout:g} s: "
                f"{shown[0]} of {len(self.cells)} cells shown; status bar: {shown[1]!r}.\n"
                f"Lab log ({self.lab.log}):\n{self.lab.log_tail(10)}"
            ) from None

    # -- acting like a person ----------------------------------------------------------------
    def menu(self, menu: str, item: str) -> None:
        """Open a menu of the menu bar and click an item, by their labels (regex, anchored)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$"))
        label.first.click()

    def accept_dialog(self, timeout: float = 10) -> str:
        dialog = self.page.locator(".jp-Dialog")
        dialog.wait_for(timeout=timeout * 1000)
        text = dialog.inner_text()
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        dialog.wait_for(state="detached", timeout=timeout * 1000)
        return text

    def run_cell(self, i: int) -> None:
        """Click into a cell and press Shift+Enter."""
        self.cell(i).locator(".jp-InputArea-editor").click()
        self.page.keyboard.press("Shift+Enter")

    def cell(self, i: int):
        return self.page.locator(".jp-Notebook .jp-Cell").nth(i)

    # -- reading -----------------------------------------------------------------------------
    def progress(self) -> list[dict]:
        return self.page.evaluate(_PROGRESS)

    def live_cells(self, cells: list[dict] | None = None) -> list[int]:
        """The cells that show a live view: those with `.cma-live`, else (a notebook without
        the DOM contract's classes) those whose source opens the event stream."""
        cells = cells if cells is not None else self.progress()
        return [i for i, c in enumerate(cells) if c["live"]] or self.streaming

    def outputs(self, i: int) -> list[dict]:
        return self.page.evaluate(_OUTPUTS, i)

    def text(self, i: int, widgets: bool = True) -> str:
        return "\n".join(
            o["text"] for o in self.outputs(i) if widgets or o["mime"] != WIDGET_MIME
        ).strip()

    def all_text(self) -> str:
        return "\n".join(self.text(i) for i in self.code)

    def errors(self, i: int) -> list[str]:
        """The stderr and error outputs a cell shows (JupyterLab renders both as stderr)."""
        return [o["text"].strip() for o in self.outputs(i) if o["mime"] == STDERR_MIME]

    def before_run(self) -> None:
        """Call before starting a run: see `_BEFORE_RUN`."""
        self.page.evaluate(_BEFORE_RUN)

    def describe(self, i: int, lines: int = 30) -> str:
        """A cell as a failure message shows it: its first lines of source, its prompt and the
        last lines of what its outputs show."""
        source = self.sources[i].splitlines()
        head = "\n".join(f"    | {line}" for line in source[:8])
        more = f"\n    | … {len(source) - 8} more lines" if len(source) > 8 else ""
        prompt = self.progress()[i]["prompt"]
        shown = self.text(i).splitlines()
        cut = f"    … {len(shown) - lines} lines above\n" if len(shown) > lines else ""
        body = "\n".join(f"    {line}" for line in shown[-lines:]) or "    (no output)"
        return f"cell {i + 1} {prompt}\n{head}{more}\n  shows:\n{cut}{body}"

    def first_error(self) -> str | None:
        """The first code cell that shows stderr or an error, described."""
        for i in self.code:
            if errors := self.errors(i):
                shown = "\n".join(f"    {line}" for line in errors[0].splitlines()[-12:])
                return f"{self.describe(i)}\n  its stderr/error output (last lines):\n{shown}"
        return None

    def screenshot(self, name: str, cell: int | None = None) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        try:
            if cell is not None:
                self.cell(cell).scroll_into_view_if_needed(timeout=2000)
            self.page.screenshot(path=path, timeout=5000)
        except Exception as err:  # a screenshot is a courtesy; never hide the real failure
            return Path(f"(no screenshot: {err})")
        return path

    # -- waiting for a run -------------------------------------------------------------------
    def wait_run(
        self, timeout: float = 60, watch: int = 0
    ) -> tuple[list[dict], list[int], int | None]:
        """After `before_run()` and a Run All: wait until the run has started (the first code
        cell shows `[*]` or new output) and then until it has ended (no cell shows `[*]`) or,
        with `watch`, until a running cell's live view shows `watch` entries. The page polls
        itself ten times a second (no round trip per poll) and keeps every poll's entry count.

        Returns the cells, the entry counts polled, and the watched cell (or None)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

        arg = {"first": self.code[0], "watch": watch}
        try:
            handle = self.page.wait_for_function(
                _WAIT_RUN, arg=arg, polling=100, timeout=timeout * 1000
            )
            watched = handle.json_value().get("watched")
        except PlaywrightTimeoutError:
            cells, run = self.progress(), self.page.evaluate("() => window.__browserTestRun")
            if not run["started"]:
                raise Failed(
                    f"The run did not start within {timeout:g} s: the first code cell still "
                    f"shows its earlier outputs.\n{self.describe(self.code[0])}"
                ) from None
            running = next((i for i, c in enumerate(cells) if c["prompt"] == "[*]:"), 0)
            raise Failed(
                f"The run did not end within {timeout:g} s; still running:\n"
                f"{self.describe(running)}"
            ) from None
        entries = self.page.evaluate("() => window.__browserTestRun.entries")
        return self.progress(), entries, watched
