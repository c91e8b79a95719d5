"""Execute the notebook headlessly: live with ANTHROPIC_API_KEY, otherwise against the replay fake.

`python -m tests.notebook_runner --out build/iterate_failing_tests.ipynb --html` is `make run`;
`--inplace --replay` refreshes the committed notebook's outputs (always from the cassette),
keeping only what publishes cleanly: no widget state, no timing metadata.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.replay import ROOT, SHIPPED_CASSETTE, replay_env
from tests.replay.server import ReplayServer, speed_from_env
from tests.lab import WIDGET_VIEW, publishable  # noqa: F401 (WIDGET_VIEW: for the tests)

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


def execute_like_a_reader(
    cassette: Path,
    env: dict[str, str] | None = None,
    speed: float = 0.0,
    timeout: float = 60,
    cleanup_again=False,
) -> tuple[nbformat.NotebookNode, ReplayServer, int | None]:
    """Run cells in order against a cassette; at the first failing cell stop, as "Run All" does,
    and run the cleanup cell (the last code cell) as a reader would, and once more if asked
    (its stored outputs are then the second run's). Returns the executed notebook, the fake
    (its log and accounting) and the index of the failing cell, if any.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    failed = None
    with ReplayServer(cassette, speed=speed) as fake:
        client = client_for(nb, timeout)
        with client.setup_kernel(env={**os.environ, **replay_env(fake.base_url), **(env or {})}):
            for i in code_cells:
                try:
                    client.execute_cell(nb.cells[i], i)
                except CellExecutionError:
                    failed = i
                    client.execute_cell(nb.cells[code_cells[-1]], code_cells[-1])
                    break
            if cleanup_again:
                client.execute_cell(nb.cells[code_cells[-1]], code_cells[-1])
    return nb, fake, failed


def live_view_cell(displayed: list | None = None) -> dict:
    """The notebook's `live-view` cell executed on its own, exactly as written: its namespace.

    It relies on a few names from earlier cells (the setup imports and STREAM_TIMEOUT), given
    here; `display` appends to `displayed` instead of reaching a frontend.
    """
    import re

    import anthropic
    import httpx2

    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = next(c.source for c in nb.cells if "live-view" in c.metadata.get("tags", []))
    sink = [] if displayed is None else displayed
    namespace = {
        "re": re,
        "anthropic": anthropic,
        "httpx2": httpx2,
        "STREAM_TIMEOUT": 2.0,
        "display": sink.append,
    }
    exec(compile(source, "live-view cell", "exec"), namespace)
    return namespace


def nbval(notebook: Path = NOTEBOOK, cassette: Path | None = None) -> subprocess.CompletedProcess:
    """`pytest` (strict nbval, the replay plugin) on a notebook in a fresh process, optionally
    against another cassette; as `make test` runs it."""
    env = {**os.environ, **({"REPLAY_CASSETTE": str(cassette)} if cassette else {})}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(notebook)]
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
