"""Really run the scripted agent's tool calls, in a temp dir laid out like the session container.

`/mnt/session/uploads` holds copies of the fixture files (read-only for the file tools),
`/mnt/user` is the agent's workspace and `/mnt/session/outputs` is what the session hands
back. Container paths in commands are mapped into the temp dir, and the temp dir is mapped
back out of every output, so results read as they would in the container. The container
persists between turns, as a session's does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

UPLOADS, WORKSPACE, OUTPUTS = "/mnt/session/uploads", "/mnt/user", "/mnt/session/outputs"
# A fixed environment, so the same script gives byte-identical output on every machine run.
# `python3` is this interpreter, found first on PATH (a pyenv shim would cost ~0.15 s a call).
COMMAND_ENV = {
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)]),
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}


RUNS: dict[tuple, tuple[str, bool, dict[str, bytes]]] = {}  # tool calls already run, by their files


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Sandbox:
    """`with Sandbox(files) as box:` then `box.run(name, input)` -> (text, is_error)."""

    def __init__(self, uploads: dict[str, bytes]):
        self._tmp = tempfile.TemporaryDirectory(prefix="scripted-session-")
        self.root = Path(self._tmp.name).resolve()
        for folder in (UPLOADS, WORKSPACE, OUTPUTS):
            self.path(folder).mkdir(parents=True)
        for name, data in uploads.items():
            self.path(f"{UPLOADS}/{name}").write_bytes(data)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self._tmp.cleanup()

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def outputs(self) -> dict[str, bytes]:
        """The files the agent left in /mnt/session/outputs, by name."""
        folder = self.path(OUTPUTS)
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}

    def run(self, name: str, tool_input: dict) -> tuple[str, bool]:
        """Run a tool call; the same call on the same files was already really run (scenarios
        share most of their steps), so its output and the files it left are reused."""
        key = (name, json.dumps(tool_input, sort_keys=True), tuple(sorted(self._files().items())))
        if key not in RUNS:
            try:
                text, is_error = getattr(self, f"_{name}")(**tool_input), False
            except (OSError, ValueError, subprocess.SubprocessError) as err:
                text, is_error = str(err).replace(str(self.root), ""), True
            RUNS[key] = (text, is_error, self._files())
        text, is_error, files = RUNS[key]
        for path in self._files().keys() - files.keys():
            (self.root / path).unlink()
        for path, data in files.items():
            (self.root / path).parent.mkdir(parents=True, exist_ok=True)
            (self.root / path).write_bytes(data)
        return text, is_error

    def _files(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in self.root.rglob("*")
            if p.is_file()
        }

    def _bash(self, command: str) -> str:
        """Output to a file and a process group of its own: a scripted agent may start a
        background child that would hold a pipe open, and it must not outlive the call."""
        mapped = command.replace("/mnt/", f"{self.root}/mnt/")
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.Popen(
                ["bash", "-c", mapped],
                cwd=self.path(WORKSPACE),
                env=COMMAND_ENV,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            # Scripted commands are quick; a looping one is cut short after 2 s. A timer, so that
            # wait() blocks until the exit instead of polling it (each poll adds up to 50 ms).
            timer = threading.Timer(2, _kill_group, (done.pid,))
            timer.start()
            try:
                done.wait()
            finally:
                timer.cancel()
                _kill_group(done.pid)  # whatever the command left running in the background
                done.wait()
            out.seek(0)
            return out.read().replace(str(self.root), "")

    def _read(self, file_path: str) -> str:
        lines = self.path(file_path).read_text().splitlines()
        return "\n".join(f"{n}\t{line}" for n, line in enumerate(lines, 1))

    def _edit(self, file_path: str, old_string: str, new_string: str) -> str:
        target = self._writable(file_path)
        text = target.read_text()
        if text.count(old_string) != 1:
            found = text.count(old_string)
            raise ValueError(f"old_string must occur exactly once in {file_path}; found {found}")
        target.write_text(text.replace(old_string, new_string))
        return f"Edited {file_path}: 1 replacement."

    def _write(self, file_path: str, content: str) -> str:
        target = self._writable(file_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        return f"File written: {file_path}"

    def _writable(self, file_path: str) -> Path:
        if file_path.startswith(UPLOADS):
            raise ValueError(f"{file_path}: Read-only file system")
        return self.path(file_path)
