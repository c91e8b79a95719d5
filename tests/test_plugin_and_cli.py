"""The pytest plugin's end-of-run accounting, and the `serve` command line."""

from __future__ import annotations

import os
import subprocess
import sys

import anthropic
import pytest

from tests.notebook_runner import nbval
from tests.replay import ROOT, SHIPPED_CASSETTE
from tests.replay.cassette import Cassette


@pytest.mark.slow
def test_a_notebook_run_that_leaves_an_exchange_unplayed_fails(tmp_path):
    cassette = Cassette.load(SHIPPED_CASSETTE)
    cassette.exchanges.append(
        {
            "request": {"method": "GET", "path": "/v1/agents/agent_never_asked"},
            "response": {"status": 200, "json": {}},
        }
    )
    cassette.save(tmp_path / "extra.jsonl")
    done = nbval(cassette=tmp_path / "extra.jsonl")
    assert done.returncode != 0
    assert "never played" in done.stdout and "/v1/agents/agent_never_asked" in done.stdout


def test_serve_prints_its_url_and_answers_the_sdk():
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.replay",
            "serve",
            "--cassette",
            str(SHIPPED_CASSETTE),
            "--speed",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=base_url, api_key="test", max_retries=0)
        first = Cassette.load(SHIPPED_CASSETTE).exchanges[0]["request"]["json"]
        agent = client.beta.agents.create(**first)
        assert agent.name == first["name"]
    finally:
        server.terminate()
        server.wait(timeout=10)


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
def test_make_record_path_end_to_end(tmp_path):
    """What `make record` does, with the replay server standing in for the live API: the
    notebook runs through the recording proxy, and the cassette it writes replays green."""
    from tests.replay.server import ReplayServer

    out = tmp_path / "recorded.jsonl"
    with ReplayServer(SHIPPED_CASSETTE) as upstream:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.replay",
                "record",
                "--out",
                str(out),
                "--upstream",
                upstream.base_url,
                "--",
            ]
            + [
                sys.executable,
                "-m",
                "tests.notebook_runner",
                "--out",
                str(tmp_path / "live.ipynb"),
            ],
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
    replay = nbval(cassette=out)
    assert replay.returncode == 0, replay.stdout[-2000:]
