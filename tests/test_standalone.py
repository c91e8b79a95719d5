"""The site's notebook on its own, in a fresh environment with no key: a new virtual environment with
only Jupyter's executor (nbclient and ipykernel), a fresh kernel, and the notebook

- copied alone into an empty folder (a download, or Colab),
- run from the repository's root (the site build standing in for it),
- run from managed_agents/, as the repository's readers do.

The first cell installs the notebook's requirements from the package index. The first cell that needs
the helper module or the data then stops with one sentence (one output line, no traceback) that says
what is missing and what to do; from managed_agents/, with everything there, the sentence names the
key to set.

Slow: a virtual environment and two pip installs (pip's cache is reused), and three kernels.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import site
from tests.replay import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXECUTOR = ("nbclient", "ipykernel")  # Jupyter's executor, pinned as in requirements.txt
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Run by the new environment's Python: every code cell from the top in a fresh kernel, stopping
# at the first error, as Restart Kernel and Run All does; prints the cells that ran, as JSON.
RUNNER = """
import json, sys
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

path, cwd = sys.argv[1:3]
nb = nbformat.read(path, as_version=4)
for cell in nb.cells:
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
meta = {"metadata": {"path": cwd}}
client = NotebookClient(nb, timeout=600, kernel_name="python3", resources=meta)
try:
    client.execute()
except CellExecutionError:
    pass
ran = [
    {"index": i, "outputs": cell.outputs}
    for i, cell in enumerate(nb.cells)
    if cell.cell_type == "code" and cell.execution_count is not None
]
print(json.dumps(ran))
"""


def pins() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    found = [line.split("#")[0].strip() for line in lines if line.startswith(EXECUTOR)]
    assert sorted(p.split("==")[0] for p in found) == sorted(EXECUTOR), found
    return found


def fresh_env(venv: Path, scratch: Path) -> dict[str, str]:
    """No key, no project settings, no Jupyter or IPython configuration; pip's own settings (its
    index, certificates and cache) stay, so the install reuses the cache."""
    dropped = ("ANTHROPIC_", "JUPYTER", "IPYTHON", "VIRTUAL_ENV", "PYTHON", "CONDA", "REPLAY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT))]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR"):
        env[name] = str(scratch / name.lower())
    env["PYTHONNOUSERSITE"] = "1"
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def shown_lines(outputs: list[dict]) -> list[str]:
    """Every non-empty line a reader sees in a cell's outputs, tracebacks included."""
    text = []
    for out in outputs:
        if out["output_type"] == "stream":
            text.append(out["text"])
        elif out["output_type"] == "error":
            text += out["traceback"]
        else:
            text.append(str(out.get("data", {}).get("text/plain", "")))
    lines = ANSI.sub("", "\n".join(text)).splitlines()
    return [line for line in lines if line.strip()]


def fresh(scratch: Path):
    """A built site, and a new virtual environment with only Jupyter's executor."""
    built = scratch / "site"
    built.mkdir()
    site.build(built, env={"SITE_AUTHOR": "octocat"})
    venv = scratch / "venv"
    env = fresh_env(venv, scratch)
    start = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)], env, scratch)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *pins()], env, scratch)
    print(f"\nnew venv with {' and '.join(EXECUTOR)}: {time.monotonic() - start:.1f} s")
    return built, venv, env, scratch


def execute(setup, notebook: Path, cwd: Path) -> list[dict]:
    _, venv, env, scratch = setup
    start = time.monotonic()
    command = [str(venv / "bin" / "python"), "-c", RUNNER, str(notebook), str(cwd)]
    ran = json.loads(run(command, env, scratch).stdout)
    print(f"{notebook.name} from {cwd.name}/: {time.monotonic() - start:.1f} s")
    return ran


def first_cells(notebook: Path) -> tuple[int, list[int]]:
    """The %pip cell, and the code cells from the top to the first one that needs the helper
    module or the data, which must stop the run."""
    cells = json.loads(notebook.read_text())["cells"]
    code = [(i, "".join(c["source"])) for i, c in enumerate(cells) if c["cell_type"] == "code"]
    pip = next(i for i, source in code if "%pip install" in source)
    needs = next(i for i, source in code if "watch_and_verify" in source or "CALC_DIR" in source)
    return pip, [i for i, _ in code if i <= needs]


def assert_stops_with_one_sentence(ran: list[dict], notebook: Path) -> str:
    pip, expected = first_cells(notebook)
    assert [cell["index"] for cell in ran] == expected, "it did not stop at the setup cell"
    outputs = {cell["index"]: cell["outputs"] for cell in ran}
    assert shown_lines(outputs[pip]) == [], "the %pip cell showed something"
    lines = shown_lines(outputs[expected[-1]])
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and site.leftovers(lines[0]) == []
    print(f"  {lines[0]}")
    return lines[0]


def assert_names_what_is_missing(sentence: str) -> None:
    """The helper module is missing: the sentence names it, the data folder, and where to run."""
    assert sentence.startswith("UsageError: No module named 'watch_and_verify'"), sentence
    for needed in ("watch_and_verify.py", f"{site.DATA}/", f"{site.FOLDER}/", "first cell"):
        assert needed in sentence, (needed, sentence)


def test_the_site_notebook_stands_alone(tmp_path):
    """One test, so that one virtual environment serves the three runs (pytest-xdist would give
    each worker its own)."""
    setup = fresh(tmp_path)
    built, venv, env, scratch = setup

    # 1. A download: the notebook alone in an empty folder. The %pip cell installs what it needs
    # into the kernel's environment (the new venv), then the setup cell stops with one sentence.
    alone = scratch / "download"
    alone.mkdir()
    notebook = Path(shutil.copy(built / site.SITE_NOTEBOOK, alone))
    assert sorted(p.name for p in alone.iterdir()) == [notebook.name]
    assert_names_what_is_missing(
        assert_stops_with_one_sentence(execute(setup, notebook, alone), notebook)
    )
    run([str(venv / "bin" / "python"), "-c", "import anthropic, ipywidgets"], env, scratch)

    # 2. The repository's root as the working directory: the helper is not importable from there.
    root = scratch / "repository"
    shutil.copytree(built, root)
    notebook = root / site.SITE_NOTEBOOK
    assert_names_what_is_missing(
        assert_stops_with_one_sentence(execute(setup, notebook, root), notebook)
    )

    # 3. managed_agents/, as the repository's readers run it, without a key: the sentence says
    # which variable to set, and nothing about this project.
    sentence = assert_stops_with_one_sentence(execute(setup, notebook, notebook.parent), notebook)
    assert sentence.startswith("No API key: set ANTHROPIC_API_KEY (https://"), sentence
    assert sentence.endswith("then restart the kernel."), sentence
