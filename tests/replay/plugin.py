"""pytest plugin: the fake API runs for the whole test session (loaded with `-p tests.replay.plugin`).

nbval starts the notebook's kernel while collecting, before any fixture runs, so the server
starts in `pytest_configure` and its address goes into `os.environ`, which the kernel
inherits. Cassette from `REPLAY_CASSETTE` (default: the shipped one), speed from
`REPLAY_SPEED` (default 0). The accounting is strict, unlike `make lab`'s: when the notebook
ran, every recorded exchange must have been played in the last take and no request of that
take refused, or the run fails.
"""

from __future__ import annotations

import os

import pytest

from . import SHIPPED_CASSETTE, replay_env
from .server import ReplayServer, speed_from_env

FAKE = pytest.StashKey[ReplayServer]()


def pytest_configure(config: pytest.Config) -> None:
    fake = ReplayServer(
        os.environ.get("REPLAY_CASSETTE") or SHIPPED_CASSETTE, speed=speed_from_env()
    ).start()
    os.environ.update(replay_env(fake.base_url))
    config.stash[FAKE] = fake


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    fake = session.config.stash.get(FAKE, None)
    notebook_ran = any(item.path.suffix == ".ipynb" for item in session.items) and fake and fake.log
    if not notebook_ran:
        return
    if problems := fake.problems():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"\nReplay fake:\n{problems}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    fake = config.stash.get(FAKE, None)
    if fake:
        fake.stop()
