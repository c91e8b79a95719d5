"""A recorded-stream fake of the Managed Agents API: cassette, replay server, recorder, scripted session.

`python -m tests.replay serve|run|record|script --help` for the command line.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CASSETTE = ROOT / "fixtures" / "recordings" / "iterate_failing_tests.jsonl"
SHIPPED_SCRIPT = ROOT / "fixtures" / "recordings" / "iterate_failing_tests.script.json"
FIXTURES = ROOT / "fixtures" / "calc"
SCENARIO_DIR = ROOT / "tests" / "scenarios"


def replay_env(base_url: str) -> dict[str, str]:
    """What a process needs to talk to the fake: its URL, a dummy key, and no proxy for loopback."""
    return {
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "replay-dummy-key",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def record_command(out: Path, upstream: str, *command: str) -> list[str]:
    """`python -m tests.replay record` (what `make record` runs) against another upstream."""
    verb = ["-m", "tests.replay", "record", "--out", str(out), "--upstream", upstream, "--"]
    return [sys.executable, *verb, *command]
