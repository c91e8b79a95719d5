"""The pytest plugin's end-of-run accounting, the `serve` and `run` command lines, and
`python -m tests.lab` (JupyterLab that saves the notebook publishable)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import anthropic
import httpx
import nbformat
import pytest
from jupyter_server.services.contents.filemanager import FileContentsManager

from tests.lab import HOOK, WIDGET_VIEW, pre_save_hook
from tests.lab import main as lab_main
from tests.notebook_runner import NOTEBOOK
from tests.replay import ROOT, SHIPPED_CASSETTE, record_command
from tests.replay.cassette import Cassette
from tests.replay_fixtures import serving


def test_serve_prints_its_url_and_answers_the_sdk():
    with serving(SHIPPED_CASSETTE) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=base_url, api_key="test", max_retries=0)
        first = Cassette.load(SHIPPED_CASSETTE).exchanges[0]["request"]["json"]
        agent = client.beta.agents.create(**first)
        assert agent.name == first["name"]


def test_a_malformed_cassette_is_reported_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(SHIPPED_CASSETTE.read_text().splitlines()[0] + "\n{not json\n")
    done = subprocess.run(
        [sys.executable, "-m", "tests.replay", "serve", "--cassette", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"{bad}, line 2: not valid JSON" in done.stderr


@pytest.mark.slow
def test_make_record_path_end_to_end(tmp_path, reader):
    """What `make record` does, with the replay server standing in for the live API: the
    notebook runs through the recording proxy, and the cassette it writes replays green: every
    request matched, every exchange played, the same printed outputs as the committed notebook."""
    from tests.replay.server import ReplayServer

    out = tmp_path / "recorded.jsonl"
    with ReplayServer(SHIPPED_CASSETTE) as upstream:
        runner = [
            sys.executable,
            "-m",
            "tests.notebook_runner",
            "--out",
            str(tmp_path / "live.ipynb"),
        ]
        done = subprocess.run(
            record_command(out, upstream.base_url, *runner),
            cwd=ROOT,
            env={**os.environ, "ANTHROPIC_API_KEY": "sk-ant-recording-SECRET"},
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert upstream.unplayed() == [] and upstream.unmatched() == []
    recorded = out.read_text()
    assert "SECRET" not in recorded and Cassette.parse(recorded).header["provenance"] == "recorded"
    nb, fake, failed = reader.run(out)
    assert failed is None and fake.problems() == ""
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert printed(nb) == printed(committed)


def printed(nb: nbformat.NotebookNode) -> list[str]:
    """Each cell's printed text (however the kernel split it into stream outputs)."""
    return ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in nb.cells]


# -- `run`: interactive, for JupyterLab ---------------------------------------------------------------

FIRST_REQUEST = Cassette.load(SHIPPED_CASSETTE).exchanges[0]["request"]["json"]
# The story's first request, sent to the fake `run` exported; then exit with the code asked for.
CREATE_AGENT = (
    "import os, sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
    "os.environ['ANTHROPIC_BASE_URL'] + '/v1/agents', method='POST',"
    f" data={json.dumps(FIRST_REQUEST).encode()!r}, headers={{'content-type': 'application/json'}}));"
    " sys.exit(int(sys.argv[1]))"
)


def replay_run(*command: str) -> list[str]:
    return [sys.executable, "-m", "tests.replay", "run", "--speed", "0", "--", *command]


@pytest.mark.parametrize("code", [0, 3])
def test_run_reports_what_was_not_played_as_information(code):
    """A reader may stop anywhere: the exit code is the command's own, the rest is information."""
    done = subprocess.run(
        replay_run(sys.executable, "-c", CREATE_AGENT, str(code)),
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code, done.stderr[-2000:]
    assert "For information (not a failure): Recorded exchanges never played (take 1):" in (
        done.stderr
    )
    assert "exchange 2: POST /v1/environments" in done.stderr
    assert "exchange 1:" not in done.stderr  # the command's request reached the fake


def test_run_exits_0_after_ctrl_c():
    """Ctrl-C reaches the whole process group: `run` waits for the command, then exits 0 (no
    `make: *** Error 130` after a lab session)."""
    run = subprocess.Popen(
        replay_run("sleep", "30"),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert run.stderr.readline().startswith("Replaying ")
        time.sleep(0.2)  # let `sleep` start
        started = time.monotonic()
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert run.wait(timeout=10) == 0, run.stderr.read()
        assert time.monotonic() - started < 2
        assert "For information (not a failure)" in run.stderr.read()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


# -- the lab saves the notebook publishable ------------------------------------------------------------

NOTEBOOK_AS_LAB_SAVES_IT = {
    "cells": [
        {"cell_type": "markdown", "id": "intro", "metadata": {"tags": ["x"]}, "source": "# Title"},
        {
            "cell_type": "code",
            "execution_count": 7,
            "id": "live",
            "metadata": {
                "tags": ["live-view"],
                "collapsed": False,
                "execution": {
                    "iopub.execute_input": "2026-05-01T12:00:00.000Z",
                    "shell.execute_reply": "2026-05-01T12:00:01.000Z",
                },
            },
            "outputs": [
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {
                        "text/plain": "Live view of the session",
                        "text/html": "<p>Live view</p>",
                        WIDGET_VIEW: {"model_id": "4f2e", "version_major": 2, "version_minor": 0},
                    },
                },
                {"output_type": "stream", "name": "stdout", "text": "Original tests: 3 failed\n"},
                {
                    "output_type": "execute_result",
                    "execution_count": 7,
                    "metadata": {},
                    "data": {"text/plain": "42"},
                },
            ],
            "source": "watch(session)",
        },
    ],
    "metadata": {
        "kernelspec": {
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
            "name": "python3",
        },
        "language_info": {"name": "python", "version": "3.11.7"},
        "widgets": {
            "application/vnd.jupyter.widget-state+json": {
                "state": {"4f2e": {"model_name": "VBoxModel", "state": {}}},
                "version_major": 2,
                "version_minor": 0,
            }
        },
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}


def publishable_by_hand() -> dict:
    expected = copy.deepcopy(NOTEBOOK_AS_LAB_SAVES_IT)
    live = expected["cells"][1]
    del live["metadata"]["execution"], live["outputs"][0]["data"][WIDGET_VIEW]
    del expected["metadata"]["widgets"]
    expected["metadata"]["kernelspec"]["display_name"] = "Python 3"
    return expected


def test_pre_save_hook_makes_the_notebook_publishable(tmp_path):
    model = {
        "type": "notebook",
        "format": "json",
        "content": copy.deepcopy(NOTEBOOK_AS_LAB_SAVES_IT),
    }
    manager = FileContentsManager(root_dir=str(tmp_path))
    pre_save_hook(model=model, path="iterate_failing_tests.ipynb", contents_manager=manager)
    assert model["content"] == publishable_by_hand()
    nbformat.validate(nbformat.from_dict(model["content"]))

    other = {"type": "file", "format": "text", "content": json.dumps(NOTEBOOK_AS_LAB_SAVES_IT)}
    pre_save_hook(model=other, path="notes.json", contents_manager=manager)
    assert other["content"] == json.dumps(NOTEBOOK_AS_LAB_SAVES_IT)  # only notebooks change


def test_jupyter_runs_the_hook_configured_by_name(tmp_path):
    """The way `tests.lab` configures it: Jupyter imports the hook by name and runs it on save."""
    manager = FileContentsManager(root_dir=str(tmp_path), pre_save_hook="tests.lab.pre_save_hook")
    model = {
        "type": "notebook",
        "format": "json",
        "content": copy.deepcopy(NOTEBOOK_AS_LAB_SAVES_IT),
    }
    manager.save(model, "saved.ipynb")
    assert nbformat.read(tmp_path / "saved.ipynb", as_version=4) == publishable_by_hand()


# -- how `make lab` starts Jupyter -----------------------------------------------------------------

LAB_ARGS = ["--no-browser", "iterate_failing_tests.ipynb"]


@pytest.fixture
def lab_calls(monkeypatch) -> list[tuple[str, list[str]]]:
    """`tests.lab.main` with the replay CLI and `run_to_end` replaced by recorders of their
    arguments: each call is kept as (which, argv), and nothing is started."""
    import tests.replay.__main__ as replay_cli

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(replay_cli, "main", lambda argv: calls.append(("replay", argv)) or 0)
    monkeypatch.setattr(replay_cli, "run_to_end", lambda cmd: calls.append(("run", cmd)) or 0)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("REPLAY_SPEED", raising=False)
    return calls


def jupyter_lab(*args: str) -> list[str]:
    return [sys.executable, "-m", "jupyterlab", HOOK, *args]


def test_lab_replays_at_the_recorded_pace_by_default(lab_calls, monkeypatch):
    """`python -m tests.lab ARGS` without ANTHROPIC_API_KEY and REPLAY_SPEED: Jupyter with ARGS
    runs under the replay at speed 1, the recorded pace."""
    monkeypatch.setattr(sys, "argv", ["tests/lab.py", *LAB_ARGS])
    assert lab_main() == 0
    assert lab_calls == [("replay", ["run", "--speed", "1", "--", *jupyter_lab(*LAB_ARGS)])]


def test_lab_replays_at_replay_speed(lab_calls, monkeypatch):
    """REPLAY_SPEED sets the replay's pace; an empty one counts as unset."""
    monkeypatch.setenv("REPLAY_SPEED", "0")
    lab_main(LAB_ARGS)
    monkeypatch.setenv("REPLAY_SPEED", "")
    lab_main(LAB_ARGS)
    assert [argv[:3] for _, argv in lab_calls] == [["run", "--speed", "0"], ["run", "--speed", "1"]]


def test_lab_with_a_key_runs_jupyter_without_the_replay(lab_calls, monkeypatch):
    """With ANTHROPIC_API_KEY the lab is Jupyter alone, talking to the live API."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("REPLAY_SPEED", "0")
    assert lab_main(LAB_ARGS) == 0
    assert lab_calls == [("run", jupyter_lab(*LAB_ARGS))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid: int) -> list[int]:
    return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _ctrl_c(lab: subprocess.Popen) -> str:
    """Press Ctrl-C until the lab ends, as a person would: Jupyter interrupted soon after a save
    can wait at exit on an idle worker thread, and a second Ctrl-C ends that."""
    for _ in range(3):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(lab.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return lab.communicate(timeout=3)[0]
    os.killpg(lab.pid, signal.SIGKILL)
    return lab.communicate()[0] + "\n(killed: Ctrl-C did not end the lab)"


@pytest.mark.slow
def test_lab_serves_the_replay_and_saves_notebooks_publishable(tmp_path):
    """`python -m tests.lab` from a copy of the repository: the lab's root is the current
    directory, JupyterLab talks to the replay fake, and a notebook saved through the contents
    API lands on disk publishable."""
    repo = tmp_path / "repo"
    for part in ("tests", "fixtures"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    port, token = _free_port(), "lab-test-token"
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env |= {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "REPLAY_SPEED": "0"}
    lab = subprocess.Popen(
        [sys.executable, "-m", "tests.lab", "--no-browser", f"--port={port}", "--allow-root"]
        + [f"--IdentityProvider.token={token}"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"token {token}"},
            trust_env=False,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if api.get("/api/status").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and lab.poll() is None, "the lab did not start"
            time.sleep(0.2)

        (jupyter,) = _children(lab.pid)
        environ = dict(
            line.split("=", 1)
            for line in open(f"/proc/{jupyter}/environ").read().split("\0")
            if "=" in line
        )
        assert environ["ANTHROPIC_API_KEY"] == "replay-dummy-key"
        assert "127.0.0.1" in environ["NO_PROXY"]
        client = anthropic.Anthropic(
            base_url=environ["ANTHROPIC_BASE_URL"], api_key="test", max_retries=0
        )
        assert client.beta.agents.create(**FIRST_REQUEST).name == FIRST_REQUEST["name"]

        content = copy.deepcopy(NOTEBOOK_AS_LAB_SAVES_IT)
        saved = api.put(
            "/api/contents/saved.ipynb",
            json={"type": "notebook", "format": "json", "content": content},
        )
        assert saved.status_code in (200, 201), saved.text
        assert nbformat.read(repo / "saved.ipynb", as_version=4) == publishable_by_hand()
    finally:
        output = _ctrl_c(lab)
    assert lab.returncode == 0, output[-3000:]
    assert "For information (not a failure)" in output
