"""Execute the notebook headlessly: live with ANTHROPIC_API_KEY, otherwise against the replay fake.

`python -m tests.notebook_runner --out build/iterate_failing_tests.ipynb --html` is `make run`;
`--inplace --replay` refreshes the committed notebook's outputs (always from the cassette),
keeping only what publishes cleanly: no widget state, no timing metadata.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.lab import WIDGET_VIEW, publishable  # noqa: F401 (WIDGET_VIEW: for the tests)
from tests.replay import ROOT, SHIPPED_CASSETTE, replay_env
from tests.replay.server import ReplayServer, speed_from_env

NOTEBOOK = ROOT / "iterate_failing_tests.ipynb"


def client_for(
    nb: nbformat.NotebookNode, timeout: float = 300, allow_errors: bool = False
) -> NotebookClient:
    """An nbclient that runs cells in the repository root, as nbval and JupyterLab do."""
    return NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        record_timing=False,
        store_widget_state=False,
        resources={"metadata": {"path": str(ROOT)}},
    )


def execute(env: dict[str, str] | None = None, timeout: float = 300) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client_for(nb, timeout).execute(env={**os.environ, **(env or {})})
    return nb


class Reader:
    """A reader's kernel, stepping through the notebook as "Run All" does, as often as asked.

    `with Reader(env) as reader:` starts one kernel (the replay's variables plus `env`);
    `reader.run(cassette)` replays a cassette on the same loopback port (strictly, or as `make
    lab` does with `interactive=True`) and runs every code cell in order, from an empty
    namespace (`%reset -f`, as after a restart). At the first
    failing cell it stops, as "Run All" does, and runs the cleanup cells (those after the
    "Clean up" heading), as a reader would. It returns the executed notebook, the fake (its log and accounting)
    and the index of the failing cell, if any.
    """

    def __init__(self, env: dict[str, str] | None = None, timeout: float = 60):
        with socket.socket() as probe:  # a free loopback port, for every replay of this reader
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.env = {**os.environ, **replay_env(f"http://127.0.0.1:{self.port}"), **(env or {})}
        self.client = client_for(nbformat.read(NOTEBOOK, as_version=4), timeout)
        self.fake: ReplayServer | None = None

    def __enter__(self) -> Reader:
        self._kernel = self.client.setup_kernel(env=self.env)
        self._kernel.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._kernel.__exit__(*exc)

    def run(
        self,
        cassette: Path,
        speed: float = 0.0,
        env: dict[str, str] | None = None,
        cleanup_again: bool = False,
        restart_before_cleanup: bool = False,
        stop_after: str | None = None,
        interactive: bool = False,
    ) -> tuple[nbformat.NotebookNode, ReplayServer, int | None]:
        nb = self.client.nb = nbformat.read(NOTEBOOK, as_version=4)
        # What this run prints, not the outputs stored with the notebook (cells after a failing
        # one do not run, and a scenario's checks must not read their stored verdicts).
        for i in code_cells(nb):
            nb.cells[i].outputs, nb.cells[i].execution_count = [], None
        with ReplayServer(cassette, port=self.port, speed=speed, interactive=interactive) as fake:
            self.fake = fake  # for a test that acts while the notebook runs
            try:
                failed = self._play(nb, env, cleanup_again, restart_before_cleanup, stop_after)
            finally:
                self.fake = None
        return nb, fake, failed

    def _play(self, nb, env, cleanup_again, restart_before_cleanup, stop_after) -> int | None:
        cleanup = next(i for i, c in enumerate(nb.cells) if c.source.startswith("## Clean up"))
        code = code_cells(nb)
        steps, cleanup = [i for i in code if i < cleanup], [i for i in code if i > cleanup]
        failed = None
        self._fresh(env)
        for i in steps:
            try:
                self.client.execute_cell(nb.cells[i], i)
            except CellExecutionError:
                failed = i
                break
            if stop_after and stop_after in nb.cells[i].source:
                return failed
        if restart_before_cleanup:  # a restart forgets what was created; setup runs again
            self._fresh(env)
            for i in setup_cells(nb):
                nb.cells[i].outputs = []
                self.client.execute_cell(nb.cells[i], i)
        for i in cleanup * (2 if cleanup_again else 1):
            self.client.execute_cell(nb.cells[i], i)
        return failed

    def interrupt(self) -> None:
        """Kernel › Interrupt, as JupyterLab sends it to a local kernel: SIGINT."""
        os.kill(self.client.km.provisioner.process.pid, signal.SIGINT)

    def _fresh(self, env: dict[str, str] | None) -> None:
        """An empty namespace, as after a restart, and the variables of this run (as `%env`
        would set them): the cookbook's own, and only the ones asked for."""
        wanted = {k: v for k, v in (env or {}).items()}
        code = (
            "import os\n"
            f"for _k in [k for k in os.environ if k.startswith('COOKBOOK_')]: os.environ.pop(_k)\n"
            f"os.environ.update({wanted!r})\n"
            "%reset -f"
        )
        self.client.execute_cell(nbformat.v4.new_code_cell(code), 0)


SKIP = "nbval-skip"  # the tag of the `%pip install` cell: the test environment has what it installs


def code_cells(nb: nbformat.NotebookNode) -> list[int]:
    """The code cells a test runs, in order: all but the one tagged `nbval-skip`."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and SKIP not in cell.metadata.get("tags", [])
    ]


def setup_cells(nb: nbformat.NotebookNode) -> list[int]:
    """The code cells up to the one that creates the client: what any later cell needs first."""
    code = code_cells(nb)
    return code[: 1 + next(n for n, i in enumerate(code) if "Anthropic()" in nb.cells[i].source)]


def outputs_of(nb: nbformat.NotebookNode) -> tuple[str, str, list]:
    """All printed (and text/plain) output, all HTML, and the error outputs by cell index."""
    text, html, errors = [], [], []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":  # as printed, however the kernel split it
                text.append(out.text)
            elif out.output_type == "error":
                errors.append((i, out))
                text.append("\n" + "\n".join(out.traceback) + "\n")
            else:
                text.append("\n" + out.data.get("text/plain", "") + "\n")
                html.append(out.data.get("text/html", ""))
        text.append("\n")
    return "".join(text), "\n".join(html), errors


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]  # a pytest of its own


def nbval(notebook: Path = NOTEBOOK, cassette: Path | None = None) -> subprocess.CompletedProcess:
    """`pytest` (strict nbval, the replay plugin) on a notebook in a fresh process, optionally
    against another cassette; as `make test` runs it."""
    env = {**os.environ, **({"REPLAY_CASSETTE": str(cassette)} if cassette else {})}
    command = [*PYTEST, "-p", "no:xdist", str(notebook)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="where to write the executed notebook")
    parser.add_argument("--inplace", action="store_true", help="overwrite the committed notebook")
    parser.add_argument(
        "--replay", action="store_true", help="use the cassette even if ANTHROPIC_API_KEY is set"
    )
    parser.add_argument("--html", action="store_true", help="also write an HTML page next to --out")
    args = parser.parse_args(argv)
    out = NOTEBOOK if args.inplace else args.out
    if out is None:
        parser.error("give --out PATH or --inplace")
    if os.environ.get("ANTHROPIC_API_KEY") and not (args.replay or args.inplace):
        print("Running live against the API (ANTHROPIC_API_KEY is set).", file=sys.stderr)
        nb = execute()
    else:
        cassette = os.environ.get("REPLAY_CASSETTE") or SHIPPED_CASSETTE
        with ReplayServer(cassette, speed=speed_from_env()) as fake:
            nb = execute(replay_env(fake.base_url))
        if problems := fake.problems():
            print(problems, file=sys.stderr)
            return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(publishable(nb), out)
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    if args.html:
        from nbconvert import HTMLExporter

        html, _ = HTMLExporter().from_notebook_node(nb)
        out.with_suffix(".html").write_text(html, encoding="utf-8")
        print(f"wrote {out.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
