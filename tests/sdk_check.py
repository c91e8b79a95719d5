"""Run the test suite against another anthropic release, in an environment of its own.

    make sdk-check VERSION=2.16.0        # python3 tests/sdk_check.py run 2.16.0

builds build/sdk-check-<version>/ afresh from requirements.txt with the anthropic pin replaced,
runs every test there but the real-browser one (tests/test_browser.py needs Chromium), and
prints the SDK version it ran and each failing test with its first error line. It exits non-zero
if a test fails. `make test-oldest` builds .venv-oldest from `python3 tests/sdk_check.py
requirements <version>`, the same replacement.

Standard library only: it runs before any environment exists.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import venv
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements.txt"
PIN = re.compile(r"^anthropic==(\S+)$", re.M)
OLDEST = re.compile(r"^OLDEST_ANTHROPIC\s*:=\s*(\S+)$", re.M)
SKIPPED = "tests/test_browser.py"  # drives a real Chromium: not an SDK question


def pinned() -> str:
    """The anthropic release requirements.txt pins: the newest the cookbook supports."""
    return PIN.findall(REQUIREMENTS.read_text(encoding="utf-8"))[0]


def oldest() -> str:
    """The oldest anthropic release the cookbook supports: the Makefile's OLDEST_ANTHROPIC."""
    return OLDEST.findall((ROOT / "Makefile").read_text(encoding="utf-8"))[0]


def requirements(version: str) -> str:
    """requirements.txt with its one `anthropic==` line pinned to `version` instead."""
    text = REQUIREMENTS.read_text(encoding="utf-8")
    if len(PIN.findall(text)) != 1:
        raise SystemExit("requirements.txt has no single `anthropic==` line to replace.")
    return PIN.sub(f"anthropic=={version}", text)


def build(env: Path, version: str) -> Path:
    """A fresh virtual environment at `env` with requirements(version) installed; its python."""
    venv.create(env, clear=True, with_pip=True)
    (env / "requirements.txt").write_text(requirements(version), encoding="utf-8")
    python = env / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(env / "requirements.txt")], check=False).returncode:
        raise SystemExit(f"Could not install requirements.txt with anthropic=={version}.")
    return python


def failures(junit: Path) -> list[tuple[str, str]]:
    """(test id, first line of its error) for each failed or erroring test in a JUnit report."""
    found = []
    for case in ET.parse(junit).iter("testcase"):
        for problem in [*case.iter("failure"), *case.iter("error")]:
            module, name = case.get("classname", ""), case.get("name", "")
            test_id = f"{module.replace('.', '/')}.py::{name}" if module else name
            text = problem.get("message") or problem.text or problem.tag
            found.append((test_id, (text.strip().splitlines() or [problem.tag])[0]))
    return found


def run(version: str, pytest_args: list[str]) -> int:
    """Build the environment, run the suite there and report; the exit status to return."""
    started = time.monotonic()
    env = ROOT / "build" / f"sdk-check-{version}"
    print(f"Building {env.relative_to(ROOT)} (requirements.txt with anthropic=={version})...")
    python = build(env, version)
    ran = subprocess.run(
        [str(python), "-c", "import anthropic; print(anthropic.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    junit = env / "junit.xml"
    command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["--ignore", SKIPPED, f"--junitxml={junit}", *pytest_args]
    status = subprocess.run(command, cwd=ROOT, check=False).returncode
    failed = failures(junit) if junit.exists() else []
    minutes = (time.monotonic() - started) / 60
    print(f"\nsdk-check: anthropic {ran}, every test but {SKIPPED}, {minutes:.1f} min.")
    for test_id, line in failed:
        print(f"  FAILED {test_id}: {line}")
    if status == 0:
        print(f"Nothing differs: every test passes with anthropic {ran}.")
    elif not failed:
        print(f"pytest ended with status {status} before reporting a failing test.")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pinned = commands.add_parser("requirements", help="print requirements.txt pinned to VERSION")
    pinned.add_argument("version", metavar="VERSION")
    check = commands.add_parser("run", help="run the suite against anthropic==VERSION")
    check.add_argument("version", metavar="VERSION")
    check.add_argument("pytest_args", nargs=argparse.REMAINDER, help="for pytest, e.g. -n 2")
    args = parser.parse_args(argv)
    if args.command == "requirements":
        sys.stdout.write(requirements(args.version))
        return 0
    return run(args.version, args.pytest_args)


if __name__ == "__main__":
    sys.exit(main())
